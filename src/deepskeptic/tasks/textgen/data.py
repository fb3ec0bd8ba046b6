"""The textgen task's data: the corpus split into train/val/test text and its character ids, and a
finished run's vocabulary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from deepskeptic.data.text import Vocab
from deepskeptic.runs import Run


@dataclass
class Prepared:
    corpus: Any                      # deepskeptic.data.text.Corpus
    vocab: Any                       # deepskeptic.data.text.Vocab
    train: torch.Tensor              # (N,) int64 character ids
    val: torch.Tensor
    test: torch.Tensor


def load_vocab(run: Run) -> Vocab:
    """The characters a finished run was trained on (config.json's data_info)."""
    return Vocab.from_json(run.config["data_info"]["vocab"])
