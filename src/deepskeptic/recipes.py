"""Recipes sized to the data and the budget: one rule, decided before training, recorded with its reason.

Under ``--time-budget`` a model's default recipe can be too slow to learn anything: alexnet's
224-px layout on 64 px images (21.6 M parameters) finished 1 epoch in 90 s and scored 17 %
(issue 17). The rule (``choose``): a model offers a ladder of recipes, its default first and then
cheaper ones; a short measured probe times a few training steps of each on this machine, with the
run's own threads; the first recipe that fits ``TARGET_EPOCHS`` passes over the training data in
the budget is used. None fits: the fastest, and the reason says how few epochs it gets.

- Only under a time budget: with ``--epochs`` the user chose the length, the model keeps its recipe.
- A user's explicit setting always wins: a ladder step that would change a key the user set is
  skipped (a key set in the [model] table or ``model_config``); when none is left the recipe is
  the user's.
- The choice is written into ``settings["model_config"]`` (every key the ladder decides, even
  when the default wins), so config.json holds it and a resumed run keeps it: a key already there
  counts as set, and nothing is probed again.
- The probe runs under ``torch.random.fork_rng``: it does not move the run's random numbers.

Ladders are per (task, model) in ``LADDERS``; they only ever make a model cheaper than its
default, so a run that had time enough is unchanged (the built-in benchmarks keep their numbers).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from deepskeptic.errors import UserError

TARGET_EPOCHS = 5          # passes a recipe must fit in the budget: 3 is where fairness.MIN_EPOCHS
                           # calls a run starved; 2 more cover what the probe cannot see (the first
                           # epoch's warm-up, validation between epochs, load that comes and goes)
PROBE_WARMUP_STEPS = 1     # untimed: the first step allocates and picks kernels
PROBE_STEPS = 3            # timed steps per recipe (fewer when they pass PROBE_SECONDS)
PROBE_SECONDS = 2.0        # wall seconds one recipe's timed steps may take; a slower recipe is
                           # measured on the steps done by then (its speed is clear enough)
PROBE_BATCH = 32           # examples per probe step: time per example is near-flat above this on
                           # CPU, and a small batch keeps the probe of a big model short


@dataclass(frozen=True)
class Rung:
    """One recipe on a model's ladder: the [model] settings it sets."""
    name: str
    model_config: dict[str, Any] = field(default_factory=dict)


# Largest (the model's default) first. Values are as the model's config takes them.
LADDERS: dict[tuple[str, str], list[Rung]] = {
    ("image", "cnn"): [
        Rung("widths 16-32-64 (default)", {"widths": [16, 32, 64]}),
        Rung("widths 8-16-32", {"widths": [8, 16, 32]}),
        Rung("widths 4-8-16", {"widths": [4, 8, 16], "hidden": 64}),
    ],
    ("image", "alexnet"): [
        Rung("original layout (224-px design)", {"variant": "original"}),
        Rung("small layout (3x3 first conv, widths / 4, fc 512)", {"variant": "small"}),
    ],
}


def ladder(task: str, model: str) -> list[Rung]:
    return list(LADDERS.get((task, model), []))


def choose(rungs: list[Rung], *, examples: int, time_budget: float | None,
           seconds_per_example: Callable[[Rung], float], explicit: Iterable[str] = ()) -> dict[str, Any]:
    """The rule. ``examples``: training examples per epoch; ``seconds_per_example(rung)``: the
    measured probe; ``explicit``: the [model] keys the user set. Returns the record config.json
    keeps: {"chosen", "model_config", "reason", "probes", "target_epochs"}."""
    record: dict[str, Any] = {"chosen": None, "model_config": {}, "reason": "", "probes": [],
                              "target_epochs": TARGET_EPOCHS}
    if not rungs:
        record["reason"] = "this model has one recipe"
        return record
    if time_budget is None:
        record["reason"] = "no time budget: the model's own recipe"
        return record
    explicit = set(explicit)
    open_rungs = [r for r in rungs if not explicit & set(r.model_config)]
    if not open_rungs:
        record["reason"] = f"kept as set: {', '.join(sorted(explicit & set(rungs[0].model_config)))}"
        return record
    best: tuple[float, Rung] | None = None
    for rung in open_rungs:
        seconds = seconds_per_example(rung)
        epochs = time_budget / max(1e-12, seconds * max(1, examples))   # 0 for a recipe that cannot run
        record["probes"].append({"recipe": rung.name, "seconds_per_example": seconds if seconds < float("inf") else None,
                                 "epochs_in_budget": round(epochs, 2)})
        if best is None or epochs > best[0]:
            best = (epochs, rung)
        if epochs >= TARGET_EPOCHS:
            record.update(chosen=rung.name, model_config=dict(rung.model_config),
                          reason=f"{rung.name}: {epochs:.3g} epochs of {examples} examples fit the {time_budget:g} s "
                                 f"budget (at least {TARGET_EPOCHS} wanted)" +
                                 ("" if rung is open_rungs[0] else "; larger recipes fit fewer"))
            return record
    epochs, rung = best
    record.update(chosen=rung.name, model_config=dict(rung.model_config),
                  reason=f"{rung.name}, the fastest: only {epochs:.2g} epochs of {examples} examples fit the "
                         f"{time_budget:g} s budget (at least {TARGET_EPOCHS} wanted); a larger --time-budget helps")
    return record


def time_training_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                        steps: int = PROBE_STEPS, max_seconds: float = PROBE_SECONDS) -> float:
    """Seconds per example of a classifier's training step (forward, cross-entropy, backward,
    AdamW) on the batch ``x`` (B, ...) with labels ``y`` (B,). The model and its optimizer are
    the probe's own; the caller's random numbers are untouched."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x).float(), y).backward()
            optimizer.step()

        for _ in range(PROBE_WARMUP_STEPS):
            step()
        sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
        sync()
        start, done = time.perf_counter(), 0
        while done < steps and (done == 0 or time.perf_counter() - start < max_seconds):
            step()
            done += 1
        sync()
        return (time.perf_counter() - start) / (done * len(x))


def fit_to_budget(task: Any, settings: dict[str, Any], shape: dict[str, Any], examples: int,
                  x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The hook a classifier task calls in ``build``, before it creates its model: choose from the
    model's ladder with a probe on ``x`` (a few training inputs, any dtype: cast to float) and
    ``y``; write the choice into ``settings["model_config"]``; return the record for config.json
    (``info["recipe"]``)."""
    rungs = ladder(task.name, settings["model"])
    given = settings.get("model_config") or {}
    x = x[:PROBE_BATCH].to(device).float()
    y = y[:PROBE_BATCH].to(device).long()

    def measure(rung: Rung) -> float:
        try:
            model = task.create_model(settings["model"], {**given, **rung.model_config}, shape).to(device)
        except UserError:   # a layout the images are too small for: never chosen
            return float("inf")
        return time_training_steps(model, x, y)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # models built here too
        record = choose(rungs, examples=examples, time_budget=settings.get("time_budget"),
                        seconds_per_example=measure, explicit=given)
    if record["model_config"]:
        settings["model_config"] = {**given, **record["model_config"]}
    return record
