"""Training one run in several processes: torchrun, two gloo ranks on this CPU, DDP.

Each test launches ``torchrun --standalone --nproc_per_node 2 -m deepskeptic train ...`` as a
subprocess (the way a user would) and compares with the one-process run of the same global batch.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TIME_FIELDS, without_time

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ONE = [sys.executable, "-m", "deepskeptic"]
# digits, an mlp without dropout or augmentation: nothing random but the order, which all ranks share
IMAGE = ["train", "image", "--data", "digits", "--model", "mlp", "--no-augment", "--seed", "3", "--no-progress",
         "--batch-size", "64"]
TIME_KEYS = TIME_FIELDS | {"chars_per_second"}


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    env.pop("WORLD_SIZE", None)
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _history(run: Path) -> list[dict]:
    return [without_time(json.loads(line)) for line in (run / "history.jsonl").read_text().splitlines()]


def _close(a: dict, b: dict, rel: float, skip: set[str]) -> None:
    """Equal up to rounding: a batch's mean gradient summed in two halves differs from the one-piece
    sum in the last bits, and Adam (which divides by the gradient's own size) carries such bits into
    whole steps of parameters whose gradient is near zero: losses agree to ~1e-4 relative after a
    few epochs, accuracies to an example or two (``rel`` on losses; 0.015 absolute on accuracies)."""
    for key, value in a.items():
        if key in skip or not isinstance(value, float):
            continue
        tolerance = 0.015 if "accuracy" in key else rel
        assert b[key] == pytest.approx(value, rel=rel, abs=tolerance), key


@pytest.fixture(scope="module")
def no_dropout(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "mlp.toml"
    path.write_text("[model]\ndropout = 0.0\n")
    return path


@pytest.fixture(scope="module")
def image_runs(tmp_path_factory, no_dropout):
    """The same image run in two processes and in one."""
    where = tmp_path_factory.mktemp("ddp-image")
    _run(TORCHRUN + ["-m", "deepskeptic"] + IMAGE_ARGS(no_dropout) + ["--out", "two"], where)
    _run(ONE + IMAGE_ARGS(no_dropout) + ["--out", "one"], where)
    return where


def IMAGE_ARGS(config: Path) -> list[str]:
    return IMAGE + ["--epochs", str(EPOCHS), "--config", str(config)]


EPOCHS = 12


def test_two_processes_train_what_one_does(image_runs):
    two, one = image_runs / "two", image_runs / "one"
    m2, m1 = _metrics(two), _metrics(one)
    # the same global batches: the numbers agree up to float32 rounding, which Adam amplifies
    # (in float64 the steps agree to 1e-16: test_steps_equal_one_process_in_float64)
    h1, h2 = _history(one), _history(two)
    assert len(h1) == len(h2) == EPOCHS
    for a, b in zip(h1[:3], h2[:3]):
        _close(a, b, rel=2e-3, skip=TIME_KEYS)
    for a, b in zip(h1, h2):
        assert a["epoch"] == b["epoch"] and a["lr_factor"] == b["lr_factor"]
    for key in ("test_accuracy", "test_loss"):
        assert m2[key] == pytest.approx(m1[key], abs=0.02), key
    config = json.loads((two / "config.json").read_text())
    assert config["world_size"] == 2 and config["global_batch"] == 64
    assert "world_size" not in json.loads((one / "config.json").read_text())


STEPS_SCRIPT = """
import torch, torch.nn.functional as F
from deepskeptic import distributed
from deepskeptic.engine import Job, StepContext
world, device = distributed.setup("cpu")
torch.manual_seed(0)
def net():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()
x, y = torch.randn(63, 8, dtype=torch.float64), torch.randint(0, 3, (63,))   # 63: shares of 32 and 31
for use_ddp in (True, False):                     # DDP's reducer, and the engine's own averaging (GANs)
    torch.manual_seed(1)
    model, ref = net(), net()
    ref.load_state_dict(model.state_dict())
    opt, ref_opt = torch.optim.AdamW(model.parameters(), 1e-2), torch.optim.AdamW(ref.parameters(), 1e-2)
    step_model = torch.nn.parallel.DistributedDataParallel(model) if use_ddp else model
    ctx = StepContext(device, {"main": opt}, amp=False, world=world)
    ctx.ddp = use_ddp
    for _ in range(20):
        part, share = Job().shard(torch.arange(63), world.rank, world.size)
        ctx.loss_scale = share * world.size
        ctx.backward_step(F.cross_entropy(step_model(x[part]), y[part]), clip=1.0)
        ref_opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(model.parameters(), ref.parameters()))
    print(f"DIFF {world.rank} {use_ddp} {diff}", flush=True)
distributed.shutdown()
"""


def test_steps_equal_one_process_in_float64(tmp_path):
    """The engine's step under torchrun (uneven shares of an odd batch, loss scaled by share, gradient
    clipping after the average) is the one-process step on the whole batch: in float64, 1e-12."""
    (tmp_path / "steps.py").write_text(STEPS_SCRIPT)
    out = _run(TORCHRUN + [str(tmp_path / "steps.py")], tmp_path).stdout
    diffs = [float(d) for d in re.findall(r"DIFF [01] (?:True|False) ([0-9.e+-]+)", out)]
    assert len(diffs) == 4 and max(diffs) < 1e-12, out


def test_only_rank_zero_writes(image_runs):
    # one run folder per launch, nothing else (no second folder from rank 1, no default runs/)
    names = {p.name for p in image_runs.iterdir()}
    assert {"one", "two"} <= names and not names & {"runs"}
    assert sorted(p.name for p in (image_runs / "two").iterdir()) == sorted(
        p.name for p in (image_runs / "one").iterdir())


def test_textgen_under_torchrun(tmp_path):
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran far away from home".split()
    corpus = tmp_path / "small.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(150)) + "\n")
    args = ["train", "textgen", "--data", str(corpus), "--model", "lstm", "--epochs", "2", "--lr", "0.01",
            "--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--no-progress",
            "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("[model]\ndropout = 0.0\n")
    _run(TORCHRUN + ["-m", "deepskeptic"] + args + ["--out", "two"], tmp_path)
    _run(ONE + args + ["--out", "one"], tmp_path)
    m1, m2 = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    _close(m1, m2, rel=2e-3, skip=TIME_KEYS)
    assert m1["test_bpc"] == pytest.approx(m2["test_bpc"], rel=1e-3)
    for a, b in zip(_history(tmp_path / "one"), _history(tmp_path / "two")):
        _close(a, b, rel=2e-3, skip=TIME_KEYS)


def _children(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                out.append(int(stat.parent.name))
    return out


def test_resume_under_torchrun_after_a_kill(image_runs, no_dropout):
    """SIGKILL to every process after the first checkpoints; `torchrun ... train --resume RUN`
    continues exactly where the last checkpoint was: the same numbers as the run never stopped."""
    where = image_runs
    proc = subprocess.Popen(TORCHRUN + ["-m", "deepskeptic"] + IMAGE_ARGS(no_dropout) + ["--out", "cut"], cwd=where,
                            env=_env(where), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    history = where / "cut" / "history.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    for pid in [*_children(proc.pid), proc.pid]:   # torchrun starts its workers in sessions of their own
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if (where / "cut" / "metrics.json").exists():
        pytest.skip("the run finished before it could be killed (a very fast machine)")
    _run(TORCHRUN + ["-m", "deepskeptic", "train", "--resume", "cut"], where)
    assert without_time(_metrics(where / "cut")) == without_time(_metrics(where / "two"))
    assert _history(where / "cut") == _history(where / "two")


def _torchrun_env(monkeypatch) -> None:
    """This process as rank 0 of 2 (the checks come before it would wait for rank 1)."""
    for key, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)


def test_resume_with_another_number_of_processes_is_one_line(image_runs, tmp_path, capsys, monkeypatch):
    import shutil
    from cli_helpers import user_error
    shutil.copytree(image_runs / "two", tmp_path / "r")
    (tmp_path / "r" / "metrics.json").unlink()
    user_error(capsys, "train", "--resume", tmp_path / "r", match="resume it with torchrun --nproc_per_node 2")
    shutil.copytree(image_runs / "one", tmp_path / "s")
    (tmp_path / "s" / "metrics.json").unlink()
    _torchrun_env(monkeypatch)
    user_error(capsys, "train", "--resume", tmp_path / "s", match="trained in one process; resume it without torchrun")


def test_what_torchrun_cannot_run_is_one_line(tmp_path, capsys, monkeypatch):
    from cli_helpers import user_error
    _torchrun_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    user_error(capsys, "train", "forecast", "--data", "nile", "--model", "mlp",
               match="forecast does not train under torchrun.*--jobs N")
    user_error(capsys, "train", "image", "--data", "digits", "--model", "mlp", "--batch-size", "1",
               match="global batch and cannot be split over 2 processes")
    assert not list(tmp_path.iterdir())


def _documents(path: Path) -> Path:
    rng = random.Random(0)
    words = {"pos": "good great fine lovely nice".split(), "neg": "bad awful poor sad grim".split()}
    rows = ["text,label"]
    for _ in range(200):
        label = rng.choice(["pos", "neg"])
        rows.append(" ".join(rng.choice(words[label] + ["the", "a", "it"]) for _ in range(rng.randint(3, 10)))
                    + f",{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("task", ["text", "gan"])
def test_other_tasks_train_under_torchrun(task, tmp_path):
    """text through DDP's reducer, a GAN through the engine's gradient averaging (speech, like text,
    and cyclegan, like gan, were run by hand: a launch costs ~10 s of the suite's time)."""
    if task == "text":
        args = ["--data", str(_documents(tmp_path / "docs.csv")), "--model", "lstm"]
    elif task == "speech":
        import shutil
        if not shutil.which("espeak-ng"):
            pytest.skip("espeak-ng is not installed")
        from conftest import tiny_speech_spec
        from deepskeptic.data import spoken
        folder = spoken.synthesise(tmp_path / "speech", tiny_speech_spec(), progress=False).parent
        args = ["--data", str(folder), "--model", "lstm", "--batch-size", "4"]
    else:
        args = ["--data", "digits", "--model", "mlp-gan", "--batch-size", "32", "--epoch-images", "256"]
    _run(TORCHRUN + ["-m", "deepskeptic", "train", task, *args, "--epochs", "1", "--no-progress", "--out", "r"],
         tmp_path)
    assert (tmp_path / "r" / "metrics.json").is_file()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["world_size"] == 2
