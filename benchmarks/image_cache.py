"""The image-folder cache on a folder of Fashion-MNIST PNG files that this script writes.

    .venv/bin/python benchmarks/image_cache.py [--n 70000] [--model mlp] [--epochs 1] [--folder DIR]

Measures, each in a fresh process (issue 14): the cache build (decoding the folder over the CPU
cores: images/s), the next load (the memory map opened: seconds), and the peak resident memory
of `deepskeptic train image --data FOLDER` reading batches from the memory map against the same
training on the in-memory arrays (load_image_data(..., mapped=False): what every image loader did
before the cache). Needs Fashion-MNIST (apt-get install dataset-fashion-mnist). The folder (train/
and test/, one subfolder per class, n * 6/7 training images) is kept with --folder and reused when
it holds the same n; the cache goes to a temporary DEEPSKEPTIC_CACHE. Prints one JSON line per
measurement, then a summary line.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOAD = """
import sys, time
import sklearn.model_selection, PIL.Image  # imported before the clock starts: not part of a load
from deepskeptic.data.images import load_image_data
start = time.perf_counter()
d = load_image_data(sys.argv[1], mapped=True)
print(time.perf_counter() - start, len(d.x_train) + len(d.x_val) + len(d.x_test))
"""

TRAIN = """
import sys
import deepskeptic.tasks.image.data as image_data
if sys.argv[1] == "memory":  # the arrays read into memory, as before the cache
    load = image_data.load_image_data
    image_data.load_image_data = lambda *a, **k: load(*a, **{**k, "mapped": False})
from deepskeptic.cli import main
sys.exit(main(sys.argv[2:]))
"""


def write_folder(folder: Path, n: int) -> None:
    """n Fashion-MNIST images as PNGs: n * 6/7 from the training file, the rest from the test file."""
    from PIL import Image

    from deepskeptic.data.images import FASHION_CLASSES, load_image_data
    marker = folder / ".n"
    if marker.is_file() and marker.read_text() == str(n):
        return
    data = load_image_data("fashion-mnist", val_split=0)
    parts = {"train": (data.x_train.numpy(), data.y_train.numpy(), n * 6 // 7),
             "test": (data.x_test.numpy(), data.y_test.numpy(), n - n * 6 // 7)}
    start = time.perf_counter()
    for part, (x, y, count) in parts.items():
        for c in FASHION_CLASSES:
            (folder / part / c).mkdir(parents=True, exist_ok=True)
        for i in range(min(count, len(x))):
            Image.fromarray(x[i, 0]).save(folder / part / FASHION_CLASSES[y[i]] / f"{i:05d}.png")
    marker.write_text(str(n))
    print(json.dumps({"wrote_pngs": n, "seconds": round(time.perf_counter() - start, 1), "folder": str(folder)}),
          flush=True)


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of one child process."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed with exit code {child.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=70000, help="images in the folder (70000: all of Fashion-MNIST)")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--folder", help="where to write the PNGs (kept; default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "fashion-png"
        write_folder(folder, args.n)
        env = {**os.environ, "DEEPSKEPTIC_CACHE": str(Path(tmp) / "cache")}
        results = {}
        for name in ("build", "next_load"):
            wall, rss, out = measured([sys.executable, "-c", LOAD, str(folder)], env)
            seconds, images = out.split()
            results[name] = {"seconds": round(float(seconds), 2), "process_seconds": round(wall, 2),
                             "images": int(images), "images_per_second": round(int(images) / float(seconds)),
                             "peak_rss_mb": round(rss)}
            print(json.dumps({name: results[name]}), flush=True)
        for how in ("mapped", "memory"):
            command = [sys.executable, "-c", TRAIN, how, "train", "image", "--data", str(folder),
                       "--model", args.model, "--epochs", str(args.epochs), "--no-progress",
                       "--out", str(Path(tmp) / f"run-{how}")]
            wall, rss, _ = measured(command, env)
            metrics = json.loads((Path(tmp) / f"run-{how}" / "metrics.json").read_text())
            results[how] = {"peak_rss_mb": round(rss), "process_seconds": round(wall, 1),
                            "train_seconds": metrics["train_seconds"], "test_accuracy": metrics["test_accuracy"]}
            print(json.dumps({f"train_{how}": results[how]}), flush=True)
    b, m = results["build"], results
    print(f"{b['images']} images: cache built at {b['images_per_second']} images/s ({b['seconds']} s on "
          f"{len(os.sched_getaffinity(0))} core(s)), next load {m['next_load']['seconds']} s; peak RSS training "
          f"{args.model}: {m['mapped']['peak_rss_mb']} MB from the memory map, {m['memory']['peak_rss_mb']} MB in "
          f"memory; test accuracy {m['mapped']['test_accuracy']:.4f} vs {m['memory']['test_accuracy']:.4f}")


if __name__ == "__main__":
    main()
