"""Using a finished gan run: generate images from it, measure it again."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepskeptic.errors import UserError
from deepskeptic.tasks.base import GENERATE_SETTINGS, GenerateOptions, Predictor
from deepskeptic.tasks.common.adversarial import save_png
from deepskeptic.tasks.gan.jobs import sample
from deepskeptic.tasks.gan.measure import measure_run
from deepskeptic.training import rename_settings


class GanPredictor(Predictor):
    """The run's generator. ``generate(n, seed)`` -> (n, C, S, S) uint8 images; ``evaluate()`` the
    final measures again (against the run's own data). A gan run has no inputs to predict from."""

    def __init__(self, task, run, device=None):
        super().__init__(task, run, device)
        self.generator = task.load_models(run, self.device)["generator"]
        self.latent_dim = run.config["model_config"]["latent_dim"]

    def generate(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images (n, C, S, S) uint8 from the noise of ``seed`` (the same seed, the same images)."""
        GENERATE_SETTINGS["n"].check(n)         # the flags' declarations, for the Python API too
        GENERATE_SETTINGS["seed"].check(seed)
        return sample(self.generator, n, self.latent_dim, seed, self.device).numpy()

    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        if data is not None:
            raise UserError("a gan run is measured against its own data; leave --data out")
        settings = rename_settings(self.task, self.run.config["settings"], "run")   # runs saved fd_samples
        return measure_run(self.generator, self.latent_dim, self.task.prepare(settings), settings["seed"],
                           self.device)


def generate_command(predictor: GanPredictor, options: GenerateOptions) -> int:
    """`deepskeptic generate RUN`: one PNG per image in --out (default RUN/generated), and a grid of them."""
    images = torch.from_numpy(predictor.generate(options.n, options.seed))   # (n, C, S, S) uint8
    out = Path(options.out) if options.out else predictor.run.path / "generated"
    files = []
    for i, image in enumerate(images):
        path = out / f"sample-{i:04d}.png"
        save_png(path, image[None], cols=1)
        files.append(str(path))
    if options.n > 1:
        save_png(out / "grid.png", images, cols=min(8, options.n))
    if options.as_json:
        print(json.dumps({"files": files, "grid": str(out / "grid.png") if options.n > 1 else None}))
    else:
        print(f"wrote {len(files)} image(s) to {out}" + (" (and grid.png)" if options.n > 1 else ""))
    return 0
