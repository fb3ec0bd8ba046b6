"""The image task's data: images loaded and checked, with the training pixels' statistics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepskeptic.data.images import ImageData, load_image_data
from deepskeptic.errors import UserError
from deepskeptic.settings import positive_int
from deepskeptic.tasks.common.pixels import channel_stats


@dataclass
class Prepared:
    data: ImageData           # x_* (N, C, H, W) uint8, y_* (N,) int64
    mean: list[float]         # per-channel mean of the training pixels in [0, 1]
    std: list[float]


def prepare(settings: dict[str, Any]) -> Prepared:
    """``settings``' data (data, image_size, val_split, limit) loaded, checked and described."""
    positive_int(settings, "image_size")
    positive_int(settings, "limit")
    data = load_image_data(str(settings["data"]), image_size=settings["image_size"],
                           val_split=settings["val_split"], seed=0, limit=settings["limit"])
    if len(data.x_test) == 0:
        raise UserError(f"data set {settings['data']} has no test images")
    return Prepared(data, *channel_stats(data.x_train))


def shape(data: ImageData) -> dict[str, Any]:
    """What a model needs to know of the images: channels, pixels per side, classes."""
    return {"channels": data.channels, "image_size": data.image_size, "num_classes": data.num_classes}
