"""Checkpoints as one safetensors file: tensors in the body, everything else as JSON in its header.

Nothing is ever unpickled: nested state (optimizer state dicts, RNG states, loop position) is split
into tensors, stored by safetensors, and plain JSON, stored in the file's metadata. The file is
written atomically, so a kill during a write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes

CHECKPOINT_FILE = "state.safetensors"


def _split(obj: Any, tensors: dict[str, torch.Tensor], prefix: str, seen: dict | None = None) -> Any:
    """Replace every tensor inside ``obj`` by a reference, collecting the tensors.

    A tensor met twice (tied weights) is stored once and referenced twice; safetensors refuses
    tensors that share memory, so a view into part of a larger storage is stored as a copy.
    """
    seen = {} if seen is None else seen
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        identity = (t.data_ptr(), t.dtype, tuple(t.shape), t.stride())
        if t.numel() and identity in seen:
            return {"__tensor__": seen[identity]}
        t = t.contiguous()
        if t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        key = f"t{len(tensors)}:{prefix}"
        tensors[key], seen[identity] = t, key
        return {"__tensor__": key}
    if isinstance(obj, dict):
        # JSON keys are strings; remember integer keys (optimizer state is keyed by param index).
        return {"__dict__": [[k, _split(v, tensors, f"{prefix}.{k}", seen)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__":
                [_split(v, tensors, f"{prefix}.{i}", seen) for i, v in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _join(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_join(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(_join(v, tensors) for v in obj["__tuple__"])
    return obj


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested dict of tensors and plain values to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, tensors, "state")
    atomic_write_bytes(path, st_save(tensors, metadata={"tree": json.dumps(tree)}))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: the run stopped before its first checkpoint; start it again")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__", {})
        return _join(json.loads(metadata["tree"]), tensors)
    except (SafetensorError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(f"checkpoint {path} is corrupt ({exc}); start the run again") from None
