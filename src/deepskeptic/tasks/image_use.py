"""Using a finished image run: evaluate on data, predict files, explain with feature maps and Grad-CAM."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes
from deepskeptic.reports.html import plt
from deepskeptic.runs import Run


def _load(task, run: Run):
    device = torch.device("cpu")
    model, info = task.load_model(run, device)
    return model, info, torch.tensor(info["mean"]), torch.tensor(info["std"]), device


def evaluate(task, run: Run, data: str | None) -> dict[str, Any]:
    from deepskeptic.tasks.image import classification_metrics, predict_logits
    model, info, mean, std, device = _load(task, run)
    settings = {**run.config["settings"], "limit": None}
    if data is not None:
        settings.update(data=data, image_size=info["image_size"])
    prepared = task.prepare(settings)
    d = prepared.data
    if d.channels != info["channels"]:
        raise UserError(f"{data} has {d.channels}-channel images but the model was trained on {info['channels']}")
    if d.classes != info["classes"]:
        raise UserError(f"the classes of {data} ({', '.join(d.classes)}) differ from the run's "
                        f"({', '.join(info['classes'])})")
    logits = predict_logits(model, d.x_test, mean, std, device)
    metrics = classification_metrics(logits, d.y_test, d.classes)
    return {"data": str(settings["data"]), "test_images": len(d.x_test), **metrics}


def predict(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.data.images import load_image_files
    from deepskeptic.tasks.image import predict_logits
    if not args.inputs:
        raise UserError("name at least one image file or folder to predict")
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    model, info, mean, std, device = _load(task, run)
    x, paths = load_image_files(args.inputs, image_size=info["image_size"], channels=info["channels"])
    probs = predict_logits(model, x, mean, std, device).softmax(1)
    k = min(args.top_k, probs.shape[1])
    top = probs.topk(k, dim=1)
    results = [{"file": path, "top": [{"class": info["classes"][c], "probability": round(p, 5)}
                                      for p, c in zip(values.tolist(), indices.tolist())]}
               for path, values, indices in zip(paths, top.values, top.indices)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['file']}: " + ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"]))
    return 0


def explain(task, run: Run, args: argparse.Namespace) -> int:
    from deepskeptic.data.images import load_image_files
    from deepskeptic.tasks.image import normalise
    from deepskeptic.tasks.image_report import (conv_layers, feature_maps, feature_maps_figure, grad_cam,
                                                 grad_cam_figure)
    from deepskeptic.reports.html import figure_to_data_uri
    import base64
    if not args.inputs:
        raise UserError("name at least one image to explain")
    model, info, mean, std, device = _load(task, run)
    if not conv_layers(model):
        raise UserError(f"model '{run.config['settings']['model']}' has no convolutional layers to explain; "
                        f"use a cnn or alexnet run")
    x, paths = load_image_files(args.inputs, image_size=info["image_size"], channels=info["channels"])
    out = Path(args.out) if args.out else run.path / "explain"
    for image, path in zip(x, paths):
        xn = normalise(image[None], mean, std)
        stem = Path(path).stem
        fmap_fig = feature_maps_figure(image.numpy(), feature_maps(model, xn))
        cam, target = grad_cam(model, xn)
        cam_fig = grad_cam_figure(image.numpy(), cam, f"Grad-CAM: {info['classes'][target]}")
        for name, fig in ((f"{stem}-feature-maps.png", fmap_fig), (f"{stem}-gradcam.png", cam_fig)):
            uri = figure_to_data_uri(fig)
            atomic_write_bytes(out / name, base64.b64decode(uri.split(",", 1)[1]))
        print(f"{path}: predicted {info['classes'][target]}; wrote {out / (stem + '-feature-maps.png')} "
              f"and {out / (stem + '-gradcam.png')}")
    plt.close("all")
    return 0
