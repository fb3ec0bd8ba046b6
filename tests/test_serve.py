"""`deepskeptic serve`: every route on tiny runs trained here with the real CLI, each answer equal to
what the command line prints for the same inputs; micro-batching; token auth; bounds (each bad
request gets its 4xx JSON error); NaN -> null; a 500 without a traceback; a real uvicorn server."""
from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import shutil
import socket
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import cli, user_error
from deepskeptic.cli import main

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from deepskeptic.serve import Bounds, ServeOptions, create_app  # noqa: E402
from deepskeptic.serve.batching import MicroBatcher  # noqa: E402
from deepskeptic.serve.bounds import Problem, decode_audio, json_safe  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]   # starlette's TestClient on httpx
TOKEN = "test-token-0123456789"


# ------------------------------------------------------------------ tiny runs and inputs

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module", autouse=True)
def quick_reports():
    """The runs trained here get a one-line report.html: drawing the real ones (matplotlib) would
    take most of this module's time, and the tasks' own tests check them; here they are only served."""
    import importlib
    compare_module = importlib.import_module("deepskeptic.compare")   # deepskeptic.compare is the API's function
    from deepskeptic.fileio import atomic_write_text
    from deepskeptic.tasks import TASKS

    def write_report(self, run, prepared=None, metrics=None):
        atomic_write_text(run.report_path, f"<!doctype html><title>{run.path.name}</title><p>report</p>\n")

    def write_comparison_report(task, out, summary):
        atomic_write_text(out / "report.html", "<!doctype html><title>comparison</title>\n")

    with pytest.MonkeyPatch.context() as mp:
        for task in TASKS.values():
            mp.setattr(type(task), "write_report", write_report)
        mp.setattr(compare_module, "write_comparison_report", write_comparison_report)
        yield


@pytest.fixture(scope="module")
def image_cmp(root) -> Path:
    """A comparison of logreg and cnn on 200 digits, one epoch, one seed."""
    out = root / "cmp-image"
    assert main(["compare", "image", "--data", "digits", "--models", "logreg,cnn", "--seeds", "1", "--epochs", "1",
                 "--limit", "200", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def text_run(root) -> Path:
    table = root / "docs.csv"
    words = {"sport": "ball goal team match score".split(), "food": "bread cheese apple soup cook".split()}
    rng = np.random.default_rng(0)
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(120):
            label = ["sport", "food"][i % 2]
            w.writerow([" ".join(rng.choice(words[label], 6)) + f" {i}", label])
    (root / "tiny.toml").write_text("lr = 0.01\n[model]\nhidden = 8\nembed = 8\n")
    out = root / "text-lstm"
    assert main(["train", "text", "--data", str(table), "--model", "lstm", "--config", str(root / "tiny.toml"),
                 "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    return out


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(root) -> dict[str, bytes]:
    """Three digits as files: two 8x8 PNGs and a 40x40 RGB JPEG (resized and converted to grey)."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    out = {}
    for name, i in (("zero.png", 0), ("one.png", 1)):
        out[name] = png_bytes((digits.images[i] * 15).astype(np.uint8))
    big = np.kron((digits.images[2] * 15).astype(np.uint8), np.ones((5, 5), np.uint8))
    out["two.jpg"] = png_bytes(np.stack([big] * 3, -1), "JPEG")
    for name, data in out.items():
        (root / name).write_bytes(data)
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def client(paths, **options) -> TestClient:
    return TestClient(create_app([str(p) for p in paths], ServeOptions(**options)), raise_server_exceptions=False)


def cli_json(capsys, *args):
    rc, out, err = cli(capsys, *args)
    assert rc == 0, err
    return json.loads(out)


# ------------------------------------------------------------------ health, models, comparisons, reports

def test_health_models_comparisons_reports_and_page(image_cmp, text_run):
    with client([image_cmp, text_run]) as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["models"] == 3 and health["token_required"] is False
        models = {m["name"]: m for m in c.get("/v1/models").json()["models"]}
        assert set(models) == {"logreg-seed0", "cnn-seed0", "text-lstm"}     # a comparison's runs: model-seedK
        cnn = models["cnn-seed0"]
        assert cnn["task"] == "image" and cnn["model"] == "cnn" and cnn["comparison"] == "cmp-image"
        assert cnn["classes"] == [str(d) for d in range(10)] and cnn["commands"] == ["predict", "explain"]
        assert cnn["input"]["image_size"] == 8 and 0 < cnn["metrics"]["test_accuracy"] <= 1
        assert models["text-lstm"]["classes"] == ["food", "sport"]
        assert models["text-lstm"]["gates"] is True and "gates" not in cnn     # the page draws an LSTM's gates
        cmp = c.get("/v1/comparisons").json()["comparisons"][0]
        assert cmp["metric"] == "test_accuracy" and cmp["runs"] == ["logreg-seed0", "cnn-seed0"]
        assert cmp["verdicts"] and set(cmp["models"]) == {"logreg", "cnn"}
        report = c.get(cmp["report"])
        assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
        assert c.get(cnn["report"]).text == (image_cmp / "cnn-seed0" / "report.html").read_text()
        page = c.get("/")
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        assert "/page/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")
        assert c.get("/page/app.js").headers["content-type"].startswith("text/javascript")
        assert c.get("/page/../app.py").status_code == 404
        assert c.get("/v1/models/nope").json() == {"error": "no model 'nope'; served: logreg-seed0, cnn-seed0, text-lstm"}


# ------------------------------------------------------------------ predict = predict --json

def test_image_predict_equals_cli(image_cmp, images, root, capsys):
    run = image_cmp / "cnn-seed0"
    names = list(images)
    expected = cli_json(capsys, "predict", run, *[root / n for n in names], "--top-k", "4", "--json")
    with client([image_cmp]) as c:
        by_json = c.post("/v1/models/cnn-seed0/predict",
                         json={"images": [b64(images[n]) for n in names], "names": names, "top_k": 4}).json()
        files = [("files", (n, images[n], "application/octet-stream")) for n in names]
        by_upload = c.post("/v1/models/cnn-seed0/predict", files=files, data={"top_k": "4"}).json()
        one = c.post("/v1/models/cnn-seed0/predict", json={"image": "data:image/png;base64," + b64(images[names[0]])})
    assert by_json["model"] == "cnn-seed0" and by_json["task"] == "image"
    assert [r["top"] for r in by_json["results"]] == [r["top"] for r in expected]
    assert by_upload["results"] == [{**r, "file": n} for r, n in zip(expected, names)]
    assert one.json()["results"] == [{"file": "0", "top": expected[0]["top"][:3]}]


def test_text_predict_equals_cli(text_run, capsys):
    texts = ["goal goal team", "cheese soup é"]
    expected = cli_json(capsys, "predict", text_run, *texts, "--top-k", "2", "--json")
    with client([text_run]) as c:
        got = c.post("/v1/models/text-lstm/predict", json={"texts": texts, "top_k": 2}).json()
        one = c.post("/v1/models/text-lstm/predict", json={"text": texts[0], "top_k": 2}).json()
        upload = c.post("/v1/models/text-lstm/predict", files=[("files", ("doc.txt", texts[1].encode()))],
                        data={"top_k": "2"}).json()
    assert got["results"] == expected and one["results"] == expected[:1]
    assert upload["results"] == [{"name": "doc.txt", **expected[1]}]


# ------------------------------------------------------------------ micro-batching

def test_concurrent_predicts_are_one_batched_call_with_unchanged_results(image_cmp, images):
    app = create_app([str(image_cmp / "cnn-seed0")], ServeOptions(max_batch=32, max_delay_ms=500))
    bodies = [{"image": b64(images[n])} for n in images] * 3                    # 9 requests
    alone = TestClient(app).post("/v1/models/cnn-seed0/predict", json={"images": [b64(images[n]) for n in images]})
    batcher = app.state.models["cnn-seed0"].batcher
    calls = batcher.calls

    async def together():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as c:
            return await asyncio.gather(*[c.post("/v1/models/cnn-seed0/predict", json=b) for b in bodies])

    responses = asyncio.run(together())
    assert batcher.calls == calls + 1                                           # one predictor call for all 9
    expected = [r["top"] for r in alone.json()["results"]] * 3
    assert [r.json()["results"][0]["top"] for r in responses] == expected
    assert all(r.json()["results"][0]["file"] == "0" for r in responses)         # names are per request


def test_micro_batcher_limits_and_isolates_a_failing_request():
    from concurrent.futures import ThreadPoolExecutor
    seen = []

    def fn(items, options):
        seen.append(list(items))
        if "bad" in items:
            raise ValueError("bad input")
        return [f"{x}{options}" for x in items]

    batcher = MicroBatcher(fn, ThreadPoolExecutor(1), max_batch=4, max_delay=0.2)

    async def go():
        tasks = [batcher.submit([i, i], "!") for i in range(3)] + [batcher.submit(["bad"], "!"),
                                                                    batcher.submit([9], "?")]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(go())
    assert results[:3] == [["0!", "0!"], ["1!", "1!"], ["2!", "2!"]] and results[4] == ["9?"]
    assert isinstance(results[3], ValueError)
    assert all(len(call) <= 4 for call in seen) and [9] in seen                 # other options: their own call


# ------------------------------------------------------------------ auth

def test_token_auth(image_cmp, images):
    with client([image_cmp / "cnn-seed0"], token=TOKEN) as c:
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200   # open: no data
        body = {"image": b64(images["zero.png"])}
        none = c.post("/v1/models/cnn-seed0/predict", json=body)
        wrong = c.post("/v1/models/cnn-seed0/predict", json=body, headers={"Authorization": "Bearer nope"})
        right = c.post("/v1/models/cnn-seed0/predict", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert none.status_code == 401 and "Bearer" in none.json()["error"]
        assert none.headers["www-authenticate"] == "Bearer"
        assert wrong.status_code == 401 and wrong.json() == {"error": "wrong token"}
        assert right.status_code == 200 and right.json()["results"][0]["top"]
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models/cnn-seed0/report").status_code == 401


# ------------------------------------------------------------------ bounds: each bad request -> its 4xx

def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, followed by a few compressed bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


BAD = [  # (request, status, message pattern)
    ({"json": {"images": ["***"]}}, 422, r"image 0 is not valid base64"),
    ({"json": {"images": [b64(b"GIF89a not really")]}}, 422, r"cannot read image 0|not an image"),
    ({"json": {"images": [b64(png_header_bomb(60000, 60000))]}}, 413, r"claims 3,600,000,000 pixels"),
    ({"json": {"images": [b64(png_header_bomb(5000, 5000))]}}, 413, r"5000x5000 = 25,000,000 pixels; the limit"),
    ({"json": {"images": [b64(png_bytes(np.zeros((64, 64), np.uint8)))]}}, 413, r"4,096 pixels; the limit is 1,000"),
    ({"json": {"images": []}}, 422, r"no images"),
    ({"json": {"images": ["a"] * 5}}, 413, r"5 images .* the limit is 4"),
    ({"json": {"images": "abc"}}, 422, r"images must be a list"),
    ({"json": {"image": b64(png_bytes(np.zeros((8, 8), np.uint8))), "top_k": 0}}, 422, r"top_k must be between 1"),
    ({"json": [1, 2]}, 422, r"must be an object"),
    ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, r"not valid JSON"),
    ({"content": b"x" * 5000, "headers": {"content-type": "application/json"}}, 413, r"larger than the limit of 4,096"),
    ({"content": b"<a/>", "headers": {"content-type": "application/xml"}}, 415, r"send JSON"),
]


@pytest.mark.parametrize("request_kwargs,status,pattern", BAD)
def test_bad_image_requests_get_their_4xx(image_cmp, request_kwargs, status, pattern):
    import re
    bounds = Bounds(request_bytes=4096, items=4, image_pixels=1000)
    with client([image_cmp / "cnn-seed0"], bounds=bounds) as c:
        response = c.post("/v1/models/cnn-seed0/predict", **request_kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and re.search(pattern, response.json()["error"]), response.json()


def test_other_bounds(text_run, image_cmp):
    bounds = Bounds(text_chars=10, audio_seconds=0.5)
    with client([text_run, image_cmp / "cnn-seed0"], bounds=bounds) as c:
        long = c.post("/v1/models/text-lstm/predict", json={"texts": ["x" * 11]})
        assert long.status_code == 413 and "11 characters; the limit is 10" in long.json()["error"]
        assert c.post("/v1/models/text-lstm/predict", json={"texts": [3]}).status_code == 422
        assert c.post("/v1/models/text-lstm/generate", json={}).json()["error"].startswith("text runs have no generate")
        assert c.get("/v1/models/cnn-seed0/predict").status_code == 405
        assert c.post("/v1/models/cnn-seed0/translate", json={}).status_code == 404
    import soundfile
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(16000, np.float32), 16000, format="WAV")
    with pytest.raises(Problem, match=r"lasts 1.0 s; the limit is 0.5 s"):
        decode_audio(buffer.getvalue(), "a.wav", bounds)


def test_nan_is_null_and_said_so_and_a_bug_is_a_short_500(image_cmp, images, monkeypatch):
    clean, where = json_safe({"a": [1.0, float("nan"), np.float32("inf")], "b": np.array([2.5])})
    assert clean == {"a": [1.0, None, None], "b": [2.5]} and where == ["a[1]", "a[2]"]
    app = create_app([str(image_cmp / "cnn-seed0")])
    predictor = app.state.models["cnn-seed0"].predictor
    c = TestClient(app, raise_server_exceptions=False)
    body = {"image": b64(images["zero.png"])}
    monkeypatch.setattr(predictor, "predict", lambda x, names=None, top_k=3: [
        {"file": n, "top": [{"class": "0", "probability": float("-inf")}]} for n in names])
    response = c.post("/v1/models/cnn-seed0/predict", json=body)
    got = json.loads(response.text)                     # strict JSON: no NaN or Infinity tokens
    assert response.status_code == 200 and got["results"][0]["top"][0]["probability"] is None
    assert got["non_finite"]["count"] == 1 and got["non_finite"]["paths"] == ["results[0].top[0].probability"]

    def broken(*a, **k):
        raise RuntimeError("secret internals at /home/x")
    monkeypatch.setattr(predictor, "predict", broken)
    response = c.post("/v1/models/cnn-seed0/predict", json=body)
    assert response.status_code == 500 and response.json() == {
        "error": "internal error (RuntimeError); the server's log has the details"}


# ------------------------------------------------------------------ explain

def test_explain_image_and_text(image_cmp, text_run, images, capsys):
    with client([image_cmp, text_run]) as c:
        cam = c.post("/v1/models/cnn-seed0/explain", json={"image": b64(images["zero.png"]), "cam": True}).json()
        picture = c.post("/v1/models/cnn-seed0/explain", json={"image": b64(images["zero.png"]), "format": "png"})
        logreg = c.post("/v1/models/logreg-seed0/explain", json={"image": b64(images["zero.png"])})
        gates = c.post("/v1/models/text-lstm/explain", json={"text": "a goal", "cells": [0, 3]}).json()
        bad_cells = c.post("/v1/models/text-lstm/explain", json={"text": "a goal", "cells": [99]})
    predicted = cli_json(capsys, "predict", image_cmp / "cnn-seed0", image_cmp.parent / "zero.png", "--json")
    result = cam["results"][0]
    assert result["class"] == predicted[0]["top"][0]["class"]
    assert np.array(result["cam"]).shape == (8, 8) and 0 <= np.min(result["cam"]) <= np.max(result["cam"]) <= 1
    assert Image.open(io.BytesIO(base64.b64decode(result["gradcam"]))).format == "PNG"
    assert picture.headers["content-type"] == "image/png" and picture.content.startswith(b"\x89PNG")
    assert logreg.status_code == 422 and "no convolutional layers" in logreg.json()["error"]
    assert gates["text"] == "a goal" and gates["cells"] == [0, 3] and gates["layer"] == 0
    assert np.array(gates["forget"]).shape == (6, 2) and set(gates) >= {"hidden", "forget", "input", "output"}
    assert bad_cells.status_code == 422 and "out of range" in bad_cells.json()["error"]


# ------------------------------------------------------------------ the command line and a real uvicorn

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_errors_and_warning(tmp_path, image_cmp, capsys, monkeypatch):
    user_error(capsys, "serve", tmp_path / "missing", match=r"does not exist or is not a folder")
    (tmp_path / "empty").mkdir()
    user_error(capsys, "serve", tmp_path / "empty", match=r"neither a run folder .* nor a comparison folder")
    user_error(capsys, "serve", match=r"name at least one run or comparison folder")
    user_error(capsys, "serve", image_cmp, "--max-batch", "0", match=r"--max-batch must be at least 1")
    import uvicorn
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.delenv("DEEPSKEPTIC_TOKEN", raising=False)
    rc, out, err = cli(capsys, "serve", image_cmp, "--host", "0.0.0.0", "--port", "0")
    assert rc == 0 and "serving 2 run(s) at http://0.0.0.0:" in out
    assert err.startswith("warning: serving on 0.0.0.0") and "without a token" in err
    monkeypatch.setenv("DEEPSKEPTIC_TOKEN", TOKEN)                      # the token from the environment
    rc, out, err = cli(capsys, "serve", image_cmp, "--port", "0")
    assert rc == 0 and "token required" in out and err == ""
    user_error(capsys, "serve", image_cmp, "--token", "short", match=r"at least 8 characters")


def test_a_real_uvicorn_on_a_free_port_answers_concurrent_clients(image_cmp, images):
    import threading

    import uvicorn
    app = create_app([str(image_cmp / "cnn-seed0")], ServeOptions(token=TOKEN, max_delay_ms=20))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{server.config.port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(url + "/health").json()["token_required"] is True
        assert httpx.get(url + "/v1/models").status_code == 401

        async def clients():
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as c:
                return await asyncio.gather(*[c.post("/v1/models/cnn-seed0/predict",
                                                     files=[("files", (n, images[n]))]) for n in images])
        answers = asyncio.run(clients())
        alone = httpx.post(url + "/v1/models/cnn-seed0/predict", headers=headers,
                           json={"images": [b64(images[n]) for n in images], "names": list(images)}).json()
        assert [a.json()["results"][0] for a in answers] == alone["results"]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    assert not thread.is_alive()


# ------------------------------------------------------------------ runs in progress (--watch)

def test_watch_lists_runs_in_progress_with_their_history(tmp_path, image_cmp):
    running = tmp_path / "runs" / "image-digits-cnn-now"
    running.mkdir(parents=True)
    (running / "config.json").write_text(json.dumps({"task": "image", "settings": {"model": "cnn", "data": "digits",
                                                                                   "epochs": 5}}))
    (running / "history.jsonl").write_text('{"epoch": 1, "train_loss": 2.0, "val_loss": NaN}\n{"epoch": 2, "tr')
    with client([image_cmp / "cnn-seed0"], watch=str(tmp_path / "runs")) as c:
        assert c.get("/health").json()["watch"] is True
        runs = c.get("/v1/watch").json()["runs"]
    assert runs == [{"path": "image-digits-cnn-now", "task": "image", "model": "cnn", "data": "digits",
                     "epochs_planned": 5, "complete": False,
                     "history": [{"epoch": 1, "train_loss": 2.0, "val_loss": None}]}]


# ------------------------------------------------------------------ the other tasks

@pytest.fixture(scope="module")
def shapes(root) -> Path:
    """Two classes of tiny grayscale PNGs: bright squares and bright discs on noise."""
    rng = np.random.default_rng(0)
    size = 16
    yy, xx = np.mgrid[:size, :size]
    for cls in ("square", "disc"):
        (root / "shapes" / cls).mkdir(parents=True)
        for i in range(24):
            img = rng.integers(0, 40, (size, size)).astype(np.uint8)
            c, r = rng.integers(5, size - 5, 2), rng.integers(3, 5)
            mask = (np.abs(yy - c[0]) <= r) & (np.abs(xx - c[1]) <= r) if cls == "square" else \
                (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
            img[mask] = 220
            Image.fromarray(img, "L").save(root / "shapes" / cls / f"{i:03d}.png")
    return root / "shapes"


@pytest.fixture(scope="module")
def judge_cache(root):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPSKEPTIC_CACHE", str(root / "cache"))
        yield


@pytest.fixture(scope="module")
def textgen_run(root) -> Path:
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat and dog ran far away from home".split()
    (root / "corpus.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(150)) + "\n")
    out = root / "textgen-lstm"
    assert main(["train", "textgen", "--data", str(root / "corpus.txt"), "--model", "lstm", "--epochs", "1",
                 "--hidden", "16", "--embed", "8", "--seq-len", "16", "--batch-size", "4", "--out", str(out),
                 "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def gan_run(root, shapes, judge_cache) -> Path:
    out = root / "gan-dcgan"
    assert main(["train", "gan", "--data", str(shapes), "--model", "dcgan", "--epochs", "1", "--batch-size", "8",
                 "--judge-epochs", "1", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def cyclegan_run(root, shapes, judge_cache) -> Path:
    out = root / "cyclegan"
    assert main(["train", "cyclegan", "--data-a", str(shapes / "square"), "--data-b", str(shapes / "disc"),
                 "--model", "cyclegan", "--epochs", "1", "--batch-size", "4", "--judge-epochs", "1",
                 "--eval-samples", "8", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def speech(root) -> tuple[Path, Path]:
    """(the tiny spoken set, a run of the lstm on it)."""
    from conftest import tiny_speech_spec
    from deepskeptic.data import spoken
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    data = spoken.synthesise(root / "spoken" / "tiny", tiny_speech_spec(), progress=False).parent
    out = root / "speech-lstm"
    assert main(["train", "speech", "--data", str(data), "--model", "lstm", "--epochs", "1", "--out", str(out),
                 "--no-progress"]) == 0
    return data, out


@pytest.fixture(scope="module")
def forecast_run(root) -> tuple[Path, Path]:
    """(a monthly CSV, an lstm forecaster trained on it)."""
    rng = np.random.default_rng(0)
    t = np.arange(72)
    y = 50 + 0.5 * t + 8 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, 72)
    data = root / "sales.csv"
    data.write_text("month,sales\n" + "".join(f"{2000 + i // 12}-{i % 12 + 1:02d}-01,{v:.3f}\n" for i, v in enumerate(y)))
    (root / "forecast.toml").write_text("[model]\nhidden = 8\n")
    out = root / "forecast-lstm"
    assert main(["train", "forecast", "--data", str(data), "--target", "sales", "--model", "lstm", "--horizon", "3",
                 "--origins", "3", "--lookback", "12", "--epochs", "1", "--config", str(root / "forecast.toml"),
                 "--out", str(out), "--no-progress"]) == 0
    return data, out


def sse(text: str) -> list[tuple[str, object]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_textgen_generate_streams_the_text_of_the_cli(textgen_run, capsys):
    flags = {"prime": "the ", "length": 40, "temperature": 0.5, "seed": 3, "n": 2}
    expected = cli_json(capsys, "generate", textgen_run, "--prime", "the ", "--length", "40", "--temperature", "0.5",
                        "--seed", "3", "--n", "2", "--json")
    with client([textgen_run], bounds=Bounds(generate_length=100)) as c:
        whole = c.post("/v1/models/textgen-lstm/generate", json=flags).json()
        with c.stream("POST", "/v1/models/textgen-lstm/generate", json={**flags, "stream": True}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse(response.read().decode())
        too_long = c.post("/v1/models/textgen-lstm/generate", json={"length": 101})
        bad = c.post("/v1/models/textgen-lstm/generate", json={"length": 10, "temperature": "hot"})
        vocab = c.get("/v1/models/textgen-lstm").json()["vocabulary"]
    assert whole["samples"] == expected["samples"] and whole["seed"] == 3
    texts = []
    for kind, data in events:
        if kind == "sample":
            texts.append(data["prime"])
        elif kind == "text":
            texts[-1] += data
    assert events[-1] == ("done", {"model": "textgen-lstm", "prime": "the ", "temperature": 0.5, "top_k": 0,
                                   "seed": 3, "samples": expected["samples"]})
    assert texts == expected["samples"] and sum(kind == "text" for kind, _ in events) >= 2
    assert too_long.status_code == 413 and "length must be between 1 and 100" in too_long.json()["error"]
    assert bad.status_code == 422 and "temperature must be a finite number" in bad.json()["error"]
    assert "a" in vocab


def test_gan_generate_grid_and_images_equal_the_cli(gan_run, tmp_path, capsys):
    rc, _, err = cli(capsys, "generate", gan_run, "--n", "4", "--seed", "5", "--out", tmp_path / "cli")
    assert rc == 0, err
    expected = [np.asarray(Image.open(tmp_path / "cli" / f"sample-{i:04d}.png")) for i in range(4)]
    with client([gan_run], bounds=Bounds(gan_images=8)) as c:
        grid = c.post("/v1/models/gan-dcgan/generate", json={"n": 4, "seed": 5})
        listed = c.post("/v1/models/gan-dcgan/generate", json={"n": 4, "seed": 5, "format": "images"}).json()
        too_many = c.post("/v1/models/gan-dcgan/generate", json={"n": 9})
        assert c.post("/v1/models/gan-dcgan/predict", json={}).status_code == 404
    assert grid.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(grid.content)).size == (4 * 17 - 1, 16)       # 4 images of 16 px, 1 px gaps
    got = [np.asarray(Image.open(io.BytesIO(base64.b64decode(x)))) for x in listed["images"]]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected)) and len(got) == 4
    assert too_many.status_code == 413


def test_cyclegan_translate_equals_the_cli(cyclegan_run, shapes, tmp_path, capsys):
    source = shapes / "square" / "000.png"
    rc, _, err = cli(capsys, "translate", cyclegan_run, "--input", source, "--direction", "b2a", "--out", tmp_path)
    assert rc == 0, err
    expected = np.asarray(Image.open(tmp_path / "000.png"))
    with client([cyclegan_run]) as c:
        got = c.post("/v1/models/cyclegan/translate", files=[("files", ("000.png", source.read_bytes()))],
                     data={"direction": "b2a"}).json()
        bad = c.post("/v1/models/cyclegan/translate", json={"images": [b64(source.read_bytes())], "direction": "up"})
        described = c.get("/v1/models/cyclegan").json()
    assert got["from"] == "disc" and got["to"] == "square" and got["results"][0]["name"] == "000.png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(got["results"][0]["image"])))), expected)
    assert bad.status_code == 422 and "direction must be a2b or b2a" in bad.json()["error"]
    assert described["domains"] == ["square", "disc"] and described["commands"] == ["translate"]


def test_speech_predict_equals_cli(speech, tmp_path, capsys):
    import soundfile
    data, run = speech
    wavs = []
    for i, source in enumerate(sorted(data.rglob("*.flac"))[:2]):     # two takes, as WAV files
        samples, rate = soundfile.read(source, dtype="float32")
        soundfile.write(tmp_path / f"take{i}.wav", samples, rate, subtype="FLOAT")
        wavs.append(tmp_path / f"take{i}.wav")
    expected = cli_json(capsys, "predict", run, *wavs, "--json")
    with client([run]) as c:
        upload = c.post("/v1/models/speech-lstm/predict",
                        files=[("files", (w.name, w.read_bytes())) for w in wavs]).json()
        by_json = c.post("/v1/models/speech-lstm/predict", json={"audios": [b64(w.read_bytes()) for w in wavs]}).json()
        not_audio = c.post("/v1/models/speech-lstm/predict", json={"audio": b64(b"RIFF....WAVEnope")})
    assert upload["results"] == [{**r, "file": w.name} for r, w in zip(expected, wavs)]
    assert by_json["results"] == [{**r, "file": str(i)} for i, r in enumerate(expected)]
    assert not_audio.status_code == 422 and "not audio" in not_audio.json()["error"]


def test_forecast_predict_equals_cli_and_explain(forecast_run, capsys):
    data, run = forecast_run
    expected = cli_json(capsys, "predict", run, "--data", data, "--out", run / "cli.csv", "--json")
    values = [float(line.split(",")[1]) for line in data.read_text().splitlines()[1:]]
    with client([run]) as c:
        by_csv = c.post("/v1/models/forecast-lstm/predict", json={"csv": data.read_text()}).json()
        upload = c.post("/v1/models/forecast-lstm/predict", files=[("files", ("s.csv", data.read_bytes()))]).json()
        by_list = c.post("/v1/models/forecast-lstm/predict", json={"series": values}).json()
        with_gap = c.post("/v1/models/forecast-lstm/predict", json={"series": values[:30] + [None] + values[31:]})
        neither = c.post("/v1/models/forecast-lstm/predict", json={})
        gates = c.post("/v1/models/forecast-lstm/explain", json={"cells": [0, 1]}).json()
    assert by_csv["results"] == expected and upload["results"] == expected
    history = upload["history"]                                 # the series the forecast starts after, as read
    assert history["target"] == "sales" and history["points"] == len(values) == len(history["values"])
    assert history["values"] == pytest.approx(values) and history["time"][0] == "2000-01"
    assert history["time"][-1] == "2005-12" and expected[0]["time"] == "2006-01"
    assert by_list["history"]["values"] == pytest.approx(values)
    assert [r["forecast"] for r in by_list["results"]] == pytest.approx([r["forecast"] for r in expected], rel=1e-6)
    json.loads(with_gap.text)                                   # a gap: a forecast or an error, valid JSON either way
    assert with_gap.status_code in (200, 422)
    assert neither.status_code == 422 and "give the history to forecast from" in neither.json()["error"]
    assert gates["units"] == [0, 1] and len(gates["window"]) == 12 and len(gates["forecast"]) == 3
    for name in ("forget", "input", "candidate", "output", "cell", "hidden"):   # what the page draws
        assert np.asarray(gates[name]).shape == (12, 2), name


def test_the_listening_socket_sends_without_nagle_delays():
    """Without TCP_NODELAY every response on a kept-alive connection waited ~40 ms for the client's
    delayed ACK (52 ms per request at one client, 9 ms with it: BENCHMARKS.md)."""
    import socket
    from deepskeptic.serve.server import _bind
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.proto == socket.IPPROTO_TCP       # asyncio sets it again on accepted TCP sockets
    finally:
        sock.close()
