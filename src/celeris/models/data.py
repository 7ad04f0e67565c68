"""Data for models: windows, time splits, scalers and indicator features.

Alignment (the one rule everything here keeps): a window *ending* at bar ``t`` holds the inputs
of bars ``t - L + 1 .. t`` and the targets of bars ``t + 1 .. t + H``. Its forecast is made at
the close of bar ``t``; nothing in ``x`` comes from after ``t``.

Scalers
-------
:class:`StandardScaler`, :class:`RobustScaler` and :class:`IdentityScaler` are *global*: fitted
once, on training data only (``fit(training_bars(train))`` or on the raw training slice), per
feature channel. :class:`WindowScaler` normalises every window by its own input statistics and
keeps nothing between windows.

How NeuralForecast's options map: its model argument ``scaler_type`` ("identity", "standard",
"robust") is a *per-window* (temporal) normalisation — ``WindowScaler("standard")`` /
``WindowScaler("robust")`` here, ``IdentityScaler()`` for "identity" (its default). Its
``NeuralForecast(local_scaler_type=...)`` fits one scaler per series on the data given to
``fit`` — our global :class:`StandardScaler` / :class:`RobustScaler` fitted on the training split.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from celeris.checks import check_fraction, check_int
from celeris.errors import CelerisError, CelerisTypeError, ConfigError, DataError, did_you_mean

__all__ = [
    "FEATURES",
    "IdentityScaler",
    "RobustScaler",
    "Scaler",
    "StandardScaler",
    "WindowScaler",
    "Windows",
    "feature_frame",
    "make_panel_windows",
    "make_scaler",
    "make_windows",
    "split_by_time",
    "training_bars",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Windows:
    """Input/target windows cut from one series of bars (or a panel of aligned series).

    Attributes
    ----------
    x : np.ndarray
        ``[N, L, C]`` float32 inputs (``L = input_size``, ``C`` features). A read-only strided
        view over one float32 copy of the data (memory ``O(T * C)``, not ``O(N * L * C)``);
        indexing a batch (``x[idx]``) makes a contiguous, writable copy. Pass that (or
        ``np.array(w.x)``) to ``torch.from_numpy``, which warns on read-only arrays.
    y : np.ndarray
        ``[N, H]`` float32 targets: the next ``H`` values of the target channel.
    end : np.ndarray
        ``[N]`` int64 row of the last input bar of each window, increasing.
    target : int
        Channel of ``x`` that ``y`` continues.
    columns : tuple of str or None
        Names of the channels when the input had them.
    time : pd.Index or None
        Timestamp of each window's ``end`` bar when the input had an index.
    series : np.ndarray or None
        ``[N]`` int64 position in ``assets`` of each window's series (panels only).
    assets : tuple of str or None
        Names of the panel's series (panels only).
    """

    x: np.ndarray
    y: np.ndarray
    end: np.ndarray
    target: int = 0
    columns: tuple[str, ...] | None = None
    time: pd.Index | None = None
    series: np.ndarray | None = None
    assets: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.end)

    @property
    def input_size(self) -> int:
        return int(self.x.shape[1])

    @property
    def horizon(self) -> int:
        return int(self.y.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[2])

    def subset(self, index: Any) -> Windows:
        """Return the windows selected by ``index`` (a slice, boolean mask or positions)."""
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=self.y[index],
            end=self.end[index],
            time=None if self.time is None else self.time[index],
            series=None if self.series is None else self.series[index],
        )


def _to_array(values: Any) -> tuple[np.ndarray, tuple[str, ...] | None, pd.Index | None]:
    """Return ``values`` as a 2-D float64 ``[T, C]`` array, its column names and index."""
    columns: tuple[str, ...] | None = None
    index: pd.Index | None = None
    if isinstance(values, pd.Series):
        columns, index = (str(values.name),), values.index
        values = values.to_numpy()
    elif isinstance(values, pd.DataFrame):
        columns, index = tuple(map(str, values.columns)), values.index
        non_numeric = [c for c in values.columns if not pd.api.types.is_numeric_dtype(values[c])]
        if non_numeric:
            raise DataError(f"column {non_numeric[0]!r} is not numeric")
        values = values.to_numpy(dtype=np.float64)
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"values must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    elif arr.ndim != 2:
        raise DataError(f"values must be 1-D [T] or 2-D [T, C], got {arr.ndim}-D {arr.shape}")
    if arr.shape[1] == 0:
        raise DataError("values have no columns")
    return arr.astype(np.float64, copy=False), columns, index


def _check_finite(arr: np.ndarray, columns: tuple[str, ...] | None, index: pd.Index | None) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        where = f"row {row}" if index is None else f"row {row} ({index[row]})"
        name = f"column {columns[col]!r}" if columns else f"column {col}"
        kind = "NaN" if np.isnan(arr[row, col]) else "inf"
        raise DataError(
            f"{kind} at {where}, {name} ({int(bad.sum())} non-finite value(s) in all); "
            "drop or fill them before windowing"
        )


def make_windows(
    values: Any, input_size: int, horizon: int, step: int = 1, target: int | str = 0
) -> Windows:
    """Cut ``values`` into input windows and the targets that follow them.

    Parameters
    ----------
    values : array-like, pd.Series or pd.DataFrame
        ``[T]`` or ``[T, C]`` numeric values in time order (oldest first), finite.
    input_size : int
        Bars of history in each window (``L``).
    horizon : int
        Bars ahead to forecast (``H``).
    step : int
        Bars between consecutive window ends. Windows are aligned to the *end* of the data:
        the last window always ends at bar ``T - H - 1``, whatever ``step`` is.
    target : int or str
        Channel (position, or column name for a DataFrame) whose future values ``y`` holds.

    Returns
    -------
    Windows
        ``N = (T - L - H) // step + 1`` windows with ``y[k] == values[end[k] + 1 :
        end[k] + 1 + H, target]``.

    Raises
    ------
    DataError
        NaN or inf (naming the first bad row and column), fewer than ``L + H`` bars, a shape
        other than ``[T]``/``[T, C]``.
    ConfigError
        ``input_size``, ``horizon`` or ``step`` below 1, or an unknown ``target``.
    """
    input_size = check_int("input_size", input_size, minimum=1)
    horizon = check_int("horizon", horizon, minimum=1)
    step = check_int("step", step, minimum=1)
    arr, columns, index = _to_array(values)
    n_bars, n_channels = arr.shape
    if isinstance(target, str):
        if columns is None or target not in columns:
            choices = list(columns or ())
            raise ConfigError(f"unknown target column {target!r}{did_you_mean(target, choices)}")
        target = columns.index(target)
    target = check_int("target", target, minimum=0)
    if target >= n_channels:
        raise ConfigError(f"target channel {target} out of range for {n_channels} channel(s)")
    need = input_size + horizon
    if n_bars < need:
        raise DataError(
            f"too short a history: {n_bars} bar(s), need at least {need} "
            f"(input_size {input_size} + horizon {horizon})"
        )
    _check_finite(arr, columns, index)

    data = np.ascontiguousarray(arr, dtype=np.float32)
    data.flags.writeable = False
    n_windows = (n_bars - need) // step + 1
    first = (n_bars - need) % step  # start of the first window, so the last ends at T - H - 1
    # [T, C] -> [T - L + 1, C, L] -> [T - L + 1, L, C]   (views, no copy)
    x_all = np.lib.stride_tricks.sliding_window_view(data, input_size, axis=0).transpose(0, 2, 1)
    x = x_all[first : first + (n_windows - 1) * step + 1 : step]
    # [T - L] -> [T - L - H + 1, H]   target bars start right after the first window's end
    y_all = np.lib.stride_tricks.sliding_window_view(data[input_size:, target], horizon)
    y = y_all[first : first + (n_windows - 1) * step + 1 : step]
    end = np.arange(n_windows, dtype=np.int64) * step + (first + input_size - 1)
    time = None if index is None or isinstance(index, pd.RangeIndex) else index[end]
    return Windows(x=x, y=y, end=end, target=target, columns=columns, time=time)


def make_panel_windows(
    panel: Mapping[str, Any] | pd.DataFrame,
    input_size: int,
    horizon: int,
    step: int = 1,
    target: int | str = 0,
) -> Windows:
    """Cut every series of a multi-asset panel into windows, ordered by time then asset.

    ``panel`` is a mapping ``{asset: values}`` of equally long series on one time axis (frames
    must share their index), or a frame with MultiIndex columns ``(asset, field)``. Each series
    is windowed as by :func:`make_windows` (same alignment, same errors, naming the asset);
    ``series`` tells which asset a window comes from and ``end`` is the shared bar row, so
    :func:`split_by_time` splits every asset at the same time.
    """
    if isinstance(panel, pd.DataFrame):
        if not isinstance(panel.columns, pd.MultiIndex) or panel.columns.nlevels != 2:
            raise DataError("a panel frame needs MultiIndex columns (asset, field)")
        panel = {str(a): panel[a] for a in panel.columns.get_level_values(0).unique()}
    if not isinstance(panel, Mapping) or not panel:
        raise DataError(
            "panel must be a non-empty mapping {asset: values} or a (asset, field) frame"
        )
    parts: list[Windows] = []
    lengths: dict[str, int] = {}
    first_index: pd.Index | None = None
    for asset, values in panel.items():
        try:
            w = make_windows(values, input_size, horizon, step=step, target=target)
        except (DataError, ConfigError) as exc:
            raise type(exc)(f"asset {asset!r}: {exc}") from None
        lengths[str(asset)] = int(w.end[-1]) + horizon + 1
        index = getattr(values, "index", None)
        if first_index is None:
            first_index = index
        elif index is not None and not index.equals(first_index):
            raise DataError(
                f"asset {asset!r}: its index differs from the first asset's; align them"
            )
        parts.append(w)
    if len(set(lengths.values())) > 1:
        raise DataError(f"panel series differ in length: {lengths}; align them on one time axis")
    n_assets, n_windows = len(parts), len(parts[0])
    order = np.arange(n_windows * n_assets)  # window-major -> time then asset
    x = np.stack([w.x for w in parts], axis=1)  # A x [N, L, C] -> [N, A, L, C]
    y = np.stack([w.y for w in parts], axis=1)  # A x [N, H] -> [N, A, H]
    base = parts[0]
    return Windows(
        x=x.reshape(n_windows * n_assets, *x.shape[2:]),  # [N, A, L, C] -> [N * A, L, C]
        y=y.reshape(n_windows * n_assets, -1),  # [N, A, H] -> [N * A, H]
        end=np.repeat(base.end, n_assets),
        target=base.target,
        columns=base.columns,
        time=None if base.time is None else base.time.repeat(n_assets),
        series=(order % n_assets).astype(np.int64),
        assets=tuple(lengths),
    )


def split_by_time(
    windows: Windows, val: float = 0.1, test: float = 0.2
) -> tuple[Windows, Windows, Windows]:
    """Split windows into train, validation and test strictly by time, with a purge gap.

    The last ``round(test * N)`` windows are the test set, the ``round(val * N)`` before them
    the validation set, the rest training. Then windows are *purged* from the end of the earlier
    set so that no target of an earlier set overlaps an input of a later one: a training window
    ending at ``t`` has targets up to ``t + H``, a validation window ending at ``v`` has inputs
    from ``v - L + 1``, so training keeps only ``t <= v0 - L - H`` (``v0``: first validation
    end); likewise between validation and test (and between training and test when ``val=0``).
    Up to ``(L + H - 1) // step`` windows are dropped at each boundary.

    Raises
    ------
    CelerisTypeError
        ``val`` or ``test`` is not a number.
    ConfigError
        A fraction outside ``[0, 1)`` or ``val + test >= 1``.
    DataError
        Too few windows for every requested set to keep at least one window after purging.
    """
    val = check_fraction("val", val, open_high=True)
    test = check_fraction("test", test, open_high=True)
    if val + test >= 1.0:
        raise ConfigError(f"val + test must be < 1, got {val} + {test}")
    if len(windows.end) > 1 and np.any(np.diff(windows.end) < 0):
        raise DataError("windows are not in time order (end must not decrease)")
    n = len(windows)
    n_test = round(test * n)
    n_val = round(val * n)
    if (test > 0 and n_test == 0) or (val > 0 and n_val == 0):
        raise DataError(f"{n} window(s) are too few for val={val}, test={test}")
    gap = windows.input_size + windows.horizon
    end = windows.end
    # Panels hold several windows per end bar: move each boundary to the start of its bar.
    test_start = int(np.searchsorted(end, end[n - n_test], side="left")) if n_test else n
    val_start = (
        int(np.searchsorted(end, end[max(test_start - n_val, 0)], side="left"))
        if n_val
        else test_start
    )

    def purged(stop: int, next_start: int) -> int:
        # Keep windows [.., stop) whose end <= end[next_start] - L - H (none to purge if the
        # next set is empty).
        if next_start >= n:
            return stop
        limit = end[next_start] - gap
        return int(min(stop, np.searchsorted(end, limit, side="right")))

    val_stop = purged(test_start, test_start)
    train_stop = purged(val_start, val_start if n_val else test_start)
    parts = (
        windows.subset(slice(0, train_stop)),
        windows.subset(slice(val_start, val_stop)),
        windows.subset(slice(test_start, n)),
    )
    for name, part, wanted in zip(("train", "val", "test"), parts, (1.0, val, test), strict=True):
        if wanted > 0 and len(part) == 0:
            raise DataError(
                f"no {name} windows left after purging a gap of {gap} bars between splits: "
                f"{n} window(s) are too few for val={val}, test={test}"
            )
    return parts


def training_bars(windows: Windows) -> np.ndarray:
    """Return the distinct bars ``[M, C]`` seen by the inputs of ``windows``, oldest first.

    Fit a global scaler on these (``scaler.fit(training_bars(train))``): every bar counts once
    however many windows it appears in, and no target-only bar is used. For panel windows the
    bars of every asset are pooled (one scaler for the panel).
    """
    n_windows, length, n_channels = windows.x.shape
    if n_windows == 0:
        raise DataError("no windows to take training bars from")
    # Bar row of every input position: [N, 1] + [1, L] -> [N, L]
    rows = windows.end[:, None] - (length - 1) + np.arange(length)[None, :]
    if windows.series is not None:  # one key per (bar, asset): [N, L] * A + [N, 1]
        rows = rows * (int(windows.series.max()) + 1) + windows.series[:, None]
    _, first = np.unique(rows.reshape(-1), return_index=True)
    # [N, L, C] -> [N * L, C] -> [M, C]
    return np.asarray(windows.x).reshape(n_windows * length, n_channels)[first]


def _like(arr: np.ndarray, x: Any) -> Any:
    """Return ``arr`` as the array type of ``x`` (numpy, or a torch tensor on its device)."""
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return arr
    import torch

    if isinstance(x, torch.Tensor):
        return torch.as_tensor(arr, dtype=x.dtype, device=x.device)
    return arr


class Scaler(abc.ABC):
    """A per-channel affine scaler fitted on training data: ``(x - center) / scale``.

    ``fit`` takes ``[T]``, ``[T, C]`` (or ``[N, L, C]``) values and computes one ``center`` and
    ``scale`` per channel (the last axis). ``transform`` applies them to any ``[..., C]`` array
    or torch tensor; ``transform_target``/``inverse_transform`` use the target channel's only,
    for ``[N, H]`` targets and forecasts.
    """

    kind: ClassVar[str] = ""
    _KINDS: ClassVar[dict[str, type[Scaler]]] = {}

    def __init__(self, target: int = 0, eps: float = 1e-8) -> None:
        self.target = check_int("target", target, minimum=0)
        self.eps = float(eps)
        self.center: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Scaler._KINDS[cls.kind] = cls

    @abc.abstractmethod
    def _stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (center, scale) per channel of ``values`` [M, C]."""

    @property
    def fitted(self) -> bool:
        return self.center is not None

    def fit(self, values: Any) -> Scaler:
        """Compute the statistics of ``values`` (training data only) and return ``self``."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 0:
            raise DataError("cannot fit a scaler on a scalar")
        arr = arr.reshape(-1, 1) if arr.ndim == 1 else arr.reshape(-1, arr.shape[-1])
        if arr.shape[0] == 0:
            raise DataError("cannot fit a scaler on no data")
        _check_finite(arr, None, None)
        if self.target >= arr.shape[1]:
            raise ConfigError(
                f"scaler target {self.target} out of range for {arr.shape[1]} channel(s)"
            )
        center, scale = self._stats(arr)
        # A constant channel has no spread: leave it unscaled rather than divide by ~0.
        scale = np.where(scale > self.eps, scale, 1.0)
        self.center, self.scale = center.astype(np.float64), scale.astype(np.float64)
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.center is None or self.scale is None:
            raise ConfigError(f"{type(self).__name__} is not fitted: call fit() on training data")
        return self.center, self.scale

    def transform(self, values: Any) -> Any:
        """Return ``(values - center) / scale`` per channel of ``[..., C]`` values."""
        center, scale = self._fitted()
        if values.shape[-1] != len(center):
            raise DataError(f"scaler fitted on {len(center)} channel(s), got {values.shape[-1]}")
        return (values - _like(center, values)) / _like(scale, values)

    def transform_target(self, y: Any) -> Any:
        """Scale targets ``y`` (any shape) with the target channel's statistics."""
        center, scale = self._fitted()
        return (y - float(center[self.target])) / float(scale[self.target])

    def inverse_transform(self, y: Any) -> Any:
        """Return forecasts ``y`` (any shape, target channel) in the original units."""
        center, scale = self._fitted()
        return y * float(scale[self.target]) + float(center[self.target])

    def state(self) -> dict[str, Any]:
        """Return a JSON-serialisable state that :meth:`from_state` restores."""
        center, scale = self._fitted()
        return {
            "type": self.kind,
            "target": self.target,
            "eps": self.eps,
            "center": center.tolist(),
            "scale": scale.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Any:
        """Rebuild a scaler (of the kind named in ``state["type"]``) from :meth:`state`."""
        return scaler_from_state(state)


class StandardScaler(Scaler):
    """Per-channel mean and population standard deviation (``ddof=0``)."""

    kind = "standard"

    def _stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return values.mean(axis=0), values.std(axis=0)


class RobustScaler(Scaler):
    """Per-channel median and interquartile range (``q75 - q25``), robust to fat tails."""

    kind = "robust"

    def _stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q25, median, q75 = np.percentile(values, [25.0, 50.0, 75.0], axis=0)
        return median, q75 - q25


class IdentityScaler(Scaler):
    """No scaling (center 0, scale 1); NeuralForecast's default ``scaler_type="identity"``."""

    kind = "identity"

    def _stats(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(values.shape[1]), np.ones(values.shape[1])


class WindowScaler:
    """Per-window normalisation by each window's own input statistics (no fitted state).

    ``transform(x)`` returns the scaled ``[B, L, C]`` windows and the ``(loc, scale)`` of each
    window, ``[B, 1, C]``; ``inverse_transform(forecast, loc, scale)`` maps ``[B, H]``
    forecasts of the target channel back. ``kind`` is ``"standard"`` (mean, population std) or
    ``"robust"`` (median, median absolute deviation; the std where the MAD is 0), as
    NeuralForecast's temporal ``scaler_type``. Works on numpy arrays and torch tensors.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("standard", "robust")

    def __init__(self, kind: str = "standard", target: int = 0, eps: float = 1e-8) -> None:
        if kind not in self.KINDS:
            raise ConfigError(
                f"unknown window scaler {kind!r}{did_you_mean(kind, self.KINDS)}; "
                f"choose one of {', '.join(map(repr, self.KINDS))}"
            )
        self.kind = kind
        self.target = check_int("target", target, minimum=0)
        self.eps = float(eps)

    def transform(self, x: Any) -> tuple[Any, Any, Any]:
        """Return ``(x_scaled, loc, scale)`` for windows ``x`` ``[B, L, C]``."""
        import torch

        t = torch.as_tensor(x)
        if self.kind == "standard":
            loc = t.mean(dim=1, keepdim=True)  # [B, L, C] -> [B, 1, C]
            spread = t.std(dim=1, keepdim=True, correction=0)
        else:
            # quantile, not torch.median (which returns the lower middle value of an even count)
            loc = t.quantile(0.5, dim=1, keepdim=True)  # [B, L, C] -> [B, 1, C]
            spread = (t - loc).abs().quantile(0.5, dim=1, keepdim=True)
            spread = torch.where(
                spread > self.eps, spread, t.std(dim=1, keepdim=True, correction=0)
            )
        scale = torch.where(spread > self.eps, spread, torch.ones_like(spread))
        out = ((t - loc) / scale, loc, scale)
        if isinstance(x, np.ndarray):
            return tuple(v.numpy() for v in out)  # type: ignore[return-value]
        return out

    def inverse_transform(self, forecast: Any, loc: Any, scale: Any) -> Any:
        """Return ``[B, H]`` target-channel forecasts in the original units."""
        # [B, 1, C] -> [B, 1]  (the target channel, broadcast over the horizon)
        return forecast * scale[:, :, self.target] + loc[:, :, self.target]

    def state(self) -> dict[str, Any]:
        return {"type": "window", "kind": self.kind, "target": self.target, "eps": self.eps}


def scaler_from_state(state: dict[str, Any]) -> Scaler | WindowScaler:
    """Rebuild a scaler from its :meth:`Scaler.state` / :meth:`WindowScaler.state` dict."""
    if not isinstance(state, dict) or "type" not in state:
        raise DataError(f"not a scaler state: {state!r}")
    kind = state["type"]
    if kind == "window":
        return WindowScaler(state["kind"], target=state["target"], eps=state["eps"])
    if kind not in Scaler._KINDS:
        choices = [*Scaler._KINDS, "window"]
        raise DataError(f"unknown scaler type {kind!r}{did_you_mean(str(kind), choices)}")
    try:
        scaler = Scaler._KINDS[kind](target=state["target"], eps=state["eps"])
        scaler.center = np.asarray(state["center"], dtype=np.float64)
        scaler.scale = np.asarray(state["scale"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"corrupt {kind} scaler state: {exc!r}") from None
    if scaler.center.shape != scaler.scale.shape or scaler.center.ndim != 1:
        raise DataError("corrupt scaler state: center and scale must be equal-length lists")
    return scaler


def make_scaler(kind: str, target: int = 0) -> Scaler | WindowScaler:
    """Return an unfitted scaler by name: ``identity``, ``standard``, ``robust`` (global,
    fitted on training data) or ``window-standard``, ``window-robust`` (per window)."""
    choices = [*Scaler._KINDS, *(f"window-{k}" for k in WindowScaler.KINDS)]
    if kind in Scaler._KINDS:
        return Scaler._KINDS[kind](target=target)
    if kind.startswith("window-") and kind[7:] in WindowScaler.KINDS:
        return WindowScaler(kind[7:], target=target)
    raise ConfigError(
        f"unknown scaler {kind!r}{did_you_mean(kind, choices)}; "
        f"choose one of {', '.join(map(repr, choices))}"
    )


# --------------------------------------------------------------------------------------------
# Features from celeris.indicators. Each maps the bar frame to one float Series whose value at
# bar t uses bars <= t only (past-only), scaled to be comparable across price levels.


_Builder = Callable[[pd.DataFrame, int | None], Any]


def _close(bars: pd.DataFrame) -> pd.Series:
    return bars["close"]


def _log_return(bars: pd.DataFrame, _: int | None) -> Any:
    close = _close(bars)
    return np.log(close / close.shift(1))


def _indicator(name: str) -> _Builder:
    def build(bars: pd.DataFrame, window: int | None) -> Any:
        from celeris import indicators

        close = _close(bars)
        window = int(window or 0)  # the parser guarantees a window >= 1 for these names
        if name == "rsi":  # RSI in [0, 100] -> [-1, 1]
            return (indicators.rsi(close, window) - 50.0) / 50.0
        if name == "zscore":  # (close - SMA) / population std
            return indicators.zscore(close, window)
        if name == "atr":  # Wilder ATR relative to the close
            return indicators.atr(bars, window=window) / close
        if name == "sma":  # distance from the moving average, in log terms
            return np.log(close / indicators.sma(close, window))
        if name == "ema":
            return np.log(close / indicators.ema(close, window))
        if name == "volatility":  # rolling std (ddof 0) of log returns; leading NaN skipped
            return indicators.rolling_std(_log_return(bars, None), window)
        raise AssertionError(name)

    return build


def _column(field: str, log: bool) -> _Builder:
    def build(bars: pd.DataFrame, _: int | None) -> Any:
        s = bars[field].astype(np.float64)
        return np.log(s) if log else s

    return build


FEATURES: dict[str, tuple[bool, _Builder, str]] = {
    "close": (False, _column("close", False), "the close price"),
    "log_close": (False, _column("close", True), "log of the close"),
    "log_volume": (False, _column("volume", True), "log of the volume (volume must be > 0)"),
    "log_return": (False, _log_return, "log(close_t / close_{t-1})"),
    "rsi": (True, _indicator("rsi"), "(RSI(w) - 50) / 50, Wilder's RSI"),
    "zscore": (True, _indicator("zscore"), "(close - SMA(w)) / std(w)"),
    "atr": (True, _indicator("atr"), "ATR(w) / close"),
    "sma": (True, _indicator("sma"), "log(close / SMA(w))"),
    "ema": (True, _indicator("ema"), "log(close / EMA(w))"),
    "volatility": (True, _indicator("volatility"), "std(w) of log returns"),
}
"""Feature names: ``name`` or ``name_<window>`` → (takes a window, builder, definition)."""


def _parse_feature(spec: str) -> tuple[str, int | None]:
    base, _, suffix = spec.rpartition("_")
    if base in FEATURES and FEATURES[base][0] and suffix.isdigit() and int(suffix) >= 1:
        return base, int(suffix)
    if spec in FEATURES and not FEATURES[spec][0]:
        return spec, None
    choices = [k if not v[0] else f"{k}_14" for k, v in FEATURES.items()]
    if spec in FEATURES:
        raise ConfigError(f"feature {spec!r} needs a window, e.g. {spec}_14")
    raise ConfigError(
        f"unknown feature {spec!r}{did_you_mean(spec, choices)}; choose from "
        f"{', '.join(choices)} (any window >= 1)"
    )


def feature_frame(
    bars: pd.DataFrame,
    features: Sequence[str] = ("log_return", "rsi_14", "zscore_20", "atr_14"),
    *,
    drop_warmup: bool = True,
) -> pd.DataFrame:
    """Return model features computed from a bar frame, one column per name in ``features``.

    Every feature at bar ``t`` uses bars ``<= t`` only (past-only), so windows of it never see
    the future. Names (``w`` a window length): ``close``, ``log_close``, ``log_volume``,
    ``log_return`` (``log(close_t / close_{t-1})``), ``rsi_w`` (``(RSI - 50) / 50``),
    ``zscore_w`` (``(close - SMA) / std``), ``atr_w`` (``ATR / close``), ``sma_w`` and ``ema_w``
    (``log(close / MA)``), ``volatility_w`` (std of log returns). Indicators come from
    :mod:`celeris.indicators`.

    Parameters
    ----------
    bars : pd.DataFrame
        Bar frame with at least ``close`` (and ``high``, ``low`` for ATR; ``volume`` for
        ``log_volume``).
    features : sequence of str
        Feature names, in the column order wanted. Put the forecast target first.
    drop_warmup : bool
        Drop the leading rows where some indicator is still warming up (NaN). With False they
        stay NaN, and :func:`make_windows` refuses them.

    Raises
    ------
    ConfigError
        An unknown feature name (with a "did you mean" hint) or a repeated one.
    DataError
        A column the features need is missing.
    """
    if isinstance(features, str):
        features = (features,)
    if not features:
        raise ConfigError("features is empty")
    if len(set(features)) != len(features):
        raise ConfigError(f"repeated feature names in {list(features)}")
    if not isinstance(bars, pd.DataFrame):
        raise CelerisTypeError(f"bars must be a DataFrame, got {type(bars).__name__}")
    parsed = [_parse_feature(f) for f in features]
    cols = {str(c).lower(): c for c in bars.columns}
    needed = {"close"}
    for base, _ in parsed:
        needed |= {"atr": {"high", "low"}, "log_volume": {"volume"}}.get(base, set())
    missing = sorted(needed - set(cols))
    if missing:
        raise DataError(f"bars lack the column(s) {', '.join(missing)} that the features need")
    frame = bars.rename(columns={cols[c]: c for c in needed})
    out = pd.DataFrame(index=bars.index)
    for spec, (base, window) in zip(features, parsed, strict=True):
        try:
            out[spec] = np.asarray(FEATURES[base][1](frame, window), dtype=np.float64)
        except CelerisError as exc:  # name the feature the indicator error came from
            raise type(exc)(f"feature {spec!r}: {exc}") from None
    if drop_warmup:
        valid = np.isfinite(out.to_numpy()).all(axis=1)
        first = int(np.argmax(valid)) if valid.any() else len(out)
        out = out.iloc[first:]
    return out
