"""Recipes sized to the data and the budget, and a learning-rate check: one rule for every task,
decided before training, recorded in config.json with its reason.

Under ``--time-budget`` a model's default recipe can be too slow to learn anything: alexnet's
224-px layout on 64 px images (21.6 M parameters) finished 1 epoch in 90 s and scored 17 %
(issue 17). And a default learning rate tuned on the built-in data can diverge on a user's.

Every task's ``build`` calls ``decide(task, settings, make_job, device)`` before it creates its
model; ``make_job(settings)`` builds the task's own engine job (a fresh model, the task's loss,
batches and input pipeline) from a variant of the run's settings. Two steps, both measured:

1. The recipe (only under a time budget; with ``--epochs`` the user chose the length and the
   model keeps its recipe). A model offers a ladder (``LADDERS``), its default first, then
   cheaper ones. A short probe times a few real training steps of each, on this machine, with the
   run's threads; the first recipe that fits ``TARGET_EPOCHS`` passes over the training data in
   the budget is used. None fits: the fastest, and the reason says how few epochs it gets.
2. The learning rate (every network, with or without a budget): ``LR_STEPS`` steps at the default
   peak rate from a fixed initialisation. When the loss diverges (non-finite, or past
   ``DIVERGE_FACTOR`` times its start) the rate is lowered tenfold, at most twice, to the first
   that brings the loss down. This is the cheap end of a range test: one trial when the default is
   safe, the case nearly every run is in.

- A user's explicit setting always wins: a ladder step that would change a key the user set is
  skipped, and a learning rate the user gave is not checked (``user_set``).
- The changes are written into the run's settings (``model_config`` and the task's settings),
  with ``settings["decided_by_recipe"]`` naming them, so config.json holds the choice and a
  resumed run (whose settings are config.json's) keeps it and probes nothing.
- Seeds of one comparison get one decision: it is kept per process for the same task, model,
  data and settings (``_DECISIONS``), so a seed spread is never a spread of recipes.
- Everything probed runs under ``torch.random.fork_rng``: the run's random numbers do not move,
  and a run whose default is kept trains exactly as it did before this rule existed.

Ladders only ever make a model cheaper than its default, so a run that had time enough is
unchanged (the built-in benchmarks keep their numbers).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from deepskeptic import distributed
from deepskeptic.engine import Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry

TARGET_EPOCHS = 5          # passes a recipe must fit in the budget: 3 is where fairness.MIN_EPOCHS
                           # calls a run starved; 2 more cover what the probe cannot see (the first
                           # epoch's warm-up, validation between epochs, load that comes and goes)
PROBE_WARMUP_STEPS = 1     # untimed: the first step allocates and picks kernels
PROBE_STEPS = 3            # timed steps per recipe (fewer when they pass PROBE_SECONDS)
PROBE_SECONDS = 2.0        # wall seconds one recipe's timed steps may take; a slower recipe is
                           # measured on the steps done by then (its speed is clear enough)
PROBE_NOISE = 1.15         # speeds measured within 15 % of each other are the same speed: a few
                           # timed steps of a busy machine differ by that much run to run
PROBE_SEED = 0             # the probes' initialisation and batch order: the same for every seed
LR_STEPS = 8               # steps per learning-rate trial: Adam at a diverging rate blows the loss
                           # up within a few steps; 8 average out one unlucky batch
LR_MIN_STEPS = 3           # ... but at least these, however slow a step is
LR_SECONDS = 3.0           # wall seconds a trial may take before it stops at LR_MIN_STEPS or more
LR_FACTORS = (1.0, 0.1, 0.01)  # the default, then tenfold lower, twice at most
DIVERGE_FACTOR = 2.0       # diverged: the mean loss of a trial's second half above twice its first
DIVERGE_MARGIN = 1.0       # loss and above it plus 1 (nats: a loss near 0 may double by noise)
DECIDED = "decided_by_recipe"  # settings key: what the rule set; present = decided, never again


@dataclass(frozen=True)
class Rung:
    """One recipe on a model's ladder: the [model] settings and the task settings it changes
    from the model's defaults (the first rung of a ladder, the default, changes nothing)."""
    name: str
    model_config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def keys(self) -> set[str]:
        return set(self.model_config) | set(self.settings)


_TEXTGEN_LADDER = [
    Rung("512 units (default)"),
    Rung("256 units", {"hidden": 256}),                # ~1/3 of the 512-unit step: the LSTM's
    Rung("128 units, 64-character windows",            # cost grows with hidden * (embed + hidden);
         {"hidden": 128}, {"seq_len": 64}),            # shorter windows: twice the updates per
]                                                      # character seen, for the budgets that see few
# Largest (the model's default) first; values as the model's config and the task's settings take them.
LADDERS: dict[tuple[str, str], list[Rung]] = {
    ("image", "cnn"): [
        Rung("widths 16-32-64 (default)"),
        Rung("widths 8-16-32", {"widths": [8, 16, 32]}),
        Rung("widths 4-8-16, fc 64", {"widths": [4, 8, 16], "hidden": 64}),
    ],
    ("image", "alexnet"): [
        Rung("the layout the image size picks (default: 224-px design from 64 px up)"),
        Rung("small layout (3x3 first conv, widths / 4, fc 512)", {"variant": "small"}),
    ],
    ("text", "lstm"): [
        Rung("512 characters, 256 units (default)"),
        Rung("256 characters, 256 units", {}, {"max_len": 256}),   # the packed LSTM's cost per document
        Rung("256 characters, 128 units", {"hidden": 128}, {"max_len": 256}),  # is its characters read
        Rung("128 characters, 64 units", {"hidden": 64}, {"max_len": 128}),
    ],
    ("textgen", "lstm"): _TEXTGEN_LADDER,
    ("textgen", "rnn"): _TEXTGEN_LADDER,     # the baseline: the same rule, never a head start
}

_DECISIONS: dict[str, dict[str, Any]] = {}   # memo key -> record, for the seeds of a comparison


def ladder(task: str, model: str) -> list[Rung]:
    return list(LADDERS.get((task, model), []))


def forget() -> None:
    """Drop the decisions kept for this process (a test's fresh start)."""
    _DECISIONS.clear()


def user_set(task: Any, settings: dict[str, Any], key: str) -> bool:
    """Whether the user set ``key``: a [model] setting they gave, or a task or shared setting whose
    value differs from its default (the model's training default where it has one). A value equal
    to its default reads as not set: resolved settings do not say where a value came from."""
    if key in (settings.get("model_config") or {}):
        return True
    declaration = task.declarations().get(key)
    if declaration is None:
        return False
    default = registry.spec(task.name, settings["model"]).train_defaults.get(key, declaration.default)
    return settings.get(key) != default


# ------------------------------------------------------------------ the rule

def choose(rungs: list[Rung], *, time_budget: float | None, measure: Callable[[Rung], tuple[float, int]],
           explicit: Iterable[str] = ()) -> dict[str, Any]:
    """The recipe rule. ``measure(rung)``: (seconds per training example, examples per epoch), the
    probe; ``explicit``: the keys the user set. Returns {"chosen", "model_config", "settings",
    "reason", "probes", "target_epochs"}; ``model_config`` and ``settings`` are the changes."""
    record: dict[str, Any] = {"chosen": None, "model_config": {}, "settings": {}, "reason": "",
                              "probes": [], "target_epochs": TARGET_EPOCHS}
    if not rungs:
        record["reason"] = "this model has one recipe"
        return record
    if time_budget is None:
        record["reason"] = "no time budget: the model's own recipe (--epochs chose the length)"
        return record
    explicit = set(explicit)
    open_rungs = [r for r in rungs if not explicit & r.keys()]
    if open_rungs in ([], rungs[:1]):
        kept = sorted(explicit & set().union(*(r.keys() for r in rungs)))
        record["reason"] = f"the model's own recipe: {', '.join(kept)} set by the user"
        return record
    best: tuple[float, Rung, int] | None = None
    measured: list[tuple[float, Rung, int]] = []
    for rung in open_rungs:
        seconds, examples = measure(rung)
        epochs = time_budget / max(1e-12, seconds * max(1, examples))   # 0 for a recipe that cannot run
        record["probes"].append({"recipe": rung.name, "seconds_per_example": seconds if seconds < math.inf else None,
                                 "examples_per_epoch": examples, "epochs_in_budget": round(epochs, 2)})
        measured.append((epochs, rung, examples))
        if best is None or epochs > best[0]:
            best = (epochs, rung, examples)
        if epochs >= TARGET_EPOCHS:
            record.update(chosen=rung.name, model_config=dict(rung.model_config), settings=dict(rung.settings),
                          reason=f"{rung.name}: {epochs:.3g} epochs of {examples:,} examples fit the "
                                 f"{time_budget:g} s budget (at least {TARGET_EPOCHS} wanted)"
                                 + ("" if rung is open_rungs[0] else "; larger recipes fit fewer"))
            return record
    # The fastest; a later (cheaper by design) rung measured within the probe's noise of it wins:
    # on tiny data every rung runs at the speed of Python's overhead, and the smaller model is
    # the one that scales to the data a user brings next.
    epochs, rung, examples = [m for m in measured if m[0] * PROBE_NOISE >= best[0]][-1]
    record.update(chosen=rung.name, model_config=dict(rung.model_config), settings=dict(rung.settings),
                  reason=f"{rung.name}, the fastest: only {epochs:.2g} epochs of {examples:,} examples fit the "
                         f"{time_budget:g} s budget (at least {TARGET_EPOCHS} wanted); a larger --time-budget helps")
    return record


def diverged(losses: list[float]) -> bool:
    """A trial's losses (the first at the initial weights) went non-finite or well above where
    they started (DIVERGE_FACTOR, DIVERGE_MARGIN)."""
    if not losses or not all(math.isfinite(v) for v in losses):
        return True
    start, end = losses[0], _end(losses)
    return end > max(DIVERGE_FACTOR * start, start + DIVERGE_MARGIN)


def _end(losses: list[float]) -> float:
    half = losses[len(losses) // 2:]
    return sum(half) / len(half)


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None    # JSON has no NaN


# ------------------------------------------------------------------ measuring on the task's job

def run_steps(job: Job, settings: dict[str, Any], device: torch.device, *, steps: int, max_seconds: float,
              warmup: int = 0, min_steps: int = 1) -> tuple[list[float], float, int, int]:
    """Up to ``warmup + steps`` training steps of ``job`` on the first batches of its first epoch
    (cycled when it has fewer), stopping once ``min_steps`` timed steps took ``max_seconds``.
    Returns (the loss of every step, seconds of the timed steps, examples they counted, batches
    per epoch)."""
    ctx = StepContext(device, job.optimizers, settings.get("amp", True), settings.get("cpu_bf16", False))
    batches = job.epoch_batches(0, torch.Generator().manual_seed(PROBE_SEED))
    for module in job.modules.values():
        module.train()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    losses, seconds, count, timed = [], 0.0, 0, 0
    for i in range(warmup + steps):
        start = time.perf_counter()
        n, stats = job.train_step(batches[i % len(batches)], ctx)
        loss = stats.get("loss")
        loss = float(loss) if loss is not None else math.nan   # float(): waits for the device too
        sync()
        losses.append(loss)
        if i >= warmup:
            seconds, count, timed = seconds + time.perf_counter() - start, count + n, timed + 1
            if timed >= min_steps and seconds > max_seconds:
                break
        if not math.isfinite(loss):
            break
    return losses, seconds, count, len(batches)


def _variant(settings: dict[str, Any], rung: Rung, **more: Any) -> dict[str, Any]:
    """The run's settings with ``rung``'s changes, without torch.compile (a probe is a few steps)."""
    return {**settings, **rung.settings, **more, "compile": False,
            "model_config": {**(settings.get("model_config") or {}), **rung.model_config}}


def _recipe(task: Any, settings: dict[str, Any], make_job: Callable[[dict], Job], device: torch.device,
            ranks: int = 1) -> dict:
    rungs = ladder(task.name, settings["model"])
    explicit = {k for r in rungs for k in r.keys() if user_set(task, settings, k)}

    def measure(rung: Rung) -> tuple[float, int]:
        variant = _variant(settings, rung)
        try:
            job = make_job(variant)
        except UserError:   # a layout the data is too small for: never chosen
            return math.inf, 0
        losses, seconds, count, batches = run_steps(job, variant, device, steps=PROBE_STEPS,
                                                    max_seconds=PROBE_SECONDS, warmup=PROBE_WARMUP_STEPS)
        timed = max(1, len(losses) - PROBE_WARMUP_STEPS)
        if count == 0:
            return math.inf, 0
        # under torchrun the ranks share every batch: each example costs 1/ranks of a rank's time
        return seconds / count / ranks, int(round(count / timed * batches))

    return choose(rungs, time_budget=settings.get("time_budget"), measure=measure, explicit=explicit)


def check_lr(task: Any, settings: dict[str, Any], make_job: Callable[[dict], Job], device: torch.device) -> dict:
    """The learning-rate check (see the module docstring). Returns {"default_lr", "lr", "changed",
    "reason", "trials"}; ``settings`` is left alone."""
    default = settings.get("lr")
    record: dict[str, Any] = {"default_lr": default, "lr": default, "changed": False, "reason": "", "trials": []}
    if default is None:
        record["reason"] = "this model has no learning rate"
        return record
    if user_set(task, settings, "lr"):
        record["reason"] = f"--lr {default:g} as the user set it (not checked)"
        return record
    for factor in LR_FACTORS:
        lr = default * factor
        torch.manual_seed(PROBE_SEED)     # every trial from the same initial weights
        job = make_job({**settings, "lr": lr, "compile": False})
        if not any(p.requires_grad for m in job.modules.values() for p in m.parameters()):
            record["reason"] = "this model has no trained parameters"
            return record
        try:
            losses = run_steps(job, settings, device, steps=LR_STEPS, max_seconds=LR_SECONDS,
                               min_steps=LR_MIN_STEPS)[0]
        except (RuntimeError, ValueError, FloatingPointError):   # e.g. a NaN reaching a CTC loss
            losses = [math.nan]
        bad = diverged(losses)
        record["trials"].append({"lr": lr, "steps": len(losses), "start_loss": _finite(losses[0]),
                                 "end_loss": _finite(_end(losses)), "diverged": bad})
        first = record["trials"][0]
        went = f"the loss went {first['start_loss']} -> {first['end_loss']} in {first['steps']} steps"
        if factor == 1.0 and not bad:
            record["reason"] = f"the default lr {default:g} is safe on this data ({went})"
            return record
        if not bad and _end(losses) < losses[0]:
            record.update(lr=lr, changed=True,
                          reason=f"the default lr {default:g} diverged on this data ({went}); {lr:g} brings "
                                 f"the loss down ({_finite(losses[0])} -> {_finite(_end(losses))})")
            return record
    lower = ", ".join(f"{t['lr']:g}" for t in record["trials"][1:])
    record["reason"] = f"the default lr {default:g} diverged on this data and so did {lower}: kept; pass a smaller --lr"
    return record


# ------------------------------------------------------------------ the hook the tasks call

def _decision(task: Any, settings: dict[str, Any], make_job: Callable[[dict], Job], device: torch.device,
              data_key: Any, ranks: int) -> dict[str, Any]:
    """The record ``decide`` applies: measured here, or kept from an earlier run of this process."""
    skip = {"seed", "out", "progress", "threads", DECIDED}
    key = json.dumps([task.name, data_key, str(device.type), ranks,
                      {k: v for k, v in settings.items() if k not in skip}], sort_keys=True, default=str)
    if key in _DECISIONS:
        record = copy.deepcopy(_DECISIONS[key])
        record["reason"] += " (decided for an earlier run of this process with the same data and settings)"
        return record
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        record = _recipe(task, settings, make_job, device, ranks)
        chosen = _variant(settings, Rung("chosen", record["model_config"], record["settings"]))
        record["lr_check"] = check_lr(task, chosen, make_job, device)
    record["probe_seconds"] = round(time.perf_counter() - started, 2)
    _DECISIONS[key] = copy.deepcopy(record)
    return record


def decide(task: Any, settings: dict[str, Any], make_job: Callable[[dict], Job], device: torch.device,
           data_key: Any = None) -> dict[str, Any] | None:
    """Choose the recipe and check the learning rate for this run, before its model is created;
    write the choice into ``settings`` and return the record for config.json's "recipe" (None for
    a model fitted in one step). ``make_job(settings)``: the task's job for a variant of the run's
    settings; ``data_key``: what identifies the data beyond its name (sizes), for the memo."""
    if registry.spec(task.name, settings["model"]).one_step:
        return None
    if DECIDED in settings:   # a resumed run: config.json's settings already hold the choice
        return {"chosen": None, "resumed": True, "decided": list(settings[DECIDED]),
                "reason": "resumed: the recipe recorded when the run started (nothing probed again)"}
    world = distributed.current()
    if not world.active:
        record = _decision(task, settings, make_job, device, data_key, world.size)
    else:   # under torchrun rank 0 probes (no collectives in a probe) and every rank takes its choice
        answer = None
        if world.is_main:
            try:
                answer = ("record", _decision(task, settings, make_job, device, data_key, world.size))
            except Exception as exc:   # noqa: BLE001 - the other ranks must not wait for a crashed rank 0
                distributed.broadcast_object(("error", str(exc)))
                raise
        kind, record = distributed.broadcast_object(answer)
        if kind == "error":
            raise UserError(f"rank 0 could not choose the recipe: {record}")
    decided = [f"model_config.{k}" for k in record["model_config"]] + list(record["settings"])
    if record["model_config"]:
        settings["model_config"] = {**(settings.get("model_config") or {}), **record["model_config"]}
    settings.update(record["settings"])
    if record["lr_check"]["changed"]:
        settings["lr"] = record["lr_check"]["lr"]
        decided.append("lr")
    settings[DECIDED] = decided
    record["decided"] = decided
    return record


def sentence(config: dict[str, Any]) -> str | None:
    """The report's sentence on a run's recipe and learning rate (None when config.json has no
    record: a model fitted in one step, or a run from before the rule)."""
    record = config.get("recipe")
    if not isinstance(record, dict) or not record.get("reason"):
        return None
    text = f"Recipe: {record['reason']}."
    lr = record.get("lr_check")
    if isinstance(lr, dict) and lr.get("reason"):
        value = f" {lr['lr']:g}" if isinstance(lr.get("lr"), (int, float)) else ""
        text += f" Learning rate{value}: {lr['reason']}."
    return text
