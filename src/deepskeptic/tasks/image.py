"""The `image` task: classify images; cnn and alexnet on trial against mlp and logreg."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepskeptic.engine import Job, StepContext
from deepskeptic.errors import UserError
from deepskeptic.models import registry
from deepskeptic.models.image import AlexNetConfig, alexnet_variant
from deepskeptic.runs import Run, resolve_device
from deepskeptic.tasks.base import Task


@dataclass
class Prepared:
    data: Any                 # deepskeptic.data.images.ImageData
    mean: list[float]         # per-channel mean of the training pixels in [0, 1]
    std: list[float]


def normalise(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float, standardised per channel with the training statistics."""
    return (x_uint8.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


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
        decay = [p for p in model.parameters() if p.ndim > 1]      # weights decay; biases and BN do not
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        self.optimizers = {"main": torch.optim.AdamW(
            [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=settings["lr"])}
        self.device = device
        self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
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
        order = torch.randperm(n, generator=generator).to(self.device)
        full = n // self.batch_size
        if full == 0:  # fewer examples than one batch
            return [order]
        return list(order[:full * self.batch_size].view(full, self.batch_size))  # drop the ragged tail

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        x = normalise(self.x_train[index], self.mean, self.std)       # (B, C, H, W) float
        y = self.y_train[index]
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


def flops_per_example(model: nn.Module, channels: int, size: int) -> int:
    """Forward FLOPs for one image (a multiply-add counts 2), as torch's FLOP counter sees them."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size))
    model.train()
    return int(counter.get_total_flops())


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, f1_score
    pred = logits.argmax(1)
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == y[:, None]).any(1).float().mean().item()
    cm = confusion_matrix(y.numpy(), pred.numpy(), labels=list(range(len(classes))))
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"test_accuracy": (pred == y).float().mean().item(), "test_top5_accuracy": top5,
            "test_loss": F.cross_entropy(logits, y).item(),
            "test_macro_f1": float(f1_score(y.numpy(), pred.numpy(), average="macro", zero_division=0)),
            "per_class_accuracy": {c: float(a) for c, a in zip(classes, per_class)},
            "confusion_matrix": cm.tolist()}


class ImageTask(Task):
    name = "image"
    description = "recognise images: cnn and alexnet against mlp and logreg"
    primary_metric = "test_accuracy"
    higher_is_better = True
    default_epochs = 10
    default_models = ("logreg", "mlp", "cnn", "alexnet")
    task_defaults = {
        "image_size": None,       # pixels per side; default: the data's own size
        "val_split": 0.1,         # fraction of the training images held out for validation
        "limit": None,            # use at most this many training images (quick tries)
        "augment": False,         # random shifts of up to size/14 px; the model's train_defaults set it
        "flip": False,            # random horizontal flips: only for data where mirror images are the same class
        "label_smoothing": 0.1,   # softens one-hot targets; helps short budgets generalise
    }

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--image-size", type=int, help="resize images to this many pixels per side")
        parser.add_argument("--val-split", type=float, help="fraction of training images for validation (0.1)")
        parser.add_argument("--limit", type=int, help="use at most this many training images")
        parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                            help="random shifts during training (default: on for alexnet, off for the others)")
        parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                            help="random horizontal flips during training (default: off)")
        parser.add_argument("--label-smoothing", type=float, help="label smoothing (0.1)")

    def prepare(self, settings: dict[str, Any]) -> Prepared:
        from deepskeptic.data.images import load_image_data
        if settings["image_size"] is not None and settings["image_size"] < 1:
            raise UserError(f"--image-size must be a positive number of pixels, got {settings['image_size']}")
        if settings["limit"] is not None and settings["limit"] < 1:
            raise UserError(f"--limit must be a positive number of images, got {settings['limit']}")
        data = load_image_data(str(settings["data"]), image_size=settings["image_size"],
                               val_split=settings["val_split"], seed=0, limit=settings["limit"])
        if len(data.x_test) == 0:
            raise UserError(f"data set {settings['data']} has no test images")
        pixels = data.x_train.float().div(255).transpose(0, 1).reshape(data.channels, -1)  # (C, N*H*W)
        return Prepared(data, pixels.mean(1).tolist(), pixels.std(1).clamp_min(1e-6).tolist())

    def model_config(self, settings: dict[str, Any], data) -> Any:
        cfg = registry.make_config(self.name, settings["model"], **{
            **settings["model_config"], "in_channels": data.channels, "image_size": data.image_size,
            "num_classes": data.num_classes})
        if isinstance(cfg, AlexNetConfig):
            cfg = dataclasses.replace(cfg, variant=alexnet_variant(cfg))
        return cfg

    def create_model(self, settings: dict[str, Any], data) -> nn.Module:
        cfg = self.model_config(settings, data)
        try:
            return registry.spec(self.name, settings["model"]).build(cfg)
        except ValueError as exc:
            raise UserError(f"images of {data.image_size} px do not fit model '{settings['model']}': {exc}; "
                            f"pass a larger --image-size or choose another --model") from None

    def build(self, settings, prepared: Prepared, device):
        data = prepared.data
        # Small data sets still need enough steps per epoch: at most 1/16 of the images per batch.
        settings["batch_size"] = min(settings["batch_size"], max(16, len(data.x_train) // 16))
        model = self.create_model(settings, data)
        flops = flops_per_example(model, data.channels, data.image_size)
        model = model.to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        info = {"model_config": dataclasses.asdict(self.model_config(settings, data)),
                "flops_per_example": flops,
                "data_info": {"name": data.name, "source": data.source, "classes": data.classes,
                              "channels": data.channels, "image_size": data.image_size,
                              "mean": prepared.mean, "std": prepared.std, "train": len(data.x_train),
                              "val": len(data.x_val), "test": len(data.x_test), "skipped": data.skipped}}
        return ImageJob(model, prepared, settings, device), info

    def finish(self, run, job: ImageJob, prepared: Prepared, settings, device):
        logits = predict_logits(job.model, prepared.data.x_test, job.mean, job.std, device)
        return classification_metrics(logits, prepared.data.y_test, prepared.data.classes)

    # --- using a finished run ---
    def load_model(self, run: Run, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
        config = run.config
        model = registry.spec(self.name, config["settings"]["model"]).build(
            registry.make_config(self.name, config["settings"]["model"], **config["model_config"]))
        run.load_weights({"model": model})
        return model.to(device).eval(), config["data_info"]

    def write_report(self, run: Run, prepared: Prepared | None = None, metrics: dict | None = None) -> None:
        from deepskeptic.tasks.image_report import write_image_report
        write_image_report(self, run, prepared, metrics)

    def device_for(self, run: Run) -> torch.device:
        return resolve_device("auto")

    def datasets(self) -> list[dict[str, Any]]:
        from deepskeptic.data.images import image_datasets
        return image_datasets()

    def input_shape(self, data: str | None) -> dict[str, Any]:
        if data is None:
            return {"channels": 1, "image_size": 28, "num_classes": 10,
                    "description": "28x28 grayscale images, 10 classes (Fashion-MNIST); --data for yours"}
        d = self.prepare({"data": data, "image_size": None, "val_split": 0.1, "limit": None}).data
        return {"channels": d.channels, "image_size": d.image_size, "num_classes": d.num_classes,
                "description": f"{d.image_size}x{d.image_size}x{d.channels} images, {d.num_classes} classes ({data})"}

    def example_model(self, name: str, shape: dict[str, Any]) -> nn.Module:
        data = argparse.Namespace(channels=shape["channels"], image_size=shape["image_size"],
                                  num_classes=shape["num_classes"])
        return self.create_model({"model": name, "model_config": {}}, data)

    def evaluate(self, run: Run, data: str | None) -> dict[str, Any]:
        from deepskeptic.tasks import image_use
        return image_use.evaluate(self, run, data)

    def predict(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import image_use
        return image_use.predict(self, run, args)

    def explain(self, run: Run, args: argparse.Namespace) -> int:
        from deepskeptic.tasks import image_use
        return image_use.explain(self, run, args)
