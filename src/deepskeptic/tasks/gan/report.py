"""Pictures and the report of gan runs.

The report is rendered from the run folder alone (metrics.json, history.jsonl and the PNGs that
training wrote), so `deepskeptic report RUN` needs neither the data nor the judge.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common.adversarial import save_png, to_uint8
from deepskeptic.tasks.common.adversarial_report import epoch_strip, png_figure
from deepskeptic.tasks.common.judge import nearest
from deepskeptic.tasks.gan.data import Prepared
from deepskeptic.tasks.gan.jobs import FIXED_NOISE_SEED


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent vectors a, b (D,) at fractions t (T,) -> (T, D)."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return a + t[:, None] * (b - a)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * a + (torch.sin(t * omega) / so)[:, None] * b


@torch.no_grad()
def interpolation(generator: nn.Module, latent_dim: int, device: torch.device, rows: int = 6,
                  steps: int = 10) -> torch.Tensor:
    """(rows * steps, C, S, S) uint8: each row walks the latent sphere from one sample to another."""
    z = torch.randn(rows, 2, latent_dim, generator=torch.Generator().manual_seed(7))
    t = torch.linspace(0, 1, steps)
    path = torch.cat([slerp(z[r, 0], z[r, 1], t) for r in range(rows)])   # (rows * steps, D)
    generator.eval()
    return to_uint8(generator(path.to(device)))


def write_pictures(run: Run, generator: nn.Module, latent_dim: int, fake: torch.Tensor, prepared: Prepared,
                   device: torch.device) -> None:
    """RUN/samples/final.png, RUN/interpolation.png and RUN/nearest.png (generated over nearest training)."""
    z = torch.randn(64, latent_dim, generator=torch.Generator().manual_seed(FIXED_NOISE_SEED))
    generator.eval()
    with torch.no_grad():
        save_png(run.path / "samples" / "final.png", to_uint8(generator(z.to(device))))
    save_png(run.path / "interpolation.png", interpolation(generator, latent_dim, device), cols=10)
    shown = fake[:8]
    index, _ = nearest(shown, prepared.data.x_train)
    save_png(run.path / "nearest.png", torch.cat([shown, prepared.data.x_train[index]]), cols=len(shown))
    generator.train()


def histogram_figure(generated: dict[str, float], real: dict[str, float]):
    names = list(generated)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(names) + 1.5), 3))
    ax.bar(x - 0.2, [real[n] for n in names], 0.4, label="held-out real", color="#999")
    ax.bar(x + 0.2, [generated[n] for n in names], 0.4, label="generated", color="#4a7")
    ax.set_xticks(x, names, rotation=60, fontsize=8)
    ax.set_ylabel("share (judge's class)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_gan_report(run: Run, metrics: dict[str, Any] | None = None) -> None:
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    s = config["settings"]
    info = config["data_info"]
    report = Report(f"gan · {s['model']} on {info['name']}")
    report.paragraph(
        f"Fréchet distance {metrics['fd']:.4g} to {metrics['fd_samples']} held-out images, against a floor of "
        f"{metrics['fd_floor']:.4g} (training vs held-out images: {metrics['fd_ratio']:.3g}x the floor); "
        f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f} (floor {metrics['precision_floor']:.3f}"
        f" / {metrics['recall_floor']:.3f}). {metrics['epochs']} epoch(s), {metrics['train_seconds']:.1f} s of "
        f"training on {metrics['device']}, seed {metrics['seed']}.")
    report.paragraph(f"Measured in the feature space of the judge {metrics['judge']} (test accuracy "
                     f"{_fmt(metrics.get('judge_test_accuracy'))}): its convolutional features averaged over the image, as FID does with Inception's.", "muted")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    strip = epoch_strip(run)
    if strip is not None:
        report.heading("One fixed noise batch, epoch by epoch")
        report.figure(strip, "the first 8 images of the fixed-noise grid after each epoch (RUN/samples/)")
    report.heading("Samples")
    png_figure(report, run.path / "samples" / "final.png", "64 samples from the fixed noise, after training")
    png_figure(report, run.path / "interpolation.png",
                "latent interpolation: each row walks the noise sphere from one sample to another")
    history = run.history()
    keys = [k for k in ("train_d_loss", "train_g_loss", "val_fd") if any(k in h for h in history)]
    if keys:
        report.heading("Learning curves")
        report.figure(learning_curves({"run": history}, keys), "losses are batch means per epoch; val fd on "
                      "the same noise each epoch")
    if metrics.get("class_histogram"):
        report.heading("Mode coverage")
        report.figure(histogram_figure(metrics["class_histogram"], metrics["heldout_class_histogram"]),
                      f"classes the judge sees in generated and held-out images; {metrics['classes_covered']} of "
                      f"{len(metrics['class_histogram'])} classes at >= 1/4 of their real share, total variation "
                      f"{metrics['class_tv_distance']:.3f}")
    report.heading("Memorisation check")
    png_figure(report, run.path / "nearest.png",
                f"top: generated; below: the nearest training image in pixels. Median RMS distance to the nearest "
                f"training image {metrics['nearest_train_distance']:.1f} for generated images, "
                f"{metrics['heldout_nearest_train_distance']:.1f} for held-out real ones (ratio "
                f"{metrics['memorisation_ratio']:.2f}; well under 1 would mean copying)")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
