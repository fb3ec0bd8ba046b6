"""What the JSON files of a run folder must hold, checked when they are read back.

A run folder is the user's to edit, copy and damage, so config.json, metrics.json and history.jsonl
are checked on load against the shapes below: a wrong type, an absurd size or a model name that
the registry does not know is one line naming the file and the key, never a KeyError or TypeError
deep inside a task. Keys the code reads but a schema does not list are still safe to miss: the
objects handed out raise ``MissingKey`` (a UserError) naming the file and the key.

The checkers are small functions ``check(value, path) -> message or None``; ``obj`` combines them.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deepskeptic.errors import MissingKey, UserError
from deepskeptic.fileio import CorruptFile

Check = Callable[[Any, str], "str | None"]

# The tasks, by name (deepskeptic.tasks calls ``use_tasks``): their declared settings and primary
# metric. The layers above runs.py know the tasks; this module must not import them (no import
# circle), so they are handed down once.
_TASKS: dict[str, Any] = {}


def use_tasks(tasks: "Mapping[str, Any]") -> None:
    """Check run folders against these tasks (name -> Task: ``declarations()``, ``primary_metric``)."""
    _TASKS.update(tasks)


def knows_tasks() -> bool:
    return bool(_TASKS)


def primary_metric(task: str) -> str | None:
    return getattr(_TASKS.get(task), "primary_metric", None) or None

MAX_IMAGE_SIDE = 4096          # pixels: a run's images are resized to this at most (64 MiB a batch of 1)
MAX_CLASSES = 100_000
MAX_PARAMS = 2**31             # a model of more parameters (8 GiB in float32) is no run of ours
AGAIN = "the file was edited or damaged: restore it, or train the run again"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number(lo: float | None = None, hi: float | None = None, *, whole: bool = False,
           null: bool = False, finite: bool = False) -> Check:
    what = ("a whole number" if whole else "a number") + (f" from {lo}" if lo is not None else "") + \
           (f" to {hi}" if hi is not None else "") + (" or null" if null else "")

    def check(value, path):
        if value is None and null:
            return None
        ok = isinstance(value, int) if whole else _is_number(value)
        if not ok or isinstance(value, bool):
            return f"{path} must be {what}, got {_short(value)}"
        if isinstance(value, float) and math.isnan(value):
            return None if not finite else f"{path} must be {what}, got NaN"
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (finite and math.isinf(value)):
            return f"{path} must be {what}, got {_short(value)}"
        return None
    return check


def text(*, null: bool = False, max_len: int = 100_000) -> Check:
    def check(value, path):
        if value is None and null:
            return None
        if not isinstance(value, str):
            return f"{path} must be a string{' or null' if null else ''}, got {_short(value)}"
        if len(value) > max_len:
            return f"{path} is longer than {max_len} characters"
        return None
    return check


def boolean(value, path):
    return None if isinstance(value, bool) else f"{path} must be true or false, got {_short(value)}"


def anything(value, path):
    return None


def list_of(item: Check, *, min_len: int = 0, max_len: int = 10_000_000, null: bool = False) -> Check:
    def check(value, path):
        if value is None and null:
            return None
        if not isinstance(value, list):
            return f"{path} must be a list, got {_short(value)}"
        if not min_len <= len(value) <= max_len:
            return f"{path} must have {min_len} to {max_len} entries, has {len(value)}"
        for i, v in enumerate(value):
            problem = item(v, f"{path}[{i}]")
            if problem:
                return problem
        return None
    return check


def obj(fields: dict[str, Check] | None = None, *, required: Sequence[str] = (), other: Check = anything,
        null: bool = False) -> Check:
    """A JSON object whose listed ``fields`` pass their checks (when present), which has every key
    of ``required``, and whose other values pass ``other``."""
    fields = fields or {}

    def check(value, path):
        if value is None and null:
            return None
        if not isinstance(value, dict):
            return f"{path or 'the file'} must be a JSON object, got {_short(value)}"
        for key in required:
            if key not in value:
                return f"{_join(path, key)} is missing"
        for key, v in value.items():
            problem = fields.get(key, other)(v, _join(path, key))
            if problem:
                return problem
        return None
    return check


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def validate(value: Any, check: Check, where: str, hint: str = AGAIN, path: str = "") -> Any:
    """``value`` (found at ``path`` in the file) if it passes ``check``; else a CorruptFile:
    ``where`` is not valid: what is wrong; ``hint``."""
    problem = check(value, path)
    if problem:
        raise CorruptFile(f"{where} is not valid: {problem}; {hint}")
    return value


# --- objects that name their file when a key is missing --------------------------------------

class FileDict(dict):
    """A dict read from ``where``: a missing key is a MissingKey naming the file and the key path."""

    def __init__(self, data=(), where: str = "file", path: str = ""):
        super().__init__(data)
        self.where, self.path = where, path

    def __missing__(self, key):
        raise MissingKey(f"{self.where} has no {_join(self.path, key)}; {AGAIN}")


def strict(value: Any, where: str, path: str = "") -> Any:
    """``value`` with every dict inside it a FileDict."""
    if isinstance(value, dict):
        return FileDict({k: strict(v, where, _join(path, k)) for k, v in value.items()}, where, path)
    if isinstance(value, list):
        return [strict(v, where, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


# --- the files of a run folder ---------------------------------------------------------------

_size = number(1, MAX_IMAGE_SIDE, whole=True)
_count = number(0, whole=True)
_names = list_of(text(max_len=10_000), min_len=1, max_len=MAX_CLASSES)
_image_info = {"classes": _names, "channels": number(1, 4, whole=True), "image_size": _size,
               "mean": list_of(number(finite=True), min_len=1, max_len=4),
               "std": list_of(number(0, finite=True), min_len=1, max_len=4)}


def _chars(value, path) -> str | None:
    """A vocabulary's characters: one string of them, or a list of one-character strings."""
    if isinstance(value, str):
        return None if len(value) <= 10_000_000 else f"{path} is too long"
    return list_of(text(max_len=8), max_len=10_000_000)(value, path)


_vocab = obj({"chars": _chars, "pad": boolean}, required=("chars",))

# data_info of each task's config.json: what its predictor, report and export read.
DATA_INFO: dict[str, Check] = {
    "image": obj(_image_info, required=("classes", "channels", "image_size", "mean", "std")),
    "gan": obj({k: _image_info[k] for k in ("channels", "image_size")},
               required=("channels", "image_size"), other=anything),
    "cyclegan": obj({"names": list_of(text(), min_len=2, max_len=2), "channels": _image_info["channels"],
                     "image_size": _size}, required=("names", "channels", "image_size")),
    "text": obj({"classes": _names, "reading": text(), "vocab": _vocab}, required=("classes",)),
    "textgen": obj({"vocab": _vocab}, required=("vocab",)),
    "speech": obj({"labels": list_of(text(max_len=10_000), max_len=MAX_CLASSES, null=True),
                   "features": obj(other=anything), "train_speakers": list_of(text()),
                   "test_speakers": list_of(text())}, required=("features",)),
    "forecast": obj({"target": text(), "covariates": list_of(text()), "mean": anything, "std": anything,
                     "freq": text(null=True)}, required=("target", "covariates", "mean", "std")),
}

# Keys of metrics.json every task writes (training.train adds them).
_COMMON_METRICS = {"train_seconds": number(0), "epochs": number(0, whole=True), "params": _count,
                   "device": text(), "seed": number(whole=True), "model": text(), "data": text(),
                   "flops_per_example": number(0, null=True)}
_rows = list_of(list_of(number(0, whole=True), max_len=MAX_CLASSES), max_len=MAX_CLASSES)


def _matrix(value, path) -> str | None:
    """A confusion matrix: square, of counts."""
    problem = _rows(value, path)
    if problem is None and any(len(row) != len(value) for row in value):
        return f"{path} must be a square matrix ({len(value)} rows of {len(value)} counts)"
    return problem


TASK_METRICS: dict[str, dict[str, Check]] = {
    "image": {"confusion_matrix": _matrix, "per_class_accuracy": obj(other=number(null=True)),
              "test_top5_accuracy": number(null=True)},
    "speech": {"confusion_matrix": _matrix},
    "gan": {"class_histogram": obj(other=number(0)), "heldout_class_histogram": obj(other=number(0))},
    "forecast": {"horizon": number(1, whole=True), "season": number(0, whole=True, null=True)},
}


def metric_value(value, path) -> str | None:
    """Names that say they are measurements (test_*, val_*, *_seconds) hold numbers (or null), or
    a table of them by group (e.g. test_wer_per_voice)."""
    key = path.rsplit(".", 1)[-1]
    if key.startswith(("test_", "val_")) or key.endswith("_seconds"):
        if isinstance(value, dict):
            return obj(other=number(null=True))(value, path)
        return number(null=True)(value, path)
    return None


def metrics_schema(task: str, primary: str | None) -> Check:
    fields = {**_COMMON_METRICS, **TASK_METRICS.get(task, {})}
    if primary:
        fields[primary] = number(null=True)
    return obj(fields, required=tuple(k for k in ("epochs", "train_seconds", primary) if k), other=metric_value)


def history_line(value, path) -> str | None:
    """One line of history.jsonl: an object of numbers (or null), with its epoch."""
    return obj({"epoch": number(0, whole=True)}, required=("epoch",), other=number(null=True))(value, path)


def check_config(config: Any, where: str) -> None:
    """config.json: its task and model known, its settings of the kinds their defaults have, its
    model_config one the model accepts and of a size that fits in memory, its data_info the shape
    the task reads. A CorruptFile (one line) otherwise."""
    from deepskeptic.models import registry
    validate(config, obj({"task": text(max_len=100), "settings": obj(required=("model", "data")),
                          "model_config": obj(), "data_info": obj(), "flops_per_example": number(0, null=True)},
                         required=("task", "settings", "model_config")), where)
    name = config["task"]
    tasks = sorted({s.task for s in registry.specs()} | set(_TASKS))
    if name not in tasks:
        raise CorruptFile(f"{where} names an unknown task '{name}' (tasks: {', '.join(tasks)}); {AGAIN}")
    settings, model = config["settings"], config["settings"]["model"]
    if not isinstance(model, str) or model not in registry.names(name):
        raise CorruptFile(f"{where} names a model {_short(model)} that task '{name}' does not have "
                          f"(models: {', '.join(registry.names(name))}); {AGAIN}")
    _check_settings(_TASKS.get(name), settings, where)
    model_config = config["model_config"]
    try:
        registry.make_config(name, model, **model_config)
    except UserError as exc:
        reason = str(exc).split("; fix it in")[0]
        raise CorruptFile(f"{where} is not valid: model_config: {reason}; {AGAIN}") from None
    _check_model_size(name, model, model_config, where)
    info = DATA_INFO.get(name)
    if info is not None and "data_info" in config:
        validate(config["data_info"], info, where, path="data_info")
    _check_agreement(name, model_config, config.get("data_info"), where)


def _check_agreement(task: str, model_config: dict, info: Any, where: str) -> None:
    """What config.json says twice must agree: the classes (image, text), channels and size
    (image) in data_info and in the model's settings, and one mean and std per channel."""
    if task not in ("image", "text") or not isinstance(info, dict):
        return
    pairs = [("classes", len(info["classes"]), "num_classes")]
    if task == "image":
        pairs += [("channels", info["channels"], "in_channels"), ("image_size", info["image_size"], "image_size")]
    for key, value, setting in pairs:
        if setting in model_config and model_config[setting] != value:
            raise CorruptFile(f"{where} is not valid: data_info.{key} ({value}) and model_config.{setting} "
                              f"({model_config[setting]!r}) disagree; {AGAIN}")
    for key in ("mean", "std") if task == "image" else ():
        if len(info[key]) != info["channels"]:
            raise CorruptFile(f"{where} is not valid: data_info.{key} has {len(info[key])} value(s) for "
                              f"{info['channels']} channel(s); {AGAIN}")


def _check_settings(task: Any, settings: dict, where: str) -> None:
    """Every saved setting against its declaration (kind and range: settings.Setting, the gate the
    flags, config files and keywords went through): the task's own when the tasks are known
    (``use_tasks``), the shared ones always; then the rules across settings."""
    from deepskeptic import settings as settings_mod
    declarations = task.declarations() if task is not None else settings_mod.COMMON_SETTINGS
    for key, value in settings.items():
        if key in declarations:
            try:
                declarations[key].check(value, f"settings.{key}")
            except UserError as exc:
                raise CorruptFile(f"{where} is not valid: {exc}; {AGAIN}") from None
    try:
        settings_mod.check_common(dict(settings))
    except UserError as exc:
        raise CorruptFile(f"{where} is not valid: settings: {exc}; {AGAIN}") from None


def _check_model_size(task: str, model: str, model_config: dict, where: str) -> None:
    """Build the model on the meta device (no memory) to refuse one that would not fit, or that
    its settings cannot build, before anything allocates it."""
    import torch
    from deepskeptic.models import registry
    try:
        with torch.device("meta"):
            module = registry.create(task, model, **model_config)
    except UserError as exc:
        raise CorruptFile(f"{where} is not valid: model_config: {exc}; {AGAIN}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to build means the settings are wrong
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CorruptFile(f"{where} is not valid: model_config does not build model '{model}' ({reason}); "
                          f"{AGAIN}") from None
    size = sum(t.numel() for t in [*module.parameters(), *module.buffers()])
    if size > MAX_PARAMS:
        raise CorruptFile(f"{where} is not valid: model_config asks for a model of {size:,} parameters "
                          f"(at most {MAX_PARAMS:,}); {AGAIN}")
