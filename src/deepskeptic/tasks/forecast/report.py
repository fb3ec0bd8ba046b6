"""Reports for forecast runs and comparisons: forecasts against actual values, error per step of
the horizon, learning curves, LSTM gates, and the verdict against the best statistical baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepskeptic.fileio import read_json
from deepskeptic.models import registry
from deepskeptic.reports.html import Report, plt
from deepskeptic.reports.plots import learning_curves
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast.backtest import read_backtest
from deepskeptic.tasks.forecast.explain import lstm_gates
from deepskeptic.tasks.forecast.figures import forecast_panel, gates_figure, per_step_figure
from deepskeptic.tasks.forecast.predict import load_model

NETWORK_ORDER = ("lstm", "rnn", "mlp")


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


def season_words(season: int, reason: str | None) -> str:
    """'season 48 (data every 30min: 48 steps a day (the season), 336 a week)'."""
    return f"season {season}" + (f" ({reason})" if reason else "")


def write_run_report(run: Run, metrics: dict[str, Any] | None = None) -> None:
    config, metrics = run.config, metrics if metrics is not None else run.metrics
    s, info = config["settings"], config["data_info"]
    if info.get("panel"):
        write_panel_report(run, metrics)
        return
    bt = read_backtest(run)
    report = Report(f"forecast · {s['model']} on {info['name']}")
    owa = metrics.get("test_owa")
    report.paragraph(
        f"MASE {metrics['test_mase']:.3f}, sMAPE {metrics['test_smape']:.2f}%"
        + (f", OWA {owa:.3f}" if owa is not None else "")
        + f" over {metrics['origins']} backtest origins "
        f"({bt['origin_labels'][0]} to {bt['origin_labels'][-1]}), horizon {metrics['horizon']}, "
        f"{season_words(metrics['season'], metrics.get('season_reason'))}; "
        f"{metrics['train_seconds']:.1f} s of training on {metrics['device']}, seed {metrics['seed']}. "
        f"MASE below 1 beats the in-sample seasonal naive forecast's average one-step error; OWA below 1 beats "
        f"M4's Naive2 (the seasonally adjusted naive forecast) at the same origins.")
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
        form = metrics["form"]
        if "chosen" in form:  # the gold standard: its selection ran at every origin
            report.heading("Chosen forms (the automatic selection at each origin)")
            report.table(["form", "origins"], [[k, v] for k, v in form["chosen"].items()])
        else:
            report.heading("Chosen form (on the data before the first origin)")
            report.table(["setting", "value"], [[k, v] for k, v in form.items()])
    _network_sections(report, run, s["model"], "validation MASE", "the last window",
                      "('deepskeptic explain RUN')")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())


PANEL_FIGURES = 6   # series drawn in a panel run's report: the first ones of the panel


def first_series(bt: dict) -> dict:
    """A backtest record to draw: a single series' own, a panel's first series'."""
    return bt["series"][0] if "series" in bt else bt


def write_panel_report(run: Run, metrics: dict[str, Any]) -> None:
    config = run.config
    s, info = config["settings"], config["data_info"]
    bt = read_backtest(run)
    first = bt["series"][0]
    owa = metrics.get("test_owa")
    report = Report(f"forecast · {s['model']} on the panel {info['name']} ({metrics['series']} series)")
    kind = ("a global network: one set of weights trained on the windows of every series, each scaled by its own "
            "training span" if not registry.spec("forecast", s["model"]).one_step else
            "fitted to each series on its own at every origin")
    report.paragraph(
        f"Over {metrics['series']} series and {metrics['origins']} backtest origins each ({first['origin_labels'][0]} to "
        f"{first['origin_labels'][-1]}): mean MASE {metrics['test_mase']:.3f}, mean sMAPE {metrics['test_smape']:.2f}%"
        + (f", OWA {owa:.3f}" if owa is not None else "") + f"; horizon {metrics['horizon']}, "
        f"{season_words(metrics['season'], metrics.get('season_reason'))}; {kind}. "
        f"{metrics['train_seconds']:.1f} s of training on {metrics['device']}, seed {metrics['seed']}. OWA is M4's: "
        f"the mean sMAPE and MASE, each against Naive2's at the same origins; below 1 beats Naive2.")
    for note in info.get("notes", []):
        report.paragraph(f"data: {note}", "muted")
    if config.get("model_config", {}).get("level_relative"):
        report.paragraph(f"The network corrects its anchor: {anchor_words(config['model_config'])}.", "muted")
    report.table(["metric", "value"], [[k, v] for k, v in metrics.items() if not isinstance(v, (dict, list))])
    report.heading("Per series")
    report.table(["series", "MASE", "sMAPE %", "OWA", "Naive2 MASE"],
                 [[name, f"{m['mase']:.4g}", f"{m['smape']:.4g}", "" if m["owa"] is None else f"{m['owa']:.4g}",
                   f"{m['naive2_mase']:.4g}"] for name, m in metrics["per_series"].items()])
    shown = bt["series"][:PANEL_FIGURES]
    report.heading(f"Forecasts against the actual values (the first {len(shown)} series)")
    cols = 3
    rows_n = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.8 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, name, record in zip(axes.flat, bt["names"], shown):
        ax.set_axis_on()
        forecast_panel(ax, record, f"{name}: MASE {metrics['per_series'][name]['mase']:.3f}", paths="three")
    fig.tight_layout()
    report.figure(fig, "black: the series; coloured: forecasts made at three backtest origins; red: past the end")
    report.heading("Error by step of the horizon (mean over the series)")
    report.figure(per_step_figure({s["model"]: metrics["per_step"]["mase"]}))
    if metrics.get("form", {}).get("chosen"):
        report.heading("Chosen forms (the automatic selection at each series' origins)")
        report.table(["form", "fits"], [[k, v] for k, v in metrics["form"]["chosen"].items()])
    _network_sections(report, run, s["model"], "validation MASE (mean over the series)",
                      f"the last window of {bt['names'][0]}", "('deepskeptic explain RUN SERIES_ID' for another series)")
    report.heading("Settings")
    report.table(["setting", "value"], [[k, v] for k, v in s.items()])
    run.write_report(report.render())


# ------------------------------------------------------------------ comparisons

# The M4 yardsticks summary.json carries besides the primary metric (MASE): each as
# <metric>_mean, _std (over seeds) and _values (one per run; null where undefined: OWA when Naive2 is
# perfect at the same origins, or a run from before OWA existed)

def _network_sections(report: Report, run: Run, model: str, mase: str, window_name: str, explain: str) -> None:
    """A network run's learning curves and, for the lstm, its gates over a window (single series and
    panels alike; ``mase``, ``window_name`` and ``explain`` are their wording)."""
    history = run.history()
    if history and "train_loss" in history[0]:
        report.heading("Learning curves")
        curves = {"train": [{"epoch": h["epoch"], "loss": h["train_loss"]} for h in history],
                  "validation": [{"epoch": h["epoch"], "loss": h["val_loss"], "mase": h["val_mase"]}
                                 for h in history if "val_loss" in h]}
        report.figure(learning_curves(curves, ["loss", "mase"]), f"L1 loss in scaled units; {mase}")
    if model != "lstm":
        return
    try:
        window, forecast, gates, units, labels, layer = lstm_gates(run, load_model(run, torch.device("cpu")), None)
    except Exception:  # noqa: BLE001  # pragma: no cover - the report must not fail on a figure
        return
    if window is None:
        return
    report.heading(f"Inside the LSTM: gates and cell state over {window_name}")
    report.figure(gates_figure(window, forecast, gates, units, labels, layer),
                  f"the explicit LSTM cell loaded with the trained weights {explain}")

SUMMARY_METRICS = ("test_smape", "test_owa")


def summary_metrics(per_model: dict[str, Any]) -> None:
    """Add SUMMARY_METRICS' mean, std and values to each model of a comparison's summary, read
    from its runs' metrics.json; the mean and std of the runs where the metric is defined (null
    when it is defined in none). Keys already there (from compare itself) are left as they are."""
    for summary in per_model.values():
        metrics = [read_json(Path(r) / "metrics.json") for r in summary.get("runs", [])]
        for key in SUMMARY_METRICS:
            if f"{key}_mean" in summary:
                continue
            values = [m.get(key) for m in metrics]
            defined = [float(v) for v in values if isinstance(v, (int, float)) and np.isfinite(v)]
            summary[f"{key}_mean"] = float(np.mean(defined)) if defined else None
            summary[f"{key}_std"] = float(np.std(defined, ddof=1)) if len(defined) > 1 else (0.0 if defined else None)
            summary[f"{key}_values"] = values


def verdict_pairs(task, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Each network against the best statistical baseline (lowest mean MASE); the lstm also against
    seasonal-naive and the other networks. Without statistical baselines: compare's default.

    compare calls this hook on the summary's per-model table before writing summary.json; it is
    where that table also gets sMAPE and OWA (summary_metrics)."""
    metric = task.primary_metric
    statistical = [m for m in per_model if registry.spec(task.name, m).one_step]
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
        row = [m, models[m]["role"] if not registry.spec(task.name, m).one_step else "statistical", len(runs)]
        for key in ("test_mase", "test_smape", "test_owa", "test_mae", "test_rmse"):
            values = [metrics.get(key) for metrics, _ in runs]
            values = [v for v in values if v is not None]   # OWA: runs from before it existed, or a perfect Naive2
            row.append(f"{np.mean(values):.4g} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2g}"
                       if values else "")
        row.append(models[m]["train_seconds_mean"])
        rows.append(row)
    report.table(["model", "kind", "runs", "MASE", "sMAPE %", "OWA", "MAE", "RMSE", "train s"], rows)
    yardstick_verdicts(task, report, summary)
    first = next(iter(loaded.values()))[0][0]
    report.paragraph("Statistical baselines do not depend on the seed and run once. MASE below 1 beats the "
                     "in-sample seasonal naive forecast's average one-step error; OWA below 1 beats M4's Naive2 "
                     "(the seasonally adjusted naive forecast) at the same origins. "
                     f"{season_words(first['season'], first.get('season_reason')).capitalize()}.", "muted")
    report.heading("Forecasts against the actual values (seed 0; first, middle and last origin)")
    cols = 3
    rows_n = (len(loaded) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 2.8 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (m, runs) in zip(axes.flat, loaded.items()):
        ax.set_axis_on()
        forecast_panel(ax, first_series(runs[0][1]), f"{m}: MASE {runs[0][0]['test_mase']:.3f}", paths="three")
    fig.tight_layout()
    report.figure(fig, "black: the series; coloured: forecasts made at three backtest origins; red: past the end")
    report.heading("Error by step of the horizon (mean over seeds)")
    report.figure(per_step_figure({m: np.mean([metrics["per_step"]["mase"] for metrics, _ in runs], axis=0).tolist()
                                   for m, runs in loaded.items()}))
    if all("per_series" in runs[0][0] for runs in loaded.values()):
        per_series_section(task, report, loaded)


def yardstick_verdict(per_model: dict[str, Any], net: str, reference: str, key: str, seeds: int) -> str | None:
    """The verdict rule of compare (a gap beyond the larger seed spread) on ``key`` (test_owa or
    test_smape, lower is better): a clause, or None where the metric is undefined for either."""
    a, b = per_model[net], per_model[reference]
    if a.get(f"{key}_mean") is None or b.get(f"{key}_mean") is None:
        return None
    gap = b[f"{key}_mean"] - a[f"{key}_mean"]
    spread = max(a[f"{key}_std"] or 0.0, b[f"{key}_std"] or 0.0)
    numbers = f"{a[f'{key}_mean']:.4g} against {b[f'{key}_mean']:.4g}"
    if seeds < 2:
        return f"{numbers} (one seed: spread unknown)"
    if gap > spread * (1 + 1e-9):
        return f"{numbers}: better by more than the seed spread ({spread:.2g})"
    if gap < -spread * (1 + 1e-4):
        return f"{numbers}: worse by more than the seed spread ({spread:.2g})"
    return f"{numbers}: within the seed spread ({spread:.2g})"


def yardstick_verdicts(task, report: Report, summary: dict) -> None:
    """The verdicts again by M4's yardsticks: each network's OWA and sMAPE against the references
    of its MASE verdict (the best statistical baseline first)."""
    per_model, seeds = summary["models"], summary.get("seeds", 1)
    if not all("test_owa_mean" in m for m in per_model.values()):
        summary_metrics(per_model)          # a summary.json written before it carried them
    lines = []
    for net, references in verdict_pairs(task, per_model):
        for reference, label in references.items():
            clauses = [f"{name} {clause}" for name, key in (("OWA", "test_owa"), ("sMAPE", "test_smape"))
                       if (clause := yardstick_verdict(per_model, net, reference, key, seeds)) is not None]
            if clauses:
                lines.append(f"{net} against {label}: " + "; ".join(clauses) + ".")
    if lines:
        report.heading("Verdicts by OWA and sMAPE (M4's yardsticks; mean over seeds, lower is better)")
        for line in lines:
            report.paragraph(line)


def per_series_section(task, report: Report, loaded: dict[str, list[tuple[dict, dict]]]) -> None:
    """Where each network wins on a panel: its MASE per series (mean over seeds) against the best
    statistical baseline's (the one with the lowest mean MASE over the series)."""
    mase = {m: {name: float(np.mean([metrics["per_series"][name]["mase"] for metrics, _ in runs]))
                for name in runs[0][0]["per_series"]} for m, runs in loaded.items()}
    statistical = [m for m in mase if registry.spec(task.name, m).one_step]
    networks = [m for m in mase if m not in statistical]
    if not statistical or not networks:
        return
    best = min(statistical, key=lambda m: np.mean(list(mase[m].values())))
    names = list(mase[best])
    report.heading(f"Per series: the networks against {best} (the best statistical baseline over the panel)")
    for net in networks:
        wins = [n for n in names if mase[net][n] < mase[best][n]]
        report.paragraph(f"{net} has a lower MASE than {best} on {len(wins)} of {len(names)} series"
                         + (f": {', '.join(wins[:12])}" + (" ..." if len(wins) > 12 else "") if wins else "") + ".")
    report.table(["series", *[f"{m} MASE" for m in [best, *networks]], f"networks below {best}",
                  "best statistical on it"],
                 [[n, *[f"{mase[m][n]:.4g}" for m in [best, *networks]],
                   ", ".join(net for net in networks if mase[net][n] < mase[best][n]) or "none",
                   min(statistical, key=lambda m: mase[m][n])] for n in names])
