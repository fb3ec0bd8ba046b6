"""The gold-standard baselines and M4's yardsticks: the seasonality test, Naive2, sMAPE and OWA by
hand; auto-ets, auto-arima, auto-theta, comb and mstl against hand-computed values and against
statsforecast itself
(fitted directly on a real built-in series at the backtest's origins); ETS forecasts by the state
equations; no look-ahead; the same forecasts in parallel; seasons over 24 said."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from deepskeptic.data.series import load_series
from deepskeptic.models.forecast import STATISTICAL, ARIMAConfig, AutoETSConfig
from deepskeptic.tasks.forecast.baselines import backtest, choose, forecast
from deepskeptic.tasks.forecast.eval import accuracy
from deepskeptic.tasks.forecast.gold import GOLD_METHODS, ets_forecast, fit_forecast
from deepskeptic.tasks.forecast.gold import statsforecast_models   # (with numba's disk cache on)
from deepskeptic.tasks.forecast.m4 import naive2, owa, seasonal_adjustment, seasonality_test

FACTORS = np.array([0.8, 1.2, 0.9, 1.1])      # a quarterly season of mean 1


def config(method):
    return STATISTICAL[method][0]()


def growing_seasonal(n: int = 24) -> np.ndarray:
    """100 x the season x 1% growth a step: a multiplicative ETS series, no noise."""
    t = np.arange(n)
    return 100 * FACTORS[t % 4] * (1 + 0.01 * t)


# ------------------------------------------------------------------ M4's yardsticks by hand

def test_seasonality_test_is_m4s_90_percent_acf_test():
    rng = np.random.default_rng(0)
    for y in (100 * FACTORS[np.arange(24) % 4], rng.normal(size=40), rng.normal(size=40) + np.sin(np.arange(40) * np.pi / 2)):
        n, m = len(y), 4
        d = y - y.mean()
        r = np.array([np.sum(d[k:] * d[:n - k]) for k in range(1, m + 1)]) / np.sum(d * d)   # R's acf, by hand
        assert seasonality_test(y, m) == (abs(r[-1]) > 1.645 * np.sqrt((1 + 2 * np.sum(r[:-1] ** 2)) / n))
    assert seasonality_test(100 * FACTORS[np.arange(24) % 4], 4)
    assert not seasonality_test(100 * FACTORS[np.arange(11) % 4], 4)       # under three seasons: never
    assert not seasonality_test(np.arange(30.0), 1) and not seasonality_test(np.full(30, 2.0), 4)


def test_naive2_by_hand():
    seasonal = 100 * FACTORS[np.arange(24) % 4]   # the classical decomposition recovers FACTORS exactly
    np.testing.assert_allclose(naive2(seasonal, 6, 4), 100 * FACTORS[np.arange(6) % 4])
    adjustment = seasonal_adjustment(seasonal, 4, 6)
    assert adjustment.kind == "multiplicative"
    np.testing.assert_allclose(adjustment.adjusted, 100)
    # not seasonal (too short for the test, or no season): the naive forecast
    np.testing.assert_array_equal(naive2(np.array([1.0, 3, 2, 5, 4]), 3, 4), [4, 4, 4])
    np.testing.assert_array_equal(naive2(np.arange(10.0), 2, 1), [9, 9])
    # a season on data with zeros cannot be divided out: additive, and the naive2 forecast still repeats it
    shifted = seasonal - 100
    assert seasonal_adjustment(shifted, 4, 4).kind == "additive"
    np.testing.assert_allclose(naive2(shifted, 4, 4), 100 * FACTORS - 100, atol=1e-9)


def test_smape_and_owa_by_hand():
    actual, predicted = np.array([[100.0, 0.0]]), np.array([[50.0, 0.0]])
    m = accuracy(actual, predicted, np.array([10.0]))
    assert m["smape"] == pytest.approx((200 * 50 / 150 + 0) / 2)            # 0/0 counts as a perfect 0
    assert m["mase"] == pytest.approx(2.5)
    assert owa(smape=10.0, mase=0.5, smape_naive2=20.0, mase_naive2=1.0) == pytest.approx(0.5)
    assert owa(smape=30.0, mase=1.0, smape_naive2=20.0, mase_naive2=1.0) == pytest.approx(1.25)
    assert owa(1.0, 1.0, 0.0, 1.0) is None                                   # Naive2 perfect: undefined


# ------------------------------------------------------------------ the gold-standard baselines

@pytest.mark.parametrize("method", GOLD_METHODS)
def test_gold_baselines_follow_a_line(method):
    line = 3 + 2.0 * np.arange(30)
    out, chosen = fit_forecast(method, config(method), line, 3, 1)
    assert chosen and "failed" not in chosen
    if method == "comb":  # SES forecasts a flat level (about the last value, 61): the mean is under the line
        assert (61 < out).all() and (out < [63, 65, 67]).all() and (np.diff(out) > 0).all()
    else:
        np.testing.assert_allclose(out, [63, 65, 67], atol=0.05)


def test_auto_ets_finds_the_multiplicative_season_and_trend():
    y = growing_seasonal()
    out, chosen = fit_forecast("auto-ets", AutoETSConfig(), y, 4, 4)
    assert chosen == "ETS(M,A,M)"
    np.testing.assert_allclose(out, growing_seasonal(28)[24:], rtol=1e-3)   # 99.2, 150, 113.4, 139.7


def test_comb_is_the_mean_of_ses_holt_and_damped_on_the_adjusted_series():
    AutoETS = statsforecast_models().AutoETS
    rng = np.random.default_rng(1)
    y = growing_seasonal(40) + rng.normal(0, 1, 40)
    adjustment = seasonal_adjustment(y, 4, 5)
    assert adjustment.kind == "multiplicative"
    three = [AutoETS(model="ANN"), AutoETS(model="AAN", damped=False), AutoETS(model="AAN", damped=True)]
    by_library = adjustment.restore(np.mean([by_state_equations(f.fit(adjustment.adjusted).model_, 5) for f in three],
                                            axis=0))   # the library's fits, forecast by the state equations
    np.testing.assert_allclose(forecast("comb", {}, y, 5, 4), by_library)
    # a pure season on a constant level: each smoother forecasts the level, comb the season on it
    np.testing.assert_allclose(forecast("comb", {}, 100 * FACTORS[np.arange(24) % 4], 6, 4),
                               100 * FACTORS[np.arange(6) % 4], rtol=1e-6)


def test_auto_methods_are_statsforecasts_own():
    AutoARIMA, AutoTheta = statsforecast_models().AutoARIMA, statsforecast_models().AutoTheta
    rng = np.random.default_rng(2)
    y = growing_seasonal(36) + rng.normal(0, 2, 36)
    np.testing.assert_allclose(fit_forecast("auto-theta", config("auto-theta"), y, 4, 4)[0],
                               AutoTheta(season_length=4).fit(y).predict(4)["mean"])
    arima = AutoARIMA(season_length=4, allowdrift=True, allowmean=True, approximation=None).fit(y)
    np.testing.assert_allclose(fit_forecast("auto-arima", config("auto-arima"), y, 4, 4)[0], arima.predict(4)["mean"])


def by_state_equations(fitted: dict, horizon: int) -> np.ndarray:
    """(H,) forecast of a fitted statsforecast ETS model by running its state equations forward
    with zero errors, one step at a time (Hyndman et al., Forecasting with Exponential Smoothing,
    table 2.1): level l, trend b damped by phi, season s (the most recent phase first)."""
    _, trend, season, damped = fitted["components"][:4]
    phi = fitted["par"][3] if damped == "D" else 1.0
    state = list(fitted["states"][-1])
    level, slope = state[0], state[1] if trend != "N" else 0.0
    seasonal = state[1 + (trend != "N"):][:fitted["m"]] if season != "N" else []
    out = []
    for _ in range(horizon):
        base = level if trend == "N" else level + phi * slope if trend == "A" else level * slope ** phi
        oldest = seasonal[-1] if seasonal else None
        out.append(base if not seasonal else base + oldest if season == "A" else base * oldest)
        level, slope = base, 0.0 if trend == "N" else phi * slope if trend == "A" else slope ** phi
        seasonal = [oldest, *seasonal[:-1]] if seasonal else []
    return np.array(out)


def statsforecast_direct(method: str, history: np.ndarray, horizon: int, season: int) -> tuple[np.ndarray, str]:
    """statsforecast's model fitted straight on ``history`` with R's defaults, outside our code."""
    models = statsforecast_models()
    if method == "auto-ets":
        model = models.AutoETS(season_length=season, model="ZZZ").fit(history)
        return by_state_equations(model.model_, horizon), model.model_["method"]
    if method == "auto-arima":
        from statsforecast.arima import arima_string
        with warnings.catch_warnings():                           # its optimiser's convergence notes
            warnings.simplefilter("ignore")
            model = models.AutoARIMA(season_length=season, allowdrift=True, allowmean=True,
                                     approximation=None).fit(history)
        return model.predict(horizon)["mean"], arima_string(model.model_).strip()
    model = models.AutoTheta(season_length=season, decomposition_type="multiplicative").fit(history)
    decomposed = f", {model.model_['decomposition_type']} decomposition" if model.model_.get("decompose") else ""
    return model.predict(horizon)["mean"], model.model_["modeltype"] + decomposed


@pytest.mark.parametrize("method", ["auto-ets", "auto-arima", "auto-theta"])
def test_backtest_on_a_real_series_equals_statsforecast_fitted_directly(method):
    """us-unemp (quarterly, 203 points, a built-in): at two origins our backtest's forecast is the
    forecast of statsforecast's model fitted directly on the same history, and the chosen form is
    its. ETS there chooses a damped trend (M,Ad,N): its forecast is the state equations' (statsforecast
    1.7's own damped forecast is off by b (phi - phi^h), see gold.ets_forecast)."""
    series = load_series("us-unemp")
    y, horizon, season = series.values, series.horizon, series.season
    origins = np.array([185, len(y) - horizon])
    ours, form = backtest(method, config(method), y, origins, horizon, season)
    chosen = []
    for k, origin in enumerate(origins):
        expected, words = statsforecast_direct(method, y[:origin], horizon, season)
        np.testing.assert_allclose(ours[k], expected, rtol=1e-9, atol=1e-9)
        chosen.append(words)
    assert list(form["chosen"]) == list(dict.fromkeys(chosen)) and form["season"] == 4
    if method == "auto-ets":
        assert all("Ad" in words for words in chosen)             # the damped path is the one checked


def test_ets_forecast_is_the_state_equations_and_the_librarys_where_undamped():
    """Every trend and season form on a real monthly series (elec-equip): gold.ets_forecast equals
    the state equations run forward; undamped, it equals statsforecast's own forecast exactly."""
    AutoETS = statsforecast_models().AutoETS
    y = load_series("elec-equip").values[:200]
    for form, damped in (("ANN", False), ("AAN", False), ("AAN", True), ("ANA", False), ("AAA", False),
                         ("AAA", True), ("MAM", False), ("MAM", True), ("MNM", False)):
        fitted = AutoETS(season_length=12, model=form, damped=damped).fit(y)
        assert fitted.model_["components"][3] == ("D" if damped else "N")
        ours = ets_forecast(fitted.model_, 18)
        np.testing.assert_allclose(ours, by_state_equations(fitted.model_, 18), rtol=1e-12)
        if not damped:
            np.testing.assert_allclose(ours, fitted.predict(18)["mean"], rtol=1e-12)


def classical_multiplicative(history: np.ndarray, season: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """R's decompose(type="multiplicative") by hand (an even season): the centred 2 x m moving
    average as the trend, the mean ratio to it per phase normalised to mean 1; the adjusted
    history and the last season's indices over the horizon."""
    n, half = len(history), season // 2
    weights = np.r_[0.5, np.ones(season - 1), 0.5] / season
    trend = np.full(n, np.nan)
    trend[half:n - half] = [weights @ history[t - half:t + half + 1] for t in range(half, n - half)]
    ratio = history / trend
    index = np.array([np.nanmean(ratio[phase::season]) for phase in range(season)])
    index /= index.mean()
    seasonal = index[np.arange(n) % season]
    return history / seasonal, seasonal[n - season:][np.arange(horizon) % season]


def test_comb_on_a_real_series_is_the_mean_of_ses_holt_and_damped_on_the_m4_adjusted_series():
    """elec-equip (monthly, seasonal by M4's test) at one origin: comb's forecast is the mean of
    SES, Holt and damped Holt (statsforecast's ETS(A,N,N), ETS(A,A,N), ETS(A,Ad,N) fitted directly,
    forecast by their state equations) on the history adjusted by the hand-computed classical
    decomposition, times its seasonal indices."""
    AutoETS = statsforecast_models().AutoETS
    series = load_series("elec-equip")
    y, horizon, season, origin = series.values, series.horizon, series.season, 230
    history = y[:origin]
    assert seasonality_test(history, season)
    adjusted, future = classical_multiplicative(history, season, horizon)
    np.testing.assert_allclose(seasonal_adjustment(history, season, horizon).adjusted, adjusted, rtol=1e-12)
    forms = [AutoETS(model="ANN"), AutoETS(model="AAN", damped=False), AutoETS(model="AAN", damped=True)]
    fitted = [f.fit(adjusted).model_ for f in forms]
    assert [f["method"] for f in fitted] == ["ETS(A,N,N)", "ETS(A,A,N)", "ETS(A,Ad,N)"]
    expected = np.mean([by_state_equations(f, horizon) for f in fitted], axis=0) * future
    ours, form = backtest("comb", config("comb"), y, np.array([origin]), horizon, season)
    np.testing.assert_allclose(ours[0], expected, rtol=1e-9)
    assert form["chosen"] == {"SES, Holt, damped on the multiplicatively adjusted series": 1}


def test_seasons_over_24_are_said_and_mstl_fits_several():
    rng = np.random.default_rng(3)
    t = np.arange(800)                                                       # half-hourly: a day 48, a week 336
    y = 50 + 10 * np.sin(2 * np.pi * t / 48) + 5 * np.sin(2 * np.pi * t / 336) + rng.normal(0, 0.5, 800)
    ets, chosen = fit_forecast("auto-ets", AutoETSConfig(), y[:200], 4, 48)
    assert "season 48 > 24: none fitted" in chosen
    form = choose("arima", ARIMAConfig(max_p=0, max_q=0), y[:200], 48)
    assert "no seasonal term" in form["season_note"]
    out, chosen = fit_forecast("mstl", config("mstl"), y, 48, 48, seasons=(48, 336))
    assert chosen.startswith("MSTL seasons 48,336 + ETS")
    truth = 50 + 10 * np.sin(2 * np.pi * (800 + np.arange(48)) / 48) + 5 * np.sin(2 * np.pi * (800 + np.arange(48)) / 336)
    assert np.mean(np.abs(out - truth)) < 1.5                                 # both seasons carried forward
    _, chosen = fit_forecast("mstl", config("mstl"), y[:500], 4, 48, seasons=(48, 336))
    assert chosen.startswith("MSTL seasons 48 + ")                            # 336 is not shorter than half of 500


@pytest.mark.parametrize("method", ["naive2", *GOLD_METHODS])
def test_gold_baselines_never_look_past_their_origin(method):
    rng = np.random.default_rng(0)
    t = np.arange(48)
    y = 20 + 0.3 * t + 3 * np.sin(2 * np.pi * t / 4) + rng.normal(0, 0.5, 48)
    origins = np.array([40, 41, 42])
    changed = y.copy()
    changed[41:] += 100
    a, _ = backtest(method, config(method), y, origins, 4, 4)
    b, _ = backtest(method, config(method), changed, origins, 4, 4)
    np.testing.assert_array_equal(a[:2], b[:2])
    assert not np.array_equal(a[2], b[2])


def test_parallel_fits_equal_sequential_ones():
    y = growing_seasonal(40) + np.random.default_rng(4).normal(0, 1, 40)
    origins = np.array([36, 37, 38])
    one, form_one = backtest("auto-ets", AutoETSConfig(), y, origins, 2, 4, jobs=1)
    two, form_two = backtest("auto-ets", AutoETSConfig(), y, origins, 2, 4, jobs=2)
    np.testing.assert_array_equal(one, two)
    assert form_one == form_two and sum(form_one["chosen"].values()) == 3


def test_a_failed_fit_falls_back_to_naive_and_says_so():
    out, chosen = fit_forecast("auto-ets", AutoETSConfig(model="XYZ"), np.array([1.0, 2, 4, 3, 5]), 2, 1)
    np.testing.assert_array_equal(out, [5, 5])
    assert chosen.startswith("naive (the fit failed")
    out, chosen = fit_forecast("auto-arima", config("auto-arima"), np.full(10, 3.0), 2, 1)
    np.testing.assert_array_equal(out, [3, 3])
    assert chosen == "constant history: its value"


# ------------------------------------------------------------------ through the CLI

def test_gold_baselines_and_owa_through_the_cli(capsys, tmp_path, monkeypatch):
    """train an auto-* baseline: OWA against Naive2 in metrics.json, the chosen forms and the season's
    reason in the report; compare: an OWA column; predict refits the selection on the whole series."""
    import json
    from cli_helpers import cli
    from test_forecast_cli import write_series
    monkeypatch.chdir(tmp_path)
    data = write_series(tmp_path / "sales.csv", covariate=False)
    common = ["--horizon", 3, "--origins", 3, "--no-progress"]
    rc, _, err = cli(capsys, "train", "forecast", "--data", data, "--model", "auto-ets", "--out", tmp_path / "ets", *common)
    assert rc == 0, err
    m = json.loads((tmp_path / "ets" / "metrics.json").read_text())
    assert m["test_owa"] == pytest.approx((m["test_smape"] / m["test_naive2_smape"] + m["test_mase"] / m["test_naive2_mase"]) / 2)
    assert sum(m["form"]["chosen"].values()) == 3 and m["season_reason"] == "monthly data: 12 months a year"
    html = (tmp_path / "ets" / "report.html").read_text()
    assert "Chosen forms" in html and "season 12 (monthly data: 12 months a year)" in html and "OWA" in html
    rc, printed, err = cli(capsys, "predict", tmp_path / "ets")
    assert rc == 0 and printed.count("\n2006-0") == 3, err
    rc, _, err = cli(capsys, "compare", "forecast", "--data", data, "--models", "naive2,comb,seasonal-naive",
                     "--out", tmp_path / "cmp", *common)
    assert rc == 0, err
    naive2_run = json.loads((tmp_path / "cmp" / "naive2-seed0" / "metrics.json").read_text())
    assert naive2_run["test_owa"] == pytest.approx(1.0)
    assert "<th>OWA</th>" in (tmp_path / "cmp" / "report.html").read_text()
