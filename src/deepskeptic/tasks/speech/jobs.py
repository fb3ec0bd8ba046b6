"""Training a speech model: SpecAugment and the engine job (batches of similar lengths,
cross-entropy for classifiers, CTC loss for recognisers)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.tasks.common.optim import adamw
from deepskeptic.tasks.speech.eval import score
from deepskeptic.tasks.speech.text import encode

VALIDATION_METRICS = ("loss", "accuracy", "wer", "cer")  # what history.jsonl records per epoch


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, freq_masks: int = 2, freq_width: int = 8,
                 time_masks: int = 2, time_fraction: float = 0.1) -> torch.Tensor:
    """SpecAugment's masking (Park et al. 2019) on a padded batch (B, T, F), from torch's RNG.

    Per utterance: ``freq_masks`` bands of 0..freq_width mel channels and ``time_masks`` spans of
    0..time_fraction of its length are set to 0 (the utterance mean after normalisation).
    """
    b, t, f = x.shape
    keep = torch.ones(b, t, f, dtype=torch.bool, device=x.device)
    bands = torch.arange(f, device=x.device)[None, :]
    steps = torch.arange(t, device=x.device)[None, :]
    for _ in range(freq_masks):
        width = (torch.rand(b, device=x.device) * (min(freq_width, f) + 1)).floor()[:, None]
        start = (torch.rand(b, device=x.device)[:, None] * (f - width + 1)).floor()
        keep &= ~((bands >= start) & (bands < start + width))[:, None, :]
    longest = (lengths.to(x.device).float() * time_fraction).floor()[:, None]
    for _ in range(time_masks):
        width = (torch.rand(b, 1, device=x.device) * (longest + 1)).floor()
        start = (torch.rand(b, 1, device=x.device) * (lengths.to(x.device)[:, None] - width + 1)).floor()
        keep &= ~((steps >= start) & (steps < start + width))[:, :, None]
    return x * keep


class SpeechJob(Job):
    unit = "utt"

    def __init__(self, model: nn.Module, data, settings: dict[str, Any], device: torch.device,
                 labels: list[str] | None):
        self.model = model
        self.train_model = torch.compile(model, dynamic=True) if settings["compile"] else model
        self.modules = {"model": model}
        self.optimizers = {"main": adamw(model, settings["lr"], settings["weight_decay"])}
        self.device = device
        self.data = data
        self.kind = "class" if labels is not None else "ctc"
        self.labels = labels
        self.feats = data.feats.to(device)                     # (total frames, F)
        self.offsets, self.lengths = data.offsets.to(device), data.lengths.to(device)
        self.lengths_cpu = data.lengths
        self.train_index = data.splits["train"]
        self.batch_size = settings["batch_size"]
        self.augment = settings["augment"]
        self.clip = settings["clip"]
        self.label_smoothing = settings["label_smoothing"]
        if labels is not None:
            lookup = {w: k for k, w in enumerate(labels)}
            self.targets = torch.tensor([lookup.get(t, -100) for t in data.transcripts], device=device)
        else:
            encoded = [encode(t) for t in data.transcripts]
            self.target_lengths = torch.tensor([len(e) for e in encoded], device=device)
            padded = torch.zeros(len(encoded), max(map(len, encoded)), dtype=torch.long)
            for i, e in enumerate(encoded):
                padded[i, :len(e)] = torch.tensor(e)
            self.targets = padded.to(device)                   # (N, longest transcript)

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Shuffled batches of similar lengths (less padding): chunks of 50 batches sorted by length."""
        index = self.train_index[torch.randperm(len(self.train_index), generator=generator)]
        chunk = self.batch_size * 50
        batches: list[torch.Tensor] = []
        for start in range(0, len(index), chunk):
            part = index[start:start + chunk]
            part = part[torch.argsort(self.lengths_cpu[part], stable=True)]
            batches += list(part.split(self.batch_size))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded features (B, T, F) and lengths (B,) of utterances ``index``, on the device."""
        index = index.to(self.device)
        lengths = self.lengths[index]
        steps = torch.arange(int(lengths.max()), device=self.device)
        pos = self.offsets[index][:, None] + torch.minimum(steps[None, :], lengths[:, None] - 1)  # (B, T)
        x = self.feats[pos] * (steps[None, :] < lengths[:, None])[..., None]
        return x, lengths

    def loss(self, output, index: torch.Tensor) -> torch.Tensor:
        index = index.to(self.device)
        if self.kind == "class":
            return F.cross_entropy(output.float(), self.targets[index], label_smoothing=self.label_smoothing)
        log_probs, out_lengths = output
        return F.ctc_loss(log_probs.float().transpose(0, 1), self.targets[index], out_lengths,
                          self.target_lengths[index], blank=0, reduction="mean", zero_infinity=True)

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        x, lengths = self.gather(index)
        if self.augment:
            x = spec_augment(x, lengths)
        with ctx.autocast():
            output = self.train_model(x, lengths)
        loss = self.loss(output, index)
        ctx.backward_step(loss, clip=self.clip)
        stats = {"loss": loss.detach()}
        if self.kind == "class":
            stats["accuracy"] = (output.detach().argmax(1) == self.targets[index.to(self.device)]).float().mean()
        return len(index), stats

    def validate(self, epoch: int) -> dict[str, float]:
        index = self.data.splits["val"]
        if len(index) == 0:
            return {}
        result = score(self.model, self.data, index, self.device, self.labels, beam=0)
        return {k: v for k, v in result.items() if k in VALIDATION_METRICS}
