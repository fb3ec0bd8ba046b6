"""The engine jobs of the forecast task: a network trained on windows and a statistical baseline
fitted in one step; the networks' forecasts at given origins, which training, predict and
evaluate share; and the networks' FLOPs."""
from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepskeptic.engine import BestWeights, Job, StepContext
from deepskeptic.models.forecast import StatisticalForecaster, member_span
from deepskeptic.tasks.common.optim import adamw
from deepskeptic.tasks.forecast.baselines import backtest
from deepskeptic.tasks.forecast.data import Prepared, parts, training_series, training_windows, windows
from deepskeptic.tasks.forecast.gold import parallel_map
from deepskeptic.tasks.forecast.eval import accuracy, backtest_scales
from deepskeptic.threads import one_thread

# An epoch is 16 to 32 optimizer steps whatever the series' length, so that the default epochs mean
# similar work on a 100-point and a 2,000-point series: short series repeat their windows within
# an epoch, long ones see a fresh random subset of them in each.
MIN_STEPS_PER_EPOCH = 16
MAX_STEPS_PER_EPOCH = 32


@torch.no_grad()
def network_forecasts(model: nn.Module, prepared: Prepared, origins: np.ndarray, device: torch.device,
                      features: np.ndarray | None = None, members: bool = False) -> np.ndarray:
    """(K, H) forecasts in the series' units at ``origins``, each from the L values before it
    ((M, K, H), one per ensemble member, with ``members``); a panel's series with its position
    (``prepared.series_index``), which a series embedding reads."""
    z = ((prepared.features() if features is None else features) - prepared.mean) / prepared.std
    x, _ = windows(z, origins, prepared.lookback, prepared.horizon)
    series = None if prepared.series_index is None else \
        torch.full((len(x),), prepared.series_index, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    with one_thread():
        out = (model.member_forecasts if members else model)(x.to(device), series).float().cpu().numpy()
    model.train(was_training)  # a trained run's model stays in eval mode
    return out * prepared.std[0] + prepared.mean[0]


class NetworkJob(Job):
    """A network trained on the windows of one series, or of every series of a panel (a global
    network: one set of weights, each series' windows in its own scale)."""
    unit = "win"

    def __init__(self, model: nn.Module, prepared, settings: dict[str, Any], device: torch.device):
        self.model, self.prepared, self.device = model, prepared, device
        self.parts = parts(prepared)
        self.modules = {"model": model}
        self.optimizers = {"main": adamw(model, settings["lr"], settings["weight_decay"])}
        self.x, self.y = (t.to(device) for t in training_windows(prepared))
        series = training_series(prepared)                     # (W,) each window's series, of a panel
        self.series = None if series is None else series.to(device)
        self.val_origins = self.parts[0].split.val_window_origins()   # (of a panel: the same count in each series)
        self.batch_size = settings["batch_size"]
        # each member keeps the weights of its own best validation epoch (the engine's BestWeights)
        self.best = [BestWeights(core, settings.get("keep_best", True)) for core in model.members]
        self.best_mase: float | None = None   # the kept ensemble's validation MASE, set by restore_best
        self.patience = settings.get("patience") or 0
        self.epoch = 0        # the epoch last validated (should_stop counts from it)
        self.validate(0)      # the untrained network (the (seasonal) naive forecast): a candidate too

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        n = len(self.x)
        passes = max(1, math.ceil(MIN_STEPS_PER_EPOCH * self.batch_size / n))
        order = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])
        return list(order.split(self.batch_size))[:MAX_STEPS_PER_EPOCH]

    def train_step(self, index: torch.Tensor, ctx: StepContext):
        index = index.to(self.device)
        with one_thread(), ctx.autocast():
            # each ensemble member on its own loss (the mean of K independent ones), not the median's
            pred = self.model.member_forecasts(self.x[index], None if self.series is None else self.series[index])
            # (K, B, H)
            loss = F.l1_loss(pred.float(), self.y[index].expand_as(pred))
            ctx.backward_step(loss, clip=1.0)  # clipping: recurrent gradients can explode on long windows
        return len(index), {"loss": loss.detach()}

    def _validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(member forecasts (K, V, H), actual values (V, H), MASE scales (V,)) at the validation
        origins; of a panel, its series' one after another (S * V rows): every series has V of them,
        so the MASE over the rows is the mean of the series' MASEs, as M4 averages."""
        found = []
        for p in self.parts:
            origins = p.split.val_window_origins()
            members = network_forecasts(self.model, p, origins, self.device, members=True)
            actual = np.stack([p.series.values[o:o + p.horizon] for o in origins])
            found.append((members, actual, backtest_scales(p.series.values, origins, p.season)))
        if len(found) == 1:
            return found[0]
        return tuple(np.concatenate(arrays, axis=axis) for arrays, axis in zip(zip(*found), (1, 0, 0)))

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation MASE of the ensemble's forecast; with keep_best also of each member, each of
        which keeps the weights of its own best epoch (epoch 0, the untrained anchor, included):
        a member that overfits fast stops early while another goes on learning."""
        self.epoch = epoch
        if len(self.val_origins) == 0:
            return {}
        members, actual, scales = self._validation()
        forecast = np.median(members, axis=0)
        for k, best in enumerate(self.best):
            best.offer(accuracy(actual, members[k], scales)["mase"], epoch)
        return {"loss": self._scaled_loss(actual, forecast), "mase": accuracy(actual, forecast, scales)["mase"]}

    def _scaled_loss(self, actual: np.ndarray, forecast: np.ndarray) -> float:
        """The mean absolute error in scaled units: of a panel, each series' rows by its own std."""
        if len(self.parts) == 1:
            return float(np.mean(np.abs(actual - forecast)) / self.parts[0].std[0])
        std = np.repeat([p.std[0] for p in self.parts], len(self.val_origins))          # (S * V,)
        return float(np.mean(np.abs(actual - forecast) / std[:, None]))

    def should_stop(self) -> bool:
        """Early stopping: no member has improved its validation MASE for ``patience`` epochs (the
        best epochs of these short series come early, so the rest of the schedule would be spent
        on weights nobody keeps)."""
        return bool(self.patience) and all(best.score is not None for best in self.best) and \
            min(best.epochs_since_best(self.epoch) for best in self.best) >= self.patience

    def restore_best(self) -> list[int] | None:
        """Load each member's weights of its epoch with the best validation MASE; returns those
        epochs (one per member) and sets ``best_mase``, the kept ensemble's validation MASE."""
        epochs = [best.restore() for best in self.best]
        if None in epochs:
            return None
        members, actual, scales = self._validation()
        self.best_mase = accuracy(actual, np.median(members, axis=0), scales)["mase"]
        return epochs

    def extra_state(self) -> dict[str, Any]:
        return {"best": [best.state() for best in self.best]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for best, kept in zip(self.best, state["best"]):
            best.load(kept, self.device)


class StatisticalJob(Job):
    """A baseline in the engine: one epoch of one step, the step being the whole backtest's fits."""
    unit = "fit"

    def __init__(self, module: StatisticalForecaster, prepared, jobs: int = 1):
        self.module, self.prepared, self.jobs = module, prepared, jobs
        self.modules, self.optimizers = {}, {}
        self.forecasts: np.ndarray | None = None   # (K, H); of a panel (S, K, H)
        self.form: dict | list = {}                # of a panel, one form per series

    def epoch_batches(self, epoch: int, generator: torch.Generator):
        return ["fit"]

    def train_step(self, batch: Any, ctx: StepContext):
        p = self.prepared
        if p is parts(p)[0]:  # one series: the gold standard spreads its origins over the processes
            self.forecasts, self.form = backtest(self.module.method, self.module.config, p.series.values,
                                                 p.split.test_origins(), p.horizon, p.season, seasons=p.seasons,
                                                 jobs=self.jobs)
        else:                 # a panel: its series over the processes, each series' origins in one
            results = parallel_map(partial(_backtest_part, self.module.method, self.module.config),
                                   parts(p), self.jobs)
            self.forecasts = np.stack([forecasts for forecasts, _ in results])
            self.form = [form for _, form in results]
        return 1, {}

    def extra_state(self) -> dict[str, Any]:
        if self.forecasts is None:
            return {}
        return {"forecasts": torch.from_numpy(self.forecasts), "form": json.dumps(self.form)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "forecasts" in state:
            self.forecasts, self.form = state["forecasts"].numpy(), json.loads(state["form"])


def _backtest_part(method: str, config: Any, p: Prepared) -> tuple[np.ndarray, dict]:
    return backtest(method, config, p.series.values, p.split.test_origins(), p.horizon, p.season, seasons=p.seasons)


def recurrent_flops(model: nn.Module, lookback: int) -> int:
    """Forward FLOPs for one window (a multiply-add counts 2), counted from the layer shapes; an
    ensemble's recurrent members each over the steps they see (member_span)."""
    if hasattr(model, "members"):
        return sum(_layer_flops(core, member_span(k, lookback)) for k, core in enumerate(model.members))
    return _layer_flops(model, lookback)


def _layer_flops(model: nn.Module, steps: int) -> int:
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.LSTM, nn.RNN)):
            gates = 4 if isinstance(module, nn.LSTM) else 1
            for layer in range(module.num_layers):
                width = module.input_size if layer == 0 else module.hidden_size
                total += steps * 2 * gates * module.hidden_size * (width + module.hidden_size)
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
    return total
