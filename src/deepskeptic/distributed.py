"""Several processes training one run: DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m deepskeptic train TASK ...`` starts N copies of the command;
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ...) tells each which one it
is. Each process (rank) prepares the same data and model (same seed), takes its share of every
batch of the same per-epoch order, and its gradients are averaged with the others' at each step:
by ``DistributedDataParallel`` for jobs whose step is one forward and one backward of one network,
and by an all-reduce of each optimizer's gradients for GANs (whose alternating steps freeze and
detach networks, which DDP's reducer does not allow). CUDA ranks talk over NCCL, one GPU each;
CPU ranks over gloo.

Only rank 0 writes: the run folder, history, checkpoints and the report. Validation runs on every
rank over the whole split (the weights are the same on all ranks, so are the numbers; early
stopping and best-weight choices agree without a message), and the test split is measured by
rank 0 alone after training. The time budget is one clock: each step the ranks agree on the
slowest rank's training seconds (and on Ctrl-C, a due checkpoint and a diverged loss), so all stop
at the same step.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deepskeptic.errors import UserError

TIMEOUT = datetime.timedelta(minutes=30)   # a rank waiting for another (data loading, evaluation)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not a whole number; "
                        "start several processes with torchrun, which sets it") from None


def from_environment() -> World:
    """The world torchrun describes in the environment (one process when it does not)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size or local < 0:
        raise UserError(f"torchrun's environment is inconsistent (RANK={rank}, WORLD_SIZE={size}, "
                        f"LOCAL_RANK={local}); start the processes with torchrun")
    return World(rank, size, local)


def setup(device_setting: str) -> tuple[World, torch.device | None]:
    """Join the process group when started by torchrun; returns the world and, under torchrun, this
    rank's device (CUDA: the GPU of its local rank). Outside torchrun: the single world and None."""
    world = from_environment()
    if not world.active:
        return world, None
    cuda = device_setting in ("auto", "cuda") and torch.cuda.is_available()
    if device_setting == "cuda" and not cuda:
        raise UserError("--device cuda was asked for but this machine has no usable CUDA GPU; use --device cpu")
    if cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"rank {world.rank} wants GPU {world.local_rank} but this machine has "
                            f"{torch.cuda.device_count()}; pass --nproc_per_node at most the number of GPUs")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return world, device


_alone = 0     # depth of ``alone()`` blocks


@contextlib.contextmanager
def alone():
    """Inside: this process works by itself (a run trained inside another run's preparation, such
    as a GAN's judge, is trained by rank 0 alone while the others wait)."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def current() -> World:
    """The world of the process group joined by ``setup`` (the single world outside one, or
    inside ``alone``)."""
    if _alone:
        return SINGLE
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), from_environment().local_rank)
    return SINGLE


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree_max(values: list[float]) -> list[float]:
    """Each value's maximum over the ranks (one message for all of them)."""
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_over_ranks(values: dict[str, torch.Tensor], count: int) -> tuple[dict[str, torch.Tensor], int]:
    """Per-key sums and the example count over all ranks (keys in the same order on every rank)."""
    keys = sorted(values)
    device = _reduce_device()
    t = torch.stack([values[k].detach().double().to(device).reshape(()) for k in keys]
                    + [torch.tensor(float(count), dtype=torch.float64, device=device)])
    dist.all_reduce(t)
    return {k: t[i].float().cpu() for i, k in enumerate(keys)}, int(round(t[-1].item()))


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the ranks, in one flat message (a missing gradient
    counts as zeros, so every rank sends the same shapes)."""
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).clone()
        offset += n


def broadcast_state(modules: dict[str, torch.nn.Module], buffers_only: bool = False) -> None:
    """Rank 0's parameters (unless ``buffers_only``) and buffers, on every rank."""
    for module in modules.values():
        tensors = list(module.buffers()) if buffers_only else [*module.parameters(), *module.buffers()]
        for t in tensors:
            dist.broadcast(t.data, src=0)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (a small picklable value: a path, a message; it travels
    between this run's own processes, never through a file)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (tensors moved to the CPU first)."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, _to_cpu(obj))
    return out


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def barrier() -> None:
    dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
