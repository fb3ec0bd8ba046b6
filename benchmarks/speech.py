"""Speech benchmark for BENCHMARKS.md: voices never heard in training, mean ± std over seeds.

    python benchmarks/speech.py features            # feature extraction throughput (seconds)
    python benchmarks/speech.py digits              # lstm, mlp, cnn on spoken-digits, 300 s each, 3 seeds (~45 min)
    python benchmarks/speech.py strings             # lstm-ctc (and mlp-ctc) on spoken-digit-strings, 600 s each, 3 seeds
    python benchmarks/speech.py all --seeds 1 --budget-scale 0.1   # a quick look

Goals (issue 6): lstm >= 97 % accuracy on spoken-digits; lstm-ctc <= 5 % WER on spoken-digit-strings.
The first use synthesises the data sets into the cache (a minute or two each, espeak-ng).
Results are printed as Markdown rows and written to benchmarks/results/speech-<what>.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from deepskeptic.compare import run_comparison  # noqa: E402
from deepskeptic.data import spoken  # noqa: E402
from deepskeptic.data.audio import FeatureSettings, features_of_files, load_audio, log_mel  # noqa: E402
from deepskeptic.data.audio_sets import read_utterances  # noqa: E402
from deepskeptic.fileio import atomic_write_json  # noqa: E402
from deepskeptic.tasks import get_task  # noqa: E402
from deepskeptic.threads import one_thread  # noqa: E402


def features(n_files: int = 500) -> dict:
    """Seconds of audio per second: decoding + resampling + log-mel, and log-mel alone."""
    manifest = spoken.ensure("spoken-digits")
    paths = [u.path for u in read_utterances(str(manifest.parent))[0][:n_files]]
    start = time.perf_counter()
    _, seconds = features_of_files(paths, FeatureSettings())
    total = time.perf_counter() - start
    samples = [load_audio(p) for p in paths]
    with one_thread():
        start = time.perf_counter()
        for s in samples:
            log_mel(s)
        mel_only = time.perf_counter() - start
    return {"files": len(paths), "audio_seconds": round(seconds, 1),
            "decode_and_features_x_realtime": round(seconds / total, 1),
            "features_only_x_realtime": round(seconds / mel_only, 1)}


def compare(data: str, models: list[str], seeds: int, budget: float, out: Path) -> dict:
    task = get_task("speech")
    spoken.ensure(data)
    flags = {"data": data, "time_budget": budget, "progress": False}
    return run_comparison(task, flags, None, models, seeds, out)


def markdown(summary: dict, budget: float) -> list[str]:
    rows = []
    for model, s in summary["models"].items():
        wer_mean, wer_std = s["test_wer_mean"], s["test_wer_std"]
        rows.append(f"| {model} | {budget:.0f} s | {1 - wer_mean:.2%} ± {wer_std:.2%} | {wer_mean:.2%} ± {wer_std:.2%} | "
                    f"{s['params']:,} | {s['epochs_mean']:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["features", "digits", "strings", "all"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply the time budgets (quick looks)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-speech"))
    args = parser.parse_args()
    results: dict = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "espeak_ng": spoken.espeak_version(), "seeds": args.seeds}
    if args.what in ("features", "all"):
        results["features"] = features()
        print(f"feature extraction: {results['features']}")
    header = "| model | budget | accuracy (1 - WER) | WER | params | epochs |\n|---|---|---|---|---|---|"
    for what, data, models, budget in (("digits", "spoken-digits", ["lstm", "mlp", "cnn"], 300.0),
                                       ("strings", "spoken-digit-strings", ["lstm-ctc", "mlp-ctc"], 600.0)):
        if args.what not in (what, "all"):
            continue
        budget *= args.budget_scale
        summary = compare(data, models, args.seeds, budget, Path(args.out) / f"{what}-{time.strftime('%Y%m%d-%H%M%S')}")
        results[what] = summary
        print(f"\n{data}, {args.seeds} seed(s), voices never heard in training:\n{header}")
        print("\n".join(markdown(summary, budget)))
        for sentence in summary["verdicts"]:
            print(sentence)
    atomic_write_json(ROOT / "benchmarks" / "results" / f"speech-{args.what}.json", results)


if __name__ == "__main__":
    main()
