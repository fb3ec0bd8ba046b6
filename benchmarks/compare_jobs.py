"""`compare --jobs 2` against `--jobs 1`: the wall time of one comparison, and that its numbers agree.

    .venv/bin/python benchmarks/compare_jobs.py [--jobs 2] [--models logreg,mlp,cnn,alexnet]
                                                [--seeds 3] [--epochs 10] [--data digits]

Goal on a 2-core CPU (issue 14): wall-time ratio jobs-2 / jobs-1 <= 0.65. `--jobs 1` runs as a
user would run it (its own thread choice); with --same-threads it runs with OMP_NUM_THREADS set to
what each job gets (cores // jobs), and then the two comparisons' test accuracies must be equal
(the script exits 1 when they are not). Run on a quiet machine: it measures wall-clock time.
Prints one JSON line per comparison, then the ratio.
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


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def compare(args, jobs: int, threads: int | None, out: Path) -> dict:
    command = [sys.executable, "-m", "deepskeptic", "compare", "image", "--data", args.data,
               "--models", args.models, "--seeds", str(args.seeds), "--epochs", str(args.epochs),
               "--out", str(out), "--no-progress", "--jobs", str(jobs)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads is not None:  # --jobs 1 with the threads each job gets
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    metric = summary["metric"]
    shown = max(1, cores() // jobs) if jobs > 1 else (threads or "its own choice")
    return {"jobs": jobs, "threads_per_run": shown, "wall_seconds": round(wall, 2),
            "train_seconds_sum": round(sum(s["train_seconds_mean"] * len(s[f"{metric}_values"])
                                           for s in summary["models"].values()), 2),
            "values": {m: s[f"{metric}_values"] for m, s in summary["models"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data", default="digits")
    parser.add_argument("--models", default="logreg,mlp,cnn,alexnet")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--same-threads", action="store_true",
                        help="--jobs 1 on the threads each job gets, and check that the results are identical")
    args = parser.parse_args()
    threads = max(1, cores() // args.jobs)
    with tempfile.TemporaryDirectory() as tmp:
        one = compare(args, 1, threads if args.same_threads else None, Path(tmp) / "jobs1")
        print(json.dumps(one), flush=True)
        many = compare(args, args.jobs, None, Path(tmp) / f"jobs{args.jobs}")
        print(json.dumps(many), flush=True)
    ratio = many["wall_seconds"] / one["wall_seconds"]
    same = one["values"] == many["values"]
    print(f"wall time: --jobs 1 {one['wall_seconds']:.1f} s, --jobs {args.jobs} {many['wall_seconds']:.1f} s, "
          f"ratio {ratio:.2f} (goal <= 0.65 at 2 jobs on 2 cores); {cores()} core(s), {threads} thread(s) per job; "
          f"results {'identical' if same else 'different'}"
          + ("" if args.same_threads else " (--jobs 1 chose its own threads; --same-threads to check identity)"))
    if args.same_threads and not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
