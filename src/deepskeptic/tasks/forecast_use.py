"""Using a finished forecast run: predict past the end of a series, explain the LSTM, re-evaluate."""
from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes, atomic_write_text
from deepskeptic.models.forecast import StatisticalForecaster
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast_eval import INTERVAL_LEVELS, intervals


def run_series(run: Run, data: str | None):
    """The run's own series, or ``data`` read with the run's target, time column, frequency, fill
    and covariates; UserError when it does not match what the network was trained on."""
    from deepskeptic.data.series import load_series
    s, info = run.config["settings"], run.config["data_info"]
    covariates = ",".join(info["covariates"]) if info["covariates"] else "none"
    if data is None or data == s["data"]:
        return load_series(str(s["data"]), target=s.get("target"), time_col=s.get("time_col"), freq=s.get("freq"),
                           fill=s.get("fill"), covariates=covariates)
    from deepskeptic.data.series import BUILTINS
    builtin = data in BUILTINS
    series = load_series(data, target=None if builtin else s.get("target"), time_col=None if builtin else s.get("time_col"),
                         freq=None if builtin else s.get("freq"), fill=s.get("fill"),
                         covariates="none" if builtin else covariates)
    if series.covariate_names != info["covariates"]:
        raise UserError(f"{data} has covariates ({', '.join(series.covariate_names) or 'none'}) but run {run.path} "
                        f"was trained with ({', '.join(info['covariates']) or 'none'}); give data with the same columns")
    return series


def prepared_for_run(run: Run, data: str | None):
    from deepskeptic.tasks.forecast import Prepared
    s, info = run.config["settings"], run.config["data_info"]
    series = run_series(run, data)
    return Prepared(series, s["horizon"], s["lookback"], s["season"], None,
                    np.asarray(info["mean"]), np.asarray(info["std"]))


def point_forecast(task, run: Run, model: nn.Module, prepared) -> np.ndarray:
    """(H,) forecast for the H steps after the end of ``prepared.series``."""
    from deepskeptic.tasks.forecast import network_forecasts, read_backtest
    from deepskeptic.tasks.forecast_baselines import forecast
    series, horizon = prepared.series, prepared.horizon
    if isinstance(model, StatisticalForecaster):
        return forecast(model.method, read_backtest(run)["form"], series.values, horizon, prepared.season)
    if len(series) < prepared.lookback:
        raise UserError(f"the series has {len(series)} points but this network needs the last {prepared.lookback} "
                        f"(its lookback); give a longer series")
    features = np.vstack([prepared.features(), np.zeros((horizon, prepared.features().shape[1]))])
    return network_forecasts(model, prepared, np.array([len(series)]), torch.device("cpu"), features=features)[0]


def predict(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.tasks.forecast import read_backtest
    if args.inputs:
        raise UserError("forecast predict reads a series: pass it with --data FILE.csv (default: the run's own data)")
    model = task.load_model(run)
    prepared = prepared_for_run(run, args.data)
    point = point_forecast(task, run, model, prepared)
    bands = intervals(point, np.asarray(read_backtest(run)["residuals"]))
    series = prepared.series
    labels = series.time_labels(len(series), len(series) + prepared.horizon)
    header = ["time", "forecast"] + [f"{side}_{level}" for level in INTERVAL_LEVELS for side in ("lower", "upper")]
    rows = [[label, point[h]] + [bands[level][i][h] for level in INTERVAL_LEVELS for i in (0, 1)]
            for h, label in enumerate(labels)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[r[0]] + [f"{v:.6g}" for v in r[1:]] for r in rows])
    out = Path(args.out) if args.out else run.path / "forecast.csv"
    if out.is_dir():
        out = out / "forecast.csv"
    atomic_write_text(out, buffer.getvalue())
    if args.json:
        print(json.dumps([dict(zip(header, [r[0]] + [float(v) for v in r[1:]])) for r in rows], indent=2))
    else:
        print(buffer.getvalue(), end="")
        print(f"{series.target}: {prepared.horizon} steps after {series.time_labels(len(series) - 1)[0]}; "
              f"intervals from the quantiles of {len(read_backtest(run)['residuals'])} backtest residuals per step; "
              f"wrote {out}")
    return 0


def lstm_gates(task, run: Run, cells: str | None):
    """Gates of the trained LSTM over the last lookback window of the run's series.

    Returns (window (L,), forecast (H,), {gate: (L, hidden)} of the last layer, units, time labels, layer).
    In an ensemble (members > 1) the gates are those of the first member."""
    from deepskeptic.models.lstm_cell import ExplicitLSTM
    model = task.load_model(run)
    lstm = getattr(model.members[0], "rnn", None) if hasattr(model, "members") else None
    if not isinstance(lstm, nn.LSTM):
        raise UserError(f"explain shows LSTM gates; run {run.path} is a '{run.config['settings']['model']}' model: "
                        f"use an lstm run")
    prepared = prepared_for_run(run, None)
    series, L = prepared.series, prepared.lookback
    x = model.core_input(torch.from_numpy(prepared.scaled()[-L:]).float()[None])  # (1, L, F'): what the LSTM sees
    explicit = ExplicitLSTM.from_lstm(lstm)
    with torch.no_grad():
        _, _, gates = explicit(x)                                         # each (layers, 1, L, H)
    layer = lstm.num_layers - 1
    last = {k: v[layer, 0].numpy() for k, v in gates.items()}             # (L, H)
    if cells:
        try:
            units = [int(u) for u in cells.split(",") if u.strip()]
        except ValueError:
            raise UserError(f"--cells takes unit numbers like 0,3,7, got {cells!r}") from None
        bad = [u for u in units if not 0 <= u < lstm.hidden_size]
        if bad or not units:
            raise UserError(f"--cells must name units 0..{lstm.hidden_size - 1}, got {cells!r}")
    else:  # the four units whose cell state moves most over the window
        units = sorted(np.argsort(-last["cell"].std(0))[:4].tolist())
    forecast = point_forecast(task, run, model, prepared)
    return series.values[-L:], forecast, last, units, series.time_labels(len(series) - L), layer


def explain(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.reports.html import figure_to_data_uri
    from deepskeptic.tasks.forecast_report import gates_figure
    window, forecast, gates, units, labels, layer = lstm_gates(task, run, getattr(args, "cells", None))
    out = Path(args.out) if args.out else run.path / "explain"
    path = out / "lstm-gates.png"
    uri = figure_to_data_uri(gates_figure(window, forecast, gates, units, labels, layer))
    atomic_write_bytes(path, base64.b64decode(uri.split(",", 1)[1]))
    values = {k: v[:, units].round(5).tolist() for k, v in gates.items()}
    atomic_write_text(out / "lstm-gates.json", json.dumps({"units": units, "layer": layer, "time": labels, **values}) + "\n")
    print(f"LSTM layer {layer + 1}, units {', '.join(map(str, units))}, over the last {len(window)} steps "
          f"({labels[0]} to {labels[-1]}); wrote {path} and {out / 'lstm-gates.json'}")
    return 0


def evaluate(task, run: Run, data: str | None) -> dict[str, Any]:
    """The backtest again, on the run's data or another series, without retraining the network
    (statistical baselines refit, as in training)."""
    from deepskeptic.tasks.forecast import evaluate_backtest, network_forecasts, plan
    from deepskeptic.tasks.forecast_baselines import backtest
    model = task.load_model(run)
    prepared = prepared_for_run(run, data)
    s = run.config["settings"]
    split = plan(len(prepared.series), prepared.horizon, prepared.season, s["origins"], prepared.lookback,
                 s["val_origins"], prepared.series.name)
    origins = split.test_origins()
    if isinstance(model, StatisticalForecaster):
        forecasts, _ = backtest(model.method, model.config, prepared.series.values, origins, prepared.horizon,
                                prepared.season)
    else:
        forecasts = network_forecasts(model, prepared, origins, torch.device("cpu"))
    metrics = evaluate_backtest(prepared, origins, forecasts)
    return {"data": str(data or s["data"]), "origins": len(origins), **metrics}
