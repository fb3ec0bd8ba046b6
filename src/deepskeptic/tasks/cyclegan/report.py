"""The report of cyclegan runs, rendered from the run folder alone (metrics.json, history.jsonl and
the PNGs training wrote)."""
from __future__ import annotations

from typing import Any

from deepskeptic.reports.html import Report
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common.adversarial_report import epoch_strip, png_figure
from deepskeptic.tasks.cyclegan.measure import EPOCH_SAMPLES


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_cyclegan_report(run: Run, metrics: dict[str, Any] | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    a, b = info["names"]
    report = Report(f"cyclegan · {s['model']} on {a} ~ {b}")
    report.paragraph(
        f"{metrics['target_share_a2b']:.1%} of {a} images translated to {b} and {metrics['target_share_b2a']:.1%} "
        f"of {b} images translated to {a} are recognised as the target domain by the judge (test accuracy "
        f"{_fmt(metrics.get('judge_test_accuracy'))}). FD to the target domain {metrics['fd_a2b']:.4g} / {metrics['fd_b2a']:.4g} "
        f"(floors {metrics['fd_floor_a2b']:.4g} / {metrics['fd_floor_b2a']:.4g}); cycle error "
        f"{metrics['cycle_error']:.4f} of the pixel range. {metrics['epochs']} epoch(s), "
        f"{metrics['train_seconds']:.1f} s of training on {metrics['device']}, seed {metrics['seed']}.")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    report.heading("Translations of held-out images")
    png_figure(report, run.path / "triplets.png",
                f"rows: {a}, → {b}, → back to {a}; {b}, → {a}, → back to {b}")
    strip = epoch_strip(run, row=1)
    if strip is not None:
        report.heading(f"{a} → {b}, epoch by epoch")
        report.figure(strip, "the same held-out images after each epoch (RUN/samples/)")
    history = run.history()
    keys = [k for k in ("train_g_loss", "train_d_loss", "train_cycle", "val_target_share", "val_fd")
            if any(k in h for h in history)]
    if keys:
        report.heading("Learning curves")
        report.figure(learning_curves({"run": history}, keys),
                      f"validation on {EPOCH_SAMPLES} held-out images per domain")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
