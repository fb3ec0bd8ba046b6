"""The statistical baselines: fitted at every backtest origin on the data before it, and never trained.

``choose`` picks a method's form once, on the data before the first backtest origin (ETS: trend and
seasonality by AICc; ARIMA: d by the KPSS test, the seasonal difference by seasonal strength, p and
q by AIC). ``forecast`` then re-estimates the chosen form's parameters on whatever history it is
given (ARIMA starting from the parameters found before the first origin, stored in the form).
Everything sees only the history passed in, so no baseline can look past its origin.

The gold standard (gold.py: auto-ets, auto-arima, auto-theta, comb, mstl) instead runs its whole
automatic selection at every origin; ``naive2`` (m4.py) needs no choice. ``forecast`` and
``backtest`` dispatch to them, so the task and the predictor call one pair of functions.
"""
from __future__ import annotations

import contextlib
import itertools
import warnings
from typing import Any

import numpy as np

from deepskeptic.tasks.forecast.gold import GOLD_METHODS, backtest_gold, fit_forecast
from deepskeptic.tasks.forecast.m4 import naive2, seasonal_adjustment


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """y[n - m + (h - 1) mod m] for h = 1..H: the last observed season repeated."""
    m = season if len(history) >= season else 1
    return history[len(history) - m + np.arange(horizon) % m].astype(float)


def drift(history: np.ndarray, horizon: int) -> np.ndarray:
    """The last value plus h times the average change over the history."""
    slope = (history[-1] - history[0]) / max(1, len(history) - 1)
    return history[-1] + slope * np.arange(1, horizon + 1)


@contextlib.contextmanager
def _quiet():
    """Around every statsmodels call: one BLAS thread, and no warnings.

    statsmodels' fits multiply tiny matrices; with two BLAS threads on busy cores one ARIMA order
    search took 45 s instead of 0.5 s (measured). It also warns about convergence and p-value
    tables on most short series; the forms it fits are checked for finite results instead."""
    from threadpoolctl import threadpool_limits
    # Imported first: these modules add 'always' warning filters when they are first imported.
    import statsmodels.tools.sm_exceptions  # noqa: F401
    import statsmodels.tsa.arima.model  # noqa: F401
    import statsmodels.tsa.forecasting.theta  # noqa: F401
    import statsmodels.tsa.holtwinters  # noqa: F401
    import statsmodels.tsa.seasonal  # noqa: F401
    import statsmodels.tsa.stattools  # noqa: F401
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        yield


def _seasonal_ok(history: np.ndarray, season: int) -> bool:
    return 2 <= season and len(history) >= 2 * season + 2


def _seasonal_strength(history: np.ndarray, season: int) -> float:
    """Hyndman's strength of seasonality from an STL decomposition: 1 - var(R) / var(S + R)."""
    from statsmodels.tsa.seasonal import STL
    result = STL(history, period=season, robust=True).fit()
    return max(0.0, 1 - np.var(result.resid) / max(1e-12, np.var(result.seasonal + result.resid)))


def _ets_model(history, form: dict, season: int):
    """Holt-Winters exponential smoothing (statsmodels), fitted by least squares: five to ten times
    faster than the state-space ETSModel, and the same point forecasts for additive errors."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing
    return ExponentialSmoothing(history, trend=form["trend"], damped_trend=form["damped"], seasonal=form["seasonal"],
                                seasonal_periods=season if form["seasonal"] else None,
                                initialization_method="estimated")


def _arima_model(history, form: dict):
    from statsmodels.tsa.arima.model import ARIMA
    return ARIMA(history, order=tuple(form["order"]), seasonal_order=tuple(form["seasonal_order"]),
                 trend=form["trend"])


def choose(method: str, config: Any, history: np.ndarray, season: int) -> dict:
    """The form of ``method`` for this series (a JSON-able dict), chosen on ``history`` only."""
    history = np.asarray(history, float)
    if method == "naive2":  # what M4's test says of the history before the first origin
        return {"seasonal_adjustment": seasonal_adjustment(history, season, 1).kind}
    if method not in ("ets", "arima", "theta") or np.ptp(history) == 0:  # nothing to choose (KPSS and
        return {}                                                          # theta fail on constant series)
    with _quiet():
        if method == "ets":
            return _choose_ets(config, history, season)
        if method == "arima":
            return _choose_arima(config, history, season)
        if method == "theta":
            return {"period": season if config.deseasonalize and _seasonal_ok(history, season) else 1,
                    "multiplicative": bool((history > 0).all())}
        return {}


def _choose_ets(config, history: np.ndarray, season: int) -> dict:
    trends = [(None, False), ("add", False)] + ([("add", True)] if config.damped else [])
    seasonals = [None]
    if config.seasonal and _seasonal_ok(history, season):
        seasonals += ["add"] + (["mul"] if (history > 0).all() else [])
    best, best_aicc = None, np.inf
    for (trend, damped), seasonal in itertools.product(trends, seasonals):
        form = {"trend": trend, "damped": damped, "seasonal": seasonal}
        try:
            aicc = _ets_model(history, form, season).fit().aicc
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(aicc) and aicc < best_aicc:
            best, best_aicc = form, aicc
    return {**(best or {"trend": None, "damped": False, "seasonal": None}), "aicc": _finite(best_aicc)}


def _choose_arima(config, history: np.ndarray, season: int) -> dict:
    from statsmodels.tsa.stattools import kpss
    seasonal_d = int(config.seasonal and 2 <= season <= 24 and _seasonal_ok(history, season)
                     and _seasonal_strength(history, season) > 0.64)  # auto.arima's threshold
    work = history[season:] - history[:-season] if seasonal_d else history
    d = 0
    while d < config.max_d:  # difference while KPSS rejects stationarity at 5%
        p_value = kpss(work, regression="c", nlags="auto")[1]
        if p_value >= 0.05:
            break
        work, d = np.diff(work), d + 1
    seasonal_order = (0, 1, 1, season) if seasonal_d else (0, 0, 0, 0)
    # A drift when once differenced, always: kept as it was for continuity. Choosing it by AIC was
    # measured and not kept (sunspots 0.888 -> 0.820, elec-equip 0.212 -> 0.263, nile still drifts,
    # 1.225); auto-arima (gold.py) chooses drift and mean by AICc as R's auto.arima does.
    trend = "c" if d + seasonal_d == 0 else ("t" if d + seasonal_d == 1 else "n")
    best, best_aic = None, np.inf
    for p, q in itertools.product(range(config.max_p + 1), range(config.max_q + 1)):
        form = {"order": [p, d, q], "seasonal_order": list(seasonal_order), "trend": trend}
        try:
            result = _arima_model(history, form).fit()
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(result.aic) and result.aic < best_aic:
            best, best_aic = {**form, "params": [float(x) for x in result.params]}, result.aic
    if best is None:  # nothing converged: a random walk
        best = {"order": [0, 1, 0], "seasonal_order": [0, 0, 0, 0], "trend": "n", "params": None}
    note = {}
    if config.seasonal and season > 24:
        note = {"season_note": f"season {season} > 24: no seasonal term (use mstl for long seasons)"}
    return {**best, "aic": _finite(best_aic), **note}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def forecast(method: str, form: dict, history: np.ndarray, horizon: int, season: int, config: Any = None,
             seasons: tuple[int, ...] = ()) -> np.ndarray:
    """(H,) forecast from ``history`` alone with the chosen ``form``; the naive forecast if a
    statsmodels fit fails on this history (rare; it keeps a backtest going). The gold standard
    runs its selection on ``history`` with ``config`` (default: its registered defaults) and
    ``seasons`` (mstl's cycles; default the season) and ignores the form."""
    history = np.asarray(history, float)
    if method in GOLD_METHODS:
        return fit_forecast(method, config if config is not None else default_config(method), history, horizon,
                            season, seasons)[0]
    if method == "naive2":
        return naive2(history, horizon, season)
    if method == "naive":
        return np.full(horizon, history[-1])
    if method == "seasonal-naive":
        return seasonal_naive(history, horizon, season)
    if method == "drift":
        return drift(history, horizon)
    if np.ptp(history) == 0 or not form:  # constant history (or no form could be chosen on one)
        return np.full(horizon, history[-1])
    try:
        with _quiet():
            return _statsmodels_forecast(method, form, history, horizon, season)
    except (ValueError, np.linalg.LinAlgError, IndexError):
        return np.full(horizon, history[-1])


def _statsmodels_forecast(method: str, form: dict, history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    if method == "ets":
        out = _ets_model(history, form, season).fit().forecast(horizon)
    elif method == "arima":
        model = _arima_model(history, form)
        start = np.asarray(form["params"]) if form.get("params") else None
        out = model.fit(start_params=start).forecast(horizon)  # refit, starting from the chosen fit
    elif method == "theta":
        from statsmodels.tsa.forecasting.theta import ThetaModel
        model = ThetaModel(history, period=form["period"], deseasonalize=form["period"] > 1,
                           method="multiplicative" if form["multiplicative"] else "additive")
        out = model.fit().forecast(horizon)
    else:
        raise ValueError(f"unknown statistical method {method}")
    out = np.asarray(out, float)
    if out.shape != (horizon,) or not np.isfinite(out).all():
        raise ValueError("non-finite forecast")
    return out


def default_config(method: str) -> Any:
    from deepskeptic.models.forecast import STATISTICAL
    return STATISTICAL[method][0]()


def backtest(method: str, config: Any, values: np.ndarray, origins: np.ndarray, horizon: int,
             season: int, *, seasons: tuple[int, ...] = (), jobs: int = 1) -> tuple[np.ndarray, dict]:
    """(K, H) forecasts, one per origin from values[:origin], and the form chosen before the first
    (the gold standard: how often each form was chosen, one fit per origin in ``jobs`` processes)."""
    if method in GOLD_METHODS:
        return backtest_gold(method, config, values, origins, horizon, season, seasons, jobs)
    form = choose(method, config, values[:origins[0]], season)
    forecasts = np.stack([forecast(method, form, values[:o], horizon, season) for o in origins])
    return forecasts, form
