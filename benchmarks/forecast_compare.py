"""Forecasting on every built-in series and panel: lstm, rnn and mlp against the statistical
baselines — the gold standard (naive2, auto-ets, auto-arima, auto-theta, comb, and mstl for long or
several seasons) and the older ones (naive, seasonal-naive, drift, ets, arima, theta) — through
`deepskeptic compare forecast` (rolling-origin backtest; MASE, sMAPE and M4's OWA against Naive2).

    .venv/bin/python benchmarks/forecast_compare.py [--datasets nile,us-macro] [--seeds 3] [--models a,b]
                                                   [--epochs 60] [--origins 12] [--fit-jobs 0] [--jobs 2]
                                                   [--out runs/bench-forecast]
    .venv/bin/python benchmarks/forecast_compare.py --datasets fertility:100,synthetic-100   # 100-series panels
    .venv/bin/python benchmarks/forecast_compare.py --scaling auto-ets,comb --sizes 10,100,1000 [--origins 4]
                                                   [--fit-jobs 0]

--datasets takes built-in series and panels, ``PANEL:N`` (the first N series of a built-in panel,
written to a long CSV; its built-in horizon kept), ``synthetic-N`` (N synthetic monthly series, as
--scaling uses) and CSV paths.

Goals (issues 3 and 15): on single series lstm beats seasonal-naive everywhere and is no worse than
the best statistical baseline on half of them; on a panel the global lstm beats comb and auto-ets on
aggregate OWA by more than the seed spread; one series' comparison under 3 minutes and a 100-series
panel's under 10 minutes on 2 CPU cores; the baselines' fitting time linear in the number of series
(--scaling: one baseline on synthetic monthly panels of each size, timed end to end).

--scaling fits every series at every origin, so its cost is series x (origins + 1) fits (the last
one: past the end). It uses 4 origins unless --origins says otherwise: the time per fit does not
depend on the origin, and 12 origins of auto-ets on 1,000 series are 13,000 fits (about 9 minutes on
2 cores at ~0.08 s a fit, measured on a busy machine), 4 origins 5,000. auto-arima is ~1.3 s a fit on
these series (seasonal, 120 months): time it on --sizes 10,100 only. --fit-jobs defaults to 0 there
(one process per core): the baselines' parallel fitting is what is being timed.

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
    argument, flags, panel = data_argument(data, out.parent / "_data")
    args = [sys.executable, "-m", "deepskeptic", "compare", "forecast", "--data", argument, "--seeds", str(seeds),
            "--out", str(out), "--no-progress", *flags, *extra]
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
    result = {"data": data, "panel": panel, "seeds": seeds, "wall_seconds": round(wall, 1), "models": table,
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


SYNTHETIC_MONTHS = 120   # ten years a series: the length of a typical M4 monthly series' training part
SCALING_ORIGINS = 4      # --scaling's default origins (see the module's docstring)


def synthetic_panel(n: int, path: Path) -> Path:
    """A long CSV of ``n`` synthetic monthly series of SYNTHETIC_MONTHS each: a trend, a season of
    its own amplitude and phase, and noise (the same file for the same n)."""
    import numpy as np
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    t = np.arange(SYNTHETIC_MONTHS)
    rows = ["unique_id,ds,y"]
    for i in range(n):
        y = (50 + rng.uniform(0, 0.5) * t + rng.uniform(1, 10) * np.sin(2 * np.pi * t / 12 + rng.uniform(0, 6))
             + rng.normal(0, 1, SYNTHETIC_MONTHS))
        rows += [f"s{i},{2000 + k // 12}-{k % 12 + 1:02d}-01,{v:.4f}" for k, v in enumerate(y)]
    path.write_text("\n".join(rows) + "\n")
    return path


def panel_slice(name: str, n: int, path: Path) -> tuple[Path, int]:
    """The first ``n`` series of the built-in panel ``name`` as a long CSV (unique_id, ds, y), and
    its built-in horizon (a CSV would get its frequency's default instead)."""
    import csv
    import pandas as pd
    from deepskeptic.data.panel import load_panel
    panel = load_panel(name)
    if not 1 <= n <= len(panel):
        raise SystemExit(f"{name}:{n}: the panel {name} has {len(panel)} series; ask for 1 to {len(panel)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["unique_id", "ds", "y"])
        for series in panel.series[:n]:
            times = pd.date_range(series.start, periods=len(series), freq=series.freq)
            writer.writerows([series.name, t.strftime("%Y-%m-%d"), repr(float(v))] for t, v in zip(times, series.values))
    return path, panel.horizon


def data_argument(data: str, folder: Path) -> tuple[str, list[str], bool]:
    """What compare gets as --data for one --datasets item, flags it needs, and whether it is a
    panel: a built-in or a path as given; ``PANEL:N`` and ``synthetic-N`` written as CSV files."""
    from deepskeptic.data.panel import PANELS
    if data.startswith("synthetic-") and data[len("synthetic-"):].isdigit():
        return str(synthetic_panel(int(data[len("synthetic-"):]), folder / f"{data}.csv")), [], True
    name, _, count = data.partition(":")
    if name in PANELS and count.isdigit():
        path, horizon = panel_slice(name, int(count), folder / f"{name}-{count}.csv")
        return str(path), ["--horizon", str(horizon)], True
    if count:
        raise SystemExit(f"--datasets item {data!r}: NAME:N takes a built-in panel ({', '.join(PANELS)}) "
                         "and a whole number of series")
    from deepskeptic.data.panel import wants_panel
    return data, [], data in PANELS or wants_panel(data, id_col=None, target=None)


def scaling(models: list[str], sizes: list[int], out: Path, fit_jobs: int, origins: int) -> list[dict]:
    """Each baseline on synthetic monthly panels of ``sizes`` series (SYNTHETIC_MONTHS each),
    timed end to end: `train forecast --data panel.csv --model M --origins K`; fit seconds are
    the run's train_seconds (every series' fits at every origin, in ``fit_jobs`` processes)."""
    results = []
    for n in sizes:
        path = synthetic_panel(n, out / f"panel-{n}.csv")
        for model in models:
            run = out / f"{model}-{n}-origins{origins}"
            if run.exists():        # a fresh run each time: a finished one would not be timed again
                import shutil
                shutil.rmtree(run)
            args = [sys.executable, "-m", "deepskeptic", "train", "forecast", "--data", str(path), "--model", model,
                    "--origins", str(origins), "--fit-jobs", str(fit_jobs), "--out", str(run), "--no-progress"]
            start = time.perf_counter()
            subprocess.run(args, check=True, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL)
            fit = json.loads((run / "metrics.json").read_text())["train_seconds"]
            row = {"model": model, "series": n, "origins": origins, "fit_seconds": round(fit, 2),
                   "ms_per_series_origin": round(1000 * fit / (n * origins), 2),
                   "wall_seconds": round(time.perf_counter() - start, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def main() -> None:
    from deepskeptic.data.panel import PANELS
    from deepskeptic.data.series import BUILTINS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join([*BUILTINS, *PANELS]),
                        help="comma-separated (default: every built-in series and panel); also PANEL:N (its first "
                             "N series), synthetic-N (N synthetic monthly series) and CSV paths")
    parser.add_argument("--models", help="comma-separated (default: compare's for each data set)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="network epochs (default: the task's)")
    parser.add_argument("--origins", type=int, help="backtest origins (default: the task's 12; --scaling: "
                        f"{SCALING_ORIGINS}); more origins make the test span longer and the comparison less noisy")
    parser.add_argument("--fit-jobs", type=int, help="processes per baseline fit (compare's --fit-jobs; 0: every core; "
                        "--scaling's default)")
    parser.add_argument("--jobs", type=int, help="runs at once (compare's --jobs)")
    parser.add_argument("--scaling", help="instead: time these baselines on synthetic panels of --sizes series")
    parser.add_argument("--sizes", default="10,100,1000", help="panel sizes for --scaling")
    parser.add_argument("--out", default="runs/bench-forecast", help="one comparison folder per data set inside")
    args = parser.parse_args()
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.scaling:
        origins = args.origins or SCALING_ORIGINS
        fit_jobs = 0 if args.fit_jobs is None else args.fit_jobs
        rows = scaling([m.strip() for m in args.scaling.split(",") if m.strip()],
                       [int(s) for s in args.sizes.split(",")], Path(args.out) / "scaling", fit_jobs, origins)
        print(f"\nFit time by panel size, {origins} origins, --fit-jobs {fit_jobs} ({machine}):\n\n"
              "| model | series | fit s | ms per series and origin | wall s |\n| --- | --- | --- | --- | --- |")
        for r in rows:
            print(f"| {r['model']} | {r['series']} | {r['fit_seconds']:.1f} | {r['ms_per_series_origin']:.1f} | "
                  f"{r['wall_seconds']} |")
        print("\nLinear in the series where the added time per added series stays the same (the fit seconds "
              "also hold a fixed cost: the library's import and the worker processes' start):")
        for model in dict.fromkeys(r["model"] for r in rows):
            mine = [r for r in rows if r["model"] == model]
            steps = [f"{a['series']} -> {b['series']}: {1000 * (b['fit_seconds'] - a['fit_seconds']) / (b['series'] - a['series']):.1f} ms"
                     for a, b in zip(mine, mine[1:]) if b["series"] != a["series"]]
            if steps:
                print(f"- {model}, added fit time per added series: " + "; ".join(steps))
        return
    extra = []
    for flag, value in (("--models", args.models), ("--epochs", args.epochs), ("--origins", args.origins),
                        ("--fit-jobs", args.fit_jobs), ("--jobs", args.jobs)):
        if value is not None:
            extra += [flag, str(value)]
    results = []
    for data in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        result = compare(data, args.seeds, Path(args.out) / Path(data).name.replace(":", "-"), extra)
        print(json.dumps(result), flush=True)
        results.append(result)
    print(f"\nOver the last {args.origins or 12} origins (mean ± std over {args.seeds} seeds for networks; panels: the "
          f"mean over their series, OWA from those means), {machine}:")
    print(markdown(results))
    single = [r for r in results if not r["panel"] and "lstm_beats_seasonal_naive" in r]
    if single:
        print(f"\nlstm beats seasonal-naive on {sum(r['lstm_beats_seasonal_naive'] for r in single)} of {len(single)} "
              f"single series and is no worse than the best statistical baseline on "
              f"{sum(r.get('lstm_no_worse_than_best', False) for r in single)}.")
    for r in results:
        if r["panel"] and "lstm_owa_beats_comb" in r:
            print(f"{r['data']}: the global lstm beats comb on OWA beyond its spread: {r['lstm_owa_beats_comb']}; "
                  f"auto-ets: {r.get('lstm_owa_beats_auto-ets')}.")


if __name__ == "__main__":
    main()
