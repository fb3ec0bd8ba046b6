"""Using a finished panel run: the panel a user gives read as the run's data was (a long table of
series id, time and value, as a CSV file or a pandas DataFrame; the run's own layout for a path),
each series matched to the one of the run's series of the same id (its scaler, its row of a
series embedding, its backtest residuals), then forecast past its end (predict) or backtested
again (evaluate).

Only the run's own series are forecast: a series it has never seen has no scaler fitted on its
training span, no backtest residuals for its intervals and no row in a series embedding, so an
unknown id is an error, not a guess. A subset of the series, and longer histories, are fine.
"""
from __future__ import annotations

import os
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.data.panel import PANELS, Panel, load_panel
from deepskeptic.data.series import BUILTINS
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast.backtest import evaluate_panel
from deepskeptic.tasks.forecast.data import PanelPrepared, Prepared, check_magnitude, panel_layout, plan
from deepskeptic.tasks.forecast.eval import FORECAST_COLUMNS, INTERVAL_LEVELS, intervals
from deepskeptic.tasks.forecast.gold import parallel_map
from deepskeptic.tasks.forecast.jobs import _backtest_part, network_forecasts
from deepskeptic.tasks.forecast.panel import _Future

PANEL_COLUMNS = ["series", *FORECAST_COLUMNS]   # predict's rows of a panel: the series id first
SHOWN_IDS = 5                                   # ids an error message lists before "... and N more"


def is_panel_run(run: Run) -> bool:
    return bool(run.config["data_info"].get("panel"))


def run_layout(run: Run) -> tuple[str, str | None]:
    """(builtin, long or wide; the id column of a long file) of the run's panel (runs made before
    config.json recorded it: found again from the settings and the file)."""
    info, s = run.config["data_info"], run.config["settings"]
    if info.get("layout"):
        return info["layout"], info.get("id_col")
    return panel_layout(str(s["data"]), s.get("id_col"))


def value_column(run: Run) -> str | None:
    """The value column of a long panel run's table: the one it was trained on (None: found as in
    training, y or the only numeric column)."""
    return run.config["data_info"].get("value_col") or run.config["settings"].get("target")


def table_columns(run: Run) -> str:
    """The columns a long table for this run needs, in words (the errors say it)."""
    layout, id_col = run_layout(run)
    s = run.config["settings"]
    if layout == "long":
        return (f"{id_col or 'unique_id'} (the series id), {s.get('time_col') or 'a time column'} and "
                f"{value_column(run) or 'y'} (the value)")
    return "unique_id (the series id), ds (the time) and y (the value)"


def read_panel(run: Run, data: str | None) -> Panel:
    """The panel at ``data`` (default: the run's own data) read as the run's was: a long file
    with the run's id, time and target columns; a wide or built-in panel's run also reads a long
    file with Nixtla's unique_id, ds and y, or a wide file of one column per series."""
    s = run.config["settings"]
    data = str(data) if data is not None else None
    if data is None or data == str(s["data"]):
        return load_panel(str(s["data"]), id_col=s.get("id_col"), target=s.get("target"),
                          time_col=s.get("time_col"), freq=s.get("freq"), fill=s.get("fill"))
    if data in PANELS:
        return load_panel(data)
    if data in BUILTINS:
        raise UserError(f"{data} is a single series; run {run.path} forecasts the series of a panel: give a long "
                        f"table with columns {table_columns(run)}")
    layout, id_col = run_layout(run)
    file_layout, file_id = panel_layout(data, None) if Path(data).is_file() else ("wide", None)
    if layout == "long":   # the run's id column, required: a file without it is not a long table
        return load_panel(data, id_col=id_col or "unique_id", target=value_column(run), time_col=s.get("time_col"),
                          freq=s.get("freq"), fill=s.get("fill"))
    if file_layout == "long":
        return load_panel(data, id_col=file_id, freq=s.get("freq"), fill=s.get("fill"))
    wide = s.get("target") if layout == "wide" else "all"
    return load_panel(data, target=wide or "all", time_col=s.get("time_col") if layout == "wide" else None,
                      freq=s.get("freq"), fill=s.get("fill"))


def frame_panel(run: Run, frame: Any) -> Panel:
    """A pandas DataFrame in long format (one row per series and time) as a Panel, checked as a
    CSV file of the same rows is (duplicate rows, gaps, missing values: each named by its line,
    the header being line 1): written to a temporary file and read by the panel loader."""
    import pandas as pd
    if not isinstance(frame, pd.DataFrame):
        raise UserError(f"a panel run forecasts from a long table: a pandas DataFrame with columns "
                        f"{table_columns(run)}, or the path of a CSV file; got {type(frame).__name__}")
    if not isinstance(frame.index, pd.RangeIndex):      # a time (or id) index: a column like the others
        frame = frame.reset_index()
    layout, id_col = run_layout(run)
    s = run.config["settings"]
    id_name = (id_col or "unique_id") if layout == "long" else "unique_id"
    columns = [str(c) for c in frame.columns]
    if id_name not in columns:
        raise UserError(f"the table has no series id column {id_name!r} (its columns: {', '.join(columns)}); "
                        f"give a long table with columns {table_columns(run)}")
    with tempfile.TemporaryDirectory(prefix="deepskeptic-panel-") as folder:
        path = Path(folder) / "table.csv"
        frame.to_csv(path, index=False)
        try:
            panel = load_panel(str(path), id_col=id_name, target=value_column(run) if layout == "long" else "y",
                               time_col=s.get("time_col") if layout == "long" else None, freq=s.get("freq"),
                               fill=s.get("fill"))
        except UserError as exc:
            raise UserError(str(exc).replace(str(path), "the table")) from None
    panel.name, panel.source = "table", "memory"
    return panel


def panel_input(run: Run, inputs: Any) -> Panel:
    """What predict takes for a panel run: a Panel, a long DataFrame, or a CSV path."""
    if isinstance(inputs, Panel):
        return inputs
    if isinstance(inputs, (str, os.PathLike)):
        return read_panel(run, str(inputs))
    if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and isinstance(inputs[0], (str, os.PathLike)):
        return read_panel(run, str(inputs[0]))
    return frame_panel(run, inputs)


def _shown(names: list[str]) -> str:
    head = ", ".join(repr(n) for n in names[:SHOWN_IDS])
    return head + (f" and {len(names) - SHOWN_IDS} more" if len(names) > SHOWN_IDS else "")


def run_members(run: Run, panel: Panel, min_points: int) -> list[Prepared]:
    """Each series of ``panel`` with the run's horizon, lookback and season, the scaler of the
    run's series of the same id and its position there (no backtest split); UserError on an id
    the run was not trained on, or a series shorter than ``min_points``."""
    s, info = run.config["settings"], run.config["data_info"]
    position = {str(name): i for i, name in enumerate(info["series"])}
    unknown = [series.name for series in panel.series if str(series.name) not in position]
    if unknown:
        raise UserError(f"series {_shown(unknown)} not among the {len(position)} series run {run.path} was trained "
                        f"on ({_shown(list(position))}); forecast only those, or train on a panel that has them")
    members = []
    for series in panel.series:
        if len(series) < min_points:
            raise UserError(f"series {series.name!r} has {len(series)} points; this run needs at least {min_points} "
                            f"(its {'lookback' if min_points == s['lookback'] else 'season, or 3'}): give a longer "
                            f"history")
        check_magnitude(series)
        i = position[str(series.name)]
        members.append(Prepared(series, s["horizon"], s["lookback"], s["season"], None,
                                np.asarray(info["mean"][i], float), np.asarray(info["std"][i], float),
                                seasons=tuple(info.get("seasons", ())), season_reason=info.get("season_reason", ""),
                                series_index=i))
    return members


def min_points(run: Run, one_step: bool) -> int:
    """The shortest history a series may have: a network's lookback; a baseline's season (or 3)."""
    s = run.config["settings"]
    return max(3, s["season"]) if one_step else s["lookback"]


def panel_predict(run: Run, model: nn.Module, panel: Panel, backtest: dict[str, Any], one_step: bool,
                  device: torch.device) -> list[dict[str, Any]]:
    """One row per series and step past each series' end: {"series", "time", "forecast",
    "lower_80", ...}; the intervals from the quantiles of that series' backtest residuals."""
    members = run_members(run, panel, min_points(run, one_step))
    records = dict(zip((str(n) for n in backtest["names"]), backtest["series"]))
    chosen = [records[str(p.series.name)] for p in members]
    if one_step:   # each series' chosen form refitted on its whole history (the gold standard: selected again)
        jobs = run.config["settings"].get("fit_jobs", 1)
        points = parallel_map(_Future(model.method, model.config), [(p, r["form"]) for p, r in zip(members, chosen)],
                              jobs)
    else:
        points = [network_forecasts(model, p, np.array([len(p.series)]), device,
                                    features=np.vstack([p.features(), np.zeros((p.horizon, 1))]))[0] for p in members]
    rows = []
    for p, record, point in zip(members, chosen, points):
        bands = intervals(np.asarray(point), np.asarray(record["residuals"]))
        labels = p.series.time_labels(len(p.series), len(p.series) + p.horizon)
        for h, label in enumerate(labels):
            rows.append(dict(zip(PANEL_COLUMNS, [str(p.series.name), label, float(point[h])]
                                 + [float(bands[level][i][h]) for level in INTERVAL_LEVELS for i in (0, 1)])))
    return rows


def panel_evaluate(run: Run, model: nn.Module, panel: Panel, one_step: bool,
                   device: torch.device) -> dict[str, Any]:
    """The backtest again on every series of ``panel`` at the run's origins, with the run's
    weights (a network) or refitted (a baseline): per-series and aggregate metrics as training
    reports them."""
    s = run.config["settings"]
    members = run_members(run, panel, 1)
    for p in members:
        if len(p.series) <= p.season:   # (plan's own message would ask for a smaller --season)
            raise UserError(f"series {p.series.name!r} has {len(p.series)} points, too short for the run's backtest "
                            f"with its season of {p.season} steps; give a longer history")
        p.split = plan(len(p.series), p.horizon, p.season, s["origins"], p.lookback, s["val_origins"],
                       repr(p.series.name))
    pp = PanelPrepared(panel, s["horizon"], s["lookback"], s["season"], members, seasons=members[0].seasons,
                       season_reason=members[0].season_reason)
    if one_step:
        results = parallel_map(partial(_backtest_part, model.method, model.config), members, s.get("fit_jobs", 1))
        forecasts = np.stack([f for f, _ in results])
    else:
        forecasts = np.stack([network_forecasts(model, p, p.split.test_origins(), device) for p in members])
    return {"origins": int(s["origins"]), **evaluate_panel(pp, forecasts)}


def own_member(run: Run, name: str | None) -> Prepared:
    """One series of the run's own panel (``name``; default its first), with the run's scaler."""
    panel = read_panel(run, None)
    if name is None:
        chosen = panel.series[:1]
    else:
        chosen = [series for series in panel.series if str(series.name) == str(name)]
        if not chosen:
            raise UserError(f"series {name!r} is not one of the {len(panel)} series of run {run.path} "
                            f"({_shown(panel.names)})")
    return run_members(run, Panel(panel.name, panel.source, chosen, panel.freq, panel.season, panel.horizon),
                       run.config["settings"]["lookback"])[0]
