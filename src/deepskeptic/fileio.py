"""Files of a run folder: atomic writes (a crash or kill leaves either the old file or the new one,
never a torn one), bounded JSON reads, and the lock that keeps two processes out of one folder."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepskeptic.errors import FileFault, UserError, printable

# A JSON file of a run folder (config, metrics, a summary) is a few kilobytes; one of more than this
# is not one of ours, and reading it whole could exhaust memory.
MAX_JSON_BYTES = 64 * 2**20
# Nesting deeper than this is no file deepskeptic writes (a checkpoint tree is about 10 deep);
# deeper input is refused before Python's recursion limit turns it into a RecursionError.
MAX_JSON_DEPTH = 100


class CorruptFile(UserError, ValueError):
    """A file that cannot be what it claims to be. A ValueError too: callers that treat a corrupt
    cache entry as absent catch ValueError."""


# --- permissions -----------------------------------------------------------------------------

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:       # elsewhere: set and restore it (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- writes ----------------------------------------------------------------------------------

def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``, fsync
    the folder. The new file gets the permissions of the file it replaces, or those the umask
    gives a new file (not mkstemp's 0600). An OS fault (no space left, permission denied) is a
    FileFault naming ``path``; the old file is left as it was."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~current_umask()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise FileFault.of(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, UserError):
            raise FileFault.of(exc, path) from None
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --- reads -----------------------------------------------------------------------------------

def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file (a link to one is fine); a UserError for a folder, a FIFO,
    a device or a socket, which would block a read forever or never end (/dev/zero)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise FileFault.of(exc, path) from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise UserError(f"{what} {path} is {kind}; give a regular file")
    return path


def _size(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 2**30 else f"{n / 2**20:g} MiB"


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The contents of the regular file ``path``, refusing one larger than ``limit`` bytes."""
    path = check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise CorruptFile(f"{what} {path} is larger than {_size(limit)}: it is not one deepskeptic wrote")
            data = f.read(size + 1)        # a regular file: its size is what there is to read
    except OSError as exc:
        raise FileFault.of(exc, path) from None
    if len(data) > size:
        raise CorruptFile(f"{what} {path} grew while it was read; try again when nothing writes it")
    return data


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)   # JSON strings, escapes included
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth_error(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> str | None:
    """A message when the JSON ``text`` nests objects and arrays more than ``limit`` deep (counted
    on brackets outside strings, in one pass that cannot recurse); None otherwise."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    if text.count(b"[") + text.count(b"{") <= limit:
        return None                       # cannot nest deeper than it has brackets
    depth = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub(b"", text)):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return f"nested more than {limit} levels deep"
    return None


def parse_json(text: str | bytes, where: str) -> Any:
    """JSON from ``text``; a CorruptFile naming ``where`` when it is not JSON, not UTF-8 or nested
    absurdly deep (never a RecursionError)."""
    problem = json_depth_error(text)
    if problem:
        raise CorruptFile(f"{where} is corrupt: {problem}")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFile(f"{where} is corrupt: not valid JSON ({exc})") from None
    except RecursionError:
        raise CorruptFile(f"{where} is corrupt: nested too deep") from None


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON in the regular file ``path``: a CorruptFile (a UserError and a ValueError) when it
    is not JSON, too large or nested too deep; a FileFault when it cannot be read."""
    return parse_json(read_bytes(path, limit, "file"), str(path))


# --- the lock of a folder --------------------------------------------------------------------

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid in the file is all there is
    fcntl = None


def _holder(fd: int) -> dict[str, Any]:
    """Who the lock file says holds it ({} when it is empty or not ours)."""
    try:
        raw = os.pread(fd, 4096, 0) if hasattr(os, "pread") else b""
        info = json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict[str, Any]) -> str:
    if not info:
        return "another process"
    pid, host, started = info.get("pid"), info.get("host"), info.get("started")
    return f"process {pid} on {host}" + (f" (started {started})" if started else "")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True      # it exists, but belongs to someone else
    return True


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another open file holds it; None: this file system cannot lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None      # ENOLCK, EOPNOTSUPP...: fall back on the pid in the file


def _acquire(folder: Path, what: str) -> int:
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(20):
        try:
            fd = os.open(path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UserError(f"{path} is a symbolic link; remove it (a lock file must be a plain file)") from None
            raise FileFault.of(exc, path) from None
        locked = _try_flock(fd)
        previous = _holder(fd)
        if locked is False:
            os.close(fd)
            raise UserError(f"{what} {folder} is in use by {_describe(previous)}; wait for it to finish or "
                            f"stop it, or choose another folder")
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if not same:              # its holder removed it between our open and our lock: again
            os.close(fd)
            continue
        here = socket.gethostname()
        if previous:
            if locked is None and previous.get("host") == here and _alive(previous.get("pid")):
                os.close(fd)
                raise UserError(f"{what} {folder} is in use by {_describe(previous)}; wait for it to finish "
                                f"or stop it, or choose another folder")
            why = ("is not running any more" if previous.get("host") == here or locked
                   else "runs on another machine, where it cannot be checked")
            print(printable(f"note: {what} {folder} was locked by {_describe(previous)}, which {why}; "
                            f"taking the lock over"), file=sys.stderr)
        info = {"pid": os.getpid(), "host": here, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(sys.argv)[:300]}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
        except OSError as exc:
            os.close(fd)
            raise FileFault.of(exc, path) from None
        return fd
    raise UserError(f"{what} {folder} is being locked and unlocked by other processes; try again")


def _release(folder: Path, fd: int) -> None:
    path = folder / LOCK_NAME
    try:
        if os.path.samestat(os.fstat(fd), os.lstat(path)):
            path.unlink()       # before closing: whoever opens it next sees a new file
    except OSError:
        pass
    finally:
        os.close(fd)            # releases the flock


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[Path]:
    """Hold ``folder/.lock`` while the body runs (the folder is created if needed).

    A second process asking for the same folder gets a UserError naming the holder. The lock is
    the kernel's (flock): it dies with its process, kill -9 included, so a lock file left behind is
    stale and taken over with a note. Where the file system cannot lock, the pid and host written
    in the file decide: a live process on this host holds it; a dead one, or one on another host,
    is taken over with a note. Released on exit, errors and Ctrl-C."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileFault.of(exc, folder) from None
    fd = _acquire(folder, what)
    try:
        yield folder
    finally:
        _release(folder, fd)
