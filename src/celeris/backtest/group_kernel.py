"""Many columns on one account: the grouped, cash-sharing simulation, one source for CPU and CUDA.

A *group* is a set of columns (assets, or one parameter set's assets) that trade out of one cash
balance. Each bar is processed as vectorbt's ``simulate_from_signals_nb`` and
``simulate_from_orders_nb`` process a segment with ``cash_sharing=True``:

1. every column's order is decided first (signals and stops, or the size array), from the
   positions as they stood before the bar;
2. the group value is taken at the bar's order prices (cash + sum of position x price), and the
   call sequence is fixed: column order (``default``), reversed, or sorted by the approximate
   value of each order so that sells release cash before buys spend it (``auto``);
3. the orders are executed one after the other against the shared cash;
4. the group is marked to market at the close.

The per-order arithmetic (``buy``/``sell``/``execute_order``, stops, signal resolution, metric
accumulation) is :mod:`celeris.backtest.kernel`'s, imported, not rewritten. As there, this file is
executed a second time by :mod:`celeris.backtest.cuda` with ``__celeris_jit__`` bound to a CUDA
device decorator (and ``__celeris_kernel__`` to the CUDA build of ``kernel.py``): one GPU thread
runs :func:`simulate_group` for one group.

Per-column state lives in a scratch array (``state[col, S_*]``) rather than in scalars, because
a group has a run-time number of columns; a bar where no column has a signal, an active stop, an
order or a delisting only marks the book to market (the quiet-bar loop).

Assets listed late or delisted early: a column is tradable from its first to its last listed bar
(``C_FIRST``/``C_LAST``). On its last listed bar, when that is not the last bar of the data, the
column's order is replaced by the delisting settlement: the whole position is closed at the
bar's close with no fee and no slippage (order kind ``KIND_DELIST``).
"""

# Explicit branches read like the vectorbt code they mirror and compile alike for CPU and CUDA.
# ruff: noqa: SIM108, SIM109
from __future__ import annotations

import math

from numba.extending import register_jitable

_jit = globals().get("__celeris_jit__", register_jitable)
CUDA_BUILD = "__celeris_jit__" in globals()
if CUDA_BUILD:
    K = globals()["__celeris_kernel__"]
    P = globals()["__celeris_perp__"]
else:
    from celeris.backtest import kernel as K
    from celeris.backtest import perp as P

# The shared order arithmetic, bound to this build's variant (CPU jitable or CUDA device).
is_close = K.is_close
is_less = K.is_less
sign = K.sign
execute_order = K.execute_order
signals_to_size = K.signals_to_size
stop_hit_price = K.stop_hit_price
mark_bar = K.mark_bar
safe_ratio = K.safe_ratio
position_fill = P.position_fill_nb
funding_payment = P.funding_payment_nb
liquidation_price = P.liquidation_price_nb
liquidation_fill = P.liquidation_fill_nb
maintenance_margin = P.maintenance_margin_nb
trade_fee = P.trade_fee_nb
write_metrics = K.write_metrics

LONG_ONLY = K.LONG_ONLY
SHORT_ONLY = K.SHORT_ONLY
BOTH = K.BOTH
AMOUNT = K.AMOUNT
VALUE = K.VALUE
PERCENT = K.PERCENT
# vectorbt's target size types (``from_orders`` only).
TARGET_AMOUNT = 3
TARGET_VALUE = 4
TARGET_PERCENT = 5
FILLED = K.FILLED
IGNORED = K.IGNORED
REJECTED = K.REJECTED
BUY = K.BUY
SELL = K.SELL

# What decides the orders (``mode``).
MODE_SIGNALS = 0
MODE_ORDERS = 1
# Call sequence of a group's columns within a bar (``G_CALL_SEQ``).
CALL_DEFAULT = 0
CALL_REVERSED = 1
CALL_AUTO = 2
# Order kinds (``orders[k, O_STOP]``): a signal or sized order, a stop exit, a delisting.
KIND_ORDER = 0
KIND_STOP = 1
KIND_DELIST = 2
KIND_LIQUIDATION = 3
KIND_LIMIT = 4  # a resting limit order filled (at its price, paying the maker fee)

# Per-column parameters ``col_params[col, C_*]``: kernel.P_* (init cash unused) and these.
C_ASSET = K.N_PARAMS  # column of the price arrays this column trades
C_FIRST = K.N_PARAMS + 1  # first listed bar
C_LAST = K.N_PARAMS + 2  # last listed bar
C_PERP = K.N_PARAMS + 3  # 1: a perpetual future (margin, funding, liquidation); 0: spot
C_LEVERAGE = K.N_PARAMS + 4
C_CROSS = K.N_PARAMS + 5  # 1: cross margin (the group's wallet); 0: isolated
C_LIQ_FEE = K.N_PARAMS + 6  # liquidation fee rate (of the notional at the fill)
C_TIERS = K.N_PARAMS + 7  # index of the column's maintenance tier table in perp[2]
C_LIMIT = K.N_PARAMS + 8  # 1: signals rest as limit orders at the bar's limit price
C_MAKER_FEE = K.N_PARAMS + 9  # fee rate of a filled limit order
C_EXPIRY = K.N_PARAMS + 10  # bars a limit order rests (inf: until filled or replaced)
N_COL_PARAMS = K.N_PARAMS + 11

# Per-group parameters ``group_params[g, G_*]``.
G_INIT_CASH = 0
G_CALL_SEQ = 1
G_THRESHOLD = 2  # rebalance only when some target-percent weight drifted this far (0: always)
G_PERP = 3  # 1: the group trades perpetual futures (all its columns)
N_GROUP_PARAMS = 4

# Per-column state ``state[col, S_*]`` (scratch, n_cols rows).
S_POS = 0
S_DEBT = 1
S_SL = 2
S_TSL = 3
S_TP = 4
S_SL_REF = 5
S_TSL_REF = 6
S_TP_REF = 7
S_IN_TRADE = 8
S_TRADE_DIR = 9
S_ENTRY_IDX = 10
S_ENTRY_SIZE = 11
S_ENTRY_GROSS = 12
S_ENTRY_FEES = 13
S_POSITION_ID = 14
# This bar's order, decided in step 1, executed in step 3.
S_O_SIZE = 15
S_O_TYPE = 16
S_O_DIR = 17
S_O_PRICE = 18
S_O_SLIP = 19
S_O_KIND = 20
S_O_VALUE = 21  # approximate order value, the sort key of the "auto" call sequence
S_VAL_PRICE = 22  # valuation price of this bar's orders
# Perpetual positions: average entry price (0 for spot, so that every column is marked as
# position x (price - entry) on top of the cash), margin held, funding paid (+) so far.
S_ENTRY_PRICE = 23
S_MARGIN = 24
S_FUNDING = 25
# A resting limit order: size, size type, direction, price, first and last bar it may fill.
S_L_SIZE = 26
S_L_TYPE = 27
S_L_DIR = 28
S_L_PRICE = 29
S_L_FROM = 30
S_L_UNTIL = 31
S_O_FEE = 32  # fee rate of this bar's order (taker, maker, or 0 for a delisting)
S_STOP_PRICE = 33  # this bar's stop fill price (NaN: none fires), checked once per bar
N_STATE = 34

# Integer scratch ``iw[col, IW_*]`` (n_cols rows; a group uses its own rows c0:c1).
IW_SEQ = 0  # the bar's call sequence
IW_ACTIVE = 1  # the bar's active columns
IW_FLAGS = 2  # what keeps a column busy without a signal: FLAG_STOP | FLAG_LIMIT
N_IW = 3
FLAG_STOP = 1
FLAG_LIMIT = 2

# Trade accumulators of a group ``acc[g, A_*]`` (scratch, n_groups rows).
A_CLOSED = 0
A_WINS = 1
A_LOSSES = 2
A_SUM_WIN = 3
A_SUM_LOSS = 4
A_SUM_WIN_RET = 5
A_SUM_LOSS_RET = 6
A_BEST = 7
A_WORST = 8
A_FUNDING_PAID = 9
A_FUNDING_RECEIVED = 10
A_LIQUIDATIONS = 11
A_MARGIN_USAGE_SUM = 12  # margin held / value, summed over bars (mean: / n_bars)
A_MARGIN_USAGE_MAX = 13
A_GROSS_SUM = 14  # gross exposure (sum of |position x close|) / value, summed over bars
A_GROSS_MAX = 15
A_NET_SUM = 16  # net exposure (sum of position x close) / value, summed over bars
A_TRADED = 17  # value traded (|size| x fill price), summed over fills
A_VALUE_SUM = 18  # the account's value, summed over bars (mean: / n_bars)
N_ACC = 19


@_jit
def approx_order_value(
    size, size_type, direction, flip, cash, position, free_cash, val_price, value
):
    """vectorbt's ``approx_order_value_nb``: the sort key of ``call_seq="auto"``.

    ``flip``: sizes of a short-only order count short (``from_orders``); ``from_signals``
    passes sizes already signed as buys/sells.
    """
    if flip and direction == SHORT_ONLY:
        size = -size
    asset_value = position * val_price
    if size_type == AMOUNT:
        return size * val_price
    if size_type == VALUE:
        return size
    if size_type == PERCENT:
        if size >= 0:
            return size * cash
        if direction == LONG_ONLY:
            return size * asset_value
        return size * (2.0 * max(asset_value, 0.0) + max(free_cash, 0.0))
    if size_type == TARGET_AMOUNT:
        return size * val_price - asset_value
    if size_type == TARGET_VALUE:
        return size - asset_value
    if size_type == TARGET_PERCENT:
        return size * value - asset_value
    return math.nan


@_jit
def resolve_target(size, size_type, direction, position, val_price, value):
    """Turn vectorbt's size types into one ``execute_order`` takes (vectorbt's order of steps).

    Return ``(status, size, size_type)``: ``FILLED`` means "go on" with an amount, value or
    percent order signed as a buy (+) or sell (-); ``IGNORED``/``REJECTED`` end the order.
    """
    if direction == SHORT_ONLY:
        size = -size  # a positive short-only size means "more short"
    if is_close(value, 0.0):
        value = 0.0
    if size_type == TARGET_PERCENT:
        if math.isnan(value):
            return IGNORED, 0.0, AMOUNT
        if value <= 0:
            return REJECTED, 0.0, AMOUNT
        size = size * value
        size_type = TARGET_VALUE
    if size_type == VALUE or size_type == TARGET_VALUE:
        if math.isnan(val_price):
            return IGNORED, 0.0, AMOUNT
        size = size / val_price
        if size_type == VALUE:
            size_type = AMOUNT
        else:
            size_type = TARGET_AMOUNT
    if size_type == TARGET_AMOUNT:
        size = size - position
        size_type = AMOUNT
    return FILLED, size, size_type


@_jit
def stop_fill_price(i, c, st, prices, col_params):
    """Price at which an active stop of column ``c`` fires on bar ``i`` (NaN: none fires).

    Same order as the single-column kernel: fixed and trailing stop-loss (the tighter fires),
    then take-profit; the trailing reference then follows the bar's extreme.
    """
    close, open_, high, low, _ = prices
    a = int(col_params[c, C_ASSET])
    position = st[c, S_POS]
    bar_close = close[i, a]
    bar_open = open_[i, a]
    bar_high = high[i, a]
    bar_low = low[i, a]
    if math.isnan(bar_open):
        bar_open = bar_close
    if math.isnan(bar_low):
        bar_low = min(bar_open, bar_close)
    if math.isnan(bar_high):
        bar_high = max(bar_open, bar_close)
    stop_price = math.nan
    if not math.isnan(st[c, S_SL]):
        stop_price = stop_hit_price(
            position, st[c, S_SL_REF], st[c, S_SL], bar_open, bar_low, bar_high, True
        )
    if not math.isnan(st[c, S_TSL]):
        tsl_price = stop_hit_price(
            position, st[c, S_TSL_REF], st[c, S_TSL], bar_open, bar_low, bar_high, True
        )
        if not math.isnan(tsl_price):
            if math.isnan(stop_price):
                stop_price = tsl_price
            elif position > 0:
                stop_price = max(stop_price, tsl_price)
            else:
                stop_price = min(stop_price, tsl_price)
    if math.isnan(stop_price) and not math.isnan(st[c, S_TP]):
        stop_price = stop_hit_price(
            position, st[c, S_TP_REF], st[c, S_TP], bar_open, bar_low, bar_high, False
        )
    if not math.isnan(st[c, S_TSL]):
        if position > 0 and bar_high > st[c, S_TSL_REF]:
            st[c, S_TSL_REF] = bar_high
        elif position < 0 and bar_low < st[c, S_TSL_REF]:
            st[c, S_TSL_REF] = bar_low
    return stop_price


@_jit
def read_signals(i, c, signals, col_params, n):
    """Column ``c``'s signals on bar ``i`` as (long entry, long exit, short entry, short exit).

    The single-column kernel's resolution: ``direction`` maps entries/exits to sides, and
    conflicting signals on one bar cancel (vectorbt's default conflict modes).
    """
    entries, exits, short_entries, short_exits = signals
    r = i if entries.shape[0] == n else 0
    entry = entries[r, K.col_of(entries, c)]
    r = i if exits.shape[0] == n else 0
    exit_ = exits[r, K.col_of(exits, c)]
    r = i if short_entries.shape[0] == n else 0
    s_entry = short_entries[r, K.col_of(short_entries, c)]
    r = i if short_exits.shape[0] == n else 0
    s_exit = short_exits[r, K.col_of(short_exits, c)]
    sig_direction = int(col_params[c, K.P_DIRECTION])
    long_entry = False
    long_exit = False
    if sig_direction == LONG_ONLY:
        long_entry = entry
        long_exit = exit_
        short_entry = s_entry
        short_exit = s_exit
    elif sig_direction == SHORT_ONLY:
        short_entry = entry or s_entry
        short_exit = exit_ or s_exit
    else:
        long_entry = entry
        short_entry = exit_ or s_entry
        short_exit = s_exit
    if long_entry and long_exit:
        long_entry = False
        long_exit = False
    if short_entry and short_exit:
        short_entry = False
        short_exit = False
    if long_entry and short_entry:
        long_entry = False
        short_entry = False
    return long_entry, long_exit, short_entry, short_exit


@_jit
def rest_or_fill_limit(i, c, st, prices, limits, col_params, n, order_size, order_type, order_dir):
    """Limit orders of column ``c``: rest a new one, fill or expire the resting one.

    A signal's order rests as a limit order when the column's ``order_type`` is limit and the
    bar has a limit price (NaN: a market order); it may fill from the next bar (the same bar
    under next-open execution, whose signals were shifted a bar) for ``C_EXPIRY`` bars, at its
    price when the bar trades through it (``perp.limit_fill_nb``), paying the maker fee. A new
    limit order replaces a resting one; any fill of the column cancels it. Return the bar's
    order ``(size, type, direction, price, kind)``; size 0: none.
    """
    if order_size != 0:
        limit = order_size_at(i, c, limits, n)
        if math.isnan(limit):
            return order_size, order_type, order_dir, math.nan, KIND_ORDER
        first = i + 1
        if int(col_params[c, K.P_STOP_REF]) == K.STOP_REF_PRICE:
            first = i
        st[c, S_L_SIZE] = order_size
        st[c, S_L_TYPE] = order_type
        st[c, S_L_DIR] = order_dir
        st[c, S_L_PRICE] = limit
        st[c, S_L_FROM] = first
        st[c, S_L_UNTIL] = first + col_params[c, C_EXPIRY] - 1
    if st[c, S_L_SIZE] == 0 or i < st[c, S_L_FROM]:
        return 0.0, order_type, order_dir, math.nan, KIND_ORDER
    if i > st[c, S_L_UNTIL]:
        st[c, S_L_SIZE] = 0.0
        return 0.0, order_type, order_dir, math.nan, KIND_ORDER
    a = int(col_params[c, C_ASSET])
    size = st[c, S_L_SIZE]
    status, price = P.limit_fill_nb(
        size > 0, st[c, S_L_PRICE], prices[1][i, a], prices[2][i, a], prices[3][i, a]
    )
    if status == P.LIMIT_NONE:
        return 0.0, order_type, order_dir, math.nan, KIND_ORDER
    return size, int(st[c, S_L_TYPE]), int(st[c, S_L_DIR]), price, KIND_LIMIT


@_jit
def decide_signal_order(i, c, st, prices, signals, limits, col_params, n):
    """Step 1 for ``from_signals``: stops first, then this bar's signals (kernel semantics).

    Write the order into ``st[c, S_O_*]`` (size 0: none). ``st[c, S_VAL_PRICE]`` holds the
    bar's order price. With limit orders on, a signal's order rests instead of filling
    (:func:`rest_or_fill_limit`).
    """
    position = st[c, S_POS]
    order_price = st[c, S_VAL_PRICE]
    order_slippage = col_params[c, K.P_SLIPPAGE]
    acc = col_params[c, K.P_ACCUMULATE] != 0
    kind = KIND_ORDER
    stop_price = math.nan
    if has_stop(st, c):
        stop_price = st[c, S_STOP_PRICE]  # checked by collect_active on this bar
    if not math.isnan(stop_price):
        kind = KIND_STOP
        acc = False
        long_entry = False
        long_exit = position > 0
        short_entry = False
        short_exit = position < 0
        stop_exit = int(col_params[c, K.P_STOP_EXIT])
        if stop_exit == K.STOP_LIMIT:
            order_price = stop_price
            order_slippage = 0.0
        elif stop_exit == K.STOP_MARKET:
            order_price = stop_price
        else:
            order_price = prices[0][i, int(col_params[c, C_ASSET])]
    else:
        long_entry, long_exit, short_entry, short_exit = read_signals(i, c, signals, col_params, n)
    order_size = 0.0
    order_type = int(col_params[c, K.P_SIZE_TYPE])
    order_dir = BOTH
    if long_entry or long_exit or short_entry or short_exit:
        order_size, order_type, order_dir = signals_to_size(
            position,
            long_entry,
            long_exit,
            short_entry,
            short_exit,
            col_params[c, K.P_SIZE],
            order_type,
            acc,
            st[c, S_VAL_PRICE],
        )
    if kind == KIND_STOP:
        st[c, S_L_SIZE] = 0.0  # the position a resting order was sized for is gone
    elif col_params[c, C_LIMIT] != 0:
        order_size, order_type, order_dir, limit_price, kind = rest_or_fill_limit(
            i, c, st, prices, limits, col_params, n, order_size, order_type, order_dir
        )
        if kind == KIND_LIMIT:
            order_price = limit_price
            order_slippage = 0.0
            st[c, S_O_FEE] = col_params[c, C_MAKER_FEE]
    st[c, S_O_SIZE] = order_size
    st[c, S_O_TYPE] = order_type
    st[c, S_O_DIR] = order_dir
    st[c, S_O_PRICE] = order_price
    st[c, S_O_SLIP] = order_slippage
    st[c, S_O_KIND] = kind


@_jit
def has_signal(i, c, signals, n):
    """Whether column ``c`` has any signal on bar ``i`` (the quiet-bar test)."""
    entries, exits, short_entries, short_exits = signals
    r = i if entries.shape[0] == n else 0
    if entries[r, K.col_of(entries, c)]:
        return True
    r = i if exits.shape[0] == n else 0
    if exits[r, K.col_of(exits, c)]:
        return True
    r = i if short_entries.shape[0] == n else 0
    if short_entries[r, K.col_of(short_entries, c)]:
        return True
    r = i if short_exits.shape[0] == n else 0
    return short_exits[r, K.col_of(short_exits, c)]


@_jit
def order_size_at(i, c, sizes, n):
    r = i if sizes.shape[0] == n else 0
    return sizes[r, K.col_of(sizes, c)]


@_jit
def has_stop(st, c):
    return st[c, S_POS] != 0 and not (
        math.isnan(st[c, S_SL]) and math.isnan(st[c, S_TSL]) and math.isnan(st[c, S_TP])
    )


@_jit
def refresh_flags(c, st, iw):
    """``iw[c, IW_FLAGS]``: what keeps column ``c`` busy on a bar without a signal (an active
    stop, a resting limit order); recomputed whenever its state changes (after a fill)."""
    flags = 0
    if has_stop(st, c):
        flags += FLAG_STOP
    if st[c, S_L_SIZE] != 0:
        flags += FLAG_LIMIT
    iw[c, IW_FLAGS] = flags


@_jit
def collect_active(i, c0, c1, st, iw, prices, signals, sizes, col_params, mode, n, full_span):
    """List in ``iw[c0:, IW_ACTIVE]`` the columns with something to decide on bar ``i``; return
    how many (0: a quiet bar, only marked to market).

    Active: a listed column with a signal (or a size, for ``from_orders``), a stop that fires
    on this bar (checked here, the price kept in ``S_STOP_PRICE``) or a resting limit order, or
    a held column on its delisting bar. Listed in column order, which
    is the default call sequence. ``full_span``: every column is listed on every bar (the
    listing checks are skipped). This loop runs on every bar of every group: it reads as few
    arrays as it can.
    """
    entries, exits, short_entries, short_exits = signals
    re = i if entries.shape[0] == n else 0
    rx = i if exits.shape[0] == n else 0
    wide_e = entries.shape[1] > 1
    wide_x = exits.shape[1] > 1
    shorts = short_entries.shape[0] == n or short_exits.shape[0] == n
    k = c0
    for c in range(c0, c1):
        if not full_span and (i < col_params[c, C_FIRST] or i > col_params[c, C_LAST]):
            continue
        flags = iw[c, IW_FLAGS]
        busy = flags != 0
        if flags & FLAG_STOP:
            # Checked here, once per bar (it moves a trailing stop's reference): a held column
            # whose stops do not fire and that has no signal or resting order stays quiet.
            st[c, S_STOP_PRICE] = stop_fill_price(i, c, st, prices, col_params)
            busy = (flags & FLAG_LIMIT) != 0 or not math.isnan(st[c, S_STOP_PRICE])
        if not busy:
            if not full_span and i == col_params[c, C_LAST] and i < n - 1:
                busy = st[c, S_POS] != 0
            elif mode == MODE_ORDERS:
                busy = not math.isnan(order_size_at(i, c, sizes, n))
            elif shorts:
                busy = has_signal(i, c, signals, n)
            else:
                busy = entries[re, c if wide_e else 0] or exits[rx, c if wide_x else 0]
        if busy:
            iw[k, IW_ACTIVE] = c
            k += 1
    return k - c0


@_jit
def decide_orders(i, c0, n_active, st, iw, prices, signals, sizes, col_params, mode, n):
    """Step 1 for the bar's active columns: each one's order into ``st[c, S_O_*]``.

    ``sizes`` holds the order sizes of ``from_orders`` or the limit prices of ``from_signals``.
    No order is a size of 0 (signals) or NaN (orders, as vectorbt reads a NaN size).
    ``S_VAL_PRICE`` is the bar's order price (the close on a delisting bar).
    """
    price = prices[4]
    close = prices[0]
    no_order = 0.0 if mode == MODE_SIGNALS else math.nan
    for j in range(n_active):
        c = iw[c0 + j, IW_ACTIVE]
        a = int(col_params[c, C_ASSET])
        st[c, S_O_SIZE] = no_order
        st[c, S_O_KIND] = KIND_ORDER
        st[c, S_O_TYPE] = col_params[c, K.P_SIZE_TYPE]
        st[c, S_O_DIR] = col_params[c, K.P_DIRECTION]
        st[c, S_O_FEE] = col_params[c, K.P_FEES]
        st[c, S_VAL_PRICE] = price[i, a]
        if i == col_params[c, C_LAST] and i < n - 1:
            # Delisting settlement: close at the last close, no fee, no slippage.
            if st[c, S_POS] != 0:
                st[c, S_O_SIZE] = -st[c, S_POS]
                st[c, S_O_TYPE] = AMOUNT
                st[c, S_O_DIR] = BOTH
                st[c, S_O_PRICE] = close[i, a]
                st[c, S_O_SLIP] = 0.0
                st[c, S_O_FEE] = 0.0
                st[c, S_O_KIND] = KIND_DELIST
                st[c, S_VAL_PRICE] = close[i, a]
            continue
        if mode == MODE_SIGNALS:
            decide_signal_order(i, c, st, prices, signals, sizes, col_params, n)
        else:
            st[c, S_O_SIZE] = order_size_at(i, c, sizes, n)
            st[c, S_O_PRICE] = price[i, a]
            st[c, S_O_SLIP] = col_params[c, K.P_SLIPPAGE]


@_jit
def held_val_price(i, c, prices, col_params, n):
    """Valuation price of a held column on bar ``i``: the order price, the close on its
    delisting bar (where it is settled)."""
    a = int(col_params[c, C_ASSET])
    if i == col_params[c, C_LAST] and i < n - 1:
        return prices[0][i, a]
    return prices[4][i, a]


@_jit
def group_value_at(i, c0, c1, st, prices, col_params, cash, n):
    """Cash plus every position at this bar's valuation price (vectorbt's group value).

    A perpetual position adds its unrealised PnL (its entry price is subtracted); a spot
    position's entry price is 0, so it adds its value.
    """
    value = cash
    for c in range(c0, c1):
        if st[c, S_POS] != 0:
            vp = held_val_price(i, c, prices, col_params, n)
            value += st[c, S_POS] * (vp - st[c, S_ENTRY_PRICE])
    return value


@_jit
def drifted(c0, n_active, st, iw, value, threshold):
    """Whether any target-percent order's weight is ``threshold`` or more off its target."""
    for j in range(n_active):
        c = iw[c0 + j, IW_ACTIVE]
        if st[c, S_O_KIND] != KIND_ORDER or int(st[c, S_O_TYPE]) != TARGET_PERCENT:
            continue
        if math.isnan(st[c, S_O_SIZE]):
            continue
        if math.isnan(st[c, S_VAL_PRICE]) or value <= 0:
            return True
        weight = st[c, S_POS] * st[c, S_VAL_PRICE] / value
        target = st[c, S_O_SIZE]
        if int(st[c, S_O_DIR]) == SHORT_ONLY:
            target = -target
        if abs(weight - target) >= threshold:
            return True
    return False


@_jit
def call_sequence(c0, n_active, st, iw, mode, call_mode, cash, free_cash, value):
    """The bar's orders in execution order into ``iw[c0:, IW_SEQ]``; return how many.

    Only columns with an order take part: sorting all of a group's columns (vectorbt) and then
    skipping those without one gives the same order, as the sort is stable. ``auto`` is
    vectorbt's ``insert_argsort_nb`` on the approximate order values: ascending (sells first),
    ties in column order, NaN keys last.
    """
    flip = mode == MODE_ORDERS
    m = 0
    for j in range(n_active):
        c = iw[c0 + j, IW_ACTIVE]
        size = st[c, S_O_SIZE]
        if math.isnan(size) or (size == 0 and (not flip or st[c, S_O_KIND] != KIND_ORDER)):
            continue
        iw[c0 + m, IW_SEQ] = c
        m += 1
    if call_mode == CALL_REVERSED:
        for k in range(m // 2):
            tmp = iw[c0 + k, IW_SEQ]
            iw[c0 + k, IW_SEQ] = iw[c0 + m - 1 - k, IW_SEQ]
            iw[c0 + m - 1 - k, IW_SEQ] = tmp
        return m
    if call_mode != CALL_AUTO or m < 2:
        return m
    for k in range(m):
        c = iw[c0 + k, IW_SEQ]
        st[c, S_O_VALUE] = approx_order_value(
            st[c, S_O_SIZE],
            int(st[c, S_O_TYPE]),
            int(st[c, S_O_DIR]),
            flip and st[c, S_O_KIND] != KIND_DELIST,
            cash,
            st[c, S_POS],
            free_cash,
            st[c, S_VAL_PRICE],
            value,
        )
    for k in range(1, m):
        col = iw[c0 + k, IW_SEQ]
        key = st[col, S_O_VALUE]
        j = k - 1
        while j >= 0:
            other = st[iw[c0 + j, IW_SEQ], S_O_VALUE]
            if not (other > key or math.isnan(other)):
                break
            iw[c0 + j + 1, IW_SEQ] = iw[c0 + j, IW_SEQ]
            j -= 1
        iw[c0 + j + 1, IW_SEQ] = col
    return m


@_jit
def account_fill(st, c, i, side, f_size, f_price, f_fees, trades, t_ptr, keep_trades, acc, g):
    """Exit-trade accounting of one fill of column ``c`` (vectorbt's exit trades, online).

    The column's open trade lives in ``st[c, S_ENTRY_*]``; a closed trade is added to the
    group's accumulators ``acc[g]`` and, with ``keep_trades``, written to ``trades[t_ptr]``.
    Return the next free trade row.
    """
    if st[c, S_IN_TRADE] == 0:
        st[c, S_IN_TRADE] = 1.0
        st[c, S_ENTRY_IDX] = i
        st[c, S_TRADE_DIR] = K.TRADE_LONG if side == BUY else K.TRADE_SHORT
        st[c, S_POSITION_ID] += 1
        st[c, S_ENTRY_SIZE] = 0.0
        st[c, S_ENTRY_GROSS] = 0.0
        st[c, S_ENTRY_FEES] = 0.0
    trade_dir = int(st[c, S_TRADE_DIR])
    if (trade_dir == K.TRADE_LONG and side == BUY) or (trade_dir == K.TRADE_SHORT and side == SELL):
        st[c, S_ENTRY_SIZE] += f_size
        st[c, S_ENTRY_GROSS] += f_size * f_price
        st[c, S_ENTRY_FEES] += f_fees
        return t_ptr
    size_sum = st[c, S_ENTRY_SIZE]
    closes_all = is_close(f_size, size_sum)
    if K.is_close_or_less(f_size, size_sum):
        exit_size = f_size
        if closes_all:
            exit_size = size_sum
        exit_fees = f_fees
        reverse = False
    else:
        exit_size = size_sum
        exit_fees = exit_size / f_size * f_fees
        reverse = True
    entry_price = st[c, S_ENTRY_GROSS] / size_sum
    entry_fees = exit_size / size_sum * st[c, S_ENTRY_FEES]
    entry_val = exit_size * entry_price
    val_diff = K.add(exit_size * f_price, -entry_val)
    if val_diff != 0 and trade_dir == K.TRADE_SHORT:
        val_diff = -val_diff
    pnl = val_diff - entry_fees - exit_fees
    ret = pnl / entry_val
    acc[g, A_CLOSED] += 1
    if pnl > 0:
        acc[g, A_WINS] += 1
        acc[g, A_SUM_WIN] += pnl
        acc[g, A_SUM_WIN_RET] += ret
    elif pnl < 0:
        acc[g, A_LOSSES] += 1
        acc[g, A_SUM_LOSS] += pnl
        acc[g, A_SUM_LOSS_RET] += ret
    if math.isnan(acc[g, A_BEST]) or ret > acc[g, A_BEST]:
        acc[g, A_BEST] = ret
    if math.isnan(acc[g, A_WORST]) or ret < acc[g, A_WORST]:
        acc[g, A_WORST] = ret
    if keep_trades:
        write_trade(trades, t_ptr, c, exit_size, st[c, S_ENTRY_IDX], entry_price, entry_fees, i)
        trades[t_ptr, K.T_EXIT_PRICE] = f_price
        trades[t_ptr, K.T_EXIT_FEES] = exit_fees
        trades[t_ptr, K.T_PNL] = pnl
        trades[t_ptr, K.T_RETURN] = ret
        trades[t_ptr, K.T_DIRECTION] = trade_dir
        trades[t_ptr, K.T_STATUS] = K.TRADE_CLOSED
        trades[t_ptr, K.T_POSITION_ID] = st[c, S_POSITION_ID]
        t_ptr += 1
    if reverse:
        st[c, S_ENTRY_SIZE] = f_size - exit_size
        st[c, S_ENTRY_GROSS] = st[c, S_ENTRY_SIZE] * f_price
        st[c, S_ENTRY_FEES] = f_fees - exit_fees
        st[c, S_ENTRY_IDX] = i
        st[c, S_TRADE_DIR] = K.TRADE_SHORT if trade_dir == K.TRADE_LONG else K.TRADE_LONG
        st[c, S_POSITION_ID] += 1
    elif closes_all:
        st[c, S_IN_TRADE] = 0.0
        st[c, S_ENTRY_IDX] = -1
    else:
        fraction = (size_sum - f_size) / size_sum
        st[c, S_ENTRY_SIZE] *= fraction
        st[c, S_ENTRY_GROSS] *= fraction
        st[c, S_ENTRY_FEES] *= fraction
    return t_ptr


@_jit
def write_trade(trades, t_ptr, c, size, entry_idx, entry_price, entry_fees, exit_idx):
    trades[t_ptr, K.T_COL] = c
    trades[t_ptr, K.T_SIZE] = size
    trades[t_ptr, K.T_ENTRY_IDX] = entry_idx
    trades[t_ptr, K.T_ENTRY_PRICE] = entry_price
    trades[t_ptr, K.T_ENTRY_FEES] = entry_fees
    trades[t_ptr, K.T_EXIT_IDX] = exit_idx


@_jit
def update_stops(c, st, col_params, prev_position, order_price, bar_close):
    """A fill moves the column's stops as the single-column kernel's do."""
    position = st[c, S_POS]
    sl_stop = col_params[c, K.P_SL]
    tsl_stop = col_params[c, K.P_TSL]
    tp_stop = col_params[c, K.P_TP]
    if math.isnan(sl_stop) and math.isnan(tsl_stop) and math.isnan(tp_stop):
        return
    if position == 0:
        st[c, S_SL] = math.nan
        st[c, S_TSL] = math.nan
        st[c, S_TP] = math.nan
        return
    if int(col_params[c, K.P_STOP_REF]) == K.STOP_REF_PRICE:
        new_ref = order_price
    else:
        new_ref = bar_close
    opened = prev_position == 0 or sign(position) != sign(prev_position)
    if opened or (abs(position) > abs(prev_position) and not math.isnan(sl_stop)):
        st[c, S_SL] = sl_stop
        st[c, S_SL_REF] = new_ref
    if opened or (abs(position) > abs(prev_position) and not math.isnan(tsl_stop)):
        st[c, S_TSL] = tsl_stop
        st[c, S_TSL_REF] = new_ref
    if opened or (abs(position) > abs(prev_position) and not math.isnan(tp_stop)):
        st[c, S_TP] = tp_stop
        st[c, S_TP_REF] = new_ref


@_jit
def record_fill(i, g, c, st, side, f_size, f_price, f_fees, kind, out, ptr, acc):
    """Count a fill, write its order record (when kept) and account it to the column's trade."""
    ptr[2] += 1
    ptr[3] += f_fees
    acc[g, A_TRADED] += f_size * f_price
    if out[3].shape[0] > g + 1:
        orders = out[2]
        o = int(ptr[0])
        orders[o, K.O_COL] = c
        orders[o, K.O_IDX] = i
        orders[o, K.O_SIZE] = f_size
        orders[o, K.O_PRICE] = f_price
        orders[o, K.O_FEES] = f_fees
        orders[o, K.O_SIDE] = side
        orders[o, K.O_STOP] = kind
        ptr[0] += 1
    keep_trades = out[5].shape[0] > g + 1
    ptr[1] = account_fill(
        st, c, i, side, f_size, f_price, f_fees, out[4], int(ptr[1]), keep_trades, acc, g
    )


@_jit
def free_margin(i, c0, c1, st, prices, col_params, wallet, n):
    """Free margin of a perpetual book: wallet - margin held + cross positions' unrealised PnL
    at the bar's valuation prices."""
    free = wallet
    for c in range(c0, c1):
        if st[c, S_POS] != 0:
            free -= st[c, S_MARGIN]
            if col_params[c, C_CROSS] != 0:
                vp = held_val_price(i, c, prices, col_params, n)
                free += st[c, S_POS] * (vp - st[c, S_ENTRY_PRICE])
    return free


@_jit
def perp_order(c, st, col_params, size, size_type, direction, wallet, free, kind):
    """Fill column ``c``'s order on its perpetual position; return ``(filled, wallet, price, fee)``.

    Sizes: amount (units), value (notional at the valuation price), percent (of the position
    when reducing it, else of the free margin, leverage applied), +/-inf (all the free margin).
    """
    position = st[c, S_POS]
    if direction == LONG_ONLY and size < 0:
        if position <= 0:
            return 0.0, wallet, 0.0, 0.0
        size = max(size, -position)
    elif direction == SHORT_ONLY and size > 0:
        if position >= 0:
            return 0.0, wallet, 0.0, 0.0
        size = min(size, -position)
    if size == 0 or math.isnan(size):
        return 0.0, wallet, 0.0, 0.0
    slip = st[c, S_O_SLIP]
    price = st[c, S_O_PRICE] * (1.0 + slip) if size > 0 else st[c, S_O_PRICE] * (1.0 - slip)
    leverage = col_params[c, C_LEVERAGE]
    fee_rate = st[c, S_O_FEE]
    fixed_fee = col_params[c, K.P_FIXED_FEES]
    if kind == KIND_DELIST:
        fixed_fee = 0.0
    if size_type == VALUE:
        size = size / st[c, S_VAL_PRICE]
    elif size_type == PERCENT:
        if position != 0 and (position > 0) != (size > 0):
            size = size * abs(position)
        else:
            size = size * max(free, 0.0) / (price * (1.0 / leverage + fee_rate))
    held_upnl = 0.0
    if col_params[c, C_CROSS] != 0 and position != 0:
        held_upnl = position * (st[c, S_VAL_PRICE] - st[c, S_ENTRY_PRICE])
    filled, wallet, new_pos, entry, margin, fee = position_fill(
        wallet,
        free,
        position,
        st[c, S_ENTRY_PRICE],
        st[c, S_MARGIN],
        size,
        price,
        fee_rate,
        fixed_fee,
        leverage,
        col_params[c, K.P_GRANULARITY],
        K.MIN_SIZE,
        held_upnl,
    )
    if filled == 0:
        return 0.0, wallet, 0.0, 0.0
    st[c, S_POS] = new_pos
    st[c, S_ENTRY_PRICE] = entry
    st[c, S_MARGIN] = margin
    return filled, wallet, price, fee


@_jit
def fill_orders(
    i, g, c0, c1, m, st, iw, prices, col_params, mode, cash, free_cash, value, out, ptr, acc, n
):
    """Step 3: execute the bar's ``m`` orders in call-sequence order against the shared cash.

    ``ptr`` is ``[order row, trade row, orders filled, fees paid]`` of the group (updated in
    place). Return ``(cash, free_cash)``; for a perpetual book ``cash`` is the wallet.
    """
    close = prices[0]
    for k in range(m):
        c = iw[c0 + k, IW_SEQ]
        size = st[c, S_O_SIZE]
        kind = int(st[c, S_O_KIND])
        # No order: NaN (from_orders; a size of 0 there is a valid target such as "flat") or
        # 0 (signals, and vectorbt ignores a zero amount/value/percent order too).
        if math.isnan(size) or (size == 0 and (mode == MODE_SIGNALS or kind != KIND_ORDER)):
            continue
        size_type = int(st[c, S_O_TYPE])
        direction = int(st[c, S_O_DIR])
        position = st[c, S_POS]
        val_price = st[c, S_VAL_PRICE]
        if mode == MODE_ORDERS and kind == KIND_ORDER:
            status, size, size_type = resolve_target(
                size, size_type, direction, position, val_price, value
            )
            if status != FILLED:
                continue
        if col_params[c, C_PERP] != 0:
            free = free_margin(i, c0, c1, st, prices, col_params, cash, n)
            f_size, cash, f_price, f_fees = perp_order(
                c, st, col_params, size, size_type, direction, cash, free, kind
            )
            if f_size == 0:
                continue
        else:
            fees = st[c, S_O_FEE]
            fixed_fees = col_params[c, K.P_FIXED_FEES]
            if kind == KIND_DELIST:
                fixed_fees = 0.0
            status, cash, new_pos, debt, free_cash, f_size, f_price, f_fees = execute_order(
                cash,
                position,
                st[c, S_DEBT],
                free_cash,
                val_price,
                size,
                size_type,
                direction,
                st[c, S_O_PRICE],
                fees,
                fixed_fees,
                st[c, S_O_SLIP],
                col_params[c, K.P_GRANULARITY],
            )
            if status != FILLED:
                continue
            st[c, S_POS] = new_pos
            st[c, S_DEBT] = debt
        side = SELL if st[c, S_POS] < position else BUY
        st[c, S_L_SIZE] = 0.0  # a fill cancels the column's resting limit order
        record_fill(i, g, c, st, side, f_size, f_price, f_fees, kind, out, ptr, acc)
        if mode == MODE_SIGNALS:
            a = int(col_params[c, C_ASSET])
            update_stops(c, st, col_params, position, st[c, S_O_PRICE], close[i, a])
    return cash, free_cash


@_jit
def settle_funding(i, c0, c1, st, prices, perp, col_params, wallet, acc, g, n):
    """Funding at bar ``i``'s open: every open position pays ``position x mark x rate``.

    The mark is ``perp[1]`` where given, else the bar's open (a funding time is a bar's open).
    Paid from the wallet, and for an isolated position from its margin too. Return the wallet.
    """
    funding = perp[0]
    mark = perp[1]
    open_ = prices[1]
    rf = i if funding.shape[0] == n else 0
    rm = i if mark.shape[0] == n else 0
    for c in range(c0, c1):
        position = st[c, S_POS]
        if position == 0:
            continue
        a = int(col_params[c, C_ASSET])
        rate = funding[rf, K.col_of(funding, a)]
        if rate == 0 or math.isnan(rate):
            continue
        m = open_[i, a]
        if mark.shape[0] == n:
            m = mark[rm, K.col_of(mark, a)]
        pay = funding_payment(position, m, rate)
        wallet -= pay
        st[c, S_FUNDING] += pay
        if col_params[c, C_CROSS] == 0:
            st[c, S_MARGIN] -= pay
        if pay > 0:
            acc[g, A_FUNDING_PAID] += pay
        else:
            acc[g, A_FUNDING_RECEIVED] -= pay
    return wallet


@_jit
def cross_others(c, c0, c1, st, prices, perp, col_params, i):
    """Maintenance margin and unrealised PnL, at the bar's open, of the other cross positions."""
    open_ = prices[1]
    tiers = perp[2]
    other_mm = 0.0
    other_upnl = 0.0
    for o in range(c0, c1):
        if o == c or st[o, S_POS] == 0 or col_params[o, C_CROSS] == 0:
            continue
        mark = open_[i, int(col_params[o, C_ASSET])]
        notional = abs(st[o, S_POS]) * mark
        other_mm += maintenance_margin(tiers[int(col_params[o, C_TIERS])], notional)
        other_upnl += st[o, S_POS] * (mark - st[o, S_ENTRY_PRICE])
    return other_mm, other_upnl


@_jit
def liquidate(i, g, c0, c1, st, prices, perp, col_params, wallet, out, ptr, acc):
    """Liquidation check of every perpetual position on bar ``i`` (after funding, before stops).

    The bar's adverse extreme (low for a long, high for a short) against the liquidation price
    (docs/perpetuals.md): isolated from the position's margin; cross from the cross wallet with
    the other cross positions held at the open. A hit closes at the liquidation price, a gap at
    the open; the liquidation fee is capped at what is left, and what is lost beyond it (beyond
    the isolated margin, or below a cross account's zero) is the insurance fund's. Return the
    wallet.
    """
    _, open_, high, low, _ = prices
    tiers = perp[2]
    for c in range(c0, c1):
        position = st[c, S_POS]
        if position == 0:
            continue
        a = int(col_params[c, C_ASSET])
        entry = st[c, S_ENTRY_PRICE]
        margin = st[c, S_MARGIN]
        cross = col_params[c, C_CROSS] != 0
        other_mm = 0.0
        other_upnl = 0.0
        balance = margin
        if cross:
            other_mm, other_upnl = cross_others(c, c0, c1, st, prices, perp, col_params, i)
            balance = wallet
            for o in range(c0, c1):
                if st[o, S_POS] != 0 and col_params[o, C_CROSS] == 0:
                    balance -= st[o, S_MARGIN]
        table = tiers[int(col_params[c, C_TIERS])]
        lp = liquidation_price(table, position, entry, balance, other_mm, other_upnl)
        status, fill = liquidation_fill(position, lp, open_[i, a], high[i, a], low[i, a])
        if status == P.LIQ_NONE:
            continue
        realized = position * (fill - entry)
        left = balance + realized
        if cross:
            left += other_upnl
        fee = min(trade_fee(position, fill, col_params[c, C_LIQ_FEE]), max(left, 0.0))
        if cross:
            wallet = wallet + realized - fee
            if left - fee < 0:
                wallet -= left - fee  # the insurance fund brings the account back to zero
        else:
            wallet = wallet - margin + max(left - fee, 0.0)
        side = SELL if position > 0 else BUY
        st[c, S_POS] = 0.0
        st[c, S_ENTRY_PRICE] = 0.0
        st[c, S_MARGIN] = 0.0
        st[c, S_SL] = math.nan
        st[c, S_TSL] = math.nan
        st[c, S_TP] = math.nan
        st[c, S_L_SIZE] = 0.0
        acc[g, A_LIQUIDATIONS] += 1
        record_fill(i, g, c, st, side, abs(position), fill, fee, KIND_LIQUIDATION, out, ptr, acc)
    return wallet


@_jit
def close_open_trades(g, c0, c1, st, prices, col_params, out, ptr):
    """Value every open trade at its column's last listed close; return ``(n_open, open_pnl)``."""
    close = prices[0]
    trades = out[4]
    keep_trades = out[5].shape[0] > g + 1
    n_open = 0
    open_pnl = 0.0
    for c in range(c0, c1):
        size_sum = st[c, S_ENTRY_SIZE]
        if st[c, S_IN_TRADE] == 0 or not is_less(-size_sum, 0.0):
            continue
        last = int(col_params[c, C_LAST])
        last_close = close[last, int(col_params[c, C_ASSET])]
        entry_price = st[c, S_ENTRY_GROSS] / size_sum
        entry_val = size_sum * entry_price
        val_diff = K.add(size_sum * last_close, -entry_val)
        if val_diff != 0 and int(st[c, S_TRADE_DIR]) == K.TRADE_SHORT:
            val_diff = -val_diff
        pnl = val_diff - st[c, S_ENTRY_FEES]
        n_open += 1
        open_pnl += pnl
        if keep_trades:
            t = int(ptr[1])
            write_trade(
                trades, t, c, size_sum, st[c, S_ENTRY_IDX], entry_price, st[c, S_ENTRY_FEES], last
            )
            trades[t, K.T_EXIT_PRICE] = last_close
            trades[t, K.T_EXIT_FEES] = 0.0
            trades[t, K.T_PNL] = pnl
            trades[t, K.T_RETURN] = pnl / entry_val
            trades[t, K.T_DIRECTION] = st[c, S_TRADE_DIR]
            trades[t, K.T_STATUS] = K.TRADE_OPEN
            trades[t, K.T_POSITION_ID] = st[c, S_POSITION_ID]
            ptr[1] += 1
    return n_open, open_pnl


@_jit
def reset_group(g, c0, c1, st, acc, out, ptr):
    """Initial state: flat columns, no stops, no trade; record pointers at the group's rows."""
    for c in range(c0, c1):
        for s in range(N_STATE):
            st[c, s] = 0.0
        st[c, S_SL] = math.nan
        st[c, S_TSL] = math.nan
        st[c, S_TP] = math.nan
        st[c, S_ENTRY_IDX] = -1
    for k in range(N_ACC):
        acc[g, k] = 0.0
    acc[g, A_BEST] = math.nan
    acc[g, A_WORST] = math.nan
    ptr[0] = 0.0
    ptr[1] = 0.0
    ptr[2] = 0.0
    ptr[3] = 0.0
    if out[3].shape[0] > g + 1:
        ptr[0] = out[3][g]
    if out[5].shape[0] > g + 1:
        ptr[1] = out[5][g]


@_jit
def mark_group(i, g, c0, c1, st, close, col_params, cash, acc, perp_book):
    """Value of the group at bar ``i``'s close and whether it holds anything.

    Cash plus every position as ``position x (close - entry)`` (spot entries are 0). The bar's
    gross and net exposure (notional / value; a perpetual book's leverage) and, for a perpetual
    book, its margin usage (margin held / value) go to the group's accumulators (bars where the
    account is worth 0 or less add nothing), and so does the value, for the turnover.
    """
    value = cash
    held = False
    margin = 0.0
    gross = 0.0
    net = 0.0
    for c in range(c0, c1):
        position = st[c, S_POS]
        if position != 0:
            price = close[i, int(col_params[c, C_ASSET])]
            value += position * (price - st[c, S_ENTRY_PRICE])
            held = True
            notional = position * price
            net += notional
            gross += abs(notional)
            if perp_book:
                margin += st[c, S_MARGIN]
    acc[g, A_VALUE_SUM] += value
    if value > 0 and held:
        acc[g, A_GROSS_SUM] += gross / value
        acc[g, A_NET_SUM] += net / value
        acc[g, A_GROSS_MAX] = max(acc[g, A_GROSS_MAX], gross / value)
        if perp_book:
            usage = margin / value
            acc[g, A_MARGIN_USAGE_SUM] += usage
            acc[g, A_MARGIN_USAGE_MAX] = max(acc[g, A_MARGIN_USAGE_MAX], usage)
    return value, held


@_jit
def start_group(g, prices, col_params, group_params, groups, out, scratch):
    """Reset group ``g`` for a run from its first bar; return the run's scalars (see
    :func:`advance_group`) and whether every column is listed on every bar (``full_span``)."""
    st, iw, acc, ptrs = scratch
    n = prices[0].shape[0]
    c0 = groups[g]
    c1 = groups[g + 1]
    reset_group(g, c0, c1, st, acc, out, ptrs[g])
    full_span = True
    for c in range(c0, c1):
        iw[c, IW_FLAGS] = 0
        if col_params[c, C_FIRST] != 0 or col_params[c, C_LAST] != n - 1:
            full_span = False
    init_cash = group_params[g, G_INIT_CASH]
    # cash, free cash, previous and current value, return sums, drawdown records, exposure bars
    run = (init_cash, init_cash, init_cash, init_cash, 0.0, 0.0, 0.0, False, math.nan, math.nan,
           -1, 0.0, 0, 0)  # fmt: skip
    return run, full_span


@_jit
def advance_group(
    g, i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode, out, scratch,
    full_span, run,
):  # fmt: skip
    """Process bars ``i0 .. i1 - 1`` of group ``g`` and return the run's scalars after them.

    ``run`` is ``(cash, free_cash, prev_value, value, r_sum, r_sumsq, down_sq, dd_started,
    peak_val, valley_val, peak_idx, max_dd, max_dd_dur, exposure_bars)``, as
    :func:`start_group` makes it; together with ``scratch`` it is the whole state of the
    account, so a run split into consecutive ranges is the run over all of them (the paper
    account of ``celeris live`` advances it bar by bar).
    """
    st, iw, acc, ptrs = scratch
    equity = out[1]
    close = prices[0]
    n = close.shape[0]
    c0 = groups[g]
    c1 = groups[g + 1]
    ptr = ptrs[g]
    call_mode = int(group_params[g, G_CALL_SEQ])
    threshold = group_params[g, G_THRESHOLD]
    perp_book = group_params[g, G_PERP] != 0
    keep_equity = equity.shape[0] == n and equity.shape[1] > g
    (cash, free_cash, prev_value, value, r_sum, r_sumsq, down_sq, dd_started, peak_val,
     valley_val, peak_idx, max_dd, max_dd_dur, exposure_bars) = run  # fmt: skip
    for i in range(i0, i1):
        if perp_book:
            cash = settle_funding(i, c0, c1, st, prices, perp, col_params, cash, acc, g, n)
            cash = liquidate(i, g, c0, c1, st, prices, perp, col_params, cash, out, ptr, acc)
            for c in range(c0, c1):
                refresh_flags(c, st, iw)
        n_active = collect_active(
            i, c0, c1, st, iw, prices, signals, sizes, col_params, mode, n, full_span
        )
        if n_active > 0:
            decide_orders(i, c0, n_active, st, iw, prices, signals, sizes, col_params, mode, n)
            if mode == MODE_ORDERS:  # target sizes and the drift test read the group's value
                value = group_value_at(i, c0, c1, st, prices, col_params, cash, n)
            if (
                mode == MODE_ORDERS
                and threshold > 0
                and not drifted(c0, n_active, st, iw, value, threshold)
            ):
                for j in range(n_active):
                    c = iw[c0 + j, IW_ACTIVE]
                    if st[c, S_O_KIND] == KIND_ORDER:
                        st[c, S_O_SIZE] = math.nan
            m = call_sequence(c0, n_active, st, iw, mode, call_mode, cash, free_cash, value)
            cash, free_cash = fill_orders(
                i, g, c0, c1, m, st, iw, prices, col_params, mode, cash, free_cash, value, out,
                ptr, acc, n,
            )  # fmt: skip
            for j in range(n_active):
                refresh_flags(iw[c0 + j, IW_ACTIVE], st, iw)
        value, held = mark_group(i, g, c0, c1, st, close, col_params, cash, acc, perp_book)
        if held:
            exposure_bars += 1
        if keep_equity:
            equity[i, g] = value
        r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx, max_dd, max_dd_dur = (
            mark_bar(i, value, prev_value, r_sum, r_sumsq, down_sq, dd_started, peak_val,
                     valley_val, peak_idx, max_dd, max_dd_dur)
        )  # fmt: skip
        prev_value = value
    return (cash, free_cash, prev_value, value, r_sum, r_sumsq, down_sq, dd_started, peak_val,
            valley_val, peak_idx, max_dd, max_dd_dur, exposure_bars)  # fmt: skip


@_jit
def finish_group(g, n, prices, col_params, group_params, groups, ann_factor, out, scratch, run):
    """Close the drawdown record, value the open trades and write group ``g``'s metrics row
    after a run over bars ``0 .. n - 1``."""
    st, _, acc, ptrs = scratch
    ptr = ptrs[g]
    (_, _, _, value, r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx,
     max_dd, max_dd_dur, exposure_bars) = run  # fmt: skip
    if dd_started:
        max_dd_dur = max(max_dd_dur, n - 1 - peak_idx)
        max_dd = min(max_dd, (valley_val - peak_val) / peak_val)
    n_open, open_pnl = close_open_trades(
        g, groups[g], groups[g + 1], st, prices, col_params, out, ptr
    )
    write_metrics(
        out[0],
        g,
        value,
        group_params[g, G_INIT_CASH],
        ann_factor,
        n,
        r_sum,
        r_sumsq,
        down_sq,
        max_dd,
        max_dd_dur,
        acc[g, A_CLOSED],
        n_open,
        acc[g, A_WINS],
        acc[g, A_LOSSES],
        acc[g, A_SUM_WIN],
        acc[g, A_SUM_LOSS],
        acc[g, A_SUM_WIN_RET],
        acc[g, A_SUM_LOSS_RET],
        acc[g, A_BEST],
        acc[g, A_WORST],
        exposure_bars / n,
        ptr[3],
        ptr[2],
        open_pnl,
    )


@_jit
def simulate_group(
    g,
    prices,
    signals,
    sizes,
    perp,
    col_params,
    group_params,
    groups,
    mode,
    ann_factor,
    out,
    scratch,
):
    """Simulate group ``g`` (columns ``groups[g]:groups[g + 1]``) and write its metrics row.

    ``scratch`` is ``(state, iw, acc, ptrs)``: per-column state (n_cols x N_STATE), integer
    per-column scratch (n_cols x N_IW: call sequence, active columns, flags), per-group trade
    accumulators (n_groups x N_ACC) and record pointers (n_groups x 4). ``perp`` is
    ``(funding, mark, tiers)``: funding rates and mark prices per bar and asset (or (1, 1)
    placeholders) and the maintenance tier tables. ``out`` is the single-column kernel's
    ``(metrics, equity, orders, order_offsets, trades, trade_offsets)`` with one metrics row,
    equity column and offset range per *group*.
    """
    n = prices[0].shape[0]
    run, full_span = start_group(g, prices, col_params, group_params, groups, out, scratch)
    run = advance_group(
        g, 0, n, prices, signals, sizes, perp, col_params, group_params, groups, mode, out,
        scratch, full_span, run,
    )  # fmt: skip
    finish_group(g, n, prices, col_params, group_params, groups, ann_factor, out, scratch, run)


if not CUDA_BUILD:
    from pathlib import Path as _Path

    import numpy as np
    from numba import njit, prange
    from numba import types as _t

    from celeris.backtest._cache_guard import watch as _watch

    # The kernel inlines kernel.py's and perp.py's helpers: numba's cache must notice them too.
    _here = _Path(__file__).parent
    _watch(__file__, [_here / "group_kernel.py", _here / "kernel.py", _here / "perp.py"])

    _RF2 = _t.Array(_t.float64, 2, "A", readonly=True)
    _RB2 = _t.Array(_t.boolean, 2, "A", readonly=True)
    _F2 = _t.Array(_t.float64, 2, "A")
    _I1 = _t.Array(_t.int64, 1, "A")
    _RI1 = _t.Array(_t.int64, 1, "A", readonly=True)
    _OUT = _t.Tuple((_F2, _F2, _F2, _I1, _F2, _I1))
    _SCRATCH = _t.Tuple((_F2, _t.Array(_t.int64, 2, "A"), _F2, _F2))
    _PERP = _t.Tuple((_RF2, _RF2, _t.Array(_t.float64, 3, "A", readonly=True)))

    @njit(
        _t.void(
            _t.UniTuple(_RF2, 5),
            _t.UniTuple(_RB2, 4),
            _RF2,
            _PERP,
            _RF2,
            _RF2,
            _RI1,
            _t.int64,
            _t.float64,
            _OUT,
            _SCRATCH,
        ),
        cache=True,
        parallel=True,
        nogil=True,
    )
    def simulate_groups_nb(
        prices, signals, sizes, perp, col_params, group_params, groups, mode, ann_factor, out,
        scratch,
    ):  # fmt: skip
        """Simulate every group in parallel (CPU); see :func:`simulate_group`."""
        for g in prange(group_params.shape[0]):
            simulate_group(
                np.int64(g),
                prices,
                signals,
                sizes,
                perp,
                col_params,
                group_params,
                groups,
                mode,
                ann_factor,
                out,
                scratch,
            )

    # ---- the same run in steps (the paper account of ``celeris live``) ----------------------
    # The run's scalars live in ``carry[g]`` between steps (R_* below); the rest of the state is
    # the scratch tuple. Stepping entries run on the CPU, one group after the other: a step is a
    # few bars, where starting threads would cost more than the work.
    R_DD_STARTED = 7
    R_PEAK_IDX = 10
    R_MAX_DD_DUR = 12
    R_EXPOSURE_BARS = 13
    N_RUN = 14

    @njit(cache=True, nogil=True)
    def _load_run(row):
        return (row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7] != 0.0, row[8],
                row[9], np.int64(row[10]), row[11], np.int64(row[12]), np.int64(row[13]))  # fmt: skip

    @njit(cache=True, nogil=True)
    def _store_run(row, run):
        (row[0], row[1], row[2], row[3], row[4], row[5], row[6], dd_started, row[8], row[9],
         peak_idx, row[11], max_dd_dur, exposure_bars) = run  # fmt: skip
        row[7] = 1.0 if dd_started else 0.0
        row[10] = peak_idx
        row[12] = max_dd_dur
        row[13] = exposure_bars

    @njit(cache=True, nogil=True)
    def start_groups_nb(prices, col_params, group_params, groups, out, scratch, carry, spans):
        """Reset every group for a stepped run (see :func:`advance_groups_nb`)."""
        for g in range(group_params.shape[0]):
            run, full_span = start_group(g, prices, col_params, group_params, groups, out, scratch)
            _store_run(carry[g], run)
            spans[g] = full_span

    @njit(cache=True, nogil=True)
    def advance_groups_nb(
        i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode, out,
        scratch, carry, spans,
    ):  # fmt: skip
        """Advance every group over bars ``i0 .. i1 - 1``; this step's records go to the rows of
        ``out``'s offsets (each step brings its own record arrays)."""
        ptrs = scratch[3]
        for g in range(group_params.shape[0]):
            _advance_one(
                g, i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode,
                out, scratch, carry, spans, ptrs,
            )  # fmt: skip

    @njit(cache=True, nogil=True, parallel=True)
    def advance_groups_par_nb(
        i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode, out,
        scratch, carry, spans,
    ):  # fmt: skip
        """:func:`advance_groups_nb` with the groups on numba's threads (long steps of many
        groups, as a replay's; a live step of one bar is quicker on one thread)."""
        ptrs = scratch[3]
        for g in prange(group_params.shape[0]):
            _advance_one(
                np.int64(g), i0, i1, prices, signals, sizes, perp, col_params, group_params,
                groups, mode, out, scratch, carry, spans, ptrs,
            )  # fmt: skip

    # advance_group's body inlined into the stepping entries: a live step is one bar of many
    # groups, and a call per group (its tuples of arrays passed, their references counted) cost
    # more than the bar's work (100 groups: 81 -> 45 us for the calls alone). Same IR: same bits.
    _advance_group_inline = njit(nogil=True, inline="always")(advance_group)

    @njit(cache=True, nogil=True, inline="always")
    def _advance_one(
        g, i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode, out,
        scratch, carry, spans, ptrs,
    ):  # fmt: skip
        if out[3].shape[0] > g + 1:
            ptrs[g, 0] = out[3][g]
        if out[5].shape[0] > g + 1:
            ptrs[g, 1] = out[5][g]
        run = _advance_group_inline(
            g, i0, i1, prices, signals, sizes, perp, col_params, group_params, groups, mode,
            out, scratch, spans[g], _load_run(carry[g]),
        )  # fmt: skip
        _store_run(carry[g], run)

    @njit(cache=True, nogil=True)
    def finish_groups_nb(
        n, prices, col_params, group_params, groups, ann_factor, out, scratch, carry
    ):
        """Metrics rows (and open trades, into ``out``'s trade rows) of a stepped run over bars
        ``0 .. n - 1``; the state is left as it was, so the run can go on."""
        ptrs = scratch[3]
        for g in range(group_params.shape[0]):
            if out[5].shape[0] > g + 1:
                ptrs[g, 1] = out[5][g]
            finish_group(
                g, n, prices, col_params, group_params, groups, ann_factor, out, scratch,
                _load_run(carry[g]),
            )  # fmt: skip
