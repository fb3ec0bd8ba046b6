"""Fashion-MNIST: deepskeptic's cnn and mlp against the plain reference script, same budgets, side by side.

    .venv/bin/python benchmarks/image_fashion_mnist.py [--seed 0] [--device cpu] [--only cnn]

Targets on a 2-core CPU (issue 2): cnn with --time-budget 60 >= 92.0 % test accuracy, mlp with
--time-budget 15 >= 89.5 %. Prints one JSON line per run and a table at the end. Run on a quiet
machine: the budget is wall-clock training time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "plain_fashion_mnist.py"
BUDGETS = {"cnn": 60, "mlp": 15}


def deepskeptic(model: str, budget: float, seed: int, device: str, out: Path) -> dict:
    subprocess.run([sys.executable, "-m", "deepskeptic", "train", "image", "--data", "fashion-mnist",
                    "--model", model, "--time-budget", str(budget), "--seed", str(seed), "--device", device,
                    "--out", str(out), "--no-progress"], check=True, cwd=ROOT)
    m = json.loads((out / "metrics.json").read_text())
    return {"who": "deepskeptic", "model": model, "budget": budget, "epochs": m["epochs"],
            "train_seconds": m["train_seconds"], "test_accuracy": m["test_accuracy"], "device": m["device"]}


def reference(model: str, budget: float, seed: int) -> dict:
    out = subprocess.run([sys.executable, str(REFERENCE), "--model", model, "--time-budget", str(budget),
                          "--seed", str(seed)], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"who": "reference", "budget": budget, **result}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=sorted(BUDGETS))
    parser.add_argument("--budget", type=float, help="override the budget (e.g. 5 for cnn on a GPU)")
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, budget in BUDGETS.items():
            if args.only and model != args.only:
                continue
            budget = args.budget or budget
            rows.append(deepskeptic(model, budget, args.seed, args.device, Path(tmp) / model))
            print(json.dumps(rows[-1]), flush=True)
            if not args.no_reference and REFERENCE.is_file() and args.device == "cpu":
                rows.append(reference(model, budget, args.seed))
                print(json.dumps(rows[-1]), flush=True)
    print(f"{'who':<12} {'model':<5} {'budget':>6} {'epochs':>6} {'accuracy':>8}")
    for r in rows:
        print(f"{r['who']:<12} {r['model']:<5} {r['budget']:>6} {r['epochs']:>6} {r['test_accuracy']:>8.4f}")


if __name__ == "__main__":
    main()
