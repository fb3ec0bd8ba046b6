"""Panels: many series forecast together (a shop's products, a utility's meters, countries).

A ``Panel`` is a list of complete ``Series`` (data/series_base.py) on one frequency that all end at
the same time; they may start at different times, so their lengths differ. Sources:

- a long CSV file: one row per (series, time) with an id column (``id_col``; Nixtla's
  ``unique_id`` is found by name, as are its ``ds`` time and ``y`` target columns);
- a wide CSV file: a time column and one column per series (``target`` 'all', or the columns
  'a,b,c'); a series starts at its first value and ends at its last, blanks before and after it
  are not missing values;
- the built-in panels below, from statsmodels' own files (offline).

Each series is read like a single-series CSV file (series_csv.series_from_cells), so every
problem — duplicate (id, time) rows, gaps, missing and non-numeric values — is reported with its
line numbers and the series it belongs to, or filled with ``fill``.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deepskeptic.data.series_base import Series, default_horizon, seasons_of
from deepskeptic.data.series_csv import (MISSING, _is_numeric_column, _read_rows, _time_column, _unknown_column,
                                         _lines, series_from_cells)
from deepskeptic.errors import UserError
from deepskeptic.fileio import check_regular_file

ID_NAMES = ("unique_id",)   # Nixtla's long format: unique_id, ds, y
NIXTLA_TARGET = "y"


@dataclass
class Panel:
    name: str
    source: str
    series: list[Series]              # complete series on one frequency, all ending at the same time
    freq: str
    season: int                       # default seasonal period (the frequency's)
    horizon: int                      # default forecast horizon
    seasons: tuple[int, ...] = ()     # every cycle of the frequency (mstl's)
    season_reason: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.series]


# ------------------------------------------------------------------ built-in panels

def _statsmodels(name: str):
    import importlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def _us_macro() -> tuple[list[tuple[str, np.ndarray, object]], str, list[str]]:
    import pandas as pd
    d = _statsmodels("macrodata")
    start = pd.Timestamp(year=int(d["year"].iloc[0]), month=3 * int(d["quarter"].iloc[0]) - 2, day=1)
    # inflation and the real interest rate are left out: they cross zero, where sMAPE and Naive2's
    # multiplicative season mean nothing (M4's series are all positive)
    columns = [c for c in d.columns if c not in ("year", "quarter", "infl", "realint")]
    return [(c, d[c].to_numpy(float), start) for c in columns], "QS-JAN", [
        "infl and realint left out: they cross zero (sMAPE and OWA need positive series)"]


FERTILITY_MIN_YEARS = 40   # shorter countries (Liechtenstein: 12 years, St. Martin: 30) cannot hold the default backtest


def _fertility() -> tuple[list[tuple[str, np.ndarray, object]], str, list[str]]:
    """World Bank fertility rates, one series per country: each from its first to its last
    reported year; countries with a gap inside, fewer than FERTILITY_MIN_YEARS years, or whose
    last year is not the latest, left out (the built-in panel must train with default settings)."""
    import pandas as pd
    d = _statsmodels("fertility")
    years = [c for c in d.columns if str(c).isdigit()]
    table = d[years].to_numpy(float)                                       # (countries, years)
    reported = ~np.isnan(table)
    last_year = max(i for i in range(len(years)) if reported[:, i].any())
    out, dropped = [], []
    for name, row, ok in zip(d["Country Name"], table, reported):
        present = np.flatnonzero(ok)
        if (len(present) < FERTILITY_MIN_YEARS or present[-1] != last_year
                or len(present) != present[-1] - present[0] + 1):
            dropped.append(str(name))
            continue
        out.append((str(name), row[present[0]:last_year + 1], pd.Timestamp(year=int(years[present[0]]), month=1, day=1)))
    notes = [f"{len(dropped)} of {len(d)} countries left out (a gap, fewer than {FERTILITY_MIN_YEARS} years, "
             f"or no value for {years[last_year]}): "
             + ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")] if dropped else []
    return out, "YS-JAN", notes


@dataclass(frozen=True)
class BuiltinPanel:
    load: Callable[[], tuple]   # -> ([(name, values, start)], freq, notes)
    horizon: int | None         # default horizon (None: the frequency's)
    description: str


PANELS: dict[str, BuiltinPanel] = {
    "us-macro": BuiltinPanel(_us_macro, None, "10 quarterly US macroeconomic series 1959-2009, 203 points each "
                                              "(statsmodels macrodata: GDP, consumption, investment, CPI, M1, "
                                              "T-bill rate, unemployment, population, ...)"),
    # M4's horizon for yearly series, 6: at 52 points a series, 8 would leave the networks few windows
    "fertility": BuiltinPanel(_fertility, 6, "yearly fertility rates of about 200 countries 1960-2011 (World Bank, "
                                             "statsmodels fertility; countries with gaps left out)"),
}


def panel_datasets() -> list[dict]:
    return [{"name": name, "task": "forecast", "available": True, "location": "statsmodels.datasets",
             "description": f"panel: {b.description}", "how_to_get": "pip install statsmodels"}
            for name, b in PANELS.items()]


def load_builtin_panel(name: str) -> Panel:
    b = PANELS[name]
    members, freq, notes = b.load()
    seasons, reason = seasons_of(freq)
    season = seasons[0] if seasons else 1
    series = [Series(name=n, source=f"statsmodels.datasets ({name})", target=n, values=v,
                     covariates=np.zeros((len(v), 0)), covariate_names=[], freq=freq, season=season,
                     horizon=b.horizon or default_horizon(season, freq), start=start, seasons=seasons,
                     season_reason=reason) for n, v, start in members]
    return _checked(Panel(name, f"statsmodels.datasets ({name})", series, freq, season,
                          b.horizon or default_horizon(season, freq), seasons, reason, notes))


# ------------------------------------------------------------------ CSV files

def wants_panel(data: str, *, id_col: str | None, target: str | None) -> bool:
    """Whether ``data`` is to be read as a panel: a built-in panel, an --id-col, --target all or a
    list of targets (wide), or a CSV file whose header has Nixtla's unique_id column."""
    if data in PANELS or id_col is not None or (target is not None and (target == "all" or "," in target)):
        return True
    path = Path(data)
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8-sig") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError):
        return False
    return any(name.strip().strip('"').lower() in ID_NAMES for name in first.replace(";", ",").replace("\t", ",").split(","))


def load_panel(data: str, *, id_col: str | None = None, target: str | None = None, time_col: str | None = None,
               freq: str | None = None, fill: str | None = None) -> Panel:
    """A built-in panel by name, or a long or wide CSV file; UserError on anything wrong."""
    if data in PANELS:
        given = [flag for flag, value in (("--id-col", id_col), ("--target", target), ("--time-col", time_col),
                                          ("--freq", freq)) if value]
        if given:
            raise UserError(f"{', '.join(given)} only apply to CSV files; the built-in panel {data} has fixed "
                            f"series and time axis: drop {given[0]}")
        return load_builtin_panel(data)
    path = Path(data)
    if path.exists() and not path.is_file():
        check_regular_file(path, "data file")          # a FIFO, a device, a folder: one line saying which
    if not path.is_file():
        raise UserError(f"file {data} does not exist; give a CSV file or a built-in panel ({', '.join(PANELS)})")
    header, rows = _read_rows(path)
    if id_col is None:
        id_col = next((h for h in header if h.lower() in ID_NAMES), None)
    if id_col is not None:
        return _long(path, header, rows, id_col, target, time_col, freq, fill)
    return _wide(path, header, rows, target, time_col, freq, fill)


def _long(path: Path, header, rows, id_col: str, target, time_col, freq, fill) -> Panel:
    if id_col not in header:
        raise _unknown_column(path, "id", id_col, header)
    time_name = _time_column(path, header, rows, time_col)
    if time_name is None or time_name == id_col:
        raise UserError(f"{path}: a long panel needs a time column besides the id column {id_col!r}; name it with "
                        f"--time-col")
    column = {name: [r[1][i] for r in rows] for i, name in enumerate(header)}
    lines = np.array([r[0] for r in rows])
    others = [h for h in header if h not in (id_col, time_name)]
    numeric = [h for h in others if _is_numeric_column(column[h])]
    if target is None:
        target = NIXTLA_TARGET if NIXTLA_TARGET in others else (numeric[0] if len(numeric) == 1 else None)
        if target is None:
            raise UserError(f"{path} has {len(numeric)} numeric columns ({', '.join(numeric) or 'none'}) besides "
                            f"{id_col!r} and {time_name!r}; choose the one to forecast with --target")
    elif target not in others:
        raise _unknown_column(path, "target", target, others)
    ids = column[id_col]
    blank = [int(n) for n, i in zip(lines, ids) if i.lower() in MISSING]
    if blank:
        raise UserError(f"{path}: {len(blank)} row(s) without a series id in column {id_col!r} on line(s) "
                        f"{_lines(blank)}; give every row its series")
    notes = [f"columns not used (panels take no covariates): {', '.join(c for c in numeric if c != target)}"] \
        if any(c != target for c in numeric) else []
    groups: dict[str, list[int]] = {}
    for row, key in enumerate(ids):
        groups.setdefault(key, []).append(row)
    series = []
    for key, members in groups.items():
        index = np.array(members)
        cells = {name: [column[name][i] for i in index] for name in (time_name, target)}
        series.append(series_from_cells(f"{path} (series {key!r})", key, str(path), lines[index], time_name, cells,
                                        [target], freq, fill))
    return _panel_of(path, series, notes)


def _wide(path: Path, header, rows, target, time_col, freq, fill) -> Panel:
    time_name = _time_column(path, header, rows, time_col)
    column = {name: [r[1][i] for r in rows] for i, name in enumerate(header)}
    lines = np.array([r[0] for r in rows])
    others = [h for h in header if h != time_name]
    if target in (None, "all"):
        targets = [h for h in others if _is_numeric_column(column[h])]
    else:
        targets = [t.strip() for t in target.split(",") if t.strip()]
        for t in targets:
            if t not in others:
                raise _unknown_column(path, "series", t, others)
    if len(targets) < 1:
        raise UserError(f"{path} has no numeric columns to forecast besides the time column {time_name!r}")
    if time_name is not None:  # rows in time order first, so that 'before the first value' means earlier in time
        order = _time_order(column[time_name])
        column = {name: [cells[i] for i in order] for name, cells in column.items()}
        lines = lines[order]
    series = []
    for name in targets:
        present = [i for i, cell in enumerate(column[name]) if cell.lower() not in MISSING]
        if len(present) < 3:
            raise UserError(f"{path}: column {name!r} has {len(present)} value(s); a series needs many more: "
                            f"leave it out of --target")
        index = np.arange(present[0], present[-1] + 1)       # blanks before the first and after the last value
        cells = {c: [column[c][i] for i in index] for c in ([time_name] if time_name else []) + [name]}
        series.append(series_from_cells(f"{path} (column {name!r})", name, str(path), lines[index], time_name, cells,
                                        [name], freq, fill))
    return _panel_of(path, series, [])


def _time_order(cells: list[str]) -> np.ndarray:
    from deepskeptic.data.series_csv import _INTEGER, _parse_datetimes
    if all(_INTEGER.match(c) for c in cells):
        return np.argsort(np.array([int(c) for c in cells]), kind="stable")
    times = _parse_datetimes(cells)
    return np.argsort(np.asarray(times.asi8), kind="stable")


def _panel_of(path: Path, series: list[Series], notes: list[str]) -> Panel:
    freqs = Counter((s.freq, s.step) for s in series)
    if len(freqs) > 1:
        (common, _), = freqs.most_common(1)
        odd = next(s for s in series if (s.freq, s.step) != common)
        raise UserError(f"{path}: series {odd.name!r} is on the {odd.freq} grid but most are on {common[0]}; every "
                        f"series of a panel needs one frequency: give --freq, or fix that series")
    first = series[0]
    for s in series:
        for note in s.notes:
            notes.append(f"series {s.name}: {note}")
    return _checked(Panel(path.stem, str(path), series, first.freq, first.season, first.horizon,
                          tuple(first.seasons), first.season_reason, notes))


def _checked(panel: Panel) -> Panel:
    """Every series ends at the panel's last time: the backtest's origins are the same calendar
    times for all of them, so no series' forecast can see another's future."""
    if not panel.series:
        raise UserError(f"panel {panel.name} has no series")
    reference = panel.series[0]
    ends = {s.name: _offset(s, reference) + len(s) - 1 for s in panel.series}   # in steps from the first's start
    last = max(ends.values())
    early = [s for s in panel.series if ends[s.name] < last]
    if early:
        final = next(s for s in panel.series if ends[s.name] == last)
        raise UserError(f"panel {panel.name}: series {early[0].name!r} ends at {early[0].time_labels(len(early[0]) - 1)[0]}, "
                        f"before the panel's last time {final.time_labels(len(final) - 1)[0]}"
                        + (f" ({len(early) - 1} more do too)" if len(early) > 1 else "")
                        + "; every series must reach the end: drop the series that stopped, or cut the others")
    return panel


def _offset(s: Series, reference: Series) -> int:
    """Steps from ``reference``'s start to ``s``'s start (on their common frequency)."""
    if s.is_integer_time:
        return (int(s.start) - int(reference.start)) // max(1, s.step)
    import pandas as pd
    if s.start >= reference.start:
        return len(pd.date_range(reference.start, s.start, freq=s.freq)) - 1
    return -(len(pd.date_range(s.start, reference.start, freq=s.freq)) - 1)
