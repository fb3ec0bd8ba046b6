"""Reading time series: built-in sets, CSV time/target/covariate detection, frequencies, and every
data problem reported with its line number (or filled with --fill)."""
from __future__ import annotations

import numpy as np
import pytest

from deepskeptic.data.series import BUILTINS, load_series
from deepskeptic.errors import UserError


def write(tmp_path, text: str, name: str = "s.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def monthly(n: int = 6, start_month: int = 1) -> list[str]:
    return [f"2020-{m:02d}-01" for m in range(start_month, start_month + n)]


def test_builtin_sets_load_complete_and_regular():
    for name in ("nile", "elnino", "co2", "us-gdp"):
        s = load_series(name)
        assert len(s) > 90 and np.isfinite(s.values).all() and s.covariates.shape == (len(s), 0)
    elnino = load_series("elnino")
    assert len(elnino) == 61 * 12 and elnino.freq == "MS" and elnino.season == 12
    assert elnino.time_labels(0, 2) == ["1950-01", "1950-02"] and elnino.values[1] == pytest.approx(24.20)
    co2 = load_series("co2")
    assert any("filled" in n for n in co2.notes) and co2.season == 52
    gdp = load_series("us-gdp")
    assert gdp.time_labels(0, 2) == ["1959-01", "1959-04"] and gdp.time_labels(len(gdp), len(gdp) + 1) == ["2009-10"]
    assert set(BUILTINS) >= {"sunspots", "co2", "elec-equip", "nile", "elnino", "us-gdp"}


def test_builtin_rejects_csv_flags_and_unknown_names():
    with pytest.raises(UserError, match="only apply to CSV"):
        load_series("nile", target="volume")
    with pytest.raises(UserError, match="did you mean 'nile'"):
        load_series("nil")
    with pytest.raises(UserError, match="does not exist"):
        load_series("no/such.csv")


def test_time_column_detected_by_name_and_content(tmp_path):
    rows = "\n".join(f"{d},{i},{i * 2}" for i, d in enumerate(monthly()))
    s = load_series(write(tmp_path, "when,sales,price\n" + rows), target="sales")
    assert s.freq == "MS" and s.season == 12 and s.covariate_names == ["price"]
    np.testing.assert_array_equal(s.covariates[:, 0], np.arange(6) * 2)
    s = load_series(write(tmp_path, "sales,Date\n" + "\n".join(f"{i},{d}" for i, d in enumerate(monthly()))))
    assert s.target == "sales" and s.time_labels(0, 1) == ["2020-01"]
    s = load_series(write(tmp_path, "when,sales,price\n" + rows), target="sales", covariates="none")
    assert s.covariate_names == []


def test_time_col_flag_none_and_unknown(tmp_path):
    path = write(tmp_path, "a,b\n" + "\n".join(f"{i},{i * i}" for i in range(5)))
    with pytest.raises(UserError, match="no time column"):
        load_series(path, target="b")
    s = load_series(path, target="b", time_col="none")
    assert s.freq == "step" and s.covariate_names == ["a"]
    s = load_series(path, target="b", time_col="a")
    assert s.time_labels(0, 2) == ["0", "1"]
    with pytest.raises(UserError, match="no time column .bb.: did you mean .b."):
        load_series(path, time_col="bb")


def test_target_must_be_chosen_exist_and_be_numeric(tmp_path):
    rows = "\n".join(f"{d},{i},{i},shop" for i, d in enumerate(monthly()))
    path = write(tmp_path, "date,x,y,name\n" + rows)
    with pytest.raises(UserError, match="2 numeric columns.*--target"):
        load_series(path)
    with pytest.raises(UserError, match="no target column .z."):
        load_series(path, target="z")
    with pytest.raises(UserError, match="'name' is not numeric.*'shop' on line 2"):
        load_series(path, target="name")
    assert load_series(path, target="x").covariate_names == ["y"]  # the text column is no covariate


def test_duplicate_timestamps_name_their_lines(tmp_path):
    days = monthly(4) + ["2020-02-01"]
    path = write(tmp_path, "date,y\n" + "\n".join(f"{d},{i}" for i, d in enumerate(days)))
    with pytest.raises(UserError, match=r"duplicate timestamp.*2020-02-01 on lines 3 and 6"):
        load_series(path)
    with pytest.raises(UserError, match="duplicate"):  # no fill can choose between two rows
        load_series(path, fill="interpolate")


def test_gaps_missing_and_non_numeric_values_by_line(tmp_path):
    days = monthly(8)
    del days[3]  # 2020-04 missing: a gap between lines 4 and 5
    values = ["1", "2", "", "4", "abc", "6", "7"]
    path = write(tmp_path, "date,y\n" + "\n".join(f"{d},{v}" for d, v in zip(days, values)))
    with pytest.raises(UserError) as err:
        load_series(path)
    message = str(err.value)
    assert "missing value(s) in column 'y' on line(s) 4" in message
    assert "'abc' on line 6" in message
    assert "2020-04 (between lines 4 and 5)" in message and "--fill" in message and "\n" not in message
    s = load_series(path, fill="interpolate")  # on the full grid Jan..Aug: Mar missing, Apr a gap, Jun bad
    np.testing.assert_allclose(s.values, [1, 2, 2 + 2 / 3, 2 + 4 / 3, 4, 5, 6, 7])
    assert s.notes and "interpolate" in s.notes[0]
    np.testing.assert_allclose(load_series(path, fill="ffill").values, [1, 2, 2, 2, 4, 4, 6, 7])


def test_frequency_inferred_with_gaps_given_and_wrong(tmp_path):
    weeks = ["2021-01-02", "2021-01-09", "2021-01-16", "2021-01-30", "2021-02-06", "2021-02-13"]  # Saturdays
    path = write(tmp_path, "date,y\n" + "\n".join(f"{d},{i}" for i, d in enumerate(weeks)))
    s = load_series(path, fill="ffill")
    assert s.freq == "W-SAT" and len(s) == 7 and s.season == 52
    assert load_series(path, fill="ffill", freq="W").freq == "W-SAT"  # 'W' made concrete by its anchor
    with pytest.raises(UserError, match="not on the D grid|gap"):
        load_series(path, freq="D")
    with pytest.raises(UserError, match="not a pandas frequency"):
        load_series(path, freq="fortnightly")
    quarters = write(tmp_path, "period,y\n" + "\n".join(f"2019Q{q},{q}" for q in range(1, 5)), "q.csv")
    assert load_series(quarters).season == 4


def test_unsorted_rows_are_sorted_and_integer_time_steps(tmp_path):
    path = write(tmp_path, "date,y\n2020-03-01,3\n2020-01-01,1\n2020-02-01,2\n2020-04-01,4\n")
    s = load_series(path)
    np.testing.assert_array_equal(s.values, [1, 2, 3, 4])
    assert any("sorted" in n for n in s.notes)
    s = load_series(write(tmp_path, "t,y\n0,5\n2,6\n4,7\n8,9\n", "i.csv"), fill="interpolate")
    assert s.step == 2 and len(s) == 5 and s.values[3] == 8 and s.time_labels(5, 6) == ["10"]
    years = load_series(write(tmp_path, "year,y\n1990,1\n1991,2\n1992,3\n", "y.csv"))
    assert years.season == 1 and years.time_labels(3, 4) == ["1993"]


def test_malformed_files(tmp_path):
    with pytest.raises(UserError, match="line 3 has 3 fields"):
        load_series(write(tmp_path, "date,y\n2020-01-01,1\n2020-02-01,2,9\n2020-03-01,3\n"))
    with pytest.raises(UserError, match="empty"):
        load_series(write(tmp_path, "", "e.csv"))
    with pytest.raises(UserError, match="unreadable time.*'soon' on line 3"):
        load_series(write(tmp_path, "date,y\n2020-01-01,1\nsoon,2\n2020-03-01,3\n", "u.csv"))


def test_season_and_horizon_follow_the_frequency(tmp_path):
    """Sub-daily data repeats by the day (half-hourly 48, not 60), quarterly data is forecast 8
    steps (two years, as in M4), and every series says why its season is what it is."""
    import pandas as pd

    def stamped(freq: str, n: int = 10) -> str:
        times = pd.date_range("2024-01-01", periods=n, freq=freq)
        return write(tmp_path, "time,y\n" + "\n".join(f"{t:%Y-%m-%d %H:%M:%S},{i}" for i, t in enumerate(times)),
                     f"{freq}.csv")

    half = load_series(stamped("30min"))
    assert (half.freq, half.season, half.seasons, half.horizon) == ("30min", 48, (48, 336), 8)
    assert "48 steps a day" in half.season_reason
    assert (load_series(stamped("2h")).season, load_series(stamped("h")).horizon) == (12, 24)
    quarters = load_series(write(tmp_path, "period,y\n" + "\n".join(f"2019Q{q},{q}" for q in range(1, 5)), "q.csv"))
    assert (quarters.season, quarters.horizon, quarters.season_reason) == (4, 8, "quarterly data: 4 quarters a year")
    days = load_series(stamped("D"))
    assert (days.season, days.seasons, days.horizon) == (7, (7, 365), 7)
    steps = load_series(write(tmp_path, "t,y\n" + "\n".join(f"{i},{i}" for i in range(5)), "i.csv"))
    assert steps.season == 1 and "no season" in steps.season_reason
    # the built-in sets keep their seasons and horizons, now with their reasons
    for name, season, horizon, reason in (("sunspots", 11, 11, "solar cycle"), ("us-gdp", 4, 8, "quarterly"),
                                          ("co2", 52, 13, "weekly"), ("nile", 1, 10, "yearly")):
        s = load_series(name)
        assert (s.season, s.horizon) == (season, horizon) and reason in s.season_reason, name


def test_too_short_names_the_length_that_would_do():
    """The count in "needs at least N" is the fewest points the same settings accept (the lookback
    and validation origins grow with the series): one more than that message's N is never needed."""
    import pytest
    from deepskeptic.errors import UserError
    from deepskeptic.tasks.forecast.data import plan
    with pytest.raises(UserError, match=r"has 30 points.*needs at least 34\)"):
        plan(30, 6, 1, 12, None, None, "x")
    plan(34, 6, 1, 12, None, None, "x")
    with pytest.raises(UserError):
        plan(33, 6, 1, 12, None, None, "x")


def test_a_fifo_or_folder_as_series_data_is_one_line(tmp_path, capsys):
    import os
    from cli_helpers import user_error
    os.mkfifo(tmp_path / "series.csv")          # reading it would wait for a writer forever
    user_error(capsys, "train", "forecast", "--data", tmp_path / "series.csv", "--model", "naive",
               match=r"data file .*series.csv is a FIFO \(named pipe\); give a regular file")
    user_error(capsys, "train", "forecast", "--data", tmp_path, "--model", "naive",
               match=r"is a folder; give a regular file")
