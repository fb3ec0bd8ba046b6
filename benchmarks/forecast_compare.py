"""Forecasting on every built-in series: lstm, rnn and mlp against naive, seasonal-naive, drift, ets,
arima and theta, through `deepskeptic compare forecast` (rolling-origin backtest, test MASE).

    .venv/bin/python benchmarks/forecast_compare.py [--datasets nile,us-gdp] [--seeds 3]
                                                   [--epochs 60] [--origins 12] [--out runs/bench-forecast]

Goals (issue 3): lstm beats seasonal-naive on every built-in data set and is no worse than the best
statistical baseline on at least half of them; one data set's full comparison (9 models, 3 seeds)
under 3 minutes on 2 CPU cores. Each data set's comparison is timed from start to end (data,
every fit and training run, reports). Run it on a quiet machine: timings on busy cores are not
comparable. Prints one JSON line per data set and a markdown table for BENCHMARKS.md; an existing
comparison folder is reused (finished runs are kept), so pass a fresh --out to re-measure time.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

STATISTICAL = ("naive", "seasonal-naive", "drift", "ets", "arima", "theta")
NETWORKS = ("mlp", "rnn", "lstm")


def compare(data: str, seeds: int, epochs: int | None, out: Path, origins: int | None = None) -> dict:
    args = [sys.executable, "-m", "deepskeptic", "compare", "forecast", "--data", data, "--seeds", str(seeds),
            "--out", str(out), "--no-progress"]
    if epochs is not None:
        args += ["--epochs", str(epochs)]
    if origins is not None:
        args += ["--origins", str(origins)]
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")},
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    mase = {m: (s["test_mase_mean"], s["test_mase_std"], s["train_seconds_mean"]) for m, s in models.items()}
    stats = [m for m in STATISTICAL if m in mase]
    best = min(stats, key=lambda m: mase[m][0])
    lstm = mase.get("lstm")
    return {"data": data, "seeds": seeds, "wall_seconds": round(wall, 1), "mase": mase, "best_statistical": best,
            "lstm_beats_seasonal_naive": bool(lstm and lstm[0] < mase["seasonal-naive"][0]),
            "lstm_no_worse_than_best": bool(lstm and lstm[0] <= mase[best][0]),
            "verdicts": summary["verdicts"], "folder": str(out)}


def markdown(results: list[dict]) -> str:
    models = [m for m in STATISTICAL + NETWORKS if any(m in r["mase"] for r in results)]
    lines = ["| data set | " + " | ".join(models) + " | best statistical | lstm < seasonal-naive | lstm <= best | wall s |",
             "|" + " --- |" * (len(models) + 5)]
    for r in results:
        cells = []
        for m in models:
            if m not in r["mase"]:
                cells.append("")
                continue
            mean, std, seconds = r["mase"][m]
            spread = f" ± {std:.2f}" if m in NETWORKS else ""
            cells.append(f"{mean:.3f}{spread} ({seconds:.1f} s)")
        lines.append(f"| {r['data']} | " + " | ".join(cells) + f" | {r['best_statistical']} | "
                     f"{'yes' if r['lstm_beats_seasonal_naive'] else 'no'} | "
                     f"{'yes' if r['lstm_no_worse_than_best'] else 'no'} | {r['wall_seconds']} |")
    return "\n".join(lines)


def main() -> None:
    from deepskeptic.data.series import BUILTINS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(BUILTINS), help="comma-separated (default: every built-in set)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="network epochs (default: the task's)")
    parser.add_argument("--origins", type=int, help="backtest origins (default: the task's 12); more origins "
                        "make the test span longer and the comparison less noisy")
    parser.add_argument("--out", default="runs/bench-forecast", help="one comparison folder per data set inside")
    args = parser.parse_args()
    results = []
    for data in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = compare(data, args.seeds, args.epochs, Path(args.out) / data, args.origins)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\nMASE over the last {args.origins or 12} origins (mean ± std over {args.seeds} seeds for networks; train seconds "
          f"in brackets), {platform.processor() or platform.machine()}, {platform.python_version()}:\n")
    print(markdown(results))
    if results:
        wins = sum(r["lstm_no_worse_than_best"] for r in results)
        print(f"\nlstm beats seasonal-naive on {sum(r['lstm_beats_seasonal_naive'] for r in results)} of "
              f"{len(results)} data sets and is no worse than the best statistical baseline on {wins}.")


if __name__ == "__main__":
    main()
