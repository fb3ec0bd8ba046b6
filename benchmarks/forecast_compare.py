"""Forecasting on every built-in series and panel: lstm, rnn and mlp against the statistical
baselines — the gold standard (naive2, auto-ets, auto-arima, auto-theta, comb, and mstl for long or
several seasons) and the older ones (naive, seasonal-naive, drift, ets, arima, theta) — through
`deepskeptic compare forecast` (rolling-origin backtest; MASE, sMAPE and M4's OWA against Naive2).

    .venv/bin/python benchmarks/forecast_compare.py [--datasets nile,us-macro] [--seeds 3] [--models a,b]
                                                   [--epochs 60] [--origins 12] [--fit-jobs 0] [--jobs 2]
                                                   [--out runs/bench-forecast]
    .venv/bin/python benchmarks/forecast_compare.py --scaling auto-ets,comb --sizes 10,100,1000 [--fit-jobs 2]

Goals (issues 3 and 15): on single series lstm beats seasonal-naive everywhere and is no worse than
the best statistical baseline on half of them; on a panel the global lstm beats comb and auto-ets on
aggregate OWA by more than the seed spread; one series' comparison under 3 minutes and a 100-series
panel's under 10 minutes on 2 CPU cores; the baselines' fitting time linear in the number of series
(--scaling: one baseline on synthetic monthly panels of each size, timed end to end).

Each comparison is timed from start to end (data, every fit and training run, reports). Run it on a
quiet machine: timings on busy cores are not comparable. Prints one JSON line per data set and a
markdown table for BENCHMARKS.md; an existing comparison folder is reused (finished runs are kept),
so pass a fresh --out to re-measure time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

NETWORKS = ("mlp", "rnn", "lstm")
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def compare(data: str, seeds: int, out: Path, extra: list[str]) -> dict:
    from deepskeptic.models import registry
    args = [sys.executable, "-m", "deepskeptic", "compare", "forecast", "--data", data, "--seeds", str(seeds),
            "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(args, check=True, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    table = {}
    for m, s in summary["models"].items():
        runs = [json.loads((Path(r) / "metrics.json").read_text()) for r in s["runs"]]
        row = {"role": "statistical" if registry.spec("forecast", m).one_step else s["role"],
               "seconds": s["train_seconds_mean"]}
        for key in ("test_mase", "test_smape", "test_owa"):
            values = [r[key] for r in runs if r.get(key) is not None]
            row[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else None
        table[m] = row
    stats = [m for m, r in table.items() if r["role"] == "statistical"]
    best = min(stats, key=lambda m: table[m]["test_mase"][0]) if stats else None
    best_owa = min((m for m in stats if table[m]["test_owa"]), key=lambda m: table[m]["test_owa"][0], default=None)
    lstm = table.get("lstm")
    result = {"data": data, "seeds": seeds, "wall_seconds": round(wall, 1), "models": table,
              "best_statistical": best, "best_statistical_owa": best_owa, "verdicts": summary["verdicts"],
              "folder": str(out)}
    if lstm and "seasonal-naive" in table:
        result["lstm_beats_seasonal_naive"] = lstm["test_mase"][0] < table["seasonal-naive"]["test_mase"][0]
    if lstm and best:
        result["lstm_no_worse_than_best"] = lstm["test_mase"][0] <= table[best]["test_mase"][0]
    if lstm and lstm["test_owa"]:
        for ref in ("comb", "auto-ets"):
            if table.get(ref, {}).get("test_owa"):
                gap = table[ref]["test_owa"][0] - lstm["test_owa"][0]
                result[f"lstm_owa_beats_{ref}"] = gap > lstm["test_owa"][1]
    return result


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        lines += [f"\n**{r['data']}** (wall {r['wall_seconds']} s; best statistical by MASE: {r['best_statistical']}, "
                  f"by OWA: {r['best_statistical_owa']})\n",
                  "| model | kind | MASE | sMAPE % | OWA | fit/train s |", "| --- | --- | --- | --- | --- | --- |"]
        for m, row in sorted(r["models"].items(), key=lambda kv: kv[1]["test_mase"][0]):
            def cell(key, digits):
                if row[key] is None:
                    return ""
                mean, std = row[key]
                return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if m in NETWORKS else "")
            lines.append(f"| {m} | {row['role']} | {cell('test_mase', 3)} | {cell('test_smape', 2)} | "
                         f"{cell('test_owa', 3)} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def scaling(models: list[str], sizes: list[int], out: Path, fit_jobs: int) -> list[dict]:
    """Each baseline on synthetic monthly panels of ``sizes`` series (120 months each, trend, season
    and noise of their own), timed end to end: `train forecast --data panel.csv --model M`."""
    import numpy as np
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in sizes:
        path = out / f"panel-{n}.csv"
        if not path.is_file():
            rng = np.random.default_rng(n)
            t = np.arange(120)
            rows = ["unique_id,ds,y"]
            for i in range(n):
                y = (50 + rng.uniform(0, 0.5) * t + rng.uniform(1, 10) * np.sin(2 * np.pi * t / 12 + rng.uniform(0, 6))
                     + rng.normal(0, 1, 120))
                rows += [f"s{i},{2000 + k // 12}-{k % 12 + 1:02d}-01,{v:.4f}" for k, v in enumerate(y)]
            path.write_text("\n".join(rows) + "\n")
        for model in models:
            args = [sys.executable, "-m", "deepskeptic", "train", "forecast", "--data", str(path), "--model", model,
                    "--fit-jobs", str(fit_jobs), "--out", str(out / f"{model}-{n}"), "--no-progress"]
            start = time.perf_counter()
            subprocess.run(args, check=True, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
            row = {"model": model, "series": n, "wall_seconds": round(time.perf_counter() - start, 1),
                   "fit_seconds": json.loads((out / f"{model}-{n}" / "metrics.json").read_text())["train_seconds"]}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> None:
    from deepskeptic.data.panel import PANELS
    from deepskeptic.data.series import BUILTINS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join([*BUILTINS, *PANELS]),
                        help="comma-separated (default: every built-in series and panel)")
    parser.add_argument("--models", help="comma-separated (default: compare's for each data set)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="network epochs (default: the task's)")
    parser.add_argument("--origins", type=int, help="backtest origins (default: the task's 12); more origins "
                        "make the test span longer and the comparison less noisy")
    parser.add_argument("--fit-jobs", type=int, help="processes per baseline fit (compare's --fit-jobs; 0: every core)")
    parser.add_argument("--jobs", type=int, help="runs at once (compare's --jobs)")
    parser.add_argument("--scaling", help="instead: time these baselines on synthetic panels of --sizes series")
    parser.add_argument("--sizes", default="10,100,1000", help="panel sizes for --scaling")
    parser.add_argument("--out", default="runs/bench-forecast", help="one comparison folder per data set inside")
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.scaling:
        rows = scaling(args.scaling.split(","), [int(s) for s in args.sizes.split(",")], Path(args.out) / "scaling",
                       args.fit_jobs or 1)
        print(f"\nFit time by panel size ({machine}):\n\n| model | series | fit s | wall s |\n| --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['model']} | {r['series']} | {r['fit_seconds']:.1f} | {r['wall_seconds']} |")
        return
    extra = []
    for flag, value in (("--models", args.models), ("--epochs", args.epochs), ("--origins", args.origins),
                        ("--fit-jobs", args.fit_jobs), ("--jobs", args.jobs)):
        if value is not None:
            extra += [flag, str(value)]
    results = []
    for data in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = compare(data, args.seeds, Path(args.out) / data, extra)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\nOver the last {args.origins or 12} origins (mean ± std over {args.seeds} seeds for networks; panels: the "
          f"mean over their series, OWA from those means), {machine}:")
    print(markdown(results))
    single = [r for r in results if r["data"] in BUILTINS and "lstm_beats_seasonal_naive" in r]
    if single:
        print(f"\nlstm beats seasonal-naive on {sum(r['lstm_beats_seasonal_naive'] for r in single)} of {len(single)} "
              f"single series and is no worse than the best statistical baseline on "
              f"{sum(r.get('lstm_no_worse_than_best', False) for r in single)}.")
    for r in results:
        if r["data"] in PANELS and "lstm_owa_beats_comb" in r:
            print(f"{r['data']}: the global lstm beats comb on OWA beyond its spread: {r['lstm_owa_beats_comb']}; "
                  f"auto-ets: {r.get('lstm_owa_beats_auto-ets')}.")


if __name__ == "__main__":
    main()
