"""The forecasting networks' recipe: ensembles of members over two window lengths, the median of
their forecasts, each member keeping its own best validation epoch (the untrained anchor
included), and the validation span's default size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.forecast import anchor_forecast, smoothing_weights
from deepskeptic.tasks.forecast import ForecastTask
from deepskeptic.tasks.forecast.data import fit_anchor, plan, stationary
from deepskeptic.tasks.forecast.eval import accuracy, backtest_scales
from deepskeptic.tasks.forecast.jobs import NetworkJob, recurrent_flops


@pytest.mark.parametrize("name", ["lstm", "rnn", "mlp"])
def test_members_see_whole_and_half_windows_and_forecast_their_median(name):
    torch.manual_seed(0)
    model = ForecastTask().example_model(name, {"features": 2, "horizon": 3, "lookback": 8}).eval()  # no dropout
    assert len(model.members) == 8                                      # the default ensemble
    for p in model.parameters():                                        # zero heads would hide the inputs
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(4, 8, 2)
    members = model.member_forecasts(x)
    assert members.shape == (8, 4, 3)
    middle = members.sort(0).values[3:5]                                # the median of eight: its middle two's mean
    torch.testing.assert_close(model(x), middle.mean(0))
    early = x.clone()
    early[:, :3, 0] += 5.0                                              # change steps the half window omits
    # (the last value, the anchor and step 4 on are untouched)
    changed = model.member_forecasts(early)
    for k in (0, 2, 4, 6):                                              # even members see all 8 steps
        assert not torch.allclose(changed[k], members[k])
    for k in (1, 3, 5, 7):                                              # odd ones only the last 4
        torch.testing.assert_close(changed[k], members[k])


def test_median_of_odd_members_and_bad_member_counts():
    cfg = registry.make_config("forecast", "rnn", horizon=2, members=3)
    model = registry.spec("forecast", "rnn").build(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(5, 6, 1)
    torch.testing.assert_close(model(x), model.member_forecasts(x).median(0).values)
    for bad in (0, -1):
        with pytest.raises(UserError, match="members must be a positive whole number"):
            registry.spec("forecast", "rnn").build(registry.make_config("forecast", "rnn", members=bad))
    for bad in (1.5, True, "4"):                                         # the registry checks the kind first
        with pytest.raises(UserError, match="model setting members of 'rnn' must be a whole number"):
            registry.make_config("forecast", "rnn", members=bad)


def _line_prepared(tmp_path: Path, n: int, model_config: dict, values=None, **task_settings):
    path = tmp_path / f"line{n}.csv"
    values = np.arange(n, dtype=float) if values is None else values
    path.write_text("y\n" + "".join(f"{float(v)}\n" for v in values))
    task = ForecastTask()
    settings = {**task.task_defaults, "data": str(path), "time_col": "none", "horizon": 3, "origins": 3,
                "lookback": 6, "model": "lstm", "model_config": model_config, **task_settings}
    return task, settings, task.prepare(settings)


def test_long_series_default_to_two_members_unless_given(tmp_path):
    for n, given, want in ((80, {}, 8), (1200, {}, 2), (1200, {"members": 3}, 3), (80, {"members": 1}, 1)):
        task, settings, prepared = _line_prepared(tmp_path, n, {"hidden": 4, **given})
        assert (len(prepared.split.train_window_origins()) > 1000) == (n == 1200)
        shape = task.shape_of(prepared)
        assert len(task.create_model("lstm", settings["model_config"], shape).members) == want
        assert len(task.create_model("mlp", settings["model_config"], shape).members) == want


def _trend_job(tmp_path: Path, keep_best: bool = True) -> NetworkJob:
    """An lstm job on y = t (no season): the naive anchor lags the trend by h+1 at step h."""
    task, settings, prepared = _line_prepared(tmp_path, 80, {"hidden": 4, "members": 2})
    model = task.create_model("lstm", settings["model_config"], task.shape_of(prepared))
    return NetworkJob(model, prepared, {**settings, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 8,
                                        "keep_best": keep_best}, torch.device("cpu"))


def test_each_member_keeps_its_own_best_epoch_untrained_anchor_included(tmp_path):
    job = _trend_job(tmp_path)
    p, members = job.prepared, job.model.members
    assert [b.best["epoch"] for b in job.best] == [0, 0]                # validated before any training
    with torch.no_grad():
        members[0].head.bias.copy_(torch.arange(1, 4) / float(p.std[0]))  # member 0: the exact trend
        members[1].head.bias.fill_(100.0)                               # member 1: far worse than its anchor
    job.validate(1)
    assert job.restore_best() == [1, 0]
    torch.testing.assert_close(members[0].head.bias, torch.arange(1, 4) / float(p.std[0]))
    assert torch.count_nonzero(members[1].head.bias) == 0               # back to the anchor's zero head
    origins = p.split.val_window_origins()
    actual = np.stack([p.series.values[o:o + 3] for o in origins])
    naive = p.series.values[origins - 1][:, None].repeat(3, axis=1)
    exact_and_naive = (actual + naive) / 2                               # the mean of the kept members
    want = accuracy(actual, exact_and_naive, backtest_scales(p.series.values, origins, 1))["mase"]
    assert job.best_mase == pytest.approx(want, rel=1e-4)


def test_without_keep_best_nothing_is_kept(tmp_path):
    job = _trend_job(tmp_path, keep_best=False)
    job.validate(1)
    assert all(best.state() == {} for best in job.best) and job.restore_best() is None


def test_validation_origins_default_to_a_tenth_of_the_history():
    # 500 points, horizon 12, 12 test origins: the first at 477; (477 - 2 horizons) // 10
    assert plan(500, horizon=12, season=12, origins=12, lookback=None, val_origins=None, name="s").val_origins == 45
    assert plan(100, 10, 1, 12, None, None, "s").val_origins == 5
    assert plan(500, 12, 12, 12, None, 7, "s").val_origins == 7        # given: kept


def test_flops_count_each_member_over_the_steps_it_sees():
    cfg = registry.make_config("forecast", "lstm", hidden=5, layers=1, horizon=3, members=2)
    model = registry.spec("forecast", "lstm").build(cfg)
    lstm_step, head = 2 * 4 * 5 * (2 + 5), 2 * 5 * 3                    # inputs: the relative target and its changes
    assert recurrent_flops(model, 8) == (8 * lstm_step + head) + (4 * lstm_step + head)


def test_anchor_smooths_the_level_or_each_season_by_hand():
    torch.testing.assert_close(smoothing_weights(0.5, 3), torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))
    assert smoothing_weights(1.0, 4).tolist() == [1.0, 0.0, 0.0, 0.0]    # alpha 1: the last value alone
    window = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # level: 0.5*4 + 0.25*3 + 0.125*2 + 0.125*1 (the rest on the first value)
    torch.testing.assert_close(anchor_forecast(window, 1, 0.5, 2), torch.tensor([[3.125, 3.125]]))
    torch.testing.assert_close(anchor_forecast(window, 1, 1.0, 2), torch.tensor([[4.0, 4.0]]))
    # season 4 in 8 steps: step h gets 0.5 * (one season back) + 0.5 * (two seasons back), h = 0..5
    window = torch.arange(8.0)[None] ** 2
    want = [0.5 * window[0, 4 + h % 4] + 0.5 * window[0, h % 4] for h in range(6)]
    torch.testing.assert_close(anchor_forecast(window, 4, 0.5, 6), torch.stack(want)[None])
    seasonal_naive = anchor_forecast(window, 4, 1.0, 6)
    torch.testing.assert_close(seasonal_naive, window[:, [4, 5, 6, 7, 4, 5]])
    assert anchor_forecast(window, 9, 1.0, 2).tolist() == [[49.0, 49.0]]  # a season longer than the window: the level


def test_anchor_is_fitted_on_the_training_windows_and_untrained_networks_forecast_it(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(240)
    cases = {"walk": (np.cumsum(rng.normal(size=240)), 1, lambda a: a == 1.0),   # a random walk: the last value
             "noisy level": (10 + rng.normal(size=240), 1, lambda a: a <= 0.2),     # white noise: a long mean
             "seasonal": (np.sin(2 * np.pi * t / 4) * 10 + rng.normal(size=240), 4, lambda a: a == 1.0)}
    for name, (values, want_season, alpha_ok) in cases.items():
        task, settings, prepared = _line_prepared(tmp_path, 240, {"hidden": 4}, values, season=4, lookback=12)
        season, alpha = fit_anchor(prepared)
        assert season == want_season and alpha_ok(alpha), (name, season, alpha)
        model = task.create_model("rnn", settings["model_config"], task.shape_of(prepared)).eval()  # untrained: zero heads
        x = torch.from_numpy(prepared.scaled()[None, -12:]).float()
        torch.testing.assert_close(model(x), anchor_forecast(x[..., 0], season, alpha, 3))
    given = task.create_model("lstm", {"smoothing": 0.5}, task.shape_of(prepared))  # given: kept, season from the task
    assert (given.season, given.smoothing) == (4, 0.5)
    with pytest.raises(UserError, match="smoothing must be in"):
        task.create_model("lstm", {"smoothing": 0.0}, task.shape_of(prepared))


def test_networks_see_the_level_of_stationary_series_only(tmp_path):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=200)
    for values, want in ((5 + noise, True), (np.cumsum(noise), False), (np.arange(200.0), False), (np.arange(200.0) + noise, False),
                         (np.ones(200), False)):
        task, settings, prepared = _line_prepared(tmp_path, 200, {"hidden": 4}, values)
        assert stationary(prepared) is want
        shape = task.shape_of(prepared)
        assert task.create_model("mlp", {}, shape).keep_level is want
        assert task.create_model("mlp", {"keep_level": not want}, shape).keep_level is (not want)  # given: kept
        assert task.create_model("mlp", {"level_relative": False}, shape).keep_level is False


def test_cores_see_the_relative_path_the_level_and_the_changes_by_hand():
    x = torch.tensor([[[1.0, 10.0], [3.0, 20.0], [2.0, 30.0]]])                # (1, 3, target + covariate)
    relative, level, changes, covariate = [[-1.0, 1.0, 0.0]], [[1.0, 3.0, 2.0]], [[0.0, 2.0, -1.0]], [[10.0, 20.0, 30.0]]
    for keep_level, changes_on, channels in ((False, False, [relative, covariate]),
                                             (True, True, [relative, level, changes, covariate]),
                                             (False, True, [relative, changes, covariate])):
        cfg = registry.make_config("forecast", "lstm", input_size=2, horizon=2, members=1,
                                   keep_level=keep_level, changes=changes_on)
        model = registry.spec("forecast", "lstm").build(cfg)
        assert model.members[0].rnn.input_size == len(channels)
        torch.testing.assert_close(model.core_input(x), torch.tensor(channels).permute(1, 2, 0))
    plain = registry.make_config("forecast", "lstm", input_size=2, level_relative=False, changes=True)
    torch.testing.assert_close(registry.spec("forecast", "lstm").build(plain).core_input(x), x)
