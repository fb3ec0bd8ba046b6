"""Using a finished forecast run: its forecaster loaded once, the forecast past the end of a series
with intervals from the backtest residuals (predict), and the backtest again on the run's own or
another series (evaluate)."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.data.series import BUILTINS, Series, in_memory_series, load_series
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_text
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks.base import PredictOptions, Predictor
from deepskeptic.tasks.forecast.backtest import evaluate_backtest, read_backtest
from deepskeptic.tasks.forecast.baselines import backtest, forecast
from deepskeptic.tasks.forecast.data import Prepared, plan
from deepskeptic.tasks.forecast.eval import INTERVAL_LEVELS, intervals
from deepskeptic.tasks.forecast.jobs import network_forecasts

TASK = "forecast"   # the registry's name of this task's models
COLUMNS = ["time", "forecast"] + [f"{side}_{level}" for level in INTERVAL_LEVELS for side in ("lower", "upper")]


def refuse_panel(run: Run) -> None:
    """predict, evaluate, explain and export read one series; a panel run's are not built yet."""
    info = run.config["data_info"]
    if info.get("panel"):
        raise UserError(f"{run.path} was trained on the panel {info['name']} ({len(info['series'])} series): predict, "
                        f"evaluate, explain and export take single-series runs for now; each series' forecast past "
                        f"the end is in {run.path / 'backtest.json'}")


def load_model(run: Run, device: torch.device) -> nn.Module:
    """The run's forecaster in eval mode on ``device``: a network with its trained weights, or a
    statistical baseline (no weights: it is fitted on the history it is given)."""
    refuse_panel(run)
    name = run.config["settings"]["model"]
    model_config = dict(run.config["model_config"])
    if "level_relative" in model_config:  # a network's run from before the changes input: it had none
        model_config.setdefault("changes", False)
    model = registry.create(TASK, name, **model_config)
    if not registry.spec(TASK, name).one_step:
        run.load_weights({"model": model})
    return model.to(device).eval()


def run_series(run: Run, data: str | None) -> Series:
    """The run's own series, or ``data`` read with the run's target, time column, frequency, fill
    and covariates; UserError when it does not match what the network was trained on."""
    refuse_panel(run)
    s, info = run.config["settings"], run.config["data_info"]
    covariates = ",".join(info["covariates"]) if info["covariates"] else "none"
    if data is None or data == s["data"]:
        return load_series(str(s["data"]), target=s.get("target"), time_col=s.get("time_col"), freq=s.get("freq"),
                           fill=s.get("fill"), covariates=covariates)
    builtin = data in BUILTINS
    series = load_series(data, target=None if builtin else s.get("target"), time_col=None if builtin else s.get("time_col"),
                         freq=None if builtin else s.get("freq"), fill=s.get("fill"),
                         covariates="none" if builtin else covariates)
    _check_covariates(run, series, data)
    return series


def _check_covariates(run: Run, series: Series, data: str) -> None:
    trained = run.config["data_info"]["covariates"]
    if series.covariate_names != trained:
        raise UserError(f"{data} has covariates ({', '.join(series.covariate_names) or 'none'}) but run {run.path} "
                        f"was trained with ({', '.join(trained) or 'none'}); give data with the same columns")


def run_prepared(run: Run, series: Series) -> Prepared:
    """``series`` with the run's horizon, lookback, season and scaler (no backtest split)."""
    s, info = run.config["settings"], run.config["data_info"]
    return Prepared(series, s["horizon"], s["lookback"], s["season"], None,
                    np.asarray(info["mean"]), np.asarray(info["std"]),
                    seasons=tuple(info.get("seasons", ())), season_reason=info.get("season_reason", ""))


def prepared_for_run(run: Run, data: str | None) -> Prepared:
    return run_prepared(run, run_series(run, data))


def point_forecast(run: Run, model: nn.Module, prepared: Prepared, device: torch.device | None = None,
                   form: dict | None = None) -> np.ndarray:
    """(H,) forecast for the H steps after the end of ``prepared.series``; a statistical baseline
    refits its chosen ``form`` (default: backtest.json's) on the whole series."""
    series, horizon = prepared.series, prepared.horizon
    if registry.spec(TASK, run.config["settings"]["model"]).one_step:
        form = read_backtest(run)["form"] if form is None else form
        return forecast(model.method, form, series.values, horizon, prepared.season, model.config, prepared.seasons)
    if len(series) < prepared.lookback:
        raise UserError(f"the series has {len(series)} points but this network needs the last {prepared.lookback} "
                        f"(its lookback); give a longer series")
    features = np.vstack([prepared.features(), np.zeros((horizon, prepared.features().shape[1]))])
    return network_forecasts(model, prepared, np.array([len(series)]), device or torch.device("cpu"),
                             features=features)[0]


class ForecastPredictor(Predictor):
    """A finished forecast run applied to series: ``predict(series)`` forecasts the H steps after
    the end of the history it is given, with 80% and 95% intervals from the quantiles of the
    backtest residuals per step."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.one_step = registry.spec(task.name, run.config["settings"]["model"]).one_step
        self._backtest: dict[str, Any] | None = None

    @property
    def backtest(self) -> dict[str, Any]:
        """The run's backtest.json (read when first needed: evaluate does without it)."""
        if self._backtest is None:
            self._backtest = read_backtest(self.run)
        return self._backtest

    # --- decoding
    def read(self, paths: list[str]) -> tuple[Series, list[str]]:
        """One CSV file (or a built-in set's name) read as the run's data was: (the series, [its name])."""
        if len(paths) != 1:
            raise UserError(f"a forecast run reads one series, got {len(paths)}: give one CSV file")
        series = run_series(self.run, paths[0])
        return series, [series.name]

    def read_data(self, options: PredictOptions) -> Series:
        """The series `deepskeptic predict` forecasts from: --data, or the run's own."""
        if options.inputs:
            raise UserError("forecast predict reads a series: pass it with --data FILE.csv (default: the run's own data)")
        return run_series(self.run, options.data)

    def series(self, data: Any, covariates: Any = None) -> Series:
        """``data`` as a Series with the run's target and covariates (see ``predict``)."""
        info = self.run.config["data_info"]
        if isinstance(data, Series):
            if covariates is not None:
                raise UserError("a Series carries its covariates; do not pass them separately")
            _check_covariates(self.run, data, data.name)
            return data
        return in_memory_series(data, covariates, target=info["target"], covariate_names=info["covariates"],
                                fill=self.run.config["settings"].get("fill"))

    # --- predicting
    def predict(self, inputs: Any, covariates: Any = None, *, names: list[str] | None = None) -> list[dict[str, Any]]:
        """The forecast for the H steps after the end of ``inputs``, the history to forecast from:
        a pandas Series (its index the time axis: dates on one frequency, or whole-number steps),
        a pandas DataFrame (the run's target column and its covariate columns), a 1-d array (time:
        steps 0, 1, ...) or a data.series.Series. ``covariates`` (N, C) go with a pandas Series or
        an array when the run was trained with covariates (in the run's order).

        Returns one dict per step: {"time": label, "forecast", "lower_80", "upper_80",
        "lower_95", "upper_95"} (floats), what `deepskeptic predict --json` prints."""
        series = self.series(inputs, covariates)
        prepared = run_prepared(self.run, series)
        point = point_forecast(self.run, self.model, prepared, self.device,
                               form=self.backtest["form"] if self.one_step else None)
        bands = intervals(point, np.asarray(self.backtest["residuals"]))
        labels = series.time_labels(len(series), len(series) + prepared.horizon)
        return [dict(zip(COLUMNS, [label, float(point[h])] + [float(bands[level][i][h]) for level in INTERVAL_LEVELS
                                                               for i in (0, 1)]))
                for h, label in enumerate(labels)]

    def predict_options(self, options: PredictOptions) -> dict[str, Any]:
        return {}   # a forecast has no options: --top-k does not apply

    def predict_command(self, options: PredictOptions) -> list[dict[str, Any]]:
        """What `deepskeptic predict` computes: the forecast from --data (or the run's own series),
        also written to --out (default RUN/forecast.csv)."""
        results = self.predict(self.read_data(options))
        self.write(results, options.out)
        return results

    # --- output
    def format(self, results: list[dict[str, Any]]) -> str:
        """The forecast as CSV text: time, forecast and the intervals' bounds (6 significant digits)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows([[r["time"]] + [f"{r[c]:.6g}" for c in COLUMNS[1:]] for r in results])
        return buffer.getvalue()

    def write(self, results: list[dict[str, Any]], out: str | None) -> Path:
        """forecast.csv at ``out`` (a file, or a folder to put it in; default the run folder)."""
        path = Path(out) if out else self.run.path / "forecast.csv"
        if path.is_dir():
            path = path / "forecast.csv"
        atomic_write_text(path, self.format(results))
        return path

    def summary(self, series: Series, path: Path) -> str:
        """The line `deepskeptic predict` prints under the forecast."""
        horizon = self.run.config["settings"]["horizon"]
        return (f"{series.target}: {horizon} steps after {series.time_labels(len(series) - 1)[0]}; "
                f"intervals from the quantiles of {len(self.backtest['residuals'])} backtest residuals per step; "
                f"wrote {path}")

    # --- evaluating
    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """The backtest again, on the run's data or another series, without retraining the network
        (statistical baselines refit, as in training)."""
        prepared = prepared_for_run(self.run, data)
        s = self.run.config["settings"]
        split = plan(len(prepared.series), prepared.horizon, prepared.season, s["origins"], prepared.lookback,
                     s["val_origins"], prepared.series.name)
        origins = split.test_origins()
        if self.one_step:
            forecasts, _ = backtest(self.model.method, self.model.config, prepared.series.values, origins,
                                    prepared.horizon, prepared.season, seasons=prepared.seasons,
                                    jobs=s.get("fit_jobs", 1))
        else:
            forecasts = network_forecasts(self.model, prepared, origins, self.device)
        return {"data": str(data or s["data"]), "origins": len(origins), **evaluate_backtest(prepared, origins, forecasts)}
