"""The forecast task's exported graph: the last ``lookback`` raw values of the series (and its
covariates) in, the point forecast in the series' units out, with the run's scaling, the anchor
and the ensemble median inside."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepskeptic.export import Graph
from deepskeptic.models.forecast import member_span
from deepskeptic.runs import Run
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
        self.register_buffer("mean", torch.tensor(np.asarray(mean, dtype=np.float64)))
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

    def member_forecasts(self, x: torch.Tensor) -> torch.Tensor:
        """WindowForecaster.member_forecasts: (B, L, F) -> (K, B, H)."""
        m, inputs, steps = self.model, self.core_input(x), x.shape[1]
        y = torch.stack([core(inputs[:, steps - member_span(k, steps):]) for k, core in enumerate(m.members)])
        return y + m.anchor(x) if m.level_relative else y

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        x = ((window - self.mean) / self.std).float()                  # (B, L, F) scaled
        y = self.member_forecasts(x)                                    # (K, B, H) scaled, anchored
        k = y.shape[0]
        if k > 1:
            y = y.sort(dim=0).values
            y = (y[(k - 1) // 2] + y[k // 2]) / 2                       # (B, H)
        else:
            y = y[0]
        return y.double() * self.std[0] + self.mean[0]                  # (B, H) in the series' units


def graphs(task, run: Run) -> list[Graph]:
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
