"""The images of the `gan` task: a data set or folder read by deepskeptic.data.images, filtered to
some classes and cut to --limit; with the judge and the real images generated ones are measured against."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from deepskeptic.data.images import ImageData, load_image_data
from deepskeptic.data.subset import fixed_subset
from deepskeptic.errors import unknown_name
from deepskeptic.tasks.common.judge import Judge, RealReference


@dataclass
class Prepared:
    data: ImageData                    # training images and the held-out test images
    judge: Judge
    reference: RealReference


def data_shape(data: ImageData) -> dict[str, Any]:
    """What a gan model needs to know of the images."""
    return {"channels": data.channels, "image_size": data.image_size}


def parse_classes(value: Any) -> list[str] | None:
    if value is None or value == "" or value == []:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    return [n.strip() for n in names if n.strip()]


def load_data(settings: dict[str, Any]) -> ImageData:
    """The data set of ``settings`` (val_split 0: the test split is the held-out set), filtered to
    ``classes``; ``limit_data`` cuts it to ``limit``."""
    data = load_image_data(str(settings["data"]), image_size=settings["image_size"], val_split=0.0, unlabelled=True)
    wanted = parse_classes(settings.get("classes"))
    if wanted:
        for name in wanted:
            if name not in data.classes:
                raise unknown_name(f"class of {settings['data']}", name, data.classes)
        index = torch.tensor([data.classes.index(n) for n in wanted])
        remap = torch.full((len(data.classes),), -1, dtype=torch.long)
        remap[index] = torch.arange(len(wanted))
        tr, te = remap[data.y_train] >= 0, remap[data.y_test] >= 0
        data = dataclasses.replace(data, classes=list(wanted), x_train=data.x_train[tr], y_train=remap[data.y_train[tr]],
                                   x_test=data.x_test[te], y_test=remap[data.y_test[te]])
    return data


def limit_data(data: ImageData, limit: int | None) -> ImageData:
    """At most ``limit`` training images: a fixed subset, the same for every seed and model."""
    if limit is None or limit >= len(data.x_train):
        return data
    keep = fixed_subset(len(data.x_train), limit)
    return dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
