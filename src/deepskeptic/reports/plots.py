"""Plots shared by tasks: learning curves and comparison scatter plots."""
from __future__ import annotations

from typing import Sequence

from deepskeptic.reports.html import plt


def learning_curves(histories: dict[str, list[dict]], metrics: Sequence[str], x: str = "epoch"):
    """One panel per metric; one line per named history (a run, or a model in a comparison)."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, history in histories.items():
            points = [(h[x], h[metric]) for h in history if metric in h and x in h]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        ax.set_xlabel(x.replace("_", " "))
        ax.set_title(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if labels:
        axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def scatter_with_error(points: dict[str, tuple[float, float, float]], xlabel: str, ylabel: str, logx: bool = True):
    """``points[label] = (x, y_mean, y_std)``; one marker with error bar per label."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, (xv, mean, std) in points.items():
        ax.errorbar([xv], [mean], yerr=[std], fmt="o", capsize=4, label=label)
        ax.annotate(label, (xv, mean), textcoords="offset points", xytext=(6, 4), fontsize=9)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
