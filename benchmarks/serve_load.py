"""Load on `deepskeptic serve`: requests/s and latency from 1, 8 and 32 concurrent clients, next to
the same predictor called in-process at the same batch sizes, in one run.

The server runs as its own process (`deepskeptic serve RUN`, micro-batching on) on 127.0.0.1;
the clients are httpx.AsyncClient tasks in this process, each sending one image per request (a
PNG, base64 in JSON) and waiting for the answer before sending the next, until --requests
requests have been answered at that concurrency. In-process, the predictor is called on batches of
the same sizes (PIL images in, the same top-3 results out): the ceiling the server's throughput is
measured against. Goals at 32 clients: at least 50 % of the in-process throughput at batch 32, and
p99 under 100 ms.

    PYTHONPATH=src python benchmarks/serve_load.py                        # trains a Fashion-MNIST cnn first
    PYTHONPATH=src python benchmarks/serve_load.py --run runs/cnn-fashion --requests 2000
    PYTHONPATH=src python benchmarks/serve_load.py --data digits --epochs 1 --requests 100   # a quick check

Prints a table and one JSON line (hardware and versions included).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


def test_images(data: str, n: int) -> list[np.ndarray]:
    """``n`` real test images as (H, W) uint8: Fashion-MNIST's test set or scikit-learn's digits."""
    if data == "fashion-mnist" and FASHION.is_file():
        raw = gzip.decompress(FASHION.read_bytes())
        images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
    else:
        from sklearn.datasets import load_digits
        images = (load_digits().images * 15).astype(np.uint8)
    return [images[i % len(images)] for i in range(n)]


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ------------------------------------------------------------------ the served side

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, max_batch: int, max_delay_ms: float) -> subprocess.Popen:
    import httpx
    proc = subprocess.Popen([sys.executable, "-m", "deepskeptic", "serve", str(run), "--port", str(port),
                             "--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server stopped: {proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


async def load(url: str, name: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    """``clients`` concurrent clients, ``requests`` answers in all: requests/s and latency."""
    import httpx
    latencies: list[float] = []
    next_index = 0
    errors = 0

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < requests:
            body = bodies[next_index % len(bodies)]
            next_index += 1
            start = time.perf_counter()
            response = await c.post(f"/v1/models/{name}/predict", content=body,
                                    headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - start)
            errors += response.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    # TCP_NODELAY, as curl, urllib3/requests and browsers set it: httpx writes a request's headers
    # and body separately, and without it Nagle's algorithm holds the body until the server's
    # delayed ACK of the headers (~40 ms on Linux): a client's floor, not the server's.
    transport = httpx.AsyncHTTPTransport(limits=limits,
                                         socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with httpx.AsyncClient(base_url=url, timeout=60, transport=transport) as c:
        for body in bodies[:min(8, len(bodies))]:               # warm-up: connections, first batches
            await c.post(f"/v1/models/{name}/predict", content=body, headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        await asyncio.gather(*[client(c) for _ in range(clients)])
        seconds = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(seconds, 3),
            "requests_per_second": round(len(latencies) / seconds, 1),
            "p50_ms": round(1000 * percentile(latencies, 50), 2), "p99_ms": round(1000 * percentile(latencies, 99), 2)}


# ------------------------------------------------------------------ the in-process side

def in_process(run: Path, images: list[np.ndarray], batch: int, requests: int) -> dict:
    """The predictor on batches of ``batch`` PIL images until ``requests`` images are predicted."""
    from deepskeptic.api import load as load_run
    predictor = load_run(run).predictor
    pil = [Image.open(io.BytesIO(png(x))) for x in images]
    for _ in range(3):
        predictor.predict(pil[:batch])
    latencies, done = [], 0
    start = time.perf_counter()
    while done < requests:
        items = [pil[(done + i) % len(pil)] for i in range(batch)]
        t = time.perf_counter()
        predictor.predict(items)
        latencies.append(time.perf_counter() - t)
        done += batch
    seconds = time.perf_counter() - start
    return {"batch": batch, "images": done, "seconds": round(seconds, 3), "images_per_second": round(done / seconds, 1),
            "p50_ms": round(1000 * percentile(latencies, 50), 2), "p99_ms": round(1000 * percentile(latencies, 99), 2)}


# ------------------------------------------------------------------ main

def train_run(data: str, epochs: int, limit: int | None, out: Path) -> Path:
    from deepskeptic.cli import main
    args = ["train", "image", "--data", data, "--model", "cnn", "--epochs", str(epochs), "--out", str(out),
            "--no-progress"] + (["--limit", str(limit)] if limit else [])
    if main(args) != 0:
        raise SystemExit("training the cnn failed")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an image run folder (default: train a cnn on --data first)")
    parser.add_argument("--data", default="fashion-mnist", help="data set of the cnn trained when --run is not given")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="training examples (default: all)")
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (1,8,32)")
    parser.add_argument("--requests", type=int, default=1000, help="requests answered per level (1000)")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    args = parser.parse_args()

    import torch
    folder = tempfile.TemporaryDirectory(prefix="serve-load-")
    run = Path(args.run) if args.run else train_run(args.data, args.epochs, args.limit, Path(folder.name) / "cnn")
    data = json.loads((run / "config.json").read_text())["settings"]["data"]
    images = test_images("fashion-mnist" if "fashion" in str(data) else "digits", 256)
    bodies = [json.dumps({"image": base64.b64encode(png(x)).decode()}).encode() for x in images]
    levels = [int(c) for c in args.clients.split(",")]

    port = free_port()
    server = start_server(run, port, args.max_batch, args.max_delay_ms)
    try:
        served = [asyncio.run(load(f"http://127.0.0.1:{port}", run.name, bodies, c, args.requests)) for c in levels]
    finally:
        server.terminate()
        server.wait(timeout=30)
    local = [in_process(run, images, c, args.requests) for c in levels]

    print(f"{'clients / batch':>15} {'server req/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'in-process img/s':>17} "
          f"{'p50 ms':>8} {'share':>6}")
    for s, p in zip(served, local):
        share = s["requests_per_second"] / p["images_per_second"] if p["images_per_second"] else float("nan")
        s["share_of_in_process"] = round(share, 3)
        print(f"{s['clients']:>15} {s['requests_per_second']:>13.1f} {s['p50_ms']:>8.1f} {s['p99_ms']:>8.1f} "
              f"{p['images_per_second']:>17.1f} {p['p50_ms']:>8.1f} {share:>6.0%}"
              + (f"  ({s['errors']} errors)" if s["errors"] else ""))
    print(json.dumps({"benchmark": "serve_load", "run": str(run), "data": data, "max_batch": args.max_batch,
                      "max_delay_ms": args.max_delay_ms, "served": served, "in_process": local,
                      "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "platform": platform.platform(), "python": platform.python_version(),
                      "torch": torch.__version__, "median_server_p50_ms": statistics.median(s["p50_ms"] for s in served)}))


if __name__ == "__main__":
    main()
