"""The `forecast` task: forecast a time series H steps ahead; lstm on trial against rnn, mlp and the
statistical baselines (naive, seasonal-naive, drift, ets, arima, theta).

Evaluation is a rolling-origin backtest (eval.py): the networks train once on the windows before
the validation and test origins, with the scaler fitted on that span only, and then forecast at
each of the last K origins from the history before it; the baselines refit at every origin.
Statistical baselines plug into the same engine as a one-step job whose step is the fit.

The package, each file importing only those before it: eval.py (backtest geometry, accuracy,
intervals), data.py (the series cut and scaled, the networks' anchor), baselines.py (the
statistical methods), jobs.py (the engine jobs), backtest.py (backtest.json), predict.py (the
predictor), figures.py, explain.py (LSTM gates), report.py; this file holds the Task only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.data.series import series_datasets
from deepskeptic.engine import Job
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks.base import ExplainOptions, PredictOptions, Task
from deepskeptic.tasks.forecast.backtest import evaluate_backtest, write_backtest
from deepskeptic.tasks.forecast.baselines import forecast
from deepskeptic.tasks.forecast.data import Prepared, fit_anchor, prepare, stationary
from deepskeptic.tasks.forecast.explain import explain as explain_gates
from deepskeptic.tasks.forecast.jobs import NetworkJob, StatisticalJob, network_forecasts, recurrent_flops
from deepskeptic.tasks.forecast.predict import ForecastPredictor, load_model
from deepskeptic.tasks.forecast.report import comparison_sections, verdict_pairs, write_run_report

# Past this many training windows the networks default to 2 ensemble members instead of 8: on long
# series the seed spread is small (co2: ±0.002 MASE) and each member costs the most, and 4 would
# take co2's 9-model, 3-seed comparison past 3 minutes on 2 CPU cores.
LONG_SERIES_WINDOWS = 1000
LONG_SERIES_MEMBERS = 2


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
    commands = frozenset({"explain"})
    predictor_class = ForecastPredictor

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
        return prepare(settings)

    def shape_of(self, prepared: Prepared) -> dict[str, Any]:
        """The data's features (target + covariates), horizon, lookback, season and training
        windows, and what the level-relative networks default to: the anchor (season, smoothing)
        fitted on the training windows and whether the training span is stationary."""
        return {**self._data_shape(prepared), "anchor": fit_anchor(prepared), "stationary": stationary(prepared)}

    @staticmethod
    def _data_shape(prepared: Prepared) -> dict[str, Any]:
        return {"features": 1 + prepared.series.covariates.shape[1], "horizon": prepared.horizon,
                "lookback": prepared.lookback, "season": prepared.season,
                "train_windows": len(prepared.split.train_window_origins())}

    def create_model(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> nn.Module:
        return registry.spec(self.name, model).build(self._config(model, model_config, shape))

    def _config(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> Any:
        """The model's config: its [model] settings, overridden by what the data fixes (input size,
        horizon, lookback, season); on long series 2 ensemble members, and for a level-relative
        network the anchor and keep_level fitted on the data, unless the settings give them."""
        fields = {f.name for f in dataclasses.fields(registry.spec(self.name, model).config_cls)}
        values = {"input_size": shape.get("features"), "horizon": shape.get("horizon"),
                  "lookback": shape.get("lookback"), "season": shape.get("season")}
        values = {k: v for k, v in values.items() if v is not None}
        if "members" in fields and "members" not in model_config and \
                shape.get("train_windows", 0) > LONG_SERIES_WINDOWS:
            values["members"] = LONG_SERIES_MEMBERS
        if model_config.get("level_relative", True):
            if "smoothing" in fields and "smoothing" not in model_config and "anchor" in shape:
                values["season"], values["smoothing"] = shape["anchor"]
            if "keep_level" in fields and "keep_level" not in model_config and "stationary" in shape:
                values["keep_level"] = shape["stationary"]
        return registry.make_config(self.name, model, **{**model_config, **{k: v for k, v in values.items() if k in fields}})

    def build(self, settings, prepared: Prepared, device):
        name = settings["model"]
        spec = registry.spec(self.name, name)
        # a one-step baseline's config takes nothing from the data (and the anchor and the
        # stationarity test are no work to do for it: adfuller takes seconds on a long series)
        config = self._config(name, settings["model_config"], {} if spec.one_step else self.shape_of(prepared))
        model = spec.build(config)
        settings.update(horizon=prepared.horizon, lookback=prepared.lookback, season=prepared.season,
                        origins=prepared.split.origins, val_origins=prepared.split.val_origins)
        s = prepared.series
        info = {"model_config": dataclasses.asdict(config),
                "data_info": {"name": s.name, "source": s.source, "target": s.target, "covariates": s.covariate_names,
                              "freq": s.freq, "points": len(s), "start": s.time_labels(0, 1)[0],
                              "end": s.time_labels(len(s) - 1)[0], "notes": s.notes,
                              "mean": prepared.mean.tolist(), "std": prepared.std.tolist(),
                              "train_end": prepared.split.train_end, "first_test": prepared.split.first_test}}
        if spec.one_step:
            info["flops_per_example"] = None
            return StatisticalJob(model, prepared), info
        info["flops_per_example"] = recurrent_flops(model, prepared.lookback)
        return NetworkJob(model.to(device), prepared, settings, device), info

    def finish(self, run: Run, job: Job, prepared: Prepared, settings, device):
        p, split = prepared, prepared.split
        origins = split.test_origins()
        metrics_extra: dict[str, Any] = {}
        if registry.spec(self.name, settings["model"]).one_step:
            forecasts, form = job.forecasts, job.form
            start = time.perf_counter()
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

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_run_report(run, metrics)

    # --- the registry at the task's example input
    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"features": 1, "horizon": 12, "lookback": 24,
                    "description": "1 feature, lookback 24, horizon 12; --data for yours"}
        p = self.prepare({"data": data, **self.task_defaults})
        f = 1 + p.series.covariates.shape[1]
        return {"features": f, "horizon": p.horizon, "lookback": p.lookback,
                "description": f"{f} feature(s), lookback {p.lookback}, horizon {p.horizon} ({data})"}

    # --- using a finished run
    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        return {"model": load_model(run, device)}

    def predict(self, run: Run, options: PredictOptions) -> int:
        """The forecast past the end of --data (default the run's series), written to --out (default
        RUN/forecast.csv) and printed: as CSV lines and a summary, or as JSON."""
        predictor = self.predictor(run)
        series = predictor.read_data(options)
        results = predictor.predict(series)
        path = predictor.write(results, options.out)
        print(json.dumps(results, indent=2) if options.as_json
              else predictor.format(results) + predictor.summary(series, path))
        return 0

    def explain(self, run: Run, options: ExplainOptions) -> int:
        return explain_gates(run, load_model(run, torch.device("cpu")), options)

    def datasets(self) -> list[dict[str, Any]]:
        return series_datasets()

    # --- compare hooks
    def verdict_pairs(self, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
        return verdict_pairs(self, per_model)

    def comparison_sections(self, report, summary: dict) -> None:
        comparison_sections(self, report, summary)
