"""kill -9 and resume, in every task (issue 16, class 6): `deepskeptic train` runs as a process of
its own on tiny data and is killed with SIGKILL (no handler runs, no checkpoint is saved on the way
out) as soon as its first checkpoint exists; `deepskeptic train --resume` then finishes the run,
and the run must equal an uninterrupted run of the same settings and seed: metrics.json and every
line of history.jsonl (time fields aside) and the weights, byte for byte."""
from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TIME_FIELDS, tiny_speech_spec
from deepskeptic.checkpoint import load_state
from deepskeptic.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = Path(__file__).resolve().parents[1] / "src"
TIME_KEYS = TIME_FIELDS | {"chars_per_second"}     # textgen's metrics.json copies its last speed
CHECKPOINT = Path("checkpoint") / "state.safetensors"


# ------------------------------------------------------------------ tiny data, one per task

def _image_folder(root: Path, classes: tuple[str, ...], n: int, size: int, rgb: bool = False) -> list[Path]:
    """Folders of ``n`` tiny PNGs per class: a bright square or disc on noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    folders = []
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            c, r = rng.integers(5, size - 5, 2), rng.integers(3, 5)
            mask = ((np.abs(yy - c[0]) <= r) & (np.abs(xx - c[1]) <= r)) if k == 0 else \
                ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r)
            img[mask] = 220
            Image.fromarray(np.stack([img, img // 2, img], -1) if rgb and k == 0 else img).save(folder / f"{i:03d}.png")
        folders.append(folder)
    return folders


def _labelled_csv(path: Path) -> Path:
    topics = {"sport": "ball goal team match score".split(), "food": "bread cheese apple soup cook".split(),
              "tech": "computer code bug server linux".split()}
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["body", "topic"])
        for i in range(150):
            label = rng.choice(sorted(topics))
            words = [rng.choice(topics[label] + ["the", "a", "of"]) for _ in range(rng.randint(4, 10))]
            w.writerow([" ".join(words) + f" {i}", label])
    return path


def _corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = "the cat sat on a mat and dog ran far away from home".split()
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(60)) + "\n")
    return path


def _series(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    y = 50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, n)
    lines = ["month,sales"] + [f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.3f}" for i, v in enumerate(y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _speech(root: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: the speech task's tiny data set is synthesised with it")
    from deepskeptic.data import spoken
    return spoken.synthesise(root / "tiny", tiny_speech_spec(), progress=False).parent


def _args(task: str, root: Path) -> list[str]:
    """The `train` command line of ``task`` on its tiny data in ``root`` (made once)."""
    if task == "image":
        return ["train", "image", "--data", "digits", "--model", "mlp", "--epochs", "3", "--limit", "300",
                "--seed", "3"]
    if task == "text":
        data = _labelled_csv(root / "docs.csv")
        config = root / "tiny.toml"
        config.write_text("lr = 0.01\n[model]\nhidden = 8\nembed = 8\n")
        return ["train", "text", "--data", data, "--text-col", "body", "--label-col", "topic", "--model", "lstm",
                "--config", config, "--batch-size", "16", "--epochs", "3", "--seed", "3"]
    if task == "textgen":
        return ["train", "textgen", "--data", _corpus(root / "small.txt"), "--model", "lstm", "--epochs", "3",
                "--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--seed", "3"]
    if task == "speech":
        return ["train", "speech", "--data", _speech(root), "--model", "cnn", "--epochs", "3", "--seed", "3",
                "--batch-size", "8"]
    if task == "forecast":
        config = root / "small.toml"
        config.write_text("[model]\nhidden = 8\n")
        return ["train", "forecast", "--data", _series(root / "sales.csv"), "--target", "sales", "--model", "lstm",
                "--horizon", "3", "--origins", "3", "--lookback", "12", "--epochs", "4", "--config", config,
                "--seed", "3"]
    if task == "gan":
        _image_folder(root / "shapes", ("square", "disc"), 16, 16)
        return ["train", "gan", "--data", root / "shapes", "--model", "dcgan", "--epochs", "3", "--batch-size", "8",
                "--judge-epochs", "1", "--eval-samples", "8", "--seed", "3"]
    if task == "cyclegan":
        a, b = _image_folder(root / "domains", ("squares", "discs"), 12, 16, rgb=True)
        return ["train", "cyclegan", "--data-a", a, "--data-b", b, "--model", "cyclegan", "--epochs", "3",
                "--batch-size", "4", "--pool-size", "3", "--judge-epochs", "1", "--eval-samples", "4", "--seed", "3"]
    raise AssertionError(task)


# ------------------------------------------------------------------ the kill

def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "deepskeptic", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_after_first_checkpoint(args: list[str], out: Path, timeout: float = 180) -> dict:
    """Run ``args --out OUT`` in a process of its own, SIGKILL it the moment OUT's checkpoint file
    exists; the position the checkpoint holds (where the resume starts)."""
    proc = _start([*args, "--out", str(out)], out.parent)
    deadline = time.monotonic() + timeout
    try:
        while not (out / CHECKPOINT).is_file():
            if proc.poll() is not None:
                pytest.fail(f"training ended before its first checkpoint: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint was written in time")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the run finished before it could be killed (exit {proc.returncode}): give it more epochs; {err}")
    assert not (out / "metrics.json").exists()
    return load_state(out / CHECKPOINT)["position"]


def _strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIME_KEYS}


def assert_same_run(a: Path, b: Path) -> None:
    ma, mb = (_strip(json.loads((r / "metrics.json").read_text())) for r in (a, b))
    assert ma == mb
    ha, hb = ([_strip(json.loads(line)) for line in (r / "history.jsonl").read_text().splitlines()] for r in (a, b))
    assert ha == hb and ha
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


@pytest.mark.parametrize("task", ["image", "text", "textgen", "speech", "forecast", "gan", "cyclegan"])
def test_kill_9_after_the_first_checkpoint_then_resume_equals_uninterrupted(task, tmp_path, monkeypatch):
    from deepskeptic.tasks import get_task
    # The two runs in this process write a stub report (rendering is slow and reads the metrics,
    # never changes them); the killed process renders its own, if it gets that far.
    monkeypatch.setattr(type(get_task(task)), "write_report", lambda self, run, prepared=None, metrics=None:
                        run.write_report("<!doctype html><title>stub</title>"))
    args = [str(a) for a in _args(task, tmp_path)] + ["--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0        # the judge (gan, cyclegan) is cached now
    cut = tmp_path / "killed"
    position = kill_after_first_checkpoint(args, cut)
    assert position["epoch"] >= 1
    assert main(["train", "--resume", str(cut)]) == 0
    assert_same_run(tmp_path / "whole", cut)
