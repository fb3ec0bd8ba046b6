"""Settings: defaults < the model's training defaults < config file (TOML) < command-line flags.

Every key is known in advance; an unknown key in a config file is an error, not a silent no-op.
The resolved settings are saved in each run's config.json.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from deepskeptic.errors import UserError

# Settings every task shares. Units and reasons are in the comments; tasks add their own.
COMMON_DEFAULTS: dict[str, Any] = {
    "data": None,            # data set name or path
    "model": None,           # registry name
    "epochs": None,          # passes over the training data (the task's default when no budget)
    "time_budget": None,     # seconds of training; the LR schedule spans it; evaluation not counted
    "seed": 0,               # model initialisation, batch order, dropout, augmentation
    "device": "auto",        # auto: CUDA when present, else CPU
    "compile": False,        # torch.compile the model (worth it on GPUs for runs of minutes)
    "amp": True,             # bf16 autocast on CUDA; ignored on CPU, where it is slower
    "cpu_bf16": "auto",      # bf16 autocast on CPU: auto = on where the CPU has AVX512-BF16 or AMX
                             # (2x the images/s of fp32 there, same accuracy); true/false to force
    "lr": None,              # peak learning rate (the model's default when unset)
    "weight_decay": None,    # AdamW decoupled weight decay (the model's default when unset)
    "batch_size": None,      # examples per step (the model's default when unset)
    "warmup": 0.05,          # fraction of the schedule with linear LR warm-up
    "schedule": "linear",    # after warm-up: linear decay to 0, cosine, constant, or constant-linear
    "out": None,             # run folder (default runs/<task>-<data>-<model>-<time>)
    "progress": True,        # progress bars / per-epoch lines on stderr
    "model_config": {},      # the model's own settings ([model] table of the config file)
}


def _normalise(key: str) -> str:
    return key.replace("-", "_")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass an existing .toml file to --config")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    out = {_normalise(k): v for k, v in raw.items() if k != "model" or not isinstance(v, dict)}
    if isinstance(raw.get("model"), dict):
        out["model_config"] = {_normalise(k): v for k, v in raw["model"].items()}
    return out


def resolve(defaults: dict[str, Any], model_defaults: dict[str, Any], config: dict[str, Any],
            flags: dict[str, Any], config_name: str = "config file") -> dict[str, Any]:
    """Merge the layers; ``flags`` holds only the flags the user gave (None means not given)."""
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise UserError(f"unknown key(s) in {config_name}: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(k for k in defaults if k != 'model_config'))} and a [model] table")
    given = {k: v for k, v in flags.items() if v is not None}
    user = {**config, **given}
    if user.get("epochs") is not None and user.get("time_budget") is not None:
        raise UserError("give either epochs or a time budget, not both")
    settings = {**defaults, **{k: v for k, v in model_defaults.items() if k in defaults}, **user}
    settings["model_config"] = {**defaults.get("model_config", {}), **config.get("model_config", {}),
                                **(given.get("model_config") or {})}
    if settings.get("time_budget") is not None:
        settings["epochs"] = None
    check_common(settings)
    return settings


def check_common(settings: dict[str, Any]) -> None:
    for key in ("epochs", "batch_size"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise UserError(f"{key.replace('_', '-')} must be a positive whole number, got {value!r}")
    for key in ("time_budget", "lr"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise UserError(f"{key.replace('_', '-')} must be a positive number, got {value!r}")
    if settings.get("weight_decay") is not None and settings["weight_decay"] < 0:
        raise UserError(f"weight-decay must not be negative, got {settings['weight_decay']!r}")
    if not 0 <= settings.get("warmup", 0) < 1:
        raise UserError(f"warmup must be a fraction in [0, 1), got {settings['warmup']!r}")
    if settings.get("schedule") not in ("linear", "cosine", "constant", "constant-linear"):
        raise UserError(f"schedule must be linear, cosine, constant or constant-linear, got {settings.get('schedule')!r}")
    if settings.get("device") not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {settings.get('device')!r}")


def positive_int(settings: dict[str, Any], key: str, *, allow_zero: bool = False) -> int | None:
    """``settings[key]`` if it is None or a whole number of at least 1 (or 0 with ``allow_zero``);
    otherwise a UserError naming the flag."""
    value = settings.get(key)
    low = 0 if allow_zero else 1
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
        what = "0 or more" if allow_zero else "a positive whole number"
        raise UserError(f"--{key.replace('_', '-')} must be {what}, got {value!r}")
    return value
