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


def assert_ctrl_c_resume_is_exact(monkeypatch, tmp_path, args: list[str], job_class, at_step: int,
                                  time_keys: set[str]) -> None:
    """Train ``args`` straight through; train again with a real SIGINT before step ``at_step`` of
    ``job_class`` (exit 130, no metrics.json), resume; metrics.json and every history line must be
    equal apart from ``time_keys``."""
    import json
    import signal
    assert main(args + ["--out", str(tmp_path / "whole")]) == 0
    steps = {"n": 0}
    original = job_class.train_step

    def interrupted_step(self, batch, ctx):
        steps["n"] += 1
        if steps["n"] == at_step:
            signal.raise_signal(signal.SIGINT)
        return original(self, batch, ctx)

    monkeypatch.setattr(job_class, "train_step", interrupted_step)
    assert main(args + ["--out", str(tmp_path / "cut")]) == 130
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(job_class, "train_step", original)
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0

    def strip(d):
        return {k: v for k, v in d.items() if k not in time_keys}
    whole, cut = (strip(json.loads((tmp_path / run / "metrics.json").read_text())) for run in ("whole", "cut"))
    assert whole == cut
    lines = [[strip(json.loads(x)) for x in (tmp_path / run / "history.jsonl").read_text().splitlines()]
             for run in ("whole", "cut")]
    assert lines[0] == lines[1] and lines[0]
