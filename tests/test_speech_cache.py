"""The speech feature cache: a data set's log-mel features are computed once into a memory-mapped
file in the data cache, reused while its audio files and the feature settings are unchanged,
rebuilt when one changes, never used torn; they equal the features computed file by file, and a
run on them gives the in-memory run's numbers."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import mapped_file, without_time
from deepskeptic.data import audio_sets, cache, feature_cache
from deepskeptic.data.audio import FeatureSettings, features_of_files
from deepskeptic.data.audio_sets import load_speech_data
from deepskeptic.tasks import get_task
from deepskeptic.tasks.speech.data import Prepared
from deepskeptic.training import resolve_settings, train

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny tensors: a second thread only adds waiting
WORDS = {"low": 300.0, "mid": 900.0, "high": 2400.0}    # a "word" is a tone: quick to learn, no espeak-ng


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "speech"


@pytest.fixture
def words(tmp_path) -> Path:
    """One folder per word, 8 takes each at several rates, lengths and formats, with noise."""
    root = tmp_path / "tones"
    rng = np.random.default_rng(0)
    for word, hz in WORDS.items():
        (root / word).mkdir(parents=True)
        for take in range(8):
            rate = (8000, 16000, 22050)[take % 3]
            t = np.arange(int(rate * rng.uniform(0.2, 0.4))) / rate
            x = 0.3 * np.sin(2 * np.pi * hz * rng.uniform(0.95, 1.05) * t) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / word / f"take{take}.{'flac' if take % 2 else 'wav'}", x.astype(np.float32), rate)
    return root


def computations(monkeypatch) -> list[int]:
    """Counts the feature computations from now on (each appends the number of files)."""
    calls: list[int] = []
    original = feature_cache._build

    def counting(paths, *args):
        calls.append(len(paths))
        return original(paths, *args)
    monkeypatch.setattr(feature_cache, "_build", counting)
    return calls


def file_by_file(paths, settings, source, *, progress=True, desc=""):
    """The in-memory path: every file's features computed and concatenated."""
    feats, seconds = features_of_files(paths, settings)
    return torch.cat(feats), torch.tensor([len(f) for f in feats], dtype=torch.int64), seconds


def assert_equal_data(a, b) -> None:
    assert torch.equal(a.feats, b.feats) and torch.equal(a.lengths, b.lengths) and torch.equal(a.offsets, b.offsets)
    assert a.seconds == b.seconds and a.paths == b.paths
    assert all(torch.equal(a.splits[k], b.splits[k]) for k in ("train", "val", "test"))


def test_computed_once_then_reused_and_equal_to_file_by_file(words, cache_dir, monkeypatch):
    calls = computations(monkeypatch)
    first = load_speech_data(str(words), progress=False)
    again = load_speech_data(str(words), progress=False, val_split=0.2)   # splits are not part of the key
    assert calls == [24] and len(list(cache_dir.glob("*.f32"))) == 1
    assert first.feats.dtype == torch.float32 and mapped_file(first.feats).suffix == ".f32"
    assert torch.equal(first.feats, again.feats)
    monkeypatch.setattr(audio_sets, "cached_features", file_by_file)
    assert_equal_data(first, load_speech_data(str(words), progress=False))
    for i in (0, 7, 23):
        assert torch.equal(first.utterance(i), features_of_files([Path(first.paths[i])])[0][0])


def test_rebuilt_when_a_file_or_a_feature_setting_changes(words, cache_dir, monkeypatch):
    calls = computations(monkeypatch)
    before = load_speech_data(str(words), progress=False)
    changed = words / "mid" / "take4.wav"
    sf.write(changed, np.zeros(8000, np.float32) + 0.01, 16000)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = load_speech_data(str(words), progress=False)
    assert calls == [24, 24] and len(list(cache_dir.glob("*.f32"))) == 1   # replaced, not added
    i = after.paths.index(str(changed))
    assert after.lengths[i] == 51 and not torch.equal(after.utterance(i), before.utterance(i))
    sf.write(words / "low" / "take8.wav", np.zeros(4000, np.float32), 16000)   # a file added
    assert len(load_speech_data(str(words), progress=False).paths) == 25 and calls[-1] == 25
    narrow = load_speech_data(str(words), n_mels=24, progress=False)         # another setting: another file
    assert narrow.feats.shape[1] == 24 and len(list(cache_dir.glob("*.f32"))) == 2


def test_a_torn_cache_is_never_used(words, cache_dir, monkeypatch):
    reference = load_speech_data(str(words), progress=False)
    calls = computations(monkeypatch)
    (path,) = cache_dir.glob("*.f32")
    size = path.stat().st_size
    for tear in (lambda f: f.truncate(size - 3),              # the end (its description) cut off
                 lambda f: f.truncate(size // 2),              # half the frames missing
                 lambda f: (f.seek(0), f.write(b"\0" * 8))):    # the header zeroed
        with open(path, "r+b") as f:
            tear(f)
        assert_equal_data(load_speech_data(str(words), progress=False), reference)
    assert calls == [24] * 3
    # A computation that dies half-way leaves no cache (and no temporary file) behind.
    path.unlink()
    monkeypatch.setattr(feature_cache, "featurise", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        load_speech_data(str(words), progress=False)
    assert list(cache_dir.iterdir()) == []


def test_a_bad_file_is_named_and_leaves_no_cache(words, cache_dir):
    (words / "high" / "broken.wav").write_bytes(b"RIFF....WAVEfmt not really")
    with pytest.raises(Exception, match=r"broken\.wav.*not readable audio"):
        load_speech_data(str(words), progress=False)
    assert not list(cache_dir.glob("*"))


def test_features_in_worker_processes_equal_one_process(words, monkeypatch, tmp_path):
    serial = load_speech_data(str(words), progress=False)
    monkeypatch.setenv("DEEPSKEPTIC_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(feature_cache, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(feature_cache, "CHUNK_FILES", 5)      # 5 chunks over the pool
    monkeypatch.setattr(cache, "pool_workers", lambda items, least: 2)
    assert_equal_data(load_speech_data(str(words), progress=False), serial)


def test_a_run_gives_the_same_numbers_cold_warm_and_in_memory(words, tmp_path, cache_dir, monkeypatch):
    task = get_task("speech")
    settings = resolve_settings(task, {"data": str(words), "model": "mlp", "epochs": 3, "progress": False}, None)
    cold = train(task, dict(settings), out=tmp_path / "cold").metrics          # computes the features
    warm = train(task, dict(settings), out=tmp_path / "warm").metrics          # reads them
    assert len(list(cache_dir.glob("*.f32"))) == 1
    monkeypatch.setattr(audio_sets, "cached_features", file_by_file)
    memory = Prepared(load_speech_data(str(words), progress=False))
    assert mapped_file(memory.data.feats).suffix != ".f32"                  # in memory
    in_memory = train(task, dict(settings), prepared=memory, out=tmp_path / "memory").metrics
    assert cold["test_accuracy"] > 0.5
    assert without_time(cold) == without_time(warm) == without_time(in_memory)
