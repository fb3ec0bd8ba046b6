"""A run's backtest: its accuracy over the test origins, and backtest.json, which predict's
intervals, the statistical baselines' chosen forms and the reports read back."""
from __future__ import annotations

from typing import Any

import numpy as np

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_json, read_json
from deepskeptic.runs import Run
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.forecast.data import Prepared
from deepskeptic.tasks.forecast.eval import accuracy, backtest_scales

BACKTEST_FILE = "backtest.json"


def evaluate_backtest(p: Prepared, origins: np.ndarray, forecasts: np.ndarray) -> dict[str, Any]:
    """test_mase, test_smape, test_mae, test_rmse and per_step of (K, H) ``forecasts`` made at ``origins``."""
    actual = np.stack([p.series.values[o:o + p.horizon] for o in origins])
    return prefixed(accuracy(actual, forecasts, backtest_scales(p.series.values, origins, p.season)), "test")


def write_backtest(run: Run, p: Prepared, origins: np.ndarray, forecasts: np.ndarray, form: dict,
                   future: np.ndarray) -> None:
    """backtest.json: each origin's forecast and the actual values, the residuals predict's
    intervals come from, the chosen baseline form and the forecast past the end of the series."""
    s = p.series
    actual = np.stack([s.values[o:o + p.horizon] for o in origins])
    first = max(0, int(origins[0]) - 3 * p.horizon - p.lookback)
    atomic_write_json(run.path / BACKTEST_FILE, {
        "origins": origins.tolist(), "origin_labels": s.time_labels(int(origins[0]), int(origins[-1]) + 1),
        "forecasts": forecasts.tolist(), "actuals": actual.tolist(), "residuals": (actual - forecasts).tolist(),
        "form": form, "history_start": first, "history_labels": s.time_labels(first), "history": s.values[first:].tolist(),
        "future_labels": s.time_labels(len(s), len(s) + p.horizon), "future": np.asarray(future).tolist()})


def read_backtest(run: Run) -> dict[str, Any]:
    path = run.path / BACKTEST_FILE
    if not path.is_file():
        raise UserError(f"{run.path} has no {BACKTEST_FILE}; it is not a finished forecast run")
    return read_json(path)
