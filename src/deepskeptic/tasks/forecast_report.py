"""Reports for forecast runs and comparisons: forecasts against actual values, error per step of
the horizon, learning curves, LSTM gates, and the verdict against the best statistical baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepskeptic.fileio import read_json
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast_eval import INTERVAL_LEVELS, intervals

NETWORK_ORDER = ("lstm", "rnn", "mlp")


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


def anchor_words(model_config: dict[str, Any]) -> str:
    """The anchor and inputs of a level-relative network in words, from its model config."""
    season, alpha = model_config.get("season", 1), model_config.get("smoothing", 1.0)
    if season > 1:
        base = f"the value one season ({season} steps) earlier" + (
            f", exponentially smoothed (alpha {alpha:g}) over the window's earlier seasons" if alpha < 1 else "")
    else:
        base = f"the window's exponentially smoothed level (alpha {alpha:g})" if alpha < 1 else "the last value"
    level = "; it also sees the absolute level (the training span is stationary)" if model_config.get("keep_level") else ""
    return base + level


def write_run_report(task, run: Run, metrics: dict[str, Any] | None = None) -> None:
    from deepskeptic.tasks.forecast import read_backtest
    config, metrics = run.config, metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    bt = read_backtest(run)
    report = Report(f"forecast · {s['model']} on {info['name']}")
    report.paragraph(
        f"MASE {metrics['test_mase']:.3f}, sMAPE {metrics['test_smape']:.2f}% over {metrics['origins']} backtest origins "
        f"({bt['origin_labels'][0]} to {bt['origin_labels'][-1]}), horizon {metrics['horizon']}, season {metrics['season']}; "
        f"{metrics['train_seconds']:.1f} s of training on {metrics['device']}, seed {metrics['seed']}. "
        f"MASE below 1 beats the in-sample seasonal naive forecast's average one-step error.")
    for note in info.get("notes", []):
        report.paragraph(f"data: {note}", "muted")
    if config.get("model_config", {}).get("level_relative"):
        report.paragraph(f"The network corrects its anchor: {anchor_words(config['model_config'])}.", "muted")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    report.heading("Forecasts against the actual values")
    fig, ax = plt.subplots(figsize=(9, 3.6))
    forecast_panel(ax, bt, f"{s['model']}: every backtest origin, then the forecast past the end")
    ax.legend(fontsize=7)
    fig.tight_layout()
    report.figure(fig, "black: the series; coloured: the forecast made at each origin (dotted line) from the data "
                       "before it; red: the forecast past the end with intervals from the backtest residuals")
    report.heading("Error by step of the horizon")
    report.figure(per_step_figure({s["model"]: metrics["per_step"]["mase"]}))
    if metrics.get("form"):
        report.heading("Chosen form (on the data before the first origin)")
        report.table(["setting", "value"], [[k, v] for k, v in metrics["form"].items()])
    history = run.history()
    if history and "train_loss" in history[0]:
        report.heading("Learning curves")
        curves = {"train": [{"epoch": h["epoch"], "loss": h["train_loss"]} for h in history],
                  "validation": [{"epoch": h["epoch"], "loss": h["val_loss"], "mase": h["val_mase"]}
                                 for h in history if "val_loss" in h]}
        report.figure(learning_curves(curves, ["loss", "mase"]), "L1 loss in scaled units; validation MASE")
    if s["model"] == "lstm":
        from deepskeptic.tasks.forecast_use import lstm_gates
        try:
            window, forecast, gates, units, labels, layer = lstm_gates(task, run, None)
        except Exception:  # pragma: no cover - the report must not fail on a figure
            window = None
        if window is not None:
            report.heading("Inside the LSTM: gates and cell state over the last window")
            report.figure(gates_figure(window, forecast, gates, units, labels, layer),
                          "the explicit LSTM cell loaded with the trained weights ('deepskeptic explain RUN')")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())


# ------------------------------------------------------------------ comparisons

def verdict_pairs(task, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Each network against the best statistical baseline (lowest mean MASE); the lstm also against
    seasonal-naive and the other networks. Without statistical baselines: compare's default."""
    metric = task.primary_metric
    statistical = [m for m in per_model if task.seed_independent(m)]
    networks = sorted((m for m in per_model if m not in statistical),
                      key=lambda m: NETWORK_ORDER.index(m) if m in NETWORK_ORDER else len(NETWORK_ORDER))
    if not statistical:
        deep = [m for m in networks if per_model[m]["role"] == "deep"]
        return [(d, {b: b for b in networks if b not in deep}) for d in deep]
    best = min(statistical, key=lambda m: per_model[m][f"{metric}_mean"])
    pairs = []
    for net in networks:
        references = {best: f"{best} (the best statistical baseline)"}
        if per_model[net]["role"] == "deep":
            if "seasonal-naive" in per_model and best != "seasonal-naive":
                references["seasonal-naive"] = "seasonal-naive"
            references.update({m: m for m in networks if m != net})
        pairs.append((net, references))
    return pairs


def _load(summary_model: dict) -> list[tuple[dict, dict]]:
    return [(read_json(Path(r) / "metrics.json"), read_json(Path(r) / "backtest.json")) for r in summary_model["runs"]]


def comparison_sections(task, report: Report, summary: dict) -> None:
    models = summary["models"]
    loaded = {m: _load(s) for m, s in models.items()}
    report.heading("Accuracy over the backtest (mean ± std over seeds)")
    rows = []
    for m, runs in loaded.items():
        row = [m, models[m]["role"] if not task.seed_independent(m) else "statistical", len(runs)]
        for key in ("test_mase", "test_smape", "test_mae", "test_rmse"):
            values = [metrics[key] for metrics, _ in runs]
            row.append(f"{np.mean(values):.4g} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}")
        row.append(models[m]["train_seconds_mean"])
        rows.append(row)
    report.table(["model", "kind", "runs", "MASE", "sMAPE %", "MAE", "RMSE", "train s"], rows)
    report.paragraph("Statistical baselines do not depend on the seed and run once. MASE below 1 beats the "
                     "in-sample seasonal naive forecast's average one-step error.", "muted")
    report.heading("Forecasts against the actual values (seed 0; first, middle and last origin)")
    cols = 3
    rows_n = (len(loaded) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.8 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (m, runs) in zip(axes.flat, loaded.items()):
        ax.set_axis_on()
        forecast_panel(ax, runs[0][1], f"{m}: MASE {runs[0][0]['test_mase']:.3f}", paths="three")
    fig.tight_layout()
    report.figure(fig, "black: the series; coloured: forecasts made at three backtest origins; red: past the end")
    report.heading("Error by step of the horizon (mean over seeds)")
    report.figure(per_step_figure({m: np.mean([metrics["per_step"]["mase"] for metrics, _ in runs], axis=0).tolist()
                                   for m, runs in loaded.items()}))
