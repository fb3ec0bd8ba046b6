"""A finished speech run applied to audio: words (with the most likely others) or transcripts, and
the test metrics again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from deepskeptic.data.audio import (AUDIO_EXTENSIONS, FeatureSettings, audio_files, features_of_files,
                                    features_of_waveforms)
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.base import PredictOptions, Predictor
from deepskeptic.tasks.speech.eval import decode, outputs, test_metrics
from deepskeptic.tasks.speech.text import check_vocabulary


def input_files(inputs: list[str]) -> list[Path]:
    """Audio files named or inside the folders named (sorted), each checked to exist."""
    files: list[Path] = []
    for s in inputs:
        p = Path(s).expanduser()
        if not p.exists():
            raise UserError(f"input '{s}' does not exist: give audio files or a folder of them")
        files += audio_files(p) if p.is_dir() else [p]
    if not files:
        raise UserError(f"no audio files found in {', '.join(inputs)} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
    return files


def _is_waveform(item: Any) -> bool:
    """A (samples, sample rate) pair."""
    return (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (int, np.integer))
            and not isinstance(item[1], bool))


class SpeechPredictor(Predictor):
    """The run's model (on the CPU by default), its feature settings, its words (classifiers; None
    for CTC recognisers) and its test-time beam width (config.json's data_info and settings)."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.info = run.config["data_info"]
        self.labels: list[str] | None = self.info["labels"]
        self.features = FeatureSettings(**self.info["features"])
        self.beam: int = run.config["settings"]["beam"]

    # --- inputs ---
    def read(self, paths: list[str]) -> tuple[list[torch.Tensor], list[str]]:
        """Audio files (folders: the audio files inside, sorted) -> ([(T_i, n_mels)] log-mel
        features as training computed them, the file paths)."""
        files = input_files(paths)
        feats, _ = features_of_files(files, self.features)
        return feats, [str(f) for f in files]

    def feature_list(self, inputs: Any, names: Sequence[str] | None = None) -> list[torch.Tensor]:
        """Decoded audio -> [(T_i, n_mels)] float features.

        ``inputs`` is a list whose items are (samples, sample rate) pairs — float samples in
        [-1, 1], shaped (S,) or (S, channels), at any rate: resampled and featurised exactly as
        audio files are — or already computed (T, n_mels) log-mel features (tensors or arrays, as
        ``read`` returns them); one (samples, sample rate) pair alone is one input."""
        if _is_waveform(inputs):
            inputs = [inputs]
        if not isinstance(inputs, (list, tuple)):
            raise UserError(f"speech inputs must be a list of (samples, sample_rate) pairs or of (frames, "
                            f"{self.features.n_mels}) features, not {type(inputs).__name__}")
        out: list[torch.Tensor] = []
        for i, item in enumerate(inputs):
            name = str(names[i]) if names is not None and i < len(names) else str(i)
            if _is_waveform(item):
                out += features_of_waveforms([item], self.features, names=[name])
                continue
            if not isinstance(item, (torch.Tensor, np.ndarray)):
                raise UserError(f"speech input {name} is a {type(item).__name__}: give a (samples, sample_rate) "
                                f"pair or (frames, {self.features.n_mels}) features")
            feats = torch.as_tensor(item)
            if (feats.ndim != 2 or feats.shape[1] != self.features.n_mels or len(feats) == 0
                    or not feats.is_floating_point()):
                raise UserError(f"speech input {name} is shaped {tuple(feats.shape)}: features must be float "
                                f"(frames, {self.features.n_mels}); give waveforms as (samples, sample_rate) pairs")
            out.append(feats.float().cpu())
        return out

    # --- the model ---
    def predict(self, inputs: Any, *, names: Sequence[str] | None = None, top_k: int = 3) -> list[dict[str, Any]]:
        """Per input: {"file": name, "transcript", "confidence"} and, for word classifiers, "top":
        the ``top_k`` most likely words [{"word", "probability"}], or, for CTC recognisers,
        "greedy": the greedy transcript (the transcript is the beam search's, at the run's
        width). Numbers are rounded to 5 places; names default to "0", "1", ..."""
        if top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        feats = self.feature_list(inputs, names)
        names = [str(i) for i in range(len(feats))] if names is None else [str(n) for n in names]
        if len(names) != len(feats):
            raise UserError(f"{len(names)} names for {len(feats)} inputs")
        out = outputs(self.model, feats, self.device)
        rows = decode(out, self.labels, beam=self.beam)
        results = []
        for name, o, row in zip(names, out, rows):
            result: dict[str, Any] = {"file": name, "transcript": row["hypothesis"],
                                      "confidence": round(row["confidence"], 5)}
            if self.labels is not None:
                probs = o.softmax(-1)
                top = probs.topk(min(top_k, len(probs)))
                result["top"] = [{"word": self.labels[int(c)], "probability": round(float(p), 5)}
                                 for p, c in zip(top.values, top.indices)]
            else:
                result["greedy"] = row["greedy"]
            results.append(result)
        return results

    def format(self, results: list[dict[str, Any]]) -> str:
        lines = []
        for r in results:
            extra = ("  (" + ", ".join(f"{t['word']} {t['probability']:.3f}" for t in r["top"][1:]) + ")"
                     if len(r.get("top", [])) > 1 else "")
            lines.append(f"{r['file']}: {r['transcript'] or '(nothing)'}  confidence {r['confidence']:.3f}{extra}")
        return "\n".join(lines)

    def predict_command(self, options: PredictOptions) -> list[dict[str, Any]]:
        if not options.inputs:
            raise UserError("name at least one audio file (WAV, FLAC or OGG) or a folder of them to recognise")
        return super().predict_command(options)

    # --- the test metrics ---
    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """The test metrics on the run's own test utterances, or on ``data``'s."""
        settings = {**self.run.config["settings"], "limit": None, "progress": False}
        if data is not None:
            settings["data"] = data
        d = self.task.prepare(settings).data
        labels = self.labels
        if labels is not None:
            unknown = sorted({d.transcripts[i] for i in d.splits["test"].tolist()} - set(labels))
            if unknown:
                raise UserError(f"{len(unknown)} test transcript(s) of {settings['data']} are not among the run's "
                                f"{len(labels)} words (e.g. '{unknown[0]}'): evaluate on data with the same words")
        else:
            check_vocabulary(d.transcripts, d.origins)
        metrics, _ = test_metrics(self.model, d, self.device, labels, beam=settings["beam"])
        return {"data": str(settings["data"]), **metrics}
