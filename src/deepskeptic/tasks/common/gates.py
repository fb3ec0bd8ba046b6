"""The LSTM's gates, character by character: `deepskeptic explain RUN --text "..."` for text runs.

The trained ``nn.LSTM`` is copied into the explicit cell of models/lstm_cell.py (same weights,
same outputs), which records every gate at every step. For chosen units of the last layer we show,
per character, the unit's output h (in [-1, 1]) and its forget, input and output gates (in [0, 1]),
in the terminal (coloured backgrounds, or a tab-separated table when not on a terminal) and as a
picture, which the run's report shows too.
"""
from __future__ import annotations

import base64
import hashlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes, atomic_write_json
from deepskeptic.models.lstm_cell import ExplicitLSTM
from deepskeptic.reports.html import figure_to_data_uri, plt
from deepskeptic.runs import Run

if TYPE_CHECKING:  # (only the annotation: tasks/common sits below the tasks)
    from deepskeptic.tasks.base import ExplainOptions

ROWS = ("hidden", "forget", "input", "output")
MAX_CHARS = 400       # longer texts are cut: the picture and the terminal lines stay readable
DEFAULT_CELLS = 4     # units shown when none are chosen: the most active ones
WRAP = 64             # characters per line of the picture
VISIBLE = {"\n": "↵", "\t": "→", " ": " "}


@torch.no_grad()
def record(model, vocab, text: str, cells: list[int] | None = None) -> dict[str, Any]:
    """Gates of the last LSTM layer over ``text``: {'text', 'cells', 'layer', name: (T, len(cells))}.

    ``model`` has ``embed`` (an nn.Embedding) and ``rnn`` (an nn.LSTM), as the textgen and text
    LSTMs do. Without ``cells``, the units whose output varies most over the text are chosen.
    """
    if not isinstance(getattr(model, "rnn", None), torch.nn.LSTM):
        raise UserError("only LSTM runs have gates to show; this run's model is not an LSTM")
    model = model.cpu().eval()
    explicit = ExplicitLSTM.from_lstm(model.rnn)
    ids = vocab.encode(text)
    _, _, gates = explicit(model.embed(ids[None]))                  # each (layers, 1, T, H)
    layer = gates["hidden"].shape[0] - 1
    h = gates["hidden"][layer, 0]                                   # (T, H)
    hidden = h.shape[1]
    if cells is None:
        cells = h.std(0).argsort(descending=True)[:DEFAULT_CELLS].sort().values.tolist()
    bad = [c for c in cells if not 0 <= c < hidden]
    if bad:
        raise UserError(f"--cells {bad} out of range: this LSTM has units 0..{hidden - 1}")
    out = {"text": text, "cells": cells, "layer": layer, "unknown": int((ids == vocab.unk).sum())}
    for name in ROWS:
        out[name] = gates[name][layer, 0][:, cells].numpy()         # (T, cells)
    return out


def _unit_value(name: str, v: float) -> float:
    return (v + 1) / 2 if name == "hidden" else v                   # every row on [0, 1]


def figure(rec: dict[str, Any]):
    """Rows of text, each character on a square coloured by the value (blue low, red high)."""
    text, cells = rec["text"], rec["cells"]
    lines = [(s, min(s + WRAP, len(text))) for s in range(0, len(text), WRAP)] or [(0, 0)]
    block = len(ROWS) * len(cells)
    rows = len(lines) * (block + 1)
    width = max(1, min(WRAP, len(text)))
    fig, ax = plt.subplots(figsize=(0.16 * width + 1.6, 0.2 * rows + 0.6))
    grid = np.full((rows, width), np.nan)
    labels = []
    cmap = plt.get_cmap("coolwarm")
    for li, (a, b) in enumerate(lines):
        for ci, cell in enumerate(cells):
            for ri, name in enumerate(ROWS):
                r = li * (block + 1) + ci * len(ROWS) + ri
                values = rec[name][a:b, ci]
                grid[r, :b - a] = [_unit_value(name, float(v)) for v in values]
                labels.append((r, f"unit {cell} h" if name == "hidden" else name))
                for j, ch in enumerate(text[a:b]):
                    ax.text(j, r, VISIBLE.get(ch, ch), ha="center", va="center", fontsize=6, family="monospace")
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks([r for r, _ in labels], [lab for _, lab in labels], fontsize=6)
    ax.set_xticks([])
    ax.set_title(f"layer {rec['layer'] + 1}: unit output h (-1..1) and its gates (0..1)", fontsize=8)
    fig.tight_layout()
    return fig


def _terminal(rec: dict[str, Any]) -> str:
    """Coloured lines: per unit, the text four times with backgrounds from h, forget, input, output."""
    text = rec["text"]
    shown = "".join(VISIBLE.get(c, c) for c in text)
    cmap = plt.get_cmap("coolwarm")
    lines = []
    for start in range(0, len(text), 100):
        for ci, cell in enumerate(rec["cells"]):
            for name in ROWS:
                label = f"unit {cell} h" if name == "hidden" else f"  {name}"
                spans = []
                for j in range(start, min(start + 100, len(text))):
                    r, g, b, _ = (np.array(cmap(_unit_value(name, float(rec[name][j, ci])))) * 255).astype(int)
                    spans.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{shown[j]}")
                lines.append(f"{label:>12} " + "".join(spans) + "\x1b[0m")
            lines.append("")
    return "\n".join(lines)


def _table(rec: dict[str, Any]) -> str:
    header = ["pos", "char"] + [f"{name}_{cell}" for cell in rec["cells"] for name in ROWS]
    rows = ["\t".join(header)]
    for j, ch in enumerate(rec["text"]):
        values = [f"{rec[name][j, ci]:.3f}" for ci in range(len(rec["cells"])) for name in ROWS]
        rows.append("\t".join([str(j), repr(ch)[1:-1]] + values))
    return "\n".join(rows)


def parse_cells(spec: str | None) -> list[int] | None:
    if not spec:
        return None
    try:
        return [int(c) for c in spec.split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--cells takes comma-separated unit numbers such as 3,17,200, not {spec!r}") from None


def explain(run: Run, model, vocab, options: ExplainOptions, write_report) -> int:
    """`deepskeptic explain` for a character LSTM: ``options`` gives the text (or inputs, joined),
    cells and out; ``write_report(run)`` re-renders the report that shows the new picture."""
    text = options.text if options.text is not None else " ".join(options.inputs)
    if not text:
        raise UserError('give the text to explain: deepskeptic explain RUN --text "some text"')
    if len(text) > MAX_CHARS:
        print(f"note: the text is cut to its first {MAX_CHARS} characters", file=sys.stderr)
        text = text[:MAX_CHARS]
    rec = record(model, vocab, text, parse_cells(options.cells))
    if rec["unknown"]:
        print(f"note: {rec['unknown']} character(s) are not in the run's vocabulary; read as unknown", file=sys.stderr)
    print(_terminal(rec) if sys.stdout.isatty() else _table(rec))
    out = Path(options.out) if options.out else run.inside("explain")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text[:24]).strip("-") or "text"
    stem = f"gates-{slug}-{hashlib.sha1(text.encode()).hexdigest()[:6]}"
    uri = figure_to_data_uri(figure(rec))
    atomic_write_bytes(out / f"{stem}.png", base64.b64decode(uri.split(",", 1)[1]))
    atomic_write_json(out / f"{stem}.json", {"text": text, "cells": rec["cells"], "layer": rec["layer"],
                                            **{name: rec[name].tolist() for name in ROWS}})
    if not options.out:
        write_report(run)                                           # the report shows the new picture
    print(f"wrote {out / (stem + '.png')}" + ("" if options.out else f" and updated {run.report_path}"),
          file=sys.stderr)
    plt.close("all")
    return 0


def report_section(report, run: Run, model, vocab, text: str) -> None:
    """The gates on ``text`` and every picture `explain` left in RUN/explain, for a run's report."""
    if not isinstance(getattr(model, "rnn", None), torch.nn.LSTM):
        return
    report.heading("Inside the LSTM: units and gates per character")
    report.figure(figure(record(model, vocab, text)),
                  "the most active units of the last layer on held-out text: unit output h and the forget, "
                  "input and output gates of the same unit (blue low, red high)")
    folder = run.path / "explain"
    for png in sorted(folder.glob("gates-*.png")) if folder.is_dir() else []:
        report.image(png.read_bytes(), caption=f"deepskeptic explain: {png.name}")
