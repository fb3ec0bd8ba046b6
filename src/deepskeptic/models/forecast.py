"""Forecasters: the LSTM on trial, the plain RNN and MLP, and the statistical baselines.

Every network maps a window of scaled history x (B, L, F) — feature 0 the target, the others past
covariates — to the next H scaled target values (B, H) at once (direct multi-step forecasting).
With ``level_relative`` the network sees the target relative to its last observed value and
predicts the change from it: a trending series whose level leaves the training range (GDP) stays
in familiar territory, and an untrained network starts out as the naive forecast, not as noise.

The statistical baselines (naive, seasonal-naive, drift, ets, arima, theta) are not networks: each
is registered with its own small config and built as a ``StatisticalForecaster`` — a module without
parameters that only carries the config. The forecast task recognises it and fits the method with
statsmodels at every backtest origin (tasks/forecast_baselines.py) instead of training it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepskeptic.models.registry import register

# Training settings shared by the networks: windows are few (tens to thousands), so batches are
# small and epochs many; L1 loss because the score is MASE, a mean absolute error.
NETWORK_DEFAULTS = {"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 32}


def relative_to_last(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x with its target channel minus the window's last target value, that last value (B, 1))."""
    last = x[:, -1, :1]                                        # (B, 1)
    target = x[..., :1] - last[:, None, :]                     # (B, L, 1)
    return torch.cat([target, x[..., 1:]], dim=-1), last


class RecurrentForecaster(nn.Module):
    """A recurrent encoder over the window, then a linear head from the last hidden state to H values."""

    def __init__(self, rnn: nn.Module, hidden: int, horizon: int, level_relative: bool):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden, horizon)
        self.level_relative = level_relative

    def forward(self, x: Tensor) -> Tensor:
        if self.level_relative:
            x, last = relative_to_last(x)
        out, _ = self.rnn(x)                  # (B, L, hidden)
        y = self.head(out[:, -1])             # (B, H)
        return y + last if self.level_relative else y


@dataclass
class RNNConfig:
    input_size: int = 1          # features per step: the target plus past covariates
    horizon: int = 12            # steps forecast at once
    hidden: int = 64             # units of the Elman layer(s)
    layers: int = 1              # one layer: the plain network of the 1990s
    dropout: float = 0.0         # between layers (only with layers > 1)
    level_relative: bool = True  # see and predict the target relative to its last value


@register("forecast", "rnn", RNNConfig, role="baseline",
          description="Elman network (tanh), truncated BPTT over the lookback window",
          train_defaults={**NETWORK_DEFAULTS})
def build_rnn(cfg: RNNConfig) -> nn.Module:
    rnn = nn.RNN(cfg.input_size, cfg.hidden, num_layers=cfg.layers, nonlinearity="tanh", batch_first=True,
                 dropout=cfg.dropout if cfg.layers > 1 else 0.0)
    return RecurrentForecaster(rnn, cfg.hidden, cfg.horizon, cfg.level_relative)


@dataclass
class LSTMConfig:
    input_size: int = 1
    horizon: int = 12
    hidden: int = 64             # cells per layer
    layers: int = 2              # stacked, as in the classic sequence models
    dropout: float = 0.1         # between the stacked layers; light, the series are short
    level_relative: bool = True


@register("forecast", "lstm", LSTMConfig, role="deep",
          description="stacked LSTM with dropout between layers (nn.LSTM; ExplicitLSTM for explain)",
          train_defaults={**NETWORK_DEFAULTS})
def build_lstm(cfg: LSTMConfig) -> nn.Module:
    lstm = nn.LSTM(cfg.input_size, cfg.hidden, num_layers=cfg.layers, batch_first=True,
                   dropout=cfg.dropout if cfg.layers > 1 else 0.0)
    return RecurrentForecaster(lstm, cfg.hidden, cfg.horizon, cfg.level_relative)


class WindowMLP(nn.Module):
    def __init__(self, cfg: "MLPConfig"):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = cfg.input_size * cfg.lookback
        for _ in range(cfg.layers):
            layers += [nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden
        layers.append(nn.Linear(width, cfg.horizon))
        self.net = nn.Sequential(*layers)
        self.level_relative = cfg.level_relative

    def forward(self, x: Tensor) -> Tensor:
        if self.level_relative:
            x, last = relative_to_last(x)
        y = self.net(x)                       # (B, L*F) -> (B, H)
        return y + last if self.level_relative else y


@dataclass
class MLPConfig:
    input_size: int = 1
    lookback: int = 24           # window length: the MLP sees it flattened, so it is part of its shape
    horizon: int = 12
    hidden: int = 128            # units per hidden layer
    layers: int = 2              # hidden layers
    dropout: float = 0.1
    level_relative: bool = True


@register("forecast", "mlp", MLPConfig, role="baseline",
          description="window-in, horizon-out perceptron (two ReLU hidden layers)",
          train_defaults={**NETWORK_DEFAULTS})
def build_mlp(cfg: MLPConfig) -> nn.Module:
    return WindowMLP(cfg)


# ------------------------------------------------------------------ statistical baselines

class StatisticalForecaster(nn.Module):
    """Marker for a statistical baseline: no parameters, no forward; the task fits ``method``."""

    def __init__(self, method: str, config):
        super().__init__()
        self.method = method
        self.config = config

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - never called
        raise RuntimeError(f"{self.method} is fitted by the forecast task, not run as a network")


@dataclass
class NoSettings:
    pass


@dataclass
class ETSConfig:
    damped: bool = True          # also try a damped trend (often the best of the family, M3/M4)
    seasonal: bool = True        # also try additive and multiplicative seasonality when --season > 1


@dataclass
class ARIMAConfig:
    # Grid searched by AIC once, on the data before the first backtest origin: p in 0..max_p,
    # d in 0..max_d, q in 0..max_q, and with --season m in 2..24 also the seasonal (0,1,1)m term.
    max_p: int = 2
    max_d: int = 1
    max_q: int = 2
    seasonal: bool = True


@dataclass
class ThetaConfig:
    deseasonalize: bool = True   # multiplicative classical decomposition first when --season > 1 (as in M3)


STATISTICAL = {
    "naive": (NoSettings, "the last value, repeated"),
    "seasonal-naive": (NoSettings, "the value one season (--season) earlier"),
    "drift": (NoSettings, "the line from the first to the last value, extended"),
    "ets": (ETSConfig, "exponential smoothing (statsmodels ETS), trend and seasonality chosen by AIC"),
    "arima": (ARIMAConfig, "ARIMA (statsmodels), order chosen by AIC over a small grid"),
    "theta": (ThetaConfig, "the theta method (statsmodels), winner of the M3 competition"),
}

for _method, (_config, _description) in STATISTICAL.items():
    register("forecast", _method, _config, role="baseline", description=_description)(
        lambda cfg, method=_method: StatisticalForecaster(method, cfg))
