"""Rolling-origin backtest geometry, forecast accuracy and prediction intervals.

An *origin* o is a position in the series: a forecast made at o sees values[:o] only and is scored
on values[o:o + H]. The backtest uses the last K origins, one step apart, the last one at N - H.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTERVAL_LEVELS = (80, 95)  # percent; the intervals predict writes
# predict's columns: each step's time, point forecast and interval bounds
FORECAST_COLUMNS = ["time", "forecast"] + [f"{side}_{level}" for level in INTERVAL_LEVELS for side in ("lower", "upper")]


@dataclass(frozen=True)
class Split:
    """Where a series of ``n`` points is cut, all by origins (see the module docstring):

    - test origins: the last ``origins`` ones, [first_test, n - horizon];
    - validation origins: ``val_origins`` ones whose targets end by first_test;
    - training windows (inputs values[t-L:t], targets values[t:t+H]) with targets ending by
      ``train_end``, the first validation origin: training and the scaler see values[:train_end].
    """
    n: int
    horizon: int
    lookback: int
    origins: int
    val_origins: int

    @property
    def first_test(self) -> int:
        return self.n - self.horizon - self.origins + 1

    @property
    def train_end(self) -> int:
        return self.first_test - (self.horizon + self.val_origins - 1 if self.val_origins else 0)

    def test_origins(self) -> np.ndarray:
        return np.arange(self.first_test, self.n - self.horizon + 1)

    def val_window_origins(self) -> np.ndarray:
        return np.arange(self.train_end, self.train_end + self.val_origins)

    def train_window_origins(self) -> np.ndarray:
        return np.arange(self.lookback, self.train_end - self.horizon + 1)


def mase_scale(history: np.ndarray, season: int) -> float:
    """In-sample mean absolute error of the seasonal naive forecast (lag ``season``, or 1 when the
    history is too short); falls back to lag 1, then to 1.0, for series that never change."""
    for lag in (season, 1):
        if len(history) > lag:
            scale = float(np.mean(np.abs(history[lag:] - history[:-lag])))
            if scale > 0:
                return scale
    return 1.0


def accuracy(actual: np.ndarray, forecast: np.ndarray, scales: np.ndarray) -> dict:
    """Metrics of (K, H) forecasts against (K, H) actuals; ``scales`` (K,) the MASE denominators.

    Returns overall mase, smape (percent), mae, rmse (bare names: the caller adds ``test_`` or
    ``val_``) and ``per_step``: each metric per step of the horizon (lists of H numbers)."""
    error = actual - forecast                                          # (K, H)
    absolute = np.abs(error)
    denominator = np.abs(actual) + np.abs(forecast)
    smape = np.where(denominator > 0, 200 * absolute / np.where(denominator > 0, denominator, 1), 0.0)
    scaled = absolute / scales[:, None]
    per_step = {"mase": scaled.mean(0), "smape": smape.mean(0), "mae": absolute.mean(0),
                "rmse": np.sqrt((error ** 2).mean(0))}
    return {"mase": float(scaled.mean()), "smape": float(smape.mean()), "mae": float(absolute.mean()),
            "rmse": float(np.sqrt((error ** 2).mean())),
            "per_step": {k: [round(float(x), 6) for x in v] for k, v in per_step.items()}}


def backtest_scales(values: np.ndarray, origins: np.ndarray, season: int) -> np.ndarray:
    """MASE denominator per origin, from the data before that origin only."""
    return np.array([mase_scale(values[:o], season) for o in origins])


def intervals(point: np.ndarray, residuals: np.ndarray, levels=INTERVAL_LEVELS) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Prediction intervals for a (H,) forecast from (K, H) backtest residuals (actual - forecast):
    per step h, the empirical (1-level)/2 and (1+level)/2 quantiles of the residuals at step h are
    added to the forecast. With K origins the outer quantiles rest on few residuals: rough for K < 20."""
    out = {}
    for level in levels:
        tail = (1 - level / 100) / 2
        low = np.quantile(residuals, tail, axis=0)
        high = np.quantile(residuals, 1 - tail, axis=0)
        out[level] = (point + low, point + high)
    return out
