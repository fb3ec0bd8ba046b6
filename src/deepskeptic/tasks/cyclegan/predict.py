"""Using a finished cyclegan run: translate images from one domain to the other, measure it again."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from deepskeptic.data.images import convert_image, load_image_files
from deepskeptic.errors import UserError
from deepskeptic.tasks.base import Predictor, TranslateOptions
from deepskeptic.tasks.common.adversarial import save_png
from deepskeptic.tasks.cyclegan.measure import measure, translate_images

DIRECTIONS = ("a2b", "b2a")


class CycleGanPredictor(Predictor):
    """The run's two generators (the identity's: the input unchanged). ``translate(images,
    direction)`` -> (N, C, S, S) uint8; ``read(paths)`` decodes image files at the run's size and
    channels; ``evaluate()`` the final measures again. A cyclegan run has no predict command."""

    def __init__(self, task, run, device=None):
        super().__init__(task, run, device)
        models = task.load_models(run, self.device)
        self.generators = {"a2b": models["g_ab"], "b2a": models["g_ba"]}
        info = run.config["data_info"]
        self.names: tuple[str, str] = tuple(info["names"])
        self.channels, self.image_size = info["channels"], info["image_size"]

    def read(self, paths: list[str]) -> tuple[torch.Tensor, list[str]]:
        """Image files or folders -> ((N, C, S, S) uint8 at the run's channels and size, file paths)."""
        return load_image_files(paths, image_size=self.image_size, channels=self.channels)

    def translate(self, images: Any, direction: str = "a2b") -> np.ndarray:
        """``images`` translated a2b (domain A -> B) or b2a: (N, C, S, S) uint8.

        ``images``: a batch (N, C, S, S) uint8 array or tensor at the run's channels and size, or
        one or a list of PIL images or (H, W[, C]) arrays as PIL reads them, converted (resized,
        to the run's channels) as image files are."""
        if direction not in DIRECTIONS:
            raise UserError(f"direction must be a2b or b2a, got {direction!r}")
        x = self._batch(images)
        return translate_images(self.generators[direction], x, self.device).numpy()

    def _batch(self, images: Any) -> torch.Tensor:
        shape = (self.channels, self.image_size, self.image_size)
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            x = torch.as_tensor(images)
            if x.dtype != torch.uint8 or tuple(x.shape[1:]) != shape:
                raise UserError(f"a batch of images must be (N, {', '.join(map(str, shape))}) uint8 for this run, "
                                f"got {tuple(x.shape)} {x.dtype}")
            return x
        items: Sequence[Any] = [images] if isinstance(images, (Image.Image, np.ndarray)) else list(images)
        converted = [convert_image(im if isinstance(im, Image.Image) else np.asarray(im), self.channels,
                                   self.image_size) for im in items]
        return torch.from_numpy(np.stack(converted)) if converted else torch.zeros((0, *shape), dtype=torch.uint8)

    def evaluate(self, data: str | None = None) -> dict[str, Any]:
        if data is not None:
            raise UserError("a cyclegan run is measured on its own domains; leave --data out")
        settings = self.run.config["settings"]
        g = self.generators
        return measure(g["a2b"], g["b2a"], self.task.prepare(settings), settings["eval_samples"], self.device)


def translate_command(predictor: CycleGanPredictor, options: TranslateOptions) -> int:
    """`deepskeptic translate RUN --input ...`: one PNG per input in --out (default RUN/translated-DIRECTION)."""
    if not options.inputs:
        raise UserError("name at least one image file or folder with --input")
    x, paths = predictor.read(list(options.inputs))
    y = torch.from_numpy(predictor.translate(x, options.direction))        # (N, C, S, S) uint8
    out = Path(options.out) if options.out else predictor.run.path / f"translated-{options.direction}"
    used: set[str] = set()
    for i, (image, path) in enumerate(zip(y, paths)):
        name = f"{Path(path).stem}.png"
        if name in used:                       # two inputs of the same name from different folders
            name = f"{Path(path).stem}-{i}.png"
        used.add(name)
        save_png(out / name, image[None], cols=1)
    src, dst = predictor.names if options.direction == "a2b" else predictor.names[::-1]
    print(f"translated {len(paths)} image(s) from {src} to {dst} ({predictor.image_size} px); wrote them to {out}")
    return 0
