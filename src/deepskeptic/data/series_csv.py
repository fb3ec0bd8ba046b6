"""Reading a time series from a CSV file, with every problem reported by its line number.

The file has a header row, a time column (found by name or content, or named with ``time_col``;
``time_col='none'`` uses row order), a target column and optionally other numeric columns used as
past covariates. Problems — unreadable times, duplicate timestamps, timestamps off the frequency
grid, gaps, missing and non-numeric values — are collected and raised as one UserError naming the
lines. With ``fill`` ('interpolate' or 'ffill') gaps, missing and non-numeric values are filled
instead (noted in ``Series.notes``); duplicates and off-grid timestamps are always errors, since no
fill can say which row is right.
"""
from __future__ import annotations

import csv
import difflib
import math
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from deepskeptic.data.series_base import (INTEGER_TIME_REASON, Series, default_horizon, fill_missing, format_time,
                                          seasons_of)
from deepskeptic.errors import UserError

MISSING = {"", "na", "nan", "null", "none", "n/a", "#n/a", "missing", "."}
TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "period", "year", "month", "week", "day", "t", "step")
_QUARTER = re.compile(r"^(\d{4})[-\s]?Q([1-4])$", re.IGNORECASE)
_INTEGER = re.compile(r"^[+-]?\d+$")
SHOWN = 5  # examples named per kind of problem; the rest are counted


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:SHOWN])
    return shown + (f" and {len(numbers) - SHOWN} more" if len(numbers) > SHOWN else "")


def _read_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) per non-empty data row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as a UTF-8 CSV file") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(text.splitlines(), dialect)
    header, rows = None, []
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() or f"column {i + 1}" for i, c in enumerate(cells)]
            header_line = reader.line_num
            continue
        if len(cells) != len(header):
            raise UserError(f"{path}: line {reader.line_num} has {len(cells)} fields but the header "
                            f"(line {header_line}) has {len(header)}; fix that row")
        rows.append((reader.line_num, [c.strip() for c in cells]))
    if header is None:
        raise UserError(f"{path} is empty; give a CSV file with a header row and one row per time step")
    duplicated = [name for name, n in Counter(header).items() if n > 1]
    if duplicated:
        raise UserError(f"{path}: column name {duplicated[0]!r} appears twice in the header; rename one")
    if len(rows) < 3:
        raise UserError(f"{path} has {len(rows)} data row(s); a series needs many more")
    return header, rows


def _unknown_column(path: Path, role: str, name: str, valid: list[str]) -> UserError:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    return UserError(f"{path} has no {role} column {name!r}: {suggestion}its columns are {', '.join(valid)}")


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_numeric_column(cells: list[str]) -> bool:
    present = [c for c in cells if c.lower() not in MISSING]
    return bool(present) and sum(_number(c) is not None for c in present) >= len(present) / 2


def _parse_datetimes(cells: list[str]):
    """pandas DatetimeIndex (NaT where unreadable), naive; quarters like 1959Q1 understood."""
    import pandas as pd
    fixed = []
    for c in cells:
        m = _QUARTER.match(c)
        fixed.append(f"{m.group(1)}-{3 * int(m.group(2)) - 2:02d}-01" if m else c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(pd.Series(fixed), errors="coerce", format="ISO8601", utc=True)
        if parsed.isna().any():
            parsed = pd.to_datetime(pd.Series(fixed), errors="coerce", format="mixed", utc=True)
    return pd.DatetimeIndex(parsed).tz_localize(None)


def _time_column(path: Path, header: list[str], rows, time_col: str | None) -> str | None:
    if time_col is not None:
        if time_col.lower() == "none":
            return None
        if time_col not in header:
            raise _unknown_column(path, "time", time_col, header)
        return time_col
    for name in header:
        if name.lower() in TIME_NAMES:
            return name
    for i, name in enumerate(header):
        cells = [r[1][i] for r in rows[:50]]
        if all(not _INTEGER.match(c) and _number(c) is None for c in cells) and not _parse_datetimes(cells).isna().any():
            return name
    raise UserError(f"{path}: no time column found among {', '.join(header)}; name it with --time-col, "
                    f"or pass --time-col none to use row order")


def _freq_candidates(freq: str, first) -> list[str]:
    """The user's --freq, made concrete for pandas 3 ('M' -> 'MS' or 'ME', 'W' -> each weekday...)."""
    legacy = {"M": ["MS", "ME"], "Q": ["QS", "QE"], "Y": ["YS", "YE"], "A": ["YS", "YE"], "H": ["h"], "T": ["min"],
              "S": ["s"], "W": [f"W-{d}" for d in ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")]}
    base = legacy.get(freq.upper() if freq.upper() in ("M", "Q", "Y", "A", "W") else freq, [freq])
    month = first.strftime("%b").upper()
    out = []
    for f in base:
        out += [f, f"{f}-{month}"] if f[:1] in ("Q", "Y") and "-" not in f else [f]
    return out


def _on_grid(index, freq: str):
    """(boolean mask of timestamps on the grid from the first one, the grid) or None if invalid."""
    import pandas as pd
    try:
        grid = pd.date_range(index[0], index[-1], freq=freq)
    except (ValueError, TypeError):
        return None
    return index.isin(grid), grid


def _infer_freq(index) -> list[str]:
    """Candidate frequencies: what pandas infers on short runs of consecutive timestamps (most
    common first), then the usual calendar frequencies anchored on the first timestamp."""
    import pandas as pd
    counts: Counter = Counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in (5, 3):
            if len(index) < k:
                continue
            for i in np.unique(np.linspace(0, len(index) - k, num=min(200, len(index) - k + 1)).astype(int)):
                try:
                    f = pd.infer_freq(index[i:i + k])
                except (ValueError, TypeError):
                    f = None
                if f:
                    counts[f] += 1
    usual = [c for f in ("YS", "YE", "QS", "QE", "MS", "ME", "W", "D", "B", "h", "min", "s")
             for c in _freq_candidates(f, index[0])]
    return [f for f, _ in counts.most_common()] + [f for f in usual if f not in counts]


def read_series_csv(path: Path, *, target: str | None, time_col: str | None, freq: str | None,
                    fill: str | None, covariates: str | None) -> Series:
    header, rows = _read_rows(path)
    time_name = _time_column(path, header, rows, time_col)
    column = {name: [r[1][i] for r in rows] for i, name in enumerate(header)}
    lines = np.array([r[0] for r in rows])
    others = [h for h in header if h != time_name]
    numeric = [h for h in others if _is_numeric_column(column[h])]
    if target is None:
        if len(numeric) != 1:
            raise UserError(f"{path} has {len(numeric)} numeric columns ({', '.join(numeric) or 'none'}); "
                            f"choose the one to forecast with --target")
        target = numeric[0]
    elif target not in others:
        raise _unknown_column(path, "target", target, others)
    elif target not in numeric:
        bad = next((r, c) for r, c in zip(lines, column[target]) if c.lower() not in MISSING and _number(c) is None)
        raise UserError(f"{path}: column {target!r} is not numeric (e.g. {bad[1]!r} on line {bad[0]}); "
                        f"choose a numeric --target")
    if covariates in (None, "all"):
        cov_names = [h for h in numeric if h != target]
    elif covariates == "none":
        cov_names = []
    else:
        cov_names = [c.strip() for c in covariates.split(",") if c.strip()]
        for c in cov_names:
            if c not in others or c == target:
                valid = [h for h in others if h != target]
                if not valid:
                    raise UserError(f"{path} has no covariate column {c!r} (its columns: {', '.join(header)}); "
                                    f"give data with that column, or --covariates none")
                raise _unknown_column(path, "covariate", c, valid)
            if c not in numeric:
                raise UserError(f"{path}: covariate column {c!r} is not numeric; leave it out of --covariates")
    return series_from_cells(path, path.stem, str(path), lines, time_name, column, [target] + cov_names, freq, fill)


def series_from_cells(where, name: str, source: str, lines: np.ndarray, time_name: str | None,
                      column: dict[str, list[str]], names: list[str], freq: str | None, fill: str | None) -> Series:
    """One Series from the cells of its rows: ``column[c]`` holds column c's cell on each row, the
    row's line numbers ``lines``; ``names`` the target then the covariates; ``time_name`` the time
    column (None: row order). Every problem is reported after ``where`` (the file, or the file and
    the panel series the rows belong to), with its line numbers."""
    path, target, cov_names = where, names[0], names[1:]
    fixable: list[str] = []
    values = np.full((len(lines), len(names)), np.nan)
    for j, name_j in enumerate(names):
        missing, non_numeric = [], []
        for i, cell in enumerate(column[name_j]):
            if cell.lower() in MISSING:
                missing.append(int(lines[i]))
            elif (v := _number(cell)) is None:
                non_numeric.append((int(lines[i]), cell))
            else:
                values[i, j] = v
        if missing:
            fixable.append(f"{len(missing)} missing value(s) in column {name_j!r} on line(s) {_lines(missing)}")
        if non_numeric:
            fixable.append(f"{len(non_numeric)} non-numeric value(s) in column {name_j!r}: "
                           + ", ".join(f"{c!r} on line {n}" for n, c in non_numeric[:SHOWN])
                           + (f" and {len(non_numeric) - SHOWN} more" if len(non_numeric) > SHOWN else ""))

    # ---- the time axis
    notes: list[str] = []
    if time_name is None:
        times, integer_time = np.arange(len(lines)), True
    else:
        cells = column[time_name]
        integer_time = all(_INTEGER.match(c) for c in cells)
        if integer_time:
            times = np.array([int(c) for c in cells])
            if time_name.lower() == "year" and 1678 <= times.min() and times.max() <= 2261:  # pandas' range
                integer_time = False
                cells = [f"{t}-01-01" for t in times]
        if not integer_time:
            times = _parse_datetimes(cells)
            bad = [(int(n), c) for n, c, t in zip(lines, column[time_name], times) if t is None or t != t]
            if bad:
                raise UserError(f"{path}: unreadable time value(s) in column {time_name!r}: "
                                + ", ".join(f"{c!r} on line {n}" for n, c in bad[:SHOWN])
                                + "; use ISO dates like 2024-01-31, or name the time column with --time-col")
    order = np.argsort(np.asarray(times), kind="stable")
    if (order != np.arange(len(order))).any():
        notes.append("rows were not in time order; sorted by time")
    times = times[order] if integer_time else times[order]
    values, lines = values[order], lines[order]
    same = np.flatnonzero(np.asarray(times[1:] == times[:-1]))
    if len(same):
        shown = "; ".join(f"{_label(times[i], integer_time)} on lines {lines[i]} and {lines[i + 1]}" for i in same[:SHOWN])
        raise UserError(f"{path}: {len(same)} duplicate timestamp(s): {shown}; keep one row per time step")

    if integer_time:
        step, grid_positions = _integer_grid(path, times, freq)
        start, freq_name = int(times[0]), "step"
    else:
        step, start = 1, times[0]
        freq_name, grid_positions, grid = _datetime_grid(path, times, freq, lines)
    n_grid = int(grid_positions[-1]) + 1
    gaps = np.setdiff1d(np.arange(n_grid), grid_positions)
    if len(gaps):
        after = np.searchsorted(grid_positions, gaps)  # the row index that follows each gap
        shown = ", ".join(
            f"{_label(start + g * step, True) if integer_time else format_time(grid[g], freq_name)} "
            f"(between lines {lines[a - 1]} and {lines[a]})" for g, a in zip(gaps[:SHOWN], after[:SHOWN]))
        fixable.append(f"{len(gaps)} gap(s) in the {freq_name} time grid: {shown}"
                       + (f" and {len(gaps) - SHOWN} more" if len(gaps) > SHOWN else ""))
    if fixable and fill is None:
        raise UserError(f"{path}: " + "; ".join(fixable) + "; fix the file or pass --fill interpolate|ffill")
    full = np.full((n_grid, len(names)), np.nan)
    full[grid_positions] = values
    if fixable:
        full = fill_missing(full, fill)
        notes.append(f"filled ({fill}): " + "; ".join(fixable))
    if n_grid < 3:
        raise UserError(f"{path} has {n_grid} time steps; a series needs many more")
    seasons, reason = ((), INTEGER_TIME_REASON) if integer_time else seasons_of(freq_name)
    season = seasons[0] if seasons else 1
    return Series(name=name, source=source, target=target, values=full[:, 0],
                  covariates=full[:, 1:], covariate_names=cov_names, freq=freq_name, season=season,
                  horizon=default_horizon(season, None if integer_time else freq_name), start=start, step=step,
                  notes=notes, seasons=seasons, season_reason=reason)


def _label(t, integer_time: bool) -> str:
    if integer_time:
        return str(int(t))
    return str(t.date()) if t.hour == t.minute == t.second == 0 else str(t)


def _integer_grid(path: Path, times: np.ndarray, freq: str | None) -> tuple[int, np.ndarray]:
    diffs = np.diff(times)
    if freq is not None:
        if not _INTEGER.match(freq) or int(freq) < 1:
            raise UserError(f"--freq for an integer time column is a positive step like 1, got {freq!r}")
        step = int(freq)
    else:
        step = int(np.gcd.reduce(diffs))
    offsets = times - times[0]
    if (offsets % step).any():
        raise UserError(f"{path}: times are not multiples of --freq {step} apart; check the time column")
    return step, offsets // step


def _datetime_grid(path: Path, times, freq: str | None, lines: np.ndarray):
    """(frequency alias, grid position of every row, the grid); UserError if rows are off the grid."""
    candidates = _freq_candidates(freq, times[0]) if freq else _infer_freq(times)
    if not candidates:
        raise UserError(f"{path}: could not infer the frequency of the time column; pass --freq "
                        f"(for example D, W-SUN, MS, QS, YS, h)")
    sized = sorted((size, i, f) for i, f in enumerate(candidates) if (size := _grid_size(times, f)) is not None)
    if not sized:
        raise UserError(f"--freq {freq!r} is not a pandas frequency; use for example D, W-SUN, MS, QS, YS, h")
    valid = []
    for size, _, f in sized:  # the tightest grid that holds every row wins; far finer grids are never built
        if freq is None and size > 50 * len(times) + 1000:
            break
        result = _on_grid(times, f)
        if result is not None:
            valid.append((f, result))
            if result[0].all():
                mask, grid = result
                return f, grid.get_indexer(times), grid
    if not valid:
        raise UserError(f"{path}: could not infer the frequency of the time column; pass --freq "
                        f"(for example D, W-SUN, MS, QS, YS, h)")
    f, (mask, _) = next(((f, r) for f, r in valid if f == candidates[0]), valid[0])  # name the rows off it
    off = [(int(n), t) for n, t, ok in zip(lines, times, mask) if not ok]
    raise UserError(f"{path}: {len(off)} timestamp(s) are not on the {f} grid from {_label(times[0], False)}: "
                    + ", ".join(f"{_label(t, False)} on line {n}" for n, t in off[:SHOWN])
                    + "; pass the right --freq or fix those rows")


def _grid_size(times, freq: str) -> int | None:
    """About how many points a ``freq`` grid from the first to the last timestamp has (None: not a
    frequency pandas knows)."""
    from pandas.tseries.frequencies import to_offset
    try:
        offset = to_offset(freq)
        step = (times[0] + offset) - times[0]
    except (ValueError, TypeError):
        return None
    return int((times[-1] - times[0]) / step) + 1 if step.total_seconds() > 0 else None
