"""Speech data sets: the built-in spoken sets, a CSV manifest, or a folder with one subfolder per word.

A manifest is a CSV file with the columns ``path,transcript`` and optionally ``speaker`` and
``split`` (train, val or test); a header row naming them is recommended (without one the columns
are taken in that order). Paths are relative to the manifest's folder. A folder holds either a
``manifest.csv`` or one subfolder per word (the folder name is the transcript), optionally inside
``train/`` and ``test/``.

Splits never depend on the training seed. In order of preference: the manifest's ``split`` column;
``train/`` and ``test/`` folders; by speaker when every utterance names one (test and validation
speakers are never heard in training); otherwise by utterance, stratified by transcript.
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepskeptic.data.audio import AUDIO_EXTENSIONS, FeatureSettings, audio_files
from deepskeptic.data.feature_cache import cached_features
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.fileio import check_regular_file

SPLIT_STATE = 0  # fixed random_state for every split: splits never depend on the training seed
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


@dataclass
class Utterance:
    path: Path
    transcript: str
    speaker: str = ""
    split: str = ""           # train, val, test, or '' when the source does not say
    origin: str = ""          # where it came from, for error messages ("manifest.csv row 7")


@dataclass
class SpeechData:
    """Every utterance's features in one tensor: utterance i is feats[offsets[i]:offsets[i]+lengths[i]]."""
    name: str
    source: str
    feats: torch.Tensor            # (total frames, n_mels) float32
    offsets: torch.Tensor          # (N,) int64
    lengths: torch.Tensor          # (N,) int64 frames
    transcripts: list[str]
    speakers: list[str]            # '' where unknown
    paths: list[str]
    origins: list[str]
    splits: dict[str, torch.Tensor]  # 'train', 'val', 'test' -> (n,) int64 utterance indices
    split_by: str                  # 'manifest', 'folders', 'speaker' or 'utterance'
    seconds: float                 # of audio, all splits
    features: FeatureSettings = field(default_factory=FeatureSettings)

    def utterance(self, i: int) -> torch.Tensor:
        """(T, n_mels) features of utterance i."""
        start = int(self.offsets[i])
        return self.feats[start:start + int(self.lengths[i])]

    def info(self) -> dict:
        return {"name": self.name, "source": self.source, "split_by": self.split_by,
                "features": self.features.to_dict(), "seconds": round(self.seconds, 1),
                **{k: len(v) for k, v in self.splits.items()},
                **{f"{k}_speakers": sorted({self.speakers[i] for i in v.tolist()} - {""})
                   for k, v in self.splits.items()}}


def builtin_names() -> list[str]:
    from deepskeptic.data.spoken import SPECS
    return list(SPECS)


def load_speech_data(spec: str, *, n_mels: int = 40, val_split: float = 0.1, test_split: float = 0.2,
                     limit: int | None = None, progress: bool = True) -> SpeechData:
    """Read the utterances of ``spec`` (a built-in name, a manifest or a folder), split them, and
    compute their log-mel features."""
    for name, value in (("val-split", val_split), ("test-split", test_split)):
        if not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise UserError(f"--{name} {value!r} is out of range: give a fraction in [0, 1), e.g. 0.1")
    if not isinstance(n_mels, int) or not 8 <= n_mels <= 128:
        raise UserError(f"--n-mels {n_mels!r} is out of range: give a whole number from 8 to 128 (40 is usual)")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"--limit {limit!r} is invalid: give a positive number of training utterances")
    utterances, source = read_utterances(spec, progress=progress)
    split_by, splits = split_utterances(utterances, val_split, test_split)
    if limit is not None and limit < len(splits["train"]):
        keep = np.random.default_rng(SPLIT_STATE).permutation(len(splits["train"]))[:limit]
        splits["train"] = np.sort(splits["train"][keep])
    for part in ("train", "test"):
        if len(splits[part]) == 0:
            raise UserError(f"data '{spec}' has no {part} utterances: add recordings or change the split")
    settings = FeatureSettings(n_mels=n_mels)
    # computed once into the data cache (memory-mapped; rebuilt when a file or a setting changes)
    feats, lengths, seconds = cached_features([u.path for u in utterances], settings, source, progress=progress,
                                              desc=f"features of {Path(str(spec)).name}")
    offsets = torch.cumsum(lengths, 0) - lengths
    return SpeechData(
        name=str(spec), source=source, feats=feats, offsets=offsets, lengths=lengths,
        transcripts=[u.transcript for u in utterances], speakers=[u.speaker for u in utterances],
        paths=[str(u.path) for u in utterances], origins=[u.origin for u in utterances],
        splits={k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in splits.items()},
        split_by=split_by, seconds=seconds, features=settings)


# ------------------------------------------------------------------ sources

def read_utterances(spec: str, progress: bool = True) -> tuple[list[Utterance], str]:
    """The utterances of a built-in set, a manifest file or a folder, and where they came from."""
    from deepskeptic.data import spoken

    spec = str(spec)
    if spec in spoken.SPECS:
        manifest = spoken.ensure(spec, progress=progress)
        return read_manifest(manifest), str(manifest.parent)
    path = Path(spec).expanduser()
    if not path.exists():
        if "/" not in spec and not spec.endswith(".csv"):
            raise unknown_name("speech data set", spec, builtin_names(), hint=" (or a folder or manifest .csv path)")
        raise UserError(f"speech data '{spec}' does not exist: give a manifest .csv, a folder with one "
                        f"subfolder per word, or one of {', '.join(builtin_names())}")
    if not path.is_dir():
        return read_manifest(path), str(path.resolve())
    if (path / "manifest.csv").is_file():
        return read_manifest(path / "manifest.csv"), str(path.resolve())
    return read_word_folders(path), str(path.resolve())


def _header(row: list[str]) -> list[str] | None:
    names = [c.strip().lower() for c in row]
    return names if "path" in names and "transcript" in names else None


def read_manifest(manifest: Path) -> list[Utterance]:
    """Rows of a CSV manifest as utterances; every path is checked to exist."""
    check_regular_file(manifest, "manifest")   # a FIFO would block the read forever
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read manifest '{manifest}' ({exc}); give a UTF-8 CSV file "
                        f"with the columns path,transcript") from None
    header = _header(rows[0]) if rows else None
    columns = header or ["path", "transcript", "speaker", "split"]
    first = 2 if header else 1
    out = []
    for number, row in enumerate(rows[1:] if header else rows, start=first):
        if not any(c.strip() for c in row):
            continue
        where = f"manifest '{manifest}' row {number}"
        if len(row) < 2:
            raise UserError(f"{where} has {len(row)} column(s); each row needs at least path,transcript")
        values = {c: row[k].strip() if k < len(row) else "" for k, c in enumerate(columns)}
        if not values["path"]:
            raise UserError(f"{where} has an empty path")
        transcript = " ".join(values["transcript"].split())
        if not transcript:
            raise UserError(f"{where} has an empty transcript")
        audio = (manifest.parent / values["path"]).expanduser()
        if not audio.exists():
            raise UserError(f"{where} points to '{values['path']}', which does not exist "
                            f"(paths are relative to the manifest's folder)")
        check_regular_file(audio, f"{where}: audio file")
        split = values.get("split", "")
        if split and split.lower() not in SPLIT_NAMES:
            raise UserError(f"{where} has split '{split}'; use train, val or test (or leave it empty)")
        out.append(Utterance(audio, transcript, values.get("speaker", ""), SPLIT_NAMES.get(split.lower(), ""), where))
    if not out:
        raise UserError(f"manifest '{manifest}' lists no recordings; add rows path,transcript")
    given = {bool(u.split) for u in out}
    if given == {True, False}:
        raise UserError(f"manifest '{manifest}' gives a split for some rows but not for others: fill it in everywhere or nowhere")
    return out


def _word_folders(root: Path) -> dict[str, list[Path]]:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subs:
        raise UserError(f"data folder '{root}' has no manifest.csv and no word subfolders; put recordings "
                        f"in one subfolder per word (e.g. yes/ and no/) or add a manifest.csv")
    words = {p.name: audio_files(p) for p in subs}
    for word, files in words.items():
        if not files:
            raise UserError(f"word folder '{root / word}' has no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}): "
                            "add recordings or remove the folder")
    return words


def read_word_folders(root: Path) -> list[Utterance]:
    names = {p.name for p in root.iterdir() if p.is_dir()}
    parts = ["train", "test"] + (["val"] if "val" in names else []) if {"train", "test"} <= names else [""]
    out = []
    for part in parts:
        for word, files in _word_folders(root / part if part else root).items():
            out += [Utterance(f, " ".join(word.split()), "", part, f"folder '{f.parent}'") for f in files]
    return out


# ------------------------------------------------------------------ splits

def split_utterances(utterances: list[Utterance], val_split: float, test_split: float
                     ) -> tuple[str, dict[str, np.ndarray]]:
    """('manifest'|'folders'|'speaker'|'utterance', {'train', 'val', 'test'} -> index arrays)."""
    n = len(utterances)
    if utterances[0].split:
        splits = {k: np.array([i for i, u in enumerate(utterances) if u.split == k], dtype=np.int64)
                  for k in ("train", "val", "test")}
        kind = "folders" if utterances[0].origin.startswith("folder") else "manifest"
        return kind, splits
    speakers = [u.speaker for u in utterances]
    if all(speakers) and len(set(speakers)) >= 3:
        test, rest = _group_split(np.arange(n), speakers, test_split)
        val, train = _group_split(rest, speakers, val_split)
        return "speaker", {"train": train, "val": val, "test": test}
    if all(speakers):
        print(f"warning: only {len(set(speakers))} speaker(s): splitting by utterance, so test voices "
              f"are heard in training", file=sys.stderr)
    labels = [u.transcript for u in utterances]
    test, rest = _stratified(np.arange(n), labels, test_split)
    val, train = _stratified(rest, labels, val_split)
    return "utterance", {"train": train, "val": val, "test": test}


def _group_split(index: np.ndarray, groups: list[str], frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, rest) of ``index``: whole groups held out, about ``frac`` of the groups."""
    names = sorted({groups[i] for i in index})
    if frac <= 0 or len(names) < 2:
        return index[:0], index
    order = np.random.default_rng(SPLIT_STATE).permutation(len(names))
    n_out = min(len(names) - 1, max(1, round(frac * len(names))))
    out = {names[k] for k in order[:n_out]}
    mask = np.array([groups[i] in out for i in index], dtype=bool)
    return index[mask], index[~mask]


def _stratified(index: np.ndarray, labels: list[str], frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(held-out, rest) of ``index``, stratified by label when every label occurs twice or more."""
    from collections import Counter

    from sklearn.model_selection import train_test_split

    if frac <= 0 or len(index) < 2:
        return index[:0], index
    y = [labels[i] for i in index]
    stratify = y if min(Counter(y).values()) >= 2 else None
    for strat in ([stratify, None] if stratify is not None else [None]):
        try:
            rest, out = train_test_split(index, test_size=frac, random_state=SPLIT_STATE, stratify=strat)
            return np.sort(out), np.sort(rest)
        except ValueError:
            continue
    raise UserError(f"too few recordings ({len(index)}) to hold out {frac:.0%}: add recordings or lower the split")
