"""Using a finished text-classification run: predict, evaluate, and its report."""
from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from deepskeptic.errors import UserError
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run


def predict(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.tasks.text import predict_logits
    texts = [t for t in args.inputs if t.strip()]
    if not texts:
        raise UserError('give the text to classify: deepskeptic predict RUN "some text" ["another text" ...]')
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    device = torch.device("cpu")
    model, reader = task.load_model(run, device)
    classes = run.config["data_info"]["classes"]
    probs = predict_logits(model, task.read(run, reader, texts), device).softmax(1)
    top = probs.topk(min(args.top_k, len(classes)), dim=1)
    results = [{"text": t, "top": [{"class": classes[c], "probability": round(p, 5)}
                                   for p, c in zip(v.tolist(), i.tolist())]}
               for t, v, i in zip(texts, top.values, top.indices)]
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    else:
        for r in results:
            shown = r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..."
            print(f"{shown!r}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    return 0


def evaluate(task, run: Run, data: str | None) -> dict[str, Any]:
    """Test metrics on the run's own test documents, or on every document of ``data``."""
    from deepskeptic.tasks.image import classification_metrics
    from deepskeptic.tasks.text import predict_logits
    settings = {**run.config["settings"], **({"data": data} if data else {})}
    d = task.prepare(settings).data
    classes = run.config["data_info"]["classes"]
    if data is None:
        texts, labels = d.texts["test"], d.labels["test"]
    else:
        unknown = sorted(set(d.classes) - set(classes))
        if unknown:
            raise UserError(f"{data} has classes the run never saw: {', '.join(unknown)}")
        texts = [t for split in ("train", "val", "test") for t in d.texts[split]]
        labels = [classes.index(d.classes[y]) for split in ("train", "val", "test") for y in d.labels[split]]
    device = torch.device("cpu")
    model, reader = task.load_model(run, device)
    logits = predict_logits(model, task.read(run, reader, texts), device)
    return {"data": str(settings["data"]), "documents": len(texts),
            **classification_metrics(logits, torch.tensor(labels), classes)}


def write_report(task, run: Run, prepared=None, metrics: dict | None = None) -> None:
    from deepskeptic.tasks.image_report import confusion_figure, per_class_figure
    from deepskeptic.tasks.text import predict_logits
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    report = Report(f"text · {s['model']} on {info['name']}")
    report.paragraph(f"{metrics['test_accuracy']:.2%} test accuracy, macro-F1 {metrics['test_macro_f1']:.3f}, on "
                     f"{info['test']:,} held-out documents ({len(info['classes'])} classes), after "
                     f"{metrics['epochs']} epoch(s), {metrics['train_seconds']:.1f} s of training on "
                     f"{metrics['device']}, seed {metrics['seed']}. The model reads "
                     f"{'characters' if info['reading'] == 'chars' else 'bag-of-n-gram counts'}.")
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
    device = torch.device("cpu")
    model, reader = task.load_model(run, device)
    if prepared is not None:
        texts, labels = prepared.data.texts["test"], prepared.data.labels["test"]
        probs = predict_logits(model, task.read(run, reader, texts), device).softmax(1)
        conf, pred = probs.max(1)
        wrong = [i for i in conf.argsort(descending=True).tolist() if pred[i] != labels[i]][:10]
        if wrong:
            report.heading("Most confidently wrong test documents")
            report.table(["text", "true", "predicted", "probability"],
                         [[texts[i][:160], info["classes"][labels[i]], info["classes"][pred[i]], float(conf[i])]
                          for i in wrong])
        if info["reading"] == "chars" and texts:
            from deepskeptic.tasks.common import gates as text_gates
            text_gates.report_section(report, run, model, reader, texts[0][:160])
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
    plt.close("all")
