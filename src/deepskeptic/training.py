"""Train one run: settings -> data -> job -> engine -> run folder. Used by `train` and `compare`."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any

import torch

from deepskeptic import distributed
from deepskeptic import settings as settings_mod
from deepskeptic.engine import LoopSettings, fit
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.runs import Run, default_run_dir, device_name, resolve_device, versions
from deepskeptic.tasks.base import Task
from deepskeptic.threads import apply_threads


def rename_settings(task: Task, settings: dict[str, Any], where: str) -> dict[str, Any]:
    """``settings`` with the task's renamed keys under their new names (a note on stderr says so);
    both names at once is an error."""
    out = dict(settings)
    for old, new in task.renamed_settings.items():
        if old in out:
            if new in out and out[new] is not None and out[old] is not None:
                raise UserError(f"{where} gives both {old} and its new name {new}; keep only {new}")
            value = out.pop(old)
            if value is not None or new not in out:
                out[new] = value
            if value is not None and where != "run":
                print(f"note: {old.replace('_', '-')} is now called {new.replace('_', '-')} ({where})",
                      file=sys.stderr)
    return out


def resolve_settings(task: Task, flags: dict[str, Any], config_file: str | None) -> dict[str, Any]:
    defaults = {**settings_mod.COMMON_DEFAULTS, **task.task_defaults}
    config = settings_mod.read_config_file(config_file) if config_file else {}
    config = rename_settings(task, config, f"config file {config_file}")
    flags = rename_settings(task, flags, "flags")
    model = flags.get("model") or config.get("model") or defaults.get("model")
    if model is None:
        raise UserError(f"no model given; pass --model, one of: {', '.join(task.model_names())}")
    spec = registry.spec(task.name, model)  # unknown model -> error with the closest name
    resolved = settings_mod.resolve(defaults, spec.train_defaults, config, flags,
                                    config_name=str(config_file or "settings"), declarations=task.declarations())
    resolved["model"] = model
    if resolved["epochs"] is None and resolved["time_budget"] is None:
        resolved["epochs"] = task.default_epochs
    if resolved["data"] is None:
        raise UserError("no data given; pass --data (see 'deepskeptic datasets')")
    registry.make_config(task.name, model, **resolved["model_config"])  # unknown model keys -> error
    if spec.one_step:  # fitted in one step: there is nothing to iterate, and no budget to spend
        resolved.update(epochs=1, time_budget=None)
    task.adjust_settings(resolved)
    return resolved


def train(task: Task, settings: dict[str, Any], *, prepared: Any = None, out: str | Path | None = None,
          resume: Run | None = None) -> Run:
    """Train and evaluate one model; returns the completed run folder.

    Under torchrun (several processes, see distributed.py) every rank calls this with the same
    settings: ``--batch-size`` is the global batch, each rank trains on its share, and rank 0
    alone writes the run folder and measures the test split."""
    if _depth:      # a run trained inside another's preparation (a GAN's judge): by this process alone
        with distributed.alone():
            return _counted(task, settings, distributed.SINGLE, resolve_device(settings["device"]),
                            prepared=prepared, out=out, resume=resume)
    _check_distributed(task, settings, distributed.from_environment(), resume)   # before joining the others
    world, rank_device = distributed.setup(settings["device"])
    return _counted(task, settings, world, rank_device or resolve_device(settings["device"]),
                    prepared=prepared, out=out, resume=resume)


_depth = 0          # train() calls in progress in this process


def _counted(*args, **kwargs) -> Run:
    global _depth
    _depth += 1
    try:
        return _train(*args, **kwargs)
    finally:
        _depth -= 1


def _train(task: Task, settings: dict[str, Any], world: distributed.World, device: torch.device, *,
           prepared: Any, out: str | Path | None, resume: Run | None) -> Run:
    threads = apply_threads(settings.get("threads"),  # before the data: decoding uses them too
                            previous=resume.config.get("threads") if resume is not None else None)
    torch.manual_seed(settings["seed"])
    if prepared is None:
        with _rank_zero_first(world):                     # data caches are built once, by rank 0
            prepared = task.prepare(settings)
    job, info = task.build(settings, prepared, device)
    if world.active:
        info = {**info, "world_size": world.size, "global_batch": settings.get("batch_size")}
    if resume is None:
        out = out or settings.get("out") or default_run_dir("runs", task.name, settings["data"], settings["model"])
    if not world.is_main:
        return _follow(task, job, settings, device, world, out, resume)
    with (Run(out) if resume is None else resume).lock():   # one process writes a run folder at a time
        try:
            if resume is None:
                run = Run.create(out)                             # empty, checked under the lock
                run.write_config({"task": task.name, "settings": settings, **info, "device": str(device),
                                  "device_name": device_name(device), "threads": threads, "versions": versions(),
                                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            else:
                run = resume
                if run.is_complete:                               # another process finished it meanwhile
                    raise UserError(f"run {run.path} is already complete; nothing to resume")
        except UserError as exc:
            if world.active:
                distributed.broadcast_object(("error", str(exc)))  # the other ranks stop with the same line
            raise
        if world.active:
            distributed.broadcast_object(("run", str(run.path)))
        job.run_path = run.path
        history = fit(job, _loop_settings(settings), seed=settings["seed"], device=device,
                      checkpoint_dir=run.checkpoint_dir, amp=settings["amp"], cpu_bf16=settings["cpu_bf16"],
                      on_epoch=run.write_history, world=world,
                      resume=resume is not None and (run.checkpoint_dir / "state.safetensors").is_file())
        run.write_history(history)
        run.save_weights(job.modules)
        metrics = task.finish(run, job, prepared, settings, device)
        metrics.update({
            "train_seconds": round(history[-1]["train_seconds"], 3) if history else 0.0,
            "epochs": len(history),
            "params": sum(registry.count_params(m) for m in job.modules.values()),
            "device": device_name(device),
            "seed": settings["seed"],
            "model": settings["model"],
            "data": str(settings["data"]),
        })
        metrics.setdefault("flops_per_example", info.get("flops_per_example"))
        task.write_report(run, prepared, metrics)
        run.write_metrics(metrics)  # last: its presence marks the run complete
    return run


def _loop_settings(settings: dict[str, Any]) -> LoopSettings:
    return LoopSettings(epochs=settings["epochs"], time_budget=settings["time_budget"],
                        warmup=settings["warmup"], schedule=settings["schedule"], progress=settings["progress"])


def _check_distributed(task: Task, settings: dict[str, Any], world: distributed.World, resume: Run | None) -> None:
    """What torchrun cannot run, as one line before any work: a task that does not split, a batch
    smaller than the world, a run resumed with another number of processes."""
    if world.active and not task.distributed:
        raise UserError(f"{task.name} does not train under torchrun: {task.distributed_instead}")
    batch = settings.get("batch_size")
    if world.active and isinstance(batch, int) and batch < world.size:
        raise UserError(f"--batch-size {batch} is the global batch and cannot be split over {world.size} "
                        f"processes; use at least {world.size}")
    if resume is not None:
        started = resume.config.get("world_size", 1)
        if started != world.size:
            raise UserError(f"run {resume.path} was trained by {started} process(es), not {world.size}; resume it "
                            f"with torchrun --nproc_per_node {started}" if started != 1 else
                            f"run {resume.path} was trained in one process; resume it without torchrun")


@contextlib.contextmanager
def _rank_zero_first(world: distributed.World):
    """Rank 0 runs the block first (it builds the data caches); the others after it, from the cache."""
    if world.active and not world.is_main:
        distributed.barrier()
    yield
    if world.active and world.is_main:
        distributed.barrier()


def _follow(task: Task, job, settings: dict[str, Any], device: torch.device, world: distributed.World,
            out: Any, resume: Run | None) -> Run:
    """A rank other than 0: train beside rank 0 in its run folder, writing nothing."""
    kind, value = distributed.broadcast_object(None)
    if kind == "error":
        raise UserError(value)                                   # rank 0's error, the same line
    run = Run(value)
    fit(job, _loop_settings(settings), seed=settings["seed"], device=device, checkpoint_dir=run.checkpoint_dir,
        amp=settings["amp"], cpu_bf16=settings["cpu_bf16"], world=world,
        resume=resume is not None and (run.checkpoint_dir / "state.safetensors").is_file())
    return run


def resume_run(task: Task, run: Run) -> Run:
    """Continue ``run`` (an incomplete run of ``task``) from its last checkpoint."""
    if run.is_complete:
        raise UserError(f"run {run.path} is already complete; nothing to resume")
    return train(task, rename_settings(task, run.config["settings"], "run"), resume=run)
