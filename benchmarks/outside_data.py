"""Data from outside the project, as a new user would bring it: per data set and model, the epochs
reached within the budget, the test metric against chance, the starved flag and the recipe chosen.

    .venv/bin/python benchmarks/outside_data.py                       # every data set, 90 s per run
    .venv/bin/python benchmarks/outside_data.py --budget 600 --only man-pages-text
    .venv/bin/python benchmarks/outside_data.py --pin-defaults        # "before": each model's default
                                                                      # recipe and lr, pinned
    .venv/bin/python benchmarks/outside_data.py --smoke               # seconds: tiny data, 1 s budgets

Goals (issue 17), on a quiet machine and under load alike: no deep network ends within 1.5x of
chance unless its verdict says it was starved; alexnet on the 64 px colour folder in 90 s reaches
85 % or is flagged. Prints one JSON line per (data set, model) and a table at the end; run on a
quiet machine (budgets are wall-clock training time).

The data sets are assembled here, into --workdir, from what the project's set-up (Makefile,
SYSTEM_PACKAGES) installs or a Debian system carries; none of them is one of deepskeptic's built-in
data sets, and none is read through deepskeptic's own loaders for them:

| name | task | source |
| --- | --- | --- |
| fashion-png28 | image | Debian ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist/*.gz, Zalando Research, MIT licence), re-saved as 28 px grayscale PNGs in train/ and test/ class folders |
| fashion-colour64 | image | the same images upscaled to 64 px and tinted with a random foreground and background colour per image, saved as JPEG (quality 90): a colour folder at AlexNet's smallest size |
| man-pages-text | text | Debian manual pages (/usr/share/man/man{1,3,5,8}/*.gz, the ``manpages`` and packages' own pages): the first 1,500 characters of each page's troff source, labelled by its section |
| man-pages-corpus | textgen | the troff sources of /usr/share/man/man1 pages, in name order, up to --corpus-chars characters |

A data set whose source is missing is skipped with a line saying what to install. ``--pin-defaults``
runs every network with its default recipe and learning rate given explicitly (a config file's
[model] table, --lr), which the recipe rule never overrides: the numbers before the rule existed.
One thing cannot be pinned that way: the text lstm's reading length equal to its default reads as
unset, so its cheaper reading lengths stay open to the rule.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle-boot"]
MAN = Path("/usr/share/man")
MAN_SECTIONS = ("1", "3", "5", "8")

MODELS = {"image": ["logreg", "mlp", "cnn", "alexnet"], "text": ["logreg", "mlp", "lstm"],
          "textgen": ["ngram", "rnn", "lstm"]}
DEEP = {"cnn", "alexnet", "lstm"}


# ------------------------------------------------------------------ assembling the data sets

def _idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def fashion_arrays(split: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` images (N, 28, 28) uint8 of each class and their labels."""
    prefix = "train" if split == "train" else "t10k"
    images = _idx(FASHION / f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = _idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz", 8)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return images[keep], labels[keep]


def write_fashion_folders(work: Path, per_class: int, seed: int) -> dict[str, Path]:
    from PIL import Image
    rng = np.random.default_rng(seed)
    gray, colour = work / "fashion-png28", work / "fashion-colour64"
    for split, n in (("train", per_class), ("test", max(1, per_class // 6))):
        x, y = fashion_arrays(split, n)
        for i, (image, label) in enumerate(zip(x, y)):
            name = FASHION_CLASSES[label]
            for root in (gray, colour):
                (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, "L").save(gray / split / name / f"{i:05d}.png")
            alpha = np.asarray(Image.fromarray(image, "L").resize((64, 64), Image.BILINEAR), np.float32)[..., None] / 255
            fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)   # a colour pair per image, not per class
            rgb = (bg * (1 - alpha) + fg * alpha).clip(0, 255).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(colour / split / name / f"{i:05d}.jpg", quality=90)
    return {"fashion-png28": gray, "fashion-colour64": colour}


def man_pages(section: str) -> list[Path]:
    folder = MAN / f"man{section}"
    return sorted(folder.glob("*.gz")) if folder.is_dir() else []


def _page(path: Path) -> str:
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    except (OSError, EOFError):
        return ""


def write_man_csv(work: Path, per_section: int) -> Path:
    import csv
    path = work / "man-pages-text.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for section in MAN_SECTIONS:
            pages = man_pages(section)
            step = max(1, len(pages) // per_section)     # spread over the alphabet, not one package
            for page in pages[::step][:per_section]:
                text = _page(page)[:1500].strip()
                if text.startswith(".so "):               # a link to another page: nothing of its own
                    continue
                if text:
                    writer.writerow([text, f"section-{section}"])
    return path


def write_man_corpus(work: Path, chars: int) -> Path:
    path, parts, total = work / "man-pages-corpus.txt", [], 0
    for page in man_pages("1"):
        text = _page(page)
        if text.startswith(".so ") or not text:
            continue
        parts.append(text)
        total += len(text)
        if total >= chars:
            break
    path.write_text("".join(parts)[:chars], encoding="utf-8")
    return path


def assemble(work: Path, args) -> dict[str, tuple[str, Path]]:
    """{data set name: (task, path)} for every data set whose source is on this machine."""
    work.mkdir(parents=True, exist_ok=True)
    found: dict[str, tuple[str, Path]] = {}
    if (FASHION / "train-images-idx3-ubyte.gz").is_file():
        for name, path in write_fashion_folders(work, args.per_class, args.seed).items():
            found[name] = ("image", path)
    else:
        print("skipped fashion-png28, fashion-colour64: apt-get install dataset-fashion-mnist", file=sys.stderr)
    if all(man_pages(s) for s in MAN_SECTIONS):
        found["man-pages-text"] = ("text", write_man_csv(work, args.per_class))
        found["man-pages-corpus"] = ("textgen", write_man_corpus(work, args.corpus_chars))
    else:
        print("skipped man-pages-text, man-pages-corpus: apt-get install man-db manpages manpages-dev", file=sys.stderr)
    return found


# ------------------------------------------------------------------ running and reading

DEFAULT_RECIPES = {   # --pin-defaults: each network's own recipe as explicit [model] settings
    ("image", "cnn"): {"widths": [16, 32, 64], "hidden": 128},
    ("image", "alexnet"): {"variant": "auto"},
    ("text", "lstm"): {"hidden": 256},
    ("textgen", "lstm"): {"hidden": 512},
    ("textgen", "rnn"): {"hidden": 512},
}


def pinned_flags(task: str, model: str, work: Path) -> list[str]:
    from deepskeptic.models import registry
    flags = []
    spec = registry.spec(task, model)
    if spec.one_step:
        return flags
    if (task, model) in DEFAULT_RECIPES:
        config = work / f"pin-{task}-{model}.toml"
        config.write_text("[model]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in DEFAULT_RECIPES[task, model].items()))
        flags += ["--config", str(config)]
    if "lr" in spec.train_defaults:
        flags += ["--lr", repr(spec.train_defaults["lr"] * (1 + 1e-9))]   # equal to the default reads as unset
    return flags


def compare_one(task: str, name: str, data: Path, model: str, args, work: Path) -> dict:
    out = work / "runs" / f"{name}-{model}{'-pinned' if args.pin_defaults else ''}"
    flags = ["--time-budget", str(args.budget)]
    if args.pin_defaults:
        flags += pinned_flags(task, model, work)
    subprocess.run([sys.executable, "-m", "deepskeptic", "compare", task, "--data", str(data), "--models", model,
                    "--seeds", "1", "--device", args.device, "--out", str(out), "--no-progress", *flags],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    summary = json.loads((out / "summary.json").read_text())
    s = summary["models"][model]
    config = json.loads((out / f"{model}-seed0" / "config.json").read_text())
    metric = summary["metric"]
    value = s[f"{metric}_mean"]
    if task == "textgen":
        chance = math.log2(len(config["data_info"]["vocab"]["chars"]))   # uniform over the characters
        near = value > chance / 1.5                                      # bits per character: lower is better
    else:
        chance = 1 / len(config["data_info"]["classes"])
        near = value < 1.5 * chance
    recipe = config.get("recipe") or {}
    return {"data": name, "task": task, "model": model, "pinned": args.pin_defaults, "budget_s": args.budget,
            "epochs_seen": s.get("epochs_seen_mean"), metric: value, "chance": chance, "near_chance": near,
            "starved": s.get("starved"), "starved_reason": s.get("starved_reason"),
            "recipe": recipe.get("chosen"), "recipe_reason": recipe.get("reason"),
            "lr": config["settings"].get("lr"), "lr_reason": (recipe.get("lr_check") or {}).get("reason"),
            "ok": (not near) or bool(s.get("starved")) or model not in DEEP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=90.0, help="seconds of training per run (90)")
    parser.add_argument("--per-class", type=int, default=1000, help="training images (and man pages) per class (1000)")
    parser.add_argument("--corpus-chars", type=int, default=3_000_000, help="characters of the textgen corpus")
    parser.add_argument("--only", default=None, help="comma-separated data set names")
    parser.add_argument("--models", default=None, help="comma-separated models (default: every model of the task)")
    parser.add_argument("--pin-defaults", action="store_true", help="each model's default recipe and lr, pinned")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the data sets and runs go (a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="seconds: 12 images per class, 1 s budgets, the cnn")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.per_class, args.corpus_chars = 1.0, 12, 20_000
        args.only, args.models = args.only or "fashion-png28", args.models or "cnn"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="outside-data-"))
    found = assemble(work, args)
    wanted = set(args.only.split(",")) if args.only else set(found)
    rows = []
    for name, (task, data) in found.items():
        if name not in wanted:
            continue
        for model in (args.models.split(",") if args.models else MODELS[task]):
            row = compare_one(task, name, data, model, args, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'data':<18} {'model':<8} {'epochs':>7} {'metric':>8} {'chance':>7} {'starved':>8} {'ok':>4}  recipe")
    for r in rows:
        metric = r.get("test_accuracy", r.get("test_bpc"))
        print(f"{r['data']:<18} {r['model']:<8} {r['epochs_seen'] or 0:>7.2f} {metric:>8.4f} {r['chance']:>7.3f} "
              f"{str(r['starved']):>8} {str(r['ok']):>4}  {r['recipe'] or '-'}")
    print(f"\ndata and runs in {work}")


if __name__ == "__main__":
    main()
