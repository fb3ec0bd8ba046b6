"""What a request may hold, and the decoding of its parts: base64 and uploaded bytes into the decoded
inputs the predictors take (PIL images, (samples, sample rate) pairs, strings), each size checked
before the expensive step, and results made JSON-safe.

Every refusal is a ``Problem``: an HTTP status and one sentence that names the part and the limit.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepskeptic.errors import UserError


class Problem(Exception):
    """A request the server refuses: ``status`` (4xx) and a message for {"error": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class TooLarge(Problem):
    """The body grew past the request limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request is larger than the limit of {limit:,} bytes")


@dataclass(frozen=True)
class Bounds:
    """Limits on one request. The defaults let a person try a photo, a paragraph or a short
    recording, and a client send a batch, while one request cannot take the server's memory."""
    request_bytes: int = 32 * 2**20    # 32 MiB: a batch of photos, base64 included
    items: int = 256                   # inputs per request (images, texts, recordings)
    image_pixels: int = 40_000_000     # width x height per image, read from the header before decoding
    audio_seconds: float = 60.0        # per recording, read from the header before decoding
    text_chars: int = 20_000           # per text (a long article; the models read far less)
    series_length: int = 100_000       # values of one series to forecast from
    generate_length: int = 5_000       # characters per generated text sample
    generate_samples: int = 16         # text samples per generate request
    gan_images: int = 256              # images per gan generate request


# ------------------------------------------------------------------ base64 and sizes

def from_base64(value: Any, what: str) -> bytes:
    """``value``: base64 text, or a data URI (data:image/png;base64,...) -> bytes."""
    if not isinstance(value, str):
        raise Problem(422, f"{what} must be a base64 string, got {_kind(value)}")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise Problem(422, f"{what} is a data URI without ';base64'")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(422, f"{what} is not valid base64") from None
    if not data:
        raise Problem(422, f"{what} is empty")
    return data


def to_base64_png(array: np.ndarray) -> str:
    """(H, W) or (H, W, 3) uint8 -> base64 PNG text."""
    from deepskeptic.tasks.common.adversarial import png_bytes
    return base64.b64encode(png_bytes(array)).decode("ascii")


def check_count(n: int, what: str, bounds: Bounds) -> None:
    if n == 0:
        raise Problem(422, f"no {what} in the request")
    if n > bounds.items:
        raise Problem(413, f"{n} {what} in one request; the limit is {bounds.items}: send them in several requests")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


# ------------------------------------------------------------------ images

def decode_image(data: bytes, name: str, bounds: Bounds, draft_size: int | None = None):
    """Image file bytes -> a loaded PIL image, decoded as image files are for `predict` (first
    frame, JPEG drafted to the run's size, EXIF orientation applied). The pixel count is read from
    the header and refused before any pixel is decoded (a decompression bomb never expands)."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > bounds.image_pixels:
                raise Problem(413, f"image {name} is {width}x{height} = {width * height:,} pixels; the limit is "
                                   f"{bounds.image_pixels:,}: send a smaller image")
            im.seek(0)   # first frame of GIFs / multi-page TIFFs
            if im.format == "JPEG" and draft_size:
                im.draft(im.mode, (draft_size, draft_size))
            im.load()
            return ImageOps.exif_transpose(im)
    except Problem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:   # PIL's own check, on open
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "too many pixels"
        raise Problem(413, f"image {name} claims {size} (a decompression bomb?); the limit is "
                           f"{bounds.image_pixels:,}: send a smaller image") from None
    except UnidentifiedImageError:
        raise Problem(422, f"{name} is not an image PIL can read: send PNG, JPEG, GIF, BMP, TIFF or WebP") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many kinds of error
        raise Problem(422, f"cannot read image {name} ({_first_line(exc)})") from None


# ------------------------------------------------------------------ audio

def decode_audio(data: bytes, name: str, bounds: Bounds) -> tuple[np.ndarray, int]:
    """Audio file bytes (WAV, FLAC, OGG) -> ((samples, channels) float32 in [-1, 1], sample rate),
    as `predict` decodes audio files; the duration is read from the header and refused first."""
    import soundfile as sf
    try:
        info = sf.info(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - libsndfile raises several types for what it cannot read
        raise Problem(422, f"{name} is not audio this server can read: send WAV, FLAC or OGG") from None
    seconds = info.frames / info.samplerate if info.samplerate else math.inf
    if seconds > bounds.audio_seconds:
        raise Problem(413, f"recording {name} lasts {seconds:.1f} s; the limit is {bounds.audio_seconds:g} s")
    if info.frames == 0:
        raise Problem(422, f"recording {name} holds no samples")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001
        raise Problem(422, f"cannot read recording {name} ({_first_line(exc)})") from None
    return samples, int(rate)


# ------------------------------------------------------------------ texts and series

def check_text(text: Any, name: str, bounds: Bounds) -> str:
    if not isinstance(text, str):
        raise Problem(422, f"{name} must be a string, got {_kind(text)}")
    if len(text) > bounds.text_chars:
        raise Problem(413, f"{name} has {len(text):,} characters; the limit is {bounds.text_chars:,}")
    return text


def decode_text(data: bytes, name: str, bounds: Bounds, encoding: str | None) -> str:
    """An uploaded text file, decoded as `predict` decodes text files (the run's --encoding)."""
    from deepskeptic.data.text import decode_bytes
    if len(data) > 4 * bounds.text_chars:   # no encoding takes more than 4 bytes per character
        raise Problem(413, f"{name} is {len(data):,} bytes; texts are limited to {bounds.text_chars:,} characters")
    try:
        text = decode_bytes(data, name, encoding)
    except UserError as exc:
        raise Problem(422, str(exc)) from None
    return check_text(text, name, bounds)


def series_values(values: Any, bounds: Bounds) -> np.ndarray:
    """A JSON list of numbers (null: a missing value) -> a float array."""
    if not isinstance(values, list):
        raise Problem(422, f"series must be a list of numbers (or give csv: the CSV text), got {_kind(values)}")
    if len(values) > bounds.series_length:
        raise Problem(413, f"the series has {len(values):,} values; the limit is {bounds.series_length:,}")
    bad = next((i for i, v in enumerate(values) if not (v is None or (isinstance(v, (int, float))
                                                                        and not isinstance(v, bool)))), None)
    if bad is not None:
        raise Problem(422, f"series value {bad} is {_kind(values[bad])}; give numbers (null for a missing value)")
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# ------------------------------------------------------------------ options

def integer(body: dict, key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():   # form fields arrive as text
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Problem(422, f"{key} must be a whole number, got {_kind(value)}")
    if not low <= value <= high:
        raise Problem(422 if value < low else 413, f"{key} must be between {low} and {high}, got {value}")
    return value


def number(body: dict, key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Problem(422, f"{key} must be a finite number, got {_kind(value)}")
    if not low <= value <= high:
        raise Problem(422, f"{key} must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


# ------------------------------------------------------------------ JSON-safe results

def json_safe(value: Any) -> tuple[Any, list[str]]:
    """``value`` with NumPy scalars and arrays made plain and every NaN or infinity replaced by None;
    also the paths of the replaced values (``results[0].forecast``), so the response can say so."""
    replaced: list[str] = []

    def clean(v: Any, path: str) -> Any:
        if isinstance(v, dict):
            return {k: clean(x, f"{path}.{k}" if path else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, np.ndarray):
            return clean(v.tolist(), path)
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            replaced.append(path)
            return None
        return v

    return clean(value, ""), replaced


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
