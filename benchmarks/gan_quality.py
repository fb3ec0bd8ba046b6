"""GAN quality on Fashion-MNIST: dcgan against mlp-gan, and cyclegan against the identity, same
budget and seeds, through `deepskeptic compare`.

    .venv/bin/python benchmarks/gan_quality.py [--budget 600] [--seeds 3] [--device cpu] [--only gan]

Goals (issue 5), on a 2-core CPU with --budget 600: dcgan's FD at most half of mlp-gan's (mean over
3 seeds), with its ratio to the floor recorded; cyclegan on fashion:sneaker~ankle-boot: >= 90 % of
translations recognised as the target domain. This takes about 2 x 3 x 10 minutes per task plus
judges and evaluation (over an hour for both): run it on a quiet machine, the budget is wall-clock
training time. Prints one JSON line per task and a markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TASKS = {
    "gan": {"data": "fashion-mnist", "models": "mlp-gan,dcgan",
            "keys": ("fd", "fd_floor", "fd_ratio", "precision", "recall", "classes_covered", "memorisation_ratio")},
    "cyclegan": {"data": "fashion:sneaker~ankle-boot", "models": "identity,cyclegan",
                 "keys": ("target_share", "target_share_a2b", "target_share_b2a", "fd", "fd_floor", "cycle_error")},
}


def compare(task: str, budget: float, seeds: int, device: str, out: Path) -> dict:
    spec = TASKS[task]
    subprocess.run([sys.executable, "-m", "deepskeptic", "compare", task, "--data", spec["data"],
                    "--models", spec["models"], "--seeds", str(seeds), "--time-budget", str(budget),
                    "--device", device, "--out", str(out), "--no-progress"], check=True, cwd=ROOT)
    summary = json.loads((out / "summary.json").read_text())
    rows = {}
    for model, s in summary["models"].items():
        metrics = [json.loads((Path(r) / "metrics.json").read_text()) for r in s["runs"]]
        row = {"params": s["params"], "train_seconds": s["train_seconds_mean"], "device": metrics[0]["device"]}
        for key in spec["keys"]:
            values = [m[key] for m in metrics]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)) ** 0.5
            row[key] = {"mean": mean, "std": std}
        rows[model] = row
    return {"task": task, "data": spec["data"], "budget": budget, "seeds": seeds, "models": rows,
            "verdicts": summary["verdicts"], "folder": str(out)}


def markdown(result: dict) -> str:
    keys = TASKS[result["task"]]["keys"]
    lines = [f"| model | {' | '.join(keys)} | params |", "|" + " --- |" * (len(keys) + 2)]
    for model, row in result["models"].items():
        cells = [f"{row[k]['mean']:.4g} ± {row[k]['std']:.2g}" for k in keys]
        lines.append(f"| {model} | {' | '.join(cells)} | {row['params']:,} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=600, help="seconds of training per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=sorted(TASKS))
    parser.add_argument("--out", default=f"runs/bench-gan-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()
    results = []
    for task in TASKS:
        if args.only and task != args.only:
            continue
        results.append(compare(task, args.budget, args.seeds, args.device, Path(args.out) / task))
        print(json.dumps(results[-1]), flush=True)
    for r in results:
        print(f"\n### {r['task']} on {r['data']}, --time-budget {r['budget']:g}, {r['seeds']} seeds, "
              f"{next(iter(r['models'].values()))['device']}\n\n{markdown(r)}\n")
        for v in r["verdicts"]:
            print(f"- {v}")


if __name__ == "__main__":
    main()
