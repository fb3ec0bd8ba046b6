"""The data cache: decoded data kept on disk as memory-mapped arrays, keyed by their source's content.

Where: $DEEPSKEPTIC_CACHE, else ~/.cache/deepskeptic. One cached array is one file, so that one
``os.replace`` makes it appear whole (a crash mid-build leaves only a temporary file, never a torn
cache)::

    bytes 0..23        b"DSKARR01", then the description's offset and length (little-endian u64)
    bytes 4096..       the array, C order (page-aligned, so the memory map starts on a page)
    after the array    the description: JSON with "format", "key", "dtype", "shape" and what
                       the loader adds (classes, skipped files, the source)

``open_array`` uses a file only if its magic, sizes, JSON and key all match; anything else is
treated as absent, so the caller rebuilds it. The key is the caller's hash of what the array was
made from (for a folder: its file list, sizes and modification times; see ``files_key``).

Two builders: ``build_array`` when the shape is known before the data (an image folder: every
image becomes one row of a known size), ``build_appended`` when the rows come as they are made
(speech features: an utterance's frames are known once it is decoded).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from deepskeptic.errors import UserError

FORMAT = 1
MAGIC = b"DSKARR01"
PREAMBLE = struct.Struct("<8sQQ")   # magic, description offset, description length
DATA_OFFSET = 4096                  # one page: the array starts page-aligned


def cache_root() -> Path:
    root = os.environ.get("DEEPSKEPTIC_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "deepskeptic"


def files_key(items: Iterable[tuple[Any, ...]], *extra: Any) -> str:
    """A hash of ``items`` (each: a path and what else identifies its place, e.g. its class) with
    every file's size and modification time, plus ``extra`` (settings that change the decoding)."""
    h = hashlib.sha256(json.dumps([FORMAT, *extra], default=str).encode())
    for path, *identity in items:
        st = os.stat(path)
        h.update("\0".join(map(str, (*identity, st.st_size, st.st_mtime_ns, "\n"))).encode())
    return h.hexdigest()


# ------------------------------------------------------------------ reading

def open_array(path: Path, key: str, *, copy_on_write: bool = False) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(the read-only memory map, its description) if ``path`` is a complete cache made from
    ``key``; None if it is missing, torn, of another format or made from other files.

    ``copy_on_write``: map it so that a write changes this process's copy, never the file (and
    never faults, as a write to a read-only map would): what ``torch.from_numpy`` needs of an
    array that tensors are made over."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic, offset, length = PREAMBLE.unpack(f.read(PREAMBLE.size))
            if magic != MAGIC or offset + length != size or offset < DATA_OFFSET:
                return None
            f.seek(offset)
            description = json.loads(f.read(length).decode("utf-8"))
    except (OSError, struct.error, ValueError):  # missing, short, or its JSON is torn
        return None
    if not isinstance(description, dict) or description.get("format") != FORMAT or description.get("key") != key:
        return None
    shape, dtype = tuple(description["shape"]), np.dtype(description["dtype"])
    if DATA_OFFSET + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize != offset:
        return None
    if offset == DATA_OFFSET:  # an empty array: nothing to map
        return np.zeros(shape, dtype), description
    return np.memmap(path, dtype=dtype, mode="c" if copy_on_write else "r", offset=DATA_OFFSET,
                     shape=shape), description


# ------------------------------------------------------------------ writing

def build_array(path: Path, key: str, shape: tuple[int, ...], fill: Callable[[str], dict[str, Any]],
                dtype: str = "uint8", *, copy_on_write: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Make the cache ``path``: ``fill(tmp)`` writes the array into the temporary file ``tmp``
    (at DATA_OFFSET; ``writable_map`` opens it) and returns what the description adds; then the
    description is appended, the file synced and renamed into place. Returns ``open_array``'s."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    free = _cache_folder(path)
    if nbytes + (64 << 20) > free:
        raise UserError(f"the data cache needs {nbytes / 1e9:.2f} GB in {path.parent}, which has "
                        f"{free / 1e9:.2f} GB free: set DEEPSKEPTIC_CACHE to a folder on a larger disk")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(DATA_OFFSET + nbytes)  # sparse until written
        extra = fill(tmp)
        _seal(tmp, path, key, dtype, shape, extra)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _raise_disk_fault(exc, path)
        raise
    return _reopen_built(path, key, copy_on_write)


def build_appended(path: Path, key: str, row_shape: tuple[int, ...], produce: Callable[[Callable], dict[str, Any]],
                   dtype: str = "float32", *, copy_on_write: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Make the cache ``path`` of rows shaped ``row_shape`` whose number is known only at the end:
    ``produce(append)`` calls ``append(rows)`` with (k, *row_shape) arrays in order (each is
    written out at once: nothing is kept in memory) and returns what the description adds. Then
    as ``build_array``: description, sync, rename; returns ``open_array``'s."""
    _cache_folder(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    rows = 0
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(DATA_OFFSET)
            f.seek(DATA_OFFSET)

            def append(block: np.ndarray) -> None:
                nonlocal rows
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != tuple(row_shape):
                    raise ValueError(f"rows shaped {block.shape[1:]}, not {tuple(row_shape)}")
                f.write(block.data)
                rows += len(block)

            extra = produce(append)
        _seal(tmp, path, key, dtype, (rows, *row_shape), extra)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _raise_disk_fault(exc, path)
        raise
    return _reopen_built(path, key, copy_on_write)


def _cache_folder(path: Path) -> int:
    """Make the folder of the cache file ``path``; the bytes free there."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(path.parent).free
    except OSError as exc:
        raise UserError(f"cannot write the data cache in {path.parent} ({exc.strerror or exc}): set "
                        "DEEPSKEPTIC_CACHE to a writable folder") from None


def _raise_disk_fault(exc: BaseException, path: Path) -> None:
    """A full disk (or quota, or a read-only file system) while a cache is built: one line that
    says what to do. Other faults pass (a source file's own faults are the reader's to name)."""
    import errno
    if (isinstance(exc, OSError) and not isinstance(exc, UserError)
            and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)):
        raise UserError(f"cannot write the data cache {path} ({exc.strerror or exc}): free some space "
                        f"there or set DEEPSKEPTIC_CACHE to another folder") from None


def _seal(tmp: str, path: Path, key: str, dtype: str, shape: tuple[int, ...], extra: dict[str, Any]) -> None:
    """Append the description to the temporary file ``tmp``, write the preamble, sync, rename it
    to ``path`` (the one step that makes the cache appear, whole)."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    description = {"format": FORMAT, "key": key, "dtype": dtype, "shape": list(shape), **extra}
    blob = json.dumps(description, ensure_ascii=False).encode("utf-8")
    with open(tmp, "r+b") as f:
        f.seek(DATA_OFFSET + nbytes)
        f.write(blob)
        f.truncate()
        f.seek(0)
        f.write(PREAMBLE.pack(MAGIC, DATA_OFFSET + nbytes, len(blob)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _reopen_built(path: Path, key: str, copy_on_write: bool) -> tuple[np.ndarray, dict[str, Any]]:
    opened = open_array(path, key, copy_on_write=copy_on_write)
    if opened is None:  # pragma: no cover - only if another process replaced it with other files' cache
        raise UserError(f"the data cache {path} changed while it was written: run the command again")
    return opened


def writable_map(tmp: str, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """The array part of a cache file being built, for writing (in any process)."""
    return np.memmap(tmp, dtype=dtype, mode="r+", offset=DATA_OFFSET, shape=shape)


# ------------------------------------------------------------------ filling it over the CPU cores

def pool_workers(items: int, min_items: int) -> int:
    """Processes worth starting for ``items``: one per core this process may use
    (``threads.usable_cores``); 1 below ``min_items`` (a pool costs a second to start)."""
    from deepskeptic.threads import usable_cores
    return 1 if items < min_items else usable_cores()


def progress_bar(total: int, desc: str, unit: str, show: bool = True, **options):
    """The progress bar of cache builds: on stderr, shown only on a terminal (and ``show``), gone
    when done."""
    import sys

    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None if show else True, mininterval=0.5, **options)


def map_chunks(fn: Callable[..., Any], tasks: list[tuple], sizes: list[int], *, workers: int, desc: str,
               unit: str) -> list[Any]:
    """``[fn(*t) for t in tasks]``, in ``workers`` processes when more than one (``fn`` must then be
    importable by name), with a progress bar on stderr counting ``sizes`` per task."""
    return list(imap_chunks(fn, tasks, sizes, workers=workers, desc=desc, unit=unit))


def imap_chunks(fn: Callable[..., Any], tasks: list[tuple], sizes: list[int], *, workers: int, desc: str,
                unit: str, window: int | None = None, show: bool = True) -> Iterator[Any]:
    """``map_chunks`` as a generator: each result in task order as soon as it and those before it
    are done. At most ``window`` tasks (default: 4 per worker) are submitted ahead of the one
    being waited for, so results that the caller writes away never pile up in memory."""
    import concurrent.futures as cf
    from collections import deque

    with progress_bar(sum(sizes), desc, unit, show) as bar:
        if workers <= 1:
            for t, n in zip(tasks, sizes):
                result = fn(*t)
                bar.update(n)
                yield result
            return
        ahead = window or 4 * workers
        with cf.ProcessPoolExecutor(workers, mp_context=_decoder_context()) as pool:
            pending: deque = deque()
            queued = iter(zip(tasks, sizes))
            for t, n in queued:
                pending.append((pool.submit(fn, *t), n))
                if len(pending) >= ahead:
                    break
            while pending:
                future, n = pending.popleft()
                result = future.result()    # in order: results stay in task order
                bar.update(n)
                for t, m in queued:          # keep the pool busy: one more in, one out
                    pending.append((pool.submit(fn, *t), m))
                    break
                yield result


def _decoder_context():
    """How decoding workers start. On Linux they fork, as PyTorch's DataLoader workers do: they
    only run Pillow and NumPy, and a spawned worker would spend seconds importing the package
    first. A process that holds a CUDA context or a Ray connection (whose threads a fork would
    copy mid-call) spawns them instead."""
    import multiprocessing
    import sys
    ray = sys.modules.get("ray")
    if (sys.platform != "linux" or torch.cuda.is_initialized()
            or (ray is not None and getattr(ray, "is_initialized", lambda: False)())):
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


# ------------------------------------------------------------------ a view that reads on demand

class MappedImages:
    """Some rows of a memory-mapped (N, C, H, W) uint8 array, used where a uint8 tensor would be:
    ``len``, ``shape`` and indexing by an int, a slice or an index tensor/array (giving a uint8
    tensor read from the file: only those images come into memory). ``take`` subsets without
    reading; pickling sends the file name, not the pixels."""

    dtype = torch.uint8

    def __init__(self, path: str | Path, array: np.ndarray, rows: np.ndarray | None = None):
        self.path, self._array = str(path), array
        self.rows = np.arange(len(array), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self._array.shape[1:]))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index) -> "MappedImages":
        """The images at ``index`` (positions in this view), still on disk."""
        return MappedImages(self.path, self._array, self.rows[np.asarray(index, dtype=np.int64)])

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return torch.from_numpy(np.array(self._array[int(rows)]))            # (C, H, W)
        if len(rows) and np.all(np.diff(rows) == 1):  # a run of rows: one sequential read
            return torch.from_numpy(np.array(self._array[rows[0]:rows[-1] + 1]))
        return torch.from_numpy(np.asarray(self._array[rows]))                     # (B, C, H, W)

    def numpy(self) -> np.ndarray:
        """All the images of this view, read into memory."""
        return np.asarray(self._array[self.rows]) if len(self.rows) else np.zeros(self.shape, np.uint8)

    def __reduce__(self):
        return _reopen, (self.path, tuple(self._array.shape), self.rows)

    def __repr__(self) -> str:
        return f"MappedImages({tuple(self.shape)} of {self.path})"


def _reopen(path: str, shape: tuple[int, ...], rows: np.ndarray) -> MappedImages:
    array = np.memmap(path, dtype=np.uint8, mode="r", offset=DATA_OFFSET, shape=shape) if np.prod(shape) \
        else np.zeros(shape, np.uint8)
    return MappedImages(path, array, rows)
