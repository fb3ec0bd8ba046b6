"""The one model registry: every model of every task is created by name from here.

A model is a plain ``nn.Module`` built from one small dataclass config. Registration is explicit:
``deepskeptic/models/__init__.py`` imports every model module, and Python runs that file before any
``deepskeptic.models.registry`` import completes, so ``create`` never misses a model because some
module happened not to be imported (the lesson of timm's "unknown model" issues).
"""
from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn

from deepskeptic.errors import UserError, unknown_name


ROLES = ("deep", "baseline")   # the model on trial, or what it has to beat
# What a model reads, so that tools (compare, export, the server) need not guess from its name.
READS = {
    "pixels": "images as (B, C, H, W) standardised pixels",
    "windows": "a (B, lookback, features) window of a scaled series",
    "series": "the whole training history of a series (a statistical method, fitted per origin)",
    "chars": "character ids (B, T) of the run's vocabulary",
    "ngram-counts": "word 1- and 2-gram counts of a document, log(1 + count) scaled to unit length",
    "log-mel": "(B, T, n_mels) log-mel frames with their lengths",
    "pooled-log-mel": "log-mel frames pooled over time (mean and std per band)",
    "latent": "(B, latent_dim) Gaussian noise",
}


@dataclass(frozen=True)
class ModelSpec:
    task: str
    name: str
    config_cls: type                      # dataclass of the model's settings
    build: Callable[[Any], nn.Module]     # config -> module
    description: str
    role: str                             # one of ROLES
    reads: str                            # one of READS
    one_step: bool = False                # fitted in one step (statistics, counts, identity): no epochs,
                                          # no budget, the same result for every seed
    train_defaults: dict = field(default_factory=dict)  # training settings this model works best with

    @property
    def is_network(self) -> bool:
        """Trained by gradient steps (and so exportable as a graph)."""
        return not self.one_step


_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register(task: str, name: str, config_cls: type, *, description: str, role: str, reads: str,
             one_step: bool = False, train_defaults: dict | None = None):
    """Decorator for a builder ``config -> nn.Module``; the metadata is checked here, so a typo in a
    role or input form fails at import, not in a comparison hours later."""
    if role not in ROLES:
        raise ValueError(f"model {task}/{name}: role must be one of {ROLES}, got {role!r}")
    if reads not in READS:
        raise ValueError(f"model {task}/{name}: reads must be one of {sorted(READS)}, got {reads!r}")
    if not dataclasses.is_dataclass(config_cls):
        raise ValueError(f"model {task}/{name}: config_cls must be a dataclass")

    def wrap(build):
        key = (task, name)
        if key in _REGISTRY:
            raise RuntimeError(f"model {task}/{name} registered twice")
        _REGISTRY[key] = ModelSpec(task, name, config_cls, build, description, role, reads, one_step,
                                   dict(train_defaults or {}))
        return build
    return wrap


def specs(task: str | None = None) -> list[ModelSpec]:
    """Every registered model (of ``task``), in registration order."""
    return [s for (t, _), s in _REGISTRY.items() if task is None or t == task]


def names(task: str) -> list[str]:
    return [name for (t, name) in _REGISTRY if t == task]


def spec(task: str, name: str) -> ModelSpec:
    try:
        return _REGISTRY[(task, name)]
    except KeyError:
        raise unknown_name(f"model for task '{task}'", name, names(task)) from None


def make_config(task: str, name: str, **settings) -> Any:
    """The model's config dataclass from keyword settings; unknown keys are errors."""
    config_cls = spec(task, name).config_cls
    valid = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(settings) - valid)
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} for model '{name}'; "
                        f"valid: {', '.join(sorted(valid))}")
    hints = typing.get_type_hints(config_cls)
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    for key, value in settings.items():
        kind = _kind_error(hints.get(key), value)
        if kind:
            raise UserError(f"model setting {key} of '{name}' must be {kind}, got {value!r}; fix it in the "
                            f"[model] table of your config file")
        bound = _range_error(key, hints.get(key), defaults.get(key), value)
        if bound:
            raise UserError(f"model setting {key} of '{name}' is out of range: {key} must be {bound}, got "
                            f"{value!r}; fix it in the [model] table of your config file")
    return config_cls(**settings)


# The range rule every model config follows, so that no model declares its ranges again:
# - an int field, or each number of a tuple-of-int field, is a size, a width or a count: at least 1;
#   at least 0 where 0 means something: a field whose default is 0 ("sized from the image size")
#   and the ARIMA order bounds below (an order of 0 is an order);
# - a float field is finite, and a dropout probability is in [0, 1).
# Narrower ranges (smoothing in (0, 1], a size the architecture accepts) stay with the model's builder.
ZERO_IS_A_VALUE = frozenset({"max_p", "max_d", "max_q"})


def _range_error(key: str, hint: Any, default: Any, value: Any) -> str | None:
    """What ``value`` should have been if it is of the right kind (``_kind_error``) but out of the
    rule's range; None when it is in range or not a number."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    low = 0 if (default == 0 and not isinstance(default, bool)) or key in ZERO_IS_A_VALUE else 1
    what = "a positive whole number" if low == 1 else "a whole number >= 0"
    if origin is int and not isinstance(value, bool):
        return what if not (isinstance(value, numbers.Integral) and value >= low) else None
    if origin is tuple and args and args[0] is int:
        ok = all(isinstance(x, numbers.Integral) and not isinstance(x, bool) and x >= low for x in value)
        return None if ok else f"a list of {what.removeprefix('a ')}s"
    if origin is float and isinstance(value, numbers.Real):
        if not np.isfinite(value):
            return "a finite number"
        if key == "dropout" and not 0 <= value < 1:
            return "a probability in [0, 1)"
    return None


def _kind_error(hint: Any, value: Any) -> str | None:
    """What ``value`` should have been if it does not fit the type ``hint`` of a config field
    (bool, int, float, str, tuple, optionally None); None when it fits or the hint is another type."""
    args = typing.get_args(hint)
    if type(None) in args:                                        # X | None
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else None
    checks = {bool: ("true or false", lambda v: isinstance(v, (bool, np.bool_))),
              int: ("a whole number", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))),
              float: ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))),
              str: ("a string", lambda v: isinstance(v, str)),
              tuple: ("a list of numbers", lambda v: isinstance(v, (list, tuple))
                      and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in v))}
    origin = typing.get_origin(hint) or hint
    if origin in checks and not checks[origin][1](value):
        return checks[origin][0]
    return None


def create(task: str, name: str, **settings) -> nn.Module:
    return spec(task, name).build(make_config(task, name, **settings))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
