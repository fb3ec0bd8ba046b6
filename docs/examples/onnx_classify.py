"""Classify images with an image model exported by `deepskeptic export RUN`, without deepskeptic:
only NumPy, Pillow, onnxruntime and the sidecar JSON written beside the model.

    python onnx_classify.py RUN/export/model.onnx cat.png dog.jpg [--top 3]

The graph takes uint8 pixels (B, C, S, S) and does the rest (scaling to [0, 1], the training
pixels' mean and std); the sidecar says S, C and the class names. Prints one JSON line per image:
{"file": ..., "top": [{"class": ..., "probability": ...}, ...]}.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image


def pixels(path: str, channels: int, size: int) -> np.ndarray:
    """An image file -> (channels, size, size) uint8: transparency on white, grayscale or RGB, resized
    bilinearly to size x size (what deepskeptic does with image files)."""
    image = Image.open(path)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)   # channels first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the exported model.onnx (its model.json beside it)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image")
    args = parser.parse_args()

    sidecar = json.loads(Path(args.model).with_suffix(".json").read_text())
    size, channels, classes = sidecar["image_size"], sidecar["channels"], sidecar["classes"]
    session = onnxruntime.InferenceSession(args.model, providers=["CPUExecutionProvider"])

    batch = np.stack([pixels(path, channels, size) for path in args.images])   # (B, C, S, S) uint8
    (probabilities,) = session.run(["probabilities"], {"pixels": batch})     # (B, classes)
    for path, p in zip(args.images, probabilities):
        best = np.argsort(-p, kind="stable")[:args.top]
        print(json.dumps({"file": path, "top": [{"class": classes[i], "probability": round(float(p[i]), 5)}
                                                for i in best]}))


if __name__ == "__main__":
    main()
