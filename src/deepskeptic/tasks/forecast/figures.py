"""The forecast task's figures: a series with its backtest forecasts and intervals, the error per
step of the horizon, and an LSTM's gates over a window."""
from __future__ import annotations

import numpy as np

from deepskeptic.reports.html import plt
from deepskeptic.tasks.forecast.eval import INTERVAL_LEVELS, intervals


def _ticks(ax, start: int, labels: list[str], count: int = 6) -> None:
    """Time labels under an axis whose x values are positions start, start+1, ..."""
    if not labels:
        return
    picks = np.unique(np.linspace(0, len(labels) - 1, num=min(count, len(labels))).astype(int))
    ax.set_xticks([start + i for i in picks], [labels[i] for i in picks], fontsize=7, rotation=30)


def forecast_panel(ax, bt: dict, title: str, paths: str = "all", future: bool = True) -> None:
    """History (black), backtest forecasts at the origins (colour), the forecast past the end with
    its intervals (shaded). ``paths``: 'all' origins or 'three' (first, middle, last)."""
    start = bt["history_start"]
    history = np.asarray(bt["history"])
    n = start + len(history)
    ax.plot(np.arange(start, n), history, color="black", linewidth=1, label="actual")
    origins = bt["origins"]
    chosen = range(len(origins)) if paths == "all" else sorted({0, len(origins) // 2, len(origins) - 1})
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, max(1, len(chosen))))
    for colour, k in zip(colours, chosen):
        o = origins[k]
        f = np.asarray(bt["forecasts"][k])
        ax.plot(np.arange(o, o + len(f)), f, color=colour, linewidth=1.2 if paths != "all" else 0.8,
                alpha=0.9, label="backtest forecasts" if k == chosen[0] else None)
        ax.axvline(o, color=colour, linewidth=0.5, linestyle=":")
    if future and bt.get("future"):
        f = np.asarray(bt["future"])
        x = np.arange(n, n + len(f))
        bands = intervals(f, np.asarray(bt["residuals"]))
        for level, alpha in zip(sorted(INTERVAL_LEVELS, reverse=True), (0.15, 0.3)):
            low, high = bands[level]
            ax.fill_between(x, low, high, color="tab:red", alpha=alpha, linewidth=0, label=f"{level}% interval")
        ax.plot(x, f, color="tab:red", linewidth=1.5, label="forecast")
    _ticks(ax, start, bt["history_labels"] + bt.get("future_labels", []))
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)


def per_step_figure(per_step: dict[str, list[float]], metric: str = "mase"):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for label, values in per_step.items():
        ax.plot(np.arange(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("step of the horizon")
    ax.set_ylabel(metric.upper())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def gates_figure(window: np.ndarray, forecast: np.ndarray, gates: dict[str, np.ndarray], units: list[int],
                 labels: list[str], layer: int):
    """``window`` (L,) input values, ``forecast`` (H,), ``gates[name]`` (L, hidden) of one layer."""
    rows = [("forget", "forget gate f(t)"), ("input", "input gate i(t)"), ("output", "output gate o(t)"),
            ("cell", "cell state C(t)"), ("hidden", "hidden state h(t)")]
    fig, axes = plt.subplots(len(rows) + 1, 1, figsize=(7.5, 1.6 * (len(rows) + 1)), sharex=True)
    L = len(window)
    axes[0].plot(np.arange(L), window, color="black", label="input window")
    axes[0].plot(np.arange(L, L + len(forecast)), forecast, color="tab:red", label="forecast")
    axes[0].legend(fontsize=7)
    axes[0].set_title(f"LSTM layer {layer + 1}: units {', '.join(map(str, units))}", fontsize=9)
    for ax, (key, title) in zip(axes[1:], rows):
        for u in units:
            ax.plot(np.arange(L), gates[key][:, u], linewidth=1, label=f"unit {u}")
        ax.set_ylabel(title, fontsize=7)
        if key in ("forget", "input", "output"):
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=min(4, len(units)))
    _ticks(axes[-1], 0, labels)
    fig.tight_layout()
    return fig
