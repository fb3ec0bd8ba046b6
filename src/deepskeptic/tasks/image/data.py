"""The image task's data: images loaded and checked, with the training pixels' statistics."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepskeptic.data.cache import MappedImages
from deepskeptic.data.images import ImageData, load_image_data
from deepskeptic.errors import UserError
from deepskeptic.tasks.common.pixels import channel_stats


@dataclass
class Prepared:
    data: ImageData           # x_* (N, C, H, W) uint8 (tensors, or MappedImages of a folder), y_* (N,) int64
    mean: list[float]         # per-channel mean of the training pixels in [0, 1]
    std: list[float]


def prepare(settings: dict[str, Any]) -> Prepared:
    """``settings``' data (data, image_size, val_split, limit) loaded, checked and described."""
    # A folder stays in its memory-mapped cache (training reads it batch by batch); built-ins in memory.
    data = load_image_data(str(settings["data"]), image_size=settings["image_size"],
                           val_split=settings["val_split"], seed=0, limit=settings["limit"], mapped=True)
    if len(data.x_test) == 0:
        raise UserError(f"data set {settings['data']} has no test images")
    if isinstance(data.x_train, MappedImages):
        return Prepared(data, *streamed_channel_stats(data.x_train))
    return Prepared(data, *channel_stats(data.x_train))


def streamed_channel_stats(x: MappedImages, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """``channel_stats`` of images on disk, read ``chunk`` images at a time: exact (per-channel
    counts of the 256 pixel values, then integer sums), so equal to ``channel_stats`` up to its
    float32 rounding."""
    channels = x.shape[1]
    counts = np.zeros((channels, 256), dtype=np.int64)
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk].numpy()                               # (B, C, H, W) uint8
        for c in range(channels):
            counts[c] += np.bincount(block[:, c].ravel(), minlength=256)
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(channels):
        n, total, squares = int(counts[c].sum()), int(counts[c] @ values), int(counts[c] @ values ** 2)
        means.append(total / (255 * n))
        variance = (n * squares - total * total) / (n * (n - 1)) if n > 1 else 0.0  # unbiased, as torch.std
        stds.append(max(math.sqrt(variance) / 255, 1e-6))
    return means, stds


def shape(data: ImageData) -> dict[str, Any]:
    """What a model needs to know of the images: channels, pixels per side, classes."""
    return {"channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes}
