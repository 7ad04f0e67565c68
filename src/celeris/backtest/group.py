"""Many columns on one account: validating and laying out the inputs of the grouped kernel.

Shared by :func:`celeris.backtest.from_orders` and the grouped path of
:func:`celeris.backtest.from_signals` (``cash_sharing=True``):

* multi-asset prices (a :class:`~celeris.data.panel.Panel`, a frame with ``(symbol, field)``
  columns, a dict of bar frames, or a close frame with NaN outside each asset's listed span)
  become (n_bars, n_assets) arrays with each asset's first and last listed bar;
* columns (assets, or assets x parameter sets) are mapped to assets and to groups (``group_by``),
  and laid out so that each group's columns are contiguous, as the kernel needs;
* ``call_seq`` and ``init_cash`` become per-group parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest import group_kernel as GK
from celeris.data.panel import Panel, to_panel
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice

CALL_SEQS = {"default": GK.CALL_DEFAULT, "reversed": GK.CALL_REVERSED, "auto": GK.CALL_AUTO}


@dataclass(frozen=True)
class Prices:
    """Multi-asset prices: (n_bars, n_assets) float64, C-ordered, NaN where not listed."""

    index: pd.Index
    symbols: pd.Index
    close: np.ndarray
    open: np.ndarray | None
    high: np.ndarray | None
    low: np.ndarray | None
    first: np.ndarray  # [A] first listed bar
    last: np.ndarray  # [A] last listed bar

    @property
    def n_bars(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.close.shape[1])


def is_multi_asset(data: Any) -> bool:
    """Whether ``data`` is one of the multi-asset bar layouts (not a close frame or series)."""
    if isinstance(data, Panel | Mapping):
        return True
    return isinstance(data, pd.DataFrame) and isinstance(data.columns, pd.MultiIndex)


def prices_of(close: Any, open: Any = None, high: Any = None, low: Any = None) -> Prices:
    """Read multi-asset prices; refuse a NaN inside an asset's listed span.

    ``close`` is a bar layout :func:`~celeris.data.panel.to_panel` takes (its open/high/low are
    used when present), a bar frame of one asset, or a close frame/series/array whose leading
    and trailing NaN mark bars before the listing and after the delisting.
    """
    if is_multi_asset(close) or (
        isinstance(close, pd.DataFrame) and "close" in close.columns and close.columns.nlevels == 1
    ):
        panel = to_panel(close)
        fields = {f: np.ascontiguousarray(panel.field(f).to_numpy()) for f in panel.fields}
        if "close" not in fields:
            raise DataError("multi-asset bars have no 'close' field")
        return Prices(
            panel.index,
            panel.symbols,
            fields["close"],
            fields.get("open") if open is None else _aligned("open", open, fields["close"]),
            fields.get("high") if high is None else _aligned("high", high, fields["close"]),
            fields.get("low") if low is None else _aligned("low", low, fields["close"]),
            panel.index.get_indexer(pd.DatetimeIndex(panel.first_valid)).astype(np.int64),
            panel.index.get_indexer(pd.DatetimeIndex(panel.last_valid)).astype(np.int64),
        )
    index = close.index if isinstance(close, pd.Series | pd.DataFrame) else None
    if index is not None:
        I.check_index(index)
    arr = _as_2d("close", close)
    first, last = listed_span(arr, close)
    symbols = close.columns if isinstance(close, pd.DataFrame) else pd.RangeIndex(arr.shape[1])
    if isinstance(close, pd.Series):
        symbols = pd.Index([close.name if close.name is not None else "asset"])
    others = {
        name: None if data is None else _aligned(name, data, arr)
        for name, data in (("open", open), ("high", high), ("low", low))
    }
    return Prices(
        index if index is not None else pd.RangeIndex(arr.shape[0], name="bar"),
        pd.Index(symbols, name="symbol"),
        arr,
        others["open"],
        others["high"],
        others["low"],
        first,
        last,
    )


def _as_2d(name: str, data: Any) -> np.ndarray:
    raw = data.to_numpy() if isinstance(data, pd.Series | pd.DataFrame) else np.asarray(data)
    if raw.dtype == object or not np.issubdtype(raw.dtype, np.number):
        raise CelerisTypeError(f"{name} must be numeric, got dtype {raw.dtype}")
    arr = np.array(raw, dtype=np.float64, order="C", ndmin=1)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D or 2-D (bars x assets) array")
    bad = np.isinf(arr) | (arr <= 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{name} must be > 0 and finite: {arr[row, col]!r} at {I.cell_label(data, row, col)}"
        )
    return arr


def _aligned(name: str, data: Any, close: np.ndarray) -> np.ndarray:
    arr = _as_2d(name, data)
    if arr.shape != close.shape:
        raise DataError(f"{name} has shape {arr.shape} but close has {close.shape}")
    inside = ~np.isnan(close) & np.isnan(arr)
    if inside.any():
        row, col = np.argwhere(inside)[0]
        raise DataError(f"{name} is NaN where close is not: at {I.cell_label(data, row, col)}")
    return arr


def listed_span(close: np.ndarray, data: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """First and last non-NaN bar of each column; a NaN between them is a :class:`DataError`."""
    valid = ~np.isnan(close)
    if not valid.any(axis=0).all():
        col = int(np.flatnonzero(~valid.any(axis=0))[0])
        raise DataError(f"close has no valid bar in column {_col_name(data, col)}")
    n = close.shape[0]
    first = valid.argmax(axis=0).astype(np.int64)
    last = (n - 1 - valid[::-1].argmax(axis=0)).astype(np.int64)
    rows = np.arange(n)[:, None]
    gap = ~valid & (rows > first) & (rows < last)
    if gap.any():
        row, col = np.argwhere(gap)[0]
        raise DataError(
            f"close is NaN inside the listed span of column {_col_name(data, col)} at "
            f"{I.cell_label(data, row, col)}; NaN is allowed only before the first and after the "
            "last valid bar (fill the gap, or build the bars with to_panel(nan_policy='ffill'))"
        )
    return first, last


def _col_name(data: Any, col: int) -> str:
    if isinstance(data, pd.DataFrame):
        return repr(data.columns[col])
    return str(col)


def assets_of_columns(width: int, n_assets: int, columns: pd.Index | None) -> np.ndarray:
    """The asset each of ``width`` columns trades.

    One column per asset (``width == n_assets``); one asset for all; or parameter sets laid out
    set-major (set 0's assets, then set 1's...), the layout of ``[sweep values] x [assets]``.
    """
    if width == n_assets:
        return np.arange(width, dtype=np.int64)
    if n_assets == 1:
        return np.zeros(width, dtype=np.int64)
    if width % n_assets == 0:
        return np.tile(np.arange(n_assets, dtype=np.int64), width // n_assets)
    where = f" (columns {list(columns[:4])}...)" if columns is not None else ""
    raise DataError(
        f"cannot map {width} signal/order columns{where} onto {n_assets} assets: give one column "
        "per asset, or a whole number of parameter sets of all the assets (set-major)"
    )


def group_codes(
    group_by: Any, columns: pd.Index, n_assets: int, cash_sharing: bool
) -> tuple[np.ndarray, pd.Index]:
    """Group of every column and the group labels, in order of first appearance.

    ``group_by``: ``True`` (all columns one group), a column level name or list of names, or one
    label per column. ``None`` with ``cash_sharing``: one group per parameter set (every block of
    ``n_assets`` columns; a single group for one column per asset). ``None`` or ``False``
    without: every column is its own account.
    """
    width = len(columns)
    if group_by is None and cash_sharing:
        blocks = max(width // n_assets, 1)
        codes = np.repeat(np.arange(blocks, dtype=np.int64), width // blocks)
        if blocks == 1:
            return codes, pd.Index(["group"], name="group")
        if columns.nlevels > 1:
            return codes, _levels(columns, list(columns.names[:-1]))[::n_assets]
        return codes, pd.RangeIndex(blocks, name="group")
    if group_by is None or group_by is False:
        return np.arange(width, dtype=np.int64), columns
    if group_by is True:
        return np.zeros(width, dtype=np.int64), pd.Index(["group"], name="group")
    if isinstance(group_by, str):
        keys = _levels(columns, [group_by])
    elif isinstance(group_by, list) and group_by and all(isinstance(g, str) for g in group_by):
        keys = _levels(columns, group_by)
    else:
        keys = pd.Index(np.asarray(group_by))
        if len(keys) != width:
            raise ConfigError(f"group_by has {len(keys)} labels for {width} columns")
    codes, uniques = pd.factorize(keys, sort=False)
    return codes.astype(np.int64), pd.Index(uniques, name="group")


def _levels(columns: pd.Index, names: list[Any]) -> pd.Index:
    """The named levels of ``columns`` (one level: an Index; several: a MultiIndex)."""
    missing = [n for n in names if n not in columns.names]
    if missing:
        raise ConfigError(
            f"group_by names level {missing[0]!r}, but the columns have levels "
            f"{list(columns.names)}"
        )
    arrays = [columns.get_level_values(n) for n in names]
    if len(arrays) == 1:
        return pd.Index(arrays[0])
    return pd.MultiIndex.from_arrays(arrays, names=names)


def in_layout(a: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The columns of a (rows, 1 or n_cols) array in kernel order, C-contiguous (the kernel reads
    a bar's row of a group's columns); no copy when they already are."""
    if a.shape[1] == 1 or np.array_equal(order, np.arange(len(order))):
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a[:, order])


def layout(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column order that makes groups contiguous (stable) and the n_groups + 1 offsets."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return order.astype(np.int64), offsets


def group_params(
    n_groups: int,
    init_cash: Any,
    call_seq: str,
    threshold: float = 0.0,
    perp: np.ndarray | None = None,
) -> np.ndarray:
    """The kernel's (n_groups, N_GROUP_PARAMS) array."""
    check_choice("call_seq", call_seq, CALL_SEQS)
    cash = I.param_values("init_cash", init_cash)
    I.check_range("init_cash", cash, low=0, high=np.inf, low_inclusive=False)
    if cash.size not in (1, n_groups):
        raise ConfigError(
            f"init_cash has {cash.size} values for {n_groups} groups (give 1 or one per group)"
        )
    out = np.empty((n_groups, GK.N_GROUP_PARAMS))
    out[:, GK.G_INIT_CASH] = np.broadcast_to(cash, (n_groups,))
    out[:, GK.G_CALL_SEQ] = CALL_SEQS[call_seq]
    out[:, GK.G_THRESHOLD] = threshold
    out[:, GK.G_PERP] = 0.0 if perp is None else perp
    return out


def bar_range(prices: Prices) -> tuple[np.ndarray, np.ndarray]:
    """High and low; without them a bar's range is its open and close (as vectorbt does)."""
    if prices.open is None:
        return (
            prices.close if prices.high is None else prices.high,
            prices.close if prices.low is None else prices.low,
        )
    high = np.fmax(prices.open, prices.close) if prices.high is None else prices.high
    low = np.fmin(prices.open, prices.close) if prices.low is None else prices.low
    return high, low


def order_price(prices: Prices, price: Any, execution: str) -> np.ndarray:
    """Order price of every bar and asset: the open for next-open fills, else ``price`` or the
    close (an order of bar ``i`` then fills at bar ``i``'s close, as vectorbt's do)."""
    if execution == "next_open":
        if price is not None:
            raise ConfigError(
                "price=... sets the order price of execution='close'; pass execution='close' with it"
            )
        if prices.open is None:
            raise ConfigError(
                "execution='next_open' (the default: fill at the next bar's open) needs open "
                "prices: pass multi-asset bars or open=..., or execution='close'"
            )
        return prices.open
    return prices.close if price is None else _aligned("price", price, prices.close)
