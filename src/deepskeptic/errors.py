"""User-facing errors: anything the user can fix becomes a UserError (exit code 2, one line)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user. The CLI prints ``error: <message>`` on stderr and exits with 2."""


def unknown_name(kind: str, name: str, valid: Iterable[str], hint: str = "") -> UserError:
    """An error for an unknown name that suggests the closest valid one."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    return UserError(f"unknown {kind} '{name}': {suggestion}valid: {', '.join(valid)}{hint}")
