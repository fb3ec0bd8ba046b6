"""The routes beyond predict: ``generate`` (textgen: text, streamed as server-sent events; gan: a
PNG grid or base64 images), ``translate`` (cyclegan) and ``explain`` (image: Grad-CAM; text,
textgen and forecast: the LSTM's gates). Each runs in the model's worker thread and returns what
the command of the same name computes."""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from deepskeptic.errors import UserError
from deepskeptic.serve import inputs
from deepskeptic.serve.bounds import Bounds, Problem, check_text, integer, number, to_base64_png
from deepskeptic.serve.models import lookup as model
from deepskeptic.serve.responses import json_response

log = logging.getLogger("deepskeptic.serve")
FIGURES = threading.Lock()          # matplotlib's pyplot is not thread-safe; runs have a thread each
MAX_SEED = 2**63 - 1


def add_routes(app: FastAPI) -> None:
    def served(name: str, command: str):
        m = model(app, name)
        if command not in m.commands:
            raise Problem(404, f"{m.task.name} runs have no {command}; {m.name} has: {', '.join(m.commands)}")
        return m

    @app.post("/v1/models/{name}/generate")
    async def generate(name: str, request: Request):
        m = served(name, "generate")
        body = await inputs.read_body(request, app.state.options.bounds)
        bounds = app.state.options.bounds
        if m.task.name == "textgen":
            stream = body.fields.get("stream", "text/event-stream" in request.headers.get("accept", ""))
            return await textgen_generate(m, body.fields, bounds, bool(stream))
        if m.task.name == "gan":
            return await gan_generate(m, body.fields, bounds)
        raise Problem(501, f"generate for {m.task.name} runs is not served yet; use 'deepskeptic generate'")

    @app.post("/v1/models/{name}/translate")
    async def translate(name: str, request: Request):
        m = served(name, "translate")
        bounds = app.state.options.bounds
        body = await inputs.read_body(request, bounds)
        direction = body.fields.get("direction", "a2b")
        if direction not in ("a2b", "b2a"):
            raise Problem(422, f"direction must be a2b or b2a, got {direction!r}")
        loop = asyncio.get_running_loop()
        items, _ = await loop.run_in_executor(None, inputs.image_items, body, bounds, m.predictor.image_size)
        images = [x for x, _ in items]
        out = await loop.run_in_executor(m.executor, m.predictor.translate, images, direction)   # (N, C, S, S)
        if body.fields.get("format") == "png":
            return _png(_hwc(out[0]) if len(out) == 1 else _grid(out))
        source, target = m.predictor.names if direction == "a2b" else m.predictor.names[::-1]
        return json_response({"model": m.name, "direction": direction, "from": source, "to": target,
                              "results": [{"name": n, "image": to_base64_png(_hwc(y))} for (_, n), y in zip(items, out)]})

    @app.post("/v1/models/{name}/explain")
    async def explain(name: str, request: Request):
        m = served(name, "explain")
        bounds = app.state.options.bounds
        body = await inputs.read_body(request, bounds)
        loop = asyncio.get_running_loop()
        if m.task.name == "image":
            items, _ = await loop.run_in_executor(None, inputs.image_items, body, bounds, m.predictor.image_size)
            if len(items) > 8:
                raise Problem(413, f"explain takes at most 8 images per request, got {len(items)}")
            results = await loop.run_in_executor(m.executor, image_explain, m.predictor, items,
                                                 bool(body.fields.get("cam")))
            if body.fields.get("format") == "png":
                return Response(base64.b64decode(results[0]["gradcam"]), media_type="image/png")
            return json_response({"model": m.name, "results": results})
        if m.task.name in ("text", "textgen"):
            text = body.fields.get("text")
            if text is None:
                raise Problem(422, "give the text to explain: {\"text\": \"...\"}")
            text = check_text(text, "text", bounds)
            cells = _cells(body.fields.get("cells"))
            reader = m.predictor.reader if m.task.name == "text" else m.predictor.vocab
            result = await loop.run_in_executor(m.executor, text_gates, m.predictor.model, reader, text, cells)
            return json_response({"model": m.name, **result})
        if m.task.name == "forecast":
            cells = _cells(body.fields.get("cells"))
            result = await loop.run_in_executor(m.executor, forecast_gates, m, cells)
            return json_response({"model": m.name, **result})
        raise Problem(501, f"explain for {m.task.name} runs is not served yet; use 'deepskeptic explain'")


# ------------------------------------------------------------------ generate

async def textgen_generate(m, fields: dict[str, Any], bounds: Bounds, stream: bool):
    predictor = m.predictor
    prime = check_text(fields.get("prime", ""), "prime", bounds)
    length = integer(fields, "length", 500, 1, bounds.generate_length)
    temperature = number(fields, "temperature", 0.8, 0.0, 10.0)
    top_k = integer(fields, "top_k", 0, 0, 1_000_000)
    n = integer(fields, "n", 1, 1, bounds.generate_samples)
    seed = integer(fields, "seed", 0, 0, MAX_SEED)
    predictor.require_network()                       # a UserError (422) for the classical baselines
    settings = {"prime": prime, "temperature": temperature, "top_k": top_k, "seed": seed}
    loop = asyncio.get_running_loop()
    if not stream:
        samples = await loop.run_in_executor(m.executor, lambda: predictor.generate(prime, length, temperature,
                                                                                     top_k, n, seed))
        return json_response({"model": m.name, **settings, "samples": samples})

    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def on_char(ch: str) -> None:
        if stop.is_set():
            raise _Stopped
        put(("text", ch))

    def work() -> None:
        try:
            samples = predictor.generate(prime, length, temperature, top_k, n, seed,
                                         on_sample=lambda i: put(("sample", {"index": i, "prime": prime})),
                                         on_char=on_char)
            put(("done", {"model": m.name, **settings, "samples": samples}))
        except _Stopped:
            pass
        except UserError as exc:
            put(("error", {"error": str(exc)}))
        except Exception as exc:  # noqa: BLE001 - reported in the stream, logged here
            log.exception("generate failed for %s", m.name)
            put(("error", {"error": f"internal error ({type(exc).__name__}); the server's log has the details"}))
        finally:
            put(None)

    loop.run_in_executor(m.executor, work)

    async def events():
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                text = []
                for item in items:
                    if item is not None and item[0] == "text":
                        text.append(item[1])
                        continue
                    if text:                              # the characters that came together, as one event
                        yield _event("text", "".join(text))
                        text = []
                    if item is None:
                        return
                    yield _event(*item)
                if text:
                    yield _event("text", "".join(text))
        finally:
            stop.set()                                    # the client left: stop generating

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


class _Stopped(Exception):
    pass


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def gan_generate(m, fields: dict[str, Any], bounds: Bounds):
    n = integer(fields, "n", 16, 1, bounds.gan_images)
    seed = integer(fields, "seed", 0, 0, MAX_SEED)
    form = fields.get("format", "grid")
    if form not in ("grid", "images"):
        raise Problem(422, f"format must be grid (one PNG) or images (base64 PNGs in JSON), got {form!r}")
    images = await asyncio.get_running_loop().run_in_executor(m.executor, m.predictor.generate, n, seed)
    if form == "grid":
        return _png(_grid(images))
    return json_response({"model": m.name, "n": n, "seed": seed, "images": [to_base64_png(_hwc(x)) for x in images]})


# ------------------------------------------------------------------ explain

def image_explain(predictor, items, with_cam: bool) -> list[dict[str, Any]]:
    """Grad-CAM of the predicted class per image: the CLI's picture (input | overlay) as base64 PNG."""
    from deepskeptic.reports.html import figure_to_data_uri
    from deepskeptic.tasks.common.pixels import normalise
    from deepskeptic.tasks.image.report import conv_layers, grad_cam, grad_cam_figure
    if not conv_layers(predictor.model):
        raise UserError(f"model '{predictor.run.config['settings']['model']}' has no convolutional layers to "
                        f"explain; use a cnn or alexnet run")
    x = predictor.images([im for im, _ in items])                    # (N, C, S, S) uint8
    out = []
    for image, (_, name) in zip(x, items):
        xn = normalise(image[None], predictor.mean, predictor.std)
        cam, target = grad_cam(predictor.model, xn)
        with FIGURES:
            uri = figure_to_data_uri(grad_cam_figure(image.numpy(), cam, f"Grad-CAM: {predictor.classes[target]}"))
        result = {"name": name, "class": predictor.classes[target], "gradcam": uri.split(",", 1)[1]}
        if with_cam:
            result["cam"] = np.round(cam, 4).tolist()
        out.append(result)
    return out


def _cells(value: Any) -> list[int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise Problem(422, f"cells takes unit numbers like [0, 3] or \"0,3\", got {value!r}") from None
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in value):
        raise Problem(422, "cells must be a list of unit numbers, e.g. [0, 3]")
    return value


def text_gates(model, vocab, text: str, cells: list[int] | None) -> dict[str, Any]:
    """The last LSTM layer's output and gates per character (what `explain --text` shows)."""
    from deepskeptic.tasks.common import gates
    shown = text[:gates.MAX_CHARS]
    if not shown:
        raise UserError("the text to explain is empty")
    rec = gates.record(model, vocab, shown, cells)
    return {"text": shown, "truncated": len(text) > len(shown), "cells": rec["cells"], "layer": rec["layer"],
            "unknown": rec["unknown"], **{k: np.round(rec[k], 4).tolist() for k in gates.ROWS}}


def forecast_gates(m, cells: list[int] | None) -> dict[str, Any]:
    """The forecasting LSTM's gates over the last window of the run's series (`explain RUN`)."""
    if hasattr(m.predictor, "explain"):                # the task's own (panel runs: the first series)
        return m.predictor.explain(None, cells=cells)
    from deepskeptic.tasks.forecast.explain import lstm_gates
    window, forecast, gates, units, labels, layer = lstm_gates(
        m.run.folder, m.predictor.model, ",".join(map(str, cells)) if cells else None)
    return {"units": units, "layer": layer, "time": labels, "window": np.asarray(window).tolist(),
            "forecast": np.asarray(forecast).tolist(),
            **{k: np.asarray(v)[:, units].round(5).tolist() for k, v in gates.items()}}


# ------------------------------------------------------------------ pictures

def _hwc(image: np.ndarray) -> np.ndarray:
    """(C, S, S) -> (S, S) or (S, S, 3), as PIL writes it."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def _grid(images: np.ndarray) -> np.ndarray:
    from deepskeptic.tasks.common.adversarial import grid
    return grid(torch.as_tensor(images), cols=min(8, len(images)))


def _png(array: np.ndarray) -> Response:
    from deepskeptic.tasks.common.adversarial import png_bytes
    return Response(png_bytes(array), media_type="image/png")
