"""Runs on a panel (data/panel.py, data.PanelPrepared): what the task records of the data, and the
backtest of every series once a network is trained (a global one, on the windows of all series)
or a baseline fitted (per series, at every origin).

Each series is forecast at its own test origins from its own past only, with the network's one
set of weights and that series' own scaler; the series' origins are the same calendar times.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from deepskeptic.runs import Run
from deepskeptic.tasks.forecast.backtest import evaluate_panel, panel_form, write_panel_backtest
from deepskeptic.tasks.forecast.baselines import forecast
from deepskeptic.tasks.forecast.data import PanelPrepared
from deepskeptic.tasks.forecast.gold import parallel_map
from deepskeptic.tasks.forecast.jobs import network_forecasts


def panel_shape(pp: PanelPrepared) -> dict[str, Any]:
    return {"features": 1, "horizon": pp.horizon, "lookback": pp.lookback, "season": pp.season,
            "train_windows": sum(len(p.split.train_window_origins()) for p in pp.members),
            "series_count": len(pp.members)}


def panel_data_info(pp: PanelPrepared) -> dict[str, Any]:
    """config.json's data_info of a panel run: the panel, its series and their scalers."""
    panel, longest = pp.panel, max(pp.members, key=lambda p: p.split.n)
    s = longest.series
    return {"name": panel.name, "source": panel.source, "panel": True, "series": panel.names,
            "layout": pp.layout, "id_col": pp.id_col,
            "value_col": pp.members[0].series.target if pp.layout == "long" else None,
            "target": "each series", "covariates": [], "freq": panel.freq,
            "points": int(sum(len(p.series) for p in pp.members)), "lengths": [len(p.series) for p in pp.members],
            "start": s.time_labels(0, 1)[0], "end": s.time_labels(len(s) - 1)[0], "notes": panel.notes,
            "mean": [p.mean.tolist() for p in pp.members], "std": [p.std.tolist() for p in pp.members],
            "train_end": longest.split.train_end, "first_test": longest.split.first_test,
            "seasons": list(pp.seasons), "season_reason": pp.season_reason}


def finish_panel(run: Run, job, pp: PanelPrepared, one_step: bool, device: torch.device,
                 jobs: int = 1) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(metrics, form, seconds of the final fits) of a finished panel run, with backtest.json
    written: every series' forecasts at its test origins and past its end."""
    seconds = 0.0
    if one_step:   # past the end: each series' chosen form refitted (the gold standard: a new selection)
        forecasts, forms = job.forecasts, list(job.form)                 # (S, K, H)
        start = time.perf_counter()
        futures = np.stack(parallel_map(_Future(job.module.method, job.module.config),
                                        list(zip(pp.members, forms)), jobs))
        seconds = time.perf_counter() - start
    else:
        forecasts = np.stack([network_forecasts(job.model, p, p.split.test_origins(), device) for p in pp.members])
        futures = np.stack([network_forecasts(job.model, p, np.array([len(p.series)]), device,
                                              features=np.vstack([p.features(), np.zeros((p.horizon, 1))]))[0]
                            for p in pp.members])
        forms = [{} for _ in pp.members]
    write_panel_backtest(run, pp, forecasts, forms, futures)
    return evaluate_panel(pp, forecasts), panel_form(forms, pp.panel.names), seconds


class _Future:
    """(series, its form) -> its forecast past the end; a class, so that parallel_map can send it."""

    def __init__(self, method: str, config: Any):
        self.method, self.config = method, config

    def __call__(self, item) -> np.ndarray:
        p, form = item
        return forecast(self.method, form, p.series.values, p.horizon, p.season, self.config, p.seasons)
