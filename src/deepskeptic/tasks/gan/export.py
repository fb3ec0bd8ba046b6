"""The gan task's exported graph: the generator, latent noise in, images in [0, 1] out."""
from __future__ import annotations

import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.models.gan import MLPGenerator
from deepskeptic.runs import Run

EXAMPLES = 16   # latent vectors the export is checked on (noise of a fixed seed)


class UnitGenerator(nn.Module):
    """z (B, latent_dim) -> (B, C, S, S) float images in [0, 1]: the generator's tanh range mapped
    to [0, 1] and clamped, so that images * 255 rounded are the pixels `deepskeptic generate` writes."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        g = self.generator
        if isinstance(g, MLPGenerator):   # its view(len(z), ...) would fix the traced batch size: reshape(-1, ...)
            images = g.net(z).reshape(-1, *g.shape)              # (B, C*S*S) -> (B, C, S, S)
        else:
            images = g(z)
        return ((images + 1) / 2).clamp(0, 1)                   # (B, C, S, S)


def graphs(task, run: Run) -> list[Graph]:
    generator = task.load_models(run, torch.device("cpu"))["generator"]
    latent_dim = run.config["model_config"]["latent_dim"]
    info = run.config["data_info"]
    size, channels = info["image_size"], info["channels"]
    z = torch.randn(EXAMPLES, latent_dim, generator=torch.Generator().manual_seed(0))
    sidecar = {
        "latent_dim": latent_dim, "image_size": size, "channels": channels, "classes": info.get("classes"),
        "input": f"z (B, {latent_dim}) float32, standard normal noise (mean 0, variance 1), one row per image",
        "output": (f"images (B, {channels}, {size}, {size}) float32 in [0, 1], channels first; "
                   f"multiply by 255 and round for uint8 pixels"),
    }
    return [Graph(name="generator", module=UnitGenerator(generator).eval(), inputs=(z,), input_names=["z"],
                  output_names=["images"], dynamic={"z": {0: "batch"}, "images": {0: "batch"}}, sidecar=sidecar,
                  description=f"standard normal z ({latent_dim}) -> generated {size}x{size}x{channels} images in [0, 1]")]
