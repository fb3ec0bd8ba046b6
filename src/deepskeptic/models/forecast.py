"""Forecasters: the LSTM on trial, the plain RNN and MLP, and the statistical baselines.

Every network maps a window of scaled history x (B, L, F) — feature 0 the target, the others past
covariates — to the next H scaled target values (B, H) at once (direct multi-step forecasting).
With ``level_relative`` (the default) the network sees the target relative to its last observed
value and predicts corrections to the (seasonal) naive forecast: a trending series whose level
leaves the training range (GDP) stays in familiar territory, and an untrained network starts out
as the simplest forecast, not as noise (see WindowForecaster).

The statistical baselines (naive, seasonal-naive, drift, ets, arima, theta, and the gold standard:
naive2, auto-ets, auto-arima, auto-theta, comb, mstl) are not networks: each
is registered with its own small config and built as a ``StatisticalForecaster`` — a module without
parameters that only carries the config, registered with ``one_step=True``. The forecast task fits
the method at every backtest origin instead of training it: statsmodels for the older ones
(tasks/forecast/baselines.py), statsforecast and M4's definitions for the gold standard
(tasks/forecast/gold.py, m4.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepskeptic.errors import UserError
from deepskeptic.models.registry import register

# Training settings shared by the networks: windows are few (tens to thousands), so batches are
# small and epochs many; L1 loss because the score is MASE, a mean absolute error.
NETWORK_DEFAULTS = {"lr": 3e-3, "weight_decay": 1e-4, "batch_size": 32}


class WindowForecaster(nn.Module):
    """Base of the networks: (B, L, F) scaled window -> (B, H) scaled forecast.

    With ``level_relative`` the core network sees the target minus the window's last value and its
    output is added to an anchor (``anchor``): the value one season before each forecast step (the
    seasonal naive forecast) when 1 < season <= L, else the last value (the naive forecast), both
    optionally exponentially smoothed. The network learns the correction to a simple forecast, as
    the M4 winner (Smyl's ES-RNN) did with its per-series exponential smoothing of level and
    seasonality.

    With ``members`` K > 1 the network is an ensemble of K cores of the same shape, each initialised
    from its own random draw and trained on its own loss (``member_forecasts``); the forecast is the
    median of their K forecasts per step (N-BEATS and the M4 leaders ensembled this way: on short
    series most of a network's error is its variance from the seed, and the median removes much
    of it)."""

    def __init__(self, cfg, make_core):
        super().__init__()
        self.level_relative, self.keep_level = cfg.level_relative, cfg.keep_level
        self.changes = cfg.changes
        self.season, self.horizon = cfg.season, cfg.horizon
        if not 0 < cfg.smoothing <= 1:
            raise UserError(f"smoothing must be in (0, 1], got {cfg.smoothing!r}")
        self.smoothing = float(cfg.smoothing)
        if cfg.members < 1:  # its kind (a whole number) the registry checks
            raise UserError(f"members must be a positive whole number, got {cfg.members!r}")
        if cfg.series_embedding < 0 or cfg.series_count < 0:
            raise UserError(f"series_embedding must be a whole number >= 0 (0: none), got {cfg.series_embedding!r}")
        if cfg.series_embedding and not cfg.series_count:
            raise UserError("series_embedding gives each series of a panel its own learned vector; this data is one "
                            "series: drop series_embedding from [model]")
        self.members = nn.ModuleList(make_core(k) for k in range(cfg.members))
        # a learned vector per series of a panel, one table per member (each core its own), seen at
        # every step of the window next to the values (DeepAR's static series features)
        self.embeddings = nn.ModuleList(nn.Embedding(cfg.series_count, cfg.series_embedding)
                                        for _ in range(cfg.members)) if cfg.series_embedding else None

    def core_input(self, x: Tensor) -> Tensor:
        """What each core sees: (B, L, F) -> (B, L, F'), with level_relative the target relative to
        its last value, then the absolute level (when kept), then each step's change from the step
        before (with ``changes``; 0 at the first step), then the covariates; else x itself. The
        changes are the classic stationary input of recurrent forecasters: a cell can add them up,
        where from the level-relative path alone it would first have to learn to difference."""
        if not self.level_relative:
            return x
        target = x[..., :1] - x[:, -1:, :1]                                    # (B, L, 1)
        extra = [x[..., :1]] if self.keep_level else []
        if self.changes:
            extra.append(torch.diff(x[..., :1], dim=1, prepend=x[:, :1, :1]))
        return torch.cat([target, *extra, x[..., 1:]], dim=-1)

    def member_input(self, k: int, inputs: Tensor, series: Tensor | None) -> Tensor:
        """What member k sees: core_input's (B, L, F') and, with a series embedding, its vector of
        each window's series (``series`` (B,) their positions in the panel) at every step:
        (B, L, F' + E)."""
        if self.embeddings is None:
            return inputs
        if series is None:
            raise ValueError("this network has a series embedding: give each window's series")
        vectors = self.embeddings[k](series)                                    # (B, E)
        return torch.cat([inputs, vectors[:, None, :].expand(-1, inputs.shape[1], -1).to(inputs)], dim=-1)

    def member_forecasts(self, x: Tensor, series: Tensor | None = None) -> Tensor:
        """(B, L, F) -> (K, B, H): each member's forecast, anchored; ``series`` (B,) the windows'
        series (used by a series embedding only)."""
        inputs = self.core_input(x)
        steps = x.shape[1]
        y = torch.stack([core(self.member_input(k, inputs, series)[:, steps - member_span(k, steps):])
                         for k, core in enumerate(self.members)])              # (B, span_k, F'+E) -> (K, B, H)
        return y + self.anchor(x) if self.level_relative else y

    def anchor(self, x: Tensor) -> Tensor:
        """(B, L, F) -> (B, H): the forecast the cores correct. With 1 < season <= L, the value one
        season before each step, exponentially smoothed over the window's earlier seasons by
        ``smoothing`` (alpha); else the window's exponentially smoothed level. alpha = 1 gives the
        seasonal naive and the naive forecast; the forecast task fits alpha and the season on
        the training windows (tasks/forecast.fit_anchor)."""
        return anchor_forecast(x[..., 0], self.season, self.smoothing, self.horizon)

    def forward(self, x: Tensor, series: Tensor | None = None) -> Tensor:
        y = self.member_forecasts(x, series)                                   # (K, B, H)
        return y[0] if len(y) == 1 else y.quantile(0.5, dim=0)                 # (B, H); the mean of the middle two for even K


def anchor_forecast(target: Tensor, season: int, smoothing: float, horizon: int) -> Tensor:
    """(B, L) windows of the target -> (B, H) anchors (see WindowForecaster.anchor)."""
    steps = target.shape[1]
    if 1 < season <= steps:
        cycles = steps // season
        phase = torch.arange(horizon, device=target.device) % season
        back = season * torch.arange(1, cycles + 1, device=target.device)
        lags = steps - back[:, None] + phase[None, :]                           # (C, H): C seasons back
        weights = smoothing_weights(smoothing, cycles).to(target)              # (C,), the latest season first
        return torch.einsum("bch,c->bh", target[:, lags], weights)
    level = target.flip(1) @ smoothing_weights(smoothing, steps).to(target)   # (B,)
    return level[:, None].expand(-1, horizon)


def smoothing_weights(alpha: float, count: int) -> Tensor:
    """Simple exponential smoothing over ``count`` values as weights, the latest value first:
    alpha (1 - alpha)^j for the j-th latest, and the rest, (1 - alpha)^(count-1), on the earliest
    (the level starts at the first value). alpha = 1 puts all weight on the latest."""
    j = torch.arange(count, dtype=torch.float64)
    weights = alpha * (1 - alpha) ** j
    weights[-1] = (1 - alpha) ** (count - 1)
    return weights


def member_span(k: int, steps: int) -> int:
    """Steps of the window member k sees: the whole window for even k, its last half for odd k.
    Ensembles over lookbacks (N-BEATS used 2H to 7H) add the diversity that seeds alone do not
    give: a short window fits recent dynamics with fewer inputs to overfit, a long one sees more
    context, and the data, not a default, decide between them through the median."""
    return steps if k % 2 == 0 else max(1, (steps + 1) // 2)


def zero_init(layer: nn.Linear) -> nn.Linear:
    """The output layer starts at zero: with level_relative an untrained network is exactly the
    (seasonal) naive forecast, and training moves away from it only as far as the data pays for."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _width(cfg) -> int:
    """Channels per time step the core sees: the features, plus the absolute level if kept and the
    changes if asked for (both only with level_relative), plus the series embedding's."""
    return (cfg.input_size + int(cfg.level_relative) * (int(cfg.keep_level) + int(cfg.changes))
            + max(0, cfg.series_embedding))


class RecurrentCore(nn.Module):
    """A recurrent encoder over the window, then a linear head from the last hidden state to H values."""

    def __init__(self, rnn: nn.Module, hidden: int, horizon: int):
        super().__init__()
        self.rnn = rnn
        self.head = zero_init(nn.Linear(hidden, horizon))

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)                  # (B, L, hidden)
        return self.head(out[:, -1])          # (B, H)


@dataclass
class RNNConfig:
    input_size: int = 1          # features per step: the target plus past covariates
    horizon: int = 12            # steps forecast at once
    season: int = 1              # seasonal period of the anchor of level_relative outputs (1: non-seasonal)
    smoothing: float = 1.0       # alpha of the anchor's exponential smoothing (1: the (seasonal) naive forecast);
                                 # the forecast task fits season and smoothing on the training windows unless given
    hidden: int = 64             # units of the Elman layer(s)
    layers: int = 1              # one layer: the plain network of the 1990s
    dropout: float = 0.0         # between layers (only with layers > 1)
    level_relative: bool = True  # see the target relative to its last value, predict corrections to (seasonal) naive
    keep_level: bool = False     # with level_relative: also see the absolute (scaled) target; the forecast task
                                 # turns it on for series whose training span is stationary (ADF test) unless given
    changes: bool = True         # with level_relative: also see each step's change from the one before
    members: int = 8             # ensemble of K cores, forecast = their median per step; odd members see the last half
                                 # of the window, even ones all of it (see member_span). The forecast task uses 2 on
                                 # series of over 1,000 training windows (unless given): seeds vary little there and
                                 # a member costs the most (forecast.LONG_SERIES_WINDOWS)
    series_embedding: int = 0    # on a panel: a learned vector of this many numbers per series, seen at every
                                 # step (0: none, the default: one set of weights for every series, which
                                 # forecasts any series the same way; an embedding adds count x E parameters
                                 # per member that short panels can overfit, see the forecast task's README)
    series_count: int = 0        # series of the panel (the forecast task sets it from the data)


@register("forecast", "rnn", RNNConfig, role="baseline", reads="windows",
          description="Elman network (tanh), truncated BPTT over the lookback window",
          train_defaults={**NETWORK_DEFAULTS})
def build_rnn(cfg: RNNConfig) -> nn.Module:
    return WindowForecaster(cfg, lambda k: RecurrentCore(
        nn.RNN(_width(cfg), cfg.hidden, num_layers=cfg.layers, nonlinearity="tanh", batch_first=True,
               dropout=cfg.dropout if cfg.layers > 1 else 0.0), cfg.hidden, cfg.horizon))


@dataclass
class LSTMConfig:
    input_size: int = 1
    horizon: int = 12
    season: int = 1
    smoothing: float = 1.0
    hidden: int = 64             # cells per layer
    layers: int = 2              # stacked, as in the classic sequence models
    dropout: float = 0.1         # between the stacked layers; light, the series are short
    level_relative: bool = True
    keep_level: bool = False
    changes: bool = True
    members: int = 8
    series_embedding: int = 0
    series_count: int = 0


@register("forecast", "lstm", LSTMConfig, role="deep", reads="windows",
          description="stacked LSTM with dropout between layers (nn.LSTM; ExplicitLSTM for explain)",
          train_defaults={**NETWORK_DEFAULTS})
def build_lstm(cfg: LSTMConfig) -> nn.Module:
    return WindowForecaster(cfg, lambda k: RecurrentCore(
        nn.LSTM(_width(cfg), cfg.hidden, num_layers=cfg.layers, batch_first=True,
                dropout=cfg.dropout if cfg.layers > 1 else 0.0), cfg.hidden, cfg.horizon))


def window_mlp(cfg: "MLPConfig", steps: int) -> nn.Module:
    """(B, steps, F') -> (B, H): the window flattened through ReLU hidden layers."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = _width(cfg) * steps
    for _ in range(cfg.layers):
        layers += [nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
        width = cfg.hidden
    layers.append(zero_init(nn.Linear(width, cfg.horizon)))
    return nn.Sequential(*layers)


@dataclass
class MLPConfig:
    input_size: int = 1
    lookback: int = 24           # window length: the MLP sees it flattened, so it is part of its shape
    horizon: int = 12
    season: int = 1
    smoothing: float = 1.0
    hidden: int = 128            # units per hidden layer
    layers: int = 2              # hidden layers
    dropout: float = 0.1
    level_relative: bool = True
    keep_level: bool = False
    changes: bool = True
    members: int = 8
    series_embedding: int = 0
    series_count: int = 0


@register("forecast", "mlp", MLPConfig, role="baseline", reads="windows",
          description="window-in, horizon-out perceptron (two ReLU hidden layers)",
          train_defaults={**NETWORK_DEFAULTS})
def build_mlp(cfg: MLPConfig) -> nn.Module:
    return WindowForecaster(cfg, lambda k: window_mlp(cfg, member_span(k, cfg.lookback)))


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
    # d in 0..max_d, q in 0..max_q (a mean when d = 0, a drift when d = 1), and with --season m in
    # 2..24 also the seasonal (0,1,1)m term (none past 24: the form says so). auto-arima and mstl
    # are the gold standard; this grid is kept for continuity.
    max_p: int = 2
    max_d: int = 1
    max_q: int = 2
    seasonal: bool = True


@dataclass
class ThetaConfig:
    deseasonalize: bool = True   # multiplicative classical decomposition first when --season > 1 (as in M3)


@dataclass
class AutoETSConfig:
    model: str = "ZZZ"           # R's ets code (error, trend, season; each N, A, Ad, M or Z = chosen by AICc)
    seasonal: bool = True        # a season when 1 < --season <= 24 (R's ets fits none past 24: use mstl)


@dataclass
class AutoARIMAConfig:
    seasonal: bool = True        # seasonal terms (and the seasonal difference, by the seasonal strength test)
    max_season: int = 24         # past this season no seasonal terms: a seasonal ARIMA with lag 52 takes
                                 # minutes per fit on a long weekly series (mstl is the baseline for those)


@dataclass
class AutoThetaConfig:
    decomposition: str = "multiplicative"   # when the 90% test finds a season (additive on non-positive data)


STATISTICAL = {
    "naive": (NoSettings, "the last value, repeated"),
    "seasonal-naive": (NoSettings, "the value one season (--season) earlier"),
    "drift": (NoSettings, "the line from the first to the last value, extended"),
    "ets": (ETSConfig, "exponential smoothing (statsmodels Holt-Winters), trend and seasonality chosen by AICc"),
    "arima": (ARIMAConfig, "ARIMA (statsmodels), order chosen by AIC over a small grid"),
    "theta": (ThetaConfig, "the theta method (statsmodels), winner of the M3 competition"),
    # the gold standard (tasks/forecast/gold.py and m4.py): the whole selection refitted at every origin
    "naive2": (NoSettings, "M4's Naive2: the last value of the seasonally adjusted series, season put back"),
    "auto-ets": (AutoETSConfig, "statsforecast AutoETS (R's ets): error, trend and season forms by AICc"),
    "auto-arima": (AutoARIMAConfig, "statsforecast AutoARIMA (R's auto.arima): stepwise orders, drift by AICc"),
    "auto-theta": (AutoThetaConfig, "statsforecast AutoTheta: standard, optimised and dynamic theta by MSE"),
    "comb": (NoSettings, "M4's Comb benchmark: mean of SES, Holt and damped ES on the seasonally adjusted series"),
    "mstl": (NoSettings, "MSTL (STL) decomposition over every season that fits, ETS on the adjusted series"),
}

for _method, (_config, _description) in STATISTICAL.items():
    register("forecast", _method, _config, role="baseline", reads="series", one_step=True,
             description=_description)(
        lambda cfg, method=_method: StatisticalForecaster(method, cfg))
