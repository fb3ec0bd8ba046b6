"""Fixtures and helpers every test file shares (pytest loads this file first)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

# Every run in the tests uses one thread unless a test says otherwise: the thread rule of
# deepskeptic.threads keeps OMP_NUM_THREADS, so two trainings compared bit for bit never differ
# because the machine's load gave them different thread counts (and no oversubscription warning
# adds a second line to a one-line error).
os.environ["OMP_NUM_THREADS"] = "1"
# Caches (judges, in-memory data, image folders) go to a folder of this test session, never ~/.cache.
if "DEEPSKEPTIC_CACHE" not in os.environ:
    import tempfile
    os.environ["DEEPSKEPTIC_CACHE"] = tempfile.mkdtemp(prefix="deepskeptic-test-cache-")

# Fields of metrics.json and history.jsonl that measure time: they differ between two identical runs.
TIME_FIELDS = frozenset({"train_seconds", "epoch_seconds", "final_fit_seconds", "img_per_second",
                         "pair_per_second", "win_per_second", "fit_per_second", "utt_per_second",
                         "char_per_second", "doc_per_second", "ex_per_second"})


def without_time(record: dict) -> dict:
    """``record`` without its time fields, for comparing two runs."""
    return {k: v for k, v in record.items() if k not in TIME_FIELDS}


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test (small tensors: a second thread only adds waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The test runs in its own folder, so default run folders (runs/...) land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tiny_speech_spec():
    """Three words, two takes, four voices: the smallest spoken data set the speech tests use."""
    from deepskeptic.data import spoken
    return spoken.SpokenSpec("tiny", words=("zero", "one", "two"), takes=2, voices=("f3", "m3", "klatt", "Alicia"))


@pytest.fixture(autouse=True)
def _default_ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in every test, as in a fresh process: a library started by an
    earlier test (Ray, uvicorn) may have left its own SIGINT handler behind."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def mapped_file(tensor) -> Path:
    """The file whose memory map holds ``tensor``'s data (from /proc/self/maps)."""
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs Linux's /proc")
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split(maxsplit=5)
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= address < high:
            return Path(rest[-1]) if len(rest) == 5 else Path("")
    return Path("")
