"""The report of a finished textgen run, and the samples section of a textgen comparison."""
from __future__ import annotations

import html

import torch

from deepskeptic import recipes
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.text import CharLM
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common import gates
from deepskeptic.tasks.textgen.lm import sample

REPORT_TEMPERATURES = (0.5, 0.8, 1.0)
REPORT_SAMPLE_CHARS = 300


def _samples_html(model: CharLM, vocab, seed: int = 0) -> str:
    parts = []
    for t in REPORT_TEMPERATURES:
        text = sample(model, vocab, "", REPORT_SAMPLE_CHARS, temperature=t,
                      generator=torch.Generator().manual_seed(seed))
        parts.append(f"<p><b>temperature {t}</b></p><pre style='white-space:pre-wrap;background:#f6f6f6;"
                     f"padding:.5em'>{html.escape(text)}</pre>")
    return "\n".join(parts)


def write_report(task, run: Run, prepared=None, metrics: dict | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    report = Report(f"textgen · {s['model']} on {info['name']}")
    report.paragraph(f"{metrics['test_bpc']:.4f} bits per character on {info['test_chars']:,} held-out characters "
                     f"({info['split']}), after {metrics['train_seconds']:.1f} s of training on {metrics['device']}, "
                     f"seed {metrics['seed']}"
                     + (f", with the weights of epoch {metrics['best_epoch']} (lowest validation bpc)"
                        if metrics.get("best_epoch") else "") + ". Lower is better; run 'deepskeptic compare textgen' for the "
                     f"n-gram and compressor baselines on the same split.")
    recipe = recipes.sentence(config)   # how the recipe and learning rate were chosen, and why
    if recipe:
        report.paragraph(recipe)
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    history = run.history()
    if any("train_bpc" in h for h in history):
        report.heading("Learning curves")
        report.figure(learning_curves({"train": [{"train_seconds": h["train_seconds"], "bpc": h["train_bpc"]}
                                                 for h in history],
                                       "validation": [{"train_seconds": h["train_seconds"], "bpc": h["val_bpc"]}
                                                      for h in history if "val_bpc" in h]},
                                      ["bpc"], x="train_seconds"),
                      "bits per character; training with dropout, validation without")
    if "val_bpc_by_order" in metrics:
        report.heading("Validation bpc by n-gram order")
        report.table(["order", "val bpc"], [[k, v] for k, v in metrics["val_bpc_by_order"].items()])
    if not registry.spec(task.name, s["model"]).one_step:
        predictor = task.predictor(run)
        report.heading("Samples")
        report.parts.append(_samples_html(predictor.model, predictor.vocab))
        _gates_sections(task, run, report, predictor.model, predictor.vocab, prepared)
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
    plt.close("all")


def _gates_sections(task, run: Run, report: Report, model, vocab, prepared) -> None:
    """The LSTM's gates on a stretch of test text, and any pictures `explain` wrote."""
    if prepared is None:
        try:
            prepared = task.prepare(run.config["settings"])
        except UserError:  # the data moved away since training: show the gates on a stock sentence
            prepared = None
    text = prepared.corpus.test[:160] if prepared is not None else ""
    gates.report_section(report, run, model, vocab, text or "The quick brown fox jumps over the lazy dog.\n")


def comparison_samples(task, report: Report, summary: dict) -> None:
    """Samples of each network (seed 0) at the report temperatures, for `compare textgen`."""
    shown = False
    for name, s in summary["models"].items():
        if registry.spec(task.name, name).one_step:
            continue
        predictor = task.predictor(Run(s["runs"][0]))
        if not shown:
            report.heading(f"Samples ({REPORT_SAMPLE_CHARS} characters, seed 0)")
            shown = True
        report.parts.append(f"<h3>{html.escape(name)}</h3>")
        report.parts.append(_samples_html(predictor.model, predictor.vocab))
