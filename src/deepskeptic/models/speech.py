"""Speech recognisers on log-mel frames: word classifiers and CTC sequence recognisers.

Every model takes ``x`` (B, T, n_mels) zero-padded features and ``lengths`` (B,) frames.
Classifiers (``output = "class"``) return (B, num_classes) logits; CTC models (``output = "ctc"``)
return ((B, T', vocab) log-probabilities, (B,) output lengths), symbol 0 being the CTC blank.

- ``lstm``: the LSTM reads the frames in time order; the maximum of its outputs over time (or its
  final state, ``pool = "last"``) classifies (Hochreiter & Schmidhuber 1997; Graves & Schmidhuber
  2005 for the bidirectional option).
- ``mlp``: the plain network on the same features pooled over time (mean and std per band).
- ``cnn``: the spectrogram as a one-channel image: conv stages, then a mean over time.
- ``lstm-ctc``: stacked bidirectional LSTM with a CTC output layer (Graves et al. 2006, 2013).
- ``mlp-ctc``: the plain network for sequences: each output frame sees a fixed window of input
  frames, no recurrence (the hybrid recognisers of the 1990s, with a CTC output layer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from deepskeptic.models.registry import register


def stack_frames(x: Tensor, lengths: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(B, T, F) -> (B, ceil(T/k), k*F): k adjacent frames side by side (10 ms -> k*10 ms steps)."""
    if k == 1:
        return x, lengths
    b, t, f = x.shape
    pad = (-t) % k
    x = F.pad(x, (0, 0, 0, pad))                                   # (B, T + pad, F)
    return x.reshape(b, (t + pad) // k, k * f), torch.div(lengths + k - 1, k, rounding_mode="floor")


def time_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B, steps) bool: True on the frames inside each utterance."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def _run_lstm(lstm: nn.LSTM, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Packed LSTM over padded x: ((B, T, dirs*H) outputs, (layers*dirs, B, H) final states)."""
    packed = pack_padded_sequence(x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    out, (h, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, h


# ------------------------------------------------------------------ word classifiers

@dataclass
class LSTMConfig:
    output: ClassVar[str] = "class"
    n_mels: int = 40
    num_classes: int = 10
    hidden: int = 128           # units per direction; enough for a small vocabulary
    layers: int = 2             # stacked LSTM layers
    bidirectional: bool = False  # also read the frames backwards (twice the cost)
    stack: int = 2              # adjacent frames joined per step: 20 ms steps, half the recurrence
    dropout: float = 0.2        # between layers and before the output layer
    # What the output layer sees: 'last' state of each direction (the classic), or the 'mean' or
    # 'max' of the outputs over the utterance's steps. Pooling hands every step a gradient, which
    # trains much faster when the word is followed by a stretch of silence or noise.
    pool: str = "max"


class LSTMClassifier(nn.Module):
    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        if cfg.pool not in ("last", "mean", "max"):
            raise ValueError(f"pool must be last, mean or max, not {cfg.pool!r}")
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels * cfg.stack, cfg.hidden, cfg.layers, batch_first=True,
                            bidirectional=cfg.bidirectional, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        dirs = 2 if cfg.bidirectional else 1
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(dirs * cfg.hidden, cfg.num_classes))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, lengths = stack_frames(x, lengths, self.cfg.stack)   # (B, T/k, k*F)
        out, h = _run_lstm(self.lstm, x, lengths)               # out: (B, T/k, dirs*H); h: (layers*dirs, B, H)
        if self.cfg.pool == "last":
            dirs = 2 if self.cfg.bidirectional else 1
            return self.head(torch.cat(list(h[-dirs:]), dim=1))  # (B, dirs*H): last layer, each direction
        mask = time_mask(lengths, out.shape[1])[..., None]      # (B, T/k, 1)
        if self.cfg.pool == "mean":
            return self.head((out * mask).sum(1) / lengths.clamp_min(1)[:, None].to(out.dtype))
        return self.head(out.masked_fill(~mask, float("-inf")).amax(1))


@register("speech", "lstm", LSTMConfig, role="deep", reads="log-mel",
          description="LSTM reads the log-mel frames in time order; max over its outputs -> word (bidirectional option)",
          train_defaults={"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 64})
def build_lstm(cfg: LSTMConfig) -> nn.Module:
    return LSTMClassifier(cfg)


@dataclass
class MLPConfig:
    output: ClassVar[str] = "class"
    n_mels: int = 40
    num_classes: int = 10
    hidden: tuple[int, ...] = (256, 256)  # two hidden layers: the classic plain network
    dropout: float = 0.2


class PooledMLP(nn.Module):
    """Mean and standard deviation of every band over the utterance's frames -> MLP."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = 2 * cfg.n_mels
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = time_mask(lengths, x.shape[1])[..., None].to(x.dtype)   # (B, T, 1)
        count = mask.sum(1).clamp_min(1)                               # (B, 1)
        mean = (x * mask).sum(1) / count                               # (B, F)
        var = (((x - mean[:, None]) * mask) ** 2).sum(1) / count       # (B, F)
        return self.net(torch.cat([mean, var.clamp_min(1e-8).sqrt()], dim=1))  # (B, 2F) -> (B, classes)


@register("speech", "mlp", MLPConfig, role="baseline", reads="pooled-log-mel",
          description="the plain network on features pooled over time (mean and std per mel band)",
          train_defaults={"lr": 2e-3, "weight_decay": 1e-4, "batch_size": 64})
def build_mlp(cfg: MLPConfig) -> nn.Module:
    return PooledMLP(cfg)


@dataclass
class CNNConfig:
    output: ClassVar[str] = "class"
    n_mels: int = 40
    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)  # conv3x3-BN-ReLU + 2x2 max pooling per stage
    hidden: int = 128                        # fully connected layer of the head
    dropout: float = 0.2


class SpectrogramCNN(nn.Module):
    """(B, T, F) -> image (B, 1, F, T) -> conv stages -> mean over valid time -> FC head."""

    def __init__(self, cfg: CNNConfig):
        super().__init__()
        if cfg.n_mels < 2 ** len(cfg.widths):
            raise ValueError(f"cnn with {len(cfg.widths)} pooling stages needs at least {2 ** len(cfg.widths)} mel bands")
        stages, c_in = [], 1
        for width in cfg.widths:
            stages += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*stages)
        self.shrink = 2 ** len(cfg.widths)
        bands = cfg.n_mels // self.shrink
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_in * bands, cfg.hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.num_classes))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if x.shape[1] < self.shrink:
            x = F.pad(x, (0, 0, 0, self.shrink - x.shape[1]))
        maps = self.features(x.transpose(1, 2)[:, None])                 # (B, C, F/s, T/s)
        steps = maps.shape[-1]
        valid = torch.div(lengths, self.shrink, rounding_mode="floor").clamp(1, steps)
        mask = time_mask(valid, steps)[:, None, None].to(maps.dtype)   # (B, 1, 1, T/s)
        pooled = (maps * mask).sum(-1) / valid[:, None, None]          # (B, C, F/s)
        return self.head(pooled.flatten(1))


@register("speech", "cnn", CNNConfig, role="deep", reads="log-mel",
          description="the log-mel spectrogram as an image: conv+BN+ReLU stages, mean over time, FC head",
          train_defaults={"lr": 3e-3, "weight_decay": 5e-4, "batch_size": 64})
def build_cnn(cfg: CNNConfig) -> nn.Module:
    return SpectrogramCNN(cfg)


# ------------------------------------------------------------------ CTC sequence recognisers

@dataclass
class LSTMCTCConfig:
    output: ClassVar[str] = "ctc"
    n_mels: int = 40
    vocab: int = 29          # CTC blank + the alphabet (deepskeptic.tasks.speech.text)
    hidden: int = 128        # units per direction (160 learns a little faster per step, 1.6x the cost)
    layers: int = 3          # stacked bidirectional layers, as in Graves et al. 2013
    # Adjacent frames joined per step: 30 ms outputs, a third of the recurrent steps, and still
    # about 2 steps per letter at espeak-ng's fastest 220 words per minute (CTC needs >= 1).
    stack: int = 3
    dropout: float = 0.2


class LSTMCTC(nn.Module):
    def __init__(self, cfg: LSTMCTCConfig):
        super().__init__()
        self.cfg = cfg
        self.lstm = nn.LSTM(cfg.n_mels * cfg.stack, cfg.hidden, cfg.layers, batch_first=True,
                            bidirectional=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.hidden, cfg.vocab))

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = stack_frames(x, lengths, self.cfg.stack)  # (B, T', k*F)
        out, _ = _run_lstm(self.lstm, x, lengths)              # (B, T', 2H)
        return self.head(out).float().log_softmax(-1), lengths  # (B, T', vocab), fp32 under autocast too


@register("speech", "lstm-ctc", LSTMCTCConfig, role="deep", reads="log-mel",
          description="stacked bidirectional LSTM with a CTC output layer: transcripts of several words",
          # small batches: CTC leaves its all-blank plateau after a number of updates, not of examples
          train_defaults={"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 16})
def build_lstm_ctc(cfg: LSTMCTCConfig) -> nn.Module:
    return LSTMCTC(cfg)


@dataclass
class MLPCTCConfig:
    output: ClassVar[str] = "ctc"
    n_mels: int = 40
    vocab: int = 29
    stack: int = 3                        # as lstm-ctc: 30 ms output steps
    context: int = 5                      # steps seen on each side: a 330 ms window in all
    hidden: tuple[int, ...] = (512, 512)
    dropout: float = 0.2


class WindowMLPCTC(nn.Module):
    """Each output step sees 2*context+1 stacked input steps through an MLP (1x1 convs)."""

    def __init__(self, cfg: MLPCTCConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        width = cfg.n_mels * cfg.stack * (2 * cfg.context + 1)
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)]
            width = hidden
        layers.append(nn.Linear(width, cfg.vocab))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = stack_frames(x, lengths, self.cfg.stack)       # (B, T', D)
        c = self.cfg.context
        windows = F.pad(x, (0, 0, c, c)).unfold(1, 2 * c + 1, 1)   # (B, T', D, 2c+1)
        windows = windows.transpose(2, 3).flatten(2)                # (B, T', (2c+1)*D)
        return self.net(windows).float().log_softmax(-1), lengths


@register("speech", "mlp-ctc", MLPCTCConfig, role="baseline", reads="log-mel",
          description="the plain network for sequences: an MLP on a 330 ms window per step, CTC output",
          train_defaults={"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 16})
def build_mlp_ctc(cfg: MLPCTCConfig) -> nn.Module:
    return WindowMLPCTC(cfg)
