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
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

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

def open_array(path: Path, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    """(the read-only memory map, its description) if ``path`` is a complete cache made from
    ``key``; None if it is missing, torn, of another format or made from other files."""
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
    return np.memmap(path, dtype=dtype, mode="r", offset=DATA_OFFSET, shape=shape), description


# ------------------------------------------------------------------ writing

def build_array(path: Path, key: str, shape: tuple[int, ...], fill: Callable[[str], dict[str, Any]],
                dtype: str = "uint8") -> tuple[np.ndarray, dict[str, Any]]:
    """Make the cache ``path``: ``fill(tmp)`` writes the array into the temporary file ``tmp``
    (at DATA_OFFSET; ``writable_map`` opens it) and returns what the description adds; then the
    description is appended, the file synced and renamed into place. Returns ``open_array``'s."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        raise UserError(f"cannot write the data cache in {path.parent} ({exc.strerror or exc}): set "
                        "DEEPSKEPTIC_CACHE to a writable folder") from None
    if nbytes + (64 << 20) > free:
        raise UserError(f"the data cache needs {nbytes / 1e9:.2f} GB in {path.parent}, which has "
                        f"{free / 1e9:.2f} GB free: set DEEPSKEPTIC_CACHE to a folder on a larger disk")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.truncate(DATA_OFFSET + nbytes)  # sparse until written
        extra = fill(tmp)
        description = {"format": FORMAT, "key": key, "dtype": dtype, "shape": list(shape), **extra}
        blob = json.dumps(description, ensure_ascii=False).encode("utf-8")
        with open(tmp, "r+b") as f:
            f.seek(DATA_OFFSET + nbytes)
            f.write(blob)
            f.seek(0)
            f.write(PREAMBLE.pack(MAGIC, DATA_OFFSET + nbytes, len(blob)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    opened = open_array(path, key)
    if opened is None:  # pragma: no cover - only if another process replaced it with other files' cache
        raise UserError(f"the data cache {path} changed while it was written: run the command again")
    return opened


def writable_map(tmp: str, shape: tuple[int, ...], dtype: str = "uint8") -> np.ndarray:
    """The array part of a cache file being built, for writing (in any process)."""
    return np.memmap(tmp, dtype=dtype, mode="r+", offset=DATA_OFFSET, shape=shape)


# ------------------------------------------------------------------ filling it over the CPU cores

def pool_workers(items: int, min_items: int) -> int:
    """Processes worth starting for ``items``: one per core this process may run on (its affinity
    mask); 1 below ``min_items`` (a pool costs a second to start)."""
    if items < min_items:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def map_chunks(fn: Callable[..., Any], tasks: list[tuple], sizes: list[int], *, workers: int, desc: str,
               unit: str) -> list[Any]:
    """``[fn(*t) for t in tasks]``, in ``workers`` processes when more than one (``fn`` must then be
    importable by name), with a progress bar on stderr counting ``sizes`` per task."""
    import concurrent.futures as cf
    import sys

    from tqdm import tqdm
    with tqdm(total=sum(sizes), desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
              disable=None, mininterval=0.5) as bar:
        if workers <= 1:
            out = []
            for t, n in zip(tasks, sizes):
                out.append(fn(*t))
                bar.update(n)
            return out
        with cf.ProcessPoolExecutor(workers, mp_context=_decoder_context()) as pool:
            futures = [pool.submit(fn, *t) for t in tasks]
            for future, n in zip(futures, sizes):  # in order: results stay in task order
                future.result()
                bar.update(n)
            return [f.result() for f in futures]


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
