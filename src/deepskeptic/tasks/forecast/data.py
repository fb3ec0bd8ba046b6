"""The forecast task's data: the series cut into training windows, validation and test origins
(``plan``), the scaler fitted on the training span (``Prepared``), and what the level-relative
networks' defaults are fitted from: their anchor (``fit_anchor``) and whether the training span
is stationary (``stationary``)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from deepskeptic.data.panel import Panel, load_panel, wants_panel
from deepskeptic.data.series import Series, load_series
from deepskeptic.errors import UserError
from deepskeptic.models.forecast import anchor_forecast
from deepskeptic.tasks.forecast.eval import Split

MIN_TRAIN_WINDOWS = 4   # fewer training windows than this cannot teach a network anything
DEFAULT_ORIGINS = 12    # backtest origins when --origins is not given
# The largest |value| a series may hold: the squares of values, deviations and errors (the scaler's
# variance, RMSE, the baselines' sums of squares) must stay finite in float64 (up to 1.8e308) even
# summed over a million points: (1e150)^2 * 1e6 = 1e306. Past it a run would end in inf or NaN
# metrics (1e200) or a failed fit (a value of 1e308, or differences that overflow).
MAX_ABS_VALUE = 1e150


@dataclass
class Prepared:
    series: Series
    horizon: int
    lookback: int
    season: int
    split: Split | None       # None for a finished run's series (predict, explain)
    mean: np.ndarray          # (F,) per feature, over values[:split.train_end]
    std: np.ndarray
    cache: dict = field(default_factory=dict)
    seasons: tuple[int, ...] = ()   # every cycle mstl tries (() -> (season,)); the frequency's, or --season alone
    season_reason: str = ""         # why the season is what it is, in words (the reports say it)
    series_index: int | None = None  # of a panel's series: its position in the panel (a series embedding's row)

    def features(self) -> np.ndarray:
        """(N, F) target then covariates, unscaled."""
        return np.column_stack([self.series.values, self.series.covariates])

    def scaled(self) -> np.ndarray:
        return (self.features() - self.mean) / self.std


def windows(z: np.ndarray, origins: np.ndarray, lookback: int, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (W, L, F) = z[t-L:t] and targets (W, H) = z[t:t+H, 0] for each origin t."""
    idx = origins[:, None] + np.arange(-lookback, 0)[None, :]             # (W, L)
    x = torch.from_numpy(z[idx]).float()
    tgt = origins[:, None] + np.arange(horizon)[None, :]                   # (W, H)
    y = torch.from_numpy(z[np.minimum(tgt, len(z) - 1), 0]).float()
    return x, y


def prepare(settings: dict[str, Any]) -> Prepared:
    """The series of ``settings`` cut for the backtest, with the scaler of its training span;
    UserError on anything wrong before training starts."""
    if wants_panel(str(settings["data"]), id_col=settings.get("id_col"), target=settings.get("target")):
        return prepare_panel(settings)
    series = load_series(str(settings["data"]), target=settings.get("target"), time_col=settings.get("time_col"),
                         freq=settings.get("freq"), fill=settings.get("fill"),
                         covariates=settings.get("covariates", "all"))
    check_magnitude(series)
    horizon = settings.get("horizon") or series.horizon
    season = settings.get("season") or series.season
    split = plan(len(series), horizon, season, settings.get("origins") or DEFAULT_ORIGINS, settings.get("lookback"),
                 settings.get("val_origins"), series.name)
    train = np.column_stack([series.values, series.covariates])[:split.train_end]
    std = train.std(0)
    seasons, reason = season_choice(series, settings.get("season"))
    return Prepared(series, horizon, split.lookback, season, split, train.mean(0), np.where(std > 0, std, 1.0),
                    seasons=seasons, season_reason=reason)


@dataclass
class PanelPrepared:
    """A panel cut for one backtest: ``members`` holds one Prepared per series, each with its own
    scaler (fitted on that series' training span only) and its own Split. All series end at the
    same time and share horizon, lookback, origins and validation origins, so their test and
    validation origins and the end of their training spans are the same calendar times: no
    forecast made at an origin sees any series' values from that time on."""
    panel: Panel
    horizon: int
    lookback: int
    season: int
    members: list[Prepared]
    cache: dict = field(default_factory=dict)
    seasons: tuple[int, ...] = ()
    season_reason: str = ""
    layout: str = "long"            # how the panel was given: long, wide or builtin (predict reads the same)
    id_col: str | None = None       # the series id column of a long file

    @property
    def split(self) -> Split:
        """The split of the longest series (the panel's calendar)."""
        return max(self.members, key=lambda m: m.split.n).split


def parts(prepared) -> list[Prepared]:
    """The single-series pieces of a prepared series or panel: [itself], or one per series."""
    return prepared.members if isinstance(prepared, PanelPrepared) else [prepared]


def prepare_panel(settings: dict[str, Any]) -> PanelPrepared:
    """A panel (data/panel.py) cut for the backtest: the geometry (lookback, validation origins)
    fitted to its shortest series, so that every series has training windows."""
    if settings.get("covariates") not in (None, "all", "none"):
        raise UserError("--covariates does not apply to a panel: its series are forecast from their own past only")
    panel = load_panel(str(settings["data"]), id_col=settings.get("id_col"), target=settings.get("target"),
                       time_col=settings.get("time_col"), freq=settings.get("freq"), fill=settings.get("fill"))
    for series in panel.series:
        check_magnitude(series)
    horizon = settings.get("horizon") or panel.horizon
    season = settings.get("season") or panel.season
    origins = settings.get("origins") or DEFAULT_ORIGINS
    shortest = min(panel.series, key=len)
    split = plan(len(shortest), horizon, season, origins, settings.get("lookback"), settings.get("val_origins"),
                 f"{shortest.name} (the shortest series of the panel {panel.name}; leave it out of the file)")
    seasons, reason = season_choice(panel, settings.get("season"))
    members = []
    for index, series in enumerate(panel.series):
        member = Split(len(series), horizon, split.lookback, origins, split.val_origins)
        train = series.values[:member.train_end, None]
        std = train.std(0)
        members.append(Prepared(series, horizon, split.lookback, season, member, train.mean(0),
                                np.where(std > 0, std, 1.0), seasons=seasons, season_reason=reason,
                                series_index=index))
    layout, id_col = panel_layout(str(settings["data"]), settings.get("id_col"))
    return PanelPrepared(panel, horizon, split.lookback, season, members, seasons=seasons, season_reason=reason,
                         layout=layout, id_col=id_col)


def panel_layout(data: str, id_col: str | None) -> tuple[str, str | None]:
    """(builtin, long or wide, the id column of a long file) of a panel data set, as load_panel
    reads it: a long file has --id-col or Nixtla's unique_id in its header."""
    from deepskeptic.data.panel import ID_NAMES, PANELS
    if data in PANELS:
        return "builtin", None
    if id_col is not None:
        return "long", id_col
    try:
        with open(data, encoding="utf-8-sig") as f:
            header = [h.strip().strip('"') for h in f.readline().replace(";", ",").replace("\t", ",").split(",")]
    except (OSError, UnicodeDecodeError):
        return "wide", None
    found = next((h for h in header if h.lower() in ID_NAMES), None)
    return ("long", found) if found else ("wide", None)


def check_magnitude(series: Series) -> None:
    """UserError when a value of ``series`` is beyond MAX_ABS_VALUE (see there)."""
    values = np.abs(np.asarray(series.values, float))
    if len(values) and values.max() > MAX_ABS_VALUE:
        at = int(values.argmax())
        raise UserError(f"series {series.name} holds {series.values[at]:.3g} at {series.time_labels(at, at + 1)[0]}, "
                        f"beyond +-{MAX_ABS_VALUE:.0e}, where squared errors overflow 64-bit floats; rescale it "
                        f"(divide by a power of ten) or fix that value")


def data_seasons(data: str) -> tuple[int, ...]:
    """The default seasonal cycles of a data set (built-in, panel or CSV file read with the default
    flags); UserError when it cannot be read so."""
    from deepskeptic.data.panel import PANELS
    from deepskeptic.data.series import BUILTINS
    if data in BUILTINS:
        return (BUILTINS[data].season,) if BUILTINS[data].season > 1 else ()
    if data in PANELS or wants_panel(data, id_col=None, target=None):
        return load_panel(data).seasons
    return load_series(data).seasons


def season_choice(series: Series, given: int | None) -> tuple[tuple[int, ...], str]:
    """(the cycles mstl tries, why the season is what it is): --season alone when given, else every
    cycle of the series' frequency (a day and a week of hourly data). A --season equal to the
    default is the default (a resumed run has its season in its settings)."""
    if given and given != series.season:
        return ((given,) if given > 1 else ()), f"--season {given} given"
    return tuple(series.seasons), series.season_reason or f"the default of {series.name}"


def plan(n: int, horizon: int, season: int, origins: int, lookback: int | None,
         val_origins: int | None, name: str, _counting: bool = False) -> Split:
    """Cut a series of n points; UserError when it is too short for the asked geometry."""
    given_lookback, given_val_origins = lookback, val_origins
    if season >= n:
        raise UserError(f"--season {season} is not shorter than the series {name} ({n} points); give a smaller --season")
    if val_origins is None:  # a tenth of what precedes the test origins: early stopping on a year of a
        # monthly series picks the epoch that suits that year's weather, on six years one that generalises
        val_origins = max(1, (n - horizon - origins + 1 - 2 * horizon) // 10)
    first_test = n - horizon - origins + 1
    train_end = first_test - (horizon + val_origins - 1 if val_origins else 0)
    room = train_end - horizon  # the most any lookback can be while leaving one training window
    if lookback is None:  # two seasons or two horizons (one season and a horizon for long seasons),
        # and at most half of the training span
        lookback = min(max(2 * season, 2 * horizon, 4), max(season + horizon, 60))
        lookback = max(1, min(lookback, room // 2))
    split = Split(n, horizon, lookback, origins, val_origins)
    count = len(split.train_window_origins())
    if count < MIN_TRAIN_WINDOWS or first_test < 3:
        if _counting:
            raise UserError("too short")
        need = _fewest_points(horizon, season, origins, given_lookback, given_val_origins, n)
        raise UserError(f"series {name} has {n} points, too short for --horizon {horizon}, --lookback {lookback}, "
                        f"{origins} backtest origin(s) and {val_origins} validation origin(s) (needs at least {need}); "
                        f"lower --horizon, --lookback or --origins")
    return split


def _fewest_points(horizon: int, season: int, origins: int, lookback: int | None, val_origins: int | None,
                   n: int) -> int | str:
    """The fewest points ``plan`` accepts with these settings (the lookback and validation origins
    it derives grow with the series, so the count is searched, not computed)."""
    for m in range(n + 1, n + 10_000):
        try:
            plan(m, horizon, season, origins, lookback, val_origins, "", _counting=True)
            return m
        except UserError:
            continue
    return f"over {n + 10_000}"


# The anchor's exponential smoothing alphas tried on the training windows, simplest (no smoothing) first
ANCHOR_ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


def fit_anchor(prepared: Prepared) -> tuple[int, float]:
    """The (season, smoothing) of the networks' anchor with the lowest mean absolute error on the
    training windows: the seasonal naive forecast (when the season fits in the lookback), or the
    window's level exponentially smoothed with one of ANCHOR_ALPHAS (1: the last value); ties keep
    the earlier, simpler one. Fitted on the windows the networks train on, so the untrained network
    is the best of these simple forecasts there: the seasonal naive one on a seasonal series, a
    smoothed level on a noisy one (the Nile), the last value on a seasonally adjusted random walk
    (GDP). The seasonal anchor is not smoothed: a window holds two or three seasons, too few for
    the smoothing to average out more than it blurs (on elnino it fitted the training windows
    better and then lost on validation)."""
    if "anchor" not in prepared.cache:
        x, y = training_windows(prepared)
        candidates = [(prepared.season, 1.0)] if 1 < prepared.season <= prepared.lookback else []
        candidates += [(1, alpha) for alpha in ANCHOR_ALPHAS]
        errors = {key: float((anchor_forecast(x[..., 0], *key, prepared.horizon) - y).abs().mean()) for key in candidates}
        best = min(errors.values())
        prepared.cache["anchor"] = next(key for key, error in errors.items() if error <= best * (1 + 1e-9))
    return prepared.cache["anchor"]


def training_series(prepared) -> torch.Tensor | None:
    """(W,) the series of each training window (as training_windows orders them), positions in the
    panel; None for one series."""
    if not isinstance(prepared, PanelPrepared):
        return None
    return torch.cat([torch.full((len(p.split.train_window_origins()),), p.series_index, dtype=torch.long)
                      for p in prepared.members])


def training_windows(prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (W, L, F) and targets (W, H) of every training window, each series' in its own scale:
    a panel's global networks learn from the windows of all its series at once."""
    pairs = [windows(p.scaled(), p.split.train_window_origins(), p.lookback, p.horizon) for p in parts(prepared)]
    return torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs])


def stationary(prepared, level: float = 0.05) -> bool:
    """Whether the augmented Dickey-Fuller test (statsmodels, lags by AIC) rejects a unit root in
    the training span's target at ``level``. On a series that returns to its mean (river flow,
    sunspots, sea temperature, unemployment) the absolute level says where it is heading, so the
    networks see it besides the target relative to its last value (keep_level); on a random walk
    or a trend (GDP, CO2) the level leaves the training range and only misleads them."""
    if isinstance(prepared, PanelPrepared):  # a panel: when most of its series are
        if "stationary" not in prepared.cache:
            prepared.cache["stationary"] = 2 * sum(stationary(p, level) for p in prepared.members) > len(prepared.members)
        return prepared.cache["stationary"]
    if "stationary" not in prepared.cache:
        from statsmodels.tsa.stattools import adfuller  # heavy: imported when first needed
        values = prepared.series.values[:prepared.split.train_end]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # a constant or a straight line (changes that never vary) is not mean-reverting
                p_value = float(adfuller(values, autolag="AIC")[1]) if np.ptp(np.diff(values)) > 1e-12 else 1.0
            except (ValueError, np.linalg.LinAlgError):  # too short for the test's regression
                p_value = 1.0
        prepared.cache["stationary"] = p_value < level
    return prepared.cache["stationary"]
