"""`deepskeptic explain RUN IMAGE...` for image runs: feature maps and Grad-CAM, one picture each."""
from __future__ import annotations

import base64
from pathlib import Path

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes
from deepskeptic.reports.html import figure_to_data_uri, plt
from deepskeptic.tasks.base import ExplainOptions
from deepskeptic.tasks.common.pixels import normalise
from deepskeptic.tasks.image.predict import ImagePredictor
from deepskeptic.tasks.image.report import conv_layers, feature_maps, feature_maps_figure, grad_cam, grad_cam_figure


def explain_images(predictor: ImagePredictor, options: ExplainOptions) -> int:
    """Writes STEM-feature-maps.png and STEM-gradcam.png per input image into ``options.out``
    (default RUN/explain) and prints one line per image."""
    run, model, classes = predictor.run, predictor.model, predictor.classes
    if not conv_layers(model):
        raise UserError(f"model '{run.config['settings']['model']}' has no convolutional layers to explain; "
                        f"use a cnn or alexnet run")
    x, paths = predictor.read(list(options.inputs))
    out = Path(options.out) if options.out else run.inside("explain")
    for image, path in zip(x, paths):
        xn = normalise(image[None], predictor.mean, predictor.std)
        stem = Path(path).stem
        fmap_fig = feature_maps_figure(image.numpy(), feature_maps(model, xn))
        cam, target = grad_cam(model, xn)
        cam_fig = grad_cam_figure(image.numpy(), cam, f"Grad-CAM: {classes[target]}")
        for name, fig in ((f"{stem}-feature-maps.png", fmap_fig), (f"{stem}-gradcam.png", cam_fig)):
            uri = figure_to_data_uri(fig)
            atomic_write_bytes(out / name, base64.b64decode(uri.split(",", 1)[1]))
        print(f"{path}: predicted {classes[target]}; wrote {out / (stem + '-feature-maps.png')} "
              f"and {out / (stem + '-gradcam.png')}")
    plt.close("all")
    return 0
