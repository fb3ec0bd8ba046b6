"""Text models: character language models (task ``textgen``) and text classifiers (task ``text``).

textgen: ``lstm`` and ``rnn`` map character ids (B, T) and a carried state to next-character
logits (B, T, vocab). The classical baselines ``ngram``, ``zlib``, ``bz2`` and ``lzma`` are not
networks: each is registered with its small config and built as a ``ClassicalModel`` marker
(no parameters), so that ``compare`` runs them and ``deepskeptic models`` lists them; the task
fits them itself, inside one step of the engine (tasks/textgen/baselines.py).

text: ``lstm`` reads the characters of a document (B, T) and pools its outputs; ``mlp`` and
``logreg`` read bag-of-n-gram count vectors (B, features). All return (B, classes) logits.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import torch
from torch import nn

from deepskeptic.models.registry import register


# ------------------------------------------------------------------ textgen: character LMs

@dataclass
class CharLMConfig:
    vocab_size: int = 100   # set from the training text's characters
    embed: int = 64         # character embedding width: ~100 symbols fit easily
    hidden: int = 512       # units per recurrent layer (the 1x512 reference model)
    layers: int = 1         # one layer: on 2 CPU cores a second 512 layer halves characters/s
    dropout: float = 0.1    # on the embedding, between layers and before the output layer


class CharLM(nn.Module):
    """Embedding -> nn.LSTM or nn.RNN (tanh) -> linear head over the vocabulary.

    forward(x (B, T) int64, state) -> logits (B, T, vocab), new state. The state is a tuple of
    (layers, B, hidden) tensors: (h, c) for the LSTM, (h,) for the plain RNN.
    """

    def __init__(self, cfg: CharLMConfig, cell: str):
        super().__init__()
        self.cell = cell
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        rnn_cls = nn.LSTM if cell == "lstm" else nn.RNN
        self.rnn = rnn_cls(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
        zeros = torch.zeros(self.cfg.layers, batch, self.cfg.hidden, device=device)
        return (zeros, zeros.clone()) if self.cell == "lstm" else (zeros,)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None):
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        e = self.drop(self.embed(x))                                   # (B, T, embed)
        out, new = self.rnn(e, state if self.cell == "lstm" else state[0])  # (B, T, hidden)
        new = tuple(new) if self.cell == "lstm" else (new,)
        return self.head(self.drop(out)), new                          # (B, T, vocab)


# 16 streams: on 2 CPU cores a batch of 16 costs as many seconds per character as 32, and twice
# the updates per character learn faster (measured: 2.45 vs 2.78 validation bpc after 60 s).
_LM_TRAIN = {"lr": 5e-3, "weight_decay": 0.01, "batch_size": 16}


@register("textgen", "lstm", CharLMConfig, role="deep", reads="chars", train_defaults=_LM_TRAIN,
          description="character LSTM, truncated BPTT with the state carried between batches")
def build_char_lstm(cfg: CharLMConfig) -> nn.Module:
    return CharLM(cfg, "lstm")


@register("textgen", "rnn", CharLMConfig, role="baseline", reads="chars",
          # tuned like the lstm, 60 s on fortunes: lr 1e-3 2.73, 2e-3 2.57, 4e-3 2.52 validation bpc
          train_defaults={**_LM_TRAIN, "lr": 4e-3},
          description="the plain recurrent network (tanh), same embedding, head and training")
def build_char_rnn(cfg: CharLMConfig) -> nn.Module:
    return CharLM(cfg, "rnn")


# ------------------------------------------------------------------ textgen: classical baselines

class ClassicalModel(nn.Module):
    """Marker for a classical baseline: no parameters; the task fits it outside autograd."""

    def __init__(self, kind: str, cfg):
        super().__init__()
        self.kind, self.cfg = kind, cfg

    def forward(self, *args):  # pragma: no cover - never called
        raise RuntimeError(f"{self.kind} is fitted by the textgen task, not called as a network")


@dataclass
class NGramConfig:
    vocab_size: int = 100       # set from the data (the same vocabulary as the networks)
    max_order: int = 10         # orders 1..max_order are scored on validation text; the best is kept
    smoothing: str = "kneser-ney"  # interpolated Kneser-Ney, or 'witten-bell'


@register("textgen", "ngram", NGramConfig, role="baseline", reads="chars", one_step=True,
          description="character n-gram, interpolated Kneser-Ney, order chosen on validation (counts, no parameters)")
def build_ngram(cfg: NGramConfig) -> nn.Module:
    if cfg.smoothing not in ("kneser-ney", "witten-bell"):
        raise ValueError(f"smoothing must be 'kneser-ney' or 'witten-bell', got {cfg.smoothing!r}")
    return ClassicalModel("ngram", cfg)


@dataclass
class CompressorConfig:
    vocab_size: int = 100  # unused; kept so every textgen model takes the same shape settings
    level: int = 9         # compression level (zlib, bz2) or preset (lzma): the strongest


for _name, _what in (("zlib", "DEFLATE, 32 KB window"), ("bz2", "Burrows-Wheeler, 900 KB blocks"),
                     ("lzma", "LZMA, dictionary holds the whole corpus")):
    register("textgen", _name, CompressorConfig, role="baseline", reads="chars", one_step=True,
             description=f"standard-library {_name} ({_what}): bits for the test text after the training text")(
        lambda cfg, _name=_name: ClassicalModel(_name, cfg))


# ------------------------------------------------------------------ text: classifiers

@dataclass
class TextLSTMConfig:
    vocab_size: int = 100   # characters of the training documents + padding + unknown
    num_classes: int = 2
    embed: int = 64         # character embedding width
    hidden: int = 256       # LSTM units; documents are short, 256 is enough and quick on CPU
    layers: int = 1
    dropout: float = 0.2    # on the embedding and on the pooled features


# One more recurrent call (a time segment) costs about as much as this many document-steps of
# padding: the call's fixed cost (oneDNN's weight reorder, forward and backward) over one
# document-step's (measured on the 2-core CPU, hidden 256, batch 64: ~10-15 ms against ~0.19 ms).
SEGMENT_COST = 64


def time_segments(lengths: list[int], cost: float = SEGMENT_COST) -> list[int]:
    """Where to cut the time axis of a batch whose ``lengths`` are sorted longest first: the ends
    of the segments, the last being the longest length. Segment [a, b) runs the documents longer
    than a, so one that ends inside it computes (b - its length) padded steps; the cuts minimise
    padded steps + ``cost`` per segment, exactly (dynamic programming over the distinct lengths,
    the only places a cut can save anything)."""
    ascending = lengths[::-1]
    starts = [0] + sorted(set(lengths))                     # starts[j]: the j-th candidate cut
    running = [len(lengths) - bisect.bisect_right(ascending, t) for t in starts]  # documents longer than it
    best, back = [0.0] + [math.inf] * (len(starts) - 1), [0] * len(starts)
    for j in range(1, len(starts)):                         # best[j]: least cost of [0, starts[j])
        for i in range(j):
            c = best[i] + running[i] * (starts[j] - starts[i]) + cost
            if c < best[j]:
                best[j], back[j] = c, i
    ends, j = [], len(starts) - 1
    while j:
        ends.append(starts[j])
        j = back[j]
    return ends[::-1]


class TextLSTM(nn.Module):
    """Characters -> embedding -> LSTM -> mean and max over the document's steps -> logits.

    forward(x (B, T) int64 with 0 = padding, lengths (B,)) -> (B, classes).

    Packed (``packed``, the default, in eager mode): the batch is sorted longest first and its
    time axis cut into a few segments (``time_segments``); each segment runs only the documents
    still going, carrying their (h, c) from the previous one, so no step past a document's end is
    computed except inside a segment where cutting would cost more than it saves. Outputs equal
    the padded computation's (the LSTM is causal; padding is masked out of the pooling). Why not
    ``nn.LSTM`` on a ``PackedSequence``: on the CPU a packed input leaves oneDNN's fused kernel for
    a step-by-step loop, measured 3-4x slower than the padded batch. Tracing and compiling (ONNX
    or torch.export, torch.compile) see the padded computation: one graph with dynamic shapes.
    """

    packed = True   # False: the whole padded batch through the LSTM (the path before packing)

    def __init__(self, cfg: TextLSTMConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=0)
        self.rnn = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                           dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * cfg.hidden, cfg.num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.packed and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            features = self._pooled_packed(x, lengths)
        else:
            features = self._pooled_padded(x, lengths)
        return self.head(self.drop(features))

    def _pooled_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.drop(self.embed(x)))                        # (B, T, H)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        mean = (out * mask).sum(1) / lengths.clamp_min(1)[:, None].to(out.dtype)   # (B, H)
        peak = out.masked_fill(~mask, float("-inf")).amax(1)                        # (B, H)
        return torch.cat([mean, peak], dim=1)                                       # (B, 2H)

    def _pooled_packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.clamp_min(1)
        host = lengths.tolist()
        order = sorted(range(len(host)), key=lambda i: -host[i])          # longest first, stable
        sorted_lengths = [host[i] for i in order]
        identity = order == list(range(len(host)))
        if not identity:
            index = torch.tensor(order, device=x.device)
            x, lengths = x[index], lengths[index]
        e = self.drop(self.embed(x[:, :sorted_lengths[0]]))               # (B, T, E)
        B = e.shape[0]
        sums, peaks, state, start = [], [], None, 0
        for end in time_segments(sorted_lengths):
            rows = sum(1 for n in sorted_lengths if n > start)            # a prefix: sorted longest first
            if state is not None:
                state = (state[0][:, :rows].contiguous(), state[1][:, :rows].contiguous())
            out, state = self.rnn(e[:rows, start:end], state)              # (rows, end - start, H)
            if sorted_lengths[rows - 1] < end:                             # documents end inside: mask
                steps = torch.arange(start, end, device=x.device)
                mask = (steps[None, :] < lengths[:rows, None]).unsqueeze(-1)
                s = (out * mask).sum(1)
                p = out.masked_fill(~mask, float("-inf")).amax(1)
            else:
                s, p = out.sum(1), out.amax(1)
            sums.append(nn.functional.pad(s, (0, 0, 0, B - rows)))
            peaks.append(nn.functional.pad(p, (0, 0, 0, B - rows), value=float("-inf")))
            start = end
        total = sums[0] if len(sums) == 1 else torch.stack(sums).sum(0)
        peak = peaks[0] if len(peaks) == 1 else torch.stack(peaks).amax(0)
        features = torch.cat([total / lengths[:, None].to(total.dtype), peak], dim=1)   # (B, 2H)
        if identity:
            return features
        return features[torch.tensor(order, device=x.device).argsort()]


@register("text", "lstm", TextLSTMConfig, role="deep", reads="chars",
          train_defaults={"lr": 3e-3, "weight_decay": 0.01, "batch_size": 64},
          description="character LSTM over the document, mean+max pooled, linear head")
def build_text_lstm(cfg: TextLSTMConfig) -> nn.Module:
    return TextLSTM(cfg)


@dataclass
class BagConfig:
    num_features: int = 20000   # n-gram vocabulary size, set from the training documents
    num_classes: int = 2
    hidden: int = 256           # mlp only: one hidden layer, the plain network
    dropout: float = 0.5        # mlp only: bag-of-words inputs are wide and overfit fast


@register("text", "logreg", BagConfig, role="baseline", reads="ngram-counts",
          train_defaults={"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 64},
          description="softmax regression on bag-of-n-gram counts (words, 1- and 2-grams)")
def build_text_logreg(cfg: BagConfig) -> nn.Module:
    return nn.Linear(cfg.num_features, cfg.num_classes)


@register("text", "mlp", BagConfig, role="baseline", reads="ngram-counts",
          # batches of 256: the wide first layer's optimizer step dominates; fewer, larger steps
          # (fortunes-categories, 30 s on 2 CPU cores: 44 % test accuracy vs 28 % with batches of 64)
          train_defaults={"lr": 2e-3, "weight_decay": 1e-4, "batch_size": 256},
          description="the plain network on bag-of-n-gram counts: one ReLU hidden layer, dropout")
def build_text_mlp(cfg: BagConfig) -> nn.Module:
    return nn.Sequential(nn.Dropout(0.1), nn.Linear(cfg.num_features, cfg.hidden), nn.ReLU(inplace=True),
                         nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes))
