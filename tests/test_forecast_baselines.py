"""Baselines against values computed by hand, the metrics and intervals by hand, the backtest
geometry, and no look-ahead: changing values after an origin never changes a forecast made at it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from deepskeptic.models import registry
from deepskeptic.models.forecast import ARIMAConfig, ETSConfig, NoSettings, ThetaConfig
from deepskeptic.tasks.forecast import ForecastTask
from deepskeptic.tasks.forecast.baselines import backtest, choose, forecast
from deepskeptic.tasks.forecast.data import plan
from deepskeptic.tasks.forecast.eval import Split, accuracy, intervals, mase_scale
from deepskeptic.errors import UserError


def test_simple_baselines_by_hand():
    y = np.array([1.0, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(forecast("naive", {}, y, 3, 1), [6, 6, 6])
    np.testing.assert_array_equal(forecast("seasonal-naive", {}, y, 6, 4), [3, 4, 5, 6, 3, 4])
    np.testing.assert_array_equal(forecast("seasonal-naive", {}, y, 2, 1), [6, 6])
    np.testing.assert_array_equal(forecast("drift", {}, np.array([1.0, 3, 5]), 2, 1), [7, 9])


def test_statistical_baselines_follow_a_line_and_a_constant():
    line = 3 + 2.0 * np.arange(30)
    ets = forecast("ets", choose("ets", ETSConfig(), line, 1), line, 3, 1)
    np.testing.assert_allclose(ets, [63, 65, 67], atol=1e-3)
    theta = forecast("theta", choose("theta", ThetaConfig(), line, 1), line, 3, 1)
    # Theta by hand: the mean of the theta=0 line (the trend, slope 2) extrapolated and simple
    # exponential smoothing of the theta=2 line (on a perfect line: its last value, 61) -> 61 + h.
    np.testing.assert_allclose(theta, [62, 63, 64], atol=1e-2)
    flat = np.full(20, 5.0)
    for method, config in (("ets", ETSConfig()), ("theta", ThetaConfig()), ("arima", ARIMAConfig())):
        np.testing.assert_allclose(forecast(method, choose(method, config, flat, 1), flat, 2, 1), [5, 5])


def test_metrics_by_hand():
    actual, predicted = np.array([[2.0, 4.0]]), np.array([[3.0, 3.0]])
    scale = mase_scale(np.array([1.0, 2.0, 4.0]), season=1)      # mean(|2-1|, |4-2|) = 1.5
    assert scale == 1.5
    m = accuracy(actual, predicted, np.array([scale]))
    assert m["mase"] == pytest.approx(1 / 1.5)
    assert m["smape"] == pytest.approx((200 / 5 + 200 / 7) / 2)
    assert m["mae"] == 1 and m["rmse"] == 1
    assert m["per_step"]["mase"] == pytest.approx([1 / 1.5, 1 / 1.5], abs=1e-6)
    assert mase_scale(np.array([1.0, 5, 1, 5]), season=2) == 4       # season 2 repeats exactly -> falls back to lag 1
    assert mase_scale(np.full(5, 3.0), season=1) == 1.0              # a constant series: no division by zero


def test_intervals_from_residual_quantiles():
    residuals = np.array([[-2.0, 0], [0, 0], [2, 4]])               # (K=3, H=2)
    bands = intervals(np.array([10.0, 20.0]), residuals, levels=(50,))
    low, high = bands[50]
    np.testing.assert_allclose(low, [10 + np.quantile([-2, 0, 2], 0.25), 20 + np.quantile([0, 0, 4], 0.25)])
    np.testing.assert_allclose(high, [11, 22])


def test_split_geometry():
    split = Split(n=100, horizon=5, lookback=10, origins=4, val_origins=3)
    test = split.test_origins()
    assert test.tolist() == [92, 93, 94, 95] and test[-1] + 5 == 100
    val = split.val_window_origins()
    assert val.tolist() == [85, 86, 87] and val[-1] + 5 <= split.first_test    # val targets before the test
    train = split.train_window_origins()
    assert train[0] == 10 and train[-1] + 5 <= val[0] == split.train_end        # train targets before val
    assert Split(100, 5, 10, 4, 0).train_window_origins()[-1] + 5 == 92


def test_plan_rejects_series_too_short():
    with pytest.raises(UserError, match="too short.*--horizon 40"):
        plan(60, horizon=40, season=1, origins=12, lookback=None, val_origins=None, name="s")
    with pytest.raises(UserError, match="too short.*--lookback 55"):
        plan(60, horizon=2, season=1, origins=3, lookback=55, val_origins=None, name="s")
    with pytest.raises(UserError, match="--season 60 is not shorter"):
        plan(60, horizon=2, season=60, origins=3, lookback=None, val_origins=None, name="s")
    assert plan(60, 2, 12, 3, None, None, "s").lookback == 24


@pytest.mark.parametrize("method,config", [("naive", NoSettings()), ("seasonal-naive", NoSettings()),
                                           ("drift", NoSettings()), ("ets", ETSConfig(damped=False)),
                                           ("theta", ThetaConfig()), ("arima", ARIMAConfig(max_p=1, max_q=0))])
def test_baselines_never_look_past_their_origin(method, config):
    rng = np.random.default_rng(0)
    t = np.arange(48)
    y = 20 + 0.3 * t + 3 * np.sin(2 * np.pi * t / 4) + rng.normal(0, 0.5, 48)
    origins = np.array([40, 41, 42])
    changed = y.copy()
    changed[41:] += 100                       # the future of origins 40 and 41, not their past
    a, form_a = backtest(method, config, y, origins, 4, 4)
    b, form_b = backtest(method, config, changed, origins, 4, 4)
    assert form_a == form_b
    np.testing.assert_array_equal(a[:2], b[:2])
    assert not np.array_equal(a[2], b[2])     # origin 42 sees the change


def test_every_model_is_listed_and_networks_map_windows_to_horizons():
    task = ForecastTask()
    names = registry.names("forecast")
    assert set(names) == {"rnn", "lstm", "mlp", "naive", "seasonal-naive", "drift", "ets", "arima", "theta",
                          "naive2", "auto-ets", "auto-arima", "auto-theta", "comb", "mstl"}
    assert [registry.spec("forecast", n).role for n in ("lstm", "rnn", "mlp")] == ["deep", "baseline", "baseline"]
    for name in ("rnn", "lstm", "mlp"):
        model = task.example_model(name, {"features": 3, "horizon": 5, "lookback": 7})
        x = torch.randn(4, 7, 3)
        assert model(x).shape == (4, 5)
        assert not registry.spec("forecast", name).one_step
        # level-relative: an all-zero head forecasts the last value (the naive forecast)
        for p in model.parameters():
            torch.nn.init.zeros_(p)
        torch.testing.assert_close(model(x), x[:, -1, :1].expand(4, 5))
    assert all(registry.spec("forecast", n).one_step and registry.spec("forecast", n).reads == "series"
               for n in ("naive", "ets", "arima", "theta", "naive2", "auto-ets", "auto-arima", "auto-theta", "comb",
                         "mstl"))
