"""Running the command line inside a test, and the contract of a user error (exit 2, one line)."""
from __future__ import annotations

import re

from deepskeptic.cli import main


def cli(capsys, *args):
    """Run ``deepskeptic ARGS``; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def user_error(capsys, *args, match: str) -> str:
    """Run the CLI, expect exit code 2 and exactly one 'error: ...' line matching ``match``."""
    rc, out, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err + out
    assert re.search(match, lines[0]), lines[0]
    return lines[0]
