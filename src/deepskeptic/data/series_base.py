"""The time series type every source returns, and its time axis: frequencies, seasons, labels.

A ``Series`` is one regularly spaced target with optional past covariates. Every series that
leaves the data layer is complete: no gaps, no missing values (they are errors, or filled when the
user asks with ``fill``), strictly increasing time on one frequency grid. The sources (built-in
sets, CSV files, in-memory arrays) live in data/series.py and data/series_csv.py, above this file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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


def fill_missing(values: np.ndarray, how: str) -> np.ndarray:
    """Fill NaNs in a (N,) or (N, C) array by linear interpolation or carrying the last value
    forward; leading NaNs take the first known value in both cases."""
    import pandas as pd
    frame = pd.DataFrame(values.reshape(len(values), -1))
    frame = frame.interpolate(method="linear", limit_direction="forward") if how == "interpolate" else frame.ffill()
    return frame.bfill().to_numpy(float).reshape(values.shape)
