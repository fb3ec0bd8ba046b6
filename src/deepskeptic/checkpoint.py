"""Checkpoints as one safetensors file: tensors in the body, everything else as JSON in its header.

Nothing is ever unpickled: nested state (optimizer state dicts, RNG states, loop position) is split
into tensors, stored by safetensors, and plain JSON, stored in the file's metadata. The file is
written atomically, so a kill during a write leaves the previous checkpoint intact. Reading one
back checks it: a damaged or crafted checkpoint is one line, never a traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from torch import nn

from deepskeptic.errors import UserError
from deepskeptic.fileio import CorruptFile, atomic_write_bytes, parse_json, read_bytes
from deepskeptic.schema import AGAIN, FileDict, boolean, history_line, list_of, number, obj, validate

CHECKPOINT_FILE = "state.safetensors"
MAX_CHECKPOINT_BYTES = 64 * 2**30      # weights and optimizer state of the largest model (2**31 params)


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


def _join(obj: Any, tensors: dict[str, torch.Tensor], where: str, path: str = "state") -> Any:
    """The nested state ``_split`` made, from its JSON tree; a CorruptFile naming ``where`` and
    the place in the tree when the tree is not one ``_split`` writes. Dicts come back as FileDicts
    (a missing key names the checkpoint). The tree's depth is bounded before this recursion."""
    if isinstance(obj, dict):
        if len(obj) == 1:
            (tag, value), = obj.items()
            if tag == "__tensor__":
                if not isinstance(value, str) or value not in tensors:
                    raise CorruptFile(f"checkpoint {where} is corrupt: {path} refers to a tensor it does not hold; "
                                      f"{AGAIN}")
                return tensors[value]
            if tag == "__dict__" and isinstance(value, list):
                out = FileDict(where=f"checkpoint {where}", path=path)
                for entry in value:
                    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], (str, int))
                            and not isinstance(entry[0], bool)):
                        raise CorruptFile(f"checkpoint {where} is corrupt: {path} holds an entry that is not a "
                                          f"[key, value] pair; {AGAIN}")
                    out[entry[0]] = _join(entry[1], tensors, where, f"{path}.{entry[0]}")
                return out
            if tag in ("__list__", "__tuple__") and isinstance(value, list):
                items = [_join(v, tensors, where, f"{path}[{i}]") for i, v in enumerate(value)]
                return items if tag == "__list__" else tuple(items)
        raise CorruptFile(f"checkpoint {where} is corrupt: {path} is an object this version never writes; {AGAIN}")
    if isinstance(obj, list):
        raise CorruptFile(f"checkpoint {where} is corrupt: {path} is a bare list; {AGAIN}")
    return obj


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested dict of tensors and plain values to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split(state, tensors, "state")
    atomic_write_bytes(path, st_save(tensors, metadata={"tree": json.dumps(tree)}))


def load_state(path: str | Path) -> dict[str, Any]:
    """The state ``save_state`` wrote to ``path``. Anything else (not safetensors, a tree that is
    not JSON, nested absurdly deep, referring to tensors it lacks; for the engine's checkpoints,
    a position, history or RNG state of the wrong shape) is one UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: the run stopped before its first checkpoint; start it again")
    data = read_bytes(path, MAX_CHECKPOINT_BYTES, "checkpoint")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, OverflowError) as exc:
        raise CorruptFile(f"checkpoint {path} is corrupt ({str(exc)[:200]}); {AGAIN}") from None
    header_len = int.from_bytes(data[:8], "little")
    header = parse_json(data[8:8 + header_len], f"checkpoint {path}")
    tree = header.get("__metadata__", {}).get("tree") if isinstance(header, dict) else None
    if not isinstance(tree, str):
        raise CorruptFile(f"checkpoint {path} is corrupt: it has no state tree; {AGAIN}")
    state = _join(parse_json(tree, f"checkpoint {path}"), tensors, str(path))
    if not isinstance(state, dict):
        raise CorruptFile(f"checkpoint {path} is corrupt: its state is not a dict; {AGAIN}")
    if "epoch_generator_state" in state:      # the engine's checkpoint (a key only it writes)
        validate(state, _training_state(), f"checkpoint {path}", AGAIN)
    return state


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The engine's checkpoint at ``path``, always checked as one (modules, optimizers, position,
    history, RNG states of the shapes engine._Loop.save writes)."""
    state = load_state(path)
    if "epoch_generator_state" not in state:
        validate(state, _training_state(), f"checkpoint {path}", AGAIN)
    return state


def _tensor(dtype: torch.dtype, shape: tuple[int, ...] | None = None):
    def check(value, where):
        if not isinstance(value, torch.Tensor):
            return f"{where} must be a tensor, got {type(value).__name__}"
        if value.dtype != dtype or (shape is not None and tuple(value.shape) != shape):
            return (f"{where} must be a {str(dtype).replace('torch.', '')} tensor"
                    + (f" shaped {shape}" if shape else "") + f", got {value.dtype} {tuple(value.shape)}")
        return None
    return check


def _any_tensor(value, where):
    return None if isinstance(value, torch.Tensor) else f"{where} must be a tensor, got {type(value).__name__}"


def _tensor_or_number(value, where):
    ok = isinstance(value, torch.Tensor) or (isinstance(value, (int, float)) and not isinstance(value, bool))
    return None if ok else f"{where} must be a tensor or a number, got {type(value).__name__}"


def _tensor_or_null(value, where):
    return None if value is None else _any_tensor(value, where)


def _param_group():
    """A torch optimizer's parameter group: the options torch's optimizers share, of their kinds."""
    rate = number(0, finite=True)
    flag = boolean
    def optional_flag(value, where):
        return None if value is None else boolean(value, where)

    def pair(value, where):
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1 for v in value)
        return None if ok else f"{where} must be two numbers in [0, 1), got {value!r}"[:200]
    return obj({"params": list_of(number(0, whole=True)), "lr": rate, "base_lr": rate, "initial_lr": rate,
                "weight_decay": rate, "eps": rate, "momentum": rate, "dampening": rate, "betas": pair,
                "amsgrad": flag, "maximize": flag, "capturable": flag, "differentiable": flag,
                "nesterov": flag, "decoupled_weight_decay": flag, "foreach": optional_flag, "fused": optional_flag},
               required=("params",))


def _training_state():
    """The engine's checkpoint (engine._Loop.save): modules, optimizers, the loop position,
    history and RNG states."""
    rng = _tensor(torch.uint8, tuple(torch.get_rng_state().shape))
    whole = number(0, whole=True)
    return obj({
        "modules": obj(other=obj(other=_any_tensor)),
        "optimizers": obj(other=obj({"state": obj(other=obj({"step": _tensor_or_number}, other=_tensor_or_null)),
                                     "param_groups": list_of(_param_group())},
                                    required=("state", "param_groups"))),
        "extra": obj(),
        "position": obj({"epoch": whole, "batch": whole, "global_step": whole, "count": number(0),
                         "train_seconds": number(0, finite=True), "epoch_start_seconds": number(0, finite=True),
                         "sums": obj(other=number()), "done": boolean},
                        required=("epoch", "batch", "global_step", "count", "train_seconds", "sums")),
        "history": list_of(history_line),
        "epoch_generator_state": _tensor(torch.uint8, tuple(torch.Generator().get_state().shape)),
        "rng": obj({"torch": rng, "cuda": list_of(_tensor(torch.uint8))}, required=("torch",)),
        # under torchrun: every rank's own RNG states and job state, in rank order
        "ranks": list_of(obj({"rng": obj({"torch": rng, "cuda": list_of(_tensor(torch.uint8))}, required=("torch",)),
                              "extra": obj()}, required=("rng", "extra"))),
    }, required=("modules", "optimizers", "extra", "position", "history", "epoch_generator_state", "rng"))


def weights_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str | None:
    """What differs between the tensors a module has and those a file holds: names, shapes, dtypes
    (None when they match). Loading casts dtypes silently, so they are compared here."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        return f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
    if extra:
        return f"{len(extra)} unexpected tensor(s), e.g. {extra[0]}"
    for key, want in expected.items():
        got = found[key]
        if not isinstance(got, torch.Tensor):
            return f"{key} is not a tensor"
        if tuple(got.shape) != tuple(want.shape):
            return f"{key} is shaped {tuple(got.shape)}, the model's {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return (f"{key} is {str(got.dtype).replace('torch.', '')}, the model's "
                    f"{str(want.dtype).replace('torch.', '')}")
    return None


def restore(target: nn.Module | torch.optim.Optimizer, state: Any, what: str, path: str | Path) -> None:
    """``target.load_state_dict(state)`` for state read from the checkpoint ``path``: a module's
    tensors must match its own in name, shape and dtype; an optimizer's state must fit its
    parameter groups. A UserError naming ``what`` and the file otherwise."""
    if isinstance(target, nn.Module):
        problem = weights_mismatch(target.state_dict(), state) if isinstance(state, dict) else "not a dict"
        if problem:
            raise UserError(f"checkpoint {path} does not fit {what} ({problem}); {AGAIN}")
        target.load_state_dict(state)
        return
    problem = _groups_mismatch(target.param_groups, state.get("param_groups") if isinstance(state, dict) else None)
    if problem:
        raise UserError(f"checkpoint {path} does not fit {what} ({problem}); {AGAIN}")
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"checkpoint {path} does not fit {what} ({reason}); {AGAIN}") from None


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return repr(value) if value is None else "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return f"{len(value)} values"
    return type(value).__name__


def _groups_mismatch(live: list[dict], saved: Any) -> str | None:
    """How the saved parameter groups differ from an optimizer's own in number, sizes or the kind
    of an option (a number where a number belongs, a pair where a pair does)."""
    if not isinstance(saved, list) or len(saved) != len(live):
        return f"{len(saved) if isinstance(saved, list) else 'no'} parameter group(s), the optimizer has {len(live)}"
    for i, (mine, theirs) in enumerate(zip(live, saved)):
        if not isinstance(theirs, dict) or len(theirs.get("params", ())) != len(mine["params"]):
            return f"parameter group {i} holds another number of parameters"
        for key, value in mine.items():
            if key != "params" and key in theirs and _kind(theirs[key]) != _kind(value) and value is not None:
                return f"parameter group {i}: {key} is {_kind(theirs[key])}, the optimizer's {_kind(value)}"
    return None
