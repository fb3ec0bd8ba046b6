"""Using a finished speech run: evaluate it on data, and recognise audio files."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from deepskeptic.data.audio import AUDIO_EXTENSIONS, FeatureSettings, audio_files, features_of_files
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks import speech_eval


def evaluate(task, run: Run, data: str | None) -> dict[str, Any]:
    device = torch.device("cpu")
    model, info = task.load_model(run, device)
    settings = {**run.config["settings"], "limit": None, "progress": False}
    if data is not None:
        settings["data"] = data
    prepared = task.prepare(settings)
    d = prepared.data
    labels = info["labels"]
    if labels is not None:
        unknown = sorted({d.transcripts[i] for i in d.splits["test"].tolist()} - set(labels))
        if unknown:
            raise UserError(f"{len(unknown)} test transcript(s) of {settings['data']} are not among the run's "
                            f"{len(labels)} words (e.g. '{unknown[0]}'): evaluate on data with the same words")
    else:
        from deepskeptic.tasks.speech_text import check_vocabulary
        check_vocabulary(d.transcripts, d.origins)
    metrics, _ = speech_eval.test_metrics(model, d, device, labels, beam=settings["beam"])
    return {"data": str(settings["data"]), **metrics}


def input_files(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for s in inputs:
        p = Path(s).expanduser()
        if not p.exists():
            raise UserError(f"input '{s}' does not exist: give audio files or a folder of them")
        files += audio_files(p) if p.is_dir() else [p]
    if not files:
        raise UserError(f"no audio files found in {', '.join(inputs)} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
    return files


def predict(task, run: Run, args: argparse.Namespace) -> int:
    if not args.inputs:
        raise UserError("name at least one audio file (WAV, FLAC or OGG) or a folder of them to recognise")
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    device = torch.device("cpu")
    files = input_files(args.inputs)
    model, info = task.load_model(run, device)
    feats, _ = features_of_files(files, FeatureSettings(**info["features"]))
    out = speech_eval.outputs(model, feats, device)
    rows = speech_eval.decode(out, info["labels"], beam=run.config["settings"]["beam"])
    results = []
    for path, o, row in zip(files, out, rows):
        result: dict[str, Any] = {"file": str(path), "transcript": row["hypothesis"],
                                  "confidence": round(row["confidence"], 5)}
        if info["labels"] is not None:
            probs = o.softmax(-1)
            top = probs.topk(min(args.top_k, len(probs)))
            result["top"] = [{"word": info["labels"][int(c)], "probability": round(float(p), 5)}
                             for p, c in zip(top.values, top.indices)]
        else:
            result["greedy"] = row["greedy"]
        results.append(result)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            extra = ("  (" + ", ".join(f"{t['word']} {t['probability']:.3f}" for t in r["top"][1:]) + ")"
                     if len(r.get("top", [])) > 1 else "")
            print(f"{r['file']}: {r['transcript'] or '(nothing)'}  confidence {r['confidence']:.3f}{extra}")
    return 0
