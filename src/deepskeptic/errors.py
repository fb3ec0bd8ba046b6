"""User-facing errors: anything the user can fix becomes a UserError (exit code 2, one line)."""
from __future__ import annotations

import difflib
import errno
import unicodedata
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user. The CLI prints ``error: <message>`` on stderr and exits with 2."""


class MissingKey(UserError, KeyError):
    """A key absent from a file read back from a run folder. A KeyError too, so that code which
    looks a key up and handles its absence keeps working; otherwise it reaches the user as one line."""

    def __str__(self) -> str:      # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, valid: Iterable[str], hint: str = "") -> UserError:
    """An error for an unknown name that suggests the closest valid one."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    return UserError(f"unknown {kind} '{name}': {suggestion}valid: {', '.join(valid)}{hint}")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` safe to show on a terminal, on one line: control and format characters (newlines,
    escape sequences, bidirectional overrides) and undecodable bytes of file names (surrogates)
    are written as backslash escapes, so a file name cannot forge a second line or recolour one."""
    out = []
    for ch in str(text):
        if unicodedata.category(ch)[0] != "C":
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif 0xDC80 <= ord(ch) <= 0xDCFF:           # a byte os.fsdecode could not decode
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def os_error_message(exc: OSError, path: object = None) -> str:
    """One line for an operating-system fault, naming the file (``path`` when the error has none)."""
    where = exc.filename if exc.filename is not None else path
    where = f" {where}" if where is not None else ""
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return (f"no space left on the device to write{where}: free some space and run the command again "
                f"(the files already written are intact)")
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}; check who owns it and its permissions"
    if code == errno.EROFS:
        return f"read-only file system:{where}; choose a writable folder (--out)"
    if code == errno.ENOENT:
        return f"no such file or folder:{where}"
    if code == errno.EISDIR:
        return f"{where.strip()} is a folder, not a file"
    if code == errno.ENOTDIR:
        return f"a part of{where} is not a folder"
    if code == errno.ENAMETOOLONG:
        return f"file name too long:{where}"
    reason = exc.strerror or type(exc).__name__
    return f"{reason}:{where}" if where else reason


class FileFault(UserError, OSError):
    """An operating-system fault on a file deepskeptic writes or reads (no space left, permission
    denied, ...): an OSError for code that handles those, one line naming the file for the user."""

    def __str__(self) -> str:
        return os_error_message(self)

    @classmethod
    def of(cls, exc: OSError, path: object = None) -> "FileFault":
        return cls(exc.errno, exc.strerror or str(exc), str(exc.filename if exc.filename is not None else path))
