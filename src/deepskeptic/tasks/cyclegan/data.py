"""Unpaired image domains for the `cyclegan` task, read with deepskeptic.data.images.

Two sources: a built-in pair of classes of a built-in data set (``fashion:sneaker~ankle-boot``,
``digits:3~8``), or two folders of images (``--data-a DIR --data-b DIR``, or ``--data DIR_A~DIR_B``),
any sizes, resized to one square size. Each domain keeps a fixed held-out part for measuring.
``Prepared`` adds the judge telling the domains apart and the held-out images it measures against.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from deepskeptic.data.images import (GRAY_MODES, IMAGE_EXTENSIONS, ImageData, _image_files, load_image_data,
                                     load_image_files)
from deepskeptic.data.subset import fixed_subset
from deepskeptic.errors import UserError, unknown_name
from deepskeptic.tasks.common.judge import Judge, RealReference

BUILTIN_SETS = {"fashion": "fashion-mnist", "fashion-mnist": "fashion-mnist", "digits": "digits"}
DEFAULT_PAIR = "fashion:sneaker~ankle-boot"
HELDOUT_FRACTION = 0.1  # of each folder domain, fixed (seed 0), for measuring translations
MAX_DEFAULT_SIZE = 256  # the paper's size; folders of larger images are shrunk to it by default


@dataclass
class PairData:
    """Two domains as (N, C, S, S) uint8 tensors; ``names`` are the domains' names (a, b)."""
    names: tuple[str, str]
    a_train: torch.Tensor
    b_train: torch.Tensor
    a_test: torch.Tensor
    b_test: torch.Tensor
    source: str

    @property
    def channels(self) -> int:
        return int(self.a_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.a_train.shape[2])


def pair_shape(pair: PairData) -> dict[str, Any]:
    """What a cyclegan model needs to know of the images."""
    return {"channels": pair.channels, "image_size": pair.image_size}


def pair_spec(settings: dict[str, Any]) -> tuple[str, ...]:
    """('builtin', set, class_a, class_b) or ('folders', dir_a, dir_b) from --data or --data-a/--data-b."""
    a, b = settings.get("data_a"), settings.get("data_b")
    if a or b:
        if not (a and b):
            raise UserError("give both --data-a DIR and --data-b DIR (one folder of images per domain)")
        return ("folders", str(a), str(b))
    spec = str(settings.get("data") or DEFAULT_PAIR)
    head, sep, tail = spec.partition(":")
    if sep and head in BUILTIN_SETS:
        names = tail.split("~")
        if len(names) != 2 or not all(names):
            raise UserError(f"a built-in pair is written SET:CLASS~CLASS, e.g. {DEFAULT_PAIR}; got {spec!r}")
        return ("builtin", BUILTIN_SETS[head], names[0], names[1])
    parts = spec.split("~")
    if len(parts) == 2 and all(parts):
        return ("folders", parts[0], parts[1])
    raise UserError(f"--data {spec!r} is not a pair: give a built-in pair like {DEFAULT_PAIR} or digits:3~8, "
                    f"DIR_A~DIR_B, or --data-a DIR --data-b DIR")


@dataclass
class Prepared:
    pair: PairData
    judge: Judge
    reference_a: RealReference   # held-out A: what B -> A translations are measured against
    reference_b: RealReference


def _fixed_subset(x: torch.Tensor, limit: int | None) -> torch.Tensor:
    if limit is None or limit >= len(x):
        return x
    return x[fixed_subset(len(x), limit)]


def load_pair(settings: dict[str, Any]) -> PairData:
    """Both domains at full size; ``limit_pair`` applies --limit."""
    spec = pair_spec(settings)
    if spec[0] == "builtin":
        return _builtin_pair(*spec[1:], settings.get("image_size"))
    return _folder_pair(spec[1], spec[2], settings.get("image_size"))


def limit_pair(pair: PairData, limit: int | None) -> PairData:
    """At most ``limit`` training images per domain (fixed subsets); held-out parts unchanged."""
    return dataclasses.replace(pair, a_train=_fixed_subset(pair.a_train, limit), b_train=_fixed_subset(pair.b_train, limit))


def _builtin_pair(dataset: str, class_a: str, class_b: str, size: int | None) -> PairData:
    data = load_image_data(dataset, image_size=size, val_split=0.0)
    for name in (class_a, class_b):
        if name not in data.classes:
            raise unknown_name(f"class of {dataset}", name, data.classes)
    if class_a == class_b:
        raise UserError(f"the two domains must differ, got {class_a} twice")
    ia, ib = data.classes.index(class_a), data.classes.index(class_b)
    return PairData((class_a, class_b), data.x_train[data.y_train == ia], data.x_train[data.y_train == ib],
                    data.x_test[data.y_test == ia], data.x_test[data.y_test == ib], f"{dataset}:{class_a}~{class_b}")


def _peek(files: list[Path]) -> tuple[bool, list[int]]:
    """(every image grayscale-like, the longer side of each image) from the headers only."""
    gray, sides = True, []
    for p in files:
        try:
            with Image.open(p) as im:
                gray &= im.mode in GRAY_MODES
                sides.append(max(im.size))
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unreadable
            raise UserError(f"cannot read image '{p}' ({str(exc)[:100] or type(exc).__name__}): fix or remove it") from None
    return gray, sides


def _folder_files(folder: str) -> list[Path]:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"domain folder '{folder}' does not exist or is not a folder: give a folder of images")
    files = _image_files(root)
    if not files:
        raise UserError(f"domain folder '{folder}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _folder_pair(dir_a: str, dir_b: str, size: int | None) -> PairData:
    files_a, files_b = _folder_files(dir_a), _folder_files(dir_b)
    gray_a, sides_a = _peek(files_a)
    gray_b, sides_b = _peek(files_b)
    channels = 1 if gray_a and gray_b else 3       # mixed domains: both become RGB
    if size is None:
        median = int(statistics.median(sides_a + sides_b))
        size = max(8, min(MAX_DEFAULT_SIZE, median) // 4 * 4)
    xa, _ = load_image_files([dir_a], image_size=size, channels=channels)
    xb, _ = load_image_files([dir_b], image_size=size, channels=channels)
    name_a, name_b = Path(dir_a).expanduser().resolve().name, Path(dir_b).expanduser().resolve().name
    if name_a == name_b:
        name_a, name_b = f"{name_a} (a)", f"{name_b} (b)"
    (a_tr, a_te), (b_tr, b_te) = _holdout(xa, dir_a), _holdout(xb, dir_b)
    return PairData((name_a, name_b), a_tr, b_tr, a_te, b_te, f"{Path(dir_a).resolve()}~{Path(dir_b).resolve()}")


def _holdout(x: torch.Tensor, folder: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out): at least 2 held-out images, a fixed 10 % otherwise."""
    n_test = max(2, round(HELDOUT_FRACTION * len(x)))
    if len(x) < n_test + 2:
        raise UserError(f"domain folder '{folder}' has {len(x)} image(s); at least {n_test + 2} are needed "
                        f"(2 held out for measuring): add images")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[n_test:]], x[order[:n_test]]


def judge_data(pair: PairData) -> ImageData:
    """The pair as a two-class ImageData (A = 0, B = 1) for training a domain classifier."""
    x_train = torch.cat([pair.a_train, pair.b_train])
    y_train = torch.cat([torch.zeros(len(pair.a_train)), torch.ones(len(pair.b_train))]).long()
    x_test = torch.cat([pair.a_test, pair.b_test])
    y_test = torch.cat([torch.zeros(len(pair.a_test)), torch.ones(len(pair.b_test))]).long()
    return ImageData(pair.source, list(pair.names), x_train, y_train, x_train[:0], y_train[:0], x_test, y_test,
                     source=pair.source)
