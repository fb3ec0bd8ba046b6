"""What both GAN tasks (`gan`, `cyclegan`) share in training: the stability guard, the pool of
generated images, and the conversions between uint8 pixels, the generators' [-1, 1] range and PNGs.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deepskeptic.engine import Diverged
from deepskeptic.fileio import atomic_write_bytes

D_WIN_LOSS = 0.01    # a discriminator loss below this on a batch: it tells every real from every fake
CHECK_EVERY_CUDA = 20  # on CUDA, look at the losses every this many steps (each look waits for the GPU)


# ------------------------------------------------------------------------------ the guard

class DiscriminatorWon(Diverged):
    """The discriminator separated real from generated images perfectly for too many steps in a row."""


class Guard:
    """The stability guards of both GAN tasks. ``update`` counts the steps in a row on which the
    discriminator's loss was below ``D_WIN_LOSS`` (it told every real from every generated image);
    ``check`` stops training — Diverged for a non-finite loss, DiscriminatorWon for a streak of
    ``win_steps`` (0: never) — with a message naming the last good checkpoint. The streak stays a
    tensor on the device, so counting never waits for the GPU; only ``check`` does."""

    def __init__(self, win_steps: int, device: torch.device, what: str, advice: str):
        self.win_steps, self.what, self.advice = win_steps, what, advice
        self.streak = torch.zeros((), device=device)

    def update(self, d_loss: torch.Tensor) -> None:
        self.streak = (self.streak + 1) * (d_loss < D_WIN_LOSS)

    def check(self, loss: torch.Tensor, step: int, run_path) -> None:
        where = f"; the last good checkpoint is in {run_path / 'checkpoint'}" if run_path else ""
        if not torch.isfinite(loss):
            raise Diverged(f"training diverged: a {self.what} loss became {loss.item()} at step {step}; "
                           f"{self.advice}{where}")
        if self.win_steps and self.streak.item() >= self.win_steps:
            raise DiscriminatorWon(
                f"the discriminator told every real from every generated image for {self.win_steps} steps in a "
                f"row (step {step}): the generator gets no signal; {self.advice}, or raise --d-win-steps{where}")


# ------------------------------------------------------------------------------ the image pool

class ImagePool:
    """The last ``size`` generated images; a query returns, per image, either it or (with probability
    1/2, once the pool is full) an older one, which the new image replaces (Shrivastava et al. 2017).
    Randomness: torch's CPU generator, so the GPU is never waited for."""

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None    # (size, C, H, W) once the first batch arrives
        self.count = 0

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        if self.images is None:
            self.images = torch.zeros((self.size, *images.shape[1:]), dtype=images.dtype, device=images.device)
        out = []
        for image in images:
            if self.count < self.size:                    # filling up: store and return the new one
                self.images[self.count] = image
                self.count += 1
                out.append(image)
            elif torch.rand(()).item() < 0.5:             # swap: return an old one, keep the new one
                j = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[j].clone())
                self.images[j] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state(self) -> dict[str, Any]:
        return {"images": self.images, "count": self.count}

    def load(self, state: dict[str, Any], device: torch.device) -> None:
        self.images = None if state["images"] is None else state["images"].to(device)
        self.count = state["count"]


# ------------------------------------------------------------------------------ pixels

def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) float in [-1, 1] -> uint8 in [0, 255], on the CPU."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) uint8 -> float in [-1, 1] (the generators' tanh range)."""
    return x_uint8.float() / 127.5 - 1


def grid(images: torch.Tensor, cols: int = 8, pad: int = 1) -> np.ndarray:
    """(N, C, S, S) uint8 -> one (H, W) or (H, W, 3) uint8 mosaic, ``cols`` images per row, white gaps."""
    n, c, s, _ = images.shape
    rows = max(1, -(-n // cols))
    out = np.full((c, rows * (s + pad) - pad, cols * (s + pad) - pad), 255, dtype=np.uint8)
    for i, img in enumerate(images.numpy()):
        r, k = divmod(i, cols)
        out[:, r * (s + pad):r * (s + pad) + s, k * (s + pad):k * (s + pad) + s] = img
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path: Path, array_or_images: np.ndarray | torch.Tensor, cols: int = 8) -> None:
    """Write a mosaic (or one (H, W[, 3]) array) as a PNG, atomically."""
    array = grid(array_or_images, cols) if isinstance(array_or_images, torch.Tensor) else array_or_images
    atomic_write_bytes(path, png_bytes(array))
