"""`compare`: every model of a task on the same data, budget and seeds; summary and verdicts.

Generic over tasks: it only needs the task's primary metric and the runs' metrics.json files.
A comparison folder can be re-run: complete runs are kept, unfinished ones resumed.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from pathlib import Path
from typing import Any

from deepskeptic.errors import UserError
from deepskeptic.fairness import (FAIR_MARGIN, IMPROVING_EPOCHS, IMPROVING_MIN, MIN_EPOCHS, THROUGHPUT_RATIO,
                                  distortion_sentence, model_fairness, starved_clause)
from deepskeptic.fileio import atomic_write_json, atomic_write_text, folder_lock, read_json
from deepskeptic.models import registry
from deepskeptic.reports.html import Report
from deepskeptic.reports.plots import learning_curves, scatter_with_error
from deepskeptic.runs import Run
from deepskeptic.tasks.base import Task
from deepskeptic.training import rename_settings, resolve_settings, train


def run_comparison(task: Task, flags: dict[str, Any], config_file: str | None, models: list[str],
                   seeds: int, out: Path, *, jobs: int = 1, ray: str | None = None,
                   threads_per_job: int | None = None) -> dict:
    """Train every (model, seed) into ``out`` and write summary.json and report.html there.

    ``jobs`` > 1 trains the runs in that many local processes, ``ray`` (an address or 'auto') as
    tasks on a Ray cluster (deepskeptic.parallel); ``threads_per_job`` fixes their CPU threads
    (default: the cores' share per job). Complete runs are kept, unfinished ones resumed."""
    from deepskeptic import parallel
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if not models:
        raise UserError("--models is empty; name at least one model")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise UserError(f"--jobs must be a whole number of processes, at least 1, got {jobs!r}")
    if ray is not None and jobs > 1:
        raise UserError("--jobs and --ray cannot be combined: Ray schedules the runs over its cluster itself")
    if ray is not None:
        parallel.import_ray()  # a missing extra fails before any data is read
    # Resolve every model's settings first: unknown names and bad settings fail before any training.
    resolved = {(m, k): resolve_settings(task, {**flags, "model": m, "seed": k}, config_file)
                for m in models for k in range(_seeds_for(task, m, seeds))}
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is a file; choose another --out")
    created = not out.exists()
    try:
        # One `compare` writes a comparison folder at a time: a second one into the same --out is
        # refused with one line naming the first (its runs and summary would interleave).
        with folder_lock(out, "comparison folder"):
            return _compare_locked(task, resolved, models, seeds, out, jobs, ray, threads_per_job)
    except BaseException:
        if created:          # nothing of this comparison was kept: leave no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _compare_locked(task: Task, resolved: dict, models: list[str], seeds: int, out: Path, jobs: int,
                    ray: str | None, threads_per_job: int | None) -> dict:
    import copy

    from deepskeptic import parallel
    for (model, seed), model_settings in resolved.items():  # runs kept from before must match
        _check_reusable(task, out / f"{model}-seed{seed}", model_settings)
    prepare_settings = copy.deepcopy(resolved[(models[0], 0)])  # every run sees the same data
    specs = [parallel.RunSpec(model, seed, settings, str(out / f"{model}-seed{seed}"))
             for (model, seed), settings in resolved.items()
             if not (out / f"{model}-seed{seed}" / "metrics.json").is_file()]
    # here too when the runs go elsewhere (errors first); on the lanes' threads when this process is
    # one (a data set's preparation may round differently on another thread count)
    with parallel.lane_threads(specs, jobs if ray is None else 1, threads_per_job):
        prepared = task.prepare(resolved[(models[0], 0)])
    if ray is not None:
        parallel.run_ray(task, specs, prepare_settings, ray, threads_per_job)
    elif jobs > 1:
        parallel.run_local(task, specs, prepare_settings, jobs, threads_per_job, prepared)
    else:
        parallel.run_sequential(task, specs, prepared)
    summary = summarise(task, out, models, seeds)
    atomic_write_json(out / "summary.json", summary)
    write_comparison_report(task, out, summary)
    return summary


def _check_reusable(task: Task, run_dir: Path, settings: dict[str, Any]) -> None:
    """A run folder left by an earlier comparison is reused only if it is this task's run of the
    same data, model, seed and budget; anything else is an error, never a silent mix."""
    if not (run_dir / "config.json").is_file():
        return
    config = Run.open(run_dir, task=task.name, complete=False).config
    if config.get("task") != task.name:
        raise UserError(f"{run_dir} is a run of task '{config.get('task')}', not '{task.name}': choose another --out")
    old = config.get("settings", {})
    differ = [f"{k} {old.get(k)!r} there, {settings.get(k)!r} now"
              for k in ("data", "model", "seed", "epochs", "time_budget") if old.get(k) != settings.get(k)]
    if differ:
        raise UserError(f"{run_dir} was trained with other settings ({'; '.join(differ)}): "
                        "repeat its flags to reuse it, or choose another --out")


def _seeds_for(task: Task, model: str, seeds: int) -> int:
    """Models fitted in one step (statistics, counts, identity) give the same result for every seed:
    they run once, and their spread is zero."""
    return 1 if registry.spec(task.name, model).one_step else seeds


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(task: Task, out: Path, models: list[str], seeds: int) -> dict:
    metric = task.primary_metric
    per_model: dict[str, Any] = {}
    for model in models:
        runs = [out / f"{model}-seed{seed}" for seed in range(_seeds_for(task, model, seeds))]
        metrics = [read_json(r / "metrics.json") for r in runs]
        mean, std = _mean_std([m[metric] for m in metrics])
        per_model[model] = {
            "role": registry.spec(task.name, model).role,
            f"{metric}_mean": mean, f"{metric}_std": std,
            f"{metric}_values": [m[metric] for m in metrics],
            "params": metrics[0]["params"], "flops_per_example": metrics[0].get("flops_per_example"),
            "train_seconds_mean": statistics.fmean(m["train_seconds"] for m in metrics),
            "epochs_mean": statistics.fmean(m["epochs"] for m in metrics),
            **model_fairness(task, runs),   # starved, fair budget, speeds, load (deepskeptic.fairness)
            "runs": [str(r) for r in runs],
        }
        for key in task.summary_metrics:    # the task's other yardsticks, over the runs where defined
            values = [m.get(key) for m in metrics]
            defined = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v)]
            mean, std = _mean_std(defined) if defined else (None, None)
            per_model[model].update({f"{key}_mean": mean, f"{key}_std": std, f"{key}_values": values})
    return {"task": task.name, "metric": metric, "higher_is_better": task.higher_is_better,
            "seeds": seeds, "models": per_model, "verdicts": verdicts(task, per_model, seeds),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def verdicts(task: Task, per_model: dict[str, Any], seeds: int) -> list[str]:
    """One sentence per deep model: does it beat each simpler model by more than the seed spread?
    Under a time budget it says when a model was starved (too few epochs, or still improving) and
    when the runs' speeds show the machine's load distorted the comparison."""
    metric = task.primary_metric
    sign = 1 if task.higher_is_better else -1
    deep = [m for m, s in per_model.items() if s["role"] == "deep"]
    simpler = [m for m, s in per_model.items() if s["role"] != "deep"]
    # Optional task hook ``verdict_pairs(per_model)``: [(model, {reference: label})] when a task
    # compares other pairs than each deep model against every simpler one.
    pairs = task.verdict_pairs(per_model)
    if pairs is None:
        pairs = [(d, {b: b for b in simpler}) for d in deep]
    sentences = []
    for d, references in pairs:
        parts = []
        for b, label in references.items():
            gap = sign * (per_model[d][f"{metric}_mean"] - per_model[b][f"{metric}_mean"])
            spread = max(per_model[d][f"{metric}_std"], per_model[b][f"{metric}_std"])
            if seeds < 2:
                parts.append(f"{'ahead of' if gap > 0 else 'behind'} {label} by {abs(gap):.4g} (one seed: spread unknown)")
            elif gap > spread * (1 + 1e-9):  # ties (gap equal to the spread) are not wins
                parts.append(f"beats {label} by {gap:.4g}, more than the seed spread ({spread:.4g})")
            elif gap < -spread * (1 + 1e-4):
                parts.append(f"loses to {label} by {-gap:.4g}, more than the seed spread ({spread:.4g})")
            else:
                parts.append(f"is within the seed spread of {label} (gap {gap:+.4g}, spread {spread:.4g})")
        if parts:
            sentence = f"{d} ({metric} {per_model[d][f'{metric}_mean']:.4g}) " + "; ".join(parts) + "."
            starved = [m for m in (d, *references) if per_model[m].get("starved")]
            sentences.append(" ".join([sentence, *(starved_clause(m, per_model[m]) for m in starved)]))
    if seeds < 2 and sentences:
        sentences.append("With one seed no verdict is stated: run --seeds 3 or more to measure the spread.")
    distorted = distortion_sentence(per_model)
    if distorted:
        sentences.append(distorted)
    return sentences


def write_comparison_report(task: Task, out: Path, summary: dict) -> None:
    metric = summary["metric"]
    report = Report(f"compare {task.name}: {', '.join(summary['models'])}")
    report.heading("Verdict")
    for sentence in summary["verdicts"]:
        report.verdict(sentence)
    models = summary["models"]
    budgeted = any(s.get("time_budget") is not None for s in models.values())
    report.table(["model", "role", f"{metric} mean", "std", "params", "FLOPs/example", "train s", "epochs",
                  *(["starved"] if budgeted else [])],
                 [[m, s["role"], s[f"{metric}_mean"], s[f"{metric}_std"], s["params"], s["flops_per_example"] or "",
                   s["train_seconds_mean"], s.get("epochs_seen_mean", s["epochs_mean"]),
                   *([("yes" if s.get("starved") else "no")] if budgeted else [])] for m, s in models.items()])
    report.paragraph(f"{summary['seeds']} seed(s) per model; mean ± standard deviation over seeds.", "muted")
    if budgeted:
        _fairness_section(report, models)
    flops = {m: (s["flops_per_example"], s[f"{metric}_mean"], s[f"{metric}_std"])
             for m, s in models.items() if s["flops_per_example"]}
    if flops:
        report.heading(f"{metric} against compute and parameters")
        report.figure(scatter_with_error(flops, "forward FLOPs per example", metric))
    report.figure(scatter_with_error({m: (s["params"], s[f"{metric}_mean"], s[f"{metric}_std"])
                                      for m, s in models.items() if s["params"]}, "parameters", metric))
    histories = {m: Run(s["runs"][0]).history() for m, s in models.items()}
    val_keys = sorted({k for h in histories.values() for e in h for k in e if k.startswith("val_")})
    if val_keys:
        report.heading("Learning curves (seed 0)")
        report.figure(learning_curves(histories, val_keys, x="train_seconds"))
    task.comparison_sections(report, summary)  # task-specific sections, e.g. text samples
    report.heading("Runs")
    report.table(["model", "run folders"], [[m, ", ".join(Path(r).name for r in s["runs"])] for m, s in models.items()])
    atomic_write_text(out / "report.html", report.render())


def _fairness_section(report: Report, models: dict[str, Any]) -> None:
    """Did every model get a fair share of the budget? Epochs, speed per seed, starved, load."""
    report.heading("Budget and load")
    rows = []
    for m, s in models.items():
        speeds = ", ".join(f"{v:.3g}" if v else "-" for v in s.get("throughput_values", []))
        rows.append([m, s.get("epochs_seen_mean", s["epochs_mean"]), f"{speeds} {s.get('throughput_unit') or ''}/s",
                     s.get("starved_reason") or "no", s.get("fair_budget_s") or "",
                     "; ".join(f"seed {r['seed']}: {r['ratio']:.1f}x its other seeds" for r in s.get("load_distorted", []))
                     or "no", s.get("oversubscribed_runs", 0)])
    report.table(["model", "epochs seen (mean)", "speed per seed", "starved", "fair budget s",
                  "speed distorted by load", "runs started oversubscribed"], rows)
    report.paragraph(f"Starved: fewer than {MIN_EPOCHS} epochs within the budget, or the validation metric's best "
                     f"of the last {IMPROVING_EPOCHS} epochs beat every earlier epoch by more than "
                     f"{IMPROVING_MIN:.0%}. The fair budget is {MIN_EPOCHS} epochs (or twice the epochs seen, when "
                     f"still improving) at the measured seconds per epoch, plus {FAIR_MARGIN - 1:.0%}. A run's speed "
                     f"is distorted when it differs from its other seeds' median by more than {THROUGHPUT_RATIO:g}x.",
                     "muted")
