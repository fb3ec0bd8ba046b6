"""The report of a finished text-classification run."""
from __future__ import annotations

from deepskeptic import recipes
from deepskeptic.errors import UserError
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common import gates
from deepskeptic.tasks.common.classification import confusion_figure, per_class_figure


def write_report(task, run: Run, prepared=None, metrics: dict | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    report = Report(f"text · {s['model']} on {info['name']}")
    report.paragraph(f"{metrics['test_accuracy']:.2%} test accuracy, macro-F1 {metrics['test_macro_f1']:.3f}, on "
                     f"{info['test']:,} held-out documents ({len(info['classes'])} classes), after "
                     f"{metrics['epochs']} epoch(s), {metrics['train_seconds']:.1f} s of training on "
                     f"{metrics['device']}, seed {metrics['seed']}. The model reads "
                     f"{'characters' if info['reading'] == 'chars' else 'bag-of-n-gram counts'}.")
    recipe = recipes.sentence(config)   # how the recipe and learning rate were chosen, and why
    if recipe:
        report.paragraph(recipe)
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    history = run.history()
    if history:
        report.heading("Learning curves")
        report.figure(learning_curves(
            {"train": [{"epoch": h["epoch"], "loss": h["train_loss"], "accuracy": h["train_accuracy"]} for h in history],
             "validation": [{"epoch": h["epoch"], "loss": h["val_loss"], "accuracy": h["val_accuracy"]}
                            for h in history if "val_loss" in h]}, ["loss", "accuracy"]),
            "training (with dropout) and validation")
    report.heading("Confusion matrix and per-class accuracy")
    report.figure(confusion_figure(metrics["confusion_matrix"], info["classes"]), "test set: rows true, columns predicted")
    report.figure(per_class_figure(metrics["per_class_accuracy"]))
    if prepared is None:
        try:
            prepared = task.prepare(s)
        except UserError:
            prepared = None
    predictor = task.predictor(run)
    if prepared is not None:
        texts, labels = prepared.data.texts["test"], prepared.data.labels["test"]
        probs = predictor.logits(texts).softmax(1)
        conf, pred = probs.max(1)
        wrong = [i for i in conf.argsort(descending=True).tolist() if pred[i] != labels[i]][:10]
        if wrong:
            report.heading("Most confidently wrong test documents")
            report.table(["text", "true", "predicted", "probability"],
                         [[texts[i][:160], info["classes"][labels[i]], info["classes"][pred[i]], float(conf[i])]
                          for i in wrong])
        if info["reading"] == "chars" and texts:
            gates.report_section(report, run, predictor.model, predictor.reader, texts[0][:160])
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
    plt.close("all")
