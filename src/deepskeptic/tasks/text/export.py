"""The text task's exported graph: documents as the run's model reads them in, class logits and
probabilities out.

- ``lstm``: character ids (B, T) int64 (0 padding) and lengths (B,) int64 -> the LSTM, mean and max
  over each document's steps (padding masked), the head. Batch and time are dynamic.
- ``mlp`` and ``logreg``: n-gram counts (B, features) float32, as scikit-learn's CountVectorizer
  with the sidecar's vocabulary counts them -> log(1 + count) and unit length (inside the graph)
  -> the network. Splitting a text into words is string work that no graph does; the sidecar says
  exactly how (lower case, scikit-learn's token pattern, 1..ngram_max word n-grams)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepskeptic.data.text import Vocab
from deepskeptic.export import Graph
from deepskeptic.runs import Run
from deepskeptic.tasks.text.data import CharInputs, load_reader, reads

EXAMPLES = 24   # real test documents the export is checked on


class CharClassifier(nn.Module):
    """(ids (B, T) int64, lengths (B,) int64) -> ((B, classes) logits, (B, classes) probabilities)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(ids, lengths)                          # (B, classes)
        return logits, logits.softmax(1)


class CountClassifier(nn.Module):
    """(B, features) float32 n-gram counts -> ((B, classes) logits, (B, classes) probabilities), with
    the reading the network was trained on inside: log(1 + count), then unit (L2) length per row."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.log1p(counts)                                    # (B, F)
        norm = x.pow(2).sum(1, keepdim=True).sqrt()                # (B, 1); an empty document stays all zeros
        logits = self.model(x / norm.clamp_min(1e-12))
        return logits, logits.softmax(1)


def _vocabulary(vocab: Vocab) -> dict[str, Any]:
    return {"ids": {ch: i for i, ch in enumerate(vocab.itos) if i >= len(vocab.specials)},
            "padding_id": 0, "unknown_id": vocab.unk, "size": len(vocab)}


def graphs(task, run: Run) -> list[Graph]:
    model = task.load_models(run, torch.device("cpu"))["model"]
    settings, info = run.config["settings"], run.config["data_info"]
    reader = load_reader(run)
    texts = task.prepare(dict(settings)).data.texts["test"][:EXAMPLES]     # the run's own test documents
    classes = info["classes"]
    common = {"classes": classes,
              "output": "logits (B, classes) and their softmax, probabilities (B, classes), in the order of 'classes'"}
    if reads(settings["model"]) == "chars":
        max_len = settings["max_len"]
        inputs = CharInputs(texts, reader, max_len)
        ids, lengths = inputs.batch(torch.arange(len(inputs)), torch.device("cpu"))
        # padded to max_len: ONNX keeps the time axis dynamic (checked on a shorter batch too), but
        # torch.export fixes an LSTM's at the example's length, which then fits every document
        ids = nn.functional.pad(ids, (0, max_len - ids.shape[1]))     # (B, max_len), 0 = padding
        sidecar = {**common, "vocabulary": _vocabulary(reader), "max_length": max_len,
                   "input": (f"ids (B, T) int64: each document's first {max_len} characters (Unicode code points), "
                             f"each the id 'vocabulary.ids' gives it, {reader.unk} (unknown) for any other character, "
                             f"padded with 0 after its end to the longest in the batch (to exactly {max_len} for a "
                             f"torch.export program); lengths (B,) int64: "
                             f"characters per document (at least 1: an empty document is one padding id)")}
        short = CharInputs(sorted(texts, key=len)[:3], reader, settings["max_len"])   # a shorter time axis
        checks = [short.batch(torch.arange(len(short)), torch.device("cpu"))]
        return [Graph(name="model", module=CharClassifier(model).eval(), inputs=(ids, lengths), checks=checks,
                      input_names=["ids", "lengths"], output_names=["logits", "probabilities"],
                      dynamic={"ids": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                               "logits": {0: "batch"}, "probabilities": {0: "batch"}},
                      sidecar=sidecar,
                      description=f"character ids and lengths -> logits and probabilities over {len(classes)} classes")]
    counts = torch.from_numpy(reader.transform(texts).toarray()).float()   # (B, F) raw counts
    ngram_max = reader.ngram_range[1]
    sidecar = {**common, "ngram_vocabulary": {k: int(v) for k, v in reader.vocabulary_.items()},
               "ngram_range": [1, ngram_max], "lowercase": True, "token_pattern": reader.token_pattern,
               "input": (f"counts (B, {counts.shape[1]}) float32: how often each of 'ngram_vocabulary' occurs in the "
                         f"document (column = its value); scikit-learn's CountVectorizer(ngram_range=(1, {ngram_max}), "
                         f"lowercase=True, vocabulary=ngram_vocabulary) computes it: lower case, words are matches of "
                         f"token_pattern, n-grams are 1..{ngram_max} consecutive words joined by one space; n-grams "
                         f"outside the vocabulary are dropped. log(1 + count) and unit length are inside the graph")}
    return [Graph(name="model", module=CountClassifier(model).eval(), inputs=(counts,), input_names=["counts"],
                  output_names=["logits", "probabilities"],
                  dynamic={"counts": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
                  sidecar=sidecar,
                  description=f"n-gram counts ({counts.shape[1]}) -> logits and probabilities over {len(classes)} classes")]
