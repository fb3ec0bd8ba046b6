"""Was a comparison fair to each model? Starved runs and runs slowed by load.

A verdict is about a model only when the model had a fair chance within the budget. These rules
read a run's history.jsonl and config.json; they apply to runs trained under --time-budget (with
--epochs the user chose the length, and load changes the seconds, not the numbers). ``compare``
puts their findings in summary.json, the verdict sentences and the report.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from deepskeptic.models import registry
from deepskeptic.runs import Run
from deepskeptic.tasks.base import Task

MIN_EPOCHS = 3            # fewer passes than this under a budget and the run is starved: networks
                          # here are far from their plateau after 1-2 epochs (a digits cnn scored
                          # 0.55 after 2 epochs and 1.0 after 12 on the same 15 s budget, issue 17)
IMPROVING_EPOCHS = 2      # "still improving": the best validation value of the last 2 epochs is the
IMPROVING_MIN = 0.01      # best of the run and beats every earlier epoch by more than 1 % (relative;
                          # 1 image in 100 on a small validation set is noise, a 1 % trend is not)
FULL_EPOCH = 0.95         # an epoch that saw 95 % of the training examples counts as whole (the last
                          # partial batch may be dropped)
FAIR_MARGIN = 1.25        # the suggested budget: the needed epochs at the measured speed, plus a
                          # quarter (the speed is measured on this run, under this run's load)
THROUGHPUT_RATIO = 2.0    # a run faster or slower than its other seeds' median by more than 2x was
                          # slowed by load, not by its seed (seeds change weights, not step costs)


def _examples(record: dict) -> float | None:
    """Examples (images, documents, characters, ...) an epoch line of history.jsonl counted."""
    for key, value in record.items():
        if key.endswith("_per_second") and isinstance(value, (int, float)):
            return value * record.get("epoch_seconds", 0.0)
    return None


def _rate(history: list[dict]) -> tuple[float | None, str | None]:
    """(examples per second over the whole run, the unit) from the per-epoch *_per_second fields."""
    seen, seconds, unit = 0.0, 0.0, None
    for record in history:
        n = _examples(record)
        if n is not None:
            seen += n
            seconds += record.get("epoch_seconds", 0.0)
            unit = unit or next(k for k in record if k.endswith("_per_second"))[:-len("_per_second")]
    return (seen / seconds if seconds > 0 else None), unit


def epochs_seen(history: list[dict], train_size: int | None = None) -> float:
    """Passes over the training data, the last one fractional when the budget cut it short: from the
    history line's ``epoch_fraction`` where the engine writes one, else from the examples it counted
    against ``train_size`` (config.json's data_info) or against an earlier, whole epoch."""
    if not history:
        return 0.0
    last = history[-1]
    if isinstance(last.get("epoch_fraction"), (int, float)):
        fraction = float(last["epoch_fraction"])
    else:
        seen = _examples(last)
        earlier = [n for n in (_examples(h) for h in history[:-1]) if n]
        full = train_size or (max(earlier) if earlier else None)
        fraction = min(1.0, seen / full) if full and seen is not None else 1.0
    return len(history) - 1 + (1.0 if fraction >= FULL_EPOCH else fraction)


def _still_improving(history: list[dict], key: str, higher_is_better: bool) -> str | None:
    """How the validation metric ``key`` was still improving at the end, or None (see IMPROVING_*)."""
    values = [h[key] for h in history if isinstance(h.get(key), (int, float))]
    if len(values) <= IMPROVING_EPOCHS:
        return None
    sign = 1 if higher_is_better else -1
    recent, before = values[-IMPROVING_EPOCHS:], values[:-IMPROVING_EPOCHS]
    best_recent = max(recent, key=lambda v: sign * v)
    best_before = max(before, key=lambda v: sign * v)
    gain = sign * (best_recent - best_before)
    if gain > IMPROVING_MIN * max(abs(best_before), 1e-12):
        return f"{key} {best_recent:.4g} in its last {IMPROVING_EPOCHS} epochs against {best_before:.4g} before"
    return None


def _round_up(seconds: float) -> int:
    """``seconds`` rounded up to two significant digits (a budget a user would type)."""
    if seconds <= 10:
        return max(1, math.ceil(seconds))
    step = 10 ** (int(math.log10(seconds)) - 1)
    return int(math.ceil(seconds / step) * step)


def run_fairness(task: Task, run_dir: Path) -> dict[str, Any]:
    """One run's budget facts: epochs seen, seconds per epoch, throughput, starved (and why, and
    the budget that would have given it a fair chance)."""
    run = Run(run_dir)
    history = run.history()
    config = run.config if run.config_path.is_file() else {}
    budget = (config.get("settings") or {}).get("time_budget")
    info = config.get("data_info") or {}
    train_size = next((info[k] for k in ("train",) if isinstance(info.get(k), int) and info[k] > 0), None)
    seen = epochs_seen(history, train_size) if budget is not None else float(len(history))
    rate, unit = _rate(history)
    whole = [h["epoch_seconds"] for h in history[:int(seen)] if h.get("epoch_seconds")]
    if whole:
        per_epoch = statistics.median(whole)
    elif history and seen > 0:
        per_epoch = history[-1].get("epoch_seconds", 0.0) / seen
    else:
        per_epoch = None
    facts = {"seed": (config.get("settings") or {}).get("seed"), "time_budget": budget, "epochs_seen": round(seen, 3),
             "seconds_per_epoch": per_epoch, "throughput": rate, "throughput_unit": unit,
             "oversubscribed": bool((config.get("threads") or {}).get("oversubscribed")),
             "starved": False, "starved_reason": None, "starved_kind": None, "fair_budget_s": None}
    one_step = config.get("settings", {}).get("model") and registry.spec(task.name, config["settings"]["model"]).one_step
    if budget is None or one_step:
        return facts
    needed = None
    if seen < MIN_EPOCHS:
        needed, facts["starved_kind"] = MIN_EPOCHS, "epochs"
        facts["starved_reason"] = f"saw {seen:.2g} epochs in {budget:g} s (fewer than {MIN_EPOCHS})"
    else:
        stem = task.primary_metric.removeprefix("test_")
        why = _still_improving(history, f"val_{stem}", task.higher_is_better)
        if why:
            needed, facts["starved_kind"] = max(MIN_EPOCHS, 2 * seen), "improving"
            facts["starved_reason"] = f"was still improving when its {budget:g} s budget ran out ({seen:.2g} epochs; {why})"
    if needed is not None:
        facts["starved"] = True
        if per_epoch:
            facts["fair_budget_s"] = _round_up(needed * per_epoch * FAIR_MARGIN)
    return facts


def load_distorted(runs: list[dict]) -> list[dict]:
    """The runs whose throughput differs from their siblings' median by more than THROUGHPUT_RATIO."""
    out = []
    for i, run in enumerate(runs):
        others = [r["throughput"] for j, r in enumerate(runs) if j != i and r["throughput"]]
        if not others or not run["throughput"]:
            continue
        typical = statistics.median(others)
        ratio = max(run["throughput"] / typical, typical / run["throughput"])
        if ratio > THROUGHPUT_RATIO:
            out.append({"seed": run["seed"], "throughput": run["throughput"], "siblings": typical, "ratio": ratio})
    return out


def model_fairness(task: Task, run_dirs: list[Path]) -> dict[str, Any]:
    """What summary.json carries per model: epochs seen, starved (any seed; the reason of the run
    that saw the fewest epochs), the fair budget (the largest any seed needs), speeds, load."""
    runs = [run_fairness(task, r) for r in run_dirs]
    starved = [f for f in runs if f["starved"]]
    worst = min(starved, key=lambda f: f["epochs_seen"]) if starved else None
    budgets = [f["fair_budget_s"] for f in starved if f["fair_budget_s"]]
    return {
        "epochs_seen_mean": statistics.fmean(f["epochs_seen"] for f in runs),
        "epochs_seen_values": [f["epochs_seen"] for f in runs],
        "time_budget": runs[0]["time_budget"],
        "starved": bool(starved),
        "starved_reason": (f"{len(starved)} of {len(runs)} run(s) starved; seed {worst['seed']} "
                           f"{worst['starved_reason']}") if worst else None,
        "starved_kind": worst["starved_kind"] if worst else None,
        "fair_budget_s": max(budgets) if budgets else None,
        "throughput_values": [f["throughput"] for f in runs],
        "throughput_unit": runs[0]["throughput_unit"],
        "load_distorted": load_distorted(runs),
        "oversubscribed_runs": sum(f["oversubscribed"] for f in runs),
    }


def starved_clause(model: str, s: dict[str, Any]) -> str:
    """'lstm saw 0.07 epochs in 90 s: the verdict is about this budget; try --time-budget 1600.'"""
    budget = s.get("time_budget")
    if s.get("starved_kind") == "improving":
        what = f"{model} was still improving when its {budget:g} s budget ran out"
    elif s["epochs_seen_mean"] < MIN_EPOCHS:
        what = f"{model} saw {s['epochs_seen_mean']:.2g} epochs in {budget:g} s"
    else:
        what = f"{model} saw as few as {min(s['epochs_seen_values']):.2g} epochs in {budget:g} s on one seed"
    advice = f"; try --time-budget {s['fair_budget_s']}" if s.get("fair_budget_s") else "; try a larger --time-budget"
    return f"{what}: the verdict is about this budget{advice}."


def distortion_sentence(per_model: dict[str, Any]) -> str | None:
    """The verdict's sentence on runs slowed by load (time-budgeted models only), or None."""
    distorted = [(m, r) for m, s in per_model.items() if s.get("time_budget") is not None
                 for r in s.get("load_distorted", [])]
    if not distorted:
        return None
    runs = "; ".join(f"{m} seed {r['seed']} {r['throughput']:.3g} {per_model[m].get('throughput_unit') or 'examples'}/s "
                     f"against {r['siblings']:.3g} for its other seeds ({r['ratio']:.1f}x)" for m, r in distorted)
    return (f"The comparison was distorted by load: {runs}. Under a time budget a slowed run gets fewer steps; "
            "rerun on a quieter machine, or with --threads 1.")
