"""The forecast task's exported graph: the last ``lookback`` raw values of the series (and its
covariates) in, the point forecast in the series' units out, with the run's scaling, the anchor
and the ensemble median inside. A panel run's graph also takes each window's series (its
position in the sidecar's ``series`` list), which picks that series' scaler (and its row of a
series embedding) inside."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.models.forecast import member_span
from deepskeptic.runs import Run
from deepskeptic.tasks.forecast.panel_use import is_panel_run, read_panel, run_members
from deepskeptic.tasks.forecast.predict import load_model, prepared_for_run

EXAMPLES = 32   # real windows of the run's series (its last ones) the export is checked on


class RawWindowForecaster(nn.Module):
    """(B, lookback, features) float64 raw window -> (B, horizon) float64 forecast in the target's units.

    Inside: the training span's standardisation per feature (in float64, then float32 as the
    network trained), the network's members with their anchor, the median of the members per step,
    and the target's scaling undone in float64, as `deepskeptic predict` does. Two steps of
    WindowForecaster are written in operators ONNX has, computing the same numbers: each step's
    change (torch.diff, which ONNX lacks) as a difference of shifted slices, and the median
    (torch.quantile(0.5): the mean of the middle two for an even count) as a sort."""

    def __init__(self, model: nn.Module, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(np.asarray(mean, dtype=np.float64)))   # (F,); a panel's (S, F)
        self.register_buffer("std", torch.tensor(np.asarray(std, dtype=np.float64)))

    def core_input(self, x: torch.Tensor) -> torch.Tensor:
        """WindowForecaster.core_input with torch.diff(prepend=first) as x - (x shifted by one)."""
        m = self.model
        if not m.level_relative:
            return x
        level = x[..., :1]                                              # (B, L, 1)
        extra = [level] if m.keep_level else []
        if m.changes:
            extra.append(level - torch.cat([level[:, :1], level[:, :-1]], dim=1))
        return torch.cat([level - x[:, -1:, :1], *extra, x[..., 1:]], dim=-1)

    def member_forecasts(self, x: torch.Tensor, series: torch.Tensor | None) -> torch.Tensor:
        """WindowForecaster.member_forecasts: (B, L, F) -> (K, B, H)."""
        m, inputs, steps = self.model, self.core_input(x), x.shape[1]
        y = torch.stack([core(m.member_input(k, inputs, series)[:, steps - member_span(k, steps):])
                         for k, core in enumerate(m.members)])
        return y + m.anchor(x) if m.level_relative else y

    def forward(self, window: torch.Tensor, series: torch.Tensor | None = None) -> torch.Tensor:
        if series is None:                                              # one series: its scaler
            mean, std = self.mean, self.std                             # (F,)
        else:                                                           # a panel: each window's series'
            mean, std = self.mean[series][:, None, :], self.std[series][:, None, :]   # (B, 1, F)
        x = ((window - mean) / std).float()                             # (B, L, F) scaled
        y = self.member_forecasts(x, series)                            # (K, B, H) scaled, anchored
        k = y.shape[0]
        if k > 1:
            y = y.sort(dim=0).values
            y = (y[(k - 1) // 2] + y[k // 2]) / 2                       # (B, H)
        else:
            y = y[0]
        return y.double() * std[..., 0] + mean[..., 0]                  # (B, H) in the series' units


def graphs(task, run: Run) -> list[Graph]:
    if is_panel_run(run):
        return panel_graphs(run)
    model = load_model(run, torch.device("cpu"))
    settings, info, config = run.config["settings"], run.config["data_info"], run.config["model_config"]
    prepared = prepared_for_run(run, None)                              # the run's own series, scaler
    # the raw windows before the series' last origins (the last one: the forecast past its end),
    # float64 (W, L, F): data.windows' cut, unscaled
    origins = np.arange(prepared.lookback, len(prepared.series) + 1)[-EXAMPLES:]
    x = torch.from_numpy(prepared.features()[origins[:, None] + np.arange(-prepared.lookback, 0)[None, :]])
    features = [info["target"], *info["covariates"]]
    lookback, horizon = prepared.lookback, prepared.horizon
    sidecar = {
        "lookback": lookback, "horizon": horizon, "features": features, "target": info["target"],
        "covariates": info["covariates"], "freq": info.get("freq"), "season": settings.get("season"),
        "scaling": {"mean": info["mean"], "std": info["std"],
                    "note": "per feature, fitted on the training span; applied and undone inside the graph"},
        "anchor": ({"season": config.get("season"), "smoothing": config.get("smoothing"),
                    "note": "the network predicts corrections to this (seasonal) naive forecast, computed inside"}
                   if config.get("level_relative", True) else None),
        "members": config.get("members", 1),
        "input": (f"window (B, {lookback}, {len(features)}) float64: the last {lookback} raw values before the "
                  f"forecast's first step, oldest first, columns {', '.join(features)} (the target first, in "
                  f"its own units); no scaling needed"),
        "output": (f"forecast (B, {horizon}) float64: the next {horizon} values of {info['target']} in its own "
                   f"units (the median of the ensemble); intervals come from `deepskeptic predict`"),
    }
    return [Graph(name="model", module=RawWindowForecaster(model, info["mean"], info["std"]).eval(),
                  inputs=(x.contiguous(),), input_names=["window"], output_names=["forecast"],
                  dynamic={"window": {0: "batch"}, "forecast": {0: "batch"}}, sidecar=sidecar,
                  description=f"the last {lookback} raw values ({len(features)} feature(s)) -> the next "
                              f"{horizon} values of {info['target']}")]


def panel_graphs(run: Run) -> list[Graph]:
    """A panel run's graph: (window (B, L, 1) float64, series (B,) int64) -> (B, H) float64,
    checked on the last window of up to EXAMPLES of its series (spread over the panel)."""
    model = load_model(run, torch.device("cpu"))
    settings, info, config = run.config["settings"], run.config["data_info"], run.config["model_config"]
    lookback, horizon = settings["lookback"], settings["horizon"]
    members = run_members(run, read_panel(run, None), lookback)
    picked = [members[i] for i in sorted(set(np.linspace(0, len(members) - 1, min(EXAMPLES, len(members))).astype(int)))]
    if len(picked) < 2:   # the batch axis is checked on two examples at least
        picked = picked * 2
    x = torch.from_numpy(np.stack([p.features()[-lookback:] for p in picked]))         # (B, L, 1)
    series = torch.tensor([p.series_index for p in picked], dtype=torch.long)         # (B,)
    names = [str(n) for n in info["series"]]
    sidecar = {
        "lookback": lookback, "horizon": horizon, "series": names, "freq": info.get("freq"),
        "season": settings.get("season"), "series_embedding": config.get("series_embedding", 0),
        "scaling": {"mean": [m[0] for m in info["mean"]], "std": [s[0] for s in info["std"]],
                    "note": "per series, fitted on its training span; picked by the series input, applied and "
                            "undone inside the graph"},
        "anchor": ({"season": config.get("season"), "smoothing": config.get("smoothing"),
                    "note": "the network predicts corrections to this (seasonal) naive forecast, computed inside"}
                   if config.get("level_relative", True) else None),
        "members": config.get("members", 1),
        "input": (f"window (B, {lookback}, 1) float64: the last {lookback} raw values of a series before the "
                  f"forecast's first step, oldest first, in its own units; series (B,) int64: which series each "
                  f"window is, its position in 'series' (0 to {len(names) - 1})"),
        "output": (f"forecast (B, {horizon}) float64: the next {horizon} values of each window's series in its "
                   f"own units (the median of the ensemble); intervals come from `deepskeptic predict`"),
    }
    module = RawWindowForecaster(model, np.asarray(info["mean"], float), np.asarray(info["std"], float)).eval()
    return [Graph(name="model", module=module, inputs=(x.contiguous(), series), input_names=["window", "series"],
                  output_names=["forecast"],
                  dynamic={"window": {0: "batch"}, "series": {0: "batch"}, "forecast": {0: "batch"}}, sidecar=sidecar,
                  description=f"the last {lookback} raw values of a series and its position among the run's "
                              f"{len(names)} series -> its next {horizon} values")]
