"""The textgen task's data: the corpus split into train/val/test text and its character ids, and a
finished run's vocabulary.

A built-in corpus (``fortunes``, ``python-stdlib``: a few MB) is read into memory. A user's file or
folder is encoded once into a memory-mapped token file of the data cache (see
``deepskeptic.data.text_tokens``): its train/val/test ids are uint8 (or uint16) tensors over that
file, read page by page as training reaches them, and its texts are ``SourceText``s that decode
the file only when a compressor baseline or the report asks for them. Both paths give the same
ids, vocabulary and split, so a run gives the same numbers from either.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepskeptic.data.text import CORPORA, Corpus, Vocab, check_splits, load_corpus
from deepskeptic.data.text_tokens import SourceText, load_tokens
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.runs import Run


@dataclass
class Prepared:
    corpus: Any                      # deepskeptic.data.text.Corpus (texts: str, or SourceText when cached)
    vocab: Any                       # deepskeptic.data.text.Vocab
    train: torch.Tensor              # (N,) character ids: int64 in memory, uint8/uint16 over the token file
    val: torch.Tensor
    test: torch.Tensor


def prepare(settings: dict[str, Any]) -> Prepared:
    """The corpus of ``settings["data"]`` split and encoded; UserErrors for data that cannot be used."""
    spec = str(settings["data"])
    encoding, val_split, test_split = settings["encoding"], settings["val_split"], settings["test_split"]
    min_count = max(1, settings["min_char_count"])
    check_splits(val_split, test_split)
    if spec in CORPORA:
        corpus = load_corpus(spec, encoding=encoding, val_split=val_split, test_split=test_split)
        _check_held_out(corpus.name, len(corpus.val), len(corpus.test))
        vocab = Vocab.from_text(corpus.train, min_count=min_count)
        return Prepared(corpus, vocab, vocab.encode(corpus.train), vocab.encode(corpus.val), vocab.encode(corpus.test))
    path = Path(spec)
    if not path.exists():
        raise unknown_name("text corpus", spec, CORPORA, hint=" or the path of a text file or folder")
    tokens = load_tokens(path, encoding=encoding, val_split=val_split, test_split=test_split, min_count=min_count)
    n, a, b = len(tokens.ids), tokens.val_start, tokens.test_start
    texts = [SourceText(tokens, 0, a), SourceText(tokens, a, b), SourceText(tokens, b, n)]
    corpus = Corpus(path.name, str(path), *texts,
                    split=f"contiguous: the last {test_split:.0%} test, the {val_split:.0%} before it validation")
    _check_held_out(corpus.name, b - a, n - b)
    ids = _tensor(tokens.ids)
    return Prepared(corpus, tokens.vocab, ids[:a], ids[a:b], ids[b:])


def _check_held_out(name: str, val_chars: int, test_chars: int) -> None:
    for split, chars in (("val", val_chars), ("test", test_chars)):
        if chars < 2:
            raise UserError(f"{name} is too short to hold out a {split} text; give a longer text")


def _tensor(ids: np.ndarray) -> torch.Tensor:
    """A tensor over the memory-mapped ids: nothing is read until used."""
    if ids.dtype == np.uint16 and not hasattr(torch, "uint16"):  # pragma: no cover - torch < 2.3
        raise UserError("this corpus has more than 255 distinct characters, which needs torch 2.3 or newer")
    with warnings.catch_warnings():  # a copy-on-write map is writable: torch has nothing to warn about
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(ids)


def load_vocab(run: Run) -> Vocab:
    """The characters a finished run was trained on (config.json's data_info)."""
    return Vocab.from_json(run.config["data_info"]["vocab"])
