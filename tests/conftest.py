"""Fixtures and helpers every test file shares (pytest loads this file first)."""
from __future__ import annotations

import pytest
import torch

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
