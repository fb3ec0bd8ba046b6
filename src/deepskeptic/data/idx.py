"""IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.

Layout: two zero bytes, a dtype code, the number of dimensions ``ndim``, then ``ndim`` big-endian
uint32 sizes, then the data in C order, big-endian. Gzip is detected by its magic bytes
(``1f 8b``), never by the file name.
"""
from __future__ import annotations

import gzip as _gzip
import os
import zlib

import numpy as np

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes, check_regular_file

# dtype code -> big-endian numpy dtype
_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 16 << 30    # bytes of data an IDX file may declare (Fashion-MNIST's images: 47 MB)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into a writable array in native byte order.

    The array has the shape stored in the header, e.g. (N, 28, 28) uint8 for MNIST images and
    (N,) uint8 for labels. A missing, corrupt or truncated file raises a UserError naming it.
    """
    name = os.fspath(path)
    if not os.path.lexists(name):
        raise UserError(f"IDX file '{name}' does not exist: check the path")
    check_regular_file(name, "IDX file")       # a FIFO would block the read forever, /dev/zero never end
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UserError(f"cannot read IDX file '{name}': {e.strerror or e}") from None
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(raw, name)
    return _parse(raw, name)


def _gunzip(raw: bytes, name: str) -> bytes:
    """The IDX bytes inside the gzip ``raw``, decompressed no further than the size its header
    declares (plus one byte, to tell extra data): a gzip bomb cannot fill memory. The gzip
    trailer (CRC and length) is checked as ``gzip.decompress`` would."""
    bad = f"IDX file '{name}' is a corrupt or truncated gzip file"
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)          # gzip framing
    try:
        out = inflate.decompress(raw, 4)
        if len(out) < 4 or out[:2] != b"\0\0" or out[2] not in _CODES:
            return out                                          # not IDX: _parse says what is wrong
        header = 4 + 4 * out[3]
        out += inflate.decompress(inflate.unconsumed_tail, header - 4)
        if len(out) < header:
            raise UserError(f"{bad} (it ends inside the IDX header): download or copy it again")
        dims = np.frombuffer(out, dtype=">u4", count=out[3], offset=4).astype(np.float64)
        expected = float(np.prod(dims)) * _CODES[out[2]].itemsize   # float: the product cannot overflow
        if expected > MAX_IDX_BYTES:
            raise UserError(f"IDX file '{name}' declares {expected:.3g} bytes of data, more than "
                            f"{MAX_IDX_BYTES >> 30} GiB: it is not a data set deepskeptic reads; replace it")
        total = header + int(expected)
        out += inflate.decompress(inflate.unconsumed_tail, total + 1 - len(out))
        if len(out) == total and not inflate.eof:               # the data is all there: its trailer next
            out += inflate.decompress(inflate.unconsumed_tail, 1)
    except zlib.error as e:
        raise UserError(f"{bad} ({e}): download or copy it again") from None
    if len(out) <= total and not inflate.eof:
        raise UserError(f"{bad} (it ends before its end-of-stream marker): download or copy it again")
    return out    # _parse reports data shorter or longer than the header says


def _parse(raw: bytes, name: str) -> np.ndarray:
    fix = "download or copy it again"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"'{name}' is not an IDX file (bad magic bytes {raw[:4].hex() or 'none'}): {fix}")
    code, ndim = raw[2], raw[3]
    if code not in _CODES:
        raise UserError(f"'{name}' is not a valid IDX file (unknown dtype code 0x{code:02X}): {fix}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file '{name}' is truncated inside its header: {fix}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _CODES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        what = "truncated" if found < expected else "corrupt (extra bytes at the end)"
        raise UserError(
            f"IDX file '{name}' is {what}: header says shape {dims} ({expected} bytes of data), "
            f"found {found} bytes: {fix}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    # astype copies: the result is writable and in native byte order (torch.from_numpy needs both).
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def write_idx(path: str | os.PathLike, array: np.ndarray, gzip: bool = True) -> None:
    """Write ``array`` (any shape; uint8, int8, int16, int32, float32 or float64) as an IDX file.

    ``gzip=True`` compresses it (deterministically: the gzip timestamp is 0). Written atomically.
    """
    array = np.asarray(array)
    for code, dt in _CODES.items():
        if array.dtype.kind == dt.kind and array.dtype.itemsize == dt.itemsize:
            break
    else:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim > 255:
        raise ValueError("IDX stores at most 255 dimensions")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=dt).tobytes()
    if gzip:
        data = _gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
