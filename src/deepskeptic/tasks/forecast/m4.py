"""The M4 competition's yardsticks, as its benchmark code defines them (Makridakis, Spiliotis and
Assimakopoulos 2018; the R code of the M4-methods repository): the 90 % seasonality test, the
classical multiplicative decomposition that seasonally adjusts a series, the Naive2 forecast built
on it, and OWA, the overall weighted average of sMAPE and MASE relative to Naive2.

Everything here sees only the history it is given, so no forecast can look past its origin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# M4's SeasonalityTest: one-sided 90 % (the 95 % quantile of the normal distribution, as in R)
SEASONALITY_TCRIT = 1.645


def seasonality_test(history: np.ndarray, season: int) -> bool:
    """M4's test: the series is seasonal when its autocorrelation at lag m exceeds 1.645 times
    that lag's standard error under Bartlett's formula, sqrt((1 + 2 sum_{k<m} r_k^2) / n). As in
    the M4 code, a series shorter than three seasons (or with m < 2, or constant) is not seasonal."""
    history = np.asarray(history, float)
    n = len(history)
    if season < 2 or n < 3 * season or np.ptp(history) == 0:
        return False
    from statsmodels.tsa.stattools import acf
    r = acf(history, nlags=season, fft=False)[1:]                          # r_1 .. r_m (R's acf: denominator n)
    limit = SEASONALITY_TCRIT * np.sqrt((1 + 2 * np.sum(r[:-1] ** 2)) / n)
    return bool(abs(r[-1]) > limit)


@dataclass(frozen=True)
class Adjustment:
    """A history seasonally adjusted for a forecast of ``horizon`` steps: ``adjusted`` (N,) is the
    history divided by (multiplicative) or minus (additive) its seasonal component, ``future`` (H,)
    that component over the next H steps (its last season repeated); ``kind`` is 'multiplicative',
    'additive' or 'none' (the test found no season: adjusted is the history, future all 1)."""
    adjusted: np.ndarray
    future: np.ndarray
    kind: str

    def restore(self, forecast: np.ndarray) -> np.ndarray:
        """A forecast of the adjusted series, with the season put back."""
        return forecast + self.future if self.kind == "additive" else forecast * self.future


def seasonal_adjustment(history: np.ndarray, season: int, horizon: int) -> Adjustment:
    """M4's deseasonalisation: when ``seasonality_test`` says seasonal, R's classical
    ``decompose(type="multiplicative")`` (statsmodels' ``seasonal_decompose`` computes the same: a
    centred 2 x m moving average as the trend, the mean ratio to it per phase, normalised to mean
    1). M4's series are all positive; a history with a value <= 0 cannot be divided by a ratio, so
    it is decomposed additively instead (the kind says which)."""
    history = np.asarray(history, float)
    if not seasonality_test(history, season):
        return Adjustment(history, np.ones(horizon), "none")
    from statsmodels.tsa.seasonal import seasonal_decompose
    kind = "multiplicative" if (history > 0).all() else "additive"
    seasonal = np.asarray(seasonal_decompose(history, model=kind, period=season).seasonal, float)  # (N,)
    future = seasonal[len(history) - season:][np.arange(horizon) % season]                        # (H,)
    adjusted = history / seasonal if kind == "multiplicative" else history - seasonal
    return Adjustment(adjusted, future, kind)


def naive2(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """M4's Naive2: the last value of the seasonally adjusted history, with the season put back."""
    adjustment = seasonal_adjustment(history, season, horizon)
    return adjustment.restore(np.full(horizon, adjustment.adjusted[-1]))


def owa(smape: float, mase: float, smape_naive2: float, mase_naive2: float) -> float | None:
    """M4's overall weighted average: (sMAPE / sMAPE of Naive2 + MASE / MASE of Naive2) / 2, each
    over the same forecasts (the same origins, or the same series). Below 1 beats Naive2; None when
    Naive2 is perfect (a zero denominator)."""
    if not (smape_naive2 > 0 and mase_naive2 > 0):
        return None
    return float((smape / smape_naive2 + mase / mase_naive2) / 2)
