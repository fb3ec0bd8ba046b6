"""Using a finished forecast run: its forecaster loaded once, the forecast past the end of a series
with intervals from the backtest residuals (predict), and the backtest again on the run's own or
another series (evaluate). A panel run does the same for every series of a long table
(panel_use.py), each row carrying its series id."""
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
from deepskeptic.tasks.forecast.eval import FORECAST_COLUMNS, INTERVAL_LEVELS, intervals
from deepskeptic.tasks.forecast.jobs import network_forecasts
from deepskeptic.tasks.forecast.panel_use import (PANEL_COLUMNS, is_panel_run, own_member, panel_evaluate,
                                                  panel_input, panel_predict, read_panel)

TASK = "forecast"   # the registry's name of this task's models
COLUMNS = FORECAST_COLUMNS


def load_model(run: Run, device: torch.device) -> nn.Module:
    """The run's forecaster in eval mode on ``device``: a network with its trained weights, or a
    statistical baseline (no weights: it is fitted on the history it is given)."""
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
    and covariates; UserError when it does not match what the network was trained on. (Of a panel
    run: one series of its own panel, ``data`` naming it; None: the first.)"""
    if is_panel_run(run):
        return own_member(run, data).series
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
    """The run's own series (or ``data``) prepared as the run's; of a panel run, its series named
    ``data`` (None: the first), with that series' scaler and position."""
    if is_panel_run(run):
        return own_member(run, data)
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
    backtest residuals per step. A panel run's predictor takes a long table (a DataFrame or a CSV
    file) of its series and forecasts each (panel_use.py)."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.one_step = registry.spec(task.name, run.config["settings"]["model"]).one_step
        self.panel = is_panel_run(run)
        self._backtest: dict[str, Any] | None = None

    @property
    def backtest(self) -> dict[str, Any]:
        """The run's backtest.json (read when first needed: evaluate does without it)."""
        if self._backtest is None:
            self._backtest = read_backtest(self.run)
        return self._backtest

    # --- decoding
    def read(self, paths: list[str]) -> tuple[Any, list[str]]:
        """One CSV file (or a built-in set's name) read as the run's data was: (the series, [its name]);
        of a panel run (the panel, its series ids)."""
        if len(paths) != 1:
            raise UserError(f"a forecast run reads one {'table' if self.panel else 'series'}, got {len(paths)}: "
                            f"give one CSV file")
        if self.panel:
            panel = read_panel(self.run, paths[0])
            return panel, panel.names
        series = run_series(self.run, paths[0])
        return series, [series.name]

    def read_data(self, options: PredictOptions) -> Any:
        """The series (or panel) `deepskeptic predict` forecasts from: --data, or the run's own."""
        if options.inputs:
            raise UserError(f"forecast predict reads a {'long table' if self.panel else 'series'}: pass it with "
                            f"--data FILE.csv (default: the run's own data)")
        return read_panel(self.run, options.data) if self.panel else run_series(self.run, options.data)

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
        "lower_95", "upper_95"} (floats), what `deepskeptic predict --json` prints.

        Of a panel run: ``inputs`` is a long table of some or all of the run's series (a pandas
        DataFrame with the run's id, time and value columns — Nixtla's unique_id, ds and y for a
        built-in or wide panel — or a CSV path, or a data.panel.Panel), and each row also has
        "series", the id; ids the run was not trained on are an error."""
        if self.panel:
            if covariates is not None:
                raise UserError("a panel run takes no covariates: its series are forecast from their own past only")
            return panel_predict(self.run, self.model, panel_input(self.run, inputs), self.backtest, self.one_step,
                                 self.device)
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
        labels = ["series", "time"] if results and "series" in results[0] else ["time"]
        writer.writerow(PANEL_COLUMNS if len(labels) == 2 else COLUMNS)
        writer.writerows([[r[k] for k in labels] + [f"{r[c]:.6g}" for c in COLUMNS[1:]] for r in results])
        return buffer.getvalue()

    def write(self, results: list[dict[str, Any]], out: str | None) -> Path:
        """forecast.csv at ``out`` (a file, or a folder to put it in; default the run folder)."""
        path = Path(out) if out else self.run.path / "forecast.csv"
        if path.is_dir():
            path = path / "forecast.csv"
        atomic_write_text(path, self.format(results))
        return path

    def summary(self, series: Any, path: Path) -> str:
        """The line `deepskeptic predict` prints under the forecast."""
        horizon = self.run.config["settings"]["horizon"]
        if self.panel:
            return (f"{len(series)} series: {horizon} steps after each one's end; intervals from the quantiles of "
                    f"each series' {len(self.backtest['series'][0]['residuals'])} backtest residuals per step; "
                    f"wrote {path}")
        return (f"{series.target}: {horizon} steps after {series.time_labels(len(series) - 1)[0]}; "
                f"intervals from the quantiles of {len(self.backtest['residuals'])} backtest residuals per step; "
                f"wrote {path}")

    # --- evaluating
    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """The backtest again, on the run's data or another series, without retraining the network
        (statistical baselines refit, as in training). Of a panel run: every series of ``data`` (a
        long table of the run's series; default the run's own panel), per series and aggregated."""
        s = self.run.config["settings"]
        if self.panel:
            return {"data": str(data or s["data"]),
                    **panel_evaluate(self.run, self.model, read_panel(self.run, data), self.one_step, self.device)}
        prepared = prepared_for_run(self.run, data)
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

    # --- explaining (the API's Run.explain; `deepskeptic explain` writes the figure)
    def explain(self, inputs: Any = None, *, cells: str | list[int] | None = None) -> dict[str, Any]:
        """The LSTM's gates over the last window of the run's series (of a panel run: the series
        whose id is ``inputs``; default the first): {"series", "units", "layer", "time", "window",
        "forecast", "input", "forget", "cell", "output", "hidden"} as lists."""
        if isinstance(cells, (list, tuple)):
            cells = ",".join(str(c) for c in cells)
        # through the task: explain.py imports this file, not the other way round
        window, forecast, gates, units, labels, layer = self.task.lstm_gates(self.run, self.model, cells,
                                                                             explain_series(self.run, inputs))
        return {"series": inputs if self.panel and inputs is not None else None, "units": units, "layer": layer,
                "time": labels, "window": np.asarray(window).tolist(), "forecast": np.asarray(forecast).tolist(),
                **{k: np.asarray(v)[:, units].round(5).tolist() for k, v in gates.items()}}


def explain_series(run: Run, inputs: Any) -> str | None:
    """The series explain shows: a panel run's id given (one), else None (its first); a
    single-series run takes none."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) > 1:
            raise UserError(f"explain shows one series; got {len(inputs)}: name one series id")
        inputs = inputs[0] if inputs else None
    if inputs is not None and not is_panel_run(run):
        raise UserError(f"explain of a single-series forecast run takes no inputs (it shows the last window of the "
                        f"run's series), got {str(inputs)!r}")
    return None if inputs is None else str(inputs)
