"""Latency per example of each task's main network: PyTorch eager against onnxruntime, side by side.

Each case is the exported graph itself (the wrapper `deepskeptic export` writes, with what belongs to
the model inside: pixel normalisation, the forecast's scaling and ensemble median, ...), timed at
batch 1 and batch 64 (``--batches``), on 1 and on 2 threads (``--threads``): torch.set_num_threads(N)
for eager, intra_op_num_threads=N (inter-op 1, sequential) for onnxruntime. Eager runs under
torch.inference_mode(). The ONNX file is written with deepskeptic.export's writer (the TorchScript
exporter, opset 17) and its outputs are checked against eager before timing. Prints a markdown
table, then one JSON line with every number and the machine.

Without ``--runs`` the networks have their registry defaults at each task's example shape and
random weights (latency does not depend on the weights): image cnn on 28x28 grey images, text lstm
on 200 characters, textgen lstm one sampling step, forecast lstm (8 members) on a 24-step window,
speech lstm on 1 s of log-mel frames, the dcgan generator at 28 px, the cyclegan generator at
``--cyclegan-size`` px. With ``--runs RUN ...`` the graphs of those trained runs are timed on their
own test examples (repeated up to the batch size).

    PYTHONPATH=src python benchmarks/export_latency.py                     # a quiet machine: real numbers
    PYTHONPATH=src python benchmarks/export_latency.py --seconds 0.05 --repeat 1   # does it work
    PYTHONPATH=src python benchmarks/export_latency.py --runs runs/image/... --batches 1,64
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepskeptic.export import Graph, _write_onnx, parity
from deepskeptic.models import registry


# ------------------------------------------------------------------ the cases

def example_graphs(cyclegan_size: int) -> list[tuple[str, Graph]]:
    """(label, graph) for each task's main network at its example shape; inputs of batch 2."""
    from deepskeptic.tasks.cyclegan.export import PixelTranslator
    from deepskeptic.tasks.forecast.export import RawWindowForecaster
    from deepskeptic.tasks.gan.export import UnitGenerator
    from deepskeptic.tasks.image.export import PixelClassifier
    from deepskeptic.tasks.speech.export import FeatureClassifier
    from deepskeptic.tasks.text.export import CharClassifier
    from deepskeptic.tasks.textgen.export import LMStep

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batch = {0: "batch"}
    out = []

    cnn = registry.create("image", "cnn", in_channels=1, image_size=28, num_classes=10)
    out.append(("image cnn (28x28x1, 10 classes)", Graph(
        "model", PixelClassifier(cnn, [0.286], [0.353]), (torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8, generator=g),),
        ["pixels"], ["logits", "probabilities"], {"pixels": batch, "logits": batch, "probabilities": batch})))

    steps = 200
    lstm = registry.create("text", "lstm", vocab_size=100, num_classes=10)
    out.append((f"text lstm ({steps} characters)", Graph(
        "model", CharClassifier(lstm), (torch.randint(2, 100, (2, steps), generator=g), torch.full((2,), steps)),
        ["ids", "lengths"], ["logits", "probabilities"],
        {"ids": {0: "batch", 1: "time"}, "lengths": batch, "logits": batch, "probabilities": batch})))

    lm = registry.create("textgen", "lstm", vocab_size=100)
    state = lm.initial_state(2)
    out.append((f"textgen lstm (one step, {lm.cfg.hidden} units)", Graph(
        "step", LMStep(lm), (torch.randint(1, 100, (2, 1), generator=g), *state), ["ids", "h", "c"],
        ["logits", "h_out", "c_out"],
        {"ids": {0: "batch", 1: "time"}, "h": {1: "batch"}, "c": {1: "batch"}, "logits": batch,
         "h_out": {1: "batch"}, "c_out": {1: "batch"}})))

    forecaster = registry.create("forecast", "lstm", input_size=1, horizon=12, season=12)
    series = 100 + 10 * torch.sin(torch.arange(2 * 24, dtype=torch.float64) * 2 * np.pi / 12)
    out.append(("forecast lstm (lookback 24, horizon 12, 8 members)", Graph(
        "model", RawWindowForecaster(forecaster, np.array([100.0]), np.array([7.0])), (series.view(2, 24, 1),),
        ["window"], ["forecast"], {"window": batch, "forecast": batch})))

    speech = registry.create("speech", "lstm", n_mels=40, num_classes=10)
    frames = 100
    out.append((f"speech lstm ({frames} frames = 1 s, 40 mels)", Graph(
        "model", FeatureClassifier(speech), (torch.randn(2, frames, 40, generator=g), torch.full((2,), frames)),
        ["features", "lengths"], ["logits", "probabilities"],
        {"features": {0: "batch", 1: "time"}, "lengths": batch, "logits": batch, "probabilities": batch})))

    gan = registry.create("gan", "dcgan", channels=1, image_size=28)
    out.append(("gan dcgan generator (28x28x1)", Graph(
        "generator", UnitGenerator(gan.generator), (torch.randn(2, gan.latent_dim, generator=g),), ["z"], ["images"],
        {"z": batch, "images": batch})))

    size = cyclegan_size
    cycle = registry.create("cyclegan", "cyclegan", channels=3, image_size=size)
    out.append((f"cyclegan g_ab ({size}x{size}x3)", Graph(
        "g_ab", PixelTranslator(cycle.g_ab), (torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=g),),
        ["pixels"], ["images"], {"pixels": batch, "images": batch})))
    return out


def run_graphs(paths: list[str]) -> list[tuple[str, Graph]]:
    """(label, graph) for every graph of the trained runs at ``paths`` (their own test examples)."""
    from deepskeptic.runs import Run
    from deepskeptic.tasks import get_task
    out = []
    for path in paths:
        run = Run.open(path)
        task = get_task(run.config["task"])
        for graph in task.export_graphs(run):
            out.append((f"{task.name} {run.config['settings']['model']} {graph.name} ({Path(path).name})", graph))
    return out


def at_batch(graph: Graph, size: int) -> tuple[torch.Tensor, ...]:
    """The graph's example inputs repeated (or cut) along their batch axes to ``size`` examples."""
    out = []
    for name, tensor in zip(graph.input_names, graph.inputs):
        axis = next((a for a, label in graph.dynamic.get(name, {}).items() if label == "batch"), None)
        if axis is None:
            out.append(tensor)
            continue
        n = tensor.shape[axis]
        reps = [1] * tensor.ndim
        reps[axis] = -(-size // n)
        out.append(tensor.repeat(*reps).narrow(axis, 0, size).contiguous())
    return tuple(out)


# ------------------------------------------------------------------ timing

def per_call(fn, seconds: float, repeat: int) -> float:
    """Median seconds per call over at least ``repeat`` calls and about ``seconds``, after one warm-up."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def onnx_session(path: Path, threads: int):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(label: str, graph: Graph, folder: Path, batches: list[int], threads: list[int], seconds: float,
            repeat: int) -> list[dict]:
    graph.module.eval()
    path = folder / f"{len(list(folder.iterdir()))}-{graph.name}.onnx"
    _write_onnx(graph, path)
    rows = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        session = onnx_session(path, n_threads)
        for batch in batches:
            inputs = at_batch(graph, batch)
            feed = {name: t.numpy() for name, t in zip(graph.input_names, inputs)}
            with torch.inference_mode():
                expected = graph.module(*inputs)
            expected = [e.numpy() for e in (expected if isinstance(expected, tuple) else (expected,))]
            check = parity(expected, session.run(graph.output_names, feed))

            def eager():
                with torch.inference_mode():
                    graph.module(*inputs)

            eager_s = per_call(eager, seconds, repeat)
            onnx_s = per_call(lambda: session.run(graph.output_names, feed), seconds, repeat)
            rows.append({"network": label, "batch": batch, "threads": n_threads,
                         "eager_ms_per_example": 1000 * eager_s / batch, "onnx_ms_per_example": 1000 * onnx_s / batch,
                         "speedup": eager_s / onnx_s, "max_rel_diff": check["max_rel_diff"]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| network | batch | threads | eager ms/example | onnxruntime ms/example | onnxruntime speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['batch']} | {r['threads']} | {r['eager_ms_per_example']:.4g} | "
                     f"{r['onnx_ms_per_example']:.4g} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", help="trained run folders to time (default: each task's main network)")
    parser.add_argument("--batches", default="1,64", help="batch sizes, comma-separated (1,64)")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated (1,2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing per measurement, at least (2)")
    parser.add_argument("--repeat", type=int, default=5, help="calls per measurement, at least (5)")
    parser.add_argument("--cyclegan-size", type=int, default=32, help="cyclegan image size (32: 256 takes minutes on a CPU)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    graphs = run_graphs(args.runs) if args.runs else example_graphs(args.cyclegan_size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, graph in graphs:
            rows += measure(label, graph, Path(tmp), batches, threads, args.seconds, args.repeat)
    worst = max(r["max_rel_diff"] for r in rows)
    import onnxruntime
    print(table(rows))
    print(f"\nlargest relative difference onnxruntime vs eager: {worst:.2g}")
    print(json.dumps({"rows": rows, "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                      "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                      "cpu_count": __import__("os").cpu_count(), "seconds": args.seconds, "repeat": args.repeat}))


if __name__ == "__main__":
    main()
