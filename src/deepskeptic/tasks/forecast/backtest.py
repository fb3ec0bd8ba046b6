"""A run's backtest: its accuracy over the test origins, and backtest.json, which predict's
intervals, the statistical baselines' chosen forms and the reports read back."""
from __future__ import annotations

from typing import Any

import numpy as np

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_json, read_json
from deepskeptic.runs import Run
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.forecast.data import PanelPrepared, Prepared
from deepskeptic.tasks.forecast.eval import accuracy, backtest_scales
from deepskeptic.tasks.forecast.m4 import naive2, owa

BACKTEST_FILE = "backtest.json"


def evaluate_backtest(p: Prepared, origins: np.ndarray, forecasts: np.ndarray) -> dict[str, Any]:
    """test_mase, test_smape, test_mae, test_rmse and per_step of (K, H) ``forecasts`` made at
    ``origins``; and M4's test_owa, against Naive2 forecasts made at the same origins (whose
    sMAPE and MASE are test_naive2_smape and test_naive2_mase)."""
    values = p.series.values
    finite = np.isfinite(forecasts).all(axis=1)
    if not finite.all():   # a run whose forecasts are inf or NaN must not end with metrics that look done
        k = int(np.argmin(finite))
        raise UserError(f"the forecast made at {p.series.time_labels(int(origins[k]), int(origins[k]) + 1)[0]} for "
                        f"series {p.series.name} is not a finite number: the model diverged or the series is too "
                        f"extreme for it; rescale the series, or lower --lr for a network")
    actual = np.stack([values[o:o + p.horizon] for o in origins])
    scales = backtest_scales(values, origins, p.season)
    metrics = accuracy(actual, forecasts, scales)
    reference = accuracy(actual, np.stack([naive2(values[:o], p.horizon, p.season) for o in origins]), scales)
    metrics.update(naive2_smape=reference["smape"], naive2_mase=reference["mase"])
    # None (JSON null) when Naive2 is perfect: prefixed() would leave a None unprefixed
    return {**prefixed(metrics, "test"),
            "test_owa": owa(metrics["smape"], metrics["mase"], reference["smape"], reference["mase"])}


def write_backtest(run: Run, p: Prepared, origins: np.ndarray, forecasts: np.ndarray, form: dict,
                   future: np.ndarray) -> None:
    """backtest.json: each origin's forecast and the actual values, the residuals predict's
    intervals come from, the chosen baseline form and the forecast past the end of the series."""
    atomic_write_json(run.path / BACKTEST_FILE, backtest_record(p, origins, forecasts, form, future))


def backtest_record(p: Prepared, origins: np.ndarray, forecasts: np.ndarray, form: dict,
                    future: np.ndarray) -> dict[str, Any]:
    s = p.series
    actual = np.stack([s.values[o:o + p.horizon] for o in origins])
    first = max(0, int(origins[0]) - 3 * p.horizon - p.lookback)
    return {
        "origins": origins.tolist(), "origin_labels": s.time_labels(int(origins[0]), int(origins[-1]) + 1),
        "forecasts": forecasts.tolist(), "actuals": actual.tolist(), "residuals": (actual - forecasts).tolist(),
        "form": form, "history_start": first, "history_labels": s.time_labels(first), "history": s.values[first:].tolist(),
        "future_labels": s.time_labels(len(s), len(s) + p.horizon), "future": np.asarray(future).tolist()}


# ------------------------------------------------------------------ panels

PER_SERIES_KEYS = ("mase", "smape", "owa", "naive2_mase", "naive2_smape", "mae", "rmse")


def evaluate_panel(pp: PanelPrepared, forecasts: np.ndarray) -> dict[str, Any]:
    """The backtest of every series of a panel from its (S, K, H) ``forecasts``: each series'
    metrics (``per_series``), and the aggregate as M4 computes it: test_mase, test_smape (and MAE,
    RMSE, per_step) the means over the series, test_owa from the mean sMAPE and MASE against those
    of Naive2 at the same origins."""
    per_series = {}
    steps = []
    for p, f in zip(pp.members, forecasts):
        m = evaluate_backtest(p, p.split.test_origins(), f)
        per_series[p.series.name] = {k: m[f"test_{k}"] for k in PER_SERIES_KEYS}
        steps.append(m["per_step"])
    mean = {k: float(np.mean([v[k] for v in per_series.values()])) for k in PER_SERIES_KEYS if k != "owa"}
    return {**{f"test_{k}": v for k, v in mean.items()},
            "test_owa": owa(mean["smape"], mean["mase"], mean["naive2_smape"], mean["naive2_mase"]),
            "per_step": {k: [round(float(x), 6) for x in np.mean([s[k] for s in steps], axis=0)] for k in steps[0]},
            "series": len(per_series), "per_series": per_series}


def write_panel_backtest(run: Run, pp: PanelPrepared, forecasts: np.ndarray, forms: list[dict],
                         futures: np.ndarray) -> None:
    """backtest.json of a panel: the single-series record of each series, in the panel's order."""
    atomic_write_json(run.path / BACKTEST_FILE, {
        "panel": pp.panel.name, "names": pp.panel.names,
        "series": [backtest_record(p, p.split.test_origins(), f, form, future)
                   for p, f, form, future in zip(pp.members, forecasts, forms, futures)]})


def panel_form(forms: list[dict], names: list[str]) -> dict[str, Any]:
    """What metrics.json says of a panel's baseline forms: how often each form was chosen over
    every series and origin (the gold standard), or each series' form."""
    if forms and all("chosen" in f for f in forms):
        chosen: dict[str, int] = {}
        for f in forms:
            for k, v in f["chosen"].items():
                chosen[k] = chosen.get(k, 0) + v
        return {"chosen": dict(sorted(chosen.items(), key=lambda kv: -kv[1]))}
    return {"per_series": dict(zip(names, forms))} if any(forms) else {}


def read_backtest(run: Run) -> dict[str, Any]:
    path = run.path / BACKTEST_FILE
    if not path.is_file():
        raise UserError(f"{run.path} has no {BACKTEST_FILE}; it is not a finished forecast run")
    return read_json(path)
