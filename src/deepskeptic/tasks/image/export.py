"""The image task's exported graph: uint8 pixels in, the run's normalisation inside, logits and
class probabilities out."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.runs import Run

EXAMPLES = 32   # real test images the export is checked on


class PixelClassifier(nn.Module):
    """(B, C, S, S) uint8 pixels -> ((B, classes) logits, (B, classes) probabilities): the
    training pixels' per-channel standardisation, the network and a softmax."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (pixels.float() / 255 - self.mean) / self.std        # (B, C, S, S), as tasks/common/pixels.normalise
        logits = self.model(x)                                   # (B, classes)
        return logits, logits.softmax(1)


def graphs(task, run: Run) -> list[Graph]:
    info = run.config["data_info"]
    model = task.load_models(run, torch.device("cpu"))["model"]
    size, channels = info["image_size"], info["channels"]
    x_test = task.prepare({**run.config["settings"], "image_size": size}).data.x_test   # as `evaluate` loads it
    sidecar: dict[str, Any] = {
        "classes": info["classes"], "image_size": size, "channels": channels,
        "mean": info["mean"], "std": info["std"],
        "input": (f"uint8 pixels (B, {channels}, {size}, {size}), channels first"
                  f"{' (RGB)' if channels == 3 else ' (grayscale)' if channels == 1 else ''}; "
                  f"no preprocessing needed beyond resizing to {size}x{size} (bilinear, as deepskeptic "
                  f"does); the graph divides by 255 and standardises with mean and std itself"),
        "output": "logits (B, classes) and their softmax, probabilities (B, classes), in the order of 'classes'",
    }
    return [Graph(name="model", module=PixelClassifier(model, info["mean"], info["std"]).eval(),
                  inputs=(x_test[:EXAMPLES].contiguous(),), input_names=["pixels"],
                  output_names=["logits", "probabilities"],
                  dynamic={"pixels": {0: "batch"}, "logits": {0: "batch"}, "probabilities": {0: "batch"}},
                  sidecar=sidecar,
                  description=f"{size}x{size}x{channels} uint8 images -> class logits and probabilities "
                              f"over {len(info['classes'])} classes")]
