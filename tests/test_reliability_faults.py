"""Numbers that are not numbers, data files that are not files, and a full disk (issue 16, classes 4
and 3): a run whose main test metric is NaN or infinite is not marked complete (one line naming the
metric and what to try; weights and checkpoint kept); a FIFO, a device, a folder or an unreadable
file given as data is one line naming it, never a hang; a gzip bomb in an IDX file is refused
before it fills memory; a run that runs out of disk is one line, and its last checkpoint stays
loadable and resumable."""
from __future__ import annotations

import errno
import gzip
import json
import math
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cli_helpers import cli, user_error
from deepskeptic import runs
from deepskeptic.checkpoint import load_state
from deepskeptic.data import idx, images, text
from deepskeptic.errors import UserError
from deepskeptic.runs import Run, check_finite_metrics
from reliability_helpers import TRAIN_DIGITS, digits_run, quiet_threads


@pytest.fixture
def fast_report(monkeypatch):
    from deepskeptic.tasks.image import ImageTask
    monkeypatch.setattr(ImageTask, "write_report", lambda self, run, prepared=None, metrics=None:
                        run.write_report("<html></html>"))


# --- class 4: a test metric that is not a finite number -----------------------------------------

def test_a_nan_test_metric_leaves_the_run_incomplete_with_its_checkpoint(tmp_path, capsys, monkeypatch, fast_report):
    """Logits of NaN (weights gone bad): the accuracy still looks like a number, test_loss is NaN."""
    quiet_threads(monkeypatch)
    import deepskeptic.tasks.image as image_task
    real = image_task.predict_logits
    monkeypatch.setattr(image_task, "predict_logits", lambda *a, **k: torch.full_like(real(*a, **k), math.nan))
    out = tmp_path / "run"
    line = user_error(capsys, *TRAIN_DIGITS, "--out", out, "--lr", "0.5", "--no-progress",
                      match=r"test_loss of run .*run is NaN, not a finite number, so the run is not marked "
                            r"complete; .*lower --lr \(this run used 0\.5\)")
    assert "kept there for inspection" in line
    assert not (out / "metrics.json").exists() and not (out / ".lock").exists()
    assert load_state(out / "checkpoint" / "state.safetensors")["position"]["done"]
    assert load_file(out / "model.safetensors")          # the weights are there to inspect
    user_error(capsys, "evaluate", out, match="did not finish training")
    user_error(capsys, "train", "--resume", out, match="test_loss of run .* is NaN")   # the same answer again
    monkeypatch.setattr(image_task, "predict_logits", real)
    rc, _, err = cli(capsys, "train", "--resume", out)  # once the cause is gone, the run completes
    assert rc == 0, err
    assert math.isfinite(Run.open(out).metrics["test_loss"])


@pytest.mark.parametrize("metrics, primary, match", [
    ({"test_accuracy": math.nan, "params": 10}, "test_accuracy", r"test_accuracy of run R is NaN.*lower --lr"),
    ({"fd": math.inf, "params": 10}, "fd", r"fd of run R is inf"),
    ({"test_mase": -math.inf, "params": 0}, "test_mase", r"test_mase of run R is -inf.*rescale the data"),
    ({"test_mase": 1.0, "test_mae": math.nan, "params": 0}, "test_mase", r"test_mae of run R is NaN.*too large"),
    ({"test_mase": np.float64(math.nan), "params": 3}, "test_mase", r"test_mase .* NaN"),
    ({"test_wer": torch.tensor(math.nan), "params": 3}, "test_wer", r"test_wer .* NaN"),
])
def test_main_test_metrics_must_be_finite(metrics, primary, match):
    with pytest.raises(UserError, match=match):
        check_finite_metrics(metrics, primary, "R", {"lr": 0.1, "clip": 1.0})


def test_null_and_an_overflowed_secondary_metric_are_written_as_null(tmp_path, capsys, monkeypatch):
    """null means 'not measurable' (OWA when Naive2 is perfect); an infinite secondary metric is an
    overflow of its formula (RMSE of values near 1e200) and becomes null with a note, so that
    metrics.json stays strict JSON; NaN inside a table becomes null too."""
    check_finite_metrics({"test_mase": 0.5, "test_owa": None, "test_rmse": math.inf, "fd_ratio": math.inf},
                         "test_mase", "R")
    run = Run(tmp_path)
    monkeypatch.setattr(runs.schema, "primary_metric", lambda task: "test_mase")
    run.write_metrics({"test_mase": 0.5, "test_owa": None, "test_rmse": math.inf,
                       "per_step": {"mase": [0.1, math.nan]}, "count": np.int64(3)})
    text_ = run.metrics_path.read_text()
    assert json.loads(text_, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json")) == {
        "test_mase": 0.5, "test_owa": None, "test_rmse": None, "per_step": {"mase": [0.1, None]}, "count": 3}
    assert "test_rmse not a finite number" in capsys.readouterr().err


# --- class 3: data files that are not regular files ---------------------------------------------

def _pngs(folder: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _plant(path: Path, kind: str) -> Path:
    """A FIFO, /dev/zero (through a link) or a folder at ``path``."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    return path


KIND = {"fifo": r"a FIFO \(named pipe\)", "device": "a device", "folder": "a folder"}


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quiet_threads(monkeypatch)
    return tmp_path


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("task", ["text", "textgen"])
def test_a_text_data_file_that_is_not_a_file_is_one_line(data_root, capsys, task, kind):
    bad = _plant(data_root / "data.csv", kind)
    args = ["--text-col", "t", "--label-col", "l"] if task == "text" else []
    user_error(capsys, "train", task, "--data", bad, "--model", "logreg" if task == "text" else "ngram", *args,
               match=rf"text file .*data\.csv is {KIND[kind]}; give a regular file")


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("task", ["image", "gan", "cyclegan"])
def test_an_image_in_a_data_folder_that_is_not_a_file_is_one_line(data_root, capsys, task, kind):
    _pngs(data_root / "set" / "a")
    _pngs(data_root / "set" / "b")
    _plant(data_root / "set" / "a" / "odd.png", kind)
    if task == "cyclegan":
        args = ["--data-a", data_root / "set" / "a", "--data-b", data_root / "set" / "b", "--model", "identity"]
    else:
        args = ["--data", data_root / "set", "--model", "logreg" if task == "image" else "mlp-gan"]
    user_error(capsys, "train", task, *args, match=rf"image file .*a/odd\.png is {KIND[kind]}; give a regular file")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_predict_on_an_input_that_is_not_a_file_is_one_line(tmp_path_factory, tmp_path, capsys, kind):
    run = digits_run(tmp_path_factory)
    bad = _plant(tmp_path / "in.png", kind)
    user_error(capsys, "predict", run, bad, match=rf"input .*in\.png is {KIND[kind]}; give a regular file")


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_the_readers_refuse_what_is_not_a_regular_file(tmp_path, kind):
    bad = _plant(tmp_path / "x", kind)
    with pytest.raises(UserError, match=rf"text file .*x is {KIND[kind]}"):
        text.read_text_file(bad)
    with pytest.raises(UserError, match=rf"IDX file .*x is {KIND[kind]}"):
        idx.read_idx(bad)


def test_an_unreadable_file_or_folder_in_the_data_is_one_line(tmp_path, monkeypatch):
    """Permission denied (simulated: the tests run as root, who may read anything)."""
    doc = tmp_path / "doc.txt"
    doc.write_text("hello\n")

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(text, "open", denied, raising=False)
    with pytest.raises(UserError, match=r"permission denied: .*doc\.txt; check who owns it"):
        text.read_text_file(doc)
    monkeypatch.undo()
    _pngs(tmp_path / "set" / "a")
    _pngs(tmp_path / "set" / "b")
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith(os.sep + "b"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UserError, match=r"permission denied: .*set/b; check who owns it"):
        images.load_image_data(str(tmp_path / "set"))


# --- an IDX file that lies about its size -------------------------------------------------------

def _idx_header(n: int) -> bytes:
    return bytes([0, 0, 0x08, 3]) + np.array([n, 28, 28], dtype=">u4").tobytes()


def test_a_gzip_bomb_is_refused_before_it_fills_memory(tmp_path):
    huge = tmp_path / "huge.gz"          # declares 4 billion 28x28 images: 3 TB
    huge.write_bytes(gzip.compress(_idx_header(2**32 - 1)))
    with pytest.raises(UserError, match=r"declares 3\.\d+e\+12 bytes of data, more than 16 GiB"):
        idx.read_idx(huge)
    bomb = tmp_path / "bomb.gz"          # 2 images declared, 64 MB of zeros after them
    bomb.write_bytes(gzip.compress(_idx_header(2) + bytes(2 * 784 + 64 * 2**20)))
    with pytest.raises(UserError, match=r"extra bytes at the end"):
        idx.read_idx(bomb)
    cut = tmp_path / "cut.gz"            # a download that stopped half way
    whole = gzip.compress(_idx_header(50) + np.random.default_rng(0).bytes(50 * 784))
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UserError, match=r"corrupt or truncated gzip file"):
        idx.read_idx(cut)
    bad_crc = tmp_path / "crc.gz"
    bad_crc.write_bytes(whole[:-8] + bytes(8))
    with pytest.raises(UserError, match=r"corrupt or truncated gzip file"):
        idx.read_idx(bad_crc)
    good = tmp_path / "good.gz"
    good.write_bytes(whole)
    assert idx.read_idx(good).shape == (50, 28, 28)


# --- class 3: a full disk -----------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs at tmp_path/disk (root may mount one); skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the full-disk test needs a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip() or done.returncode}): "
                    "the full-disk test needs root and mount permission")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; the filler file."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(bytes(1 << 16))
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_run_that_runs_out_of_disk_is_one_line_and_its_checkpoint_stays_loadable(small_disk, capsys, monkeypatch,
                                                                                   fast_report):
    quiet_threads(monkeypatch)
    out = small_disk / "run"
    original = Run.write_history
    filled = []

    def fill_after_the_first_epoch(self, history):
        original(self, history)
        if len(history) == 1 and not filled:
            filled.append(_fill(small_disk))       # the disk is full from epoch 2 on
    monkeypatch.setattr(Run, "write_history", fill_after_the_first_epoch)
    args = ["train", "image", "--data", "digits", "--model", "mlp", "--epochs", "3", "--limit", "200",
            "--out", out, "--no-progress"]
    user_error(capsys, *args, match=r"no space left on the device to write .*disk/run/.*: free some space")
    assert filled and not (out / "metrics.json").exists() and not (out / ".lock").exists()
    position = load_state(out / "checkpoint" / "state.safetensors")["position"]     # epoch 1's, whole
    assert position["epoch"] == 1 and not position["done"]
    assert not [p for p in out.rglob("*.tmp")]                                        # no torn temporaries
    assert len(Run(out).history()) == 1 and Run.open(out, complete=False).config["task"] == "image"
    filled[0].unlink()                                                                # space again: resume
    monkeypatch.setattr(Run, "write_history", original)
    rc, _, err = cli(capsys, "train", "--resume", out)
    assert rc == 0, err
    assert Run.open(out).metrics["epochs"] == 3
