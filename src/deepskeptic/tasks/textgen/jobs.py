"""Training a character language model in the engine (truncated BPTT over contiguous streams), and
the classical baselines as one-step jobs whose step is the fit."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepskeptic.engine import BestWeights, Job, StepContext
from deepskeptic.models.text import CharLM, ClassicalModel
from deepskeptic.tasks.common.optim import adamw
from deepskeptic.tasks.textgen import baselines
from deepskeptic.tasks.textgen.data import Prepared
from deepskeptic.tasks.textgen.lm import LN2, stream_bpc


class TextGenJob(Job):
    """Truncated BPTT over ``batch`` contiguous streams of the training text."""
    unit = "char"

    def __init__(self, model: CharLM, prepared: Prepared, settings: dict[str, Any], device: torch.device):
        self.model = model
        self.train_model = torch.compile(model) if settings["compile"] else model
        self.modules = {"model": model}
        self.optimizers = {"main": adamw(model, settings["lr"], settings["weight_decay"])}
        self.device = device
        self.seq_len, self.batch = settings["seq_len"], settings["batch_size"]
        self.clip = settings["clip"]
        ids = prepared.train
        length = (len(ids) - 1) // self.batch                     # characters per stream
        self.inputs = ids[:self.batch * length].view(self.batch, length).to(device)        # (B, L)
        self.targets = ids[1:self.batch * length + 1].view(self.batch, length).to(device)  # (B, L)
        self.windows_per_pass = length // self.seq_len
        self.windows_per_epoch = max(1, min(self.windows_per_pass,
                                            settings["epoch_chars"] // (self.batch * self.seq_len)))
        self.val = prepared.val
        self.state: tuple[torch.Tensor, ...] | None = None
        self.best = BestWeights(model, settings["keep_best"])   # the weights of the lowest validation bpc

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        """Window indices of this epoch, continuing the pass where the last epoch stopped."""
        first = epoch * self.windows_per_epoch
        return [(first + i) % self.windows_per_pass for i in range(self.windows_per_epoch)]

    def train_step(self, window: int, ctx: StepContext):
        if window == 0 or self.state is None:                  # a new pass starts from a zero state
            self.state = self.model.initial_state(self.batch, self.device)
        start = window * self.seq_len
        x = self.inputs[:, start:start + self.seq_len].long()      # (B, T): a token file's ids are uint8/16
        y = self.targets[:, start:start + self.seq_len].long()     # (B, T)
        with ctx.autocast():
            logits, state = self.train_model(x, self.state)        # (B, T, V)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        ctx.backward_step(loss, clip=self.clip)
        self.state = tuple(s.detach() for s in state)             # carried, but no gradient through it
        loss = loss.detach()
        return x.numel(), {"loss": loss, "bpc": loss / LN2}

    def distribute(self, wrap, world) -> bool:
        """Under torchrun each rank reads its own streams (rows) of the batch, whole windows each."""
        rows = torch.tensor_split(torch.arange(self.batch), world.size)[world.rank].to(self.inputs.device)
        self.share = len(rows) / self.batch
        self.inputs, self.targets, self.batch = self.inputs[rows], self.targets[rows], len(rows)
        return super().distribute(wrap, world)

    def shard(self, window: int, rank: int, world: int):
        return window, self.share

    def validate(self, epoch: int) -> dict[str, float]:
        bpc, _ = stream_bpc(self.model, self.val, self.device)
        self.best.offer(bpc, epoch)
        return {"bpc": bpc}

    def extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"best": self.best.state()}
        if self.state is not None:
            out["state"] = list(self.state)
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        # (checkpoints written before validate received the epoch also hold "epochs_validated": unused)
        self.state = tuple(s.to(self.device) for s in state["state"]) if "state" in state else None
        self.best.load(state.get("best"), self.device)


class ClassicalJob(Job):
    """A classical baseline in the engine: one epoch of one step, the step being the fit."""
    unit = "char"

    def __init__(self, marker: ClassicalModel, prepared: Prepared):
        self.marker, self.prepared = marker, prepared
        self.modules, self.optimizers = {"model": marker}, {}
        self.fitted: Any = None

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        return [0]

    def fit(self) -> None:
        p, cfg = self.prepared, self.marker.cfg
        if self.marker.kind == "ngram":
            model = baselines.NGramLM(len(p.vocab), cfg.max_order, cfg.smoothing).fit(p.train.numpy())
            by_order = model.bpc_by_order(p.val.numpy())
            order = min(by_order, key=by_order.get)
            self.fitted = {"model": model, "order": order, "val_bpc_by_order": by_order}
        else:
            self.fitted = {"train_bits": baselines.compressed_bits(self.marker.kind, p.corpus.train, cfg.level)}

    def train_step(self, batch, ctx: StepContext):
        self.fit()
        return len(self.prepared.corpus.train), {}

    def bpc(self, split: str) -> float:
        if self.fitted is None:                                # resumed after training, before finish
            self.fit()
        p = self.prepared
        if self.marker.kind == "ngram":
            probs = self.fitted["model"].probabilities(getattr(p, split).numpy())[self.fitted["order"] - 1]
            return float(-np.log2(probs).mean())
        held = p.corpus.val if split == "val" else p.corpus.test
        return baselines.conditional_bpc(self.marker.kind, p.corpus.train, held, self.marker.cfg.level,
                                         self.fitted["train_bits"])

    def validate(self, epoch: int) -> dict[str, float]:
        return {"bpc": self.bpc("val")}
