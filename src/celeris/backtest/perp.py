"""Perpetual-futures formulas: margin, liquidation price, funding, liquidation and limit fills.

Two layers in one file, as in :mod:`celeris.backtest.kernel`:

* **Scalar kernels** (names ending ``_nb``): plain Python over floats and a 2-D float64 tier
  table, written so that the same source compiles under ``numba.njit`` (the helpers are
  ``numba.extending.register_jitable``, so they stay callable from Python too) and as CUDA device
  functions (execute this file a second time with ``__celeris_jit__`` bound to
  ``numba.cuda.jit(device=True)``, as :mod:`celeris.backtest.cuda` does for ``kernel.py``). Only
  ``math``, scalar arithmetic, tuples of scalars and array indexing are used.
* **A validated Python API** (no suffix): checks every argument at the boundary with
  :mod:`celeris.checks` and calls the kernels, so the numbers are the kernels' own.

Conventions. A position is a signed size in units of the asset: positive long, negative short
(the kernel's ``position``). Prices and money are float64 in the quote currency (USDT for
Binance USDⓈ-M). Formulas follow Binance USDⓈ-M futures (one-way mode); docs/perpetuals.md
gives each formula with its source and worked examples.
"""

# Explicit branches compile alike for the CPU and CUDA targets.
# ruff: noqa: SIM108
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numba.extending import register_jitable

from celeris.checks import check_real
from celeris.data.funding_schema import MAX_ABS_RATE
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice

_jit = globals().get("__celeris_jit__", register_jitable)

__all__ = [
    "LIMIT_GAP",
    "LIMIT_HIT",
    "LIMIT_NONE",
    "LIQ_GAP",
    "LIQ_HIT",
    "LIQ_NONE",
    "TIER_CAP",
    "TIER_CUM",
    "TIER_RATE",
    "BarOutcome",
    "Fill",
    "funding_payment",
    "initial_margin",
    "isolated_bar",
    "limit_fill",
    "liquidation_fill",
    "liquidation_price_cross",
    "liquidation_price_isolated",
    "maintenance_margin",
    "maintenance_tiers",
]

# Columns of a maintenance tier table ``tiers[k, TIER_*]`` (n_tiers x 3, float64).
TIER_CAP = 0  # notional cap of the tier (the last may be inf); tier k covers (cap[k-1], cap[k]]
TIER_RATE = 1  # maintenance margin rate, in [0, 1)
TIER_CUM = 2  # maintenance amount ("cum"): MM = notional x rate - cum
N_TIER_FIELDS = 3

# Outcome of a liquidation check within one bar.
LIQ_NONE = 0  # the bar did not reach the liquidation price
LIQ_HIT = 1  # the bar's adverse extreme reached it
LIQ_GAP = 2  # the bar opened beyond it (closed at the open, see liquidation_fill_nb)

# Outcome of a resting limit order within one bar.
LIMIT_NONE = 0  # not filled
LIMIT_HIT = 1  # the bar traded through the limit
LIMIT_GAP = 2  # the bar opened through the limit (still filled at the limit price)


# ---------------------------------------------------------------------------------------------
# Scalar kernels (numba CPU and CUDA device functions from this one source)
# ---------------------------------------------------------------------------------------------


@_jit
def initial_margin_nb(position, price, leverage):
    """Initial margin of a position: ``|position| x price / leverage`` (Binance: notional / leverage)."""
    return abs(position) * price / leverage


@_jit
def tier_of_nb(tiers, notional):
    """Index of the tier whose bracket holds ``notional``: the first with ``notional <= cap``.

    A notional above the last cap stays in the last tier (the exchange would refuse to open such a
    position; the formula keeps the last rate).
    """
    n = tiers.shape[0]
    for k in range(n - 1):
        if notional <= tiers[k, TIER_CAP]:
            return k
    return n - 1


@_jit
def maintenance_margin_nb(tiers, notional):
    """Maintenance margin of a position of ``notional`` (>= 0): ``notional x rate - cum`` of its tier."""
    k = tier_of_nb(tiers, notional)
    return notional * tiers[k, TIER_RATE] - tiers[k, TIER_CUM]


@_jit
def margin_surplus_nb(tiers, position, entry_price, price, wallet, other_mm, other_upnl):
    """Margin balance minus maintenance margin at ``price``: the position is liquidated at <= 0.

    ``wallet + other_upnl - other_mm + position x (price - entry_price) - MM(|position| x price)``;
    for an isolated position ``wallet`` is its isolated margin and the ``other_*`` terms are 0.
    """
    notional = abs(position) * price
    balance = wallet - other_mm + other_upnl + position * (price - entry_price)
    return balance - maintenance_margin_nb(tiers, notional)


@_jit
def liquidation_price_nb(tiers, position, entry_price, wallet, other_mm, other_upnl):
    """Liquidation price of a one-way position (Binance USDⓈ-M formula), 0.0 for none; NaN if flat.

    ``LP = (WB - TMM1 + UPNL1 + cum - side x size x EP) / (size x MMR - side x size)`` with the
    rate and cum of the tier that holds the notional *at the liquidation price*. The margin surplus
    is strictly monotone in the price (rates < 1), so its root is unique: the tier is the first
    whose cap, as a price, is already past the root; MM is continuous at the caps (the cum rule), so
    a root on a cap gives the same price from either side. A result <= 0 becomes 0.0: a long that
    cannot be liquidated at any positive price, or a short that is already liquidatable.
    """
    if position == 0.0:
        return math.nan
    size = abs(position)
    if position > 0:
        side = 1.0
    else:
        side = -1.0
    equity = wallet - other_mm + other_upnl
    n = tiers.shape[0]
    k = n - 1
    for j in range(n - 1):
        # The surplus at the price where the notional reaches this tier's cap, with this tier's
        # MM there (exactly cap x rate - cum, free of the rounding of size x (cap / size)).
        cap = tiers[j, TIER_CAP]
        mm_at_cap = cap * tiers[j, TIER_RATE] - tiers[j, TIER_CUM]
        surplus = equity + position * (cap / size - entry_price) - mm_at_cap
        if side * surplus >= 0.0:
            k = j
            break
    rate = tiers[k, TIER_RATE]
    cum = tiers[k, TIER_CUM]
    price = (equity + cum - side * size * entry_price) / (size * rate - side * size)
    return max(price, 0.0)


@_jit
def funding_payment_nb(position, mark_price, rate):
    """Funding the holder pays at a funding time: ``position x mark_price x rate``.

    Positive: paid (a long at a positive rate); negative: received (a short at a positive rate,
    or a long at a negative rate). Binance: funding amount = notional at the mark price x rate.
    """
    return position * mark_price * rate


@_jit
def trade_fee_nb(size, price, fee_rate):
    """Fee of a fill: ``|size| x price x fee_rate`` (taker, maker or liquidation fee rate)."""
    return abs(size) * price * fee_rate


@_jit
def liquidation_fill_nb(position, liq_price, open_, high, low):
    """Return ``(status, price)``: whether the bar liquidates the position, and the fill price.

    A long is liquidated when the bar's low reaches ``liq_price``, a short when its high does
    (``LIQ_HIT``): the fill is at the liquidation price. A bar that opens beyond it is
    ``LIQ_GAP`` and fills at the open, the first price the bar offers: the account was already
    worth less there than at the liquidation price, so closing at ``liq_price`` would hand back
    margin it never had (docs/perpetuals.md). A ``liq_price`` of 0.0 is never reached by a long's
    positive low (it cannot be liquidated); for a short it means under maintenance at any price
    (bankrupt already), a gap at the open like any other.
    """
    if position > 0:
        if open_ <= liq_price:
            return LIQ_GAP, open_
        if low <= liq_price:
            return LIQ_HIT, liq_price
    elif position < 0:
        if open_ >= liq_price:
            return LIQ_GAP, open_
        if high >= liq_price:
            return LIQ_HIT, liq_price
    return LIQ_NONE, math.nan


@_jit
def limit_fill_nb(is_buy, limit_price, open_, high, low):
    """Return ``(status, price)`` of a resting limit order in one bar; the price is the limit.

    A buy fills when the low reaches the limit, a sell when the high does (``LIMIT_HIT``); a bar
    that opens through the limit is ``LIMIT_GAP`` and still fills at the limit: a resting order
    trades at its own price (no price improvement, unlike backtesting.py's fill at the open).
    """
    if is_buy:
        if open_ <= limit_price:
            return LIMIT_GAP, limit_price
        if low <= limit_price:
            return LIMIT_HIT, limit_price
    else:
        if open_ >= limit_price:
            return LIMIT_GAP, limit_price
        if high >= limit_price:
            return LIMIT_HIT, limit_price
    return LIMIT_NONE, math.nan


@_jit
def isolated_bar_nb(
    tiers, position, entry_price, margin, open_, high, low, funding_rate, funding_mark, liq_fee
):
    """One bar of an isolated position: funding at the open, then the liquidation check.

    Return ``(status, margin, liq_price, funding, fee)``: the liquidation status, the isolated
    margin after the bar (what a liquidation hands back to the wallet, >= 0), the liquidation
    price the check used (after funding), the funding paid (+) or received (-), and the
    liquidation fee. Funding is settled first because the bar is labelled by its open and a
    funding time is a bar's open (``celeris.data.align_funding``); it moves the isolated margin
    and so the liquidation price. A ``LIQ_HIT`` closes at the liquidation price, where the
    margin balance equals the maintenance margin; a ``LIQ_GAP`` closes at the open, where the
    balance ``margin + position x (open - entry_price)`` is already below it, possibly below 0.
    The fee (``liq_fee`` x notional at the fill) is capped at the balance left there, and a
    negative balance comes back as 0 (the insurance fund covers the loss beyond bankruptcy),
    since an isolated position never loses more than its margin.
    """
    funding = 0.0
    if funding_rate != 0.0:
        funding = funding_payment_nb(position, funding_mark, funding_rate)
    margin = margin - funding
    liq_price = liquidation_price_nb(tiers, position, entry_price, margin, 0.0, 0.0)
    status, price = liquidation_fill_nb(position, liq_price, open_, high, low)
    if status == LIQ_NONE:
        return status, margin, liq_price, funding, 0.0
    left = margin + position * (price - entry_price)
    fee = min(trade_fee_nb(position, price, liq_fee), max(left, 0.0))
    return status, max(left - fee, 0.0), liq_price, funding, fee


@_jit
def position_fill_nb(
    wallet,
    free,
    position,
    entry,
    margin,
    size,
    price,
    fee_rate,
    fixed_fee,
    leverage,
    gran,
    min_size,
    held_upnl,
):
    """Fill an order of signed ``size`` units on a perpetual position, one-way mode.

    ``size`` may be +/-inf: as much as the free margin allows. ``price`` is the fill price
    (slippage applied by the caller), ``free`` the account's free margin before the order and
    ``held_upnl`` the part of it that is this position's unrealised PnL (0 for isolated margin).
    The part of the order against the position reduces it first: it realises
    ``reduced x (price - entry)`` (signed by the position) and releases its share of the margin;
    the rest opens or adds at ``price`` and needs ``size x price / leverage`` of margin plus the
    fee, capped by the free margin (a partial fill, as for a spot buy short of cash). The fee
    ``|filled| x price x fee_rate + fixed_fee`` is paid from the wallet. Entry price: the
    size-weighted average of what is held.

    Return ``(filled_size, wallet, position, entry, margin, fee)``; ``filled_size`` 0 means
    nothing filled (state unchanged).
    """
    want = abs(size)
    reduced = 0.0
    if position != 0 and (position > 0) != (size > 0):
        reduced = min(want, abs(position))
    opened = want - reduced
    side = 1.0 if position > 0 else -1.0
    realized = 0.0
    released = 0.0
    if reduced > 0:
        realized = reduced * (price - entry) * side
        released = margin * reduced / abs(position)
    if opened > 0:
        avail = free + released + realized - held_upnl * reduced / max(abs(position), 1e-300)
        avail -= reduced * price * fee_rate + fixed_fee
        per_unit = price * (1.0 / leverage + fee_rate)
        most = avail / per_unit if avail > 0 else 0.0
        if opened > most:
            opened = most
        if not math.isnan(gran):
            opened = opened // gran * gran
        if opened < min_size:
            opened = 0.0
    filled = reduced + opened
    if filled == 0:
        return 0.0, wallet, position, entry, margin, 0.0
    fee = filled * price * fee_rate + fixed_fee
    wallet = wallet + realized - fee
    left = abs(position) - reduced
    if left <= min_size * 1e-3:
        left = 0.0
    margin = margin - released
    if opened > 0:
        if left == 0:
            entry = price
            margin = 0.0
        else:
            entry = (left * entry + opened * price) / (left + opened)
        margin += opened * price / leverage
        left += opened
        side = 1.0 if size > 0 else -1.0
    elif left == 0:
        entry = 0.0
        margin = 0.0
    return filled, wallet, side * left, entry, margin, fee


# ---------------------------------------------------------------------------------------------
# Validated Python API
# ---------------------------------------------------------------------------------------------


_OUR_KEYS = ("notional_cap", "rate", "cum")
_BINANCE_KEYS = ("notionalCap", "maintMarginRatio", "cum")
_FLOOR_KEYS = ("notional_floor", "notionalFloor")


class Fill(NamedTuple):
    """Outcome of a bar for a liquidation check or a limit order: a status code and a price."""

    status: int
    price: float


class BarOutcome(NamedTuple):
    """One bar of an isolated position (:func:`isolated_bar`)."""

    status: int  #: LIQ_NONE, LIQ_HIT or LIQ_GAP
    margin: float  #: isolated margin after the bar (handed back to the wallet on liquidation)
    liquidation_price: float  #: the price the check used, after funding
    funding: float  #: paid (+) or received (-) at the bar's open
    fee: float  #: liquidation fee (0 when not liquidated)


def maintenance_tiers(table: Any, *, tolerance: float = 1e-9) -> np.ndarray:
    """Return a validated maintenance tier table: a read-only ``n_tiers x 3`` float64 array.

    Columns are ``TIER_CAP`` (notional cap; tier ``k`` covers notionals in
    ``(cap[k-1], cap[k]]``, the first from 0, and the last may be ``inf``), ``TIER_RATE``
    (maintenance margin rate) and ``TIER_CUM`` (maintenance amount), so that
    ``MM = notional x rate - cum`` (the form of Binance USDⓈ-M's leverage and margin tables).

    Parameters
    ----------
    table
        A flat rate (one tier, no cap); an array or list of rows ``(cap, rate, cum)`` or
        ``(cap, rate)`` (cum then derived by continuity); mappings with ``notional_cap``, ``rate``
        and optionally ``cum``, or Binance's ``leverageBracket`` fields ``notionalCap``,
        ``maintMarginRatio``, ``cum`` (an optional ``notionalFloor`` must equal the previous
        cap); or a DataFrame with either set of columns.
    tolerance
        Relative tolerance of the continuity check on a given cum (published cums are rounded).

    Returns
    -------
    numpy.ndarray
        ``[n_tiers, 3]`` float64, not writeable: what the ``_nb`` kernels take as ``tiers``.

    Raises
    ------
    ConfigError
        No tier; a cap not > 0 or not increasing; a rate outside ``[0, 1)``; a first cum that is
        not 0; a cum that breaks continuity ``cum[k] = cum[k-1] + cap[k-1] x (rate[k] - rate[k-1])``
        (the message names the tier and the expected value); a floor that is not the previous cap.
    CelerisTypeError
        A table of the wrong kind, or a value that is not a number.

    Examples
    --------
    >>> maintenance_tiers([(50_000, 0.004), (250_000, 0.005)])[:, TIER_CUM].tolist()
    [0.0, 50.0]
    """
    tol = check_real("tolerance", tolerance, minimum=0)
    if isinstance(table, numbers.Real) and not isinstance(table, bool | np.bool_):
        rate = check_real("maintenance_margin", table, minimum=0, maximum=1, open_high=True)
        out = np.array([[math.inf, rate, 0.0]])
    else:
        rows = _rows_of(table)
        if not rows:
            raise ConfigError("maintenance tiers: the table has no tier")
        out = np.empty((len(rows), N_TIER_FIELDS))
        for k, (values, floor) in enumerate(rows):
            _fill_tier(out, k, values, floor, tol)
    out.flags.writeable = False
    return out


def _rows_of(table: Any) -> list[tuple[list[Any], Any]]:
    """``(values, floor)`` per tier: ``values`` is ``[cap, rate]`` or ``[cap, rate, cum]``."""
    import pandas as pd  # the kernels above need no pandas; only a frame argument does

    if isinstance(table, pd.DataFrame):
        table = table.to_dict("records")
    if isinstance(table, np.ndarray):
        if table.ndim != 2 or table.shape[1] not in (2, 3):
            raise ConfigError(
                "maintenance tiers: an array must be n_tiers x 3 (cap, rate, cum) or "
                f"n_tiers x 2 (cap, rate), got shape {table.shape}"
            )
        return [(list(row), None) for row in table.tolist()]
    if not isinstance(table, Sequence) or isinstance(table, str | bytes):
        raise CelerisTypeError(
            "maintenance tiers must be a rate, an n_tiers x 3 array, a list of rows or "
            f"mappings, or a DataFrame, got {type(table).__name__}"
        )
    return [_row_of(k, row) for k, row in enumerate(table)]


def _row_of(k: int, row: Any) -> tuple[list[Any], Any]:
    if isinstance(row, Mapping):
        floor = next((row[key] for key in _FLOOR_KEYS if key in row), None)
        for keys in (_OUR_KEYS, _BINANCE_KEYS):
            if keys[0] in row and keys[1] in row:
                values = [row[keys[0]], row[keys[1]]]
                if keys[2] in row:
                    values.append(row[keys[2]])
                return values, floor
        raise ConfigError(
            f"maintenance tier {k}: a mapping needs {_OUR_KEYS[:2]} (and optionally 'cum') or "
            f"Binance's {_BINANCE_KEYS[:2]}, got keys {sorted(map(str, row))}"
        )
    if isinstance(row, Sequence) and not isinstance(row, str | bytes) and len(row) in (2, 3):
        return list(row), None
    raise ConfigError(f"maintenance tier {k}: expected (cap, rate[, cum]), got {row!r}")


def _fill_tier(out: np.ndarray, k: int, values: list[Any], floor: Any, tol: float) -> None:
    what = f"maintenance tier {k}"
    raw_cap = values[0]
    if isinstance(raw_cap, float | np.floating) and raw_cap == math.inf:
        cap = math.inf  # no cap: the last tier runs on
    else:
        cap = check_real(f"{what} notional cap", raw_cap, minimum=0, open_low=True)
    rate = check_real(f"{what} rate", values[1], minimum=0, maximum=1, open_high=True)
    previous_cap = float(out[k - 1, TIER_CAP]) if k else 0.0
    if k and math.isinf(previous_cap):
        raise ConfigError(f"{what}: follows a tier with no cap (inf); only the last may have none")
    if k and not cap > previous_cap:
        raise ConfigError(f"{what}: notional caps must increase, got {cap} after {previous_cap}")
    if floor is not None:
        floor = check_real(f"{what} notional floor", floor, minimum=0)
        if floor != previous_cap:
            raise ConfigError(
                f"{what}: notional floor {floor} is not the previous cap {previous_cap}"
            )
    expected = 0.0
    if k:
        expected = float(out[k - 1, TIER_CUM]) + previous_cap * (
            rate - float(out[k - 1, TIER_RATE])
        )
    cum = expected
    if len(values) == 3:
        cum = check_real(f"{what} cum", values[2])
        if abs(cum - expected) > tol * max(1.0, abs(expected)):
            rule = (
                "the first tier's cum must be 0 (no maintenance margin at notional 0)"
                if k == 0
                else f"continuity cum[{k}] = cum[{k - 1}] + cap[{k - 1}] x (rate[{k}] - rate[{k - 1}])"
            )
            raise ConfigError(f"{what}: cum {cum} breaks {rule}; expected {expected}")
    out[k] = (cap, rate, cum)


def _price(what: str, value: Any) -> float:
    return check_real(what, value, minimum=0, open_low=True)


def _position(value: Any) -> float:
    size = check_real("size", value)
    if size == 0.0:
        raise ConfigError(
            "size must be non-zero: a signed position, positive for a long and negative for a "
            "short, got 0.0"
        )
    return size


def _funding_rate(what: str, value: Any) -> float:
    # The bound the funding data is validated with (celeris.data.funding_schema).
    return check_real(what, value, minimum=-MAX_ABS_RATE, maximum=MAX_ABS_RATE)


def _bar(open_: Any, high: Any, low: Any) -> tuple[float, float, float]:
    o, h, lo = _price("open", open_), _price("high", high), _price("low", low)
    if not lo <= o <= h:
        raise DataError(f"bar: need low <= open <= high, got low={lo}, open={o}, high={h}")
    return o, h, lo


def initial_margin(size: float, price: float, leverage: float) -> float:
    """Return the initial margin of a position: ``|size| x price / leverage``.

    Raises
    ------
    ConfigError
        ``leverage < 1``, a price not > 0, or a value that is not finite.

    Examples
    --------
    >>> initial_margin(-2.0, 30_000.0, 20)
    3000.0
    """
    return float(
        initial_margin_nb(
            check_real("size", size),
            _price("price", price),
            check_real("leverage", leverage, minimum=1),
        )
    )


def maintenance_margin(size: float, price: float, tiers: Any) -> float:
    """Return the maintenance margin of ``size`` (signed) at ``price`` under ``tiers``.

    ``tiers`` is anything :func:`maintenance_tiers` takes, a flat rate included.

    Examples
    --------
    >>> maintenance_margin(1.0, 30_000.0, 0.004)
    120.0
    """
    notional = abs(check_real("size", size)) * _price("price", price)
    return float(maintenance_margin_nb(maintenance_tiers(tiers), notional))


def liquidation_price_isolated(
    size: float,
    entry_price: float,
    tiers: Any,
    *,
    leverage: float | None = None,
    margin: float | None = None,
) -> float:
    """Return the liquidation price of an isolated one-way position (0.0: none).

    Parameters
    ----------
    size
        Signed position: positive long, negative short.
    entry_price
        Average entry price.
    tiers
        Maintenance tiers (anything :func:`maintenance_tiers` takes).
    leverage, margin
        Exactly one: the isolated margin (wallet balance of the position), or the leverage it
        was opened with (margin = initial margin at the entry price).

    Raises
    ------
    ConfigError
        ``size`` 0, ``leverage < 1``, a negative margin, both or neither of leverage/margin.

    Examples
    --------
    >>> liquidation_price_isolated(1.0, 10_000.0, 0.005, leverage=50)
    9849.24623115578
    """
    position = _position(size)
    entry = _price("entry_price", entry_price)
    if (leverage is None) == (margin is None):
        raise ConfigError("liquidation_price_isolated: give exactly one of leverage= or margin=")
    if margin is None:
        wallet = initial_margin(position, entry, check_real("leverage", leverage, minimum=1))
    else:
        wallet = check_real("margin", margin, minimum=0)
    return float(liquidation_price_nb(maintenance_tiers(tiers), position, entry, wallet, 0.0, 0.0))


def liquidation_price_cross(
    size: float,
    entry_price: float,
    tiers: Any,
    *,
    wallet: float,
    other_maintenance: float = 0.0,
    other_unrealised_pnl: float = 0.0,
) -> float:
    """Return the liquidation price of a cross-margin one-way position (0.0: none).

    Binance's cross formula: ``wallet`` is the account's cross wallet balance (WB),
    ``other_maintenance`` the maintenance margin of every other cross position (TMM1) and
    ``other_unrealised_pnl`` their unrealised PnL (UPNL1), both at their current mark prices and
    held fixed. With one position (others 0) it is the isolated price with the whole wallet.

    Raises
    ------
    ConfigError
        ``size`` 0, a negative ``other_maintenance``, a value that is not finite.
    """
    position = _position(size)
    entry = _price("entry_price", entry_price)
    balance = check_real("wallet", wallet)
    other_mm = check_real("other_maintenance", other_maintenance, minimum=0)
    other_upnl = check_real("other_unrealised_pnl", other_unrealised_pnl)
    table = maintenance_tiers(tiers)
    return float(liquidation_price_nb(table, position, entry, balance, other_mm, other_upnl))


def funding_payment(size: float, mark_price: float, rate: float) -> float:
    """Return the funding a position pays (+) or receives (-) at a funding time.

    ``size x mark_price x rate``: a long pays ``notional x rate`` at a positive rate, a short
    receives it; a negative rate reverses both.

    Examples
    --------
    >>> funding_payment(-2.0, 30_000.0, 0.0001)
    -6.0
    """
    return float(
        funding_payment_nb(
            check_real("size", size), _price("mark_price", mark_price), _funding_rate("rate", rate)
        )
    )


def liquidation_fill(
    size: float, liquidation_price: float, open: float, high: float, low: float
) -> Fill:
    """Return whether a bar liquidates the position and at which price (:func:`liquidation_fill_nb`)."""
    position = _position(size)
    liq = check_real("liquidation_price", liquidation_price, minimum=0)
    o, h, lo = _bar(open, high, low)
    status, price = liquidation_fill_nb(position, liq, o, h, lo)
    return Fill(int(status), float(price))


def limit_fill(side: str, limit_price: float, open: float, high: float, low: float) -> Fill:
    """Return whether a resting limit order fills in a bar and at which price (the limit).

    ``side`` is ``"buy"`` or ``"sell"``; see :func:`limit_fill_nb` for the rule. The fill pays the
    maker fee (``trade_fee_nb(size, price, maker_fee)``).
    """
    is_buy = check_choice("side", side, ("buy", "sell")) == "buy"
    o, h, lo = _bar(open, high, low)
    status, price = limit_fill_nb(is_buy, _price("limit_price", limit_price), o, h, lo)
    return Fill(int(status), float(price))


def isolated_bar(
    size: float,
    entry_price: float,
    margin: float,
    tiers: Any,
    *,
    open: float,
    high: float,
    low: float,
    funding_rate: float = 0.0,
    funding_mark: float | None = None,
    liquidation_fee: float = 0.0,
) -> BarOutcome:
    """Run one bar of an isolated position: funding at the open, then the liquidation check.

    ``funding_mark`` (default: the bar's open) is the mark price the funding is charged at.
    See :func:`isolated_bar_nb` for the order of events and the fee cap.
    """
    position = _position(size)
    entry = _price("entry_price", entry_price)
    wallet = check_real("margin", margin, minimum=0)
    o, h, lo = _bar(open, high, low)
    mark = o if funding_mark is None else _price("funding_mark", funding_mark)
    rate = _funding_rate("funding_rate", funding_rate)
    fee_rate = check_real("liquidation_fee", liquidation_fee, minimum=0, maximum=1, open_high=True)
    table = maintenance_tiers(tiers)
    out = isolated_bar_nb(table, position, entry, wallet, o, h, lo, rate, mark, fee_rate)
    return BarOutcome(int(out[0]), *(float(x) for x in out[1:]))
