"""Inside a trained forecasting LSTM: its gates and cell state over the last window of the run's
series (`deepskeptic explain RUN [--cells 0,3]`, and a figure of the run's report); of a panel
run, of one of its series (`deepskeptic explain RUN SERIES_ID`; default the first)."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepskeptic.errors import UserError
from deepskeptic.fileio import atomic_write_bytes, atomic_write_text
from deepskeptic.models.lstm_cell import ExplicitLSTM
from deepskeptic.reports.html import figure_to_data_uri
from deepskeptic.runs import Run
from deepskeptic.tasks.base import ExplainOptions
from deepskeptic.tasks.forecast.figures import gates_figure
from deepskeptic.tasks.forecast.predict import explain_series, point_forecast, prepared_for_run


def lstm_gates(run: Run, model: nn.Module, cells: str | None, series: str | None = None):
    """Gates of the run's trained LSTM ``model`` over the last lookback window of the run's series
    (of a panel run: of its series ``series``, default the first).

    Returns (window (L,), forecast (H,), {gate: (L, hidden)} of the last layer, units, time labels, layer).
    In an ensemble (members > 1) the gates are those of the first member (with its series embedding
    among its inputs, when it has one)."""
    lstm = getattr(model.members[0], "rnn", None) if hasattr(model, "members") else None
    if not isinstance(lstm, nn.LSTM):
        raise UserError(f"explain shows LSTM gates; run {run.path} is a '{run.config['settings']['model']}' model: "
                        f"use an lstm run")
    prepared = prepared_for_run(run, series)
    L = prepared.lookback
    index = None if prepared.series_index is None else torch.tensor([prepared.series_index])
    if len(prepared.series) < L:
        raise UserError(f"the series has {len(prepared.series)} points but this network needs the last {L} (its lookback)")
    x = model.member_input(0, model.core_input(torch.from_numpy(prepared.scaled()[-L:]).float()[None]), index)
    # (1, L, F'): what the first member's LSTM sees
    series = prepared.series
    explicit = ExplicitLSTM.from_lstm(lstm)
    with torch.no_grad():
        _, _, gates = explicit(x)                                         # each (layers, 1, L, H)
    layer = lstm.num_layers - 1
    last = {k: v[layer, 0].numpy() for k, v in gates.items()}             # (L, H)
    if cells:
        try:
            units = [int(u) for u in cells.split(",") if u.strip()]
        except ValueError:
            raise UserError(f"--cells takes unit numbers like 0,3,7, got {cells!r}") from None
        bad = [u for u in units if not 0 <= u < lstm.hidden_size]
        if bad or not units:
            raise UserError(f"--cells must name units 0..{lstm.hidden_size - 1}, got {cells!r}")
    else:  # the four units whose cell state moves most over the window
        units = sorted(np.argsort(-last["cell"].std(0))[:4].tolist())
    forecast = point_forecast(run, model, prepared)            # (of a panel: this series', with its scaler)
    return series.values[-L:], forecast, last, units, series.time_labels(len(series) - L), layer


def explain(run: Run, model: nn.Module, options: ExplainOptions) -> int:
    """lstm-gates.png and lstm-gates.json in --out (default RUN/explain)."""
    window, forecast, gates, units, labels, layer = lstm_gates(run, model, options.cells,
                                                               explain_series(run, options.inputs))
    out = Path(options.out) if options.out else run.inside("explain")
    path = out / "lstm-gates.png"
    uri = figure_to_data_uri(gates_figure(window, forecast, gates, units, labels, layer))
    atomic_write_bytes(path, base64.b64decode(uri.split(",", 1)[1]))
    values = {k: v[:, units].round(5).tolist() for k, v in gates.items()}
    atomic_write_text(out / "lstm-gates.json", json.dumps({"units": units, "layer": layer, "time": labels, **values}) + "\n")
    shown = f"series {explain_series(run, options.inputs) or run.config['data_info']['series'][0]!r}: " \
        if run.config["data_info"].get("panel") else ""
    print(f"{shown}LSTM layer {layer + 1}, units {', '.join(map(str, units))}, over the last {len(window)} steps "
          f"({labels[0]} to {labels[-1]}); wrote {path} and {out / 'lstm-gates.json'}")
    return 0
