"""The gold-standard baselines and M4's yardsticks: the seasonality test, Naive2, sMAPE and OWA by
hand; auto-ets, auto-arima, auto-theta, comb and mstl against hand-computed values and against
statsforecast itself; no look-ahead; the same forecasts in parallel; seasons over 24 said."""
from __future__ import annotations

import numpy as np
import pytest

from deepskeptic.models.forecast import STATISTICAL, ARIMAConfig, AutoETSConfig
from deepskeptic.tasks.forecast.baselines import backtest, choose, forecast
from deepskeptic.tasks.forecast.eval import accuracy
from deepskeptic.tasks.forecast.gold import GOLD_METHODS, fit_forecast
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
    by_library = adjustment.restore(np.mean([f.fit(adjustment.adjusted).predict(5)["mean"] for f in three], axis=0))
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
