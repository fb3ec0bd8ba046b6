"""`compare --jobs N` and `compare --ray`: the same runs, trained in other processes, give the same
numbers as the sequential comparison when each run gets the same number of CPU threads (one here);
a run left unfinished is resumed by the next compare; a missing Ray is one clear error."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from cli_helpers import user_error
from conftest import without_time
from deepskeptic.compare import run_comparison
from deepskeptic.errors import UserError
from deepskeptic.tasks import get_task

MODELS = ["logreg", "mlp"]
SEEDS = 2
FLAGS = {"data": "digits", "epochs": 2, "progress": False}


def comparison(out: Path, **where) -> dict:
    return run_comparison(get_task("image"), dict(FLAGS), None, MODELS, SEEDS, out, threads_per_job=1, **where)


def runs_of(out: Path) -> dict[str, tuple[dict, list[dict]]]:
    """Per run folder: metrics.json and history.jsonl, without the fields that measure time."""
    found = {}
    for run in sorted(p for p in out.iterdir() if (p / "metrics.json").is_file()):
        history = [without_time(json.loads(line)) for line in (run / "history.jsonl").read_text().splitlines()]
        found[run.name] = (without_time(json.loads((run / "metrics.json").read_text())), history)
    return found


def assert_same_comparison(a: Path, b: Path) -> None:
    runs_a, runs_b = runs_of(a), runs_of(b)
    assert sorted(runs_a) == [f"{m}-seed{k}" for m in MODELS for k in range(SEEDS)]
    assert runs_a == runs_b
    summary_a, summary_b = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    metric = summary_a["metric"]
    for model in MODELS:  # the numbers, not what measures time or the machine's load
        stats = [{k: s["models"][model][k] for k in (f"{metric}_mean", f"{metric}_std", f"{metric}_values",
                                                      "params", "epochs_mean")} for s in (summary_a, summary_b)]
        assert stats[0] == stats[1]
    assert summary_a["verdicts"] == summary_b["verdicts"]


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> Path:
    """The comparison trained one run after another in this process, on one CPU thread."""
    out = tmp_path_factory.mktemp("sequential") / "compare"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        comparison(out)
    finally:
        torch.set_num_threads(threads)
    return out


def test_jobs_2_equals_jobs_1_and_resumes_a_killed_run(sequential, tmp_path, capsys):
    out = tmp_path / "jobs2"
    comparison(out, jobs=2)
    printed = capsys.readouterr().out
    assert printed.count("] logreg, seed") + printed.count("] mlp, seed") == len(MODELS) * SEEDS  # one line per run
    assert_same_comparison(sequential, out)

    # A job killed mid-run leaves config.json and a checkpoint but no metrics.json: the next
    # compare resumes that run (in a worker) and keeps the others.
    (out / "mlp-seed1" / "metrics.json").unlink()
    kept = (out / "logreg-seed0" / "metrics.json").stat().st_mtime_ns
    comparison(out, jobs=2)
    assert (out / "logreg-seed0" / "metrics.json").stat().st_mtime_ns == kept
    assert "1 run(s) in 1 process (" in capsys.readouterr().out
    assert_same_comparison(sequential, out)


def test_bad_jobs_and_a_missing_ray_are_one_line_errors(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match="--jobs must be"):
        comparison(tmp_path / "a", jobs=0)
    with pytest.raises(UserError, match="cannot be combined"):
        comparison(tmp_path / "b", jobs=2, ray="auto")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    user_error(capsys, "compare", "image", "--data", "digits", "--models", "logreg", "--epochs", "1",
               "--ray", "auto", "--out", tmp_path / "c", match=r"needs Ray.*pip install 'deepskeptic\[ray\]'")
    assert not (tmp_path / "c").exists()


def test_ray_equals_sequential(sequential, tmp_path, capsys):
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'deepskeptic[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        comparison(tmp_path / "ray", ray="auto")
    finally:
        ray.shutdown()
    assert "as Ray tasks (1 CPU(s) each)" in capsys.readouterr().out
    assert_same_comparison(sequential, tmp_path / "ray")


def test_a_failing_run_is_reported_after_the_others_finish(sequential, tmp_path, capsys):
    """One run that cannot go on (its checkpoint was damaged) fails in whichever lane takes it, this
    process or a spawned one: the other runs are trained and kept, and the error is raised at the end."""
    out = tmp_path / "broken"
    (out / "mlp-seed1" / "checkpoint").mkdir(parents=True)
    shutil.copy(sequential / "mlp-seed1" / "config.json", out / "mlp-seed1" / "config.json")
    (out / "mlp-seed1" / "checkpoint" / "state.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        comparison(out, jobs=2)
    assert "error in mlp, seed 1:" in capsys.readouterr().err
    for run in ("logreg-seed0", "logreg-seed1", "mlp-seed0"):
        assert (out / run / "metrics.json").is_file()
    assert not (out / "mlp-seed1" / "metrics.json").exists()
