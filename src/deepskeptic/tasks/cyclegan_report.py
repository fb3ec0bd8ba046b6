"""Measures, pictures, the report and `translate` for cyclegan runs.

Measures on held-out images of each domain: the share of translations the domain judge recognises
as the target domain, the cycle reconstruction error (mean absolute pixel error, 0..1), and the FD
between translations and held-out target images (with the target domain's own floor).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepskeptic.errors import UserError
from deepskeptic.reports.html import Report
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks import gan_eval
from deepskeptic.tasks.gan_report import png_figure, epoch_strip

EPOCH_SAMPLES = 200  # held-out images per domain measured after each epoch (the final measure uses more)


def measure(g_ab: nn.Module, g_ba: nn.Module, prepared, n: int, device: torch.device) -> dict[str, Any]:
    """Target share, FD to the target domain and cycle error, per direction and their mean."""
    from deepskeptic.tasks.cyclegan import translate_images
    pair, judge = prepared.pair, prepared.judge.to(device)
    out: dict[str, Any] = {}
    directions = (("a2b", pair.a_test, g_ab, g_ba, prepared.reference_b, pair.names[1]),
                  ("b2a", pair.b_test, g_ba, g_ab, prepared.reference_a, pair.names[0]))
    for tag, source, forward, back, reference, target in directions:
        x = source[:n]
        fake = translate_images(forward, x, device)
        rec = translate_images(back, fake, device)
        features, logits = judge.outputs(fake)
        out[f"target_share_{tag}"] = (logits.argmax(1) == judge.classes.index(target)).double().mean().item()
        out[f"fd_{tag}"] = gan_eval.frechet_distance(features, reference.heldout_features)
        out[f"fd_floor_{tag}"] = reference.floor["fd_floor"]
        out[f"cycle_error_{tag}"] = (rec.float() - x.float()).abs().mean().item() / 255
    for key in ("target_share", "fd", "fd_floor", "cycle_error"):
        out[key] = (out[f"{key}_a2b"] + out[f"{key}_b2a"]) / 2
    out["eval_samples"] = min(n, len(pair.a_test), len(pair.b_test))
    return out


def triplets(g_ab: nn.Module, g_ba: nn.Module, pair, device: torch.device, k: int = 8) -> torch.Tensor:
    """(6k, C, S, S) uint8, rows: A, A->B, A->B->A, B, B->A, B->A->B for the first k held-out images."""
    from deepskeptic.tasks.cyclegan import translate_images
    k = min(k, len(pair.a_test), len(pair.b_test))
    a, b = pair.a_test[:k], pair.b_test[:k]
    ab, ba = translate_images(g_ab, a, device), translate_images(g_ba, b, device)
    return torch.cat([a, ab, translate_images(g_ba, ab, device), b, ba, translate_images(g_ab, ba, device)])


def save_triplets(path: Path, g_ab, g_ba, pair, device) -> None:
    images = triplets(g_ab, g_ba, pair, device)
    gan_eval.save_png(path, images, cols=len(images) // 6)


def epoch_evaluator(prepared, device: torch.device):
    """After each epoch: RUN/samples/epoch-NNN.png and the mean measures on a few held-out images."""
    def evaluate(job, epoch: int) -> dict[str, float]:
        if job.run_path is not None:
            save_triplets(job.run_path / "samples" / f"epoch-{epoch:03d}.png", job.g_ab, job.g_ba, prepared.pair, device)
        m = measure(job.g_ab, job.g_ba, prepared, EPOCH_SAMPLES, device)
        return {k: m[k] for k in ("target_share", "fd", "cycle_error")}
    return evaluate


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


def translate_command(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.data.images import load_image_files
    from deepskeptic.tasks.cyclegan import translate_images
    if not args.input:
        raise UserError("name at least one image file or folder with --input")
    device = torch.device("cpu")
    model = task.load_model(run, device)
    info = run.config["data_info"]
    generator = model.g_ab if args.direction == "a2b" else model.g_ba
    x, paths = load_image_files(args.input, image_size=info["image_size"], channels=info["channels"])
    y = translate_images(generator, x, device)
    out = Path(args.out) if args.out else run.path / f"translated-{args.direction}"
    used: set[str] = set()
    for i, (image, path) in enumerate(zip(y, paths)):
        name = f"{Path(path).stem}.png"
        if name in used:                       # two inputs of the same name from different folders
            name = f"{Path(path).stem}-{i}.png"
        used.add(name)
        gan_eval.save_png(out / name, image[None], cols=1)
    src, dst = info["names"] if args.direction == "a2b" else info["names"][::-1]
    print(f"translated {len(paths)} image(s) from {src} to {dst} ({info['image_size']} px); wrote them to {out}")
    return 0
