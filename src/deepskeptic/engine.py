"""The one training loop, shared by every task.

A task hands the engine a ``Job``: its modules, its optimizers (one for a classifier, two for a
GAN), how to cut an epoch into batches, one training step and a validation pass. The engine owns
everything around that: the learning-rate schedule (spanning the epochs or the time budget), the
time budget itself (evaluation is not counted), progress bars, non-finite loss detection,
checkpoints at every epoch end, every few minutes and on Ctrl-C, and exact resume.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from deepskeptic import distributed
from deepskeptic.checkpoint import CHECKPOINT_FILE, load_training_state, restore, save_state
from deepskeptic.distributed import SINGLE, World
from deepskeptic.errors import UserError


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved first."""


class Diverged(UserError):
    """The loss became NaN or infinite: a setting (usually the learning rate) is too aggressive."""


@dataclass
class LoopSettings:
    epochs: int | None = None           # number of passes over the training data, or
    time_budget: float | None = None    # seconds of training (validation and checkpoints excluded)
    warmup: float = 0.05                # fraction of the schedule spent ramping the LR up linearly
    schedule: str = "linear"            # after warm-up: 'linear' decay to 0, 'cosine', 'constant', or
                                        # 'constant-linear' (constant for half, then linear to 0: CycleGAN's)
    checkpoint_every: float = 300.0     # seconds of wall time between checkpoints inside an epoch
    progress: bool = True               # progress bar on a terminal, a line per epoch elsewhere


def lr_factor(progress: float, settings: LoopSettings) -> float:
    """Multiplier of each optimizer's base LR at ``progress`` in [0, 1] of the schedule."""
    progress = min(max(progress, 0.0), 1.0)
    if settings.warmup > 0 and progress < settings.warmup:
        return progress / settings.warmup
    rest = (progress - settings.warmup) / max(1e-12, 1 - settings.warmup)
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * rest))
    if settings.schedule == "constant-linear":
        return min(1.0, 2.0 * (1.0 - rest))
    return max(0.0, 1.0 - rest)


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class StepContext:
    """Handed to ``Job.train_step``: the device, autocast and an optimizer step."""

    def __init__(self, device: torch.device, optimizers: dict[str, torch.optim.Optimizer], amp: bool,
                 cpu_bf16: bool | str = False, world: World = SINGLE):
        self.device = device
        self.optimizers = optimizers
        self.world = world
        self.loss_scale = 1.0        # under torchrun: this rank's share of the batch x world size
        self.ddp = False             # the job's network is wrapped in DDP (else gradients averaged here)
        # bf16 autocast: always worth it on CUDA; on CPUs only where they have bf16 instructions.
        if cpu_bf16 == "auto":
            cpu_bf16 = cpu_has_bf16()
        self.amp = (amp and device.type == "cuda") or (bool(cpu_bf16) and device.type == "cpu")

    def autocast(self):
        if self.amp:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def backward_step(self, loss: torch.Tensor, optimizer: str = "main", clip: float | None = None,
                      parameters: Sequence[nn.Parameter] | None = None) -> None:
        """zero_grad, backward, optional gradient-norm clipping, step for one optimizer."""
        opt = self.optimizers[optimizer]
        opt.zero_grad(set_to_none=True)
        # Under torchrun each rank's loss is the mean over its part of the batch; scaled by its share
        # x world size, the ranks' averaged gradient is the gradient of the whole batch's mean.
        (loss * self.loss_scale if self.loss_scale != 1.0 else loss).backward()
        if self.world.active and not self.ddp:
            distributed.average_gradients([p for group in opt.param_groups for p in group["params"]])
        if clip is not None:
            params = parameters if parameters is not None else [
                p for group in opt.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()


class Job:
    """What a task plugs into the engine. Subclasses set ``modules`` and ``optimizers``."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    unit: str = "ex"  # what one counted example is, for the rate in the progress bar
    run_path: Path | None = None  # the run folder, set by training.train before fit (files written per epoch)

    def epoch_batches(self, epoch: int, generator: torch.Generator) -> Sequence[Any]:
        """The batches of one epoch, in order; all randomness drawn from ``generator``."""
        raise NotImplementedError

    def train_step(self, batch: Any, ctx: StepContext) -> tuple[int, dict[str, torch.Tensor]]:
        """One step: returns (examples in the batch, {statistic: batch mean as a 0-d tensor})."""
        raise NotImplementedError

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation metrics (bare names; the engine adds ``val_``) after ``epoch`` (1-based; a job
        may call it with 0 for the untrained model). Not counted in the time budget."""
        return {}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module], world: World) -> bool:
        """Under torchrun: wrap the network the training step calls with ``wrap`` (DistributedData-
        Parallel) and return True. False keeps the step as it is, and the engine averages each
        optimizer's gradients after its backward instead (GANs: their alternating steps detach and
        freeze networks, which DDP's reducer does not allow). The default wraps ``train_model`` of a
        one-network job (``modules == {"model": ...}``), compiled again when it was compiled."""
        model = self.modules.get("model")
        if list(self.modules) != ["model"] or getattr(self, "train_model", None) is None or not self.optimizers:
            return False
        compiled = self.train_model is not model
        wrapped = wrap(model)
        self.train_model = torch.compile(wrapped) if compiled else wrapped
        return True

    def shard(self, batch: Any, rank: int, world: int) -> tuple[Any, float]:
        """Under torchrun: this rank's part of ``batch`` and its share of the batch's examples. The
        default splits an index tensor (or a tuple of them, e.g. CycleGAN's pair of domains) into
        ``world`` parts as equal as they can be."""
        if isinstance(batch, torch.Tensor):
            part = torch.tensor_split(batch, world)[rank]
            return part, len(part) / max(1, len(batch))
        if isinstance(batch, tuple) and batch and all(isinstance(b, torch.Tensor) for b in batch):
            parts = tuple(torch.tensor_split(b, world)[rank] for b in batch)
            return parts, len(parts[0]) / max(1, len(batch[0]))
        raise UserError(f"{type(self).__name__} cannot split its batches over torchrun's processes; "
                        "train it in one process")

    def should_stop(self) -> bool:
        """Asked after each epoch's validation: True ends training there (early stopping); the
        answer must follow from state that ``extra_state`` carries, so that resume stays exact."""
        return False

    def extra_state(self) -> dict[str, Any]:
        """State beyond modules and optimizers that resume needs (tensors and plain values)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


class BestWeights:
    """A module's weights at its best (lowest) validation score so far: the run keeps the best
    epoch's weights, whether training runs its epochs or budget or stops early (Job.should_stop,
    with ``epochs_since_best``). A job offers a score after each validation, ``restore`` loads the
    best weights at the end, and ``state``/``load`` carry them through checkpoints (resume stays
    exact)."""

    def __init__(self, module: nn.Module, enabled: bool = True):
        self.module, self.enabled = module, enabled
        self.best: dict[str, Any] = {}          # {'score', 'epoch', 'weights'} once something was offered

    def offer(self, score: float, epoch: int) -> None:
        if self.enabled and score < self.best.get("score", math.inf):
            self.best = {"score": score, "epoch": epoch,
                         "weights": {k: v.detach().clone() for k, v in self.module.state_dict().items()}}

    @property
    def score(self) -> float | None:
        return self.best.get("score")

    def epochs_since_best(self, epoch: int) -> int:
        """Epochs offered after the best one, at ``epoch`` (0 when nothing was kept)."""
        return epoch - self.best["epoch"] if self.best else 0

    def restore(self) -> int | None:
        """Load the best weights into the module; returns their epoch (None when nothing was kept)."""
        if not self.best:
            return None
        self.module.load_state_dict(self.best["weights"])
        return self.best["epoch"]

    def state(self) -> dict[str, Any]:
        return self.best

    def load(self, state: dict[str, Any] | None, device: torch.device) -> None:
        state = dict(state or {})
        if state:
            state["weights"] = {k: v.to(device) for k, v in state["weights"].items()}
        self.best = state


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _SigintFlag:
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one stops at once."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class _Loop:
    """What one call of ``fit`` carries between its parts: the job, the settings, the position
    (what a checkpoint stores to resume exactly) and the history so far."""
    job: Job
    settings: LoopSettings
    ctx: StepContext
    generator: torch.Generator
    checkpoint_dir: Path
    pos: dict[str, Any]
    history: list[dict]
    epoch_generator_state: torch.Tensor
    interactive: bool
    sync: bool
    world: World = SINGLE
    last_checkpoint: float = 0.0
    stop_requested: bool = False          # under torchrun: a Ctrl-C all ranks agreed on

    @property
    def main(self) -> bool:
        return self.world.is_main

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint_dir) / CHECKPOINT_FILE

    def save(self, done: bool = False) -> None:
        """Write the checkpoint (under torchrun: called by every rank at the same step; rank 0
        writes, with each rank's RNG and job state, so that resume is exact on every rank)."""
        self.pos["done"] = done
        job = self.job
        extra = job.extra_state()
        ranks = (distributed.gather_objects({"rng": _rng_state(), "extra": extra})
                 if self.world.active else None)
        if not self.main:
            return
        state = {"modules": {n: m.state_dict() for n, m in job.modules.items()},
                 "optimizers": {n: o.state_dict() for n, o in job.optimizers.items()},
                 "extra": extra, "position": self.pos, "history": self.history,
                 "epoch_generator_state": self.epoch_generator_state, "rng": _rng_state()}
        if ranks is not None:
            state["ranks"] = ranks
        save_state(self.checkpoint_path, state)

    def progress(self, total_steps: int | None) -> float:
        """Where the schedule is, in [0, 1]: steps of the epochs, or seconds of the budget."""
        if total_steps is None:
            return self.pos["train_seconds"] / self.settings.time_budget
        return self.pos["global_step"] / total_steps


def _restore(loop: _Loop) -> None:
    """Load modules, optimizers, the job's extra state, the position, history and RNG states; each
    checked against what the job holds (a checkpoint that does not fit is one line naming it)."""
    path = loop.checkpoint_path
    state = load_training_state(path)
    for name, module in loop.job.modules.items():
        if name not in state["modules"]:
            raise UserError(f"checkpoint {path} has no weights for {name}; the run folder was changed "
                            "by hand or by another version: start the run again")
        restore(module, state["modules"][name], f"the {name} network", path)
    for name, opt in loop.job.optimizers.items():
        if name not in state["optimizers"]:
            raise UserError(f"checkpoint {path} has no state for the {name} optimizer; start the run again")
        restore(opt, state["optimizers"][name], f"the {name} optimizer", path)
    world, ranks = loop.world, state.get("ranks")
    if world.active and (ranks is None or len(ranks) != world.size):
        raise UserError(f"checkpoint {path} was written by {len(ranks) if ranks else 1} process(es), not "
                        f"{world.size}; resume with the same torchrun --nproc_per_node (and --nnodes)")
    if not world.active and ranks is not None:
        raise UserError(f"checkpoint {path} was written by {len(ranks)} processes under torchrun; resume "
                        f"with torchrun --nproc_per_node {len(ranks)} -m deepskeptic train --resume RUN")
    mine = ranks[world.rank] if ranks is not None else {"extra": state["extra"], "rng": state["rng"]}
    loop.job.load_extra_state(mine["extra"])
    loop.pos, loop.history = state["position"], state["history"]
    loop.epoch_generator_state = state["epoch_generator_state"]
    _set_rng_state(mine["rng"])


def _run_epoch(loop: _Loop, batches: Sequence[Any], sigint: "_SigintFlag") -> tuple[dict[str, torch.Tensor], bool]:
    """The training steps of one epoch from ``pos['batch']`` on; returns the summed statistics and
    whether the time budget ran out inside it. Ctrl-C saves a checkpoint and raises Interrupted."""
    job, settings, pos = loop.job, loop.settings, loop.pos
    epoch = pos["epoch"]
    total_steps = None if settings.epochs is None else settings.epochs * len(batches)
    for module in job.modules.values():
        module.train()
    sums = {k: torch.tensor(v) for k, v in pos["sums"].items()}
    bar = tqdm(total=len(batches), initial=pos["batch"], desc=f"epoch {epoch + 1}",
               unit="batch", leave=False, disable=not loop.interactive, dynamic_ncols=True)
    if pos["batch"] == 0:
        pos["epoch_start_seconds"] = pos["train_seconds"]
    epoch_start_seconds = pos["epoch_start_seconds"]
    budget_hit = False
    try:
        while pos["batch"] < len(batches):
            if settings.time_budget is not None and pos["train_seconds"] >= settings.time_budget:
                budget_hit = True
                break
            if (loop.stop_requested if loop.world.active else sigint.raised):
                pos["sums"] = {k: v.item() for k, v in sums.items()}  # the epoch's statistics so far
                loop.save()
                raise Interrupted(str(Path(loop.checkpoint_dir).parent))
            factor = lr_factor(loop.progress(total_steps), settings)
            for opt in job.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * factor
            start = time.perf_counter()
            batch = batches[pos["batch"]]
            if loop.world.active:
                batch, share = job.shard(batch, loop.world.rank, loop.world.size)
                loop.ctx.loss_scale = share * loop.world.size
            count, stats = job.train_step(batch, loop.ctx)
            if loop.sync:
                torch.cuda.synchronize()
            pos["train_seconds"] += time.perf_counter() - start
            for key, value in stats.items():
                value = value.detach().float() * count
                sums[key] = sums[key] + value if key in sums else value
            pos["count"] += count
            pos["batch"] += 1
            pos["global_step"] += 1
            loss = stats.get("loss")
            diverged = (loss is not None and (not loop.sync or loop.world.active or pos["global_step"] % 20 == 0)
                        and not torch.isfinite(loss))
            checkpoint_due = time.monotonic() - loop.last_checkpoint > settings.checkpoint_every
            if loop.world.active:   # one clock, one Ctrl-C, one checkpoint moment for all ranks
                seconds, stop, due, bad = distributed.agree_max(
                    [pos["train_seconds"], float(sigint.raised), float(checkpoint_due), float(diverged)])
                pos["train_seconds"], loop.stop_requested = seconds, stop > 0
                checkpoint_due, diverged = due > 0, bad > 0
            if diverged:
                shown = loss.item() if loss is not None and not torch.isfinite(loss) else "not finite on another rank"
                raise Diverged(f"training diverged: the loss became {shown} at epoch {epoch + 1}, "
                               f"step {pos['global_step']}; lower the learning rate (--lr)")
            if loop.interactive and (pos["batch"] % 10 == 0 or pos["batch"] == len(batches)):
                means = {k: v.item() / max(1, pos["count"]) for k, v in sums.items()}
                bar.set_postfix({k: f"{v:.4f}" for k, v in means.items()},
                                **{f"{job.unit}/s": f"{pos['count'] / max(1e-9, pos['train_seconds'] - epoch_start_seconds):.0f}"})
                bar.update(pos["batch"] - bar.n)
            if checkpoint_due:
                pos["sums"] = {k: v.item() for k, v in sums.items()}
                loop.save()
                loop.last_checkpoint = time.monotonic()
    finally:
        bar.close()
    return sums, budget_hit


def _epoch_record(loop: _Loop, sums: dict[str, torch.Tensor], total_steps: int | None) -> dict | None:
    """The history line of the epoch just trained: train means, schedule, seconds, rate and the
    job's validation metrics (None when the epoch had no step, e.g. a budget already spent)."""
    pos, job, settings = loop.pos, loop.job, loop.settings
    if loop.world.active:   # the whole batch's means: every rank's sums and counts together
        sums, count = distributed.sum_over_ranks(sums, pos["count"])
        pos = {**pos, "count": count}
        distributed.broadcast_state(job.modules, buffers_only=True)  # rank 0's BatchNorm statistics
    if pos["count"] == 0:
        return None
    epoch_seconds = pos["train_seconds"] - pos["epoch_start_seconds"]
    record = {"epoch": pos["epoch"] + 1,
              **{f"train_{k}": v.item() / max(1, pos["count"]) for k, v in sums.items()},
              "lr_factor": round(lr_factor(loop.progress(total_steps), settings), 6),
              "epoch_seconds": round(epoch_seconds, 4), "train_seconds": round(pos["train_seconds"], 4),
              f"{job.unit}_per_second": round(pos["count"] / max(1e-9, epoch_seconds), 1)}
    record.update({f"val_{k}": v for k, v in job.validate(pos["epoch"] + 1).items()})
    return record


def fit(job: Job, settings: LoopSettings, *, seed: int, device: torch.device, checkpoint_dir: Path,
        amp: bool = True, cpu_bf16: bool | str = False, on_epoch: Callable[[list[dict]], None] | None = None,
        resume: bool = False, world: World = SINGLE) -> list[dict]:
    """Train ``job`` until its epochs or time budget are spent; returns the per-epoch history.

    ``on_epoch(history)`` is called after each epoch's checkpoint (the run folder writes
    history.jsonl from it). With ``resume`` the loop continues from ``checkpoint_dir``. Under
    torchrun (``world``, see distributed.py) every rank calls ``fit`` with the same job; the
    network is wrapped in DDP (``Job.distribute``), each step takes this rank's share of the batch
    (``Job.shard``) and only rank 0 writes checkpoints, prints and calls ``on_epoch``.
    """
    if (settings.epochs is None) == (settings.time_budget is None):
        raise ValueError("give exactly one of epochs and time_budget")
    generator = torch.Generator().manual_seed(seed)
    for opt in job.optimizers.values():
        for group in opt.param_groups:
            group.setdefault("base_lr", group["lr"])
    loop = _Loop(job=job, settings=settings, ctx=StepContext(device, job.optimizers, amp, cpu_bf16, world),
                 generator=generator, checkpoint_dir=Path(checkpoint_dir),
                 pos={"epoch": 0, "batch": 0, "global_step": 0, "train_seconds": 0.0, "sums": {}, "count": 0,
                      "done": False, "epoch_start_seconds": 0.0},
                 history=[], epoch_generator_state=generator.get_state(),
                 interactive=settings.progress and sys.stderr.isatty() and world.is_main,
                 sync=device.type == "cuda", world=world)
    if resume:
        _restore(loop)
    if world.active:
        distributed.broadcast_state(job.modules)          # the same start on every rank
        loop.ctx.ddp = job.distribute(lambda m: _ddp(m, device), world)
    loop.last_checkpoint = time.monotonic()
    with _SigintFlag() as sigint:
        while not loop.pos["done"]:
            generator.set_state(loop.epoch_generator_state)
            batches = job.epoch_batches(loop.pos["epoch"], generator)
            total_steps = None if settings.epochs is None else settings.epochs * len(batches)
            sums, budget_hit = _run_epoch(loop, batches, sigint)
            record = _epoch_record(loop, sums, total_steps)
            if record is not None:
                loop.history.append(record)
                if settings.progress and loop.main:
                    print("  ".join(f"{k} {_fmt(v)}" for k, v in record.items()), file=sys.stderr, flush=True)
            pos = loop.pos
            finished = budget_hit or (settings.epochs is not None and pos["epoch"] + 1 >= settings.epochs) or (
                settings.time_budget is not None and pos["train_seconds"] >= settings.time_budget) or (
                record is not None and job.should_stop())
            pos.update(epoch=pos["epoch"] + 1, batch=0, sums={}, count=0)
            loop.epoch_generator_state = generator.get_state()
            loop.save(done=finished)
            loop.last_checkpoint = time.monotonic()
            if on_epoch is not None and loop.main:
                on_epoch(loop.history)
    return loop.history


def _ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel, its buffers (BatchNorm statistics) left to each rank
    during an epoch: the engine hands rank 0's to all at each epoch's end."""
    import inspect
    ddp = torch.nn.parallel.DistributedDataParallel
    option = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
              else "broadcast_buffers")   # the newer name (torch 2.13); the older one before
    return ddp(module, device_ids=[device.index] if device.type == "cuda" else None, **{option: False})


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
