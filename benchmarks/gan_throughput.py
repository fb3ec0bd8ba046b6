"""GAN training throughput on synthetic images, through the task's own training step.

  CycleGAN at 256x256 RGB: deepskeptic's defaults on CUDA (bf16 autocast, channels_last, batch 8;
  --batches 8,16,32 sweeps, --compile adds torch.compile) against the reference recipe (fp32 with
  PyTorch's default TF32 convolutions, contiguous NCHW, batch 1), same networks, same step;
  DCGAN at 64x64 RGB with the defaults. Prints one JSON line. On an H100 the whole run takes well
  under two minutes.

    PYTHONPATH=src python benchmarks/gan_throughput.py                     # CUDA
    PYTHONPATH=src python benchmarks/gan_throughput.py --device cpu --size 32 --dcgan-size 32 --seconds 2

"Images/s" for CycleGAN counts pairs (one image of each domain per step and batch element), as the
reference implementation counts its iterations. cudnn.benchmark is on for every configuration.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from deepskeptic.engine import StepContext
from deepskeptic.models import registry
from deepskeptic.tasks.cyclegan.jobs import CycleJob
from deepskeptic.tasks.gan.jobs import GanJob

CYCLE_SETTINGS = {"lr": 2e-4, "cycle_weight": 10.0, "identity_weight": 0.5, "jitter": True, "flip": True,
                  "pool_size": 50, "compile": False}
GAN_SETTINGS = {"lr": 2e-4, "objective": "ns", "d_steps": 1, "d_win_steps": 0, "compile": False}


def timed(job, ctx: StepContext, batches, warmup: int, seconds: float, device: torch.device) -> float:
    """Steps per second after ``warmup`` steps, for about ``seconds`` (at least 3 steps)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup):
        job.train_step(batches[i % len(batches)], ctx)
    sync()
    steps, start = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - start < seconds:
        job.train_step(batches[steps % len(batches)], ctx)
        steps += 1
        if steps % 5 == 0:
            sync()
    sync()
    return steps / (time.perf_counter() - start)


def cyclegan(device: torch.device, size: int, batch: int, amp: bool, channels_last: bool, warmup: int,
             seconds: float, compile_: bool = False) -> dict:
    torch.manual_seed(0)
    model = registry.create("cyclegan", "cyclegan", channels=3, image_size=size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = max(4 * batch, 16)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, device=device)
    job = CycleJob(model, images, images.roll(1, 0), {**CYCLE_SETTINGS, "batch_size": batch, "compile": compile_}, device)
    job.channels_last = channels_last
    batches = job.epoch_batches(0, torch.Generator().manual_seed(0))
    ctx = StepContext(device, job.optimizers, amp)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rate = timed(job, ctx, batches, warmup, seconds, device) * batch
    out = {"batch": batch, "dtype": "bf16" if amp and device.type == "cuda" else "fp32",
           "channels_last": channels_last, "compile": compile_, "images_per_s": round(rate, 2)}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    del job, model, images
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def dcgan(device: torch.device, size: int, batch: int, amp: bool, warmup: int, seconds: float) -> dict:
    torch.manual_seed(0)
    gan = registry.create("gan", "dcgan", channels=3, image_size=size).to(device)
    if device.type == "cuda":
        gan = gan.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch * 8, 3, size, size), dtype=torch.uint8, device=device)
    job = GanJob(gan, images, {**GAN_SETTINGS, "batch_size": batch}, device)
    batches = job.epoch_batches(0, torch.Generator().manual_seed(0))
    rate = timed(job, StepContext(device, job.optimizers, amp), batches, warmup, seconds, device) * batch
    return {"batch": batch, "dtype": "bf16" if amp and device.type == "cuda" else "fp32",
            "channels_last": device.type == "cuda", "images_per_s": round(rate, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=256, help="CycleGAN image side (256, the paper's)")
    p.add_argument("--batches", default="8", help="CycleGAN batch sizes for the fast recipe, comma-separated; "
                   "the first is the one the speedup uses (8: the cyclegan model's default)")
    p.add_argument("--dcgan-size", type=int, default=64)
    p.add_argument("--dcgan-batch", type=int, default=128, help="DCGAN batch (the paper's 128)")
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cudnn autotuning)")
    p.add_argument("--compile", action="store_true", help="also time the fast recipe with torch.compile")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    start = time.perf_counter()
    reference = cyclegan(device, args.size, 1, False, False, args.warmup, args.seconds)
    fast = [cyclegan(device, args.size, int(b), True, device.type == "cuda", args.warmup, args.seconds)
            for b in args.batches.split(",")]
    if args.compile:
        fast.append(cyclegan(device, args.size, int(args.batches.split(",")[-1]), True, device.type == "cuda",
                             args.warmup, args.seconds, compile_=True))
    best = max(fast, key=lambda r: r["images_per_s"])
    base = reference["images_per_s"]
    result = {
        "benchmark": "gan_throughput", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)", "torch": torch.__version__,
        f"cyclegan_{args.size}": {"reference": reference, "fast": fast,
                                  "speedup": round(fast[0]["images_per_s"] / base, 2),
                                  "best_speedup": round(best["images_per_s"] / base, 2)},
        f"dcgan_{args.dcgan_size}": dcgan(device, args.dcgan_size, args.dcgan_batch, True, args.warmup, args.seconds),
    }
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
