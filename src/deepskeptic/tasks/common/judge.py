"""Measuring generated images, shared by the `gan` and `cyclegan` tasks.

The feature space is a judge: an image classifier trained on the same data by the `image` task
(model cnn, through training.train), cached in ~/.cache/deepskeptic/judges/<data-key>, or an
existing image run given with --judge. Features are the judge's convolutional features averaged
over the image (the output of its last convolution stage, before the classifier head) — the
counterpart of the pooled Inception features of FID. The head's own input (the penultimate layer)
was tried first and rejected: trained to name the class, it is nearly blind to texture, so real
images with added pixel noise scored as far from the real ones as any GAN's (see BENCHMARKS.md).
A judge without convolutions (an mlp passed with --judge) falls back to its penultimate layer.
In that space: the Fréchet distance (FD) between two image sets, the k-nearest-neighbour precision
and recall of Kynkäänniemi et al. (2019), and class histograms.
Images enter every function here as (N, C, S, S) uint8, the form a user sees them in.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepskeptic.data.subset import fixed_subset
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.common.pixels import channel_stats, normalise
from deepskeptic.tasks.image import ImageTask
from deepskeptic.tasks.image.data import Prepared
from deepskeptic.training import resolve_settings, train as train_run

JUDGE_VERSION = "2"  # part of the cache key: bump when the judge recipe changes


# ------------------------------------------------------------------------------ judge

@dataclass
class Judge:
    """An image classifier and its normalisation; maps uint8 images to features and logits."""
    model: nn.Module
    mean: torch.Tensor        # (C,) training-pixel mean in [0, 1]
    std: torch.Tensor
    classes: list[str]
    channels: int
    image_size: int
    run_path: str
    test_accuracy: float | None

    def to(self, device: torch.device) -> "Judge":
        self.model = self.model.to(device).eval()
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def feature_layer(self) -> tuple[nn.Module, bool]:
        """(module whose input is the feature map, whether to average it over space): the first
        Flatten after the last convolution, else the last Linear layer (its input as is)."""
        modules = list(self.model.modules())
        convs = [i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d)]
        if convs:
            flat = [m for m in modules[convs[-1]:] if isinstance(m, nn.Flatten)]
            if flat:
                return flat[0], True
        return [m for m in modules if isinstance(m, nn.Linear)][-1], False

    @torch.no_grad()
    def outputs(self, x_uint8: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, F), logits (N, K)) as float32 on the CPU."""
        layer, pool = self.feature_layer()
        store: dict[str, torch.Tensor] = {}
        hook = layer.register_forward_pre_hook(lambda m, inp: store.__setitem__("f", inp[0]))
        device = self.mean.device
        feats, logits = [], []
        try:
            for start in range(0, len(x_uint8), batch_size):
                x = normalise(x_uint8[start:start + batch_size].to(device), self.mean, self.std)
                logits.append(self.model(x).float().cpu())
                f = store["f"].float()
                feats.append((f.mean((2, 3)) if pool and f.dim() == 4 else f.flatten(1)).cpu())
        finally:
            hook.remove()
        if not feats:
            return torch.zeros(0, 1), torch.zeros(0, len(self.classes))
        return torch.cat(feats), torch.cat(logits)


def _cache_root() -> Path:
    root = os.environ.get("DEEPSKEPTIC_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "deepskeptic"


def data_key(name: str, data, epochs: int, limit: int) -> str:
    """A cache key naming the data set and hashing its training images, labels, classes and recipe."""
    h = hashlib.sha256()
    for part in (data.x_train.numpy().tobytes(), data.y_train.numpy().tobytes(),
                 "|".join(data.classes).encode(), f"{epochs}/{limit}/{JUDGE_VERSION}".encode()):
        h.update(part)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(str(name)).name)[:40] or "data"
    return f"{safe}-{data.image_size}px-{h.hexdigest()[:12]}"


def open_judge(path: str, channels: int, image_size: int) -> Judge:
    """An existing `image` run as judge; its images must have the given channels and size."""
    run = Run.open(path, task="image")
    model = ImageTask().load_models(run, torch.device("cpu"))["model"]
    info = run.config["data_info"]
    if info["channels"] != channels or info["image_size"] != image_size:
        raise UserError(f"judge {path} was trained on {info['image_size']} px {info['channels']}-channel images, "
                        f"but these are {image_size} px {channels}-channel: pass a judge trained on the same "
                        f"size (or leave --judge out to train one)")
    return Judge(model.eval(), torch.tensor(info["mean"]), torch.tensor(info["std"]), list(info["classes"]),
                 channels, image_size, str(run.path), run.metrics.get("test_accuracy"))


def get_judge(name: str, data, settings: dict[str, Any]) -> Judge:
    """The judge for ``data`` (an ImageData with >= 2 classes): --judge RUN, the cache, or a new one."""
    if settings.get("judge"):
        return open_judge(settings["judge"], data.channels, data.image_size)
    if data.num_classes < 2:   # no labels to learn: the judge learns which way up an image is
        data = rotation_data(data)
    epochs, limit = settings["judge_epochs"], settings["judge_limit"]
    target = _cache_root() / "judges" / data_key(name, data, epochs, limit)
    if not (target / "metrics.json").is_file():
        _train_judge(name, data, settings, epochs, limit, target)
    return open_judge(str(target), data.channels, data.image_size)


ROTATIONS = ["upright", "turned-left", "upside-down", "turned-right"]


def rotation_data(data):
    """A labelled task made from unlabelled images: each image four times, turned by 0, 90, 180 and
    270 degrees, labelled by the turn (Gidaris et al. 2018). Telling which way up an image is needs
    the shapes and parts of its objects, so the judge's features describe them, as a class judge's
    do; its histogram over generated images is the share it sees as upright."""
    def turned(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, S, S) -> (4N, C, S, S) images and (4N,) turns, 0..3 quarter turns."""
        return torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)]), torch.arange(4).repeat_interleave(len(x))
    x_train, y_train = turned(data.x_train)
    x_test, y_test = turned(data.x_test)
    return dataclasses.replace(data, name=f"{data.name}-rotations", classes=list(ROTATIONS),
                               x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _train_judge(name: str, data, settings: dict[str, Any], epochs: int, limit: int, target: Path) -> None:
    task = ImageTask()
    if limit and len(data.x_train) > limit:  # a fixed subset: the judge never depends on the GAN's seed
        keep = fixed_subset(len(data.x_train), limit)
        data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])
    print(f"training the judge classifier (image task, cnn, {epochs} epoch(s) on {len(data.x_train)} images); "
          f"cached in {target}", file=sys.stderr, flush=True)
    prepared = Prepared(data, *channel_stats(data.x_train))
    flags = {"data": str(name), "model": "cnn", "epochs": epochs, "seed": 0, "progress": False,
             "device": settings.get("device", "auto")}
    judge_settings = resolve_settings(task, flags, None)
    for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a judge training that was killed
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    rng = torch.get_rng_state()  # training the judge must not move the GAN's random stream
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        train_run(task, judge_settings, prepared=prepared, out=tmp)
    finally:
        torch.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
    if (target / "metrics.json").is_file():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    shutil.rmtree(target, ignore_errors=True)  # an unfinished copy
    os.replace(tmp, target)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


# ------------------------------------------------------------------------------ measures

def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) in float64."""
    f = features.double().numpy()
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def fd_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)): the Fréchet distance of two Gaussians."""
    from scipy import linalg
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular covariances are normal: dead ReLU units, few samples
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():  # nudge both covariances off singularity
            eye = np.eye(len(sigma1)) * 1e-6
            covmean = linalg.sqrtm((sigma1 + eye) @ (sigma2 + eye))
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(np.real(covmean))
    return float(max(0.0, value))


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """FD between two feature sets (N, F) and (M, F)."""
    return fd_from_stats(*feature_stats(a), *feature_stats(b))


def _kth_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)                                        # (N, N), 0 on the diagonal
    return d.kthvalue(min(k + 1, len(x)), dim=1).values          # k-th neighbour other than itself


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Share of fakes inside the real manifold (precision) and of reals inside the fake one (recall).

    A manifold is the union of balls around its points with the radius of each point's k-th nearest
    neighbour (Kynkäänniemi et al. 2019).
    """
    real, fake = real.double(), fake.double()
    d = torch.cdist(real, fake)                                  # (Nr, Nf)
    precision = (d <= _kth_radius(real, k)[:, None]).any(0).double().mean().item()
    recall = (d <= _kth_radius(fake, k)[None, :]).any(1).double().mean().item()
    return precision, recall


def class_shares(logits: torch.Tensor, num_classes: int) -> np.ndarray:
    """Share of images the judge assigns to each class (K,)."""
    counts = torch.bincount(logits.argmax(1), minlength=num_classes).double()
    return (counts / max(1, len(logits))).numpy()


def nearest(queries: torch.Tensor, pool: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query image, the index of and pixel distance (RMS, 0..255) to its nearest pool image."""
    q = queries.flatten(1).float()
    best_d = torch.full((len(q),), float("inf"))
    best_i = torch.zeros(len(q), dtype=torch.long)
    for start in range(0, len(pool), chunk):
        d = torch.cdist(q, pool[start:start + chunk].flatten(1).float())    # (Q, chunk)
        value, index = d.min(1)
        better = value < best_d
        best_d[better], best_i[better] = value[better], index[better] + start
    return best_i, best_d / q.shape[1] ** 0.5


@dataclass
class RealReference:
    """The real images generated ones are measured against, and the floor they set."""
    heldout: torch.Tensor          # (n, C, S, S) uint8 held-out images
    heldout_features: torch.Tensor  # (n, F)
    heldout_shares: np.ndarray     # (K,) judge's class shares on held-out images
    floor: dict[str, float]        # fd_floor, precision_floor, recall_floor: a training sample vs held-out


def real_reference(judge: Judge, train: torch.Tensor, heldout: torch.Tensor, n: int) -> RealReference:
    """Sample ``n`` held-out and ``n`` training images (fixed) and measure the training sample."""
    g = torch.Generator().manual_seed(0)
    held = heldout[torch.randperm(len(heldout), generator=g)[:n]]
    tr = train[torch.randperm(len(train), generator=g)[:len(held)]]
    if len(held) < 2:
        raise UserError(f"only {len(held)} held-out image(s) to measure against: add images")
    fh, lh = judge.outputs(held)
    ft, _ = judge.outputs(tr)
    p, r = precision_recall(fh, ft)
    floor = {"fd_floor": frechet_distance(ft, fh), "precision_floor": p, "recall_floor": r}
    return RealReference(held, fh, class_shares(lh, len(judge.classes)), floor)


def measure(judge: Judge, fake: torch.Tensor, ref: RealReference) -> dict[str, Any]:
    """FD, precision, recall and the class histogram of generated uint8 images against ``ref``."""
    features, logits = judge.outputs(fake)
    precision, recall = precision_recall(ref.heldout_features, features)
    shares = class_shares(logits, len(judge.classes))
    real = ref.heldout_shares
    covered = int(((real > 0) & (shares >= 0.25 * real)).sum())  # classes at >= 1/4 of their real share
    return {"fd": frechet_distance(features, ref.heldout_features), "precision": precision, "recall": recall,
            "class_tv_distance": float(0.5 * np.abs(shares - ref.heldout_shares).sum()),
            "classes_covered": covered,
            "class_histogram": {c: float(s) for c, s in zip(judge.classes, shares)},
            "heldout_class_histogram": {c: float(s) for c, s in zip(judge.classes, ref.heldout_shares)}}
