"""Training an image classifier in the engine's loop, and applying one to uint8 images."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import Job, StepContext
from deepskeptic.tasks.common.optim import adamw
from deepskeptic.tasks.common.pixels import normalise
from deepskeptic.tasks.image.data import Prepared


def random_shift(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Translate each image by its own random offset in [-max_shift, max_shift] (zero padding)."""
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)                               # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # (B, H)
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last if x.is_cuda else torch.contiguous_format)


@torch.no_grad()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                   device: torch.device, batch_size: int = 1000) -> torch.Tensor:
    """Logits (N, classes) for uint8 images, in eval mode, computed in batches on ``device``."""
    model.eval()
    out = []
    for start in range(0, len(x_uint8), batch_size):
        x = normalise(x_uint8[start:start + batch_size].to(device), mean, std)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(x).float().cpu())
    model.train()
    return torch.cat(out) if out else torch.zeros(0)


class ImageJob(Job):
    unit = "img"

    def __init__(self, model: nn.Module, prepared: Prepared, settings: dict[str, Any], device: torch.device):
        data = prepared.data
        self.model = model
        self.train_model = torch.compile(model) if settings["compile"] else model
        self.modules = {"model": model}
        self.optimizers = {"main": adamw(model, settings["lr"], settings["weight_decay"])}
        self.device = device
        # In memory: the whole training set on the device. A folder's memory map stays on disk: each
        # batch is read from it and moved alone, so memory does not grow with the folder.
        self.on_device = isinstance(data.x_train, torch.Tensor)
        if self.on_device:
            self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
        else:
            self.x_train, self.y_train = data.x_train, data.y_train
        self.x_val, self.y_val = data.x_val, data.y_val
        self.mean = torch.tensor(prepared.mean, device=device)
        self.std = torch.tensor(prepared.std, device=device)
        self.batch_size = settings["batch_size"]
        self.label_smoothing = settings["label_smoothing"]
        # Shifts of up to size/14 px (2 px at 28 px); images under 14 px are too coarse to shift.
        self.max_shift = data.image_size // 14 if settings["augment"] else 0
        self.flip = settings["flip"]

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        n = len(self.x_train)
        order = torch.randperm(n, generator=generator)
        order = order.to(self.device) if self.on_device else order
        full = n // self.batch_size
        if full == 0:  # fewer examples than one batch
            return [order]
        return list(order[:full * self.batch_size].view(full, self.batch_size))  # drop the ragged tail

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        x, y = self.x_train[index], self.y_train[index]               # (B, C, H, W) uint8, (B,)
        if not self.on_device:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        x = normalise(x, self.mean, self.std)                           # (B, C, H, W) float
        if self.max_shift:
            x = random_shift(x, self.max_shift)
        if self.flip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if ctx.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx.autocast():
            logits = self.train_model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        ctx.backward_step(loss)
        accuracy = (logits.detach().argmax(1) == y).float().mean()
        return len(index), {"loss": loss.detach(), "accuracy": accuracy}

    def validate(self, epoch: int) -> dict[str, float]:
        if len(self.x_val) == 0:
            return {}
        logits = predict_logits(self.model, self.x_val, self.mean, self.std, self.device)
        return {"loss": F.cross_entropy(logits, self.y_val).item(),
                "accuracy": (logits.argmax(1) == self.y_val).float().mean().item()}
