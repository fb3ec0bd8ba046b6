"""The cyclegan task's exported graphs: both generators, uint8 pixels in, translated images in [0, 1] out."""
from __future__ import annotations

import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.runs import Run
from deepskeptic.tasks.cyclegan.data import load_pair

EXAMPLES = 16   # held-out images per domain the export is checked on


class PixelTranslator(nn.Module):
    """(B, C, S, S) uint8 -> (B, C, S, S) float in [0, 1]: pixels to the generator's [-1, 1], the
    generator, its tanh range back to [0, 1] (clamped); * 255 rounded are `deepskeptic translate`'s pixels."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 127.5 - 1                           # as tasks/common/adversarial.to_float
        return ((self.generator(x) + 1) / 2).clamp(0, 1)         # (B, C, S, S)


def graphs(task, run: Run) -> list[Graph]:
    models = task.load_models(run, torch.device("cpu"))
    settings = run.config["settings"]
    info = run.config["data_info"]
    names, size, channels = info["names"], info["image_size"], info["channels"]
    pair = load_pair({**settings, "image_size": size})     # the run's held-out images of each domain
    out = []
    for key, source, target, images in (("g_ab", names[0], names[1], pair.a_test),
                                        ("g_ba", names[1], names[0], pair.b_test)):
        sidecar = {
            "direction": f"{source} -> {target}", "domains": {"a": names[0], "b": names[1]},
            "image_size": size, "channels": channels,
            "input": (f"uint8 pixels (B, {channels}, {size}, {size}) of domain '{source}', channels first; "
                      f"no preprocessing needed beyond resizing to {size}x{size}"),
            "output": (f"images (B, {channels}, {size}, {size}) float32 in [0, 1] in the style of '{target}'; "
                       f"multiply by 255 and round for uint8 pixels"),
        }
        out.append(Graph(name=key, module=PixelTranslator(models[key]).eval(), inputs=(images[:EXAMPLES].contiguous(),),
                         input_names=["pixels"], output_names=["images"],
                         dynamic={"pixels": {0: "batch"}, "images": {0: "batch"}}, sidecar=sidecar,
                         description=f"{size}x{size}x{channels} uint8 images of '{source}' -> translated to "
                                     f"'{target}', float in [0, 1]"))
    return out
