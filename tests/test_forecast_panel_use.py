"""Using a run trained on a panel: predict, evaluate, explain and export read a long table of the
run's series (a CSV file or a pandas DataFrame) and carry the series id; a series embedding is
recorded and used by predict; bad inputs (unknown ids, short histories, missing columns) and
series that would overflow give one line; a constant series trains."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import deepskeptic
from deepskeptic.cli import main
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast.backtest import evaluate_backtest
from deepskeptic.tasks.forecast.data import prepare
from deepskeptic.tasks.forecast.predict import load_model, prepared_for_run
from cli_helpers import cli, user_error
from test_forecast_panel import month, write_long

pytestmark = pytest.mark.usefixtures("in_tmp")
EMBEDDED = "[model]\nhidden = 8\nmembers = 2\nseries_embedding = 2\n"
FLAGS = ["--horizon", 3, "--origins", 3, "--lookback", 12, "--no-progress"]


def train(data: Path, model: str, out: Path, *extra) -> Path:
    assert main([str(a) for a in ["train", "forecast", "--data", data, "--model", model, "--epochs", 2, "--out", out,
                                  *FLAGS, *extra]]) == 0
    return out


def write_rows(path: Path, rows: dict[str, list[float]], start: int = 0) -> Path:
    """A long file (unique_id, ds, y): each series' values from month ``start`` on."""
    lines = ["unique_id,ds,y"] + [f"{name},{month(start + i)},{v}" for name, values in rows.items()
                                  for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def panel(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("panel-use")
    (root / "embedded.toml").write_text(EMBEDDED)
    data = write_long(root / "long.csv")
    return {"root": root, "data": data,
            "lstm": train(data, "lstm", root / "lstm", "--config", root / "embedded.toml"),
            "theta": train(data, "theta", root / "theta")}


def bt_futures(run: Path) -> dict[str, list[float]]:
    bt = json.loads((run / "backtest.json").read_text())
    return dict(zip(bt["names"], (r["future"] for r in bt["series"])))


# ------------------------------------------------------------------ predict

@pytest.mark.parametrize("model", ["lstm", "theta"])
def test_predict_forecasts_every_series_with_its_id(capsys, panel, model, tmp_path):
    run = panel[model]
    rc, out, err = cli(capsys, "predict", run, "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert [(r["series"], r["time"]) for r in rows] == [(s, t) for s in "abc" for t in ("2006-01", "2006-02", "2006-03")]
    for name, future in bt_futures(run).items():            # the forecast past the end training wrote
        assert [r["forecast"] for r in rows if r["series"] == name] == pytest.approx(future, rel=1e-9)
    written = list(csv.DictReader((run / "forecast.csv").open()))
    assert list(written[0]) == ["series", "time", "forecast", "lower_80", "upper_80", "lower_95", "upper_95"]
    assert [r["series"] for r in written] == [r["series"] for r in rows]
    # a subset of the series, with a longer history: forecast from its own end
    values = np.array([float(r[2]) for r in csv.reader(panel["data"].open()) if r[0] == "b"])
    longer = write_rows(tmp_path / "b.csv", {"b": list(values) + [values[-1] + 1.0, values[-1] + 2.0]})
    rc, out, err = cli(capsys, "predict", run, "--data", longer, "--json", "--out", tmp_path / "b-forecast.csv")
    assert rc == 0, err
    printed = json.loads(out)
    assert [(r["series"], r["time"]) for r in printed] == [("b", "2006-03"), ("b", "2006-04"), ("b", "2006-05")]
    # the Python API on the same rows, as a DataFrame or the path, gives what --json prints
    import pandas as pd
    frame = pd.read_csv(longer)
    loaded = deepskeptic.load(run)
    assert loaded.predict(frame) == printed and loaded.predict(str(longer)) == printed
    assert loaded.predict(frame.set_index("ds")) == printed       # the time as the index


@pytest.mark.parametrize("rows,start,match", [
    ({"a": [1.0] * 30, "zz": [1.0] * 30}, 42, r"series 'zz' not among the 3 series run .* \('a', 'b', 'c'\)"),
    ({"b": [5.0, 6.0, 7.0, 6.0, 5.0]}, 67, r"series 'b' has 5 points; this run needs at least 12 \(its lookback\)"),
])
def test_predict_refuses_unknown_ids_and_short_histories(capsys, panel, tmp_path, rows, start, match):
    data = write_rows(tmp_path / "bad.csv", rows, start)
    user_error(capsys, "predict", panel["lstm"], "--data", data, match=match)
    with pytest.raises(UserError, match=match):
        deepskeptic.load(panel["lstm"]).predict(str(data))


def test_predict_names_missing_columns(capsys, panel, tmp_path):
    import pandas as pd
    wide = tmp_path / "wide.csv"
    wide.write_text("ds,a\n" + "".join(f"{month(i)},{i}\n" for i in range(30)))
    user_error(capsys, "predict", panel["lstm"], "--data", wide, match="no id column 'unique_id'")
    user_error(capsys, "predict", panel["lstm"], "--data", "nile", match="nile is a single series.*unique_id")
    frame = pd.read_csv(panel["data"])
    run = deepskeptic.load(panel["theta"])
    with pytest.raises(UserError, match="no series id column 'unique_id'"):
        run.predict(frame.drop(columns="unique_id"))
    with pytest.raises(UserError, match="no target column 'y'"):
        run.predict(frame.drop(columns="y"))
    with pytest.raises(UserError, match="the table \\(series 'a'\\): 1 duplicate timestamp"):
        run.predict(pd.concat([frame, frame.iloc[:1]]))
    with pytest.raises(UserError, match="a panel run forecasts from a long table"):
        run.predict(np.arange(30.0))


# ------------------------------------------------------------------ evaluate, explain, export

@pytest.mark.parametrize("model", ["lstm", "theta"])
def test_evaluate_recomputes_the_panel_backtest(capsys, panel, model, tmp_path):
    run = panel[model]
    rc, out, err = cli(capsys, "evaluate", run)
    assert rc == 0, err
    again, trained = json.loads(out), Run(run).metrics
    for key in ("test_mase", "test_smape", "test_owa", "series"):
        assert again[key] == pytest.approx(trained[key], rel=1e-9), key
    assert again["per_series"].keys() == trained["per_series"].keys()
    for name, metrics in trained["per_series"].items():
        assert again["per_series"][name] == pytest.approx(metrics), name
    # one series of the panel alone: its own metrics, as in training
    b = [r for r in csv.reader(panel["data"].open()) if r[0] == "b"]
    only_b = write_rows(tmp_path / "b.csv", {"b": [float(r[2]) for r in b]})
    alone = deepskeptic.load(run).evaluate(str(only_b))
    assert alone["series"] == 1 and alone["per_series"]["b"] == pytest.approx(trained["per_series"]["b"])
    short = write_rows(tmp_path / "short.csv", {"b": [float(r[2]) for r in b][-10:]}, 62)
    user_error(capsys, "evaluate", run, "--data", short, match="series 'b' has 10 points, too short")


def test_explain_shows_the_gates_of_the_series_named(capsys, panel, tmp_path):
    run = panel["lstm"]
    rc, out, err = cli(capsys, "explain", run, "b", "--cells", "0,1", "--out", tmp_path / "ex")
    assert rc == 0, err
    assert out.startswith("series 'b': LSTM layer 2")
    gates = json.loads((tmp_path / "ex" / "lstm-gates.json").read_text())
    folder = Run.open(run)
    model, prepared = load_model(folder, torch.device("cpu")), prepared_for_run(folder, "b")
    assert prepared.series.name == "b" and prepared.series_index == 1
    x = model.member_input(0, model.core_input(torch.from_numpy(prepared.scaled()[-12:]).float()[None]),
                           torch.tensor([1]))                   # b's values, scaled by b's scaler, b's vector
    with torch.no_grad():
        hidden = model.members[0].rnn(x)[0][0]                  # (L, hidden)
    np.testing.assert_allclose(gates["hidden"], hidden.numpy()[:, [0, 1]], atol=1e-5)
    user_error(capsys, "explain", run, "zz", match=r"series 'zz' is not one of the 3 series")
    explained = deepskeptic.load(run).predictor.explain("c", cells=[0])
    assert explained["series"] == "c" and explained["units"] == [0] and len(explained["window"]) == 12


def test_export_takes_the_series_and_forecasts_what_predict_does(capsys, panel, tmp_path):
    import onnxruntime
    run = panel["lstm"]
    rc, out, err = cli(capsys, "export", run, "--out", tmp_path / "export")
    assert rc == 0, err
    sidecar = json.loads((tmp_path / "export" / "model.json").read_text())
    assert sidecar["series"] == ["a", "b", "c"] and sidecar["series_embedding"] == 2
    assert [i["name"] for i in sidecar["inputs"]] == ["window", "series"]
    session = onnxruntime.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    rows = [r for r in csv.reader(panel["data"].open())][1:]
    windows = np.stack([np.array([float(r[2]) for r in rows if r[0] == name])[-12:, None] for name in "abc"])
    (forecast,) = session.run(None, {"window": windows, "series": np.arange(3, dtype=np.int64)})
    futures = bt_futures(run)
    np.testing.assert_allclose(forecast, [futures[name] for name in "abc"], rtol=1e-6)


# ------------------------------------------------------------------ the series embedding

def test_series_embedding_is_recorded_and_predict_uses_each_series_row(capsys, panel, tmp_path):
    folder = Run.open(panel["lstm"])
    config = folder.config["model_config"]
    assert config["series_embedding"] == 2 and config["series_count"] == 3
    assert folder.config["data_info"]["series"] == ["a", "b", "c"]     # row i is the i-th series
    model = load_model(folder, torch.device("cpu"))
    assert [tuple(e.weight.shape) for e in model.embeddings] == [(3, 2), (3, 2)]
    predictor = deepskeptic.load(panel["lstm"]).predictor
    before = predictor.predict(str(panel["data"]))
    with torch.no_grad():
        for table in predictor.model.embeddings:                   # b's vector changed, a's and c's not
            table.weight[1] += 1.0
    after = predictor.predict(str(panel["data"]))
    for old, new in zip(before, after):
        assert (old["forecast"] == new["forecast"]) == (old["series"] != "b")
    with pytest.raises(ValueError, match="series embedding"):
        model(torch.zeros(2, 12, 1))                                # windows without their series
    series = tmp_path / "one.csv"
    series.write_text("month,y\n" + "".join(f"{month(i)},{10 + i % 12}\n" for i in range(60)))
    (tmp_path / "e.toml").write_text(EMBEDDED)
    user_error(capsys, "train", "forecast", "--data", series, "--model", "mlp", "--config", tmp_path / "e.toml",
               *FLAGS, match="series_embedding gives each series of a panel")


# ------------------------------------------------------------------ values that lie

def monthly(path: Path, values) -> Path:
    path.write_text("month,y\n" + "".join(f"{month(i)},{float(v)!r}\n" for i, v in enumerate(values)))
    return path


@pytest.mark.parametrize("case", ["one 1e308", "differences overflow", "1e200"])
def test_values_that_would_overflow_are_one_line(capsys, tmp_path, case):
    t = np.arange(60)
    base = 50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12)
    values = {"one 1e308": np.where(t == 40, 1e308, base), "differences overflow": np.where(t % 2, 1e308, -1e308),
              "1e200": base * 1e200}[case]
    data = monthly(tmp_path / "big.csv", values)
    for model in ("naive", "mlp"):
        user_error(capsys, "train", "forecast", "--data", data, "--model", model, "--epochs", 1, "--out",
                   tmp_path / model, *FLAGS, match=r"series big holds .* beyond \+-1e\+150.*rescale it")
        assert not (tmp_path / model / "metrics.json").exists()
    long = tmp_path / "panel.csv"                                    # in a panel: the series is named
    long.write_text("unique_id,ds,y\n" + "".join(f"{name},{month(i)},{float(v)!r}\n"
                                                 for name, vs in (("ok", base), ("huge", values))
                                                 for i, v in enumerate(vs)))
    user_error(capsys, "train", "forecast", "--data", long, "--model", "naive", *FLAGS, match="series huge holds")


def test_a_constant_series_trains_with_finite_metrics(tmp_path):
    data = monthly(tmp_path / "flat.csv", np.full(60, 7.0))
    (tmp_path / "s.toml").write_text("[model]\nhidden = 8\nmembers = 2\n")
    for model in ("naive2", "auto-ets", "mlp"):
        train(data, model, tmp_path / model, *(["--config", tmp_path / "s.toml"] if model == "mlp" else []))
        m = Run(tmp_path / model).metrics
        assert all(np.isfinite(m[k]) for k in ("test_mase", "test_smape", "test_mae", "test_rmse")), model
        assert m["test_owa"] is None                                 # Naive2 is perfect: OWA is undefined
    flat = write_long(tmp_path / "long.csv")                         # a constant series among others
    text = flat.read_text().splitlines()
    flat.write_text("\n".join([line for line in text if not line.startswith("c,")]
                              + [f"c,{month(i)},7.0,1" for i in range(72)]) + "\n")
    m = json.loads((train(flat, "auto-ets", tmp_path / "panel") / "metrics.json").read_text())
    assert m["per_series"]["c"]["mase"] == 0 and m["per_series"]["c"]["owa"] is None
    assert np.isfinite(m["test_owa"]) and np.isfinite(m["test_mase"])


def test_forecasts_that_are_not_finite_stop_the_run_with_one_line(tmp_path):
    p = prepare({"data": str(monthly(tmp_path / "s.csv", 10 + np.arange(60) % 12)), "horizon": 3, "origins": 3})
    origins = p.split.test_origins()
    forecasts = np.ones((3, 3))
    forecasts[1, 2] = np.inf
    with pytest.raises(UserError, match="forecast made at 2004-09 for series s is not a finite number"):
        evaluate_backtest(p, origins, forecasts)
