"""Run folders: config.json, history.jsonl, metrics.json, model.safetensors, checkpoint/, report.html.

A run is complete when metrics.json exists; it is written last, atomically, after the weights, and
only when the run's main test metrics are finite numbers (``check_finite_metrics``).
Everything read back is checked first (deepskeptic.schema): a folder the user edited or damaged is
one line naming the file, never a traceback. A process writing the folder holds its lock (.lock).
"""
from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from deepskeptic._version import __version__
from deepskeptic import schema
from deepskeptic.checkpoint import weights_mismatch
from deepskeptic.errors import UserError, printable
from deepskeptic.fileio import (LOCK_NAME, CorruptFile, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                folder_lock, json_depth_error, read_bytes, read_json)

MAX_HISTORY_BYTES = 256 * 2**20     # history.jsonl: a line per epoch, a few hundred bytes each
MAX_WEIGHTS_BYTES = schema.MAX_PARAMS * 8


def versions() -> dict[str, str]:
    import numpy
    return {"deepskeptic": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but this machine has no usable CUDA GPU; use --device cpu")
    return torch.device(name)


def default_run_dir(root: str, task: str, data: str, model: str) -> Path:
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(str(data)).name or str(data)).strip("_") or "data"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{task}-{data_name}-{model}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


# --- metrics that are not numbers ---------------------------------------------------------------

def _scalar(value: Any) -> Any:
    """A numpy or torch scalar as a Python number; anything else as it is."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def _not_finite(value: Any) -> bool:
    value = _scalar(value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isfinite(value)


def check_finite_metrics(metrics: dict[str, Any], primary: str | None, where: str | os.PathLike,
                         settings: dict[str, Any] | None = None) -> None:
    """A UserError when a main test metric of ``metrics`` is not a finite number: the task's
    primary metric NaN or infinite, or any other top-level ``test_*`` number NaN (e.g. test_loss,
    NaN when the model outputs NaN while its accuracy still looks like a number). Allowed: null
    (not measurable, e.g. OWA when Naive2 is perfect), and an infinite secondary metric, which is
    an overflow of that one formula (test_rmse of values near 1e200 squares past 1e308) and is
    written as null with a note. The message names the metric and what to try: for a trained
    network the learning rate, clipping or the data's scale; for a fitted baseline (no
    parameters) the data's scale."""
    names = ([primary] if primary else []) + sorted(k for k in metrics if k.startswith("test_") and k != primary)
    bad = next((k for k in names if _not_finite(metrics.get(k))
                and (k == primary or math.isnan(_scalar(metrics[k])))), None)
    if bad is None:
        return
    settings = settings or {}
    value = _scalar(metrics[bad])
    shown = "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if metrics.get("params"):
        lr, clip = settings.get("lr"), settings.get("clip")
        hint = ("the training diverged or the data holds extreme values: train again with a lower --lr"
                + (f" (this run used {lr:g})" if _is_real(lr) else "")
                + (f" or a smaller --clip (this run used {clip:g})" if _is_real(clip) else "")
                + ", or rescale the data")
    else:
        hint = "the data holds values too large or too small for this model (e.g. near 1e308): rescale the data"
    raise UserError(f"{bad} of run {where} is {shown}, not a finite number, so the run is not marked complete; "
                    f"{hint} (its weights, checkpoint and report are kept there for inspection)")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite number inside it replaced by None (JSON null)."""
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    value = _scalar(value)
    return None if _not_finite(value) else value


class Run:
    """One run folder on disk."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- files ---
    config_path = property(lambda self: self.path / "config.json")
    history_path = property(lambda self: self.path / "history.jsonl")
    metrics_path = property(lambda self: self.path / "metrics.json")
    model_path = property(lambda self: self.path / "model.safetensors")
    checkpoint_dir = property(lambda self: self.path / "checkpoint")
    report_path = property(lambda self: self.path / "report.html")

    @classmethod
    def create(cls, path: str | Path) -> "Run":
        """A new run in ``path``, which must not exist or be empty (its lock file aside: take
        ``Run(path).lock()`` first, so that the check and the first write are one step)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise UserError(f"output folder {path} exists and is a file; choose another --out")
        if path.exists() and any(p.name != LOCK_NAME for p in path.iterdir()):
            raise UserError(f"output folder {path} already exists and is not empty; choose another --out "
                            f"or continue it with --resume {path}")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, task: str | None = None, complete: bool = True) -> "Run":
        """An existing run, its config.json checked (and metrics.json and history.jsonl, when
        ``complete``)."""
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"run folder {run.path} does not exist; give the folder a 'train' command wrote")
        if not run.config_path.exists():
            raise UserError(f"{run.path} is not a deepskeptic run folder (it has no config.json)")
        if task is not None:     # the task first: the rest of config.json is checked against it
            raw = read_json(run.config_path)
            found = raw.get("task") if isinstance(raw, dict) else None
            if found != task:
                raise UserError(f"{run.path} is a run of task {found!r}, not '{task}'")
        run.config  # noqa: B018 - checked
        if complete and not run.is_complete:
            raise UserError(f"run {run.path} did not finish training; continue it with "
                            f"'deepskeptic train --resume {run.path}'")
        if complete:            # checked now, before any work is done with the run
            run.metrics  # noqa: B018
            run.history()
        return run

    def _checked(self, path: Path, check) -> Any:
        """The JSON in ``path`` after ``check(value, where)``; the check runs again only when the
        file changes. Dicts inside are FileDicts: a missing key names the file."""
        where = str(path)
        value = read_json(path)
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        cache = self.__dict__.setdefault("_valid", {})
        if key is None or cache.get(path.name) != key:
            check(value, where)
            cache[path.name] = key
        return schema.strict(value, where)

    @property
    def config(self) -> dict[str, Any]:
        return self._checked(self.config_path, schema.check_config)

    @property
    def task_name(self) -> str:
        return self.config["task"]

    @property
    def metrics(self) -> dict[str, Any]:
        primary = schema.primary_metric(self.task_name)
        if not self.metrics_path.exists():
            raise UserError(f"run {self.path} has no metrics.json: it did not finish training; continue it "
                            f"with 'deepskeptic train --resume {self.path}'")
        check = schema.metrics_schema(self.task_name, primary)
        return self._checked(self.metrics_path, lambda value, where: schema.validate(value, check, where))

    @property
    def is_complete(self) -> bool:
        return self.metrics_path.exists()      # (whether it is valid is for reading it to say)

    def history(self) -> list[dict]:
        """history.jsonl, one object per epoch (an empty list before the first epoch)."""
        if not self.history_path.exists():
            return []
        where = str(self.history_path)
        try:
            text = read_bytes(self.history_path, MAX_HISTORY_BYTES, "history").decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptFile(f"{where} is corrupt: not UTF-8 text; {schema.AGAIN}") from None
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            problem = json_depth_error(line, 8)
            try:
                record = json.loads(line) if problem is None else None
            except (ValueError, RecursionError):
                problem = "not valid JSON"
            if problem is None:
                problem = schema.history_line(record, "")
            if problem:
                raise CorruptFile(f"{where} is not valid: line {n}: {problem}; {schema.AGAIN}")
            out.append(schema.strict(record, f"{where} line {n}"))
        return out

    # --- writing ---
    def lock(self) -> contextlib.AbstractContextManager[Path]:
        """Hold the run folder against other processes while the body writes it (see
        fileio.folder_lock): a second `train` into the same --out, or a second --resume of the
        run, is refused with one line naming the process that holds it."""
        return folder_lock(self.path, "run folder")

    def inside(self, name: str, create: bool = True) -> Path:
        """The folder ``name`` (e.g. explain, export) inside the run, refusing one that is a
        symbolic link or otherwise leads out of the run: commands write only inside their run."""
        folder = self.path / name
        if folder.is_symlink():
            raise UserError(f"{folder} is a symbolic link; remove it (deepskeptic writes only inside the run "
                            f"folder) or give --out")
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{folder} exists and is not a folder; remove it or give --out")
        real_run = os.path.realpath(self.path)
        real = os.path.realpath(folder)
        if os.path.commonpath([real_run, real]) != real_run:
            raise UserError(f"{folder} leads out of the run folder; remove it or give --out")
        if create:
            folder.mkdir(exist_ok=True)
        return folder

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def write_history(self, history: list[dict]) -> None:
        atomic_write_text(self.history_path, "".join(json.dumps(h) + "\n" for h in history))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Write metrics.json, which marks the run complete, unless a main test metric is not a
        finite number (``check_finite_metrics``): then a UserError, and the run stays incomplete
        with its weights, checkpoint and report kept for inspection. Other values that are not
        finite (an overflowed secondary metric, a table entry) are written as null, with a note
        for top-level ones: metrics.json stays strict JSON."""
        settings = {}
        with contextlib.suppress(UserError, KeyError, TypeError):
            settings = dict(self.config["settings"])
        check_finite_metrics(metrics, schema.primary_metric(self._task_or_none() or ""), self.path, settings)
        overflowed = sorted(k for k, v in metrics.items() if _not_finite(v))
        if overflowed:
            print(printable(f"note: run {self.path}: {', '.join(overflowed)} not a finite number (an overflow, "
                            f"or a ratio over zero), written as null"), file=sys.stderr)
        atomic_write_json(self.metrics_path, finite_or_null(metrics))

    def _task_or_none(self) -> str | None:
        with contextlib.suppress(UserError, KeyError, TypeError):
            return self.config["task"]
        return None

    def save_weights(self, modules: dict[str, nn.Module] | nn.Module, metadata: dict[str, str] | None = None) -> None:
        if isinstance(modules, nn.Module):
            modules = {"": modules}
        tensors, storages = {}, set()
        for prefix, module in modules.items():
            for key, value in module.state_dict().items():
                value = value.detach().cpu().contiguous()
                if value.untyped_storage().data_ptr() in storages:  # tied weights: safetensors
                    value = value.clone()                           # refuses shared memory
                storages.add(value.untyped_storage().data_ptr())
                tensors[f"{prefix}.{key}" if prefix else key] = value
        atomic_write_bytes(self.model_path, st_save(tensors, metadata=metadata))

    def load_weights(self, modules: dict[str, nn.Module] | nn.Module) -> None:
        """Load model.safetensors into ``modules``; the tensors' names, shapes and dtypes must be
        exactly the modules' (a wrong dtype is refused, not cast)."""
        if isinstance(modules, nn.Module):
            modules = {"": modules}
        try:
            data = read_bytes(self.model_path, MAX_WEIGHTS_BYTES, "weights file")
            tensors = st_load(data)
        except UserError as exc:
            raise UserError(f"{self.model_path} is missing or unreadable ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise UserError(f"{self.model_path} is corrupt ({reason}); train the run again") from None
        expected = {}
        for prefix, module in modules.items():
            start = f"{prefix}." if prefix else ""
            expected.update({start + k: v for k, v in module.state_dict().items()})
        problem = weights_mismatch(expected, tensors)
        if problem:
            raise UserError(f"the weights in {self.model_path} do not fit the model config.json describes "
                            f"({problem}); the files were edited, or the run was made by another version: "
                            f"train it again")
        for prefix, module in modules.items():
            start = f"{prefix}." if prefix else ""
            module.load_state_dict({k[len(start):]: v for k, v in tensors.items() if k.startswith(start)})

    def write_report(self, html: str) -> None:
        atomic_write_text(self.report_path, html)

