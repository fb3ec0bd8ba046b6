"""The `forecast` task: forecast a time series H steps ahead; lstm on trial against rnn, mlp and the
statistical baselines (naive, seasonal-naive, drift, ets, arima, theta).

Evaluation is a rolling-origin backtest (tasks/forecast_eval.py): the networks train once on the
windows before the validation and test origins, with the scaler fitted on that span only, and then
forecast at each of the last K origins from the history before it; the baselines refit at every
origin. Statistical baselines plug into the same engine as a one-step job whose step is the fit.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from deepskeptic.engine import Job
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_json, read_json
from deepskeptic.models import registry
from deepskeptic.models.forecast import StatisticalForecaster, anchor_forecast
from deepskeptic.runs import Run
from deepskeptic.tasks.base import Task
from deepskeptic.tasks.forecast_eval import Split, accuracy, backtest_scales
from deepskeptic.tasks.forecast_jobs import NetworkJob, StatisticalJob, network_forecasts, recurrent_flops, windows  # noqa: F401

MIN_TRAIN_WINDOWS = 4   # fewer training windows than this cannot teach a network anything
# Past this many training windows the networks default to 2 ensemble members instead of 8: on long
# series the seed spread is small (co2: ±0.002 MASE) and each member costs the most, and 4 would
# take co2's 9-model, 3-seed comparison past 3 minutes on 2 CPU cores.
LONG_SERIES_WINDOWS = 1000
LONG_SERIES_MEMBERS = 2
BACKTEST_FILE = "backtest.json"


@dataclass
class Prepared:
    series: Any               # deepskeptic.data.series.Series
    horizon: int
    lookback: int
    season: int
    split: Split
    mean: np.ndarray          # (F,) per feature, over values[:split.train_end]
    std: np.ndarray
    cache: dict = field(default_factory=dict)

    def features(self) -> np.ndarray:
        """(N, F) target then covariates, unscaled."""
        return np.column_stack([self.series.values, self.series.covariates])

    def scaled(self) -> np.ndarray:
        return (self.features() - self.mean) / self.std


def _positive(settings: dict, key: str) -> int | None:
    value = settings.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UserError(f"--{key.replace('_', '-')} must be a positive whole number, got {value!r}")
    return value


def plan(n: int, horizon: int, season: int, origins: int, lookback: int | None,
         val_origins: int | None, name: str) -> Split:
    """Cut a series of n points; UserError when it is too short for the asked geometry."""
    if season >= n:
        raise UserError(f"--season {season} is not shorter than the series {name} ({n} points); give a smaller --season")
    if val_origins is None:  # a tenth of what precedes the test origins: early stopping on a year of a
        # monthly series picks the epoch that suits that year's weather, on six years one that generalises
        val_origins = max(1, (n - horizon - origins + 1 - 2 * horizon) // 10)
    first_test = n - horizon - origins + 1
    train_end = first_test - (horizon + val_origins - 1 if val_origins else 0)
    room = train_end - horizon  # the most any lookback can be while leaving one training window
    if lookback is None:  # two seasons or two horizons (one season and a horizon for long seasons),
        # and at most half of the training span
        lookback = min(max(2 * season, 2 * horizon, 4), max(season + horizon, 60))
        lookback = max(1, min(lookback, room // 2))
    split = Split(n, horizon, lookback, origins, val_origins)
    windows = len(split.train_window_origins())
    if windows < MIN_TRAIN_WINDOWS or first_test < 3:
        need = lookback + 2 * horizon + val_origins + origins + MIN_TRAIN_WINDOWS - 2
        raise UserError(f"series {name} has {n} points, too short for --horizon {horizon}, --lookback {lookback}, "
                        f"{origins} backtest origin(s) and {val_origins} validation origin(s) (needs at least {need}); "
                        f"lower --horizon, --lookback or --origins")
    return split


# The anchor's exponential smoothing alphas tried on the training windows, simplest (no smoothing) first
ANCHOR_ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def fit_anchor(prepared: Prepared) -> tuple[int, float]:
    """The (season, smoothing) of the networks' anchor with the lowest mean absolute error on the
    training windows: the seasonal naive forecast (when the season fits in the lookback), or the
    window's level exponentially smoothed with one of ANCHOR_ALPHAS (1: the last value); ties keep
    the earlier, simpler one. Fitted on the windows the networks train on, so the untrained network
    is the best of these simple forecasts there: the seasonal naive one on a seasonal series, a
    smoothed level on a noisy one (the Nile), the last value on a seasonally adjusted random walk
    (GDP). The seasonal anchor is not smoothed: a window holds two or three seasons, too few for
    the smoothing to average out more than it blurs (on elnino it fitted the training windows
    better and then lost on validation)."""
    if "anchor" not in prepared.cache:
        split = prepared.split
        x, y = windows(prepared.scaled(), split.train_window_origins(), split.lookback, split.horizon)
        candidates = [(prepared.season, 1.0)] if 1 < prepared.season <= split.lookback else []
        candidates += [(1, alpha) for alpha in ANCHOR_ALPHAS]
        errors = {key: float((anchor_forecast(x[..., 0], *key, split.horizon) - y).abs().mean()) for key in candidates}
        best = min(errors.values())
        prepared.cache["anchor"] = next(key for key, error in errors.items() if error <= best * (1 + 1e-9))
    return prepared.cache["anchor"]


def stationary(prepared: Prepared, level: float = 0.05) -> bool:
    """Whether the augmented Dickey-Fuller test (statsmodels, lags by AIC) rejects a unit root in
    the training span's target at ``level``. On a series that returns to its mean (river flow,
    sunspots, sea temperature, unemployment) the absolute level says where it is heading, so the
    networks see it besides the target relative to its last value (keep_level); on a random walk
    or a trend (GDP, CO2) the level leaves the training range and only misleads them."""
    if "stationary" not in prepared.cache:
        import warnings
        from statsmodels.tsa.stattools import adfuller
        values = prepared.series.values[:prepared.split.train_end]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # a constant or a straight line (changes that never vary) is not mean-reverting
                p_value = float(adfuller(values, autolag="AIC")[1]) if np.ptp(np.diff(values)) > 1e-12 else 1.0
            except (ValueError, np.linalg.LinAlgError):  # too short for the test's regression
                p_value = 1.0
        prepared.cache["stationary"] = p_value < level
    return prepared.cache["stationary"]


class ForecastTask(Task):
    name = "forecast"
    description = "forecast a time series: lstm against rnn, mlp and naive/seasonal-naive/drift/ets/arima/theta"
    primary_metric = "test_mase"
    higher_is_better = False
    default_epochs = 60     # windows are few, so an epoch is a handful of steps
    default_models = ("naive", "seasonal-naive", "drift", "ets", "arima", "theta", "mlp", "rnn", "lstm")
    task_defaults = {
        "target": None,        # CSV column to forecast (the only numeric one when unset)
        "time_col": None,      # CSV time column (found by name or content when unset; 'none': row order)
        "freq": None,          # pandas frequency of the time column (inferred when unset)
        "fill": None,          # interpolate|ffill: fill gaps, missing and non-numeric values instead of failing
        "covariates": "all",   # other numeric CSV columns fed to the networks as past covariates: all, none, a,b
        "horizon": None,       # steps forecast at once (default: the data set's; a season, or 8)
        "lookback": None,      # steps a network sees (default max(2 seasons, 2 horizons), at most half the training span)
        "season": None,        # seasonal period in steps (default from the frequency: 12 monthly, 4 quarterly...)
        "origins": 12,         # K: backtest origins, one step apart, the last one H steps before the end
        "val_origins": None,   # validation origins before the test ones (default a tenth of the history before them)
        "keep_best": True,     # networks keep the weights of their best validation epoch (early stopping)
        "patience": 20,        # with keep_best: stop once no member improved on validation for this many epochs (0: never)
        "cpu_bf16": False,     # fp32 on CPUs: small recurrent nets gain little from bf16, and series lose precision
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--target", help="CSV column to forecast")
        parser.add_argument("--time-col", help="CSV time column (default: detected; 'none': row order)")
        parser.add_argument("--freq", help="frequency of the time column, e.g. D, W-SUN, MS, QS, YS (default: inferred)")
        parser.add_argument("--fill", choices=["interpolate", "ffill"],
                            help="fill gaps, missing and non-numeric values instead of stopping")
        parser.add_argument("--covariates", help="other CSV columns the networks see: all (default), none, or a,b")
        parser.add_argument("--horizon", type=int, help="steps to forecast")
        parser.add_argument("--lookback", type=int, help="steps of history a network sees")
        parser.add_argument("--season", type=int, help="seasonal period in steps (default from the frequency)")
        parser.add_argument("--origins", type=int, help="rolling-origin backtest origins (12)")
        parser.add_argument("--val-origins", type=int, help="validation origins for the networks")
        parser.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                            help="networks keep their best validation epoch's weights (default on)")
        parser.add_argument("--patience", type=int,
                            help="stop once no ensemble member improved on validation for this many epochs "
                                 "(20; 0: run every epoch)")

    # --- data
    def prepare(self, settings: dict[str, Any]) -> Prepared:
        from deepskeptic.data.series import load_series
        for key in ("horizon", "lookback", "season", "origins"):
            _positive(settings, key)
        for key in ("val_origins", "patience"):
            value = settings.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise UserError(f"--{key.replace('_', '-')} must be a whole number >= 0, got {value!r}")
        series = load_series(str(settings["data"]), target=settings.get("target"), time_col=settings.get("time_col"),
                             freq=settings.get("freq"), fill=settings.get("fill"),
                             covariates=settings.get("covariates", "all"))
        horizon = settings.get("horizon") or series.horizon
        season = settings.get("season") or series.season
        split = plan(len(series), horizon, season, settings.get("origins") or 12, settings.get("lookback"),
                     settings.get("val_origins"), series.name)
        train = np.column_stack([series.values, series.covariates])[:split.train_end]
        std = train.std(0)
        return Prepared(series, horizon, split.lookback, season, split, train.mean(0), np.where(std > 0, std, 1.0))

    def model_config(self, model: str, model_settings: dict, prepared: Prepared) -> Any:
        config_cls = registry.spec(self.name, model).config_cls
        fields = {f.name for f in dataclasses.fields(config_cls)}
        shape = {"input_size": 1 + prepared.series.covariates.shape[1], "horizon": prepared.horizon,
                 "lookback": prepared.lookback, "season": prepared.season}
        if "members" in fields and "members" not in model_settings and \
                len(prepared.split.train_window_origins()) > LONG_SERIES_WINDOWS:
            shape["members"] = LONG_SERIES_MEMBERS
        if model_settings.get("level_relative", True):
            if "smoothing" in fields and "smoothing" not in model_settings:
                shape["season"], shape["smoothing"] = fit_anchor(prepared)
            if "keep_level" in fields and "keep_level" not in model_settings:
                shape["keep_level"] = stationary(prepared)
        return registry.make_config(self.name, model, **{**model_settings, **{k: v for k, v in shape.items() if k in fields}})

    def create_model(self, model: str, model_settings: dict, prepared: Prepared) -> nn.Module:
        return registry.spec(self.name, model).build(self.model_config(model, model_settings, prepared))

    def build(self, settings, prepared: Prepared, device):
        model = self.create_model(settings["model"], settings["model_config"], prepared)
        settings.update(horizon=prepared.horizon, lookback=prepared.lookback, season=prepared.season,
                        origins=prepared.split.origins, val_origins=prepared.split.val_origins)
        s = prepared.series
        info = {"model_config": dataclasses.asdict(self.model_config(settings["model"], settings["model_config"], prepared)),
                "data_info": {"name": s.name, "source": s.source, "target": s.target, "covariates": s.covariate_names,
                              "freq": s.freq, "points": len(s), "start": s.time_labels(0, 1)[0],
                              "end": s.time_labels(len(s) - 1)[0], "notes": s.notes,
                              "mean": prepared.mean.tolist(), "std": prepared.std.tolist(),
                              "train_end": prepared.split.train_end, "first_test": prepared.split.first_test}}
        if isinstance(model, StatisticalForecaster):
            info["flops_per_example"] = None
            return StatisticalJob(model, prepared), info
        info["flops_per_example"] = recurrent_flops(model, prepared.lookback)
        return NetworkJob(model.to(device), prepared, settings, device), info

    def finish(self, run: Run, job: Job, prepared: Prepared, settings, device):
        p, split = prepared, prepared.split
        origins = split.test_origins()
        metrics_extra: dict[str, Any] = {}
        if isinstance(job, StatisticalJob):
            forecasts, form = job.forecasts, job.form
            start = time.perf_counter()
            from deepskeptic.tasks.forecast_baselines import forecast
            future = forecast(job.module.method, form, p.series.values, p.horizon, p.season)
            future_seconds = time.perf_counter() - start
        else:
            best_epochs = job.restore_best()
            if best_epochs is not None:  # the run's weights are those of each member's best validation epoch
                run.save_weights(job.modules)
                metrics_extra.update(best_epoch=best_epochs[0] if len(best_epochs) == 1 else best_epochs,
                                     best_val_mase=job.best_mase)
            forecasts, form = network_forecasts(job.model, p, origins, device), {}
            future = network_forecasts(job.model, p, np.array([len(p.series)]), device,
                                       features=np.vstack([p.features(), np.zeros((p.horizon, p.features().shape[1]))]))[0]
            future_seconds = 0.0
        metrics = evaluate_backtest(p, origins, forecasts)
        write_backtest(run, p, origins, forecasts, form, future)
        history = run.history()
        if history and "val_mase" in history[-1]:  # of the weights kept: the best epoch's, or the last
            metrics["val_mase"] = metrics_extra.get("best_val_mase", history[-1]["val_mase"])
        metrics.update(horizon=p.horizon, lookback=p.lookback, season=p.season, origins=split.origins,
                       form=form, final_fit_seconds=round(future_seconds, 3), **metrics_extra)
        return metrics

    # --- using a finished run
    def load_model(self, run: Run) -> nn.Module:
        config = run.config
        name = config["settings"]["model"]
        model_config = dict(config["model_config"])
        if "level_relative" in model_config:  # a network's run from before the changes input: it had none
            model_config.setdefault("changes", False)
        model = registry.spec(self.name, name).build(registry.make_config(self.name, name, **model_config))
        if not isinstance(model, StatisticalForecaster):
            run.load_weights({"model": model})
        return model.eval()

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.forecast_report import write_run_report
        write_run_report(self, run, metrics)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.series import series_datasets
        return series_datasets()

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"features": 1, "horizon": 12, "lookback": 24,
                    "description": "1 feature, lookback 24, horizon 12; --data for yours"}
        p = self.prepare({"data": data, **self.task_defaults})
        f = 1 + p.series.covariates.shape[1]
        return {"features": f, "horizon": p.horizon, "lookback": p.lookback,
                "description": f"{f} feature(s), lookback {p.lookback}, horizon {p.horizon} ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        fields = {f.name for f in dataclasses.fields(registry.spec(self.name, name).config_cls)}
        values = {"input_size": shape["features"], "horizon": shape["horizon"], "lookback": shape["lookback"],
                  "season": shape.get("season", 1)}
        return registry.create(self.name, name, **{k: v for k, v in values.items() if k in fields})

    def adjust_settings(self, settings: dict[str, Any]) -> None:
        """A statistical baseline is one engine step (its fits); epochs and budgets do not apply."""
        if self.seed_independent(settings["model"]):
            settings.update(epochs=1, time_budget=None)

    def seed_independent(self, model: str) -> bool:
        """Statistical baselines give the same forecasts for every seed: compare runs them once."""
        return isinstance(self.example_model(model, {"features": 1, "horizon": 1, "lookback": 1}), StatisticalForecaster)

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks import forecast_use
        return forecast_use.evaluate(self, run, data)

    def predict(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import forecast_use
        return forecast_use.predict(self, run, args)

    def explain(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import forecast_use
        return forecast_use.explain(self, run, args)

    # --- compare hooks
    def verdict_pairs(self, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
        from deepskeptic.tasks.forecast_report import verdict_pairs
        return verdict_pairs(self, per_model)

    def comparison_sections(self, report, summary: dict) -> None:
        from deepskeptic.tasks.forecast_report import comparison_sections
        comparison_sections(self, report, summary)


def evaluate_backtest(p: Prepared, origins: np.ndarray, forecasts: np.ndarray) -> dict[str, Any]:
    actual = np.stack([p.series.values[o:o + p.horizon] for o in origins])
    return accuracy(actual, forecasts, backtest_scales(p.series.values, origins, p.season))


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
