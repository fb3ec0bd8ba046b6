"""A corpus file or folder as a memory-mapped token file of the data cache: its character ids.

The text is read in chunks, never held as one string, in two passes with a progress bar each::

    pass 1 (reading)   decode, check (binary files, undecodable bytes, an empty text), count the
                       characters and learn the alphabet (every character the text uses)
    pass 2 (encoding)  decode again, write each character's alphabet id into the cache file being
                       built; count the training characters (a bincount of ids[:val_start]);
                       choose the vocabulary as ``Vocab.from_text`` does; rewrite the ids in place
                       as vocabulary ids (characters left out of it become the unknown id, 0)

The ids are uint8 when the alphabet has fewer than 256 characters, else uint16 (int32 past 65535).
Decoding follows ``deepskeptic.data.text`` to the character: strict UTF-8 unless an ``encoding``
is given, a leading byte-order mark dropped and CRLF made LF per file, a file with NUL bytes
refused (a folder skips it), and a folder's documents joined with a newline after each that does
not end with one. So the ids, the vocabulary and the split points equal those of the in-memory
path (``load_corpus`` + ``Vocab.from_text`` + ``Vocab.encode``) exactly.

One cache file per (corpus path, encoding, splits, min_count), keyed by the files' names, sizes
and modification times (``cache.files_key``): reused while they are unchanged, rebuilt when one
changes, never used torn (see ``deepskeptic.data.cache``).
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deepskeptic.data import cache
from deepskeptic.data.text import Vocab, _text_files
from deepskeptic.errors import FileFault, UserError
from deepskeptic.fileio import check_regular_file

FORMAT = 1                 # bump when a change in decoding or layout makes old token files wrong
CHUNK_BYTES = 1 << 22      # bytes read at a time: 4 MiB (a chunk's str and ids take ~25 MiB at most)
CODEPOINTS = 0x110000      # every Unicode code point: the size of the code point -> id table


class _Binary(Exception):
    """A NUL byte: the file is binary (refused, or skipped in a folder)."""


class _Undecodable(Exception):
    def __init__(self, message: str, scanned: int):
        super().__init__(message)
        self.message, self.scanned = message, scanned   # bytes of the file read so far


@dataclass
class TextSource:
    """A corpus file or folder as it is decoded: its files in order, which of them are binary
    (skipped), the encoding (None: strict UTF-8)."""
    path: Path
    files: list[Path]
    folder: bool
    encoding: str | None
    binary: frozenset[str] = field(default_factory=frozenset)   # names relative to a folder

    @classmethod
    def of(cls, path: Path, encoding: str | None) -> "TextSource":
        _check_encoding(encoding)
        if path.is_dir():
            return cls(path, _text_files(path), True, encoding)
        return cls(path, [check_regular_file(path, "text file")], False, encoding)

    def name_of(self, file: Path) -> str:
        return file.relative_to(self.path).as_posix() if self.folder else file.name

    def key(self, *settings: Any) -> str:
        """The hash of the files' names, sizes and modification times and of ``settings`` (a
        FileFault if a file went)."""
        try:
            return cache.files_key([(p, self.name_of(p)) for p in self.files], "textgen-tokens", FORMAT,
                                   self.encoding, *settings)
        except OSError as exc:
            raise FileFault.of(exc) from None

    def pieces(self, bar=None) -> Iterator[str]:
        """The corpus text in pieces (the binary files left out), as ``load_corpus`` makes it."""
        for file in self.files:
            if self.name_of(file) in self.binary:
                if bar is not None:
                    bar.update(_size(file))
                continue
            last = ""
            for piece in file_pieces(file, self.encoding, bar):
                if piece:
                    last = piece[-1]
                    yield piece
            if self.folder and last != "\n":
                yield "\n"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _check_encoding(encoding: str | None) -> None:
    if encoding is None:
        return
    try:
        text = codecs.lookup(encoding)._is_text_encoding
    except LookupError:
        text = False
    if not text:
        raise UserError(f"unknown --encoding {encoding!r}; use a Python codec name such as utf-8, "
                        f"latin-1 or cp1252")


def file_pieces(path: Path, encoding: str | None, bar=None) -> Iterator[str]:
    """One file's text in pieces: decoded chunk by chunk, the leading byte-order mark dropped,
    CRLF made LF (a CR at a chunk's end waits for the next chunk). Raises _Binary at a NUL byte
    (when ``encoding`` is None) and _Undecodable with ``decode_bytes``'s message."""
    decoder = codecs.getincrementaldecoder(encoding or "utf-8")("strict")
    where, read, started, held = str(path), 0, False, ""
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise FileFault.of(exc, path) from None
    with f:
        while True:
            try:
                raw = f.read(CHUNK_BYTES)
            except OSError as exc:
                raise FileFault.of(exc, path) from None
            if encoding is None and b"\x00" in raw:
                raise _Binary
            pending = _pending(decoder)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                offset = read - pending + e.start
                if encoding is None:
                    message = (f"{where} is not valid UTF-8: byte 0x{e.object[e.start]:02x} at byte offset "
                               f"{offset}; pass --encoding with the file's encoding (e.g. --encoding latin-1)")
                else:
                    message = f"{where} cannot be decoded as {encoding}: byte offset {offset}; try another --encoding"
                raise _Undecodable(message, read + len(raw)) from None
            read += len(raw)
            if bar is not None:
                bar.update(len(raw))
            if text and not started:
                started, text = True, text.removeprefix("\ufeff")
            text = held + text
            held = ""
            if raw and text.endswith("\r"):
                text, held = text[:-1], "\r"
            yield text.replace("\r\n", "\n")
            if not raw:
                return


def _pending(decoder) -> int:
    """Bytes the incremental decoder holds from earlier chunks (the start of a character)."""
    try:
        state = decoder.getstate()
        return len(state[0]) if isinstance(state[0], (bytes, bytearray)) else 0
    except Exception:  # noqa: BLE001 - a codec without state
        return 0


def _nul_after(path: Path, start: int) -> bool:
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(CHUNK_BYTES):
            if b"\x00" in chunk:
                return True
    return False


def _codes(piece: str) -> np.ndarray:
    """(len(piece),) uint32 code points (a lone surrogate passes as itself)."""
    return np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


# ------------------------------------------------------------------ pass 1: read and check

@dataclass
class Survey:
    chars: int              # characters of the whole text
    alphabet: np.ndarray    # sorted code points of every character it uses
    binary: frozenset[str]  # a folder's files left out
    blank: bool             # nothing but white space


def survey(source: TextSource) -> Survey:
    """Pass 1: decode every file, checking it; count the characters and learn the alphabet."""
    seen = np.zeros(CODEPOINTS, dtype=bool)
    total, binary, blank = 0, set(), True
    with cache.progress_bar(sum(_size(p) for p in source.files), f"reading {source.path.name}", "B",
                            unit_scale=True) as bar:
        for file in source.files:
            chars, new, last, file_blank = 0, [], "", True
            try:
                for piece in file_pieces(file, source.encoding, bar):
                    if not piece:
                        continue
                    codes = _codes(piece)
                    fresh = codes[~seen[codes]]
                    if len(fresh):
                        fresh = np.unique(fresh)
                        seen[fresh] = True
                        new.append(fresh)
                    chars += len(piece)
                    last = piece[-1]
                    if file_blank and not piece.isspace():
                        file_blank = False
            except (_Binary, _Undecodable) as problem:
                nul = isinstance(problem, _Binary) or (
                    source.encoding is None and _nul_after(file, problem.scanned))
                if not nul:
                    raise UserError(problem.message) from None
                if not source.folder:
                    raise UserError(f"{file} looks like a binary file (it contains NUL bytes); "
                                    f"give a text file") from None
                for fresh in new:      # what it added to the alphabet goes again (a first sight only)
                    seen[fresh] = False
                binary.add(source.name_of(file))
                continue
            if source.folder and last != "\n":
                chars += 1
                seen[10] = True
            total += chars
            blank = blank and file_blank
    return Survey(total, np.flatnonzero(seen).astype(np.uint32), frozenset(binary), blank)


# ------------------------------------------------------------------ pass 2: encode

def id_dtype(alphabet: int) -> str:
    """The smallest dtype that holds ids 0..alphabet (the unknown id and one per character)."""
    return "uint8" if alphabet < 256 else "uint16" if alphabet < 65536 else "int32"


def split_points(n: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(val_start, test_start): ``load_corpus``'s contiguous split of ``n`` characters."""
    return int(round(n * (1 - test_split - val_split))), int(round(n * (1 - test_split)))


def encode_into(source: TextSource, found: Survey, tmp: str, dtype: str, val_start: int,
                min_count: int) -> dict[str, Any]:
    """Pass 2: the text's vocabulary ids into the cache file ``tmp`` being built; returns what the
    description records (the vocabulary, the binary files)."""
    n, alphabet = found.chars, found.alphabet
    table = np.zeros(CODEPOINTS, dtype=np.int64)                     # code point -> alphabet id
    table[alphabet] = np.arange(len(alphabet))
    ids = cache.writable_map(tmp, (n,), dtype)
    pos = 0
    with cache.progress_bar(sum(_size(p) for p in source.files), f"encoding {source.path.name}", "B",
                            unit_scale=True) as bar:
        for piece in source.pieces(bar):
            codes = _codes(piece)
            if pos + len(codes) > n or not np.array_equal(alphabet[table[codes]], codes):
                raise UserError(f"{source.path} changed while it was read; run the command again "
                                f"when nothing writes to it")
            ids[pos:pos + len(codes)] = table[codes]
            pos += len(codes)
    if pos != n:
        raise UserError(f"{source.path} changed while it was read; run the command again when nothing writes to it")
    # The vocabulary, as Vocab.from_text(train text, min_count): most frequent first, ties by code point.
    counts = np.zeros(len(alphabet), dtype=np.int64)
    for start in range(0, val_start, CHUNK_BYTES):
        counts += np.bincount(ids[start:min(val_start, start + CHUNK_BYTES)], minlength=len(alphabet))
    kept = np.flatnonzero(counts >= min_count)
    kept = kept[np.lexsort((alphabet[kept], -counts[kept]))]
    to_vocab = np.zeros(len(alphabet), dtype=dtype)                  # alphabet id -> vocabulary id
    to_vocab[kept] = np.arange(1, len(kept) + 1)                     # 0: the unknown symbol
    for start in range(0, n, CHUNK_BYTES):
        ids[start:start + CHUNK_BYTES] = to_vocab[ids[start:start + CHUNK_BYTES]]
    ids.flush()
    del ids
    chars = "".join(map(chr, alphabet[kept].tolist()))
    return {"vocab": chars, "binary": sorted(found.binary)}


# ------------------------------------------------------------------ the token file

@dataclass
class Tokens:
    source: TextSource
    ids: np.ndarray          # (n,) vocabulary ids, memory-mapped (copy-on-write)
    vocab: Vocab
    val_start: int
    test_start: int
    cache_path: Path
    key: str                 # of the files and settings the token file was made from
    settings: tuple          # (val_split, test_split, min_count), part of the key

    def unchanged(self) -> bool:
        """Whether the source's files are still those the token file was made from."""
        return self.source.key(*self.settings) == self.key


def cache_path(path: Path, encoding: str | None, val_split: float, test_split: float, min_count: int) -> Path:
    name = hashlib.sha256(json.dumps([str(path.resolve()), encoding, val_split, test_split, min_count],
                                     default=str).encode()).hexdigest()[:24]
    return cache.cache_root() / "textgen" / f"{name}.ids"


def load_tokens(path: Path, *, encoding: str | None, val_split: float, test_split: float,
                min_count: int) -> Tokens:
    """The token file of the corpus file or folder ``path`` (built first when there is none that
    matches its files and these settings). UserErrors as ``load_corpus`` gives them."""
    source = TextSource.of(path, encoding)
    if source.folder and not source.files:
        raise UserError(f"folder {path} has no text files")
    settings = (val_split, test_split, min_count)
    key = source.key(*settings)
    target = cache_path(path, encoding, *settings)
    opened = cache.open_array(target, key, copy_on_write=True)
    if opened is None:
        opened = _build(source, target, key, settings)
    ids, description = opened
    source.binary = frozenset(description["binary"])
    val_start, test_start = split_points(len(ids), val_split, test_split)
    return Tokens(source, ids, Vocab(list(description["vocab"])), val_start, test_start, target, key, settings)


def _build(source: TextSource, target: Path, key: str, settings: tuple):
    val_split, test_split, min_count = settings
    found = survey(source)
    path = source.path
    if source.folder and len(found.binary) == len(source.files):
        raise UserError(f"folder {path} has no text files ({len(found.binary)} binary files skipped)")
    if found.blank:
        raise UserError(f"{path} is empty; give a file with text in it")
    source.binary = found.binary
    val_start, _ = split_points(found.chars, val_split, test_split)
    dtype = id_dtype(len(found.alphabet))
    opened = cache.build_array(
        target, key, (found.chars,),
        lambda tmp: {"source": str(path), **encode_into(source, found, tmp, dtype, val_start, min_count)},
        dtype=dtype, copy_on_write=True)
    if source.key(*settings) != key:       # a file changed between the key and the end of pass 2
        target.unlink(missing_ok=True)
        raise UserError(f"{path} changed while it was read; run the command again when nothing writes to it")
    return opened


class SourceText:
    """Characters ``start:stop`` of a corpus file or folder, read from it only when needed:
    ``len`` costs nothing; ``str``, slicing, ``encode`` and ``+`` decode the files (the whole text
    once, then kept; a slice only as far as it reaches). What the compressors and the report use
    of a cached corpus, in place of the in-memory path's strings."""

    def __init__(self, tokens: Tokens, start: int, stop: int):
        self._tokens, self.start, self.stop = tokens, start, stop
        self._text: str | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def __bool__(self) -> bool:
        return self.stop > self.start

    def _read(self, start: int, stop: int) -> str:
        t = self._tokens
        if not t.unchanged():
            raise UserError(f"{t.source.path} changed since its token file was made; run the command again")
        parts, pos = [], 0
        for piece in t.source.pieces():
            end = pos + len(piece)
            if end > start and pos < stop:
                parts.append(piece[max(0, start - pos):stop - pos])
            pos = end
            if pos >= stop:
                break
        return "".join(parts)

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._read(self.start, self.stop)
        return self._text

    def __getitem__(self, index):
        if isinstance(index, slice) and self._text is None:
            a, b, step = index.indices(len(self))
            if step == 1:
                return self._read(self.start + a, self.start + max(a, b)) if b > a else ""
        return str(self)[index]

    def encode(self, *args, **kwargs) -> bytes:
        return str(self).encode(*args, **kwargs)

    def __add__(self, other) -> str:
        return str(self) + str(other)

    def __radd__(self, other) -> str:
        return str(other) + str(self)

    def __repr__(self) -> str:
        return f"SourceText({self._tokens.source.path}, characters {self.start}:{self.stop})"
