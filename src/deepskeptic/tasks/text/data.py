"""The text task's inputs: documents as padded character ids (lstm) or as n-gram count rows (mlp,
logreg), the prepared data that builds each reading once, and a finished run's reader.

Which reading a model gets is the registry's ``reads``: "chars" or "ngram-counts".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.data.text import Vocab
from deepskeptic.fileio import read_json
from deepskeptic.models import registry
from deepskeptic.runs import Run

TASK = "text"
READINGS = ("chars", "ngram-counts")
# config.json's data_info "reading" of each input form (the names runs have always recorded)
READING_NAMES = {"chars": "chars", "ngram-counts": "bag"}


def reads(model: str) -> str:
    """What the registered model ``model`` reads: "chars" or "ngram-counts"."""
    return registry.spec(TASK, model).reads


def truncate(text: str, max_len: int) -> str:
    """The part of a document the lstm reads: its first ``max_len`` characters; the rest of a
    longer document is not read. One rule for training, validation, test, predict and export (the
    export's sidecar states it), and the one every run before it was trained with, so a finished
    run's texts are read as it learnt them. Head rather than head + tail: a document's reading
    stays a prefix of its reading at a larger ``max_len``, and how much is read is ``max_len``'s
    choice, not the cut's."""
    return text[:max_len]


class CharInputs:
    """Documents as padded character ids: ids (N, max_len) int32 with 0 = padding, lengths (N,);
    each document cut by ``truncate`` (its first ``max_len`` characters), at least 1 long."""

    def __init__(self, texts: list[str], vocab, max_len: int):
        self.lengths = torch.tensor([max(1, min(len(t), max_len)) for t in texts], dtype=torch.long)
        self.ids = torch.zeros(len(texts), max(1, int(self.lengths.max()) if len(texts) else 1), dtype=torch.int32)
        for i, t in enumerate(texts):
            encoded = vocab.encode(truncate(t, max_len))
            self.ids[i, :len(encoded)] = encoded.int()

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        lengths = self.lengths[index]
        ids = self.ids[index, :int(lengths.max())].long()             # (B, longest in batch)
        return ids.to(device), lengths.to(device)


class BagInputs:
    """Documents as rows of a sparse n-gram count matrix, scaled by log(1 + count), unit length."""

    def __init__(self, matrix):
        from sklearn.preprocessing import normalize
        matrix = matrix.astype(np.float32)
        matrix.data = np.log1p(matrix.data)
        self.matrix = normalize(matrix, norm="l2").tocsr()
        self.lengths = torch.ones(self.matrix.shape[0], dtype=torch.long)

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def batch(self, index: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        rows = self.matrix[index.cpu().numpy()].toarray()              # (B, features)
        return (torch.from_numpy(rows).to(device),)


def make_vectorizer(ngram_max: int, max_features: int | None, vocabulary: dict | None = None, min_df: int = 2):
    from sklearn.feature_extraction.text import CountVectorizer
    return CountVectorizer(ngram_range=(1, ngram_max), lowercase=True, dtype=np.float32,
                           min_df=1 if vocabulary else min_df, max_features=None if vocabulary else max_features,
                           vocabulary=vocabulary)


@dataclass
class Prepared:
    data: Any                                   # deepskeptic.data.text.LabelledTexts
    settings: dict[str, Any]
    cache: dict = field(default_factory=dict)   # inputs per reading ('chars' / 'ngram-counts'), built once

    def y(self, split: str) -> torch.Tensor:
        return torch.tensor(self.data.labels[split], dtype=torch.long)

    def inputs(self, reading: str) -> dict[str, Any]:
        """{'train'/'val'/'test': inputs, 'vocab' or 'vectorizer': how texts were read}."""
        if reading not in self.cache:
            texts, s = self.data.texts, self.settings
            if reading == "chars":
                vocab = Vocab.from_text("".join(truncate(t, s["max_len"]) for t in texts["train"]),
                                        min_count=max(1, s["min_char_count"]), pad=True)
                out = {split: CharInputs(texts[split], vocab, s["max_len"]) for split in texts}
                out["vocab"] = vocab
            else:
                vectorizer = make_vectorizer(s["ngram_max"], s["max_features"])
                try:
                    train = vectorizer.fit_transform(texts["train"])
                except ValueError:  # every n-gram is too rare (tiny data): keep all of them
                    vectorizer = make_vectorizer(s["ngram_max"], s["max_features"], min_df=1)
                    train = vectorizer.fit_transform(texts["train"])
                out = {"train": BagInputs(train), "vectorizer": vectorizer,
                       **{split: BagInputs(vectorizer.transform(texts[split])) for split in ("val", "test")}}
            self.cache[reading] = out
        return self.cache[reading]


def load_reader(run: Run):
    """How a finished run reads texts: its Vocab (chars) or its fitted CountVectorizer (n-gram
    counts, from features.json)."""
    if reads(run.config["settings"]["model"]) == "chars":
        return Vocab.from_json(run.config["data_info"]["vocab"])
    features = read_json(run.path / "features.json")
    return make_vectorizer(features["ngram_max"], None, features["vocabulary"])


def read_texts(run: Run, reader, texts: list[str]) -> CharInputs | BagInputs:
    """``texts`` as the run's model reads them."""
    if hasattr(reader, "vocabulary"):
        return BagInputs(reader.transform(texts))
    return CharInputs(texts, reader, run.config["settings"]["max_len"])


@torch.no_grad()
def predict_logits(model: nn.Module, inputs, device: torch.device, batch_size: int = 256,
                   bucketing: bool = True) -> torch.Tensor:
    """(N, classes) logits in eval mode, in batches, in the order of ``inputs``.

    ``bucketing``: the batches are runs of documents sorted longest first, so that each holds
    documents of about one length (little padding; with a packed model none), and the logits are
    put back in the documents' order: a document's logits do not depend on its batch-mates (equal
    to one document at a time within float rounding). Without, batches in the documents' order."""
    was_training = model.training
    model.eval()
    n = len(inputs)
    order = inputs.lengths.argsort(descending=True, stable=True) if bucketing else torch.arange(n)
    out = [model(*inputs.batch(order[a:a + batch_size], device)).float().cpu() for a in range(0, n, batch_size)]
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    logits = torch.cat(out)
    if bucketing:
        logits = torch.empty_like(logits).index_copy_(0, order, logits)
    return logits
