"""`deepskeptic serve --watch runs/`: the runs in a folder, finished or still training, with their
learning curves read again from history.jsonl at every request (the page polls it), a small live
dashboard without TensorBoard."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from deepskeptic.serve.bounds import Problem
from deepskeptic.serve.responses import json_response

MAX_RUNS = 200          # run folders listed, newest first
MAX_EPOCHS = 2000       # history lines per run sent to the page


def run_folders(root: Path) -> list[Path]:
    """Run folders (with config.json) in ``root`` and one level below (a comparison's runs)."""
    found = [p.parent for p in root.glob("*/config.json")] + [p.parent for p in root.glob("*/*/config.json")]
    if (root / "config.json").is_file():
        found.append(root)
    found.sort(key=lambda p: (p / "config.json").stat().st_mtime, reverse=True)
    return found[:MAX_RUNS]


def _history(path: Path) -> list[dict[str, float]]:
    """Numeric fields of each complete line (the line being written may be cut off)."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return out
    for line in lines[-MAX_EPOCHS:]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append({k: (v if math.isfinite(v) else None) for k, v in record.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def describe(root: Path, folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    settings = config.get("settings", {}) if isinstance(config, dict) else {}
    return {"path": str(folder.relative_to(root)) if folder != root else folder.name,
            "task": config.get("task") if isinstance(config, dict) else None,
            "model": settings.get("model"), "data": str(settings.get("data")),
            "epochs_planned": settings.get("epochs"), "complete": (folder / "metrics.json").is_file(),
            "history": _history(folder / "history.jsonl")}


def add_routes(app: FastAPI, folder: str) -> None:
    root = Path(folder).expanduser()

    @app.get("/v1/watch")
    async def watch():
        if not root.is_dir():
            raise Problem(404, f"the watched folder {root} does not exist (any more)")
        return json_response({"folder": str(root), "runs": [describe(root, f) for f in run_folders(root)]})
