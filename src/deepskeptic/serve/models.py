"""The runs a server serves: found in the folders given (a run folder, or a comparison folder whose
runs are served as model-seedK), each loaded once, with one worker thread and one micro-batcher,
and described for ``GET /v1/models``."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepskeptic.api import Run, load
from deepskeptic.errors import UserError
from deepskeptic.fileio import read_json
from deepskeptic.serve.batching import MicroBatcher
from deepskeptic.serve.bounds import Problem, json_safe
from deepskeptic.tasks.base import Predictor

# what each task's predict reads: the page and clients learn it from /v1/models
INPUTS = {
    "image": {"kind": "image", "json": "images: [base64 image file, ...] (or image: one)", "multipart": "image files"},
    "text": {"kind": "text", "json": "texts: [string, ...] (or text: one)", "multipart": "text files"},
    "speech": {"kind": "audio", "json": "audios: [base64 WAV/FLAC/OGG, ...] (or audio: one)",
               "multipart": "audio files"},
    "forecast": {"kind": "series", "json": "series: [number or null, ...], or csv: CSV text as the run's data",
                 "multipart": "one CSV file"},
    "textgen": {"kind": "none", "json": "generate: prime, length, temperature, top_k, n, seed, stream"},
    "gan": {"kind": "none", "json": "generate: n, seed, format (grid or images)"},
    "cyclegan": {"kind": "image", "json": "translate: images (base64), direction (a2b or b2a)",
                 "multipart": "image files (and a direction field)"},
}


GATES_TASKS = ("text", "textgen", "forecast")   # their explain gives an LSTM's gates over time


def has_lstm(predictor) -> bool:
    """Whether the predictor's network is (or, for an ensemble, starts with) an LSTM with an ``rnn``
    the gates can be read from (tasks/common/gates.py, tasks/forecast/explain.py)."""
    import torch
    model = getattr(predictor, "model", None)
    members = getattr(model, "members", None)
    first = members[0] if isinstance(members, torch.nn.ModuleList) and len(members) else model
    return isinstance(getattr(first, "rnn", None), torch.nn.LSTM)


@dataclass
class Served:
    """One served run: its name in the URLs, the loaded run, its comparison (if any)."""
    name: str
    run: Run
    comparison: str | None = None
    executor: ThreadPoolExecutor = field(init=False, repr=False)
    batcher: MicroBatcher | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self.predictor   # load now: a broken run is an error at start, and no request waits for it

    task = property(lambda self: self.run.task)
    predictor = property(lambda self: self.run.predictor)

    @property
    def commands(self) -> list[str]:
        has_predict = type(self.predictor).predict is not Predictor.predict
        return (["predict"] if has_predict else []) + sorted(self.task.commands)

    def describe(self) -> dict[str, Any]:
        config, settings = self.run.config, self.run.config["settings"]
        info = config.get("data_info", {})
        out: dict[str, Any] = {
            "name": self.name, "task": self.task.name, "model": settings.get("model"),
            "data": _data_name(settings), "seed": settings.get("seed"), "comparison": self.comparison,
            "commands": self.commands, "input": dict(INPUTS.get(self.task.name, {"kind": "none"})),
            "metrics": json_safe(self.run.metrics)[0],
            "report": f"/v1/models/{self.name}/report" if self.run.report_path.is_file() else None,
        }
        predictor = self.predictor
        if "explain" in self.commands and self.task.name in GATES_TASKS:
            out["gates"] = has_lstm(predictor)       # explain draws the LSTM's gates (the page shows them)
        if self.task.name in ("image", "text"):
            out["classes"] = list(info.get("classes", []))
        if self.task.name in ("image", "cyclegan"):
            out["input"].update(channels=info.get("channels"), image_size=info.get("image_size"))
        if self.task.name == "cyclegan":
            out["domains"] = list(info.get("names", []))
        if self.task.name == "speech":
            out["words"] = info.get("labels")     # None: a CTC recogniser that writes transcripts
        if self.task.name == "textgen":
            vocab = getattr(predictor, "vocab", None)
            out["vocabulary"] = list(vocab.itos) if vocab is not None else None
        if self.task.name == "forecast":
            out["input"].update(horizon=settings.get("horizon"), target=info.get("target"),
                                covariates=info.get("covariates"), end=info.get("end"))
        return out

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class ServedComparison:
    """A comparison folder: its summary (verdicts, means per model) and report."""
    id: str
    path: Path
    summary: dict[str, Any]
    runs: list[str]                 # the served names of its runs

    def describe(self) -> dict[str, Any]:
        s = self.summary
        return {"id": self.id, "task": s.get("task"), "metric": s.get("metric"),
                "higher_is_better": s.get("higher_is_better"), "seeds": s.get("seeds"),
                "verdicts": list(s.get("verdicts", [])), "models": json_safe(s.get("models", {}))[0],
                "runs": self.runs,
                "report": f"/v1/comparisons/{self.id}/report" if (self.path / "report.html").is_file() else None}


def _data_name(settings: dict[str, Any]) -> str:
    if settings.get("data_a") and settings.get("data_b"):      # cyclegan: two folders
        return f"{settings['data_a']} ~ {settings['data_b']}"
    return str(settings.get("data"))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _unique(name: str, taken: set[str], parent: Path) -> str:
    if name in taken:
        name = f"{_safe(parent.name)}.{name}"
    base, n = name, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    taken.add(name)
    return name


def discover(paths: list[str | Path]) -> tuple[list[Served], list[ServedComparison]]:
    """Load every run the folders name. A UserError (one line) for a folder that is neither a run
    nor a comparison, or a run that cannot be served."""
    if not paths:
        raise UserError("name at least one run folder or comparison folder to serve")
    served: list[Served] = []
    comparisons: list[ServedComparison] = []
    names: set[str] = set()
    ids: set[str] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise UserError(f"{path} does not exist or is not a folder: give run or comparison folders")
        if (path / "summary.json").is_file():
            try:
                summary = read_json(path / "summary.json")
                models = summary["models"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path / 'summary.json'} is corrupt; re-create it with 'deepskeptic report {path}'") from None
            cid = _unique(_safe(path.name), ids, path.parent)
            mine = []
            for model, info in models.items():
                for run_path in info.get("runs", []):
                    folder = path / Path(run_path).name     # stored paths may be relative to another cwd
                    item = Served(_unique(_safe(folder.name), names, path), load(folder), comparison=cid)
                    served.append(item)
                    mine.append(item.name)
            comparisons.append(ServedComparison(cid, path, summary, mine))
        elif (path / "config.json").is_file():
            served.append(Served(_unique(_safe(path.name), names, path.parent), load(path)))
        else:
            raise UserError(f"{path} is neither a run folder (config.json) nor a comparison folder (summary.json)")
    return served, comparisons


def lookup(app, name: str) -> Served:
    """The served run ``name`` of ``app`` (a 404 naming the served ones otherwise)."""
    found = app.state.models.get(name)
    if found is None:
        raise Problem(404, f"no model '{name}'; served: {', '.join(app.state.models) or 'none'}")
    return found
