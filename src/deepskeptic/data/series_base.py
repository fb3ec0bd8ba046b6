"""The time series type every source returns, and its time axis: frequencies, seasons, labels.

A ``Series`` is one regularly spaced target with optional past covariates. Every series that
leaves the data layer is complete: no gaps, no missing values (they are errors, or filled when the
user asks with ``fill``), strictly increasing time on one frequency grid. The sources (built-in
sets, CSV files, in-memory arrays) live in data/series.py and data/series_csv.py, above this file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Seasonal period of each pandas frequency family: the cycle a seasonal naive forecast repeats, and
# why. Sub-daily frequencies (hours, minutes) are not here: their season is the day in steps
# (subdaily_seasons), so half-hourly data repeats every 48 steps, 2-hourly every 12.
SEASON_OF_FREQ = {"Y": 1, "A": 1, "Q": 4, "M": 12, "W": 52, "D": 7, "B": 5, "C": 5, "h": 24, "H": 24,
                  "bh": 8, "min": 60, "T": 60, "s": 60, "S": 60}
SEASON_REASON = {"Y": "yearly data: no cycle shorter than the step", "A": "yearly data: no cycle shorter than the step",
                 "Q": "quarterly data: 4 quarters a year", "M": "monthly data: 12 months a year",
                 "W": "weekly data: 52 weeks a year", "D": "daily data: 7 days a week",
                 "B": "business-day data: 5 days a week", "C": "business-day data: 5 days a week",
                 "bh": "business-hour data: 8 hours a day",
                 "s": "second data: 60 seconds a minute (no natural cycle is known: give --season)",
                 "S": "second data: 60 seconds a minute (no natural cycle is known: give --season)"}
SUBDAILY = ("h", "H", "min", "T")
DAY_SECONDS = 86400
QUARTERLY_HORIZON = 8   # M4's horizon for quarterly data: two years
INTEGER_TIME_REASON = "integer time steps: no calendar, so no season (give --season)"

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
    seasons: tuple[int, ...] = ()     # every cycle of the frequency, shortest first (mstl's; () -> (season,))
    season_reason: str = ""           # why ``season`` is the default, in words (the reports say it)

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


def subdaily_seasons(freq: str) -> tuple[int, ...] | None:
    """(steps a day, steps a week) of an hourly or minute frequency ('h', '2h', '30min', '15T');
    None for other frequencies, and () when a day is no whole number of steps ('7min')."""
    if freq_family(freq) not in SUBDAILY:
        return None
    from pandas.tseries.frequencies import to_offset
    try:
        seconds = to_offset(freq).nanos / 1e9
    except (ValueError, TypeError):
        return None
    if seconds <= 0 or DAY_SECONDS % seconds:
        return ()
    day = int(DAY_SECONDS // seconds)
    return (day, 7 * day)


def seasons_of(freq: str) -> tuple[tuple[int, ...], str]:
    """Every seasonal cycle of ``freq`` in steps, shortest first (the first is the default
    --season; mstl tries them all), and why, in words: a year of months, a week of days, a day and
    a week of half-hours..."""
    family = freq_family(freq)
    sub = subdaily_seasons(freq)
    if sub is not None:
        label = "hourly data" if sub[:1] == (24,) else f"data every {freq}"
        if not sub:
            return (), f"{label}: a day is no whole number of steps (give --season)"
        return sub, f"{label}: {sub[0]} steps a day (the season), {sub[1]} a week"
    season = SEASON_OF_FREQ.get(family, 1)
    reason = SEASON_REASON.get(family, f"frequency {freq}: no known cycle")
    if family == "D":
        return (7, 365), reason + " (and 365 a year)"
    return ((season,) if season > 1 else ()), reason


def season_of(freq: str) -> int:
    seasons = seasons_of(freq)[0]
    return seasons[0] if seasons else 1


def default_horizon(season: int, freq: str | None = None) -> int:
    """A full seasonal cycle when it is short, else 8 steps (yearly data, weekly, long cycles);
    quarterly data 8 (two years, as in M4), not one cycle of 4."""
    if freq is not None and freq_family(freq) == "Q":
        return QUARTERLY_HORIZON
    return season if 2 <= season <= 24 else 8


def fill_missing(values: np.ndarray, how: str) -> np.ndarray:
    """Fill NaNs in a (N,) or (N, C) array by linear interpolation or carrying the last value
    forward; leading NaNs take the first known value in both cases."""
    import pandas as pd
    frame = pd.DataFrame(values.reshape(len(values), -1))
    frame = frame.interpolate(method="linear", limit_direction="forward") if how == "interpolate" else frame.ffill()
    return frame.bfill().to_numpy(float).reshape(values.shape)
