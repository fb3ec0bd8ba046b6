"""The `forecast` task: forecast a time series, or every series of a panel, H steps ahead; lstm on
trial against rnn, mlp and the statistical baselines: the gold standard (naive2, auto-ets,
auto-arima, auto-theta, comb, mstl) and the older ones (naive, seasonal-naive, drift, ets, arima,
theta), scored by MASE, sMAPE and M4's OWA against Naive2.

Evaluation is a rolling-origin backtest (eval.py): the networks train once on the windows before
the validation and test origins, with the scaler fitted on that span only, and then forecast at
each of the last K origins from the history before it; the baselines refit at every origin.
Statistical baselines plug into the same engine as a one-step job whose step is the fit. On a
panel the networks are global (one set of weights trained on the windows of every series, each
series scaled by its own training span) and every series is scored at the same calendar origins.

The package, each file importing only those before it: eval.py (backtest geometry, accuracy,
intervals), data.py (the series or panel cut and scaled, the networks' anchor), m4.py (M4's
seasonality test, Naive2, OWA), gold.py (the statsforecast baselines, fitted in parallel),
baselines.py (every statistical method), jobs.py (the engine jobs), backtest.py (backtest.json,
per-series and aggregate metrics), panel.py (panel runs), predict.py (the predictor), figures.py,
explain.py (LSTM gates), report.py; this file holds the Task only.
"""
from __future__ import annotations

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
from deepskeptic.settings import Setting, common
from deepskeptic.tasks.base import ExplainOptions, PredictOptions, Task
from deepskeptic.tasks.forecast.backtest import evaluate_backtest, write_backtest
from deepskeptic.tasks.forecast.baselines import forecast
from deepskeptic.tasks.forecast.data import PanelPrepared, Prepared, data_seasons, fit_anchor, prepare, stationary
from deepskeptic.tasks.forecast.explain import explain as explain_gates, lstm_gates
from deepskeptic.tasks.forecast.jobs import NetworkJob, StatisticalJob, network_forecasts, recurrent_flops
from deepskeptic.tasks.forecast.panel import finish_panel, panel_data_info, panel_shape
from deepskeptic.tasks.forecast.predict import ForecastPredictor, load_model
from deepskeptic.tasks.forecast.report import SUMMARY_METRICS, comparison_sections, verdict_pairs, write_run_report

# Past this many training windows the networks default to 2 ensemble members instead of 8: on long
# series the seed spread is small (co2: ±0.002 MASE) and each member costs the most, and 4 would
# take co2's 9-model, 3-seed comparison past 3 minutes on 2 CPU cores.
LONG_SERIES_WINDOWS = 1000
LONG_SERIES_MEMBERS = 2


class ForecastTask(Task):
    name = "forecast"
    description = ("forecast a time series or a panel: lstm against rnn, mlp and the statistical baselines "
                   "(naive2, auto-ets, auto-arima, auto-theta, comb, mstl; naive, seasonal-naive, drift, ets, arima, theta)")
    primary_metric = "test_mase"
    higher_is_better = False
    default_epochs = 60     # windows are few, so an epoch is a handful of steps
    # the gold standard (naive2, auto-*, comb; mstl too where a season is over 24 or there are
    # several: models_for) next to the older baselines, kept for continuity
    default_models = ("naive", "seasonal-naive", "naive2", "drift", "ets", "arima", "theta", "auto-ets", "auto-arima",
                      "auto-theta", "comb", "mlp", "rnn", "lstm")
    declared_settings = (
        Setting("target", None, "str", "CSV column to forecast (a wide panel: all, or a,b,c: a series each)"),
        # the only numeric one when unset; 'all' or a list: a wide panel, one series per column
        # the series id column of a long panel (one row per series and time; Nixtla's unique_id found by name)
        Setting("id_col", None, "str", "series id column of a long panel CSV (default: unique_id when present)"),
        # CSV time column (found by name or content when unset; 'none': row order)
        Setting("time_col", None, "str", "CSV time column (default: detected; 'none': row order)"),
        # pandas frequency of the time column (inferred when unset)
        Setting("freq", None, "str", "frequency of the time column, e.g. D, W-SUN, MS, QS, YS (default: inferred)"),
        # interpolate|ffill: fill gaps, missing and non-numeric values instead of failing
        Setting("fill", None, "choice", "fill gaps, missing and non-numeric values instead of stopping",
                choices=("interpolate", "ffill")),
        # other numeric CSV columns fed to the networks as past covariates: all, none, a,b
        Setting("covariates", "all", "str", "other CSV columns the networks see: all (default), none, or a,b"),
        # steps forecast at once (default: the data set's; a season, or 8)
        Setting("horizon", None, "int", "steps to forecast", low=1),
        # steps a network sees (default max(2 seasons, 2 horizons), at most half the training span)
        Setting("lookback", None, "int", "steps of history a network sees", low=1),
        # seasonal period in steps (default from the frequency: 12 monthly, 4 quarterly...)
        Setting("season", None, "int", "seasonal period in steps (default from the frequency)", low=1),
        # K: backtest origins, one step apart, the last one H steps before the end
        Setting("origins", 12, "int", "rolling-origin backtest origins (12)", low=1),
        # validation origins before the test ones (default a tenth of the history before them)
        Setting("val_origins", None, "int", "validation origins for the networks", low=0),
        # networks keep the weights of their best validation epoch (early stopping)
        Setting("keep_best", True, "bool", "networks keep their best validation epoch's weights (default on)"),
        # with keep_best: stop once no member improved on validation for this many epochs (0: never)
        Setting("patience", 20, "int", "stop once no ensemble member improved on validation for this many epochs "
                                       "(20; 0: run every epoch)", low=0),
        # fp32 on CPUs: small recurrent nets gain little from bf16, and series lose precision
        common("cpu_bf16", default=False),
        # processes fitting the gold-standard baselines' origins (and series) in parallel; one by
        # default, since compare --jobs already spreads whole runs over the cores (0: one per core)
        Setting("fit_jobs", 1, "int", "processes fitting auto-ets/auto-arima/auto-theta/comb/mstl at the "
                                      "backtest origins (1; 0: one per CPU core)", low=0),
    )
    commands = frozenset({"explain"})
    summary_metrics = SUMMARY_METRICS   # M4's yardsticks (sMAPE, OWA), in summary.json beside MASE
    distributed = False
    distributed_instead = ("its networks are small and one process trains them fastest; run several "
                           "models or seeds at once with 'deepskeptic compare forecast ... --jobs N'")
    predictor_class = ForecastPredictor

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
        if isinstance(prepared, PanelPrepared):
            return panel_shape(prepared)
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
                  "lookback": shape.get("lookback"), "season": shape.get("season"),
                  "series_count": shape.get("series_count")}   # a panel's (a series embedding's rows)
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
        info = {"model_config": dataclasses.asdict(config), "data_info": self._data_info(prepared)}
        if spec.one_step:
            info["flops_per_example"] = None
            return StatisticalJob(model, prepared, settings.get("fit_jobs", 1)), info
        info["flops_per_example"] = recurrent_flops(model, prepared.lookback)
        return NetworkJob(model.to(device), prepared, settings, device), info

    @staticmethod
    def _data_info(prepared) -> dict[str, Any]:
        """config.json's data_info: the series (or panel), its time span and its scaler."""
        if isinstance(prepared, PanelPrepared):
            return panel_data_info(prepared)
        s = prepared.series
        return {"name": s.name, "source": s.source, "target": s.target, "covariates": s.covariate_names,
                "freq": s.freq, "points": len(s), "start": s.time_labels(0, 1)[0],
                "end": s.time_labels(len(s) - 1)[0], "notes": s.notes,
                "mean": prepared.mean.tolist(), "std": prepared.std.tolist(),
                "train_end": prepared.split.train_end, "first_test": prepared.split.first_test,
                "seasons": list(prepared.seasons), "season_reason": prepared.season_reason}

    def finish(self, run: Run, job: Job, prepared: Prepared, settings, device):
        p = prepared
        metrics_extra: dict[str, Any] = {}
        one_step = registry.spec(self.name, settings["model"]).one_step
        if not one_step:
            self._keep_best(run, job, metrics_extra)
        if isinstance(p, PanelPrepared):
            metrics, form, future_seconds = finish_panel(run, job, p, one_step, device, settings.get("fit_jobs", 1))
        else:
            metrics, form, future_seconds = self._finish_series(run, job, p, one_step, device)
        history = run.history()
        if history and "val_mase" in history[-1]:  # of the weights kept: the best epoch's, or the last
            metrics["val_mase"] = metrics_extra.get("best_val_mase", history[-1]["val_mase"])
        metrics.update(horizon=p.horizon, lookback=p.lookback, season=p.season, season_reason=p.season_reason,
                       origins=p.split.origins, form=form, final_fit_seconds=round(future_seconds, 3), **metrics_extra)
        return metrics

    @staticmethod
    def _finish_series(run: Run, job: Job, p: Prepared, one_step: bool, device) -> tuple[dict, dict, float]:
        """(metrics, form, seconds of the final fit) of a one-series run, with backtest.json written."""
        origins = p.split.test_origins()
        if one_step:
            forecasts, form = job.forecasts, job.form
            start = time.perf_counter()
            future = forecast(job.module.method, form, p.series.values, p.horizon, p.season, job.module.config,
                              p.seasons)
            future_seconds = time.perf_counter() - start
        else:
            forecasts, form = network_forecasts(job.model, p, origins, device), {}
            future = network_forecasts(job.model, p, np.array([len(p.series)]), device,
                                       features=np.vstack([p.features(), np.zeros((p.horizon, p.features().shape[1]))]))[0]
            future_seconds = 0.0
        write_backtest(run, p, origins, forecasts, form, future)
        return evaluate_backtest(p, origins, forecasts), form, future_seconds

    @staticmethod
    def _keep_best(run: Run, job: Job, metrics_extra: dict[str, Any]) -> None:
        best_epochs = job.restore_best()
        if best_epochs is not None:  # the run's weights are those of each member's best validation epoch
            run.save_weights(job.modules)
            metrics_extra.update(best_epoch=best_epochs[0] if len(best_epochs) == 1 else best_epochs,
                                 best_val_mase=job.best_mase)

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        write_run_report(run, metrics)

    # --- the registry at the task's example input
    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"features": 1, "horizon": 12, "lookback": 24,
                    "description": "1 feature, lookback 24, horizon 12; --data for yours"}
        p = self.prepare({"data": data, **self.task_defaults})
        if isinstance(p, PanelPrepared):
            return {"features": 1, "horizon": p.horizon, "lookback": p.lookback,
                    "description": f"1 feature, lookback {p.lookback}, horizon {p.horizon} ({data}: a panel of "
                                   f"{len(p.members)} series)"}
        f = 1 + p.series.covariates.shape[1]
        return {"features": f, "horizon": p.horizon, "lookback": p.lookback,
                "description": f"{f} feature(s), lookback {p.lookback}, horizon {p.horizon} ({data})"}

    # --- using a finished run
    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        return {"model": load_model(run, device)}

    def export_graphs(self, run: Run) -> list:
        from deepskeptic.tasks.forecast.export import graphs
        return graphs(self, run)

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

    @staticmethod
    def lstm_gates(run: Run, model: nn.Module, cells: str | None, series: str | None = None):
        """explain.lstm_gates, for the predictor (which explain.py imports)."""
        return lstm_gates(run, model, cells, series)

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.panel import panel_datasets
        return series_datasets() + panel_datasets()

    # --- compare hooks
    def models_for(self, data: str | None) -> tuple[str, ...]:
        """compare's default models, with mstl where the data's season is over 24 (weekly, sub-hourly)
        or its frequency has several (a day and a week of hourly data): the only baseline for those."""
        from deepskeptic.errors import UserError
        from deepskeptic.tasks.forecast.gold import ETS_MAX_SEASON
        models = self.default_models
        if data is None:
            return models
        try:
            seasons = data_seasons(str(data))
        except UserError:   # (unreadable without more flags: compare says what is wrong when it reads it)
            return models
        if len(seasons) > 1 or any(s > ETS_MAX_SEASON for s in seasons):
            at = models.index("comb") + 1
            models = (*models[:at], "mstl", *models[at:])
        return models

    def verdict_pairs(self, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
        return verdict_pairs(self, per_model)

    def comparison_sections(self, report, summary: dict) -> None:
        comparison_sections(self, report, summary)
