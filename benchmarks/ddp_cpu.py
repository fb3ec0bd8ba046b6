"""DDP on this CPU: 2 gloo processes x 1 thread against 1 process x 2 threads, the same global batch.

    .venv/bin/python benchmarks/ddp_cpu.py [--data fashion-mnist] [--model cnn] [--epochs 3]
                                           [--procs 2] [--seed 0]

Issue 14: the final test accuracy of the two (equal within the seed spread) and the images per
second of training of each (from history.jsonl: the train_seconds the engine counts, so data
loading and evaluation are left out; under DDP the slowest rank's clock). Run on a quiet machine.
Prints one JSON line per configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return time.perf_counter() - start


def summary(run_dir: Path, label: str, wall: float) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    config = json.loads((run_dir / "config.json").read_text())
    per_epoch = [h["img_per_second"] for h in history]
    return {"config": label, "test_accuracy": metrics["test_accuracy"], "epochs": len(history),
            "train_seconds": round(history[-1]["train_seconds"], 2), "img_per_second_by_epoch": per_epoch,
            "wall_seconds": round(wall, 1), "world_size": config.get("world_size", 1),
            "global_batch": config["settings"]["batch_size"], "threads": config["threads"]["chosen"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    common = ["train", "image", "--data", args.data, "--model", args.model, "--epochs", str(args.epochs),
              "--seed", str(args.seed), "--no-progress"]
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        one = run([sys.executable, "-m", "deepskeptic", *common, "--threads", str(args.procs), "--out", "one"],
                  env, where)
        print(json.dumps(summary(where / "one", f"1 process x {args.procs} threads", one)), flush=True)
        ddp_env = dict(env, OMP_NUM_THREADS="1")
        many = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                    str(args.procs), "-m", "deepskeptic", *common, "--out", "ddp"], ddp_env, where)
        print(json.dumps(summary(where / "ddp", f"{args.procs} gloo processes x 1 thread", many)), flush=True)


if __name__ == "__main__":
    main()
