"""The Python API: the same calls the command line makes, with settings by keyword.

    import deepskeptic
    run = deepskeptic.train("image", data="digits", model="cnn", epochs=5)
    run.predict(images)                       # decoded inputs (arrays, PIL images) or paths
    cmp = deepskeptic.compare("image", data="digits", models=["mlp", "cnn"], seeds=3, epochs=5)
    cmp.table()                               # a pandas DataFrame
    deepskeptic.load("runs/cnn-digits").evaluate()

Settings have the flags' names with underscores (``time_budget``, ``batch_size``, ``image_size``)
and go through the same validation as the flags; an unknown keyword is a ``UserError`` naming the
closest valid one. In-memory data (numpy arrays with labels, lists of strings, a pandas Series or
DataFrame, waveforms with their sample rate) is written once into the data cache, in the format the
task's file loader reads, so that it takes exactly the path a folder or CSV of the same data takes
and a run can be resumed or evaluated later.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from deepskeptic import runs as runs_mod
from deepskeptic import settings as settings_mod
from deepskeptic.compare import run_comparison
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.tasks import TASKS, get_task
from deepskeptic.tasks.base import Task
from deepskeptic.training import resolve_settings, resume_run, train as train_run

__all__ = ["train", "compare", "load", "resume", "Run", "Comparison", "UserError"]


# ------------------------------------------------------------------ settings by keyword

def _task(task: str | Task) -> Task:
    if isinstance(task, Task):
        return task
    if not isinstance(task, str):
        raise UserError(f"task must be a task name such as 'image', got {type(task).__name__}")
    return get_task(task)


def _valid_keywords(task: Task) -> set[str]:
    return set(settings_mod.COMMON_DEFAULTS) | set(task.task_defaults) | set(task.renamed_settings) | {"config"}


def _flags(task: Task, settings: dict[str, Any], *, drop: Iterable[str] = (),
           also: Iterable[str] = ()) -> tuple[dict[str, Any], str | None]:
    """Keyword settings -> (the flags dict the CLI would build, the config file); unknown names are
    errors that suggest the closest valid one (``also``: the caller's own keywords, such as
    compare's ``jobs``, suggested too), and each value is checked against its setting's
    declaration (kind, finiteness, range) as a flag is: 'keyword lr must be a positive number'."""
    valid = _valid_keywords(task) - set(drop)
    for key in settings:
        if key not in valid:
            raise unknown_name(f"setting for task '{task.name}'", key, valid | set(also))
    declarations = task.declarations()
    for old, new in task.renamed_settings.items():     # an old keyword is checked as its new name is
        if new in declarations:
            declarations[old] = declarations[new]
    flags = settings_mod.check_layer(declarations, {k: v for k, v in settings.items() if k != "config" and v is not None},
                                     settings_mod.keyword_source)
    config = settings.get("config")
    if config is not None and not isinstance(config, (str, os.PathLike)):
        raise UserError(f"config must be the path of a TOML file, got {type(config).__name__}")
    return flags, (str(config) if config is not None else None)


# ------------------------------------------------------------------ in-memory data

def _cache_root() -> Path:
    root = os.environ.get("DEEPSKEPTIC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "deepskeptic") / "memory"


def _materialise(task: Task, data: Any) -> str:
    """A data set name or path for ``data``: names and paths pass through; in-memory data is written
    once (keyed by its content) into the data cache in the format the task's loader reads."""
    if isinstance(data, os.PathLike) or (isinstance(data, str) and not _is_corpus(task, data)):
        return str(data)
    writer = _WRITERS.get(task.name)
    if writer is None:
        raise UserError(f"task '{task.name}' takes its data as a name or a path, not a "
                        f"{type(data).__name__}; see 'deepskeptic datasets'")
    files = writer(data)            # {relative path: bytes}
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).digest())
    name = files.pop("__name__").decode()
    target = _cache_root() / f"{task.name}-{digest.hexdigest()[:16]}"
    final = target / name
    if not final.exists():
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target, prefix=".writing-"))
        for rel, content in files.items():
            path = tmp / name / rel if rel else tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        try:
            os.replace(tmp / name, final)   # atomic: a half-written folder is never used
        except OSError:
            if not final.exists():
                raise
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final)


PATH_MAX = 4096   # longer strings cannot be a path on Linux


def _is_corpus(task: Task, data: str) -> bool:
    """For textgen a string with a line break (or longer than a path can be) is the corpus itself;
    any other string names a data set or a path. A one-line corpus goes in a list: [text]."""
    return task.name == "textgen" and ("\n" in data or len(data) > PATH_MAX)


def _labels(labels: Any, n: int, what: str) -> list[str]:
    if labels is None:
        raise UserError(f"in-memory {what} need labels: pass data=(inputs, labels)")
    labels = [str(v) for v in (labels.tolist() if hasattr(labels, "tolist") else list(labels))]
    if len(labels) != n:
        raise UserError(f"{n} {what} but {len(labels)} labels: give one label per example")
    for label in set(labels):
        if not label or label.startswith(".") or "/" in label or "\\" in label:
            raise UserError(f"label {label!r} cannot name a class folder: use labels without '/' or a leading '.'")
    return labels


def _split_pair(data: Any) -> tuple[Any, Any]:
    if isinstance(data, dict):
        unknown = set(data) - {"x", "y", "inputs", "labels", "texts", "sample_rate", "waveforms"}
        if unknown:
            raise UserError(f"unknown key(s) {', '.join(sorted(unknown))} in the data dict; use x and y")
        return data.get("x", data.get("inputs", data.get("texts", data.get("waveforms")))), data.get("y", data.get("labels"))
    if isinstance(data, tuple) and len(data) == 2:
        return data
    return data, None


def _png(image: np.ndarray) -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _as_hwc_uint8(images: Any) -> list[np.ndarray]:
    """Images as (N, H, W), (N, H, W, C) or (N, C, H, W) arrays (uint8, or floats in [0, 1]), or a
    list of PIL images / arrays -> a list of (H, W) or (H, W, C) uint8 arrays."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    items = list(images) if not isinstance(images, np.ndarray) else None
    if items is not None and items and Image is not None and all(isinstance(i, Image.Image) for i in items):
        return [np.asarray(i.convert("RGB" if i.mode not in ("L", "1", "I;16", "I") else "L")) for i in items]
    arr = np.asarray(images if items is None else [np.asarray(i) for i in items])
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise UserError("float images must hold finite values in [0, 1]; pass uint8 arrays for 0..255")
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 255:
            raise UserError(f"images must be uint8 (or floats in [0, 1]), got {arr.dtype} values")
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        return list(arr)
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3) and arr.shape[-1] not in (1, 3):   # (N, C, H, W)
            arr = arr.transpose(0, 2, 3, 1)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim == 4 and arr.shape[-1] != 3:
            raise UserError(f"images of shape {arr.shape[1:]}: give gray (H, W), RGB (H, W, 3) or (3, H, W)")
        return list(arr)
    raise UserError(f"images must be an array (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {arr.shape}")


def _image_files(data: Any) -> dict[str, bytes]:
    x, y = _split_pair(data)
    images = _as_hwc_uint8(x)
    labels = _labels(y, len(images), "images")
    files = {f"{label}/{i:06d}.png": _png(img) for i, (img, label) in enumerate(zip(images, labels))}
    return {**files, "__name__": b"images"}


def _gan_files(data: Any) -> dict[str, bytes]:
    x, y = _split_pair(data)
    images = _as_hwc_uint8(x)
    labels = _labels(y, len(images), "images") if y is not None else ["images"] * len(images)
    return {**{f"{label}/{i:06d}.png": _png(img) for i, (img, label) in enumerate(zip(images, labels))},
            "__name__": b"images"}


def _csv(rows: list[list[str]]) -> bytes:
    import csv
    import io
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8")


def _text_files(data: Any) -> dict[str, bytes]:
    x, y = _split_pair(data)
    if isinstance(x, str) or not all(isinstance(t, str) for t in x):
        raise UserError("in-memory text data is a list of strings with labels: data=(texts, labels)")
    labels = _labels(y, len(x), "texts")
    return {"": _csv([["text", "label"], *([t, l] for t, l in zip(x, labels))]), "__name__": b"texts.csv"}


def _textgen_files(data: Any) -> dict[str, bytes]:
    if isinstance(data, (list, tuple)) and all(isinstance(t, str) for t in data):
        data = "\n".join(data)
    if not isinstance(data, str):
        raise UserError("in-memory textgen data is a string (or a list of strings), the corpus")
    return {"": data.encode("utf-8"), "__name__": b"corpus.txt"}


def _forecast_files(data: Any) -> dict[str, bytes]:
    import pandas as pd
    if isinstance(data, pd.Series):
        frame = data.to_frame(name=data.name if data.name is not None else "value")
    elif isinstance(data, pd.DataFrame):
        frame = data
    else:
        raise UserError("in-memory forecast data is a pandas Series or DataFrame with a date or period index")
    if isinstance(frame.index, pd.PeriodIndex):
        frame = frame.copy()
        frame.index = frame.index.to_timestamp()
    if isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.rename_axis("time").reset_index()
    return {"": frame.to_csv(index=False).encode("utf-8"), "__name__": b"series.csv"}


def _speech_files(data: Any) -> dict[str, bytes]:
    import io
    import soundfile
    if isinstance(data, dict):
        x, y, rate = data.get("waveforms", data.get("x")), data.get("labels", data.get("y")), data.get("sample_rate")
    elif isinstance(data, tuple) and len(data) == 3:
        x, y, rate = data
    else:
        raise UserError("in-memory speech data is (waveforms, labels, sample_rate) or a dict with those keys")
    if not isinstance(rate, int) or rate < 1000:
        raise UserError(f"sample_rate must be a whole number of Hz (at least 1000), got {rate!r}")
    waves = [np.asarray(w, dtype=np.float32) for w in x]
    labels = _labels(y, len(waves), "waveforms")
    files = {}
    for i, (wave, label) in enumerate(zip(waves, labels)):
        if wave.ndim != 1 or not np.isfinite(wave).all():
            raise UserError(f"waveform {i} must be a 1-d array of finite samples")
        buf = io.BytesIO()
        soundfile.write(buf, wave, rate, format="WAV", subtype="FLOAT")
        files[f"{label}/{i:06d}.wav"] = buf.getvalue()
    return {**files, "__name__": b"speech"}


_WRITERS = {"image": _image_files, "text": _text_files, "textgen": _textgen_files, "forecast": _forecast_files,
            "speech": _speech_files, "gan": _gan_files}


# ------------------------------------------------------------------ runs and comparisons

class Run:
    """A trained run folder, loaded for use: its config, metrics, report and a predictor that is
    built once, on first use."""

    def __init__(self, folder: runs_mod.Run, task: Task):
        self.folder, self.task = folder, task
        self._predictor = None

    path = property(lambda self: self.folder.path)
    config = property(lambda self: self.folder.config)
    metrics = property(lambda self: self.folder.metrics)
    report_path = property(lambda self: self.folder.report_path)
    history = property(lambda self: self.folder.history())

    def __repr__(self) -> str:
        return f"deepskeptic.Run({str(self.path)!r}, task={self.task.name!r}, model={self.config['settings']['model']!r})"

    @property
    def predictor(self):
        if self._predictor is None:
            self._predictor = self.task.predictor(self.folder)
        return self._predictor

    def predict(self, inputs: Any, **options) -> Any:
        """Predictions for decoded inputs (arrays, PIL images, strings, waveforms, a series) or for
        paths (a str/Path or a list of them): what `deepskeptic predict --json` prints."""
        predictor = self.predictor
        if isinstance(inputs, (str, os.PathLike)) and self.task.name not in ("text", "textgen"):
            inputs = [inputs]
        if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, os.PathLike) for i in inputs):
            inputs = [str(i) for i in inputs]
        if (self.task.name not in ("text", "textgen") and isinstance(inputs, list) and inputs
                and all(isinstance(i, str) for i in inputs)):
            decoded, names = predictor.read(inputs)
            return predictor.predict(decoded, names=names, **options)
        return predictor.predict(inputs, **options)

    def evaluate(self, data: Any = None) -> dict[str, Any]:
        """Test metrics on the run's own test data, or on ``data`` (a name, a path or in-memory data)."""
        return self.predictor.evaluate(None if data is None else _materialise(self.task, data))

    def _command(self, name: str):
        if name not in self.task.commands:
            raise UserError(f"a {self.task.name} run has no {name}; it has: "
                            f"{', '.join(sorted({'predict', 'evaluate', *self.task.commands}))}")
        method = getattr(self.predictor, name, None)
        if method is None:
            raise UserError(f"{name} of a {self.task.name} run is only on the command line: "
                            f"deepskeptic {name} {self.path}")
        return method

    def generate(self, **options) -> Any:
        """Samples: text (textgen) or uint8 images (gan)."""
        return self._command("generate")(**options)

    def translate(self, images: Any, direction: str = "a2b") -> Any:
        """CycleGAN translations of uint8 images."""
        return self._command("translate")(images, direction=direction)

    def explain(self, inputs: Any = None, cells: Iterable[int] | None = None, **options) -> Any:
        """What `deepskeptic explain` computes, as values. Text and textgen LSTMs: the last layer's
        unit output ``hidden`` and its ``forget``, ``input`` and ``output`` gates per character of
        ``inputs`` (a string): arrays (T, units), with ``text``, ``cells`` and ``layer``. Forecast
        LSTMs (the task's predictor): every gate and the cell state over the last window of the run's
        series, (lookback, units). ``cells``: the units to show (default: the most active ones)."""
        if "explain" not in self.task.commands:
            return self._command("explain")               # the error naming what the run has
        own = getattr(self.predictor, "explain", None)
        if own is not None:
            return own(inputs, **({"cells": _cells(cells)} if cells is not None else {}), **options)
        if self.task.name not in ("text", "textgen"):
            return self._command("explain")               # only on the command line
        from deepskeptic.tasks.common import gates
        if not isinstance(inputs, str) or not inputs:
            raise UserError("explain of a text LSTM takes the text to explain, a non-empty string")
        if options:
            raise unknown_name("explain option", next(iter(options)), ["cells"])
        reader = self.predictor.reader if self.task.name == "text" else self.predictor.vocab
        return gates.record(self.predictor.model, reader, inputs[:gates.MAX_CHARS], _cells(cells))

    def export(self, format: str = "onnx", out: str | os.PathLike | None = None) -> dict[str, Any]:
        """Export the run's network(s) (see deepskeptic.export); returns the sidecar's contents."""
        from deepskeptic.export import export_run
        return export_run(self.task, self.folder, format=format, out=out)


def _cells(cells: Any) -> list[int] | None:
    if cells is None:
        return None
    cells = list(cells) if not isinstance(cells, (str, int)) else None
    if not cells or not all(isinstance(c, int) and not isinstance(c, bool) for c in cells):
        raise UserError("cells must be a list of unit numbers, e.g. cells=[0, 3]")
    return cells


class Comparison:
    """A comparison folder: ``summary`` (summary.json), ``verdicts`` and ``table()``."""

    def __init__(self, path: str | os.PathLike, summary: dict[str, Any]):
        self.path, self.summary = Path(path), summary

    verdicts = property(lambda self: list(self.summary["verdicts"]))
    report_path = property(lambda self: self.path / "report.html")

    def __repr__(self) -> str:
        return f"deepskeptic.Comparison({str(self.path)!r}, models={list(self.summary['models'])})"

    def table(self):
        """One row per model: model, role, mean, std (of the primary metric over seeds), params,
        FLOPs per example, training seconds, epochs; then ``<metric>_mean`` and ``<metric>_std``
        of every other metric the task summarises (forecast: test_smape, test_owa), as summary.json
        holds them (NaN where a metric is undefined in every run, or a summary predates it)."""
        import pandas as pd
        metric = self.summary["metric"]
        others = self._summary_metrics()
        rows = [{"model": m, "role": s["role"], "metric": metric, "mean": s[f"{metric}_mean"],
                 "std": s[f"{metric}_std"], "params": s["params"], "flops": s["flops_per_example"],
                 "seconds": s["train_seconds_mean"], "epochs": s["epochs_mean"],
                 **{f"{key}_{stat}": s.get(f"{key}_{stat}") for key in others for stat in ("mean", "std")}}
                for m, s in self.summary["models"].items()]
        return pd.DataFrame(rows).astype({f"{key}_{stat}": float for key in others for stat in ("mean", "std")})

    def _summary_metrics(self) -> tuple[str, ...]:
        """The metrics compare summarised beside the primary one: the task's ``summary_metrics``."""
        task = TASKS.get(self.summary.get("task"))
        return tuple(key for key in getattr(task, "summary_metrics", ()) if key != self.summary["metric"])

    def run(self, model: str, seed: int = 0) -> Run:
        return load(self.path / f"{model}-seed{seed}")


def train(task: str | Task, data: Any = None, model: str | None = None, **settings) -> Run:
    """Train one model and return its completed run (``deepskeptic train TASK ...``)."""
    task = _task(task)
    flags, config = _flags(task, {**settings, "data": None, "model": model})
    if data is not None:
        flags["data"] = _materialise(task, data)
    resolved = resolve_settings(task, flags, config)
    return Run(train_run(task, resolved), task)


def resume(path: str | os.PathLike) -> Run:
    """Continue an interrupted run from its last checkpoint (``deepskeptic train --resume RUN``)."""
    folder = runs_mod.Run.open(path, complete=False)
    task = get_task(folder.config["task"])
    return Run(resume_run(task, folder), task)


def compare(task: str | Task, data: Any = None, models: Iterable[str] | str | None = None, seeds: int = 3,
            out: str | os.PathLike | None = None, jobs: int = 1, ray: str | None = None,
            **settings) -> Comparison:
    """Every model on the same data, budget and seeds (``deepskeptic compare TASK ...``).

    ``jobs=N`` trains the (model, seed) runs in N local processes (``--jobs N``), ``ray="auto"`` or
    an address as tasks on a Ray cluster (``--ray ADDRESS``); each run's numbers are those of the
    sequential comparison when it trains on the same number of threads (``threads=``)."""
    task = _task(task)
    if isinstance(models, str):
        models = [m.strip() for m in models.split(",") if m.strip()]
    if not isinstance(seeds, int) or isinstance(seeds, bool):
        raise UserError(f"seeds must be a whole number, got {seeds!r}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"jobs must be a whole number of processes, at least 1, got {jobs!r}")
    if ray is not None and (not isinstance(ray, str) or not ray.strip()):
        raise UserError(f"ray must be the address of a Ray cluster (a string such as 'auto' or "
                        f"'10.0.0.5:6379'), got {ray!r}")
    if ray is not None and jobs > 1:
        raise UserError("jobs and ray cannot be combined: Ray schedules the runs over its cluster itself")
    flags, config = _flags(task, {**settings, "data": None}, drop=("model", "seed"),
                           also=("models", "seeds", "jobs", "ray"))
    if data is not None:
        flags["data"] = _materialise(task, data)
    data_name = flags.get("data")
    models = list(models) if models is not None else list(task.models_for(data_name))
    out = Path(out) if out is not None else Path(
        f"runs/compare-{task.name}-{Path(str(data_name)).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    summary = run_comparison(task, flags, config, models, seeds, out, jobs=jobs, ray=ray)
    return Comparison(out, summary)


def load(path: str | os.PathLike) -> Run:
    """A complete run folder, for predict / evaluate / export (a clear error if it is not one)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"load takes the path of a run folder, got {type(path).__name__}")
    folder = runs_mod.Run.open(path)
    task_name = folder.config.get("task")
    if task_name not in TASKS:
        raise UserError(f"{folder.path} is a run of an unknown task {task_name!r}: it was made by another "
                        f"version of deepskeptic")
    return Run(folder, TASKS[task_name])


def _json_default(value: Any) -> Any:  # pragma: no cover - used by callers that print results
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value).__name__)


def dumps(results: Any) -> str:
    """Results as the JSON `predict --json` prints."""
    return json.dumps(results, indent=2, default=_json_default)
