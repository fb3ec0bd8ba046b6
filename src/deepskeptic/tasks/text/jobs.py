"""Training a text classifier in the engine: batches of documents of similar length, cross-entropy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.models.text import TextLSTM
from deepskeptic.tasks.common.optim import adamw
from deepskeptic.tasks.text.data import Prepared, predict_logits

BUCKET = 50  # batches per length bucket: documents of similar length share a batch (less padding)


class TextJob(Job):
    """``bucketing`` (default on): the lstm runs packed (no steps past a document's end, see
    ``TextLSTM``) and validation reads documents sorted by length. Off: the path before packing,
    every batch padded to its longest document and validation in the documents' order (kept for
    benchmarks/text_lstm_speed.py). Training batches are the same either way."""

    unit = "doc"

    def __init__(self, model: nn.Module, prepared: Prepared, reading: str, settings: dict[str, Any], device,
                 bucketing: bool = True):
        self.model = model
        self.bucketing = bucketing
        if isinstance(model, TextLSTM):
            model.packed = bucketing
        self.train_model = torch.compile(model) if settings["compile"] else model
        self.modules = {"model": model}
        self.optimizers = {"main": adamw(model, settings["lr"], settings["weight_decay"])}
        inputs = prepared.inputs(reading)
        self.train, self.val = inputs["train"], inputs["val"]
        self.y_train, self.y_val = prepared.y("train"), prepared.y("val")
        self.batch_size, self.clip, self.device = settings["batch_size"], settings["clip"], device

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Random batches; within each bucket of BUCKET batches (a shuffled chunk of documents,
        sorted by length), documents of similar length. All order from ``generator``."""
        n = len(self.train)
        order = torch.randperm(n, generator=generator)
        size = self.batch_size * BUCKET
        batches = []
        for a in range(0, n, size):
            chunk = order[a:a + size]
            chunk = chunk[self.train.lengths[chunk].argsort(stable=True)]
            batches += list(chunk.split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        y = self.y_train[index].to(self.device)
        with ctx.autocast():
            logits = self.train_model(*self.train.batch(index, self.device))
        loss = F.cross_entropy(logits.float(), y)
        ctx.backward_step(loss, clip=self.clip)
        return len(index), {"loss": loss.detach(), "accuracy": (logits.detach().argmax(1) == y).float().mean()}

    def validate(self, epoch: int) -> dict[str, float]:
        if len(self.val) == 0:
            return {}
        logits = predict_logits(self.model, self.val, self.device, bucketing=self.bucketing)
        return {"loss": F.cross_entropy(logits, self.y_val).item(),
                "accuracy": (logits.argmax(1) == self.y_val).float().mean().item()}
