"""Text data: files, folders, CSV tables, the built-in corpora, character vocabularies, hash splits.

Two shapes come out of here:
- ``Corpus``: one training, one validation and one test string for character language models.
  A user's file or folder is split contiguously: the last ``test_split`` of the text is the test
  text, the ``val_split`` before it the validation text. Built-in corpora made of documents
  (``fortunes``, ``python-stdlib``) are split document by document by a hash of each document's
  text, so a document and its duplicates always land on the same side.
- ``LabelledTexts``: documents with class labels for text classification (CSV, folder per class,
  ``fortunes-categories``), always split by the hash of each document's text.

Text rules: bytes are decoded as strict UTF-8 (a leading byte-order mark is dropped) unless an
``encoding`` is given; invalid UTF-8 is an error that names the byte offset. Files with NUL bytes
are binary and refused. Windows line ends (CRLF) become LF.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepskeptic.errors import FileFault, UserError, unknown_name
from deepskeptic.fileio import check_regular_file

FORTUNES_DIRS = [Path("/usr/share/games/fortunes")]
FORTUNES_HOW = "apt-get install fortunes (Debian/Ubuntu), or put fortune files in $DEEPSKEPTIC_DATA/fortunes"
CORPORA = ["fortunes", "python-stdlib"]
LABELLED = ["fortunes-categories"]
STDLIB_MAX_CHARS = 4_000_000  # python-stdlib is ~30 MB; a 4 MB sample keeps baselines and epochs quick
UNK = "\ufffd"                # what an out-of-vocabulary character decodes to (the replacement char)
PAD = ""                      # the padding symbol of classification inputs (decodes to nothing)
MAX_TEXT_BYTES = 4 << 30      # one text file read whole: 4 GiB (a str of it takes up to 4x that)


# ------------------------------------------------------------------ reading text

def decode_bytes(data: bytes, where: str, encoding: str | None = None) -> str:
    """Decode a file's bytes; one-line UserErrors for binary files and undecodable bytes."""
    if encoding is None:
        if b"\x00" in data:
            raise UserError(f"{where} looks like a binary file (it contains NUL bytes); give a text file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{where} is not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {e.start}; "
                            f"pass --encoding with the file's encoding (e.g. --encoding latin-1)") from None
    else:
        try:
            text = data.decode(encoding)
        except LookupError:
            raise UserError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8, "
                            f"latin-1 or cp1252") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{where} cannot be decoded as {encoding}: byte offset {e.start}; "
                            f"try another --encoding") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def read_file_bytes(path: Path, what: str = "text file") -> bytes:
    """The bytes of the regular file ``path``: a FIFO, a device (/dev/zero), a socket or a folder
    is one line naming it (it would block the read forever, or never end); so is a file that
    cannot be read (permission denied) or that is larger than MAX_TEXT_BYTES."""
    path = Path(path)
    if not os.path.lexists(path):
        raise UserError(f"{what} {path} does not exist; check the path")
    check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_TEXT_BYTES:
                raise UserError(f"{what} {path} is {size / 2**30:.1f} GiB, more than the "
                                f"{MAX_TEXT_BYTES >> 30} GiB deepskeptic reads into memory; give a smaller file")
            return f.read(MAX_TEXT_BYTES + 1)
    except OSError as e:
        raise FileFault.of(e, path) from None


def read_text_file(path: Path, encoding: str | None = None) -> str:
    return decode_bytes(read_file_bytes(path), str(path), encoding)


def _text_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_folder(folder: Path, encoding: str | None = None) -> tuple[list[tuple[Path, str]], int]:
    """Every non-hidden file below ``folder`` in sorted order, as (path, text); binary files are
    skipped and counted. Undecodable text is an error that names the file."""
    docs, skipped = [], 0
    for path in _text_files(folder):
        data = read_file_bytes(path)
        if encoding is None and b"\x00" in data:
            skipped += 1
            continue
        docs.append((path, decode_bytes(data, str(path), encoding)))
    return docs, skipped


# ------------------------------------------------------------------ splits

def hash_fraction(text: str) -> float:
    """A number in [0, 1) fixed by the text alone (SHA-1): the same text always gets the same side."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2 ** 64


def hash_side(text: str, val_split: float, test_split: float) -> str:
    u = hash_fraction(text)
    return "test" if u < test_split else "val" if u < test_split + val_split else "train"


def check_splits(val_split: float, test_split: float) -> None:
    for name, v in (("--val-split", val_split), ("--test-split", test_split)):
        if not 0 < v < 1:
            raise UserError(f"{name} must be a fraction between 0 and 1, got {v}")
    if val_split + test_split >= 0.9:
        raise UserError(f"--val-split + --test-split is {val_split + test_split:.2f}: leave at least 10 % for training")


# ------------------------------------------------------------------ built-in documents

def fortunes_dir() -> Path | None:
    dirs = ([Path(os.environ["DEEPSKEPTIC_DATA"]) / "fortunes"] if os.environ.get("DEEPSKEPTIC_DATA") else [])
    for d in dirs + FORTUNES_DIRS:
        if d.is_dir() and any(_fortune_files(d)):
            return d
    return None


def _fortune_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.is_symlink()
                  and p.suffix not in (".dat", ".u8") and not p.name.startswith("."))


def fortunes() -> tuple[list[tuple[str, str]], str]:
    """(category, fortune text) for every fortune, in file order; the category is its file's name."""
    d = fortunes_dir()
    if d is None:
        raise UserError(f"the fortunes corpus is not installed: {FORTUNES_HOW}")
    docs = []
    for path in _fortune_files(d):
        lines: list[str] = []
        for line in read_text_file(path).split("\n") + ["%"]:  # a line holding '%' ends a fortune
            if line.rstrip() == "%":
                if "".join(lines).strip():
                    docs.append((path.name, "\n".join(lines).strip("\n")))
                lines = []
            else:
                lines.append(line)
    return docs, str(d)


def python_stdlib() -> tuple[list[tuple[str, str]], str]:
    """(relative path, source) of the interpreter's standard-library modules, tests excluded; a
    sample of at most STDLIB_MAX_CHARS characters chosen by a hash of each path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
    files = [p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts)]
    files.sort(key=lambda p: hash_fraction(str(p.relative_to(root))))
    docs, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8").replace("\r\n", "\n")
        except (UnicodeDecodeError, OSError):
            continue
        if total + len(text) > STDLIB_MAX_CHARS:
            continue
        docs.append((str(path.relative_to(root)), text))
        total += len(text)
    docs.sort()
    return docs, str(root)


def text_datasets() -> list[dict]:
    d = fortunes_dir()
    return [
        {"name": "fortunes", "task": "textgen", "available": d is not None, "location": str(d) if d else None,
         "description": "~2.5 MB of fortune cookies in 40+ categories; held-out 10 % by a hash of each fortune",
         "how_to_get": FORTUNES_HOW},
        {"name": "python-stdlib", "task": "textgen", "available": True,
         "location": sysconfig.get_paths()["stdlib"],
         "description": f"this interpreter's standard-library sources (a {STDLIB_MAX_CHARS // 10**6} MB sample)",
         "how_to_get": "always there"},
        {"name": "fortunes-categories", "task": "text", "available": d is not None,
         "location": str(d) if d else None,
         "description": "classify a fortune's category (its file) from its text; split by a hash of the text",
         "how_to_get": FORTUNES_HOW},
    ]


def fetch_text_dataset(name: str) -> str:
    """The text data sets come with the machine, not from the network: say where each one is."""
    d = fortunes_dir()
    if name == "python-stdlib":
        return sysconfig.get_paths()["stdlib"] + " (always there; nothing to fetch)"
    if d is None:
        raise UserError(f"{name} is not downloaded by deepskeptic: {FORTUNES_HOW}")
    return f"{d} (already installed; nothing to fetch)"


# ------------------------------------------------------------------ language-model corpora

@dataclass
class Corpus:
    name: str
    source: str
    train: str
    val: str
    test: str
    split: str  # how the held-out text was chosen, in words


def load_corpus(spec: str, *, encoding: str | None = None, val_split: float = 0.05,
                test_split: float = 0.1) -> Corpus:
    """A built-in corpus name, a text file or a folder of text files -> Corpus."""
    check_splits(val_split, test_split)
    spec = str(spec)
    if spec in ("fortunes", "python-stdlib"):
        docs, source = fortunes() if spec == "fortunes" else python_stdlib()
        # Every document ends with the fortune separator, so a model learns where one ends.
        parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        for _, text in docs:
            parts[hash_side(text, val_split, test_split)].append(text + "\n%\n" if spec == "fortunes" else text)
        return Corpus(spec, source, *("".join(parts[s]) for s in ("train", "val", "test")),
                      split=f"by a hash of each document: {test_split:.0%} test, {val_split:.0%} validation")
    path = Path(spec)
    if not path.exists():
        raise unknown_name("text corpus", spec, CORPORA, hint=" or the path of a text file or folder")
    if path.is_dir():
        docs, skipped = read_folder(path, encoding)
        if not docs:
            raise UserError(f"folder {path} has no text files" + (f" ({skipped} binary files skipped)" if skipped else ""))
        text = "".join(t if t.endswith("\n") else t + "\n" for _, t in docs)
    else:
        text = read_text_file(path, encoding)
    if not text.strip():
        raise UserError(f"{path} is empty; give a file with text in it")
    n = len(text)
    test_start = int(round(n * (1 - test_split)))
    val_start = int(round(n * (1 - test_split - val_split)))
    return Corpus(path.name, str(path), text[:val_start], text[val_start:test_start], text[test_start:],
                  split=f"contiguous: the last {test_split:.0%} test, the {val_split:.0%} before it validation")


# ------------------------------------------------------------------ vocabulary

class Vocab:
    """Characters <-> ids. Id 0 is the unknown symbol (and, with ``pad``, id 0 is padding, 1 unknown)."""

    def __init__(self, chars: list[str], pad: bool = False):
        self.pad = pad
        self.specials = [PAD, UNK] if pad else [UNK]
        self.chars = list(chars)
        self.itos = self.specials + self.chars
        self.unk = len(self.specials) - 1
        order = np.argsort([ord(c) for c in self.chars])
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)[order]
        self._ids = (np.arange(len(self.chars)) + len(self.specials))[order]

    @classmethod
    def from_text(cls, text: str, min_count: int = 1, pad: bool = False) -> "Vocab":
        """Characters seen at least ``min_count`` times in ``text``, most frequent first."""
        counts = Counter(text)
        chars = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (-counts[c], c))
        return cls(chars, pad=pad)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """str -> (len(text),) int64 ids; characters outside the vocabulary become ``unk``."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if len(self._codes) == 0:
            return torch.full((len(codes),), self.unk, dtype=torch.long)
        pos = np.clip(np.searchsorted(self._codes, codes), 0, len(self._codes) - 1)
        ids = np.where(self._codes[pos] == codes, self._ids[pos], self.unk)
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids) -> str:
        return "".join(self.itos[i] for i in (ids.tolist() if hasattr(ids, "tolist") else ids))

    def to_json(self) -> dict:
        return {"chars": "".join(self.chars), "pad": self.pad}

    @classmethod
    def from_json(cls, d: dict) -> "Vocab":
        return cls(list(d["chars"]), pad=d.get("pad", False))


# ------------------------------------------------------------------ labelled documents

@dataclass
class LabelledTexts:
    name: str
    source: str
    classes: list[str]
    texts: dict[str, list[str]]      # 'train' / 'val' / 'test' -> documents
    labels: dict[str, list[int]]     # the same keys -> class indices
    skipped: int = 0                 # rows or files left out (empty text, binary file)


def _read_csv(path: Path, text_col: str, label_col: str, encoding: str | None) -> tuple[list[tuple[str, str]], int]:
    text = read_text_file(path, encoding)
    if not text.strip():
        raise UserError(f"{path} is empty; give a CSV file with a header row and one row per document")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    for flag, col in (("--text-col", text_col), ("--label-col", label_col)):
        if col not in columns:
            raise unknown_name(f"column ({flag}) in {path.name}", col, columns)
    rows, skipped = [], 0
    try:
        for row in reader:
            t, lab = (row.get(text_col) or "").strip(), (row.get(label_col) or "").strip()
            if not t or not lab:
                skipped += 1
                continue
            rows.append((lab, t))
    except csv.Error as e:
        raise UserError(f"{path} is not a valid CSV file: {e}") from None
    return rows, skipped


def load_labelled(spec: str, *, text_col: str = "text", label_col: str = "label", encoding: str | None = None,
                  val_split: float = 0.1, test_split: float = 0.15) -> LabelledTexts:
    """A CSV file, a folder with one subfolder per class, or 'fortunes-categories' -> LabelledTexts."""
    check_splits(val_split, test_split)
    spec = str(spec)
    skipped = 0
    if spec == "fortunes-categories":
        rows, source = fortunes()
        name = spec
    else:
        path = Path(spec)
        if not path.exists():
            raise unknown_name("labelled text data", spec, LABELLED, hint=" or a .csv file or a folder of class folders")
        name, source = path.name, str(path)
        if path.is_dir():
            classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            if not classes:
                raise UserError(f"folder {path} has no class subfolders; put each class's documents in its own subfolder")
            rows = []
            for folder in classes:
                docs, n_binary = read_folder(folder, encoding)
                skipped += n_binary
                rows += [(folder.name, t.strip()) for _, t in docs if t.strip()]
                skipped += sum(1 for _, t in docs if not t.strip())
        else:
            rows, skipped = _read_csv(path, text_col, label_col, encoding)
    if not rows:
        raise UserError(f"{spec} has no documents with text and a label")
    classes = sorted({lab for lab, _ in rows})
    if len(classes) < 2:
        raise UserError(f"{spec} has a single class ({classes[0]!r}); classification needs at least two labels")
    index = {c: i for i, c in enumerate(classes)}
    texts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for lab, t in rows:
        side = hash_side(t, val_split, test_split)
        texts[side].append(t)
        labels[side].append(index[lab])
    for side in ("train", "test"):
        if not texts[side]:
            raise UserError(f"{spec} has too few documents ({len(rows)}) to hold out a {side} set; add documents")
    return LabelledTexts(name, source, classes, texts, labels, skipped)
