"""A finished image run applied to images: class probabilities, and the test metrics again."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from deepskeptic.data.images import convert_image, load_image_files
from deepskeptic.errors import UserError
from deepskeptic.runs import Run
from deepskeptic.tasks.base import PredictOptions, Predictor
from deepskeptic.tasks.common.classification import classification_metrics
from deepskeptic.tasks.common.metrics import prefixed
from deepskeptic.tasks.image.jobs import predict_logits


class ImagePredictor(Predictor):
    """The run's model (on the CPU by default) with its classes, image size, channels and the
    training pixels' statistics (config.json's data_info)."""

    def __init__(self, task, run: Run, device: torch.device | None = None):
        super().__init__(task, run, device)
        self.model = task.load_models(run, self.device)["model"]
        self.info = run.config["data_info"]
        self.classes: list[str] = self.info["classes"]
        self.channels: int = self.info["channels"]
        self.image_size: int = self.info["image_size"]
        self.mean = torch.tensor(self.info["mean"], device=self.device)
        self.std = torch.tensor(self.info["std"], device=self.device)

    # --- inputs ---
    def read(self, paths: list[str]) -> tuple[torch.Tensor, list[str]]:
        """Image files (folders: the images inside, sorted) -> ((N, C, S, S) uint8 at the run's
        channels and size, the file paths)."""
        return load_image_files(paths, image_size=self.image_size, channels=self.channels)

    def images(self, inputs: Any, names: Sequence[str] | None = None) -> torch.Tensor:
        """Decoded images -> (N, C, S, S) uint8 at the run's channels and size.

        ``inputs`` is a torch uint8 tensor (N, C, H, W) (used as it is at the run's channels and
        size, otherwise each image converted); a NumPy array whose first axis runs over the images,
        (N, H, W) or (N, H, W, C); or a list of PIL images and (H, W) / (H, W, C) NumPy arrays of
        any size and mode. Everything that is not already sized goes through the conversion of
        image files (data.images.convert_image): grey or RGB to the run's channels, transparency
        on white, 16-bit and float scaled, stretched to S x S with PIL's bilinear resize."""
        size, channels = self.image_size, self.channels
        if isinstance(inputs, Image.Image):
            inputs = [inputs]
        if isinstance(inputs, torch.Tensor):
            if inputs.dtype != torch.uint8 or inputs.ndim != 4 or inputs.shape[1] not in (1, 3, 4):
                raise UserError(f"an image tensor must be uint8 shaped (N, C, H, W) with C 1, 3 or 4, "
                                f"got {inputs.dtype} {tuple(inputs.shape)}")
            if tuple(inputs.shape[1:]) == (channels, size, size):
                return inputs.cpu()
            inputs = list(inputs.cpu().permute(0, 2, 3, 1).numpy())   # N x (H, W, C), PIL's layout
        elif isinstance(inputs, np.ndarray):
            if inputs.ndim not in (3, 4):
                raise UserError(f"an array of images must be shaped (N, H, W) or (N, H, W, C), got "
                                f"{inputs.shape}; put a single image in a list")
            inputs = list(inputs)
        elif not isinstance(inputs, (list, tuple)):
            raise UserError(f"images must be a uint8 tensor, an array or a list of PIL images or arrays, "
                            f"not {type(inputs).__name__}")
        out = np.zeros((len(inputs), channels, size, size), dtype=np.uint8)
        for i, image in enumerate(inputs):
            name = names[i] if names is not None and i < len(names) else str(i)
            if not isinstance(image, (Image.Image, np.ndarray)):
                raise UserError(f"image {name} is a {type(image).__name__}: give PIL images or NumPy arrays")
            try:
                out[i] = convert_image(image, channels, size)
            except Exception as e:  # noqa: BLE001 - any failure means the image cannot be read
                raise UserError(f"cannot read image {name} ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        return torch.from_numpy(out)

    # --- the model ---
    def logits(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) uint8 -> (N, classes) logits, on the CPU."""
        return predict_logits(self.model, x_uint8, self.mean, self.std, self.device)

    def probabilities(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) uint8 -> (N, classes) class probabilities."""
        return self.logits(x_uint8).softmax(1)

    def predict(self, inputs: Any, *, names: Sequence[str] | None = None, top_k: int = 3) -> list[dict[str, Any]]:
        """[{"file": name, "top": [{"class", "probability"}, ...]}] per image, the ``top_k`` most
        likely classes first (probabilities rounded to 5 places); names default to "0", "1", ..."""
        if top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {top_k}")
        x = self.images(inputs, names)
        names = [str(i) for i in range(len(x))] if names is None else list(names)
        if len(names) != len(x):
            raise UserError(f"{len(names)} names for {len(x)} images")
        probs = self.probabilities(x)
        k = min(top_k, probs.shape[1])
        top = probs.topk(k, dim=1)
        return [{"file": name, "top": [{"class": self.classes[c], "probability": round(p, 5)}
                                       for p, c in zip(values.tolist(), indices.tolist())]}
                for name, values, indices in zip(names, top.values, top.indices)]

    def format(self, results: list[dict[str, Any]]) -> str:
        return "\n".join(f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
                         for r in results)

    def predict_command(self, options: PredictOptions) -> list[dict[str, Any]]:
        if not options.inputs:
            raise UserError("name at least one image file or folder to predict")
        return super().predict_command(options)

    # --- the test metrics ---
    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        """The test metrics on the run's own test images, or on ``data``'s (at the run's size)."""
        info = self.info
        settings = {**self.run.config["settings"], "limit": None}
        if data is not None:
            settings.update(data=data, image_size=info["image_size"])
        d = self.task.prepare(settings).data
        if d.channels != info["channels"]:
            raise UserError(f"{data} has {d.channels}-channel images but the model was trained on {info['channels']}")
        if d.classes != info["classes"]:
            raise UserError(f"the classes of {data} ({', '.join(d.classes)}) differ from the run's "
                            f"({', '.join(info['classes'])})")
        metrics = prefixed(classification_metrics(self.logits(d.x_test), d.y_test, d.classes), "test")
        return {"data": str(settings["data"]), "test_images": len(d.x_test), **metrics}
