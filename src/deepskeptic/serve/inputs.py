"""A request's body (JSON or a multipart upload) -> the decoded inputs a predictor takes.

JSON bodies carry images and audio as base64 (``image``/``images``, ``audio``/``audios``), texts as
strings (``text``/``texts``), a series as a list of numbers (``series``) or as CSV text (``csv``),
and options (``top_k``, ``names``, ...). A multipart upload carries files (any field name; each
file's name becomes its result's name, as a path does for `predict`) and options as form fields.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

from starlette.datastructures import UploadFile
from starlette.requests import Request

from deepskeptic.serve.bounds import (Bounds, Problem, check_count, check_text, decode_audio, decode_image,
                                      decode_text, from_base64, integer, series_values)


@dataclass
class Body:
    fields: dict[str, Any]                 # the JSON object, or the form's text fields
    files: list[tuple[str, bytes]]         # uploaded (file name, bytes), in order


async def read_body(request: Request, bounds: Bounds) -> Body:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=bounds.items, max_fields=64)
        except Problem:
            raise
        except Exception as exc:  # noqa: BLE001 - python-multipart's and starlette's parse errors
            raise Problem(400, f"the multipart body cannot be read ({str(exc) or type(exc).__name__})") from None
        fields: dict[str, Any] = {}
        files: list[tuple[str, bytes]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append((Path(value.filename or f"file{len(files)}").name, await value.read()))
            else:
                fields[key] = value
        return Body(fields, files)
    raw = await request.body()
    if not raw.strip():
        return Body({}, [])
    if ctype not in ("application/json", "", "text/plain"):
        raise Problem(415, f"send JSON (application/json) or a multipart upload (multipart/form-data), not {ctype}")
    try:
        fields = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise Problem(422, "the JSON body must be an object, e.g. {\"images\": [...]}")
    return Body(fields, [])


def _many(fields: dict[str, Any], one: str, many: str) -> list[Any] | None:
    """fields[many] (a list) or [fields[one]]; None when neither is there."""
    if many in fields:
        values = fields[many]
        if not isinstance(values, list):
            raise Problem(422, f"{many} must be a list (or give {one}: a single one)")
        return values
    if one in fields:
        return [fields[one]]
    return None


def _names(fields: dict[str, Any], n: int) -> list[str] | None:
    names = fields.get("names")
    if names is None:
        return None
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names) or len(names) != n:
        raise Problem(422, f"names must be a list of {n} strings, one per input")
    return names


# ------------------------------------------------------------------ predict inputs, per task
# Each returns (items, options): items are (input, name) pairs; options a hashable key, so that only
# requests with the same options share a predictor call.

def image_items(body: Body, bounds: Bounds, draft_size: int | None) -> tuple[list[tuple[Any, str]], Hashable]:
    raw = _many(body.fields, "image", "images")
    if raw is not None and body.files:
        raise Problem(422, "send images either as JSON base64 or as uploaded files, not both")
    check_count(len(body.files if raw is None else raw), "images (give images: [base64, ...] or upload image files)",
                bounds)
    if raw is None:
        pairs = [(name, data) for name, data in body.files]
    else:
        pairs = [(str(i), from_base64(v, f"image {i}")) for i, v in enumerate(raw)]
    names = _names(body.fields, len(pairs)) or [name for name, _ in pairs]
    items = [(decode_image(data, name, bounds, draft_size), name) for name, (_, data) in zip(names, pairs)]
    return items, (("top_k", integer(body.fields, "top_k", 3, 1, 1000)),)


def text_items(body: Body, bounds: Bounds, encoding: str | None) -> tuple[list[tuple[Any, str | None]], Hashable]:
    raw = _many(body.fields, "text", "texts")
    if raw is not None and body.files:
        raise Problem(422, "send texts either as JSON strings or as uploaded files, not both")
    check_count(len(body.files if raw is None else raw), "texts (give texts: [string, ...] or upload text files)", bounds)
    if raw is None:
        texts = [decode_text(data, name, bounds, encoding) for name, data in body.files]
        names = [name for name, _ in body.files] or None
    else:
        texts = [check_text(t, f"text {i}", bounds) for i, t in enumerate(raw)]
        names = None
    names = _names(body.fields, len(texts)) or names
    items = list(zip(texts, names or [None] * len(texts)))
    return items, (("top_k", integer(body.fields, "top_k", 3, 1, 1000)), ("named", names is not None))


def audio_items(body: Body, bounds: Bounds) -> tuple[list[tuple[Any, str]], Hashable]:
    raw = _many(body.fields, "audio", "audios")
    if raw is not None and body.files:
        raise Problem(422, "send recordings either as JSON base64 or as uploaded files, not both")
    check_count(len(body.files if raw is None else raw),
                "recordings (give audios: [base64 WAV, ...] or upload audio files)", bounds)
    if raw is None:
        pairs = list(body.files)
    else:
        pairs = [(str(i), from_base64(v, f"audio {i}")) for i, v in enumerate(raw)]
    names = _names(body.fields, len(pairs)) or [name for name, _ in pairs]
    items = [(decode_audio(data, name, bounds), name) for name, (_, data) in zip(names, pairs)]
    return items, (("top_k", integer(body.fields, "top_k", 3, 1, 1000)),)


def forecast_input(body: Body, bounds: Bounds) -> tuple[str, Any]:
    """("values", float array) or ("csv", the CSV text's bytes): what to forecast from."""
    fields = body.fields
    given = [k for k in ("series", "csv") if k in fields] + (["file"] if body.files else [])
    if len(given) != 1:
        raise Problem(422, "give the history to forecast from: series (a list of numbers), csv (CSV text) "
                           "or one uploaded CSV file" + (f"; got {', '.join(given)}" if given else ""))
    if "series" in fields:
        return "values", series_values(fields["series"], bounds)
    if "csv" in fields:
        if not isinstance(fields["csv"], str):
            raise Problem(422, "csv must be the CSV text, a string")
        return "csv", fields["csv"].encode("utf-8")
    if len(body.files) != 1:
        raise Problem(422, f"upload one CSV file to forecast from, got {len(body.files)}")
    return "csv", body.files[0][1]


def with_csv_file(data: bytes, fn):
    """Call fn(path) on ``data`` written to a temporary CSV file (the run's own CSV reader reads
    it, as `predict --data FILE.csv` does), then remove it."""
    with tempfile.TemporaryDirectory(prefix="deepskeptic-serve-") as folder:
        path = Path(folder) / "series.csv"
        path.write_bytes(data)
        return fn(str(path))
