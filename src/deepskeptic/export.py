"""`deepskeptic export`: a trained network leaves its run folder as ONNX (or a torch.export program),
with a sidecar JSON a program in any language can read, and proof that it computes what the run does.

Each task says what its graphs are (``Task.export_graphs``): the network *with* what belongs to it
(pixel normalisation, a forecast's scaling, anchor and ensemble median, a language model's one step
with its recurrent state in and out), real example inputs from the run's own test data, and the
names and dynamic axes of inputs and outputs. This module writes the file, runs it (onnxruntime, or
the loaded torch.export program) on those inputs, on their first example alone (the batch axis is
really dynamic) and on the graph's extra ``checks`` (a shorter time axis), compares with PyTorch and
fails beyond tolerance, or when the file refuses inputs the model takes, keeping no file then.
torch.export may fix a time axis at the example's length (it unrolls nn.LSTM); the sidecar's shapes
say which axes stayed dynamic.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from deepskeptic.errors import UserError, unknown_name
from deepskeptic.fileio import atomic_write_bytes, atomic_write_json
from deepskeptic.models import registry
from deepskeptic.runs import Run, versions

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}
TOLERANCE = 1e-4       # largest difference allowed, relative to the largest output value (fp32)


@dataclass
class Graph:
    """One exportable computation of a run."""
    name: str                                   # file stem: model, generator, g_ab, step, ...
    module: nn.Module                           # in eval mode; everything the model owns is inside
    inputs: tuple[torch.Tensor, ...]            # real examples from the run's own data (batch >= 2)
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)  # name -> {axis: "batch" | "time" ...}
    sidecar: dict[str, Any] = field(default_factory=dict)            # classes, vocabulary, features, ...
    description: str = ""                       # what goes in and what comes out, in words
    # more real inputs of other sizes the export is also checked on: a shorter time axis, say, since
    # one example of the same length does not show that a "time" axis really is dynamic
    checks: list[tuple[torch.Tensor, ...]] = field(default_factory=list)


def _outputs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.detach().cpu().numpy() for o in out]


def _shape(tensor: torch.Tensor, axes: dict[int, str]) -> list[Any]:
    return [axes.get(i, size) for i, size in enumerate(tensor.shape)]


def _write_onnx(graph: Graph, path: Path) -> dict[str, dict[int, str]]:
    """Write ``graph`` as ONNX; returns its inputs' dynamic axes (all of graph.dynamic's)."""
    import io
    dynamic = {name: {axis: label for axis, label in axes.items()} for name, axes in graph.dynamic.items()}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: these classic layers (conv, LSTM, GRU-free RNNs, BN) export to
        # the same ONNX operators as with dynamo=True, in a fraction of a second instead of ~10 s each.
        torch.onnx.export(graph.module, graph.inputs, buf, input_names=graph.input_names,
                          output_names=graph.output_names, dynamic_axes=dynamic, opset_version=17,
                          dynamo=False)
    atomic_write_bytes(path, buf.getvalue())
    return {name: dict(axes) for name, axes in graph.dynamic.items() if name in graph.input_names}


def _open_onnx(path: Path, graph: Graph) -> Callable[[tuple[torch.Tensor, ...]], list[np.ndarray]]:
    """The written file in an onnxruntime session: inputs -> outputs."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        feed = {name: t.cpu().numpy() for name, t in zip(graph.input_names, inputs)}
        return session.run(graph.output_names, feed)
    return run


def _write_torch_export(graph: Graph, path: Path) -> dict[str, dict[int, str]]:
    """Write ``graph`` as a torch.export program; returns the inputs' axes that stayed dynamic.

    The batch axis must stay dynamic (an error otherwise); other axes (time) may be fixed at the
    example's size where the traced code needs it: torch.export traces nn.LSTM step by step, so an
    LSTM's time axis becomes the example's length (the sidecar's shapes then say so)."""
    import io
    shapes = []
    for name in graph.input_names:
        axes = graph.dynamic.get(name, {})
        shapes.append({axis: torch.export.Dim.DYNAMIC if label == "batch" else torch.export.Dim.AUTO
                       for axis, label in axes.items()} or None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(graph.module, graph.inputs, dynamic_shapes=tuple(shapes))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    atomic_write_bytes(path, buf.getvalue())
    from torch.fx.experimental.symbolic_shapes import is_concrete_int
    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    kept = {}
    for name, spec_name in zip(graph.input_names, program.graph_signature.user_inputs):
        shape = getattr(values.get(spec_name), "shape", ())
        kept[name] = {axis: label for axis, label in graph.dynamic.get(name, {}).items()   # a SymInt may be
                      if axis < len(shape) and not is_concrete_int(shape[axis])}             # specialized to an int
    return kept


def _open_torch_export(path: Path, graph: Graph) -> Callable[[tuple[torch.Tensor, ...]], list[np.ndarray]]:
    """The written file loaded back as a program (once: loading takes seconds): inputs -> outputs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.export.load(str(path)).module()       # the file export_run has just written
    return lambda inputs: _outputs(module, inputs)


WRITERS = {"onnx": (_write_onnx, _open_onnx), "torch-export": (_write_torch_export, _open_torch_export)}


def parity(expected: list[np.ndarray], got: list[np.ndarray]) -> dict[str, float]:
    """Largest absolute difference and that difference relative to the largest |expected| value,
    over every output."""
    abs_diff, rel_diff = 0.0, 0.0
    for e, g in zip(expected, got):
        e, g = np.asarray(e, dtype=np.float64), np.asarray(g, dtype=np.float64)
        if e.shape != g.shape:
            return {"max_abs_diff": float("inf"), "max_rel_diff": float("inf")}
        if e.size == 0:
            continue
        diff = float(np.max(np.abs(e - g)))
        abs_diff = max(abs_diff, diff)
        rel_diff = max(rel_diff, diff / max(float(np.max(np.abs(e))), 1e-6))
    return {"max_abs_diff": abs_diff, "max_rel_diff": rel_diff}


def _first(tensor: torch.Tensor, axes: dict[int, str]) -> torch.Tensor:
    """The first example of ``tensor`` along its batch axis (if it has one)."""
    for axis, label in axes.items():
        if label == "batch":
            return tensor.narrow(axis, 0, 1)
    return tensor


def _fits(graph: Graph, dynamic: dict[str, dict[int, str]], inputs: tuple[torch.Tensor, ...]) -> bool:
    """Whether ``inputs`` have the example's size on every axis the written file fixed."""
    for name, tensor, example in zip(graph.input_names, inputs, graph.inputs):
        for axis in range(example.ndim):
            if axis not in dynamic.get(name, {}) and tensor.shape[axis] != example.shape[axis]:
                return False
    return True


def _examples(graph: Graph, extra: list[tuple[torch.Tensor, ...]]) -> int:
    """Examples the parity check ran: the batch, its first example alone and the ``extra`` checks."""
    def batch(inputs: tuple[torch.Tensor, ...]) -> int:
        for name, tensor in zip(graph.input_names, inputs):
            for axis, label in graph.dynamic.get(name, {}).items():
                if label == "batch":
                    return int(tensor.shape[axis])
        return 1
    return batch(graph.inputs) + 1 + sum(batch(inputs) for inputs in extra)


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".deepskeptic-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write the export to {out}: {exc.strerror or exc}; choose another --out") from None


def export_run(task, run: Run, format: str = "onnx", out: str | Path | None = None) -> dict[str, Any]:
    """Export every graph of ``run``; returns {graph name: its sidecar}. UserError when the run's
    model is not a graph, the format is unknown, --out cannot be written, or parity fails."""
    if format not in FORMATS:
        raise unknown_name("export format", str(format), FORMATS)
    model = run.config["settings"]["model"]
    spec = registry.spec(task.name, model)
    if spec.one_step:
        raise UserError(f"model '{model}' of task '{task.name}' is fitted in one step ({spec.description}), "
                        f"not a network: there is no graph to export; use 'deepskeptic predict {run.path}' "
                        f"or deepskeptic.load(...).predict(...) instead")
    out = Path(out) if out is not None else run.inside("export")
    _check_out(out)
    graphs = task.export_graphs(run)
    write, open_file = WRITERS[format]
    sidecars = {}
    for graph in graphs:
        graph.module.eval()
        path = out / f"{graph.name}{FORMATS[format]}"
        expected = _outputs(graph.module, graph.inputs)
        try:
            dynamic = write(graph, path)                   # the inputs' axes that stayed dynamic
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - an exporter failure is a bug report, said in one line
            raise RuntimeError(f"exporting {task.name}/{model} graph '{graph.name}' as {format} failed: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        run_file = open_file(path, graph)

        def execute(inputs: tuple[torch.Tensor, ...], what: str) -> list[np.ndarray]:
            try:
                return run_file(inputs)
            except Exception as exc:  # noqa: BLE001 - the written file refuses inputs the model takes
                path.unlink(missing_ok=True)
                shapes = ", ".join(f"{n} {list(t.shape)}" for n, t in zip(graph.input_names, inputs))
                raise UserError(f"the exported {graph.name} ({format}) does not run on {what} ({shapes}): "
                                f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}; "
                                f"{path.name} was not kept. Try --format "
                                f"{'torch-export' if format == 'onnx' else 'onnx'}") from None

        check = parity(expected, execute(graph.inputs, "the example batch"))
        # the batch axis really is dynamic: one example alone gives the same numbers as in the batch
        single = tuple(_first(t, graph.dynamic.get(n, {})) for n, t in zip(graph.input_names, graph.inputs))
        checks = [check, parity(_outputs(graph.module, single), execute(single, "one example alone"))]
        extra = [inputs for inputs in graph.checks if _fits(graph, dynamic, inputs)]
        checks += [parity(_outputs(graph.module, inputs), execute(inputs, "examples of another size"))
                   for inputs in extra]
        worst = max(c["max_rel_diff"] for c in checks)
        labels = {label for axes in dynamic.values() for label in axes.values()}   # still dynamic somewhere
        shown = {**{n: {a: l for a, l in graph.dynamic.get(n, {}).items() if l in labels} for n in graph.output_names},
                 **dynamic}
        sidecar = {
            "format": format, "file": path.name, "graph": graph.name, "description": graph.description,
            "task": task.name, "model": model, "run": str(run.path),
            "inputs": [{"name": n, "shape": _shape(t, shown.get(n, {})), "dtype": str(t.dtype).replace("torch.", "")}
                       for n, t in zip(graph.input_names, graph.inputs)],
            "outputs": [{"name": n, "shape": _shape(torch.from_numpy(np.asarray(e)), shown.get(n, {})),
                         "dtype": str(np.asarray(e).dtype)} for n, e in zip(graph.output_names, expected)],
            **graph.sidecar,
            "parity": {"max_abs_diff": max(c["max_abs_diff"] for c in checks),
                       "max_rel_diff": worst, "tolerance": TOLERANCE, "examples": _examples(graph, extra),
                       "checked_with": "onnxruntime" if format == "onnx" else "torch.export.load"},
            "metrics": {k: v for k, v in run.metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)},
            "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if not worst <= TOLERANCE:
            path.unlink(missing_ok=True)
            raise UserError(f"the exported {graph.name} differs from PyTorch by {worst:.3g} (relative), more than "
                            f"the tolerance {TOLERANCE:g}; {path.name} was not kept. Try --format "
                            f"{'torch-export' if format == 'onnx' else 'onnx'}")
        atomic_write_json(out / f"{graph.name}.json", json_safe(sidecar))   # NaN metrics as null: valid JSON
        sidecars[graph.name] = sidecar
    return sidecars


def json_safe(value: Any) -> Any:
    """NaN and infinities as None, so the sidecar is valid JSON."""
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def describe(sidecars: dict[str, Any]) -> str:
    """The lines `deepskeptic export` prints: per file, its inputs and outputs and the parity check."""
    lines = []
    for s in sidecars.values():
        ins = ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in s["inputs"])
        outs = ", ".join(f"{o['name']} {o['shape']}" for o in s["outputs"])
        p = s["parity"]
        lines.append(f"{s['file']}: {ins} -> {outs}; largest difference from PyTorch {p['max_abs_diff']:.3g} "
                     f"({p['max_rel_diff']:.3g} relative, {p['checked_with']}, {p['examples']} test examples)")
    return "\n".join(lines)
