"""Speech features in the data cache: the log-mel features of a data set's audio files computed
once, into one memory-mapped float32 file, and read from it afterwards.

The file holds every utterance's (T_i, n_mels) frames one after another, in the order of the
files; its description records each utterance's frame count and the seconds of audio. It is
keyed (``cache.files_key``) by the files' paths, sizes and modification times, the feature
settings, and the versions of the libraries that compute them (a new librosa may change a mel
filter): reused while all are unchanged, rebuilt when one changes, never used torn (see
``deepskeptic.data.cache``). One cache file per data set and feature settings: a rebuild
replaces it.

Features are computed over the CPU cores (forked worker processes, in chunks of files) when there
are many files; each worker computes exactly what ``features_of_files`` does, so the cached
features equal the in-memory path's bit for bit.
"""
from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from deepskeptic.data import cache
from deepskeptic.data.audio import FeatureSettings, load_audio, log_mel
from deepskeptic.errors import FileFault, UserError
from deepskeptic.threads import one_thread

FORMAT = 1                 # bump when a change in the features makes old cache files wrong
CHUNK_FILES = 32           # files per task of a worker process
PARALLEL_MIN_FILES = 200   # fewer files are featurised in this process (a pool costs a second to start)
LIBRARIES = ("torch", "librosa", "scipy", "soundfile", "numpy")


def _versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def cache_path(source: str, settings: FeatureSettings) -> Path:
    name = hashlib.sha256(json.dumps([str(source), settings.to_dict()]).encode()).hexdigest()[:24]
    return cache.cache_root() / "speech" / f"{name}.f32"


def features_key(paths: list[Path], settings: FeatureSettings) -> str:
    try:
        return cache.files_key([(p,) for p in paths], "speech-features", FORMAT, settings.to_dict(), _versions())
    except OSError as exc:       # a file went between listing and now
        raise FileFault.of(exc) from None


def cached_features(paths: list[Path], settings: FeatureSettings, source: str, *, progress: bool = True,
                    desc: str = "features") -> tuple[torch.Tensor, torch.Tensor, float]:
    """(features (total frames, n_mels) float32 over the memory-mapped cache, frames per file (N,)
    int64, seconds of audio) of ``paths``, computed first when the cache has none that matches.
    UserErrors name a bad file, as ``features_of_files`` does."""
    key = features_key(paths, settings)
    target = cache_path(source, settings)
    opened = cache.open_array(target, key, copy_on_write=True)
    if opened is None:
        opened = _build(paths, settings, target, key, progress, desc)
    array, description = opened
    lengths = torch.tensor(description["lengths"], dtype=torch.int64)
    return torch.from_numpy(array), lengths, float(description["seconds"])


def _build(paths: list[Path], settings: FeatureSettings, target: Path, key: str, progress: bool, desc: str):
    names = [str(p) for p in paths]
    chunks = [names[i:i + CHUNK_FILES] for i in range(0, len(names), CHUNK_FILES)]
    workers = cache.pool_workers(len(names), PARALLEL_MIN_FILES)

    def produce(append) -> dict:
        lengths: list[int] = []
        seconds = 0.0
        for feats, secs in cache.imap_chunks(featurise, [(c, settings) for c in chunks], [len(c) for c in chunks],
                                             workers=workers, desc=desc, unit="file", show=progress):
            for f, s in zip(feats, secs):
                append(f)
                lengths.append(len(f))
                seconds += s                    # summed in file order, as features_of_files does
        if features_key(paths, settings) != key:
            raise UserError("an audio file changed while its features were computed; run the command "
                            "again when nothing writes to the data")
        return {"lengths": lengths, "seconds": seconds, "files": len(names)}

    return cache.build_appended(target, key, (settings.n_mels,), produce, "float32", copy_on_write=True)


def featurise(paths: list[str], settings: FeatureSettings) -> tuple[list[np.ndarray], list[float]]:
    """([(T_i, n_mels) float32 features], [seconds of audio]) of ``paths``: a worker's task."""
    feats, seconds = [], []
    with one_thread():
        for path in paths:
            samples = load_audio(path, settings.sample_rate)
            seconds.append(len(samples) / settings.sample_rate)
            feats.append(log_mel(samples, settings).numpy())
    return feats, seconds
