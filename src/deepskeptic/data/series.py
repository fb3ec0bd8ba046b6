"""Where time series come from: the built-in sets from statsmodels' own files, CSV files
(data/series_csv.py) and series already in memory (pandas objects or arrays). Panels of many
series (long or wide CSV files, built-in panels) are read by data/panel.py.

Every source returns a complete ``Series`` (data/series_base.py): no gaps, no missing values
(they are errors, or filled when the user asks with ``fill``), strictly increasing time on one
frequency grid.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deepskeptic.data.series_base import INTEGER_TIME_REASON, Series, default_horizon, fill_missing, seasons_of
from deepskeptic.data.series_csv import read_series_csv
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.fileio import check_regular_file

# ------------------------------------------------------------------ built-in sets

def _statsmodels(name: str):
    import importlib
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"statsmodels.datasets.{name}").load_pandas().data


def _yearly(values, first_year: int) -> tuple:
    import pandas as pd
    return np.asarray(values, dtype=float), pd.Timestamp(year=int(first_year), month=1, day=1), "YS-JAN"


def _sunspots():
    d = _statsmodels("sunspots")
    return (*_yearly(d["SUNACTIVITY"], d["YEAR"].iloc[0]), "SUNACTIVITY")


def _nile():
    d = _statsmodels("nile")
    return (*_yearly(d["volume"], d["year"].iloc[0]), "volume")


def _co2():
    d = _statsmodels("co2")
    return d["co2"].to_numpy(float), d.index[0], "W-SAT", "co2"


def _elec_equip():
    d = _statsmodels("elec_equip")
    return d.iloc[:, 0].to_numpy(float), d.index[0], "MS", "elec_equip"


def _elnino():
    import pandas as pd
    d = _statsmodels("elnino")
    table = d.drop(columns="YEAR").to_numpy(float)        # (years, 12)
    return table.reshape(-1), pd.Timestamp(year=int(d["YEAR"].iloc[0]), month=1, day=1), "MS", "sea_surface_temperature"


def _macro(column: str):
    def load():
        import pandas as pd
        d = _statsmodels("macrodata")
        start = pd.Timestamp(year=int(d["year"].iloc[0]), month=3 * int(d["quarter"].iloc[0]) - 2, day=1)
        return d[column].to_numpy(float), start, "QS-JAN", column
    return load


@dataclass(frozen=True)
class Builtin:
    load: Callable[[], tuple]   # -> (values, start, freq, target)
    season: int                 # seasonal period used by default (the seasonal naive's lag)
    horizon: int                # default forecast horizon
    fill: str | None            # how the set's own gaps are filled (None: it has none)
    description: str
    season_reason: str = ""     # why that season (default: what the frequency says)


BUILTINS: dict[str, Builtin] = {
    # The solar cycle is about 11 years (9 to 14): a seasonal naive with lag 11 is its classic floor.
    "sunspots": Builtin(_sunspots, 11, 11, None, "yearly sunspot numbers 1700-2008 (309 points)",
                        "the solar cycle: about 11 years (9 to 14)"),
    "co2": Builtin(_co2, 52, 13, "interpolate",
                   "weekly CO2 at Mauna Loa 1958-2001 (2,284 points, 59 gaps interpolated)"),
    "elec-equip": Builtin(_elec_equip, 12, 12, None, "monthly euro-area electrical equipment orders 1995-2016 (257 points)"),
    "nile": Builtin(_nile, 1, 10, None, "yearly Nile flow at Aswan 1871-1970 (100 points)"),
    "elnino": Builtin(_elnino, 12, 12, None, "monthly Pacific sea surface temperature 1950-2010 (732 points)"),
    "us-gdp": Builtin(_macro("realgdp"), 4, 8, None, "quarterly US real GDP 1959-2009 (203 points)"),
    "us-unemp": Builtin(_macro("unemp"), 4, 8, None, "quarterly US unemployment rate 1959-2009 (203 points)"),
}


def series_datasets() -> list[dict]:
    """The built-in sets for `deepskeptic datasets`: always there with statsmodels."""
    return [{"name": name, "task": "forecast", "available": True, "location": "statsmodels.datasets",
             "description": b.description, "how_to_get": "pip install statsmodels"}
            for name, b in BUILTINS.items()]


def load_builtin(name: str, fill: str | None) -> Series:
    b = BUILTINS[name]
    values, start, freq, target = b.load()
    notes = []
    missing = np.isnan(values)
    if missing.any():
        how = fill or b.fill
        if how is None:  # pragma: no cover - every built-in with gaps names its fill
            raise UserError(f"built-in data set {name} has {missing.sum()} missing values; pass --fill interpolate|ffill")
        values = fill_missing(values, how)
        notes.append(f"{int(missing.sum())} missing values filled ({how})")
    return Series(name=name, source=f"statsmodels.datasets ({name})", target=target, values=values,
                  covariates=np.zeros((len(values), 0)), covariate_names=[], freq=freq, season=b.season,
                  horizon=b.horizon, start=start, notes=notes, seasons=(b.season,) if b.season > 1 else (),
                  season_reason=b.season_reason or seasons_of(freq)[1])


def load_series(data: str, *, target: str | None = None, time_col: str | None = None, freq: str | None = None,
                fill: str | None = None, covariates: str | None = "all") -> Series:
    """A built-in set by name, or a CSV file by path; raises UserError on anything wrong."""
    if fill not in (None, "interpolate", "ffill"):
        raise UserError(f"--fill must be interpolate or ffill, got {fill!r}")
    if data in BUILTINS:
        given = [flag for flag, value in (("--target", target), ("--time-col", time_col), ("--freq", freq)) if value]
        if given:
            raise UserError(f"{', '.join(given)} only apply to CSV files; the built-in data set {data} has a "
                            f"fixed target and time axis: drop {given[0]}")
        return load_builtin(data, fill)
    path = Path(data)
    if path.exists() and not path.is_file():
        check_regular_file(path, "data file")          # a FIFO, a device, a folder: one line saying which
    if path.is_file():
        return read_series_csv(path, target=target, time_col=time_col, freq=freq, fill=fill, covariates=covariates)
    if path.suffix.lower() in (".csv", ".txt", ".tsv") or "/" in data:
        raise UserError(f"file {data} does not exist; give a CSV file or a built-in set ({', '.join(BUILTINS)})")
    from deepskeptic.data.panel import PANELS  # panels read series_csv too: imported here, not at the top
    raise unknown_name("time-series data set", data, {**BUILTINS, **PANELS}, hint=" (or a path to a CSV file)")


# ------------------------------------------------------------------ series in memory

def in_memory_series(data: Any, covariates: Any = None, *, target: str | None = None,
                     covariate_names: list[str] | None = None, fill: str | None = None) -> Series:
    """A ``Series`` from data already in memory; raises UserError on anything wrong.

    ``data`` is a pandas Series (its index the time axis), a pandas DataFrame (the ``target``
    column, or its only column, and the ``covariate_names`` columns; its index the time axis) or
    a 1-d array-like (time: steps 0, 1, ...). ``covariates`` go with a pandas Series or an array:
    an (N, C) array, or a DataFrame whose ``covariate_names`` columns are taken. ``covariate_names``
    are the covariates the caller expects (None: whatever is given). A time axis is dates on one
    frequency (a DatetimeIndex or PeriodIndex) or whole numbers one fixed step apart; missing
    values (NaN) are errors, or filled with ``fill`` (interpolate or ffill) as in a CSV file."""
    import pandas as pd
    if fill not in (None, "interpolate", "ffill"):
        raise UserError(f"fill must be interpolate or ffill, got {fill!r}")
    index, name = None, target or "series"
    if isinstance(data, pd.DataFrame):
        if covariates is not None:
            raise UserError("give the covariates as columns of the DataFrame, not separately")
        columns = [str(c) for c in data.columns]
        frame = data.set_axis(columns, axis=1)
        if target not in columns:
            if len(columns) != 1 or covariate_names:
                raise UserError(f"the DataFrame has no target column {target!r}: its columns are {', '.join(columns)}")
            target = columns[0]
        values, index, name = frame[target], frame.index, target
        covariates = frame.drop(columns=target)
    elif isinstance(data, pd.Series):
        values, index = data, data.index
        name = target or (str(data.name) if data.name is not None else name)
    else:
        values = data
    values = _numbers(values, "the series")
    if values.ndim != 1:
        raise UserError(f"the series must be one-dimensional (one value per time step), got shape {values.shape}")
    if len(values) < 3:
        raise UserError(f"the series has {len(values)} value(s); a series needs many more")
    cov, names = _memory_covariates(covariates, len(values), covariate_names)
    full = np.column_stack([values, cov])                                    # (N, 1 + C)
    notes: list[str] = []
    if index is None:
        start, step, freq = 0, 1, "step"
    else:
        order, start, step, freq = _memory_time_axis(index)
        if (order != np.arange(len(order))).any():
            notes.append("rows were not in time order; sorted by time")
            full = full[order]
    if np.isinf(full).any():
        raise UserError("the series has infinite values; give finite numbers")
    missing = int(np.isnan(full).sum())
    if missing:
        if fill is None:
            raise UserError(f"the series has {missing} missing value(s) (NaN); fill them first, or give "
                            f"fill='interpolate' or 'ffill'")
        full = fill_missing(full, fill)
        notes.append(f"filled ({fill}): {missing} missing value(s)")
    seasons, reason = ((), INTEGER_TIME_REASON) if freq == "step" else seasons_of(freq)
    season = seasons[0] if seasons else 1
    return Series(name=name, source="memory", target=target or name, values=full[:, 0], covariates=full[:, 1:],
                  covariate_names=names, freq=freq, season=season,
                  horizon=default_horizon(season, None if freq == "step" else freq), start=start, step=step,
                  notes=notes, seasons=seasons, season_reason=reason)


def _numbers(values: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise UserError(f"{what} must hold numbers") from None


def _memory_covariates(covariates: Any, n: int, expected: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """(N, C) covariates and their names; UserError when they are not the ``expected`` ones."""
    import pandas as pd
    if covariates is None or (isinstance(covariates, pd.DataFrame) and covariates.shape[1] == 0 and not expected):
        if expected:
            raise UserError(f"give the past covariates too ({', '.join(expected)}): one column each, "
                            f"a value per time step")
        return np.zeros((n, 0)), []
    if isinstance(covariates, pd.DataFrame):
        columns = [str(c) for c in covariates.columns]
        names = list(expected) if expected is not None else columns
        absent = [c for c in names if c not in columns]
        if absent:
            raise UserError(f"no covariate column {absent[0]!r} among {', '.join(columns) or 'none'}; "
                            f"give data with the columns {', '.join(names)}")
        cov = _numbers(covariates.set_axis(columns, axis=1)[names], "the covariates")
    else:
        cov = _numbers(covariates, "the covariates")
        cov = cov[:, None] if cov.ndim == 1 else cov
        if cov.ndim != 2:
            raise UserError(f"covariates must be (N, C): a column per covariate, got shape {cov.shape}")
        names = list(expected) if expected is not None else [f"covariate {i + 1}" for i in range(cov.shape[1])]
        if cov.shape[1] != len(names):
            raise UserError(f"the covariates have {cov.shape[1]} column(s) but {len(names)} are expected "
                            f"({', '.join(names) or 'none'})")
    if len(cov) != n:
        raise UserError(f"the covariates have {len(cov)} rows but the series has {n} values; give one row per time step")
    return cov, names


def _memory_time_axis(index) -> tuple[np.ndarray, Any, int, str]:
    """(the order that sorts the rows by time, start, step, frequency) of a pandas index."""
    import pandas as pd
    if isinstance(index, pd.PeriodIndex):
        index = index.to_timestamp()
    if isinstance(index, pd.DatetimeIndex):
        if index.tz is not None:
            index = index.tz_convert(None)
        order = np.argsort(index.asi8, kind="stable")
        times = index if index.is_monotonic_increasing else index[order]  # (sorting drops the freq)
        if times.has_duplicates:
            raise UserError(f"the series has duplicate timestamps ({times[times.duplicated()][0]}); keep one per time step")
        freq = times.freqstr if times.freq is not None else None
        if freq is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    freq = pd.infer_freq(times)
                except (TypeError, ValueError):
                    freq = None
            freq = getattr(freq, "freqstr", freq)   # pandas may return an offset instead of its name
        if freq is None or not pd.date_range(times[0], periods=len(times), freq=freq).equals(times):
            raise UserError("the series' dates are not one frequency apart (gaps or irregular steps); fill the "
                            "gaps first, or give an index like pd.date_range(start, periods=n, freq='MS')")
        return order, times[0], 1, freq
    if pd.api.types.is_integer_dtype(index):
        order = np.argsort(np.asarray(index), kind="stable")
        times = np.asarray(index, dtype=np.int64)[order]
        diffs = np.diff(times)
        if (diffs == 0).any():
            raise UserError(f"the series has duplicate time steps ({times[1:][diffs == 0][0]}); keep one per step")
        step = int(np.gcd.reduce(diffs))
        if (diffs != step).any():
            raise UserError(f"the series' time steps are not {step} apart everywhere (gaps); fill the gaps first")
        return order, int(times[0]), step, "step"
    raise UserError(f"the series' index must be dates or whole numbers, got {index.dtype}")
