"""``from_signals``: entry/exit signals and prices in, a :class:`~celeris.backtest.Portfolio` out.

Everything here is validation and broadcasting (pandas lives here, not in the kernel). The
per-column options (``fees``, ``size``, stops, ...) are described once, in :data:`OPTIONS`:
their default, the values they accept, the kernel ``params`` slot they fill and whether a
sequence of them names a column level. The signature, the unknown-keyword check, validation,
the kernel arguments and the column labels all read that table.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest import group as G
from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays
from celeris.backtest.book import Book, BookLayout
from celeris.backtest.engine import KernelInputs
from celeris.backtest.group_engine import GroupInputs
from celeris.backtest.perp_inputs import (
    DEFAULT_LIQUIDATION_FEE,
    DEFAULT_MAINTENANCE_MARGIN,
    INSTRUMENTS,
    MARGIN_MODES,
    ORDER_TYPES,
    column_params,
    group_kinds,
    instrument_options,
    limit_prices,
)
from celeris.backtest.portfolio import Portfolio
from celeris.errors import CelerisTypeError, ConfigError, did_you_mean


@dataclass(frozen=True)
class Option:
    """One per-column option of :func:`from_signals`: a scalar for every column, or one per column.

    Numbers are checked to lie in ``[low, high]`` (``(low, high]`` unless ``low_inclusive``);
    ``allow_nan`` lets ``None``/NaN switch the option off; ``below`` is a strict upper bound
    checked after the range; named options (``choices``) become the kernel's integer codes;
    ``flag`` options take True/False only.
    """

    name: str
    default: Any
    slot: int  # column of the kernel's params array
    low: float = 0  # ints, so that messages read "[0, 1]" as they always have
    high: float = np.inf
    low_inclusive: bool = True
    allow_nan: bool = False
    allow_inf: bool = False
    below: float | None = None
    choices: Mapping[str, int] | None = None
    flag: bool = False
    axis: bool = True  # a sequence of values names a level of the portfolio's columns

    def parse(self, value: Any) -> np.ndarray:
        """Return ``value`` as a 1-D float64 array (length 1 or one per column); refuse bad ones."""
        if self.choices is not None:
            return I.choice_codes(self.name, value, self.choices)
        arr = I.param_values(self.name, value)
        if self.flag:
            if not np.isin(arr, (0.0, 1.0)).all():
                raise ConfigError(f"{self.name} must be True or False, got {value!r}")
            return arr
        I.check_range(
            self.name,
            arr,
            low=self.low,
            high=self.high,
            low_inclusive=self.low_inclusive,
            allow_nan=self.allow_nan,
            allow_inf=self.allow_inf,
        )
        if self.below is not None and (arr >= self.below).any():
            raise ConfigError(f"{self.name} must be < {self.below:g}")
        return arr


#: The per-column options of :func:`from_signals`, in the order of the column levels they name.
OPTIONS: tuple[Option, ...] = (
    Option("init_cash", 100_000.0, K.P_INIT_CASH, low_inclusive=False),
    Option("fees", 0.0, K.P_FEES, high=1),
    Option("fixed_fees", 0.0, K.P_FIXED_FEES),
    Option("slippage", 0.0, K.P_SLIPPAGE, high=1),
    Option("size", np.inf, K.P_SIZE, low_inclusive=False, allow_inf=True),
    Option("sl_stop", None, K.P_SL, high=1, low_inclusive=False, allow_nan=True),
    Option("tsl_stop", None, K.P_TSL, high=1, low_inclusive=False, allow_nan=True, below=1.0),
    Option("tp_stop", None, K.P_TP, low_inclusive=False, allow_nan=True, allow_inf=True),
    Option("size_type", "amount", K.P_SIZE_TYPE, choices=I.SIZE_TYPES),
    Option("direction", "longonly", K.P_DIRECTION, choices=I.DIRECTIONS),
    Option("accumulate", False, K.P_ACCUMULATE, flag=True),
    # Not a column level: a sweep over lot sizes is labelled by position (as before the table).
    Option(
        "size_granularity", None, K.P_GRANULARITY, low_inclusive=False, allow_nan=True, axis=False
    ),
)


#: Per-column options of the grouped kernel (perpetuals, limit orders) that sweep as grid axes
#: too; they have no slot in the single-column kernel's params (``slot=-1``).
BOOK_AXES: tuple[Option, ...] = (
    Option("instrument", "spot", -1, choices=INSTRUMENTS),
    Option("leverage", 1.0, -1, low=1),
    Option("margin_mode", "isolated", -1, choices=MARGIN_MODES),
    Option("liquidation_fee", DEFAULT_LIQUIDATION_FEE, -1, high=1),
    Option("order_type", "market", -1, choices=ORDER_TYPES),
    Option("maker_fee", None, -1, high=1, allow_nan=True),
)


@overload
def from_signals(
    close: Any,
    entries: Any = ...,
    exits: Any = ...,
    short_entries: Any = ...,
    short_exits: Any = ...,
    *,
    cash_sharing: Literal[False] = ...,
    **options: Any,
) -> Portfolio: ...


@overload
def from_signals(
    close: Any,
    entries: Any = ...,
    exits: Any = ...,
    short_entries: Any = ...,
    short_exits: Any = ...,
    *,
    cash_sharing: Literal[True],
    **options: Any,
) -> Book: ...


def from_signals(
    close: Any,
    entries: Any = None,
    exits: Any = None,
    short_entries: Any = None,
    short_exits: Any = None,
    *,
    open: Any = None,
    high: Any = None,
    low: Any = None,
    price: Any = None,
    execution: str = "next_open",
    init_cash: Any = 100_000.0,
    fees: Any = 0.0,
    fixed_fees: Any = 0.0,
    slippage: Any = 0.0,
    size: Any = np.inf,
    size_type: Any = "amount",
    direction: Any = "longonly",
    sl_stop: Any = None,
    tp_stop: Any = None,
    tsl_stop: Any = None,
    accumulate: Any = False,
    size_granularity: Any = None,
    stop_exit_price: str = "stop",
    freq: Any = None,
    year_days: float | YearDays | None = None,
    device: str = "auto",
    group_by: Any = None,
    cash_sharing: bool = False,
    call_seq: str = "default",
    instrument: Any = "spot",
    leverage: Any = 1.0,
    margin_mode: Any = "isolated",
    maintenance_margin: Any = DEFAULT_MAINTENANCE_MARGIN,
    liquidation_fee: Any = DEFAULT_LIQUIDATION_FEE,
    funding_rate: Any = None,
    mark_price: Any = None,
    order_type: Any = "market",
    limit_price: Any = None,
    limit_expiry: Any = None,
    maker_fee: Any = None,
    _copy: bool = True,
    _first_signals: dict[str, bool] | None = None,
    **unknown: Any,
) -> Portfolio | Book:
    """Simulate entry/exit signals, one column per strategy variant, and return a :class:`Portfolio`.

    Semantics are those of vectorbt's ``Portfolio.from_signals`` for every option both have,
    except the default fill: orders fill at the *next* bar's open (``execution="next_open"``,
    the price a live system can actually get after seeing a bar close; backtesting.py's and
    freqtrade's default). ``execution="close"`` fills at the signal bar's close as vectorbt does
    (``price`` overrides the order price there). Slippage moves the fill
    price against the trader, ``fees`` are a fraction of traded value plus ``fixed_fees`` per
    order, ``size=inf`` means all available cash, entries are ignored while in a position unless
    ``accumulate``, and stops are checked against each later bar's open, high and low.

    Parameters
    ----------
    close : Series, DataFrame or array, or a bar frame
        Close prices, (n_bars,) or (n_bars, n_assets). A bar frame (with ``open, high, low,
        close`` columns) supplies ``open``/``high``/``low`` too.
    entries, exits : bool arrays
        Signals, (n_bars,) or (n_bars, n_cols); broadcast against prices and parameters.
    short_entries, short_exits : bool arrays, optional
        Short signals. When given, ``entries``/``exits`` are the long signals and both sides trade.
    open, high, low : prices, optional
        Used by stops (a gap through the stop fills at the open) and by ``execution="next_open"``.
        Without them, stops are checked against the close only.
    price : prices, optional
        Order price of each bar (default: the close).
    execution : {"next_open", "close"}
        ``"next_open"`` (default) fills a signal at the *next* bar's open, as backtesting.py does;
        it needs open prices (a bar frame or ``open=``). A signal on the last bar then has no bar
        to fill in and is not executed. Stops of a position opened at the open are measured from
        that open price (vectorbt's ``stop_entry_price="price"``). ``"close"`` fills at the
        signal bar's close (vectorbt's convention; a live system cannot trade at the close its
        signal was computed from).
    init_cash, fees, fixed_fees, slippage, size, sl_stop, tp_stop, tsl_stop : float or sequence
        Per-column parameters: a scalar for all columns or one value per column. Stops are
        fractions (``sl_stop=0.05`` exits 5% below the entry's reference price); ``None``/NaN
        disables. ``tsl_stop`` trails the highest high (lowest low for shorts) seen since entry.
        Celeris also allows ``sl_stop`` and ``tsl_stop`` together (vectorbt has one stop-loss
        slot): the tighter level fires.
    size_type : {"amount", "value", "percent"}
        Shares, cash value, or a fraction of available cash (0 < size <= 1). ``"percent"`` cannot
        reverse a position, so it is refused with ``direction="both"`` or short signals.
    direction : {"longonly", "shortonly", "both"}
        With ``"both"`` and no short arrays, ``exits`` open shorts (vectorbt's convention).
    accumulate : bool
        Add to (and reduce) positions on repeated signals instead of ignoring them.
    size_granularity : float, optional
        Round order sizes down to a multiple (``1`` for whole shares).
    stop_exit_price : {"stop", "stopmarket", "close"}
        A triggered stop fills at the stop price without slippage (vectorbt's default
        ``"stoplimit"``), at the stop price with slippage, or at the bar's close with slippage.
    freq, year_days : annualisation
        Bar spacing (inferred from a datetime index if omitted) and days per year:
        ``ann_factor = year_days * 1 day / freq``. ``year_days=None`` applies Celeris's one rule,
        :func:`celeris.backtest.annualisation.resolve_year_days` (252 for data without weekend
        bars, else 365); :attr:`Portfolio.annualisation` says which value was used and why.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses a CUDA GPU when present, else the CPU; results are identical.
    group_by, cash_sharing, call_seq
        ``cash_sharing=True`` trades the columns of a group from one balance (vectorbt's
        semantics) and returns a :class:`~celeris.backtest.book.Book`; ``close`` may then be
        multi-asset bars (a Panel, ``(symbol, field)`` columns, a dict of bar frames) or a close
        frame with NaN outside each asset's listed span. ``group_by``: ``True`` (all columns), a
        column level name, one label per column; default: all assets, or one group per
        parameter set when the signals are parameter sets x assets (set-major). ``call_seq``:
        ``"default"`` (column order), ``"reversed"`` or ``"auto"`` (sells before buys). See
        :func:`~celeris.backtest.from_orders` for listings and delistings.
    instrument, leverage, margin_mode, maintenance_margin, liquidation_fee, funding_rate, mark_price
        Perpetual futures (``instrument="perp"``, per column; returns a
        :class:`~celeris.backtest.book.Book`): ``fees`` is the taker fee, margin is
        notional / ``leverage``, ``margin_mode`` ``"isolated"`` or ``"cross"`` (the group's
        wallet), ``maintenance_margin`` a rate or an exchange tier table (or a dict symbol ->
        either), ``liquidation_fee`` a rate of the notional at the liquidation fill,
        ``funding_rate`` rates on the bar index (non-zero at funding times; a long pays
        ``notional x rate``), ``mark_price`` the funding mark (default: the bar's open). Each
        bar: funding at the open, then the liquidation check against the bar's adverse extreme,
        then stops and signals. Formulas and sources: docs/perpetuals.md.
    order_type, limit_price, limit_expiry, maker_fee
        ``order_type="limit"`` (per column) rests each signal's order at that bar's
        ``limit_price`` (per bar, and per column or for all; NaN: a market order) for
        ``limit_expiry`` bars (default: until filled or replaced by the next signal's order);
        it fills when a bar trades through the price, at the price, paying ``maker_fee``
        (default: ``fees``). A fill of the column cancels it (a stop, a liquidation).

    Inputs are copied (unless they are already private copies), so changing the caller's arrays
    later does not change the portfolio. ``_copy=False`` is for Celeris's own sweeps, which hand
    over buffers they do not touch while the portfolio is in use.

    Deliberate differences from vectorbt: a Sharpe or Sortino ratio of a flat equity curve (0/0) is
    NaN, not infinity; ``max_drawdown`` is a positive fraction; prices must be finite and > 0
    everywhere (no NaN bars); ``tsl_stop`` is a separate keyword (vectorbt: ``sl_trail=True``).

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> import celeris
    >>> close = pd.Series([10.0, 11.0, 12.0, 11.0, 13.0],
    ...                   index=pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC"))
    >>> pf = celeris.backtest.from_signals(close, close.index.day == 1, close.index.day == 3,
    ...                                    init_cash=1000.0, execution="close")
    >>> round(float(pf.stats()["end_value"].iloc[0]), 2)
    1200.0
    """
    given = dict(locals())  # the arguments as passed, read by name through OPTIONS below
    if unknown:
        name = next(iter(unknown))
        raise ConfigError(
            f"from_signals got an unknown parameter {name!r}{did_you_mean(name, _keywords())}"
        )
    I.check_choice("execution", execution, I.EXECUTIONS)
    I.check_choice("stop_exit_price", stop_exit_price, I.STOP_EXIT_PRICES)
    if not isinstance(cash_sharing, bool):
        raise CelerisTypeError(f"cash_sharing must be True or False, got {cash_sharing!r}")
    if group_by not in (None, False) and not cash_sharing:
        raise ConfigError(
            "group_by without cash_sharing=True would only sum independent accounts; pass "
            "cash_sharing=True to trade the group's columns from one balance"
        )
    if cash_sharing or _instrument_given(given):
        return _grouped(given)
    if isinstance(close, pd.DataFrame) and "close" in close.columns and close.columns.nlevels == 1:
        bars = close
        close = bars["close"]
        open = bars["open"] if open is None and "open" in bars else open
        high = bars["high"] if high is None and "high" in bars else high
        low = bars["low"] if low is None and "low" in bars else low
    index = close.index if isinstance(close, pd.Series | pd.DataFrame) else None
    if index is not None:
        I.check_index(index)
    prices = _prices(close, open, high, low, price, execution, _copy)
    n_bars = prices["close"].shape[0]

    if entries is None and short_entries is None:
        raise ConfigError("no entries: pass entries=... (or short_entries=...)")
    raw_signals = {
        "entries": entries,
        "exits": exits,
        "short_entries": short_entries,
        "short_exits": short_exits,
    }
    sig = {
        name: _signal(name, data, n_bars, index, execution, _copy, _first_signals)
        for name, data in raw_signals.items()
    }
    long_short = short_entries is not None or short_exits is not None
    values = {o.name: o.parse(given[o.name]) for o in OPTIONS}
    if long_short:
        if (values["direction"] == K.SHORT_ONLY).any():
            raise ConfigError(
                "direction='shortonly' cannot be combined with short_entries/short_exits"
            )
        values["direction"] = np.full_like(values["direction"], K.LONG_ONLY)  # long signals
    width = I.broadcast_width(
        {
            **{k: v.shape[1] for k, v in prices.items()},
            **{k: v.shape[1] for k, v in sig.items()},
            **{k: v.size for k, v in values.items()},
        }
    )
    params = _kernel_params(values, width, long_short, stop_exit_price, execution)

    bar_index = index if index is not None else pd.RangeIndex(n_bars, name="bar")
    td, annual, ann_factor = I.annualise(bar_index, freq, year_days)
    axes = {
        o.name: np.asarray(given[o.name])
        for o in OPTIONS
        if o.axis and not np.isscalar(given[o.name]) and given[o.name] is not None
    }
    columns = I.columns_from([*raw_signals.values(), close, price], width, axes)
    inputs = KernelInputs(**prices, **sig, params=params, ann_factor=ann_factor)
    return Portfolio(
        inputs,
        bar_index,
        columns,
        freq=td,
        year_days=annual,
        execution=execution,
        device=device,
    )


def _prices(
    close: Any, open: Any, high: Any, low: Any, price: Any, execution: str, copy: bool
) -> dict[str, np.ndarray]:
    """The kernel's price arrays, each (n_bars, 1 or n_cols) float64, finite and > 0."""
    close_arr = I.as_2d_float("close", close, copy=copy)
    n_bars = close_arr.shape[0]
    open_arr = close_arr if open is None else I.as_2d_float("open", open, n_bars, copy=copy)
    # Without high/low, a bar's range is its open and close (vectorbt does the same).
    if high is None:
        high_arr = close_arr if open is None else np.maximum(open_arr, close_arr)
    else:
        high_arr = I.as_2d_float("high", high, n_bars, copy=copy)
    if low is None:
        low_arr = close_arr if open is None else np.minimum(open_arr, close_arr)
    else:
        low_arr = I.as_2d_float("low", low, n_bars, copy=copy)
    if price is not None and execution == "next_open":
        raise ConfigError(
            "price=... sets the order price of execution='close'; pass execution='close' with "
            "it (the default, 'next_open', fills at the next bar's open)"
        )
    price_arr = close_arr if price is None else I.as_2d_float("price", price, n_bars, copy=copy)
    if execution == "next_open":
        if open is None:
            raise ConfigError(
                "execution='next_open' (the default: fill at the next bar's open) needs open "
                "prices: pass a bar frame or open=..., or execution='close' to fill at the "
                "signal bar's close"
            )
        price_arr = open_arr
    return {"close": close_arr, "open": open_arr, "high": high_arr, "low": low_arr,
            "price": price_arr}  # fmt: skip


def _signal(
    name: str,
    data: Any,
    n_bars: int,
    index: pd.Index | None,
    execution: str,
    copy: bool,
    first_signals: dict[str, bool] | None,
) -> np.ndarray:
    """One signal as the kernel reads it: (n_bars, k) bool, shifted a bar for next-open fills."""
    if data is None:
        return np.zeros((1, 1), dtype=np.bool_)
    arr = I.as_2d_bool(name, data, n_bars, index, copy=copy and execution != "next_open")
    if execution == "next_open":
        shifted = np.zeros_like(arr)
        shifted[1:] = arr[:-1]
        # A walk-forward window's signal from the bar before it fills at its first open.
        if first_signals is not None:
            shifted[0] = bool(first_signals.get(name, False))
        return shifted
    if first_signals is not None:
        arr = arr.copy()
        arr[0] = bool(first_signals.get(name, False))
    return arr


def _kernel_params(
    values: dict[str, np.ndarray],
    width: int,
    long_short: bool,
    stop_exit_price: str,
    execution: str,
) -> np.ndarray:
    """The kernel's (width, N_PARAMS) float64 params: each option in its slot, broadcast."""
    params = np.empty((width, K.N_PARAMS), dtype=np.float64)
    for o in OPTIONS:
        params[:, o.slot] = np.broadcast_to(values[o.name], (width,))
    percent = params[:, K.P_SIZE_TYPE] == K.PERCENT
    if percent.any():
        sizes = params[percent, K.P_SIZE]
        if (~np.isfinite(sizes) | (sizes > 1)).any():
            raise ConfigError(
                "size_type='percent' needs 0 < size <= 1 (a fraction of available cash)"
            )
        if long_short or (params[percent, K.P_DIRECTION] == K.BOTH).any():
            raise ConfigError(
                "size_type='percent' cannot reverse positions; use 'amount' or 'value' with "
                "direction='both' or short signals"
            )
    params[:, K.P_STOP_EXIT] = I.STOP_EXIT_PRICES[stop_exit_price]
    params[:, K.P_STOP_REF] = K.STOP_REF_PRICE if execution == "next_open" else K.STOP_REF_CLOSE
    return params


def _keywords() -> list[str]:
    return [p for p in inspect.signature(from_signals).parameters if p != "unknown" and p[0] != "_"]


#: The instrument keywords ``from_signals`` and ``from_orders`` pass to ``instrument_options``.
INSTRUMENT_KEYWORDS = (
    "instrument",
    "leverage",
    "margin_mode",
    "maintenance_margin",
    "liquidation_fee",
    "funding_rate",
    "mark_price",
    "order_type",
    "maker_fee",
    "limit_expiry",
)


@functools.cache
def _defaults() -> dict[str, Any]:
    """``from_signals``'s keyword defaults, read once (it runs once per chunk of a sweep)."""
    return {n: p.default for n, p in inspect.signature(from_signals).parameters.items()}


def _instrument_given(given: dict[str, Any]) -> bool:
    """Whether any instrument keyword differs from spot's defaults (then the grouped kernel runs,
    which validates them: a spot column with leverage is refused there, not ignored here)."""
    defaults = _defaults()
    for name in (*INSTRUMENT_KEYWORDS, "limit_price"):
        value, default = given[name], defaults[name]
        if value is None and default is None:
            continue
        if not (np.isscalar(value) and np.isscalar(default) and value == default):
            return True
    return False


def _grouped(given: dict[str, Any]) -> Book:
    """``from_signals`` on the grouped kernel: cash sharing, multi-asset prices, perpetuals.

    Without ``cash_sharing`` every column is its own account (a group of one).
    """
    return Book.from_layout(_layout(given), device=given["device"])


def book_layout(
    close: Any,
    entries: Any = None,
    exits: Any = None,
    short_entries: Any = None,
    short_exits: Any = None,
    **options: Any,
) -> BookLayout:
    """What ``from_signals(close, entries, ..., **options)`` hands the grouped kernel, validated
    the same way, without running it: for callers that run the kernel themselves, bar by bar
    (the paper account of ``celeris live``). Every column is its own account unless
    ``cash_sharing=True``; the options are ``from_signals``'s.
    """
    for name in options:
        if name not in _defaults() or name.startswith("_"):
            raise ConfigError(
                f"book_layout got an unknown parameter {name!r}{did_you_mean(name, _keywords())}"
            )
    given = {k: v for k, v in _defaults().items() if k != "unknown"}
    given.update(options)
    given.update(close=close, entries=entries, exits=exits, short_entries=short_entries,
                 short_exits=short_exits)  # fmt: skip
    I.check_choice("execution", given["execution"], I.EXECUTIONS)
    I.check_choice("stop_exit_price", given["stop_exit_price"], I.STOP_EXIT_PRICES)
    return _layout(given)


def _layout(given: dict[str, Any]) -> BookLayout:
    """The grouped kernel's inputs and the labels of its results (see :func:`_grouped`)."""
    execution = given["execution"]
    prices = G.prices_of(given["close"], given["open"], given["high"], given["low"])
    n_bars = prices.n_bars
    index = prices.index if isinstance(prices.index, pd.DatetimeIndex) else None
    if given["entries"] is None and given["short_entries"] is None:
        raise ConfigError("no entries: pass entries=... (or short_entries=...)")
    names = ("entries", "exits", "short_entries", "short_exits")
    sig = {
        name: _signal(name, given[name], n_bars, index, execution, True, given["_first_signals"])
        for name in names
    }
    long_short = given["short_entries"] is not None or given["short_exits"] is not None
    values = {o.name: o.parse(given[o.name]) for o in OPTIONS}
    if long_short:
        values["direction"] = np.full_like(values["direction"], K.LONG_ONLY)
    widths = {**{k: v.shape[1] for k, v in sig.items()}, **{k: v.size for k, v in values.items()}}
    width = I.broadcast_width(widths)
    if width == 1:
        width = prices.n_assets
    params = _kernel_params(values, width, long_short, given["stop_exit_price"], execution)
    axes = {
        o.name: np.asarray(given[o.name])
        for o in OPTIONS
        if o.axis and not np.isscalar(given[o.name]) and given[o.name] is not None
    }
    columns = I.columns_from([given[n] for n in names], width, axes)
    if width == prices.n_assets and isinstance(columns, pd.RangeIndex):
        columns = prices.symbols
    assets = G.assets_of_columns(width, prices.n_assets, columns)
    share = given["cash_sharing"]
    codes, group_labels = G.group_codes(given["group_by"], columns, prices.n_assets, share)
    order, offsets = G.layout(codes)
    inst = instrument_options(
        prices,
        width,
        assets,
        fees=params[:, K.P_FEES],
        **{k: given[k] for k in INSTRUMENT_KEYWORDS},
    )
    limits = _limits(given, inst.limit, n_bars, width, prices.index, order)
    col_params = column_params(params, assets, prices, inst)
    perp_groups = group_kinds(inst.perp[order], offsets)
    init_cash = _group_cash(params[order, K.P_INIT_CASH], offsets)
    price = G.order_price(prices, given["price"], execution)
    high, low = G.bar_range(prices)
    td, annual, ann_factor = I.annualise(prices.index, given["freq"], given["year_days"])
    inputs = GroupInputs(
        close=prices.close,
        open=prices.close if prices.open is None else prices.open,
        high=high,
        low=low,
        price=price,
        **{k: G.in_layout(v, order) for k, v in sig.items()},
        sizes=limits,
        col_params=col_params[order],
        group_params=G.group_params(
            len(group_labels), init_cash, given["call_seq"], perp=perp_groups
        ),
        groups=offsets,
        mode=GK.MODE_SIGNALS,
        ann_factor=ann_factor,
        perp=inst.kernel_tuple(),
    )
    return BookLayout(
        inputs,
        prices.index,
        columns[order],
        prices.symbols,
        group_labels,
        freq=td,
        year_days=annual,
        execution=execution,
    )


def _limits(
    given: dict[str, Any],
    limit: np.ndarray,
    n_bars: int,
    width: int,
    index: pd.Index,
    order: np.ndarray,
) -> np.ndarray:
    """The kernel's limit prices in column order ((1, 1) NaN: market orders only)."""
    if not limit.any():
        if given["limit_price"] is not None:
            raise ConfigError("limit_price applies to order_type='limit'")
        return np.full((1, 1), np.nan)
    if given["limit_price"] is None:
        raise ConfigError("order_type='limit' needs limit_price=... (NaN bars: market orders)")
    limits = limit_prices(given["limit_price"], n_bars, width, index, given["execution"])
    return G.in_layout(limits, order)


def _group_cash(cash: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One starting cash per group; the columns of a group must agree (they share it)."""
    firsts = cash[offsets[:-1]]
    for g, (lo, hi) in enumerate(itertools.pairwise(offsets)):
        if (cash[lo:hi] != firsts[g]).any():
            raise ConfigError(
                f"init_cash differs between the columns of group {g}; under cash_sharing a "
                "group has one balance: give one init_cash per group"
            )
    return firsts
