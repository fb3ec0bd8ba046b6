"""The gold-standard statistical baselines: what a professional forecaster would run first.

- ``auto-ets``, ``auto-arima``, ``auto-theta``: statsforecast's AutoETS, AutoARIMA and AutoTheta,
  ports of R's forecast package (ets, auto.arima) and of the automatic theta family (standard,
  optimised and dynamic theta, chosen by in-sample MSE) that reach R's accuracy on M4. ETS, like
  R's, handles seasons up to 24 only; longer ones are fitted without a season (the form says so:
  ``mstl`` is the baseline for them). ARIMA chooses drift and mean by AICc (R's defaults).
- ``comb``: M4's benchmark, the mean of simple, Holt and damped exponential smoothing (R's ses,
  holt, holt(damped=TRUE): ETS(A,N,N), ETS(A,A,N), ETS(A,Ad,N)) on the series seasonally adjusted
  by M4's classical decomposition (m4.py), with the season put back.
- ``mstl``: the series decomposed by MSTL (STL for one season) into every season that fits (R's
  rule: shorter than half the history), the seasonally adjusted part forecast by ETS without a
  season, each season by its seasonal naive forecast: R's stlf / statsforecast's MSTL, for
  seasons over 24 and for several seasons at once (a day and a week of half-hourly load).

Unlike the older baselines (baselines.py), which choose a form once before the first origin,
these run their whole automatic selection afresh at every backtest origin, on the data before it:
what a forecaster refitting every period would do, and no origin sees past itself. The fits are
independent, so with ``jobs`` > 1 they run in that many processes (statsforecast's own n_jobs
does the same over the series of a frame).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from deepskeptic.tasks.forecast.m4 import seasonal_adjustment

GOLD_METHODS = ("auto-ets", "auto-arima", "auto-theta", "comb", "mstl")
ETS_MAX_SEASON = 24   # R's ets and statsforecast's AutoETS: "frequency too high" past this


def statsforecast_models():
    """statsforecast.models, imported when first needed (it takes seconds). Its theta family is
    compiled by numba on first use; NIXTLA_NUMBA_CACHE keeps the compiled code on disk, so that
    only the first process on a machine pays the minute or two it takes."""
    os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import statsforecast.models as models
    return models


@contextlib.contextmanager
def _quiet():
    """One BLAS thread (the fits multiply tiny matrices; see baselines._quiet) and no warnings."""
    from threadpoolctl import threadpool_limits
    with warnings.catch_warnings(), threadpool_limits(1), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def fit_forecast(method: str, config: Any, history: np.ndarray, horizon: int, season: int,
                 seasons: Sequence[int] = ()) -> tuple[np.ndarray, str]:
    """(H,) forecast of ``method`` from ``history`` alone, and the model its selection chose, in
    words ('ETS(M,Ad,N)', 'ARIMA(0,1,1)(0,1,1)[12]', ...). ``seasons``: the cycles mstl tries
    (default: ``season``). A fit that fails, or a forecast that is not finite, gives the naive
    forecast, and the words say so (rare: a constant or very short history)."""
    history = np.asarray(history, float)
    if np.ptp(history) == 0:
        return np.full(horizon, history[-1]), "constant history: its value"
    try:
        with _quiet():
            out, chosen = _FITS[method](config, history, horizon, season, tuple(seasons) or (season,))
        out = np.asarray(out, float)
        if out.shape != (horizon,) or not np.isfinite(out).all():
            raise ValueError("non-finite forecast")
        return out, chosen
    except Exception as error:  # noqa: BLE001 - any library failure on one history: keep the backtest going
        return np.full(horizon, history[-1]), f"naive (the fit failed: {type(error).__name__})"


def ets_forecast(fitted: dict, horizon: int) -> np.ndarray:
    """(H,) point forecast of a fitted statsforecast ETS model (its ``model_``) from its last state,
    by R's forecast recursion with the damped trend's sum phi + phi^2 + ... + phi^h.

    statsforecast up to 2.1 (and R's forecast before its pull request 1172) extends that sum by
    phi^(i+1) instead of phi^(i+2), so that step 2 uses 2 phi b instead of (phi + phi^2) b (fixed
    upstream in statsforecast's pull request 1219, not yet released): a damped form's forecast at
    step h is off by b (phi - phi^h). Undamped forms agree with the library's own forecast exactly
    (tested). Components: error, trend, season (N, A or M) and D where damped; the last state holds
    the level, the trend where there is one, then the season, the most recent phase first."""
    _, trend, season, damped = fitted["components"][:4]
    phi = float(fitted["par"][3]) if damped == "D" else 1.0
    state = np.asarray(fitted["states"][-1], float)
    level, slope = state[0], (state[1] if trend != "N" else 0.0)
    steps = np.arange(1, horizon + 1)
    phistar = np.cumsum(phi ** steps)                                      # (H,) phi + ... + phi^h
    if trend == "N":
        out = np.full(horizon, level)
    elif trend == "A":
        out = level + phistar * slope
    else:                                                                  # multiplicative trend
        out = level * slope ** phistar if slope >= 0 else np.full(horizon, np.nan)
    if season != "N":
        m = int(fitted["m"])
        seasonal = state[1 + (trend != "N"):][:m]                          # (m,) most recent phase first
        phase = seasonal[(m - steps) % m]                                  # the phase one season before each step
        out = out + phase if season == "A" else out * phase
    return out


def _ets_predict(model, horizon: int) -> np.ndarray:
    """A fitted AutoETS's forecast: the library's own, unless damped (ets_forecast says why)."""
    if model.model_["components"][3] == "D":
        return ets_forecast(model.model_, horizon)
    return model.predict(horizon)["mean"]


def _auto_ets(config, history, horizon, season, seasons):
    dropped = config.seasonal and season > ETS_MAX_SEASON
    m = season if config.seasonal and not dropped else 1
    model = statsforecast_models().AutoETS(season_length=max(1, m), model=config.model).fit(history)
    note = f" (season {season} > {ETS_MAX_SEASON}: none fitted)" if dropped else ""
    return _ets_predict(model, horizon), model.model_["method"] + note


def _auto_arima(config, history, horizon, season, seasons):
    dropped = config.seasonal and season > config.max_season
    m = season if config.seasonal and not dropped else 1
    # R's auto.arima defaults: drift and mean considered (chosen by AICc), the approximate
    # likelihood during the search on long or high-frequency series, then the exact refit
    model = statsforecast_models().AutoARIMA(season_length=max(1, m), allowdrift=True, allowmean=True,
                                             approximation=None).fit(history)
    from statsforecast.arima import arima_string
    note = f" (season {season} > max_season {config.max_season}: none fitted)" if dropped else ""
    return model.predict(horizon)["mean"], arima_string(model.model_).strip() + note


def _auto_theta(config, history, horizon, season, seasons):
    model = statsforecast_models().AutoTheta(season_length=max(1, season),
                                             decomposition_type=config.decomposition).fit(history)
    words = model.model_["modeltype"]
    if model.model_.get("decompose"):
        words += f", {model.model_['decomposition_type']} decomposition"
    return model.predict(horizon)["mean"], words


def _comb(config, history, horizon, season, seasons):
    adjustment = seasonal_adjustment(history, season, horizon)
    models = statsforecast_models()
    forms = [models.AutoETS(model="ANN"), models.AutoETS(model="AAN", damped=False),
             models.AutoETS(model="AAN", damped=True)]                  # R's ses, holt, holt(damped=TRUE)
    mean = np.mean([_ets_predict(f.fit(adjustment.adjusted), horizon) for f in forms], axis=0)
    words = "SES, Holt, damped" + (f" on the {adjustment.kind}ly adjusted series" if adjustment.kind != "none"
                                   else " (no season by the 90% test)")
    return adjustment.restore(mean), words


def _mstl(config, history, horizon, season, seasons):
    models = statsforecast_models()
    trend = models.AutoETS(model="ZZN")
    fitting = sorted({s for s in seasons if 1 < s < len(history) / 2})   # R's mstl: periods shorter than n/2
    if not fitting:
        model = trend.fit(history)
        return _ets_predict(model, horizon), model.model_["method"] + " (no season fits: ETS alone)"
    model = models.MSTL(season_length=fitting, trend_forecaster=trend).fit(history)
    adjusted = model.trend_forecaster                                   # the ETS fitted on the adjusted series
    # MSTL's forecast is that ETS's plus each season's naive forecast: the ETS part replaced by ours
    seasons_part = model.predict(horizon)["mean"] - adjusted.predict(horizon)["mean"]
    return (seasons_part + _ets_predict(adjusted, horizon),
            f"MSTL seasons {','.join(map(str, fitting))} + {adjusted.model_['method']}")


_FITS: dict[str, Callable] = {"auto-ets": _auto_ets, "auto-arima": _auto_arima, "auto-theta": _auto_theta,
                              "comb": _comb, "mstl": _mstl}


def _fit_one(method: str, config: Any, horizon: int, season: int, seasons: tuple[int, ...],
             history: np.ndarray) -> tuple[np.ndarray, str]:
    return fit_forecast(method, config, history, horizon, season, seasons)


def parallel_map(fn: Callable, items: list, jobs: int = 1) -> list:
    """[fn(item) for item in items], in ``jobs`` processes when jobs > 1 (0: one per CPU core this
    process may use). Forked where the platform allows: the workers inherit the imported libraries
    instead of importing them again (statsforecast's import alone takes seconds)."""
    jobs = available_cores() if jobs == 0 else jobs
    if jobs <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    statsforecast_models()  # imported once here, inherited by the forked workers
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=multiprocessing.get_context(method)) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (4 * jobs))))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def backtest_gold(method: str, config: Any, values: np.ndarray, origins: np.ndarray, horizon: int, season: int,
                  seasons: Sequence[int] = (), jobs: int = 1) -> tuple[np.ndarray, dict]:
    """(K, H) forecasts, one per origin, each by the method's full automatic selection on
    values[:origin]; and the form: how often each model was chosen (in the order first chosen),
    and the season used."""
    values = np.asarray(values, float)
    results = parallel_map(partial(_fit_one, method, config, horizon, season, tuple(seasons)),
                           [values[:o] for o in origins], jobs)
    forecasts = np.stack([forecast for forecast, _ in results])
    return forecasts, {"chosen": dict(Counter(chosen for _, chosen in results)), "season": season,
                       **({"seasons": list(seasons)} if method == "mstl" and seasons else {})}
