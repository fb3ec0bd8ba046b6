"""Verdicts that say when a model was starved by its budget, or its runs were slowed by load:
one real comparison whose budget cannot finish an epoch, and run folders with faked histories."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import cli
from deepskeptic import fairness
from deepskeptic.compare import summarise, write_comparison_report
from deepskeptic.tasks import get_task
from deepskeptic.training import resolve_settings

IMAGE = get_task("image")


def fake_run(folder: Path, model: str, seed: int, accuracies: list[float], *, budget: float | None = 10.0,
             per_second: float = 1000.0, epoch_seconds: float = 1.0, last_fraction: float = 1.0,
             train_size: int = 1000) -> None:
    """A complete run folder as training writes it: one history line per epoch (the last one
    ``last_fraction`` of an epoch), its config (settings, data_info) and metrics."""
    run = folder / f"{model}-seed{seed}"
    run.mkdir(parents=True)
    lines, total = [], 0.0
    for i, acc in enumerate(accuracies):
        seconds = epoch_seconds * (last_fraction if i == len(accuracies) - 1 else 1.0)
        total += seconds
        lines.append({"epoch": i + 1, "train_loss": 1.0, "epoch_seconds": seconds, "train_seconds": total,
                      "img_per_second": per_second * train_size / 1000, "val_accuracy": acc})
    (run / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in lines))
    length = {"time_budget": budget} if budget else {"epochs": len(accuracies)}
    settings = resolve_settings(IMAGE, {"data": "digits", "model": model, "seed": seed, **length}, None)
    data_info = {"classes": [str(c) for c in range(10)], "channels": 1, "image_size": 8, "mean": [0.3],
                 "std": [0.4], "train": train_size}
    (run / "config.json").write_text(json.dumps({"task": "image", "settings": settings, "model_config": {},
                                                 "data_info": data_info}))
    (run / "metrics.json").write_text(json.dumps({"test_accuracy": accuracies[-1], "params": 100,
                                                  "train_seconds": total, "epochs": len(accuracies)}))


def test_a_budget_too_small_for_one_epoch_is_flagged_and_the_verdict_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the rule chooses
    out = tmp_path / "cmp"
    # 1 ms: the loop checks the budget before every step, so the cnn takes one step of an epoch
    rc, printed, err = cli(capsys, "compare", "image", "--data", "digits", "--models", "logreg,cnn", "--seeds", 1,
                           "--time-budget", "0.001", "--limit", "400", "--out", out, "--no-progress")
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    cnn, logreg = summary["models"]["cnn"], summary["models"]["logreg"]
    assert cnn["starved"] is True and 0 < cnn["epochs_seen_mean"] < 1
    assert "fewer than 3" in cnn["starved_reason"] and cnn["fair_budget_s"] >= 1
    assert logreg["starved"] is True  # trained by steps too: the simpler model was starved as well
    verdict = next(v for v in summary["verdicts"] if v.startswith("cnn "))
    for model, s in (("cnn", cnn), ("logreg", logreg)):
        assert f"{model} saw {s['epochs_seen_mean']:.2g} epochs in 0.001 s: the verdict is about this budget; " \
               f"try --time-budget {s['fair_budget_s']}." in verdict
    threads = json.loads((out / "cnn-seed0" / "config.json").read_text())["threads"]  # the rule's record
    assert threads["requested"] is None and 1 <= threads["chosen"] <= threads["usable_cores"] and threads["reason"]
    html = (out / "report.html").read_text()
    assert "Budget and load" in html and "the verdict is about this budget" in html


def test_a_converged_run_is_not_flagged_and_a_still_improving_one_is(tmp_path):
    plateau = [0.60, 0.90, 0.95, 0.96, 0.958, 0.96]
    climbing = [0.50, 0.60, 0.70, 0.80, 0.90]
    for seed in range(2):
        fake_run(tmp_path, "cnn", seed, plateau)
        fake_run(tmp_path, "mlp", seed, climbing, epoch_seconds=2.0)
    summary = summarise(IMAGE, tmp_path, ["mlp", "cnn"], 2)
    cnn, mlp = summary["models"]["cnn"], summary["models"]["mlp"]
    assert cnn["starved"] is False and cnn["starved_reason"] is None and cnn["epochs_seen_mean"] == 6
    assert mlp["starved"] is True and mlp["starved_kind"] == "improving"
    assert "still improving" in mlp["starved_reason"] and "0.9 in its last 2 epochs against 0.7" in mlp["starved_reason"]
    assert mlp["fair_budget_s"] == 25  # twice its 5 epochs at 2 s each, plus a quarter
    (verdict,) = summary["verdicts"]
    assert verdict.startswith("cnn ") and "beats mlp" in verdict
    assert "mlp was still improving when its 10 s budget ran out: the verdict is about this budget; " \
           "try --time-budget 25." in verdict


def test_epochs_seen_counts_the_part_of_the_last_epoch_the_budget_allowed():
    line = {"epoch": 1, "epoch_seconds": 0.5, "img_per_second": 140.0}
    assert fairness.epochs_seen([line], train_size=1000) == pytest.approx(0.07)
    assert fairness.epochs_seen([{**line, "img_per_second": 1960.0}], train_size=1000) == 1.0  # >= 95 %: whole
    whole = {"epoch": 1, "epoch_seconds": 1.0, "img_per_second": 1000.0}
    assert fairness.epochs_seen([whole, {**line, "img_per_second": 1000.0}]) == pytest.approx(1.5)  # no size known
    assert fairness.epochs_seen([{**line, "epoch_fraction": 0.25}]) == 0.25
    assert fairness.epochs_seen([]) == 0.0


def test_runs_slowed_by_load_are_flagged_and_the_verdict_says_the_comparison_was_distorted(tmp_path):
    accuracies = [0.5, 0.8, 0.9, 0.9, 0.9]
    for seed, speed in enumerate([1000.0, 900.0, 300.0]):
        fake_run(tmp_path, "cnn", seed, accuracies, per_second=speed)
        fake_run(tmp_path, "mlp", seed, [0.5, 0.7, 0.8, 0.8, 0.8], per_second=1000.0)
    summary = summarise(IMAGE, tmp_path, ["mlp", "cnn"], 3)
    cnn, mlp = summary["models"]["cnn"], summary["models"]["mlp"]
    assert [r["seed"] for r in cnn["load_distorted"]] == [2] and mlp["load_distorted"] == []
    assert cnn["throughput_values"] == pytest.approx([1000.0, 900.0, 300.0]) and cnn["throughput_unit"] == "img"
    assert cnn["load_distorted"][0]["ratio"] == pytest.approx(950 / 300)
    last = summary["verdicts"][-1]
    assert last.startswith("The comparison was distorted by load: cnn seed 2 300 img/s against 950")
    write_comparison_report(IMAGE, tmp_path, summary)
    assert "seed 2: 3.2x its other seeds" in (tmp_path / "report.html").read_text()


def test_with_fixed_epochs_nothing_is_starved_and_load_changes_only_the_seconds(tmp_path):
    for seed, speed in enumerate([1000.0, 100.0]):
        fake_run(tmp_path, "cnn", seed, [0.5, 0.9], budget=None, per_second=speed)
        fake_run(tmp_path, "mlp", seed, [0.5, 0.6], budget=None)
    summary = summarise(IMAGE, tmp_path, ["mlp", "cnn"], 2)
    assert not summary["models"]["cnn"]["starved"] and summary["models"]["cnn"]["load_distorted"]
    assert len(summary["verdicts"]) == 1 and "distorted" not in summary["verdicts"][0]
