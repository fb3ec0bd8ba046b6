"""Settings: defaults < the model's training defaults < config file (TOML) < command-line flags.

Every setting is declared once, as a ``Setting``: its name, default, kind and range, next to the
reason for its default. That declaration is the one gate every source of a value goes through
before anything is built: the command line's flags (``Setting.add_flag``: parsed and checked by
argparse), the config file (``resolve``: each key by the file's name) and the Python API's
keywords (``check_layer``, from ``deepskeptic.api``). A value of the wrong kind (``"yes"`` for a
boolean, ``true`` for a number, a list for a count), not finite (nan, inf) or out of range is a
one-line ``UserError`` naming the setting, where it came from and what it must be.

Every key is known in advance; an unknown key in a config file is an error, not a silent no-op.
The resolved settings are saved in each run's config.json; resuming a run reads them back as they
are (runs.py and schema.py check what is read), not through this gate again.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from deepskeptic.errors import UserError
from deepskeptic.fileio import read_bytes

KINDS = ("bool", "int", "float", "str", "path", "choice", "dict")

# Pixels per side that --image-size may ask for: 4x the largest size a model here is designed for
# (CycleGAN's 256 px). A 1024 px RGB image is 3 MiB as uint8 and 12 MiB as float32, so a few
# thousand of them already fill a machine's memory; 100000 px would be 30 GB per image.
MAX_IMAGE_SIZE = 1024
# The seed range: what fits in 64 bits (torch's generators take it; seed + 1, which a GAN's final
# measures use, still fits the unsigned range torch also accepts).
SEED_RANGE = (-2**63, 2**63 - 1)


@dataclass(frozen=True)
class Setting:
    """One setting, declared once. ``check`` is the gate: it returns the value (numpy scalars as
    Python numbers, paths as strings) when it fits, and raises a one-line UserError otherwise.

    kind: bool (true/false only, never 1 or "yes"), int (a whole number, never a bool), float (a
    finite number, never a bool; whole numbers pass unchanged), str, path (a string or os.PathLike,
    kept as a string), choice (one of ``choices``, compared kind and value), dict (a table).
    ``low``/``high`` bound numbers, inclusive unless ``low_open``/``high_open``; None is allowed
    only where the default is None (it means "the task or model decides").
    """
    name: str
    default: Any
    kind: str
    help: str | None = None               # the flag's help; None: the setting has no flag
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"setting {self.name}: a choice needs its choices")
        if self.default is not None:      # a declaration whose default does not pass is a typo: fail at import
            self.check(self.default, f"the default of {self.name}")

    # --- how it is named
    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def expected(self) -> str:
        """What a value must be, in words: 'a positive whole number', 'a number in [0, 1)', ..."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(_show(c) for c in self.choices)
        if self.kind in ("str", "path"):
            return "a string" if self.kind == "str" else "a path (a string)"
        if self.kind == "dict":
            return "a table (dict) of the model's settings, e.g. {'widths': [16, 32, 64]}"
        noun = "whole number" if self.kind == "int" else "number"
        low, high = self.low, self.high
        if low is None and high is None:
            return f"a finite {noun}" if self.kind == "float" else f"a {noun}"
        if high is None:
            if (low == 0 and self.low_open) or (low == 1 and self.kind == "int" and not self.low_open):
                return f"a positive {noun}"
            return f"a {noun} {'>' if self.low_open else '>='} {_num(low)}"
        if low is None:
            return f"a {noun} {'<' if self.high_open else '<='} {_num(high)}"
        if self.kind == "int":
            return f"a {noun} from {_num(low)} to {_num(high)}"
        return f"a {noun} in {'(' if self.low_open else '['}{_num(low)}, {_num(high)}{')' if self.high_open else ']'}"

    # --- the gate
    def check(self, value: Any, where: str | None = None) -> Any:
        """``value`` if it fits this declaration (normalised), else a UserError saying
        '<where> must be <expected>, got <value>'; ``where`` defaults to the flag."""
        where = where or self.flag
        if value is None:
            if self.default is None:
                return None
            raise UserError(f"{where} must be {self.expected()}, got nothing")
        fits, value = self._fits(value)
        if not fits:
            expected = self.expected()
            if isinstance(value, float) and not math.isfinite(value) and self.kind == "float":
                expected = expected.replace("number", "finite number", 1).replace("finite finite", "finite")
            raise UserError(f"{where} must be {expected}, got {_show(value)}")
        return value

    def _fits(self, value: Any) -> tuple[bool, Any]:
        kind = self.kind
        is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"   # numpy's too
        if kind == "bool":
            return is_bool, bool(value) if is_bool else value
        if kind in ("int", "float"):
            if is_bool or not isinstance(value, numbers.Real):
                return False, value
            if kind == "int":
                if not isinstance(value, numbers.Integral):
                    return False, value
                value = int(value)
            else:
                value = value if isinstance(value, (int, float)) else float(value)
                if not math.isfinite(value):
                    return False, value
            return self._in_range(value), value
        if kind == "str":
            return isinstance(value, str), value
        if kind == "path":
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            return isinstance(value, str), value
        if kind == "choice":
            return any(type(value) is type(c) and value == c for c in self.choices), value
        return isinstance(value, dict), value                                 # dict

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value < self.low or self.low_open and value == self.low):
            return False
        if self.high is not None and (value > self.high or self.high_open and value == self.high):
            return False
        return True

    # --- the command line
    def parse(self, text: str, flag: str | None = None) -> Any:
        """A flag's text -> its checked value. Text that is no number is argparse's own error
        ('invalid int value'); a number out of range or not finite is this setting's UserError."""
        if self.kind == "int":
            value = int(text)
        elif self.kind == "float":
            value = float(text)
        else:
            value = text
        return self.check(value, flag)

    def add_flag(self, parser: argparse.ArgumentParser, *, flag: str | None = None, dest: str | None = None,
                 help: str | None = None, hidden: bool = False, default: Any = None) -> None:
        """This setting's flag on ``parser``: dest the setting's name, ``default`` (None: not given,
        so the config file and the defaults decide). Booleans get --x/--no-x, choices of strings
        argparse's choices, numbers a type that checks them as they are parsed."""
        flag, dest = flag or self.flag, dest or self.name
        text = argparse.SUPPRESS if hidden else (help or self.help)
        if self.kind == "bool":
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif self.kind == "choice" and all(isinstance(c, str) for c in self.choices):
            parser.add_argument(flag, dest=dest, choices=list(self.choices), default=default, help=text)
        elif self.kind in ("int", "float"):
            def convert(text: str) -> Any:
                return self.parse(text, flag)
            convert.__name__ = self.kind          # argparse's message: "invalid int value: '2.5'"
            parser.add_argument(flag, dest=dest, type=convert, default=default, help=text)
        else:
            parser.add_argument(flag, dest=dest, default=default, help=text)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else repr(x)


def _show(value: Any) -> str:
    """A value as the message shows it: short, one line."""
    if value is True or value is False:
        return str(value).lower()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def declared(settings: Iterable[Setting]) -> dict[str, Setting]:
    """{name: Setting}; a name declared twice is an error (at import)."""
    out: dict[str, Setting] = {}
    for s in settings:
        if s.name in out:
            raise ValueError(f"setting {s.name} declared twice")
        out[s.name] = s
    return out


def defaults_of(settings: Iterable[Setting]) -> dict[str, Any]:
    return {s.name: s.default for s in settings}


# ------------------------------------------------------------------ the settings every task shares
# Units and reasons are in the comments; tasks declare their own (Task.declared_settings).
S = Setting
COMMON_SETTINGS: dict[str, Setting] = declared([
    S("data", None, "path", "data set name (see 'deepskeptic datasets') or path"),
    S("model", None, "str", None),                       # registry name (its flag names the task's models)
    # passes over the training data (the task's default when no budget)
    S("epochs", None, "int", "passes over the training data", low=1),
    # seconds of training; the LR schedule spans it; evaluation not counted. Finite: inf never ends
    S("time_budget", None, "float", "seconds of training; the LR schedule spans them", low=0, low_open=True),
    S("seed", 0, "int", None, low=SEED_RANGE[0], high=SEED_RANGE[1]),  # initialisation, batch order, dropout, augmentation
    S("device", "auto", "choice", "where to train (auto)", choices=("auto", "cpu", "cuda")),  # auto: CUDA when present
    S("compile", False, "bool", "torch.compile the model"),  # worth it on GPUs for runs of minutes
    S("amp", True, "bool"),                              # bf16 autocast on CUDA; ignored on CPU, where it is slower
    # bf16 autocast on CPU: auto = on where the CPU has AVX512-BF16 or AMX (2x the images/s of fp32
    # there, same accuracy); true/false to force
    S("cpu_bf16", "auto", "choice", choices=("auto", True, False)),
    S("lr", None, "float", "peak learning rate", low=0, low_open=True),  # the model's default when unset
    S("weight_decay", None, "float", "AdamW weight decay", low=0),       # AdamW decoupled; the model's default when unset
    S("batch_size", None, "int", "examples per step", low=1),           # the model's default when unset
    S("warmup", 0.05, "float", low=0, high=1, high_open=True),          # fraction of the schedule with linear LR warm-up
    # after warm-up: linear decay to 0, cosine, constant, or constant-linear
    S("schedule", "linear", "choice", choices=("linear", "cosine", "constant", "constant-linear")),
    S("out", None, "path", "output folder"),             # run folder (default runs/<task>-<data>-<model>-<time>)
    S("progress", True, "bool", "progress bar and per-epoch lines on stderr (default on)"),
    # CPU threads torch trains with. None: chosen per run by deepskeptic.threads (the cores this
    # process may use less the load others put on them, at least 1): torch's own default, one per
    # core, ran the digits cnn 50x slower on 2 cores that two other processes kept busy
    S("threads", None, "int", "CPU threads to train with (default: the free cores this process may use)", low=1),
    S("model_config", {}, "dict"),                       # the model's own settings ([model] table of the config file)
])
del S
COMMON_DEFAULTS: dict[str, Any] = defaults_of(COMMON_SETTINGS.values())


def common(name: str, **changes) -> Setting:
    """A shared setting as a task declares it with another default (e.g. forecast's cpu_bf16 False)."""
    return dataclasses.replace(COMMON_SETTINGS[name], **changes)


# ------------------------------------------------------------------ the gate

def check_layer(declarations: Mapping[str, Setting], values: Mapping[str, Any],
                where: Callable[[str], str]) -> dict[str, Any]:
    """``values`` (one source: flags, a config file, keywords) checked against ``declarations``;
    ``where(name)`` names the setting in that source for the message. Keys not declared pass
    through (unknown keys are refused by ``resolve``, with the valid ones listed)."""
    out = dict(values)
    for key, value in values.items():
        if key in declarations:
            out[key] = declarations[key].check(value, where(key))
    return out


def flag_source(declarations: Mapping[str, Setting]) -> Callable[[str], str]:
    return lambda name: declarations[name].flag if name in declarations else f"--{name.replace('_', '-')}"


def config_source(config_name: str) -> Callable[[str], str]:
    where = config_name if config_name.startswith("config file") else f"config file {config_name}"
    return lambda name: f"{name} in {where}"


def keyword_source(name: str) -> str:
    return f"keyword {name}"


def _normalise(key: str) -> str:
    return key.replace("-", "_")


MAX_CONFIG_BYTES = 2**20     # a settings file; anything larger is not one


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"config file {path} does not exist; pass an existing .toml file to --config")
    data = read_bytes(path, MAX_CONFIG_BYTES, "config file")   # a FIFO, a device, a folder: one line
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    out = {_normalise(k): v for k, v in raw.items() if k != "model" or not isinstance(v, dict)}
    if isinstance(raw.get("model"), dict):
        out["model_config"] = {_normalise(k): v for k, v in raw["model"].items()}
    return out


def resolve(defaults: dict[str, Any], model_defaults: dict[str, Any], config: dict[str, Any],
            flags: dict[str, Any], config_name: str = "config file",
            declarations: Mapping[str, Setting] | None = None) -> dict[str, Any]:
    """Merge the layers; ``flags`` holds only the flags the user gave (None means not given).
    Each value of the config file and of the flags is checked against ``declarations`` (the
    common ones when not given) before it is merged."""
    declarations = COMMON_SETTINGS if declarations is None else declarations
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise UserError(f"unknown key(s) in {config_name}: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(k for k in defaults if k != 'model_config'))} and a [model] table")
    config = check_layer(declarations, config, config_source(config_name))
    given = check_layer(declarations, {k: v for k, v in flags.items() if v is not None}, flag_source(declarations))
    user = {**config, **given}
    if user.get("epochs") is not None and user.get("time_budget") is not None:
        raise UserError("give either epochs or a time budget, not both")
    settings = {**defaults, **{k: v for k, v in model_defaults.items() if k in defaults}, **user}
    settings["model_config"] = {**defaults.get("model_config", {}), **config.get("model_config", {}),
                                **(given.get("model_config") or {})}
    if settings.get("time_budget") is not None:
        settings["epochs"] = None
    return settings


def check_common(settings: dict[str, Any]) -> None:
    """Resolved settings (e.g. a run's config.json read back): the shared ones of the kinds and in
    the ranges declared, epochs or a time budget but not both."""
    check_layer(COMMON_SETTINGS, settings, lambda name: name.replace("_", "-"))
    if settings.get("epochs") is not None and settings.get("time_budget") is not None:
        raise UserError("give either epochs or a time budget, not both")
