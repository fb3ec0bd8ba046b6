"""Panels: long and wide CSV files parsed (unequal lengths and starts, Nixtla's names), bad files
named by line; each series scaled by its own past only; a global network that never looks past an
origin in any series; per-series and aggregate MASE, sMAPE and OWA; the CLI end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepskeptic.cli import main
from deepskeptic.data.panel import load_panel, wants_panel
from deepskeptic.errors import UserError
from deepskeptic.tasks.forecast.data import prepare
from deepskeptic.tasks.forecast.m4 import naive2, owa
from cli_helpers import cli, user_error

pytestmark = pytest.mark.usefixtures("in_tmp")
SMALL = "[model]\nhidden = 8\nmembers = 2\n"
SCALES = {"a": 10.0, "b": 1000.0, "c": 1.0}     # very different levels: each series needs its own scaler
STARTS = {"a": 0, "b": 0, "c": 12}              # c starts a year later: 60 months, the others 72


def month(i: int) -> str:
    return f"{2000 + i // 12}-{i % 12 + 1:02d}-01"


def series_values(name: str, n: int = 72) -> np.ndarray:
    rng = np.random.default_rng(ord(name))
    t = np.arange(n)
    return SCALES[name] * (5 + 0.05 * t + np.sin(2 * np.pi * t / 12) + rng.normal(0, 0.1, n))


def write_long(path: Path, changed: dict[str, tuple[int, float]] | None = None, nixtla: bool = True,
               extra_rows: list[str] = ()) -> Path:
    """A long panel: unique_id, ds, y (or store, month, sales), one row per series and month;
    ``changed[name] = (from month, add)`` shifts that series from that calendar month on."""
    lines = ["unique_id,ds,y,price" if nixtla else "store,month,sales"]
    for name in SCALES:
        values = series_values(name)
        if changed and name in changed:
            values[changed[name][0]:] += changed[name][1]
        for i in range(STARTS[name], 72):
            lines.append(f"{name},{month(i)},{values[i]:.4f}" + (",1" if nixtla else ""))
    path.write_text("\n".join(lines + list(extra_rows)) + "\n")
    return path


def train(data: Path, model: str, out: Path, *extra) -> dict:
    args = ["train", "forecast", "--data", data, "--model", model, "--horizon", 3, "--origins", 3, "--lookback", 12,
            "--epochs", 2, "--out", out, "--no-progress", *extra]
    assert main([str(a) for a in args]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("panel") / "small.toml"
    path.write_text(SMALL)
    return path


# ------------------------------------------------------------------ reading

def test_long_panel_with_nixtla_names_unequal_lengths_and_starts(tmp_path):
    path = write_long(tmp_path / "long.csv")
    assert wants_panel(str(path), id_col=None, target=None)           # unique_id in the header
    panel = load_panel(str(path))
    assert panel.names == ["a", "b", "c"] and panel.freq == "MS" and panel.season == 12
    assert [len(s) for s in panel.series] == [72, 72, 60]
    assert panel.series[2].time_labels(0, 1) == ["2001-01"]
    np.testing.assert_allclose(panel.series[1].values, series_values("b"), atol=1e-4)
    assert any("price" in note for note in panel.notes)              # other columns: not used, and said
    named = write_long(tmp_path / "named.csv", nixtla=False)
    assert not wants_panel(str(named), id_col=None, target=None)
    panel = load_panel(str(named), id_col="store", target="sales")
    assert panel.names == ["a", "b", "c"] and len(panel.series[2]) == 60


def test_wide_panel_blanks_before_a_series_are_a_later_start(tmp_path):
    rows = ["month,a,b,c"] + [f"{month(i)},{i + 1},{2 * i + 1},{'' if i < 4 else 3 * i}" for i in range(12)]
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(rows) + "\n")
    assert wants_panel(str(path), id_col=None, target="all")
    panel = load_panel(str(path), target="all")
    assert panel.names == ["a", "b", "c"] and [len(s) for s in panel.series] == [12, 12, 8]
    assert panel.series[2].time_labels(0, 1) == ["2000-05"] and panel.series[2].values[0] == 12
    assert load_panel(str(path), target="b,a").names == ["b", "a"]
    with pytest.raises(UserError, match="no series column 'd'"):
        load_panel(str(path), target="a,d")


def test_bad_panels_name_their_lines_and_series(tmp_path):
    dup = write_long(tmp_path / "dup.csv", extra_rows=[f"b,{month(5)},1.0,1"])
    with pytest.raises(UserError, match=r"series 'b'.*duplicate timestamp.*2000-06-01 on lines 79 and 206"):
        load_panel(str(dup))
    blank = write_long(tmp_path / "blank.csv", extra_rows=[f",{month(80)},1.0,1"])
    with pytest.raises(UserError, match=r"row\(s\) without a series id in column 'unique_id' on line\(s\) 206"):
        load_panel(str(blank))
    rows = ["unique_id,ds,y"] + [f"a,{month(i)},{i}" for i in range(12) if i != 5] + [f"b,{month(i)},{i}" for i in range(12)]
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"\(series 'a'\).*gap.*2000-06 \(between lines 6 and 7\).*--fill"):
        load_panel(str(gap))
    assert len(load_panel(str(gap), fill="interpolate").series[0]) == 12
    short = tmp_path / "short.csv"
    short.write_text("\n".join(["unique_id,ds,y"] + [f"a,{month(i)},{i}" for i in range(12)]
                               + [f"b,{month(i)},{i}" for i in range(10)]) + "\n")
    with pytest.raises(UserError, match="series 'b' ends at 2000-10, before the panel's last time 2000-12"):
        load_panel(str(short))
    with pytest.raises(UserError, match="no id column 'shop'"):
        load_panel(str(gap), id_col="shop")


def test_built_in_panels_load_offline():
    macro = load_panel("us-macro")
    assert len(macro) == 10 and {len(s) for s in macro.series} == {203} and macro.horizon == 8
    assert all((s.values > 0).all() for s in macro.series)            # sMAPE and OWA need positive series
    assert "realgdp" in macro.names and "unemp" in macro.names
    fertility = load_panel("fertility")
    assert len(fertility) > 150 and fertility.freq == "YS-JAN" and fertility.horizon == 6
    assert fertility.notes and "left out" in fertility.notes[0]
    # every country long enough for the default backtest (12 origins, horizon 6): it trains as is
    assert min(len(s) for s in fertility.series) >= 40 and "Liechtenstein" not in fertility.names
    with pytest.raises(UserError, match="only apply to CSV"):
        load_panel("us-macro", target="all")


def test_each_series_is_scaled_by_its_own_training_span(tmp_path):
    p = prepare({"data": str(write_long(tmp_path / "long.csv")), "horizon": 3, "origins": 3, "lookback": 12})
    changed = prepare({"data": str(write_long(tmp_path / "changed.csv", changed={"b": (61, 1e6)})),
                       "horizon": 3, "origins": 3, "lookback": 12})
    assert [m.split.train_end for m in p.members] == [61, 61, 49]    # the same calendar month: 2005-02
    for member, again in zip(p.members, changed.members):
        values = member.series.values[:member.split.train_end]
        np.testing.assert_allclose(member.mean, [values.mean()])
        np.testing.assert_allclose(member.std, [values.std()])
        np.testing.assert_array_equal(member.mean, again.mean)       # its values after the span change nothing
    assert p.members[1].mean[0] > 50 * p.members[0].mean[0]


# ------------------------------------------------------------------ training and evaluating

@pytest.mark.parametrize("embedding", [0, 2])
def test_global_network_never_looks_past_an_origin_in_any_series(tmp_path, small, embedding):
    """Origins are months 67, 68, 69 of every series (c's 55, 56, 57); changing series b from month
    68 on must leave every series' forecasts made at 67 and 68 unchanged (with a series embedding
    too: its vectors learn from the training windows only)."""
    config = tmp_path / "config.toml"
    config.write_text(small.read_text() + f"series_embedding = {embedding}\n")
    forecasts = []
    for name, change in (("same", None), ("changed", {"b": (68, 500.0)})):
        data = write_long(tmp_path / f"{name}.csv", changed=change)
        metrics = train(data, "mlp", tmp_path / name, "--config", config)
        bt = json.loads((tmp_path / name / "backtest.json").read_text())
        assert bt["names"] == ["a", "b", "c"] and metrics["series"] == 3
        assert [r["origin_labels"] for r in bt["series"]] == [["2005-08", "2005-09", "2005-10"]] * 3
        forecasts.append(np.array([r["forecasts"] for r in bt["series"]]))     # (S, K, H)
    np.testing.assert_array_equal(forecasts[0][:, :2], forecasts[1][:, :2])
    assert not np.array_equal(forecasts[0][1, 2], forecasts[1][1, 2])          # b's last origin sees the change


def test_per_series_and_aggregate_metrics_and_baselines_per_series(tmp_path):
    data = write_long(tmp_path / "long.csv")
    metrics = train(data, "naive2", tmp_path / "naive2")
    bt = json.loads((tmp_path / "naive2" / "backtest.json").read_text())
    panel = load_panel(str(data))
    for s, record in zip(panel.series, bt["series"]):                # each series fitted on its own past
        origins = np.array(record["origins"])
        np.testing.assert_allclose(record["forecasts"], [naive2(s.values[:o], 3, 12) for o in origins])
    per = metrics["per_series"]
    assert set(per) == {"a", "b", "c"} and all(m["owa"] == pytest.approx(1) for m in per.values())
    theta = train(data, "auto-theta", tmp_path / "theta", "--fit-jobs", 2)      # the series in two processes
    per = theta["per_series"]
    assert theta["test_mase"] == pytest.approx(np.mean([m["mase"] for m in per.values()]))
    assert theta["test_smape"] == pytest.approx(np.mean([m["smape"] for m in per.values()]))
    assert theta["test_owa"] == pytest.approx(owa(np.mean([m["smape"] for m in per.values()]),
                                                  np.mean([m["mase"] for m in per.values()]),
                                                  np.mean([m["naive2_smape"] for m in per.values()]),
                                                  np.mean([m["naive2_mase"] for m in per.values()])))
    assert sum(theta["form"]["chosen"].values()) == 9                # 3 series x 3 origins, one selection each


def test_compare_on_a_panel_end_to_end(capsys, tmp_path):
    data = write_long(tmp_path / "long.csv")
    out = tmp_path / "cmp"
    rc, printed, err = cli(capsys, "compare", "forecast", "--data", data, "--models", "naive2,seasonal-naive,mlp",
                           "--seeds", 2, "--epochs", 2, "--horizon", 3, "--origins", 3, "--lookback", 12,
                           "--out", out, "--no-progress")        # default sizes: [model] would reach the baselines
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["models"]["mlp"]["runs"]) == 2 and summary["verdicts"][0].startswith("mlp")
    for model, s in summary["models"].items():          # M4's yardsticks next to MASE, over the seeds
        runs = [json.loads((Path(r) / "metrics.json").read_text()) for r in s["runs"]]
        for key in ("test_smape", "test_owa"):
            assert s[f"{key}_values"] == [m[key] for m in runs]
            assert s[f"{key}_mean"] == pytest.approx(np.mean([m[key] for m in runs]))
    assert summary["models"]["naive2"]["test_owa_mean"] == pytest.approx(1)      # Naive2 against itself
    assert summary["models"]["mlp"]["test_owa_std"] == pytest.approx(np.std(summary["models"]["mlp"]["test_owa_values"],
                                                                            ddof=1))
    html = (out / "report.html").read_text()
    assert "Per series: the networks against" in html and "OWA" in html
    assert "Verdicts by OWA and sMAPE" in html and "mlp against naive2 (the best statistical baseline): OWA" in html \
        or "mlp against seasonal-naive (the best statistical baseline): OWA" in html
    run_report = (out / "mlp-seed0" / "report.html").read_text()
    assert "Per series" in run_report and "validation MASE (mean over the series)" in run_report


def test_api_comparison_table_carries_every_summary_metric(tmp_path):
    """deepskeptic.compare on a panel: table() has MASE (mean, std) and M4's sMAPE and OWA as
    <metric>_mean and _std, each the summary's mean and std over the seeds."""
    import deepskeptic
    cmp = deepskeptic.compare("forecast", data=str(write_long(tmp_path / "long.csv")),
                              models=["naive2", "seasonal-naive", "mlp"], seeds=2, epochs=2, horizon=3, origins=3,
                              lookback=12, out=tmp_path / "cmp", progress=False)
    table = cmp.table().set_index("model")
    assert list(table.index) == ["naive2", "seasonal-naive", "mlp"]
    assert {"mean", "std", "test_smape_mean", "test_smape_std", "test_owa_mean", "test_owa_std"} <= set(table.columns)
    assert (table["metric"] == "test_mase").all()
    for model, s in cmp.summary["models"].items():
        runs = [json.loads((Path(r) / "metrics.json").read_text()) for r in s["runs"]]
        for key, column in (("test_mase", ""), ("test_smape", "test_smape_"), ("test_owa", "test_owa_")):
            values = [m[key] for m in runs]
            assert table.loc[model, f"{column}mean"] == pytest.approx(np.mean(values))
            assert table.loc[model, f"{column}std"] == pytest.approx(np.std(values, ddof=1) if len(values) > 1 else 0)
    assert table.loc["naive2", "test_owa_mean"] == pytest.approx(1)        # Naive2 against itself
    assert table.loc["mlp", "test_owa_std"] > 0                             # two seeds of a network differ


@pytest.mark.parametrize("extra,match", [
    (["--id-col", "shop"], "no id column 'shop'"),
    (["--target", "sales"], "no target column 'sales'"),
    (["--covariates", "price"], "--covariates does not apply to a panel"),
    (["--lookback", "50"], r"the shortest series of the panel"),
])
def test_bad_panel_inputs_exit_2_with_one_line(capsys, tmp_path, extra, match):
    data = write_long(tmp_path / "long.csv")
    user_error(capsys, "train", "forecast", "--data", data, "--model", "naive", "--horizon", 3, "--origins", 3,
               "--no-progress", *extra, match=match)


def test_wide_panel_through_the_cli(tmp_path):
    """--target all reads every numeric column of a wide file as a series of the panel; the later
    start of c is blanks before its first value."""
    rows = ["month,a,b,c"]
    values = {name: series_values(name) for name in SCALES}
    for i in range(72):
        rows.append(",".join([month(i)] + [("" if i < STARTS[n] else f"{values[n][i]:.4f}") for n in SCALES]))
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(rows) + "\n")
    metrics = train(path, "seasonal-naive", tmp_path / "snaive", "--target", "all")
    assert set(metrics["per_series"]) == {"a", "b", "c"} and metrics["series"] == 3
    long = train(write_long(tmp_path / "long.csv"), "seasonal-naive", tmp_path / "snaive-long")
    for name, m in metrics["per_series"].items():                      # the same panel, either format
        assert m == pytest.approx(long["per_series"][name])
