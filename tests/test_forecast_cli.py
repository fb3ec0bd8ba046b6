"""The forecast task end to end through the CLI on tiny synthetic series: train, predict with
intervals, explain the LSTM gates, evaluate, compare with the verdict against the best statistical
baseline, exact resume, no look-ahead for the networks, and bad inputs -> exit 2 with one line."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepskeptic.cli import main
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast import ForecastTask
from deepskeptic.tasks.forecast.explain import lstm_gates
from deepskeptic.tasks.forecast.jobs import NetworkJob
from deepskeptic.tasks.forecast.predict import load_model, prepared_for_run
from deepskeptic.tasks.forecast.report import anchor_words
from cli_helpers import assert_ctrl_c_resume_is_exact, cli, user_error
from conftest import TIME_FIELDS, without_time

pytestmark = pytest.mark.usefixtures("in_tmp")
SMALL = "[model]\nhidden = 8\n"  # tiny networks: the tests check behaviour, not accuracy


def write_series(path: Path, n: int = 72, shift_from: int | None = None, covariate: bool = True) -> Path:
    """Monthly sales with trend and season, and a price covariate; +50 from index ``shift_from`` on."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    y = 50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
    if shift_from is not None:
        y[shift_from:] += 50
    months = [f"{2000 + i // 12}-{i % 12 + 1:02d}-01" for i in t]
    lines = ["month,sales" + (",price" if covariate else "")]
    lines += [f"{m},{v:.3f}" + (f",{10 + (i % 5)}" if covariate else "") for i, (m, v) in enumerate(zip(months, y))]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_args(data: Path, model: str, out: Path | None, config: Path, epochs: int = 2) -> list[str]:
    return [str(a) for a in ["train", "forecast", "--data", data, "--target", "sales", "--model", model,
                             "--horizon", 3, "--origins", 3, "--lookback", 12, "--epochs", epochs,
                             "--config", config, *(["--out", out] if out else []), "--no-progress"]]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("forecast")
    (root / "small.toml").write_text(SMALL)
    return {"root": root, "data": write_series(root / "sales.csv"), "config": root / "small.toml"}


@pytest.fixture(scope="module")
def lstm_run(files) -> Path:
    out = files["root"] / "lstm"
    assert main(train_args(files["data"], "lstm", out, files["config"])) == 0
    return out


def test_train_lstm_writes_a_complete_run(lstm_run):
    run = Run.open(lstm_run)
    m = run.metrics
    for key in ("test_mase", "test_smape", "test_mae", "test_rmse", "train_seconds", "params", "flops_per_example",
                "device", "seed", "epochs"):
        assert key in m, key
    assert m["epochs"] == 2 and m["horizon"] == 3 and m["origins"] == 3 and m["season"] == 12
    assert len(m["per_step"]["mase"]) == 3 and m["flops_per_example"] > 0
    bt = json.loads((lstm_run / "backtest.json").read_text())
    assert np.asarray(bt["forecasts"]).shape == (3, 3) and bt["origin_labels"] == ["2005-08", "2005-09", "2005-10"]
    assert run.config["data_info"]["covariates"] == ["price"] and run.config["model_config"]["input_size"] == 2
    assert "Forecasts against the actual values" in run.report_path.read_text()
    assert "gates and cell state" in run.report_path.read_text()
    mc = run.config["model_config"]                            # the sales series: a trend, not stationary
    assert mc["keep_level"] is False and 0 < mc["smoothing"] <= 1 and mc["season"] in (1, 12)
    assert f"The network corrects its anchor: {anchor_words(mc)}." in run.report_path.read_text()


def test_predict_writes_forecasts_with_intervals(capsys, lstm_run, files, tmp_path):
    rc, out, err = cli(capsys, "predict", lstm_run)
    assert rc == 0, err
    rows = list(csv.DictReader((lstm_run / "forecast.csv").open()))
    assert [r["time"] for r in rows] == ["2006-01", "2006-02", "2006-03"]
    for r in rows:
        assert float(r["lower_95"]) <= float(r["lower_80"]) <= float(r["upper_80"]) <= float(r["upper_95"])
    longer = write_series(tmp_path / "longer.csv", n=78)
    rc, out, err = cli(capsys, "predict", lstm_run, "--data", longer, "--out", tmp_path / "f.csv", "--json")
    assert rc == 0, err
    assert [r["time"] for r in json.loads(out)] == ["2006-07", "2006-08", "2006-09"]
    assert (tmp_path / "f.csv").is_file()
    user_error(capsys, "predict", lstm_run, "--data", write_series(tmp_path / "nocov.csv", covariate=False),
               match="covariate column .price.")
    user_error(capsys, "predict", lstm_run, "x.csv", match="--data")


def test_explain_plots_gates_and_evaluate_recomputes(capsys, lstm_run, tmp_path):
    rc, out, err = cli(capsys, "explain", lstm_run, "--cells", "0,3", "--out", tmp_path / "ex")
    assert rc == 0, err
    assert (tmp_path / "ex" / "lstm-gates.png").stat().st_size > 1000
    gates = json.loads((tmp_path / "ex" / "lstm-gates.json").read_text())
    assert gates["units"] == [0, 3] and np.asarray(gates["forget"]).shape == (12, 2)
    user_error(capsys, "explain", lstm_run, "--cells", "99", match="units 0..7")
    # the gates are those of the first member's LSTM on what it sees: the target relative to its last value
    run = Run.open(lstm_run)
    model, prepared = load_model(run, torch.device("cpu")), prepared_for_run(run, None)
    _, _, last, _, _, _ = lstm_gates(run, model, None)
    x = torch.from_numpy(prepared.scaled()[-12:]).float()[None]
    with torch.no_grad():
        hidden = model.members[0].rnn(model.core_input(x))[0][0]             # (L, hidden)
    np.testing.assert_allclose(last["hidden"], hidden.numpy(), atol=1e-5)
    rc, out, err = cli(capsys, "evaluate", lstm_run)
    assert rc == 0 and json.loads(out)["test_mase"] == pytest.approx(Run(lstm_run).metrics["test_mase"])


def test_statistical_baseline_run_and_its_forecast(capsys, files, tmp_path):
    out = tmp_path / "theta"
    rc, _, err = cli(capsys, "train", "forecast", "--data", files["data"], "--target", "sales", "--model", "theta",
                     "--horizon", 3, "--origins", 3, "--epochs", 50, "--out", out, "--no-progress")
    assert rc == 0, err
    m = Run(out).metrics
    assert m["params"] == 0 and m["epochs"] == 1 and m["form"]["period"] == 12  # fitted, not trained: one step
    rc, printed, err = cli(capsys, "predict", out)
    assert rc == 0 and printed.count("\n2006-0") == 3, printed
    user_error(capsys, "explain", out, match="use an lstm run")


def test_ctrl_c_mid_epoch_then_resume_equals_uninterrupted(files, tmp_path, monkeypatch):
    # 45 training windows, batches of 32: 17 steps an epoch, so step 25 is in the middle of epoch 2
    assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, train_args(files["data"], "lstm", None, files["config"], epochs=4),
                                  NetworkJob, at_step=25, time_keys=TIME_FIELDS)


def test_training_stops_once_no_member_improved_for_patience_epochs(files, tmp_path, monkeypatch):
    args = train_args(files["data"], "mlp", tmp_path / "patient", files["config"], epochs=60) + ["--patience", "3"]
    assert main(args) == 0
    run = Run(tmp_path / "patient")
    best = run.metrics["best_epoch"]
    assert len(run.history()) == max(best) + 3 < 60          # stopped 3 epochs after the last member's best
    assert main(train_args(files["data"], "mlp", tmp_path / "all", files["config"], epochs=8)
                + ["--patience", "0"]) == 0
    assert len(Run(tmp_path / "all").history()) == 8         # 0: every epoch

    class Stop(Exception):
        pass

    original = Run.write_history

    def stop_before_the_end(self, history):                   # interrupted one epoch before the stop
        original(self, history)
        if len(history) == max(best) + 2:
            raise Stop

    monkeypatch.setattr(Run, "write_history", stop_before_the_end)
    with pytest.raises(Stop):
        main(train_args(files["data"], "mlp", tmp_path / "stopped", files["config"], epochs=60) + ["--patience", "3"])
    monkeypatch.setattr(Run, "write_history", original)
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 0
    resumed = Run(tmp_path / "stopped")
    assert without_time(resumed.metrics) == without_time(run.metrics)
    assert len(resumed.history()) == len(run.history())


def test_runs_made_before_the_changes_input_still_load(capsys, files, tmp_path):
    out = tmp_path / "old"
    (tmp_path / "old.toml").write_text(SMALL + "changes = false\n")
    assert main(train_args(files["data"], "mlp", out, tmp_path / "old.toml")) == 0
    config = json.loads((out / "config.json").read_text())
    del config["model_config"]["changes"]                     # as an older version wrote it
    (out / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(out), "--out", str(tmp_path / "f.csv")]) == 0
    assert len((tmp_path / "f.csv").read_text().splitlines()) == 1 + 3


def test_predictor_on_a_pandas_series_equals_predict_json(capsys, lstm_run, tmp_path):
    """The Python predictor on a series in memory gives exactly what `predict --json` prints for the
    same series written as a CSV file."""
    import pandas as pd
    n = 75
    index = pd.date_range("2000-01-01", periods=n, freq="MS")
    sales = pd.Series(60 + 0.5 * np.arange(n) + np.random.default_rng(1).normal(0, 1, n), index=index, name="sales")
    price = pd.DataFrame({"price": 10.0 + np.arange(n) % 5}, index=index)
    path = tmp_path / "memory.csv"
    pd.concat([sales, price], axis=1).rename_axis("month").to_csv(path)
    rc, out, err = cli(capsys, "predict", lstm_run, "--data", path, "--json", "--out", tmp_path / "f.csv")
    assert rc == 0, err
    printed = json.loads(out)
    assert [r["time"] for r in printed] == ["2006-04", "2006-05", "2006-06"]
    predictor = ForecastTask().predictor(Run.open(lstm_run))
    assert predictor.predict(sales, price) == printed
    assert predictor.predict(pd.concat([sales, price], axis=1)) == printed          # a DataFrame with both
    steps = predictor.predict(sales.to_numpy(), price.to_numpy())                 # arrays: time in steps
    assert [r["time"] for r in steps] == ["75", "76", "77"]
    assert [r["forecast"] for r in steps] == [r["forecast"] for r in printed]
    with pytest.raises(UserError, match="covariates too.*price"):
        predictor.predict(sales)


def test_networks_never_look_past_their_origin(files, tmp_path):
    """Origins are months 67, 68, 69 of 0..71; changing months 68 on must leave the forecasts made
    at 67 and 68 unchanged (training, scaling and their inputs all end before them)."""
    changed = write_series(tmp_path / "changed.csv", shift_from=68)
    for model in ("mlp", "lstm"):
        forecasts = []
        for name, data in (("a", files["data"]), ("b", changed)):
            assert main(train_args(data, model, tmp_path / f"{model}-{name}", files["config"])) == 0
            forecasts.append(np.asarray(json.loads((tmp_path / f"{model}-{name}" / "backtest.json").read_text())["forecasts"]))
        np.testing.assert_array_equal(forecasts[0][:2], forecasts[1][:2])
        assert not np.array_equal(forecasts[0][2], forecasts[1][2])


def test_compare_verdict_against_the_best_statistical_baseline(capsys, files, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "forecast", "--data", files["data"], "--target", "sales", "--models",
            "seasonal-naive,drift,theta,mlp,lstm", "--seeds", 2, "--epochs", 2, "--horizon", 3, "--origins", 3,
            "--lookback", 12, "--out", out, "--no-progress"]  # default sizes: [model] would reach the baselines
    rc, printed, err = cli(capsys, *args)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert summary["metric"] == "test_mase" and summary["higher_is_better"] is False
    assert len(models["theta"]["runs"]) == 1 and models["theta"]["test_mase_std"] == 0  # seed-independent: once
    assert len(models["lstm"]["runs"]) == 2
    best = min(("seasonal-naive", "drift", "theta"), key=lambda m: models[m]["test_mase_mean"])
    verdicts = summary["verdicts"]
    assert len(verdicts) == 2 and verdicts[0].startswith("lstm") and verdicts[1].startswith("mlp")
    assert f"{best} (the best statistical baseline)" in verdicts[0] and "mlp" in verdicts[0]
    html = (out / "report.html").read_text()
    assert "Forecasts against the actual values" in html and "Error by step of the horizon" in html
    rc, printed, err = cli(capsys, *args)  # a second run reuses every finished run
    assert rc == 0 and "==" not in printed


@pytest.mark.parametrize("extra,match", [
    (["--target", "cost"], "no target column 'cost'.*sales"),
    (["--time-col", "when"], "no time column 'when'"),
    (["--horizon", "80"], "too short.*--horizon 80"),
    (["--lookback", "70"], "too short.*--lookback 70"),
    (["--season", "500"], "--season 500 is not shorter"),
    (["--horizon", "0"], "--horizon must be a positive whole number"),
    (["--patience", "-1"], "--patience must be a whole number >= 0"),
    (["--fill", "mean"], "invalid choice"),
    (["--model", "transformer"], "unknown model"),
])
def test_bad_inputs_exit_2_with_one_line(capsys, files, extra, match):
    args = ["train", "forecast", "--data", files["data"], "--model", "naive", "--no-progress"]
    if "--target" not in extra:
        args += ["--target", "sales"]
    user_error(capsys, *args, *extra, match=match)


def test_bad_files_exit_2_naming_lines(capsys, tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("date,y\n" + "".join(f"2020-{m:02d}-01,{m}\n" for m in range(1, 10)) + "2020-03-01,5\n")
    user_error(capsys, "train", "forecast", "--data", dup, "--model", "naive", match="duplicate.*lines 4 and 11")
    gap = tmp_path / "gap.csv"
    gap.write_text("date,y\n" + "".join(f"2020-{m:02d}-01,{m}\n" for m in range(1, 13) if m != 6))
    user_error(capsys, "train", "forecast", "--data", gap, "--model", "naive", match="gap.*2020-06.*--fill")
    user_error(capsys, "train", "forecast", "--data", tmp_path / "none.csv", "--model", "naive", match="does not exist")


def test_anchor_in_words():
    assert anchor_words({"season": 12, "smoothing": 1.0, "keep_level": False}) == "the value one season (12 steps) earlier"
    assert anchor_words({"season": 1, "smoothing": 0.2, "keep_level": True}) == (
        "the window's exponentially smoothed level (alpha 0.2); it also sees the absolute level "
        "(the training span is stationary)")
    assert anchor_words({"season": 4, "smoothing": 0.5}) == ("the value one season (4 steps) earlier, exponentially "
                                                             "smoothed (alpha 0.5) over the window's earlier seasons")
