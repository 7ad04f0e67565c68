"""``from_orders``: an order per bar and column in, a :class:`~celeris.backtest.book.Book` out.

vectorbt's ``Portfolio.from_orders`` semantics (size types, direction, fees, slippage, cash
sharing and call sequences), on multi-asset prices where assets may list late or delist early.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest import group as G
from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays
from celeris.backtest.book import Book
from celeris.backtest.group_engine import GroupInputs
from celeris.backtest.perp_inputs import (
    DEFAULT_LIQUIDATION_FEE,
    DEFAULT_MAINTENANCE_MARGIN,
    column_params,
    group_kinds,
    instrument_options,
)
from celeris.backtest.signals import Option
from celeris.errors import CelerisTypeError, ConfigError, DataError

#: ``size_type`` of :func:`from_orders`: vectorbt's six.
ORDER_SIZE_TYPES = {
    **I.SIZE_TYPES,
    "targetamount": GK.TARGET_AMOUNT,
    "targetvalue": GK.TARGET_VALUE,
    "targetpercent": GK.TARGET_PERCENT,
}

#: Per-column options of :func:`from_orders` (a scalar, or one value per column).
ORDER_OPTIONS: tuple[Option, ...] = (
    Option("fees", 0.0, K.P_FEES, high=1),
    Option("fixed_fees", 0.0, K.P_FIXED_FEES),
    Option("slippage", 0.0, K.P_SLIPPAGE, high=1),
    Option("size_type", "amount", K.P_SIZE_TYPE, choices=ORDER_SIZE_TYPES),
    Option("direction", "both", K.P_DIRECTION, choices=I.DIRECTIONS),
    Option("size_granularity", None, K.P_GRANULARITY, low_inclusive=False, allow_nan=True),
)


def from_orders(
    close: Any,
    size: Any,
    *,
    size_type: Any = "amount",
    direction: Any = "both",
    price: Any = None,
    open: Any = None,
    execution: str = "next_open",
    fees: Any = 0.0,
    fixed_fees: Any = 0.0,
    slippage: Any = 0.0,
    size_granularity: Any = None,
    init_cash: Any = 100_000.0,
    group_by: Any = None,
    cash_sharing: bool = False,
    call_seq: str = "default",
    freq: Any = None,
    year_days: float | YearDays | None = None,
    device: str = "auto",
    instrument: Any = "spot",
    leverage: Any = 1.0,
    margin_mode: Any = "isolated",
    maintenance_margin: Any = DEFAULT_MAINTENANCE_MARGIN,
    liquidation_fee: Any = DEFAULT_LIQUIDATION_FEE,
    funding_rate: Any = None,
    mark_price: Any = None,
    _threshold: float = 0.0,
) -> Book:
    """Simulate one order per bar and column (NaN: no order) and return a :class:`Book`.

    Semantics are vectorbt's ``Portfolio.from_orders`` with ``update_value=False``, except the
    default fill, which is Celeris's: an order given on a bar fills at the *next* bar's open
    (``execution="next_open"``); ``execution="close"`` fills at that bar's close (or ``price``),
    as vectorbt does.

    Parameters
    ----------
    close : prices
        Multi-asset bars (a :class:`~celeris.data.panel.Panel`, a frame with ``(symbol, field)``
        columns or a dict of bar frames; their opens are used for next-open fills) or a close
        frame/series. NaN before an asset's first and after its last bar mean "not listed": no
        order fills there, and the position left at the delisting is settled at the last close
        (no fee, no slippage). A NaN between them is a :class:`~celeris.errors.DataError`.
    size : float, array or frame
        Order size per bar and column, (n_bars,) or (n_bars, n_cols); NaN is no order. Its
        meaning is ``size_type``'s: ``"amount"`` (units; negative sells), ``"value"`` (cash),
        ``"percent"`` (of available cash to buy, of the position to sell), ``"targetamount"``,
        ``"targetvalue"`` and ``"targetpercent"`` (of the account's value: 0.25 holds a quarter
        of the group's value in the column).
    size_type, direction, fees, fixed_fees, slippage, size_granularity : scalar or per column
        As in vectorbt. ``direction="shortonly"`` counts sizes short (a target of 0.5 is a 50%
        short).
    init_cash : float or one per group
        Starting cash of every account (of every group under ``cash_sharing``).
    group_by, cash_sharing, call_seq
        ``cash_sharing=True`` puts the columns of a group on one account; ``group_by`` says which
        (``True``: all; a column level name; one label per column; default: all columns, or one
        group per parameter set when the columns are parameter sets x assets). ``call_seq``
        orders a bar's orders within a group: ``"default"`` (column order), ``"reversed"``, or
        ``"auto"`` (by approximate order value: sells first, so they release cash for buys).
    freq, year_days, device
        As in :func:`~celeris.backtest.from_signals`.
    instrument, leverage, margin_mode, maintenance_margin, liquidation_fee, funding_rate, mark_price
        Perpetual futures, as in :func:`~celeris.backtest.from_signals`; a target percent is
        then a share of the account's value in notional (0.5 at 3x leverage holds half the
        value's notional on a third of it as margin).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import celeris
    >>> idx = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    >>> close = pd.DataFrame({"BTC": [100.0, 110, 120, 110], "ETH": [10.0, 10, 12, 12]}, index=idx)
    >>> weights = pd.DataFrame({"BTC": [0.5, np.nan, 0.2, np.nan], "ETH": [0.5, np.nan, 0.8, np.nan]},
    ...                        index=idx)
    >>> book = celeris.backtest.from_orders(close, weights, size_type="targetpercent",
    ...                                     cash_sharing=True, call_seq="auto", execution="close")
    >>> round(float(book.stats()["end_value"].iloc[0]), 2)
    118000.0
    """
    I.check_choice("execution", execution, I.EXECUTIONS)
    if not isinstance(cash_sharing, bool):
        raise CelerisTypeError(f"cash_sharing must be True or False, got {cash_sharing!r}")
    prices = G.prices_of(close, open=open)
    sizes, columns = _sizes(size, prices)
    width = sizes.shape[1]
    values = {
        o.name: o.parse(given)
        for o, given in zip(
            ORDER_OPTIONS,
            (fees, fixed_fees, slippage, size_type, direction, size_granularity),
            strict=True,
        )
    }
    for name, arr in values.items():
        if arr.size not in (1, width):
            raise ConfigError(
                f"{name} has {arr.size} values for {width} columns (give 1 or one per column)"
            )
    order_price, sizes = _execution(prices, sizes, price, execution)
    assets = G.assets_of_columns(width, prices.n_assets, columns)
    codes, group_labels = G.group_codes(group_by, columns, prices.n_assets, cash_sharing)
    if not cash_sharing and group_by not in (None, False):
        raise ConfigError(
            "group_by without cash_sharing=True would only sum independent accounts; pass "
            "cash_sharing=True to trade the group's columns from one balance"
        )
    order, offsets = G.layout(codes)
    params = np.zeros((width, K.N_PARAMS))
    for o in ORDER_OPTIONS:
        params[:, o.slot] = np.broadcast_to(values[o.name], (width,))
    for slot in (K.P_SL, K.P_TSL, K.P_TP):
        params[:, slot] = np.nan
    inst = instrument_options(
        prices,
        width,
        assets,
        instrument=instrument,
        leverage=leverage,
        margin_mode=margin_mode,
        maintenance_margin=maintenance_margin,
        liquidation_fee=liquidation_fee,
        funding_rate=funding_rate,
        mark_price=mark_price,
    )
    col_params = column_params(params, assets, prices, inst)
    perp_groups = group_kinds(inst.perp[order], offsets)
    sizes = _outside_listing_nan(sizes, col_params)
    index = prices.index
    td, annual, ann_factor = I.annualise(index, freq, year_days)
    none = np.zeros((1, 1), dtype=np.bool_)
    high, low = G.bar_range(prices)  # liquidations check the bar's extremes
    inputs = GroupInputs(
        close=prices.close,
        open=prices.close if prices.open is None else prices.open,
        high=high,
        low=low,
        price=order_price,
        entries=none,
        exits=none,
        short_entries=none,
        short_exits=none,
        sizes=G.in_layout(sizes, order),
        col_params=col_params[order],
        group_params=G.group_params(
            len(group_labels), init_cash, call_seq, _threshold, perp=perp_groups
        ),
        groups=offsets,
        mode=GK.MODE_ORDERS,
        ann_factor=ann_factor,
        perp=inst.kernel_tuple(),
    )
    return Book(
        inputs,
        index,
        columns[order],
        prices.symbols,
        group_labels,
        freq=td,
        year_days=annual,
        execution=execution,
        device=device,
    )


def _sizes(size: Any, prices: G.Prices) -> tuple[np.ndarray, pd.Index]:
    """Order sizes as (n_bars, n_cols) float64 and their column labels."""
    n = prices.n_bars
    if isinstance(size, pd.DataFrame | pd.Series):
        if not size.index.equals(prices.index):
            raise DataError(
                f"size's index ({len(size.index)} rows, {size.index[0]} to {size.index[-1]}) "
                "must equal the prices' index; reindex it first"
            )
        columns = size.columns if isinstance(size, pd.DataFrame) else None
        raw = size.to_numpy()
    else:
        columns = None
        raw = np.asarray(size)
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_):
        raise CelerisTypeError(f"size must be numeric, got dtype {raw.dtype}")
    arr = np.array(raw, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((n, 1), float(arr))
    elif arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise DataError(
            f"size has shape {np.shape(raw)}; expected a scalar, ({n},) or ({n}, n_columns)"
        )
    width = arr.shape[1]
    if width == 1 and prices.n_assets > 1:
        arr = np.repeat(arr, prices.n_assets, axis=1)
        width = prices.n_assets
    if columns is not None and len(columns) == width:
        return arr, pd.Index(columns)
    if width == prices.n_assets:
        return arr, prices.symbols
    return arr, pd.RangeIndex(width, name="column")


def _execution(
    prices: G.Prices, sizes: np.ndarray, price: Any, execution: str
) -> tuple[np.ndarray, np.ndarray]:
    """Order price array and sizes as the kernel reads them (shifted a bar for next-open fills)."""
    order_price = G.order_price(prices, price, execution)
    if execution == "next_open":
        shifted = np.full_like(sizes, np.nan)
        shifted[1:] = sizes[:-1]
        return order_price, shifted
    return order_price, sizes


def _outside_listing_nan(sizes: np.ndarray, col_params: np.ndarray) -> np.ndarray:
    """No order outside a column's listed span (NaN, as vectorbt reads "no order")."""
    rows = np.arange(sizes.shape[0])[:, None]
    outside = (rows < col_params[:, GK.C_FIRST]) | (rows > col_params[:, GK.C_LAST])
    if outside.any():
        sizes = np.where(outside, np.nan, sizes)
    return sizes
