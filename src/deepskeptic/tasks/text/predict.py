"""A finished text-classification run applied to texts: class probabilities, and the test metrics again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from deepskeptic.data.text import read_folder, read_text_file
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.base import PredictOptions, Predictor
from deepskeptic.tasks.common.classification import classification_metrics
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.text.data import load_reader, predict_logits, read_texts


class TextPredictor(Predictor):
    """The run's model (on the CPU by default), its reader (a character Vocab or the fitted n-gram
    vectorizer) and its classes."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.reader = load_reader(run)
        self.classes: list[str] = run.config["data_info"]["classes"]

    # --- inputs ---
    def read(self, paths: list[str]) -> tuple[list[str], list[str]]:
        """Text files (folders: every non-hidden file inside, sorted; binary files skipped), decoded
        with the run's --encoding -> (their texts, their paths)."""
        encoding = self.run.config["settings"].get("encoding")
        texts, names = [], []
        for p in paths:
            path = Path(p)
            if path.is_dir():
                docs, _ = read_folder(path, encoding)
                texts += [t for _, t in docs]
                names += [str(f) for f, _ in docs]
            else:
                texts.append(read_text_file(path, encoding))
                names.append(p)
        return texts, names

    # --- the model ---
    def logits(self, texts: list[str]) -> torch.Tensor:
        """(N, classes) logits of ``texts``, on the CPU."""
        return predict_logits(self.model, read_texts(self.run, self.reader, texts), self.device)

    def predict(self, inputs: Sequence[str], *, names: Sequence[str] | None = None,
                top_k: int = 3) -> list[dict[str, Any]]:
        """[{"text": text, "top": [{"class", "probability"}, ...]}] per text, the ``top_k`` most likely
        classes first (probabilities rounded to 5 places); with ``names``, each result starts with
        {"name": name}."""
        if isinstance(inputs, str):
            inputs = [inputs]
        texts = list(inputs)
        if not all(isinstance(t, str) for t in texts):
            raise UserError("texts to classify must be strings")
        if top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        if names is not None and len(names) != len(texts):
            raise UserError(f"{len(names)} names for {len(texts)} texts")
        if not texts:
            return []
        probs = self.logits(texts).softmax(1)
        top = probs.topk(min(top_k, len(self.classes)), dim=1)
        results = [{"text": t, "top": [{"class": self.classes[c], "probability": round(p, 5)}
                                       for p, c in zip(v.tolist(), i.tolist())]}
                   for t, v, i in zip(texts, top.values, top.indices)]
        if names is not None:
            results = [{"name": str(n), **r} for n, r in zip(names, results)]
        return results

    def format(self, results: list[dict[str, Any]]) -> str:
        lines = []
        for r in results:
            shown = r["text"] if len(r["text"]) <= 60 else r["text"][:57] + "..."
            lines.append(f"{shown!r}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
        return "\n".join(lines)

    def predict_command(self, options: PredictOptions) -> list[dict[str, Any]]:
        """`deepskeptic predict RUN "some text" ...`: the inputs are the texts themselves (blank
        ones dropped), not files."""
        texts = [t for t in options.inputs if t.strip()]
        if not texts:
            raise UserError('give the text to classify: deepskeptic predict RUN "some text" ["another text" ...]')
        return self.predict(texts, **self.predict_options(options))

    # --- the test metrics ---
    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """Test metrics on the run's own test documents, or on every document of ``data``."""
        settings = {**self.run.config["settings"], **({"data": data} if data else {})}
        d = self.task.prepare(settings).data
        classes = self.classes
        if data is None:
            texts, labels = d.texts["test"], d.labels["test"]
        else:
            unknown = sorted(set(d.classes) - set(classes))
            if unknown:
                raise UserError(f"{data} has classes the run never saw: {', '.join(unknown)}")
            texts = [t for split in ("train", "val", "test") for t in d.texts[split]]
            labels = [classes.index(d.classes[y]) for split in ("train", "val", "test") for y in d.labels[split]]
        metrics = prefixed(classification_metrics(self.logits(texts), torch.tensor(labels), classes), "test")
        return {"data": str(settings["data"]), "documents": len(texts), **metrics}
