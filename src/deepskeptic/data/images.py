"""Image data sets: scikit-learn's digits, Fashion-MNIST (IDX files), and folders of images.

Every loader returns uint8 tensors shaped (N, C, H, W) with H == W, and int64 labels shaped (N,).
Splits never depend on the training seed: test and validation sets are fixed (random_state=0), so
``--seed`` only changes training.

Pixel conversion rules (folders, ``load_image_files`` and ``convert_image``):
- grayscale-like modes (1, L, LA, I;16*, I, F) give 1 channel; if any image in a data set is in
  another mode (RGB, RGBA, P, CMYK, ...), every image becomes 3-channel RGB.
- transparency (RGBA, LA, PA, P with transparency) is composited on white.
- 16-bit (I;16*) is divided by 257, so 65535 -> 255. Mode I (32-bit int) is read as 16-bit if its
  values fit in 0..65535 (the usual case: 16-bit TIFF/PNG), otherwise scaled by the image's
  maximum. Mode F (float) is read as 0..1 if its maximum is <= 1, as 0..255 if <= 255, otherwise
  scaled by the image's maximum. Negative values are clipped to 0.
- GIFs use their first frame; EXIF orientation is applied; images are stretched to a square of
  ``image_size`` with PIL's bilinear resize (antialiased when shrinking).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from deepskeptic.data.cache import (MappedImages, build_array, cache_root, files_key, map_chunks, open_array,
                                    pool_workers, writable_map)
from deepskeptic.data.idx import read_idx
from deepskeptic.errors import FileFault, UserError, unknown_name
from deepskeptic.fileio import atomic_write_bytes, check_regular_file

BUILTINS = ["digits", "fashion-mnist"]
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
                   "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
FASHION_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_HOW = ("apt-get install dataset-fashion-mnist, or run 'deepskeptic datasets fetch fashion-mnist', "
               "or put the four IDX files in $DEEPSKEPTIC_DATA/fashion-mnist")
SPLIT_STATE = 0  # fixed random_state for every split: splits never depend on the training seed
MAX_BAD_FRACTION = 0.01
PARALLEL_MIN_FILES = 2000  # fewer files decode faster in this process than in a pool started for them
CHUNK_FILES = 256          # files per task of the decoding pool (the progress bar moves per chunk)


@dataclass
class ImageData:
    """x_* are (N, C, H, W) uint8 with H == W; y_* are (N,) int64 indices into ``classes``."""
    name: str
    classes: list[str]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    skipped: list[str] = field(default_factory=list)

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_image_data(spec: str, *, image_size: int | None = None, val_split: float = 0.1,
                    seed: int = 0, limit: int | None = None, unlabelled: bool = False,
                    mapped: bool = False) -> ImageData:
    """Load 'digits', 'fashion-mnist' or a folder of images, split into train/val/test.

    ``image_size`` resizes built-ins too (default: native size; for folders the median of
    max(h, w)). ``val_split`` in [0, 1) is carved from the training part (0: empty validation
    tensors shaped (0, C, H, W)). ``seed`` is accepted for symmetry with training but never
    changes a split. ``limit`` keeps at most that many training images (stratified, fixed).
    ``unlabelled`` also accepts a folder of images without class subfolders, or with one: a single
    class named after the folder (for tasks that need no labels, such as `gan`).
    A folder is decoded once into the data cache (see ``_decoded``); ``mapped`` leaves its x_*
    there, as ``MappedImages`` read batch by batch, instead of reading them into memory.
    """
    if not (isinstance(val_split, (int, float)) and 0 <= val_split < 1):
        raise UserError(f"validation split {val_split!r} is out of range: give a fraction in [0, 1), e.g. 0.1")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image size {image_size!r} is invalid: give a positive number of pixels, e.g. 32")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit {limit!r} is invalid: give a positive number of training images")
    skipped: list[str] = []
    if spec == "digits":
        x, y, classes, source = _digits()
        (tr, te) = _split(y, 0.2)
        x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    elif spec == "fashion-mnist":
        x_tr, y_tr, x_te, y_te, source = _fashion_mnist()
        classes = list(FASHION_CLASSES)
    else:
        x_tr, y_tr, x_te, y_te, classes, skipped = _folder(spec, image_size, unlabelled)
        source = str(Path(spec).resolve())
    if val_split > 0:
        tr, va = _split(y_tr, val_split)
        x_tr, y_tr, x_va, y_va = _rows(x_tr, tr), y_tr[tr], _rows(x_tr, va), y_tr[va]
    else:
        x_va, y_va = _rows(x_tr, np.arange(0)), y_tr[:0]
    if limit is not None and limit < len(y_tr):
        keep, _ = _split(y_tr, 1 - limit / len(y_tr), n_first=limit)
        x_tr, y_tr = _rows(x_tr, keep), y_tr[keep]
    t = [a if mapped and isinstance(a, MappedImages) else
         torch.from_numpy(np.ascontiguousarray(a.numpy() if isinstance(a, MappedImages) else a))
         for a in (x_tr, y_tr, x_va, y_va, x_te, y_te)]
    t[1::2] = [a.long() for a in t[1::2]]
    if image_size is not None and t[0].shape[-1] != image_size:  # built-ins at another size
        t[0::2] = [_resize_tensor(a, image_size) for a in t[0::2]]
    return ImageData(spec, classes, *t, source=source, skipped=skipped)


def _rows(x: np.ndarray | MappedImages, index: np.ndarray) -> np.ndarray | MappedImages:
    """The images at ``index``: copied for arrays, still on disk for a memory map."""
    return x.take(index) if isinstance(x, MappedImages) else x[index]


def _split(y: np.ndarray, frac: float, n_first: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held-out) with ~frac held out, stratified when possible; random_state fixed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    size = {"train_size": n_first} if n_first is not None else {"test_size": frac}
    counts = Counter(y.tolist())
    strat = y if counts and min(counts.values()) >= 2 else None
    for stratify in ([strat, None] if strat is not None else [None]):
        try:
            a, b = train_test_split(idx, **size, random_state=SPLIT_STATE, stratify=stratify)
            return np.asarray(a), np.asarray(b)
        except ValueError:
            continue
    raise UserError(f"too few images ({len(y)}) to split off {frac:.0%}: add images or lower the split")


def _resize_tensor(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8, bilinear with antialiasing, in chunks."""
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for i in range(0, x.shape[0], 4096):
        chunk = torch.nn.functional.interpolate(x[i:i + 4096].float(), size=(size, size),
                                                mode="bilinear", antialias=True, align_corners=False)
        out[i:i + 4096] = chunk.round().clamp(0, 255).to(torch.uint8)
    return out


# ---------------------------------------------------------------- built-ins

def _digits() -> tuple[np.ndarray, np.ndarray, list[str], str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images * 255.0 / 16.0).clip(0, 255).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    return x, d.target.astype(np.int64), [str(i) for i in range(10)], "sklearn.datasets.load_digits"


def _fashion_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("DEEPSKEPTIC_DATA"):
        dirs.append(Path(os.environ["DEEPSKEPTIC_DATA"]) / "fashion-mnist")
    dirs += [Path.home() / ".cache" / "deepskeptic" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
    return dirs


def _fashion_files(d: Path) -> list[Path] | None:
    """The four IDX files in ``d`` (each with or without .gz), or None if any is missing."""
    found = []
    for stem in FASHION_FILES:
        hits = [p for p in (d / stem, d / f"{stem}.gz") if p.is_file()]
        if not hits:
            return None
        found.append(hits[0])
    return found


def _find_fashion() -> tuple[Path, list[Path]] | None:
    for d in _fashion_dirs():
        files = _fashion_files(d) if d.is_dir() else None
        if files:
            return d, files
    return None


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    found = _find_fashion()
    if found is None:
        looked = ", ".join(str(d) for d in _fashion_dirs())
        raise UserError(f"Fashion-MNIST not found (looked in {looked}): {FASHION_HOW}")
    d, files = found
    arrays = [read_idx(p) for p in files]
    out = []
    for (img_path, images), (lab_path, labels) in [((files[0], arrays[0]), (files[1], arrays[1])),
                                                   ((files[2], arrays[2]), (files[3], arrays[3]))]:
        if images.ndim != 3 or images.dtype != np.uint8:
            raise UserError(f"'{img_path}' does not hold (N, H, W) uint8 images: replace it ({FASHION_HOW})")
        if labels.ndim != 1 or len(labels) != len(images) or (labels.size and labels.max() >= 10):
            raise UserError(f"'{lab_path}' does not hold {len(images)} labels in 0..9: replace it ({FASHION_HOW})")
        out += [images[:, None], labels.astype(np.int64)]
    return (*out, str(d))


def image_datasets() -> list[dict]:
    """One dict per built-in image data set: name, task, available, location, description, how_to_get."""
    from importlib.resources import files

    found = _find_fashion()
    return [
        {"name": "digits", "task": "image", "available": True,
         "location": str(files("sklearn.datasets") / "data" / "digits.csv.gz"),
         "description": "1,797 handwritten digits, 8x8 grayscale, 10 classes (scikit-learn)",
         "how_to_get": "always there with scikit-learn"},
        {"name": "fashion-mnist", "task": "image", "available": found is not None,
         "location": str(found[0]) if found else None,
         "description": "70,000 clothing images, 28x28 grayscale, 10 classes (Zalando)",
         "how_to_get": FASHION_HOW},
    ]


def fetch_fashion_mnist(dest: str | None = None) -> str:
    """Download the four gzipped IDX files into ``dest`` (default: the first cache folder); return it."""
    target = Path(dest) if dest else _fashion_dirs()[0]  # $DEEPSKEPTIC_DATA/... if set, else the cache
    for stem in FASHION_FILES:
        url = f"{FASHION_URL}{stem}.gz"
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"cannot download {url} ({getattr(e, 'reason', e)}): this machine seems offline; "
                            "install it from Debian with apt-get install dataset-fashion-mnist") from None
        atomic_write_bytes(target / f"{stem}.gz", data)
        read_idx(target / f"{stem}.gz")  # a broken download is reported now, not at training time
    return str(target)


# ---------------------------------------------------------------- folders

def _walk_error(exc: OSError) -> None:
    """os.walk's onerror: a folder inside the data that cannot be listed (permission denied) is
    one line naming it, not a class that silently lost its images."""
    raise FileFault.of(exc) from None


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted; hidden files and folders skipped). Each is
    a regular file: a FIFO, a device or a socket with an image's name (which would block a read
    forever, or never end, like /dev/zero) is one line naming it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [_regular(Path(dirpath) / f) for f in sorted(filenames)
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return out


def _regular(path: Path) -> Path:
    """``path``, refused when it is there but not a regular file; a dangling link is left to the
    decoder, which counts it among the unreadable files."""
    return check_regular_file(path, "image file") if os.path.exists(path) else path


def _class_folders(root: Path, unlabelled: bool = False) -> dict[str, list[Path]]:
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if unlabelled and not subs:
        files = _image_files(root)
        if not files:
            raise UserError(f"data folder '{root}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
                            "add images, directly or in subfolders")
        return {root.resolve().name or "images": files}
    if not subs:
        loose = "it has images but " if _image_files(root) else ""
        raise UserError(f"data folder '{root}' has no class subfolders ({loose}images must be in one "
                        "subfolder per class, e.g. cats/ and dogs/)")
    classes = {p.name: _image_files(p) for p in subs}
    for name, files in classes.items():
        if not files:
            raise UserError(f"class folder '{root / name}' has no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
                            "add images or remove the folder")
    if len(classes) < 2 and not unlabelled:
        raise UserError(f"data folder '{root}' has only 1 class ('{subs[0].name}'): a classifier needs at "
                        "least 2 class subfolders")
    return classes


def _folder(spec: str, image_size: int | None, unlabelled: bool = False):
    root = Path(spec).expanduser()
    if not root.exists():
        if "/" not in spec and os.sep not in spec:
            raise unknown_name("data set", spec, BUILTINS, hint=" (or a folder path)")
        raise UserError(f"data folder '{spec}' does not exist: give a folder with one subfolder per class, "
                        f"or one of {', '.join(BUILTINS)}")
    if not root.is_dir():
        raise UserError(f"'{spec}' is a file, not a folder: give a folder with one subfolder per class")
    if not any(root.iterdir()):
        raise UserError(f"data folder '{spec}' is empty: put images in one subfolder per class")
    names = {p.name: p for p in root.iterdir() if p.is_dir()}
    if "train" in names and "test" in names:
        parts = {"train": _class_folders(names["train"], unlabelled), "test": _class_folders(names["test"], unlabelled)}
        a, b = set(parts["train"]), set(parts["test"])
        if a != b:
            raise UserError(f"train/ and test/ in '{spec}' have different classes (only in train: "
                            f"{sorted(a - b) or 'none'}, only in test: {sorted(b - a) or 'none'}): make them match")
    else:
        parts = {"all": _class_folders(root, unlabelled)}
    classes = sorted(next(iter(parts.values())))
    files = [(part, p, classes.index(c)) for part, cl in parts.items() for c in classes for p in cl[c]]
    prefix = str(root) + os.sep  # (relative_to is slow: seconds for 100,000 files)
    label = {p: s[len(prefix):] if (s := str(p)).startswith(prefix) else str(p.relative_to(root))
             for _, p, _ in files}

    x, bad_rows = _decoded(root, files, image_size, label)   # all files, (N, C, S, S); bad rows zero
    bad = {files[i][1]: why for i, why in sorted(bad_rows.items())}  # in file order
    skipped = [f"{label[p]} ({why})" for p, why in bad.items()]
    if bad:
        shown = "; ".join(skipped[:3]) + (" ..." if len(bad) > 3 else "")
        if len(bad) >= MAX_BAD_FRACTION * len(files):
            raise UserError(f"{len(bad)} of {len(files)} image files in '{spec}' are unreadable ({shown}): "
                            "fix or remove them")
        names_ = ", ".join(label[p] for p in list(bad)[:10]) + (" ..." if len(bad) > 10 else "")
        print(f"warning: skipped {len(bad)} unreadable image(s): {names_}", file=sys.stderr)
    ok = np.array([p not in bad for _, p, _ in files], dtype=bool)
    y = np.array([c for _, _, c in files], dtype=np.int64)
    part = np.array([pt for pt, _, _ in files])
    for pt in parts:
        present = set(y[ok & (part == pt)].tolist())
        for c, name in enumerate(classes):
            if c not in present:
                raise UserError(f"class '{name}' in '{spec}' has no readable images: add images or remove the folder")

    if "all" in parts:
        readable = np.flatnonzero(ok)
        tr, te = _split(y[readable], 0.2)
        return x.take(readable[tr]), y[readable[tr]], x.take(readable[te]), y[readable[te]], classes, skipped
    tr, te = np.flatnonzero(ok & (part == "train")), np.flatnonzero(ok & (part == "test"))
    return x.take(tr), y[tr], x.take(te), y[te], classes, skipped


def _decoded(root: Path, files: list[tuple[str, Path, int]], image_size: int | None,
             label: dict[Path, str]) -> tuple[MappedImages, dict[int, str]]:
    """Every file of ``files`` ((part, path, class) in order) decoded to (N, C, S, S) uint8 in the
    data cache (one memory-mapped file per folder and --image-size, rebuilt when a file is added,
    removed, resized or touched), and {row: why} for the files that could not be read."""
    import PIL

    name = hashlib.sha256(json.dumps([str(root.resolve()), image_size]).encode()).hexdigest()[:24]
    path = cache_root() / "images" / f"{name}.u8"
    key = files_key([(p, label[p], part, c) for part, p, c in files],
                    "images", image_size, PIL.__version__)
    opened = open_array(path, key) or _decode_folder(root, [p for _, p, _ in files], image_size, path, key)
    array, description = opened
    return MappedImages(path, array), {int(i): why for i, why in description["bad"].items()}


def _decode_folder(root: Path, paths: list[Path], image_size: int | None, path: Path, key: str):
    """Decode ``paths`` into the cache file ``path``, over the CPU cores, with a progress bar."""
    names = [str(p) for p in paths]
    chunks = [names[i:i + CHUNK_FILES] for i in range(0, len(names), CHUNK_FILES)]
    workers = pool_workers(len(names), PARALLEL_MIN_FILES)
    bad: dict[int, str] = {}
    modes, sizes = [], []
    headers = map_chunks(_headers, [(c,) for c in chunks], [len(c) for c in chunks], workers=workers,
                         desc=f"reading {root.name}", unit="img")
    for i, header in enumerate(h for part in headers for h in part):  # pass 1: headers, to choose
        if isinstance(header, str):                                     # channels and size
            bad[i] = header
        else:
            modes.append(header[0])
            sizes.append(header[1])
    channels = 1 if all(m in GRAY_MODES for m in modes) else 3
    size = image_size or (int(round(float(np.median(sizes)))) if sizes else 1)
    shape = (len(names), channels, size, size)

    def fill(tmp: str) -> dict:                                          # pass 2: decode, convert, resize
        tasks = [(tmp, shape, i * CHUNK_FILES, c, sorted(j - i * CHUNK_FILES for j in bad
                                                        if i * CHUNK_FILES <= j < (i + 1) * CHUNK_FILES))
                 for i, c in enumerate(chunks)]
        for part in map_chunks(_decode_rows, tasks, [len(c) for c in chunks], workers=workers,
                               desc=f"decoding {root.name}", unit="img"):
            bad.update(part)
        return {"source": str(root.resolve()), "image_size": image_size,
                "bad": {str(i): bad[i] for i in sorted(bad)}}

    return build_array(path, key, shape, fill)


def _headers(paths: list[str]) -> list[tuple[str, int] | str]:
    """(mode, longest side) of each image from its header alone (cheap), or why it is unreadable."""
    out: list[tuple[str, int] | str] = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append((im.mode, max(im.size)))
        except Exception as e:  # noqa: BLE001 - any failure means the file is unreadable
            out.append(_reason(e))
    return out


def _decode_rows(tmp: str, shape: tuple[int, ...], start: int, paths: list[str], skip: list[int]) -> dict[int, str]:
    """Decode ``paths`` into rows start.. of the cache file being built; {row: why} for failures."""
    x, skip = writable_map(tmp, shape), set(skip)
    bad: dict[int, str] = {}
    for i, p in enumerate(paths):
        if i in skip:
            continue
        try:
            x[start + i] = _load(Path(p), shape[1], shape[2])
        except Exception as e:  # noqa: BLE001
            bad[start + i] = _reason(e)
    x.flush()
    del x
    return bad


def _reason(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:120]


MAX_PIXELS = 64 * 10**6     # an image larger than this (PIL warns from 89 Mpx) is not decoded


def _load(path: Path, channels: int, size: int) -> np.ndarray:
    """Decode one image file to (channels, size, size) uint8 with the module's conversion rules."""
    with Image.open(path) as im:
        im.seek(0)  # first frame of GIFs / multi-page TIFFs
        if im.format == "JPEG":
            im.draft(im.mode, (size, size))  # decode big JPEGs at a reduced scale: much faster
        if im.size[0] * im.size[1] > MAX_PIXELS:   # checked on the header, before any decoding
            raise ValueError(f"{im.size[0]}x{im.size[1]} pixels is over the {MAX_PIXELS // 10**6} megapixel "
                             "bound (a decompression bomb, or a photo to shrink first)")
        im.load()
        return convert_image(ImageOps.exif_transpose(im), channels, size)


def convert_image(im: Image.Image | np.ndarray, channels: int, size: int) -> np.ndarray:
    """A decoded image -> (channels, size, size) uint8 with the module's conversion rules: what
    every image file goes through after decoding, and what predictors apply to images handed to
    them in memory. A NumPy array is read as PIL reads it (``Image.fromarray``): (H, W) uint8 is
    mode L, (H, W, 2) LA, (H, W, 3) RGB, (H, W, 4) RGBA, uint16 I;16, int32 I, float F, bool 1;
    a trailing axis of length 1 is dropped."""
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im[..., 0] if im.ndim == 3 and im.shape[2] == 1 else im)
    arr = _to_uint8(im)
    if channels == 1 and arr.ndim == 3:
        arr = np.asarray(Image.fromarray(arr, "RGB").convert("L"))  # ITU-R 601 luma
    elif channels == 3 and arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    img = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    out = np.asarray(img)
    return out[None] if out.ndim == 2 else out.transpose(2, 0, 1)


def _on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255.0 if color.ndim == 3 else alpha.astype(np.float32) / 255.0
    return np.rint(color.astype(np.float32) * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _to_uint8(im: Image.Image) -> np.ndarray:
    """(H, W) uint8 for grayscale-like modes, (H, W, 3) uint8 RGB for everything else."""
    mode = im.mode
    if mode == "L" and "transparency" not in im.info:
        return np.asarray(im)
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("LA", "La", "L"):
        a = np.asarray(im.convert("LA"))
        return _on_white(a[..., 0], a[..., 1])
    if mode.startswith("I;16"):
        return np.rint(np.asarray(im).astype(np.float32) / 257.0).astype(np.uint8)
    if mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64).clip(min=0)
        top = float(a.max()) if a.size else 0.0
        if mode == "I":
            scale = 255.0 / 65535.0 if top <= 65535 else 255.0 / top
        else:
            scale = 255.0 if top <= 1.0 else (1.0 if top <= 255 else 255.0 / top)
        return np.rint(a * scale).clip(0, 255).astype(np.uint8)
    if mode == "RGB":
        return np.asarray(im)
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    a = np.asarray(im.convert("RGBA"))  # RGBA, RGBa, RGBX, P, PA, ...
    return _on_white(a[..., :3], a[..., 3])


# ---------------------------------------------------------------- predict / explain

def load_image_files(paths: list[str], *, image_size: int, channels: int) -> tuple[torch.Tensor, list[str]]:
    """Load image files (directories expand to the images inside, sorted) as (N, channels, size, size)
    uint8, with the same conversion rules as training; returns the tensor and the file paths."""
    files: list[Path] = []
    for s in paths:
        p = Path(s).expanduser()
        if not p.exists():
            raise UserError(f"input '{s}' does not exist: give image files or a folder of images")
        files += _image_files(p) if p.is_dir() else [check_regular_file(p, "input")]
    if not files:
        raise UserError(f"no images found in {', '.join(map(str, paths)) or 'the inputs'} "
                        f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    x = np.zeros((len(files), channels, image_size, image_size), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            x[i] = _load(p, channels, image_size)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot read image '{p}' ({_reason(e)}): fix or remove it") from None
    return torch.from_numpy(x), [str(p) for p in files]
