"""The task protocol: what every task provides. The CLI, the training driver, ``compare`` and (soon)
the Python API and the server only talk to this.

A task is one package ``tasks/<name>/`` whose ``__init__.py`` holds only its ``Task`` subclass; the
rest of the package imports sideways or downward, never the package itself.

What a task provides, in the order a run needs it:

- ``declared_settings``: its settings (``deepskeptic.settings.Setting``: name, default, kind, range,
  flag help), from which ``task_defaults`` and its flags (``add_arguments``) are derived, and
  against which every flag, config-file value and API keyword is checked;
- ``prepare(settings)``: the data, checked (``UserError`` on anything wrong before training);
- ``shape_of(prepared)``: what the model needs to know of the data (channels, classes, vocabulary
  size, lookback, ...), a plain dict; ``create_model(model, model_config, shape)`` builds the
  registered model from its ``[model]`` settings and that shape, the shape winning where both name
  a value (``model_config``; ``misfit_message`` words a model that does not fit the data);
- ``build(settings, prepared, device)``: the engine job and what config.json records;
- ``finish(...)``: the test metrics; ``write_report(...)``: report.html;
- ``load_models(run, device)``: a trained run's modules (the default: ``create_model`` from the
  saved model_config + the saved weights); ``predictor(run)``: one object that takes decoded
  inputs (arrays, strings, a series) and returns plain results. ``predict``, ``evaluate``, the API,
  export and the server all go through it;
- ``commands``: which of ``generate``, ``translate`` and ``explain`` it has, each taking its typed
  options below (not an ``argparse.Namespace``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from deepskeptic import settings as settings_mod
from deepskeptic.engine import Job
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.settings import SEED_RANGE, Setting

EXTRA_COMMANDS = ("generate", "translate", "explain")


# ------------------------------------------------------------------ typed options of the use commands

@dataclass(frozen=True)
class PredictOptions:
    inputs: tuple[str, ...] = ()   # files or folders (or texts, for text tasks)
    top_k: int = 3                 # classes shown per input
    data: str | None = None        # a series or table to predict from (forecast)
    out: str | None = None         # file or folder the predictions are also written to
    as_json: bool = False          # print JSON instead of lines


# `deepskeptic generate`'s options, declared as settings are: its flags and the predictors check them.
MAX_GENERATE_LENGTH = 100_000   # characters per sample: about a minute of the 512-unit LSTM on 2 CPU
                                # cores; 10**12 would never end
MAX_GENERATE_SAMPLES = 10_000   # samples per call: 10k 128 px RGB images are 500 MB
GENERATE_SETTINGS = settings_mod.declared([
    Setting("prime", "", "str", "text to start from"),
    Setting("length", 500, "int", "characters to generate", low=1, high=MAX_GENERATE_LENGTH),
    Setting("temperature", 0.8, "float", "sampling temperature (0: the most likely character)", low=0),
    Setting("top_k", 0, "int", "sample among the k most likely (0: all)", low=0),
    Setting("n", 1, "int", "number of samples", low=1, high=MAX_GENERATE_SAMPLES),
    Setting("seed", 0, "int", "seed of the samples' noise (0)", low=SEED_RANGE[0], high=SEED_RANGE[1]),
])


@dataclass(frozen=True)
class GenerateOptions:
    prime: str = ""                # text to start from (textgen)
    length: int = 500              # characters to generate (textgen)
    temperature: float = 0.8
    top_k: int = 0                 # sample among the k most likely (0: all)
    n: int = 1                     # number of samples
    seed: int = 0
    out: str | None = None         # folder for generated files
    as_json: bool = False


@dataclass(frozen=True)
class TranslateOptions:
    inputs: tuple[str, ...] = ()   # image files or folders
    direction: str = "a2b"
    out: str | None = None


@dataclass(frozen=True)
class ExplainOptions:
    inputs: tuple[str, ...] = ()   # images (image task)
    out: str | None = None         # folder for the pictures (default RUN/explain)
    text: str | None = None        # the text to explain (text tasks)
    cells: str | None = None       # LSTM units to show, comma-separated (default: the most active)


# ------------------------------------------------------------------ the predictor

class Predictor:
    """A trained run, loaded once, applied to decoded inputs.

    ``predict(inputs, **options)`` returns plain Python values (lists, dicts, floats, strings):
    exactly what ``deepskeptic predict --json`` prints for the same inputs. ``read(paths)`` decodes
    files into such inputs (and names them); ``format(results)`` is the human-readable form the
    CLI prints; ``evaluate(data)`` recomputes test metrics on the run's own data or on ``data``.
    """

    def __init__(self, task: "Task", run: Run, device: torch.device | None = None):
        self.task, self.run = task, run
        self.device = device or torch.device("cpu")

    def read(self, paths: list[str]) -> tuple[Any, list[str]]:
        """(decoded inputs, one name per input) from files or folders."""
        raise UserError(f"task '{self.task.name}' does not read input files")

    def predict(self, inputs: Any, *, names: list[str] | None = None, **options) -> Any:
        raise UserError(f"task '{self.task.name}' has no predict command")

    def format(self, results: Any) -> str:
        return json.dumps(results, indent=2)

    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        raise UserError(f"task '{self.task.name}' has no evaluate command")

    def predict_options(self, options: PredictOptions) -> dict[str, Any]:
        """The keyword options of ``predict`` that the command line's flags give."""
        if options.top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {options.top_k}")
        return {"top_k": options.top_k}

    def predict_command(self, options: PredictOptions) -> Any:
        """What `deepskeptic predict` computes: read the inputs it names, predict them."""
        if type(self).predict is Predictor.predict:
            extra = sorted(self.task.commands)
            raise UserError(f"task '{self.task.name}' has no predict command"
                            + (f"; its runs have {', '.join(extra)}" if extra else ""))
        if not options.inputs:
            raise UserError("name at least one input file or folder to predict")
        kwargs = self.predict_options(options)
        inputs, names = self.read(list(options.inputs))
        return self.predict(inputs, names=names, **kwargs)


# ------------------------------------------------------------------ the task

class Task:
    name: str = ""
    description: str = ""
    primary_metric: str = ""         # the number a comparison ranks by, e.g. test_accuracy
    higher_is_better: bool = True
    default_epochs: int = 10
    default_models: tuple[str, ...] = ()  # what `compare` runs when --models is not given
    # This task's settings beyond settings.COMMON_SETTINGS (one of those again: another default),
    # each with its kind, range and flag; task_defaults is derived from them.
    declared_settings: ClassVar[tuple[Setting, ...]] = ()
    task_defaults: ClassVar[dict[str, Any]] = {}
    renamed_settings: ClassVar[dict[str, str]] = {}  # old name -> new name: old config files, flags and
                                                     # runs keep working (training.rename_settings)
    commands: ClassVar[frozenset[str]] = frozenset()  # which of EXTRA_COMMANDS this task has
    predictor_class: ClassVar[type[Predictor]] = Predictor
    summary_metrics: ClassVar[tuple[str, ...]] = ()  # metrics a comparison summarises beside the primary one
    distributed: ClassVar[bool] = True     # trains under torchrun (DDP); else distributed_instead says why not
    distributed_instead: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "declared_settings" in cls.__dict__:
            cls.task_defaults = settings_mod.defaults_of(settings_mod.declared(cls.declared_settings).values())

    def declarations(self) -> dict[str, Setting]:
        """Every setting of this task, shared and its own, by name: what values are checked against."""
        return {**settings_mod.COMMON_SETTINGS, **settings_mod.declared(self.declared_settings)}

    # --- training a run ---
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Flags of this task's declared settings (dest names equal to setting names; a setting
        without help has none; shared settings have theirs in the CLI), and the hidden old
        spelling of each renamed one (``--fd-samples``, dest fd_samples, renamed on resolving)."""
        own = {s.name: s for s in self.declared_settings}
        for s in own.values():
            if s.help is not None and s.name not in settings_mod.COMMON_SETTINGS:
                s.add_flag(parser)
        for old, new in self.renamed_settings.items():
            if new in own and own[new].help is not None:
                own[new].add_flag(parser, flag="--" + old.replace("_", "-"), dest=old, hidden=True)

    def prepare(self, settings: dict[str, Any]) -> Any:
        """Load and check the data; raise UserError on anything wrong before training starts."""
        raise NotImplementedError

    def shape_of(self, prepared: Any) -> dict[str, Any]:
        """What the model needs to know of the prepared data (a plain dict for ``create_model``)."""
        raise NotImplementedError

    def model_config(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> Any:
        """The config dataclass of model ``model``: its [model] settings, overridden by the shape's
        keys that the config has (the data fixes its sizes: a [model] value of the same name gives
        way). What config.json records; tasks that derive more (other key names, a variant, resolved
        widths) override it."""
        fields = {f.name for f in dataclasses.fields(registry.spec(self.name, model).config_cls)}
        return registry.make_config(self.name, model, **{**model_config,
                                                         **{k: v for k, v in shape.items() if k in fields}})

    def create_model(self, model: str, model_config: dict[str, Any], shape: dict[str, Any]) -> nn.Module:
        """The registered model ``model`` built from ``model_config(...)``; a model that cannot be
        built for the data (its build raises ValueError) is a UserError (``misfit_message``)."""
        config = self.model_config(model, model_config, shape)
        try:
            return registry.spec(self.name, model).build(config)
        except ValueError as exc:
            raise UserError(self.misfit_message(model, shape, exc)) from None

    def misfit_message(self, model: str, shape: dict[str, Any], error: ValueError) -> str:
        """The one line shown when ``model`` cannot be built for data of ``shape``; tasks name the
        flag that changes the data's side of it."""
        return f"model '{model}': {error}"

    def build(self, settings: dict[str, Any], prepared: Any, device: torch.device) -> tuple[Job, dict[str, Any]]:
        """The engine job and what config.json records about the model and data."""
        raise NotImplementedError

    def finish(self, run: Run, job: Job, prepared: Any, settings: dict[str, Any],
               device: torch.device) -> dict[str, Any]:
        """Test metrics for metrics.json (and the report) after training."""
        raise NotImplementedError

    def write_report(self, run: Run, prepared: Any | None = None, metrics: dict[str, Any] | None = None) -> None:
        """Render report.html from the run folder (and the data, reloaded when not given)."""
        raise NotImplementedError

    # --- the registry at the task's example input ---
    def input_shape(self, data: str | None) -> dict[str, Any]:
        """The shape parameter counts in `deepskeptic models` use (``description`` says it); with
        no data, the task's example shape, at which every registered model must build."""
        raise NotImplementedError

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        return self.create_model(name, {}, shape)

    def model_names(self) -> list[str]:
        return registry.names(self.name)

    # --- using a finished run ---
    def load_models(self, run: Run, device: torch.device) -> dict[str, nn.Module]:
        """The run's trained modules, in eval mode on ``device``: by default the one ``model`` built
        by the registry from config.json's model_config, with the saved weights."""
        settings = run.config["settings"]
        model = registry.create(self.name, settings["model"], **run.config["model_config"])
        run.load_weights({"model": model})
        return {"model": model.to(device).eval()}

    def export_graphs(self, run: Run) -> list[Any]:
        """The run's networks as ``deepskeptic.export.Graph`` objects: each module with what belongs
        to it inside (normalisation, scaling, ...), real example inputs from the run's own test
        data, input/output names and dynamic axes, and the sidecar's task-specific contents."""
        raise UserError(f"runs of task '{self.name}' cannot be exported yet")

    def predictor(self, run: Run, device: torch.device | None = None) -> Predictor:
        return self.predictor_class(self, run, device)

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        return self.predictor(run).evaluate(data)

    def predict(self, run: Run, options: PredictOptions) -> int:
        predictor = self.predictor(run)
        results = predictor.predict_command(options)
        print(json.dumps(results, indent=2) if options.as_json else predictor.format(results))
        return 0

    def explain(self, run: Run, options: ExplainOptions) -> int:
        raise UserError(f"task '{self.name}' has no explain command")

    def generate(self, run: Run, options: GenerateOptions) -> int:
        raise UserError(f"task '{self.name}' has no generate command")

    def translate(self, run: Run, options: TranslateOptions) -> int:
        raise UserError(f"task '{self.name}' has no translate command")

    # --- data sets ---
    def datasets(self) -> list[dict[str, Any]]:
        """Built-in data sets of this task for `deepskeptic datasets`: dicts with name, task,
        available, location, description, how_to_get."""
        return []

    def fetch(self, name: str) -> str:
        """Make built-in data set ``name`` available on this machine; returns where it now is."""
        raise UserError(f"data set '{name}' of task '{self.name}' cannot be fetched")

    # --- comparisons ---
    def models_for(self, data: str | None) -> tuple[str, ...]:
        """The models `compare` runs on ``data`` when --models is not given."""
        return self.default_models

    def adjust_settings(self, settings: dict[str, Any]) -> None:
        """Last changes to resolved settings (after the one-step rule of training.resolve_settings)."""

    def verdict_pairs(self, per_model: dict[str, Any]) -> list[tuple[str, dict[str, str]]] | None:
        """[(model, {reference model: label})] for the verdicts; None: each deep model against
        every simpler one."""
        return None

    def comparison_sections(self, report: Any, summary: dict[str, Any]) -> None:
        """Task-specific sections of a comparison's report (after the generic ones)."""
