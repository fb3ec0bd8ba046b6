"""Classification metrics and figures shared by the image, text and speech tasks."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F



def classification_metrics(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Accuracy, top-5 accuracy, cross-entropy, macro F1 (bare names: the caller adds ``test_``
    with ``metrics.prefixed``), accuracy per class and the confusion matrix (rows true)."""
    from sklearn.metrics import confusion_matrix, f1_score
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()
    cm = confusion_matrix(y.numpy(), pred.numpy(), labels=list(range(len(classes))))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"accuracy": (pred == y).float().mean().item(), "top5_accuracy": top5,
            "loss": F.cross_entropy(logits, y).item(),
            "macro_f1": float(f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0)),
            "per_class_accuracy": {c: float(a) for c, a in zip(classes, per_class)},
            "confusion_matrix": cm.tolist()}


def confusion_figure(cm: list[list[int]], classes: list[str]):
    cm = np.asarray(cm)
    size = max(4.0, 0.45 * len(classes) + 2)
    from deepskeptic.reports.html import plt  # matplotlib only when a figure is drawn (start-up time)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 20:
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict[str, float]):
    from deepskeptic.reports.html import plt
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(per_class) + 1), 3))
    ax.bar(list(per_class), list(per_class.values()), color="#4a7")
    ax.set_ylim(0, 1)
    ax.set_ylabel("test accuracy")
    ax.tick_params(axis="x", rotation=90, labelsize=8)
    fig.tight_layout()
    return fig
