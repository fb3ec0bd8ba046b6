"""What the reliability tests (issue 16) share: one tiny trained image run per test session."""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from deepskeptic.cli import main

TRAIN_DIGITS = ["train", "image", "--data", "digits", "--model", "logreg", "--epochs", "1"]
_runs: dict[str, Path] = {}
_copies = itertools.count()


def quiet_threads(monkeypatch) -> None:
    """Train on one thread, chosen by the environment: no 'machine is oversubscribed' warning
    (printed once per process on a busy machine) adds a line to the stderr a test reads."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def digits_run(tmp_path_factory) -> Path:
    """A complete `train image --data digits --model logreg --epochs 1` run, trained once per session
    (tests copy it before they change it). Its report.html is a stub: rendering one is slow, and
    the tests that need a real one render it themselves."""
    if "digits" not in _runs:
        out = tmp_path_factory.mktemp("digits-run") / "run"
        from deepskeptic.tasks.image import ImageTask
        with pytest.MonkeyPatch.context() as monkeypatch:
            quiet_threads(monkeypatch)
            monkeypatch.setattr(ImageTask, "write_report", lambda self, run, prepared=None, metrics=None:
                                run.write_report("<!doctype html><title>stub</title>"))
            assert main(TRAIN_DIGITS + ["--out", str(out)]) == 0
        _runs["digits"] = out
    return _runs["digits"]


def copy_run(run: Path, folder: Path) -> Path:
    """A fresh copy of ``run`` inside ``folder``."""
    out = folder / f"run{next(_copies)}"
    shutil.copytree(run, out)
    return out
