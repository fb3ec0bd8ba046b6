"""Report sections and explanations for image runs: curves, confusion, mistakes, feature maps, Grad-CAM."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic import recipes
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.common.classification import confusion_figure, per_class_figure
from deepskeptic.tasks.common.pixels import normalise
from deepskeptic.tasks.image.data import Prepared


def _show(ax, image_chw: np.ndarray, title: str = "") -> None:
    """Draw a (C, H, W) uint8 image."""
    if image_chw.shape[0] == 1:
        ax.imshow(image_chw[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image_chw.transpose(1, 2, 0))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=7)


def confident_mistakes_figure(images: torch.Tensor, probs: torch.Tensor, y: torch.Tensor, classes: list[str], n: int = 16):
    pred = probs.argmax(1)
    wrong = (pred != y).nonzero().flatten()
    if len(wrong) == 0:
        return None
    order = wrong[probs[wrong, pred[wrong]].argsort(descending=True)][:n]
    cols = min(8, len(order))
    rows = (len(order) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.6), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, i in zip(axes.flat, order.tolist()):
        _show(ax, images[i].numpy(), f"{classes[y[i]]}\n→ {classes[pred[i]]} {probs[i, pred[i]]:.2f}")
    fig.tight_layout()
    return fig


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output of every conv layer for a normalised batch x (B, C, H, W): name -> (B, K, h, w)."""
    maps: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: maps.__setitem__(name, out.float().cpu()))
             for name, m in conv_layers(model)]
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return maps


def feature_maps_figure(image: np.ndarray, maps: dict[str, torch.Tensor], channels: int = 8):
    """One row per conv layer: the input image, then the first ``channels`` maps of that layer."""
    rows = len(maps)
    fig, axes = plt.subplots(rows, channels + 1, figsize=((channels + 1) * 1.1, rows * 1.2), squeeze=False)
    for r, (name, fmap) in enumerate(maps.items()):
        _show(axes[r][0], image, f"conv {name}" if r == 0 else name)
        for c in range(channels):
            ax = axes[r][c + 1]
            ax.set_axis_off()
            if c < fmap.shape[1]:
                ax.imshow(fmap[0, c].numpy(), cmap="viridis")
    fig.tight_layout()
    return fig


def grad_cam(model: nn.Module, x: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int]:
    """Grad-CAM over the last conv layer for one normalised image x (1, C, H, W).

    Returns a (H, W) heat map in [0, 1] and the class it explains (the predicted one by default).
    """
    layers = conv_layers(model)
    if not layers:
        raise ValueError("Grad-CAM needs a convolutional model")
    store: dict[str, torch.Tensor] = {}
    layer = layers[-1][1]
    hook = layer.register_forward_hook(lambda m, i, out: store.__setitem__("act", out))
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            target = int(logits.argmax(1)) if target is None else target
            act = store["act"]                                       # (1, K, h, w)
            grad = torch.autograd.grad(logits[0, target], act)[0]    # (1, K, h, w)
    finally:
        hook.remove()
    weights = grad.mean(dim=(2, 3), keepdim=True)                   # (1, K, 1, 1)
    cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()  # (1, 1, h, w)
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam / cam.max() if cam.max() > 0 else cam
    return cam.cpu().numpy(), target


def grad_cam_figure(image: np.ndarray, cam: np.ndarray, title: str):
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    _show(axes[0], image, "input")
    _show(axes[1], image, title)
    axes[1].imshow(cam, cmap="jet", alpha=0.45)
    fig.tight_layout()
    return fig


def write_image_report(task, run: Run, prepared: Prepared | None = None, metrics: dict[str, Any] | None = None) -> None:
    """report.html of an image run: ``task`` is the ImageTask (its predictor and data loading)."""
    config = run.config
    metrics = metrics if metrics is not None else run.metrics
    predictor = task.predictor(run)
    model, mean, std = predictor.model, predictor.mean, predictor.std
    if prepared is None:
        prepared = task.prepare(config["settings"])
    data = prepared.data
    probs = predictor.probabilities(data.x_test)

    s = config["settings"]
    report = Report(f"image · {s['model']} on {data.name}")
    report.paragraph(f"{metrics['test_accuracy']:.2%} test accuracy (top-5 {metrics['test_top5_accuracy']:.2%}) on "
                     f"{len(data.x_test)} test images after {metrics['epochs']} epoch(s), "
                     f"{metrics['train_seconds']:.1f} s of training on {metrics['device']}, seed {metrics['seed']}.")
    recipe = recipes.sentence(config)   # how the recipe and learning rate were chosen, and why
    if recipe:
        report.paragraph(recipe)
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    history = run.history()
    if history:
        report.heading("Learning curves")
        report.figure(learning_curves({"train": [{"epoch": h["epoch"], "loss": h["train_loss"],
                                                  "accuracy": h["train_accuracy"]} for h in history],
                                       "validation": [{"epoch": h["epoch"], "loss": h["val_loss"],
                                                       "accuracy": h["val_accuracy"]} for h in history
                                                      if "val_loss" in h]},
                                      ["loss", "accuracy"]), "training (with dropout and augmentation) and validation")
    report.heading("Confusion matrix and per-class accuracy")
    report.figure(confusion_figure(metrics["confusion_matrix"], data.classes), "test set: rows true, columns predicted")
    report.figure(per_class_figure(metrics["per_class_accuracy"]))
    mistakes = confident_mistakes_figure(data.x_test, probs, data.y_test, data.classes)
    if mistakes is not None:
        report.heading("Most confidently wrong test images")
        report.figure(mistakes, "true class → predicted class and its probability")
    if conv_layers(model):
        report.heading("Feature maps")
        for i in range(min(2, len(data.x_test))):
            x = normalise(data.x_test[i:i + 1], mean, std)
            report.figure(feature_maps_figure(data.x_test[i].numpy(), feature_maps(model, x)),
                          f"test image {i} ({data.classes[data.y_test[i]]}): first 8 channels of each conv layer")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())
