"""Run folders: config.json, history.jsonl, metrics.json, model.safetensors, checkpoint/, report.html.

A run is complete when metrics.json exists; it is written last, atomically, after the weights.
"""
from __future__ import annotations

import json
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
from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json


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
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"output folder {path} already exists and is not empty; choose another --out "
                            f"or continue it with --resume {path}")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | Path, task: str | None = None, complete: bool = True) -> "Run":
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"run folder {run.path} does not exist; give the folder a 'train' command wrote")
        if not run.config_path.is_file():
            raise UserError(f"{run.path} is not a deepskeptic run folder (it has no config.json)")
        try:
            config = run.config
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{run.config_path} is corrupt; this run cannot be used") from None
        if task is not None and config.get("task") != task:
            raise UserError(f"{run.path} is a run of task '{config.get('task')}', not '{task}'")
        if complete and not run.is_complete:
            raise UserError(f"run {run.path} did not finish training; continue it with "
                            f"'deepskeptic train --resume {run.path}'")
        return run

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.config_path)

    @property
    def metrics(self) -> dict[str, Any]:
        return read_json(self.metrics_path)

    @property
    def is_complete(self) -> bool:
        return self.metrics_path.is_file()

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        return [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def write_history(self, history: list[dict]) -> None:
        atomic_write_text(self.history_path, "".join(json.dumps(h) + "\n" for h in history))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        atomic_write_json(self.metrics_path, metrics)

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
        if isinstance(modules, nn.Module):
            modules = {"": modules}
        try:
            tensors = st_load(self.model_path.read_bytes())
        except Exception as exc:  # safetensors raises its own error types
            raise UserError(f"{self.model_path} is missing or corrupt ({exc})") from None
        for prefix, module in modules.items():
            start = f"{prefix}." if prefix else ""
            state = {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}
            try:
                module.load_state_dict(state)
            except RuntimeError as exc:   # missing, unexpected or mis-shaped tensors
                first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
                raise UserError(f"the weights in {self.model_path} do not fit the model this version of "
                                f"deepskeptic builds for the run ({first}); the run was probably made by an "
                                f"older version: train it again") from None

    def write_report(self, html: str) -> None:
        atomic_write_text(self.report_path, html)
