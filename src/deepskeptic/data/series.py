"""Time series: the built-in sets from statsmodels' own files, CSV files, and their time axis.

A ``Series`` is one regularly spaced target with optional past covariates. Every series that
leaves this module is complete: no gaps, no missing values (they are errors, or filled when the
user asks with ``fill``), strictly increasing time on one frequency grid.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from deepskeptic.errors import UserError, unknown_name

# Seasonal period of each pandas frequency family: the cycle a seasonal naive forecast repeats.
SEASON_OF_FREQ = {"Y": 1, "A": 1, "Q": 4, "M": 12, "W": 52, "D": 7, "B": 5, "C": 5, "h": 24, "H": 24,
                  "bh": 8, "min": 60, "T": 60, "s": 60, "S": 60}


@dataclass
class Series:
    name: str
    source: str                       # where it was read from
    target: str                       # the column being forecast
    values: np.ndarray                # (N,) float64 target
    covariates: np.ndarray            # (N, C) float64 past covariates (C may be 0)
    covariate_names: list[str]
    freq: str                         # pandas offset alias, or 'step' / 'N steps' for integer time
    season: int                       # default seasonal period
    horizon: int                      # default forecast horizon
    start: object                     # pandas Timestamp, or int for integer time
    step: int = 1                     # for integer time: distance between two points
    notes: list[str] = field(default_factory=list)  # fills and other changes made to the data

    def __len__(self) -> int:
        return len(self.values)

    @property
    def is_integer_time(self) -> bool:
        return isinstance(self.start, (int, np.integer))

    def time_labels(self, start: int = 0, stop: int | None = None) -> list[str]:
        """Labels of the points start..stop-1; indices past the end are future points."""
        stop = len(self) if stop is None else stop
        if self.is_integer_time:
            return [str(self.start + i * self.step) for i in range(start, stop)]
        import pandas as pd
        index = pd.date_range(self.start, periods=stop, freq=self.freq)[start:stop]
        return [format_time(t, self.freq) for t in index]


def format_time(t, freq: str) -> str:
    base = freq_family(freq)
    if base in ("Y", "A"):
        return f"{t.year}"
    if base in ("Q", "M"):
        return f"{t.year}-{t.month:02d}"
    if t.hour == t.minute == t.second == 0:
        return t.strftime("%Y-%m-%d")
    return t.strftime("%Y-%m-%d %H:%M:%S")


def freq_family(freq: str) -> str:
    """'MS' -> 'M', 'W-SAT' -> 'W', 'QS-OCT' -> 'Q', '2h' -> 'h': the key of SEASON_OF_FREQ."""
    code = freq.split("-")[0].lstrip("0123456789")
    for key in sorted(SEASON_OF_FREQ, key=len, reverse=True):
        if code == key or (len(code) > len(key) and code.startswith(key) and code[len(key):] in ("S", "E", "BS", "BE")):
            return key
    return code


def season_of(freq: str) -> int:
    return SEASON_OF_FREQ.get(freq_family(freq), 1)


def default_horizon(season: int) -> int:
    """A full seasonal cycle when it is short, else 8 steps (yearly data, weekly, long cycles)."""
    return season if 2 <= season <= 24 else 8


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


BUILTINS: dict[str, Builtin] = {
    # The solar cycle is about 11 years (9 to 14): a seasonal naive with lag 11 is its classic floor.
    "sunspots": Builtin(_sunspots, 11, 11, None, "yearly sunspot numbers 1700-2008 (309 points)"),
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


def fill_missing(values: np.ndarray, how: str) -> np.ndarray:
    """Fill NaNs in a (N,) or (N, C) array by linear interpolation or carrying the last value
    forward; leading NaNs take the first known value in both cases."""
    import pandas as pd
    frame = pd.DataFrame(values.reshape(len(values), -1))
    frame = frame.interpolate(method="linear", limit_direction="forward") if how == "interpolate" else frame.ffill()
    return frame.bfill().to_numpy(float).reshape(values.shape)


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
                  horizon=b.horizon, start=start, notes=notes)


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
    if path.is_file():
        from deepskeptic.data.series_csv import read_series_csv
        return read_series_csv(path, target=target, time_col=time_col, freq=freq, fill=fill, covariates=covariates)
    if path.suffix.lower() in (".csv", ".txt", ".tsv") or "/" in data:
        raise UserError(f"file {data} does not exist; give a CSV file or a built-in set ({', '.join(BUILTINS)})")
    raise unknown_name("time-series data set", data, BUILTINS, hint=" (or a path to a CSV file)")
