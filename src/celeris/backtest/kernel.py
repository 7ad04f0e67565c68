"""The per-column simulation state machine, written once for the CPU and for CUDA.

Every function here is plain Python over scalars and array elements. This module is compiled
twice from the same source:

* on the CPU, the helpers are ``numba.extending.register_jitable`` functions and
  :func:`simulate_nb` (defined at the bottom, CPU build only) runs :func:`simulate_column`
  for every column in parallel with ``prange``;
* for CUDA, :mod:`celeris.backtest.cuda` executes this same file a second time with
  ``__celeris_jit__`` set to ``numba.cuda.jit(device=True)``, so each helper becomes a CUDA
  device function and one GPU thread runs :func:`simulate_column` for one column.

Only ``math`` functions, scalar arithmetic and element indexing are used, which both targets
support. Order and trade logic reproduces vectorbt's ``Portfolio.from_signals`` (its
``buy_nb``/``sell_nb``/``signals_to_size_nb`` and exit-trade records) with its default options,
including its float tolerances (``rel_tol=1e-9``, ``abs_tol=1e-12``) and ``min_size=1e-8``, so
that fills agree trade for trade.
"""

# Explicit branches read like the vectorbt code they mirror and compile alike for CPU and CUDA.
# ruff: noqa: SIM108, SIM109
from __future__ import annotations

import math

from numba.extending import register_jitable

_jit = globals().get("__celeris_jit__", register_jitable)
CUDA_BUILD = "__celeris_jit__" in globals()

# Direction of the strategy (``direction=``).
LONG_ONLY = 0
SHORT_ONLY = 1
BOTH = 2
# Size types (``size_type=``).
AMOUNT = 0
VALUE = 1
PERCENT = 2
# Price a stop exit fills at (``stop_exit_price=``).
STOP_LIMIT = 0  # at the stop price, no slippage (vectorbt's default "stoplimit")
STOP_MARKET = 1  # at the stop price, slippage applied
STOP_CLOSE = 2  # at the bar's close, slippage applied
# Reference price of a new position's stops.
STOP_REF_CLOSE = 0  # the close of the fill bar (vectorbt's default)
STOP_REF_PRICE = 1  # the order price before slippage (used for next-open execution)
# Order sides and trade directions/status in records.
BUY = 0
SELL = 1
TRADE_LONG = 0
TRADE_SHORT = 1
TRADE_OPEN = 0
TRADE_CLOSED = 1
# Order outcomes.
FILLED = 0
IGNORED = 1
REJECTED = 2

REL_TOL = 1e-9
ABS_TOL = 1e-12
MIN_SIZE = 1e-8

# Columns of the per-column parameter matrix ``params[col, P_*]``.
P_INIT_CASH = 0
P_FEES = 1
P_FIXED_FEES = 2
P_SLIPPAGE = 3
P_SIZE = 4
P_SIZE_TYPE = 5
P_DIRECTION = 6
P_SL = 7
P_TSL = 8
P_TP = 9
P_ACCUMULATE = 10
P_GRANULARITY = 11
P_STOP_EXIT = 12
P_STOP_REF = 13
N_PARAMS = 14

# Columns of the metrics matrix ``metrics[col, M_*]``.
M_END_VALUE = 0
M_TOTAL_RETURN = 1
M_CAGR = 2
M_VOLATILITY = 3
M_SHARPE = 4
M_SORTINO = 5
M_CALMAR = 6
M_MAX_DD = 7
M_MAX_DD_DURATION = 8
M_TRADES = 9
M_CLOSED_TRADES = 10
M_WIN_RATE = 11
M_PROFIT_FACTOR = 12
M_EXPECTANCY = 13
M_BEST_TRADE = 14
M_WORST_TRADE = 15
M_AVG_WIN = 16
M_AVG_LOSS = 17
M_EXPOSURE = 18
M_TOTAL_FEES = 19
M_ORDERS = 20
M_OPEN_PNL = 21
N_METRICS = 22

# Columns of the trade record matrix ``trades[k, T_*]`` (all float64 for both targets).
T_COL = 0
T_SIZE = 1
T_ENTRY_IDX = 2
T_ENTRY_PRICE = 3
T_ENTRY_FEES = 4
T_EXIT_IDX = 5
T_EXIT_PRICE = 6
T_EXIT_FEES = 7
T_PNL = 8
T_RETURN = 9
T_DIRECTION = 10
T_STATUS = 11
T_POSITION_ID = 12
N_TRADE_FIELDS = 13

# Columns of the order record matrix ``orders[k, O_*]``.
O_COL = 0
O_IDX = 1
O_SIZE = 2
O_PRICE = 3
O_FEES = 4
O_SIDE = 5
O_STOP = 6  # 1.0 when the order was a stop exit
N_ORDER_FIELDS = 7


@_jit
def is_close(a, b):
    """Same as vectorbt's ``is_close_nb``: equal within rel 1e-9 / abs 1e-12, NaN/inf never."""
    if math.isnan(a) or math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return False
    if a == b:
        return True
    return abs(a - b) <= max(REL_TOL * max(abs(a), abs(b)), ABS_TOL)


@_jit
def is_close_or_less(a, b):
    if is_close(a, b):
        return True
    return a < b


@_jit
def is_less(a, b):
    if is_close(a, b):
        return False
    return a < b


@_jit
def sign(x):
    if x > 0:
        return 1.0
    if x < 0:
        return -1.0
    return 0.0


@_jit
def add(a, b):
    """Add, snapping results that are zero within tolerance to exactly 0 (vectorbt's ``add_nb``)."""
    if sign(a) != sign(b):
        if is_close(abs(a), abs(b)):
            return 0.0
    elif is_close(a + b, 0.0):
        return 0.0
    return a + b


@_jit
def snap_zero(x):
    if is_close(x, 0.0):
        return 0.0
    return x


@_jit
def buy(
    cash,
    position,
    debt,
    free_cash,
    size,
    price,
    direction,
    fees,
    fixed_fees,
    slippage,
    gran,
    percent,
):
    """Buy and/or cover. Return ``(status, cash, position, debt, free_cash, size, price, fees)``."""
    adj_price = price * (1.0 + slippage)
    cash_limit = cash
    if not math.isnan(percent):
        cash_limit = min(cash_limit, percent * cash_limit)
    if direction == LONG_ONLY or direction == BOTH:
        if cash_limit == 0:
            return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    elif position == 0:
        return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    if direction == SHORT_ONLY:
        adj_size = min(-position, size)
    else:
        adj_size = size
    if adj_size == 0:
        return IGNORED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    if not math.isnan(gran):
        adj_size = adj_size // gran * gran
    req_cash = adj_size * adj_price
    req_fees = req_cash * fees + fixed_fees
    total_req_cash = req_cash + req_fees
    if is_close_or_less(total_req_cash, cash_limit):
        final_size = adj_size
        fees_paid = req_fees
        final_req_cash = total_req_cash
    else:
        # Not enough cash: buy what cash_limit covers after fees.
        max_req_cash = add(cash_limit, -fixed_fees) / (1.0 + fees)
        if max_req_cash <= 0:
            return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
        max_acq_size = max_req_cash / adj_price
        if not math.isnan(gran):
            final_size = max_acq_size // gran * gran
            new_req_cash = final_size * adj_price
            fees_paid = new_req_cash * fees + fixed_fees
            final_req_cash = new_req_cash + fees_paid
        else:
            final_size = max_acq_size
            fees_paid = cash_limit - max_req_cash
            final_req_cash = cash_limit
    if is_close(adj_size, 0.0):
        return IGNORED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    if is_less(final_size, MIN_SIZE):
        return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    new_cash = add(cash, -final_req_cash)
    new_position = add(position, final_size)
    if position < 0:
        if new_position < 0:
            short_size = final_size
        else:
            short_size = abs(position)
        avg_entry_price = debt / abs(position)
        debt_diff = short_size * avg_entry_price
        new_debt = add(debt, -debt_diff)
        new_free_cash = add(free_cash + 2.0 * debt_diff, -final_req_cash)
    else:
        new_debt = debt
        new_free_cash = add(free_cash, -final_req_cash)
    return FILLED, new_cash, new_position, new_debt, new_free_cash, final_size, adj_price, fees_paid


@_jit
def sell(
    cash,
    position,
    debt,
    free_cash,
    size,
    price,
    direction,
    fees,
    fixed_fees,
    slippage,
    gran,
    percent,
):
    """Sell and/or short. Return ``(status, cash, position, debt, free_cash, size, price, fees)``."""
    adj_price = price * (1.0 - slippage)
    if direction == LONG_ONLY:
        size_limit = min(position, size)
    elif math.isinf(size) and not math.isnan(percent):
        # Sell the long position (if any) and short with all free cash.
        long_size = max(position, 0.0)
        long_cash = long_size * adj_price * (1.0 - fees)
        total_free_cash = add(free_cash, long_cash)
        if total_free_cash <= 0:
            if position <= 0:
                return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
            max_size_limit = long_size
        else:
            max_short_size = add(total_free_cash, -fixed_fees) / (adj_price * (1.0 + fees))
            max_size_limit = add(long_size, max_short_size)
            if max_size_limit <= 0:
                return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
        size_limit = max_size_limit
    else:
        size_limit = size
    if not math.isnan(percent):
        size_limit = percent * size_limit
    if direction == LONG_ONLY and position == 0:
        return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    if not math.isnan(gran):
        size_limit = size_limit // gran * gran
    if is_close(size_limit, 0.0):
        return IGNORED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    if is_less(size_limit, MIN_SIZE):
        return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    acq_cash = size_limit * adj_price
    fees_paid = acq_cash * fees + fixed_fees
    final_acq_cash = add(acq_cash, -fees_paid)
    if final_acq_cash < 0:
        return REJECTED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    new_cash = cash + final_acq_cash
    new_position = add(position, -size_limit)
    if new_position < 0:
        if position < 0:
            short_size = size_limit
        else:
            short_size = abs(new_position)
        short_value = short_size * adj_price
        new_debt = debt + short_value
        new_free_cash = add(free_cash, add(final_acq_cash, -2.0 * short_value))
    else:
        new_debt = debt
        new_free_cash = free_cash + final_acq_cash
    return FILLED, new_cash, new_position, new_debt, new_free_cash, size_limit, adj_price, fees_paid


@_jit
def execute_order(
    cash,
    position,
    debt,
    free_cash,
    val_price,
    size,
    size_type,
    direction,
    price,
    fees,
    fixed_fees,
    slippage,
    gran,
):
    """Execute one order (vectorbt's ``execute_order_nb`` for Amount/Value/Percent sizes)."""
    cash = snap_zero(cash)
    position = snap_zero(position)
    debt = snap_zero(debt)
    free_cash = snap_zero(free_cash)
    if math.isnan(size) or math.isnan(price):
        return IGNORED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
    order_size = size
    if size_type == VALUE:
        if math.isnan(val_price):
            return IGNORED, cash, position, debt, free_cash, 0.0, 0.0, 0.0
        order_size = order_size / val_price
        size_type = AMOUNT
    if size_type == AMOUNT and direction != LONG_ONLY and order_size < 0 and math.isinf(order_size):
        # An infinite short means "short with 100% of free cash".
        order_size = -1.0
        size_type = PERCENT
    percent = math.nan
    if size_type == PERCENT:
        percent = abs(order_size)
        order_size = sign(order_size) * math.inf
    if order_size > 0:
        return buy(
            cash,
            position,
            debt,
            free_cash,
            order_size,
            price,
            direction,
            fees,
            fixed_fees,
            slippage,
            gran,
            percent,
        )
    return sell(
        cash,
        position,
        debt,
        free_cash,
        -order_size,
        price,
        direction,
        fees,
        fixed_fees,
        slippage,
        gran,
        percent,
    )


@_jit
def signals_to_size(
    position, long_entry, long_exit, short_entry, short_exit, size, size_type, accumulate, val_price
):
    """Translate resolved signals into ``(order_size, size_type, direction)`` (0 size: no order)."""
    order_size = 0.0
    direction = BOTH
    abs_position = abs(position)
    if position > 0:
        if short_entry:
            if accumulate:
                order_size = -size
            else:
                # Reverse: close the long and open a short of `size`.
                order_size = -abs_position
                if size_type == VALUE:
                    order_size -= size / val_price
                else:
                    order_size -= size
                size_type = AMOUNT
        elif long_exit:
            direction = LONG_ONLY
            if accumulate:
                order_size = -size
            else:
                order_size = -abs_position
                size_type = AMOUNT
        elif long_entry:
            direction = LONG_ONLY
            if accumulate:
                order_size = size
    elif position < 0:
        if long_entry:
            if accumulate:
                order_size = size
            else:
                order_size = abs_position
                if size_type == VALUE:
                    order_size += size / val_price
                else:
                    order_size += size
                size_type = AMOUNT
        elif short_exit:
            direction = SHORT_ONLY
            if accumulate:
                order_size = size
            else:
                order_size = abs_position
                size_type = AMOUNT
        elif short_entry:
            direction = SHORT_ONLY
            if accumulate:
                order_size = -size
    elif long_entry:
        order_size = size
    elif short_entry:
        order_size = -size
    return order_size, size_type, direction


@_jit
def stop_hit_price(position, ref_price, stop, open_, low, high, below):
    """Fill price of a stop at ``ref_price * (1 -/+ stop)``, the open on a gap, NaN if not hit.

    Same as vectorbt's ``get_stop_price_nb``: ``below`` is the stop-loss side for longs.
    """
    if (position > 0 and below) or (position < 0 and not below):
        level = ref_price * (1.0 - stop)
        if open_ <= level:
            return open_
        if low <= level and level <= high:
            return level
        return math.nan
    if (position < 0 and below) or (position > 0 and not below):
        level = ref_price * (1.0 + stop)
        if level <= open_:
            return open_
        if low <= level and level <= high:
            return level
        return math.nan
    return math.nan


@_jit
def col_of(a, col):
    """Column of a 2-D input that serves ``col`` (inputs broadcast along a length-1 axis)."""
    if a.shape[1] == 1:
        return 0
    return col


@_jit
def safe_ratio(num, den):
    """num / den with 0/0 -> NaN and x/0 -> signed inf."""
    if den == 0:
        if num == 0 or math.isnan(num):
            return math.nan
        return math.inf * sign(num)
    return num / den


@_jit
def mark_bar(
    i,
    value,
    prev_value,
    r_sum,
    r_sumsq,
    down_sq,
    dd_started,
    peak_val,
    valley_val,
    peak_idx,
    max_dd,
    max_dd_dur,
):
    """Account one bar's closing value: return sums and drawdown records (vectorbt's
    ``returns_nb`` and ``get_drawdowns_nb``, online). Return the updated state."""
    if prev_value == 0:
        if value == 0:
            r = 0.0
        else:
            r = math.inf * sign(value)
    else:
        r = (value - prev_value) / prev_value
        if prev_value < 0:
            r = -r
    r_sum += r
    r_sumsq += r * r
    r_neg = min(r, 0.0)  # branch-free: the sign of a return is a coin flip for the predictor
    down_sq += r_neg * r_neg
    # Drawdown records: a peak, a valley, a recovery (or still active at the end).
    if math.isnan(peak_val) or value >= peak_val:
        if not dd_started:
            peak_val = value
            peak_idx = i
        else:
            dd_started = False
            dur = i - peak_idx - 1
            if dur > max_dd_dur:
                max_dd_dur = dur
            dd = (valley_val - peak_val) / peak_val
            if dd < max_dd:
                max_dd = dd
            peak_val = value
            peak_idx = i
    elif not dd_started:
        dd_started = True
        valley_val = value
    else:
        valley_val = min(valley_val, value)
    return r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx, max_dd, max_dd_dur


@_jit
def write_metrics(
    metrics,
    col,
    value,
    init_cash,
    ann_factor,
    r_count,
    r_sum,
    r_sumsq,
    down_sq,
    max_dd,
    max_dd_dur,
    n_trades_closed,
    n_open,
    n_wins,
    n_losses,
    sum_win,
    sum_loss,
    sum_win_ret,
    sum_loss_ret,
    best_ret,
    worst_ret,
    exposure,
    total_fees,
    n_orders,
    open_pnl,
):
    """Write row ``col`` of the metrics matrix from the accumulated sums and trade counts."""
    std = math.nan
    r_mean = r_sum / r_count
    if r_count > 1:
        std = math.sqrt(max(r_sumsq - r_sum * r_mean, 0.0) / (r_count - 1))
    total_return = (value - init_cash) / init_cash
    cagr = math.nan
    growth = value / init_cash
    if r_count > 0 and growth >= 0:
        cagr = growth ** (ann_factor / r_count) - 1.0
    downside = math.sqrt(down_sq / r_count) * math.sqrt(ann_factor)
    metrics[col, M_END_VALUE] = value
    metrics[col, M_TOTAL_RETURN] = total_return
    metrics[col, M_CAGR] = cagr
    metrics[col, M_VOLATILITY] = std * math.sqrt(ann_factor)
    if r_count > 1:
        metrics[col, M_SHARPE] = safe_ratio(r_mean, std) * math.sqrt(ann_factor)
        metrics[col, M_SORTINO] = safe_ratio(r_mean * ann_factor, downside)
    else:
        metrics[col, M_SHARPE] = math.nan
        metrics[col, M_SORTINO] = math.nan
    if max_dd == 0:
        metrics[col, M_CALMAR] = math.nan
    else:
        metrics[col, M_CALMAR] = cagr / abs(max_dd)
    metrics[col, M_MAX_DD] = abs(max_dd)
    metrics[col, M_MAX_DD_DURATION] = max_dd_dur
    metrics[col, M_TRADES] = n_trades_closed + n_open
    metrics[col, M_CLOSED_TRADES] = n_trades_closed
    if n_trades_closed > 0:
        win_rate = n_wins / n_trades_closed
        avg_win = 0.0
        if n_wins > 0:
            avg_win = sum_win / n_wins
        avg_loss = 0.0
        if n_losses > 0:
            avg_loss = sum_loss / n_losses
        loss_rate = n_losses / n_trades_closed
        metrics[col, M_WIN_RATE] = win_rate
        metrics[col, M_PROFIT_FACTOR] = safe_ratio(sum_win, abs(sum_loss))
        metrics[col, M_EXPECTANCY] = win_rate * avg_win - loss_rate * abs(avg_loss)
        metrics[col, M_AVG_WIN] = sum_win_ret / n_wins if n_wins > 0 else math.nan
        metrics[col, M_AVG_LOSS] = sum_loss_ret / n_losses if n_losses > 0 else math.nan
    else:
        metrics[col, M_WIN_RATE] = math.nan
        metrics[col, M_PROFIT_FACTOR] = math.nan
        metrics[col, M_EXPECTANCY] = math.nan
        metrics[col, M_AVG_WIN] = math.nan
        metrics[col, M_AVG_LOSS] = math.nan
    metrics[col, M_BEST_TRADE] = best_ret
    metrics[col, M_WORST_TRADE] = worst_ret
    metrics[col, M_EXPOSURE] = exposure
    metrics[col, M_TOTAL_FEES] = total_fees
    metrics[col, M_ORDERS] = n_orders
    metrics[col, M_OPEN_PNL] = open_pnl


# simulate_column is one long function on purpose (the exception to the ~150-line rule). Split
# into named numba steps (stops, signal resolution, fill accounting, trade record, quiet stretch,
# metric finalisation) with identical results, it ran 9-18% slower single-threaded on 50,000
# bars x 64 columns (stops on: 41.8 vs 36.5 ms; off: 22.1 vs 20.3 ms, best of 5 interleaved
# runs, 2026-12-05), with numba inlining the steps (inline="always") or not, and with the
# loop-carried state as tuples or as scalars. Its state lives in ~40 scalars across the bar
# loop; LLVM keeps them in registers only while the loop is one function. "# ---- step ----"
# comments mark where each step begins.
@_jit
def simulate_column(col, prices, signals, params, ann_factor, out):  # noqa: C901 - one function on purpose, see the note above
    """Simulate one column and write its metrics (and curves/records when their arrays are sized).

    ``equity`` is written when its shape is (n_bars, n_cols); ``orders``/``trades`` when their
    offset arrays have n_cols + 1 entries (row ranges per column). ``prices`` is ``(close, open,
    high, low, price)``, ``signals`` ``(entries, exits, short_entries, short_exits)`` and ``out``
    ``(metrics, equity, orders, order_offsets, trades, trade_offsets)``: the argument list of
    :func:`simulate_nb`, the CUDA kernel and :func:`celeris.backtest.engine.simulate`, written once.
    """
    close, open_, high, low, price = prices
    entries, exits, short_entries, short_exits = signals
    metrics, equity, orders, order_offsets, trades, trade_offsets = out
    n = close.shape[0]
    init_cash = params[col, P_INIT_CASH]
    fees = params[col, P_FEES]
    fixed_fees = params[col, P_FIXED_FEES]
    slippage = params[col, P_SLIPPAGE]
    size = params[col, P_SIZE]
    size_type = int(params[col, P_SIZE_TYPE])
    sig_direction = int(params[col, P_DIRECTION])
    sl_stop = params[col, P_SL]
    tsl_stop = params[col, P_TSL]
    tp_stop = params[col, P_TP]
    accumulate = params[col, P_ACCUMULATE] != 0
    gran = params[col, P_GRANULARITY]
    stop_exit = int(params[col, P_STOP_EXIT])
    stop_ref_mode = int(params[col, P_STOP_REF])
    use_stops = not (math.isnan(sl_stop) and math.isnan(tsl_stop) and math.isnan(tp_stop))
    keep_equity = equity.shape[0] == n and equity.shape[1] > col
    keep_orders = order_offsets.shape[0] > col + 1
    keep_trades = trade_offsets.shape[0] > col + 1
    # Broadcasting resolved once per column: which input column, and whether a signal array exists.
    c_close = col_of(close, col)
    c_open = col_of(open_, col)
    c_high = col_of(high, col)
    c_low = col_of(low, col)
    c_price = col_of(price, col)
    c_entries = col_of(entries, col)
    c_exits = col_of(exits, col)
    c_sentries = col_of(short_entries, col)
    c_sexits = col_of(short_exits, col)
    # Row multipliers: an absent signal array is a (1, 1) False placeholder read at row 0.
    r_entries = 1 if entries.shape[0] == n else 0
    r_exits = 1 if exits.shape[0] == n else 0
    r_sentries = 1 if short_entries.shape[0] == n else 0
    r_sexits = 1 if short_exits.shape[0] == n else 0
    o_ptr = 0
    t_ptr = 0
    if keep_orders:
        o_ptr = order_offsets[col]
    if keep_trades:
        t_ptr = trade_offsets[col]

    cash = init_cash
    position = 0.0
    debt = 0.0
    free_cash = init_cash
    val_price = math.nan
    # Active stops: level parameters and their reference prices.
    sl_cur = math.nan
    tsl_cur = math.nan
    tp_cur = math.nan
    sl_ref = math.nan
    tsl_ref = math.nan
    tp_ref = math.nan

    # Exit-trade accounting (vectorbt's get_exit_trades_nb, online).
    in_trade = False
    trade_dir = TRADE_LONG
    entry_idx = -1
    entry_size_sum = 0.0
    entry_gross_sum = 0.0
    entry_fees_sum = 0.0
    position_id = -1
    n_trades_closed = 0
    n_wins = 0
    n_losses = 0
    sum_win = 0.0
    sum_loss = 0.0
    sum_win_ret = 0.0
    sum_loss_ret = 0.0
    best_ret = math.nan
    worst_ret = math.nan
    n_orders = 0
    total_fees = 0.0

    # Return statistics (plain sums: bar returns are small, so sum/sum-of-squares loses no
    # precision that matters, and avoids a division in the loop-carried chain of Welford's
    # update) and drawdown records (vectorbt's get_drawdowns_nb, online).
    prev_value = init_cash
    r_count = 0
    r_sum = 0.0
    r_sumsq = 0.0
    down_sq = 0.0
    dd_started = False
    peak_val = math.nan
    valley_val = math.nan
    peak_idx = -1
    max_dd = 0.0
    max_dd_dur = 0
    exposure_bars = 0
    value = init_cash

    i = -1
    while i + 1 < n:
        i += 1
        bar_close = close[i, c_close]
        order_price = price[i, c_price]
        if not math.isnan(order_price):
            val_price = order_price
        order_slippage = slippage
        long_entry = False
        long_exit = False
        short_entry = False
        short_exit = False
        acc = accumulate
        is_stop = False

        # ---- stops ----
        if use_stops and position != 0:
            bar_open = open_[i, c_open]
            bar_high = high[i, c_high]
            bar_low = low[i, c_low]
            if math.isnan(bar_open):
                bar_open = bar_close
            if math.isnan(bar_low):
                bar_low = min(bar_open, bar_close)
            if math.isnan(bar_high):
                bar_high = max(bar_open, bar_close)
            stop_price = math.nan
            # Stop-loss side: the fixed and the trailing stop; the tighter level fires first.
            if not math.isnan(sl_cur):
                stop_price = stop_hit_price(
                    position, sl_ref, sl_cur, bar_open, bar_low, bar_high, True
                )
            if not math.isnan(tsl_cur):
                tsl_price = stop_hit_price(
                    position, tsl_ref, tsl_cur, bar_open, bar_low, bar_high, True
                )
                if not math.isnan(tsl_price):
                    if math.isnan(stop_price):
                        stop_price = tsl_price
                    elif position > 0:
                        stop_price = max(stop_price, tsl_price)
                    else:
                        stop_price = min(stop_price, tsl_price)
            if math.isnan(stop_price) and not math.isnan(tp_cur):
                stop_price = stop_hit_price(
                    position, tp_ref, tp_cur, bar_open, bar_low, bar_high, False
                )
            if not math.isnan(tsl_cur):
                if position > 0 and bar_high > tsl_ref:
                    tsl_ref = bar_high
                elif position < 0 and bar_low < tsl_ref:
                    tsl_ref = bar_low
            if not math.isnan(stop_price):
                is_stop = True
                acc = False
                if position > 0:
                    long_exit = True
                else:
                    short_exit = True
                if stop_exit == STOP_LIMIT:
                    order_price = stop_price
                    order_slippage = 0.0
                elif stop_exit == STOP_MARKET:
                    order_price = stop_price
                else:
                    order_price = bar_close

        # ---- signal resolution ----
        if not is_stop:
            entry = entries[i * r_entries, c_entries]
            exit_ = exits[i * r_exits, c_exits]
            s_entry = short_entries[i * r_sentries, c_sentries]
            s_exit = short_exits[i * r_sexits, c_sexits]
            if sig_direction == LONG_ONLY:
                long_entry = entry
                long_exit = exit_
                short_entry = s_entry
                short_exit = s_exit
            elif sig_direction == SHORT_ONLY:
                short_entry = entry or s_entry
                short_exit = exit_ or s_exit
            else:
                # vectorbt: with direction="both" and no short arrays, exits open shorts.
                long_entry = entry
                short_entry = exit_ or s_entry
                short_exit = s_exit
            if long_entry or short_entry:
                # Default conflict handling of vectorbt: conflicting signals are ignored.
                if long_entry and long_exit:
                    long_entry = False
                    long_exit = False
                if short_entry and short_exit:
                    short_entry = False
                    short_exit = False
                if long_entry and short_entry:
                    long_entry = False
                    short_entry = False

        # ---- order and fill ----
        order_size = 0.0
        order_size_type = size_type
        order_dir = BOTH
        if long_entry or long_exit or short_entry or short_exit:
            order_size, order_size_type, order_dir = signals_to_size(
                position,
                long_entry,
                long_exit,
                short_entry,
                short_exit,
                size,
                size_type,
                acc,
                val_price,
            )
        if order_size != 0:
            prev_position = position
            status, cash, position, debt, free_cash, f_size, f_price, f_fees = execute_order(
                cash,
                position,
                debt,
                free_cash,
                val_price,
                order_size,
                order_size_type,
                order_dir,
                order_price,
                fees,
                fixed_fees,
                order_slippage,
                gran,
            )
            if status == FILLED:
                side = BUY
                if position < prev_position:
                    side = SELL
                n_orders += 1
                total_fees += f_fees
                if keep_orders:
                    orders[o_ptr, O_COL] = col
                    orders[o_ptr, O_IDX] = i
                    orders[o_ptr, O_SIZE] = f_size
                    orders[o_ptr, O_PRICE] = f_price
                    orders[o_ptr, O_FEES] = f_fees
                    orders[o_ptr, O_SIDE] = side
                    orders[o_ptr, O_STOP] = 1.0 if is_stop else 0.0
                    o_ptr += 1

                # ---- exit-trade accounting ----
                if not in_trade:
                    in_trade = True
                    entry_idx = i
                    trade_dir = TRADE_LONG if side == BUY else TRADE_SHORT
                    position_id += 1
                    entry_size_sum = 0.0
                    entry_gross_sum = 0.0
                    entry_fees_sum = 0.0
                if (trade_dir == TRADE_LONG and side == BUY) or (
                    trade_dir == TRADE_SHORT and side == SELL
                ):
                    entry_size_sum += f_size
                    entry_gross_sum += f_size * f_price
                    entry_fees_sum += f_fees
                else:
                    closes_all = is_close(f_size, entry_size_sum)
                    if is_close_or_less(f_size, entry_size_sum):
                        exit_size = f_size
                        if closes_all:
                            exit_size = entry_size_sum
                        exit_fees = f_fees
                        reverse = False
                    else:
                        exit_size = entry_size_sum
                        exit_fees = exit_size / f_size * f_fees
                        reverse = True
                    entry_price = entry_gross_sum / entry_size_sum
                    entry_fees = exit_size / entry_size_sum * entry_fees_sum
                    entry_val = exit_size * entry_price
                    val_diff = add(exit_size * f_price, -entry_val)
                    if val_diff != 0 and trade_dir == TRADE_SHORT:
                        val_diff = -val_diff
                    pnl = val_diff - entry_fees - exit_fees
                    ret = pnl / entry_val
                    n_trades_closed += 1
                    if pnl > 0:
                        n_wins += 1
                        sum_win += pnl
                        sum_win_ret += ret
                    elif pnl < 0:
                        n_losses += 1
                        sum_loss += pnl
                        sum_loss_ret += ret
                    if math.isnan(best_ret) or ret > best_ret:
                        best_ret = ret
                    if math.isnan(worst_ret) or ret < worst_ret:
                        worst_ret = ret
                    if keep_trades:
                        trades[t_ptr, T_COL] = col
                        trades[t_ptr, T_SIZE] = exit_size
                        trades[t_ptr, T_ENTRY_IDX] = entry_idx
                        trades[t_ptr, T_ENTRY_PRICE] = entry_price
                        trades[t_ptr, T_ENTRY_FEES] = entry_fees
                        trades[t_ptr, T_EXIT_IDX] = i
                        trades[t_ptr, T_EXIT_PRICE] = f_price
                        trades[t_ptr, T_EXIT_FEES] = exit_fees
                        trades[t_ptr, T_PNL] = pnl
                        trades[t_ptr, T_RETURN] = ret
                        trades[t_ptr, T_DIRECTION] = trade_dir
                        trades[t_ptr, T_STATUS] = TRADE_CLOSED
                        trades[t_ptr, T_POSITION_ID] = position_id
                        t_ptr += 1
                    if reverse:
                        entry_size_sum = f_size - exit_size
                        entry_gross_sum = entry_size_sum * f_price
                        entry_fees_sum = f_fees - exit_fees
                        entry_idx = i
                        if trade_dir == TRADE_LONG:
                            trade_dir = TRADE_SHORT
                        else:
                            trade_dir = TRADE_LONG
                        position_id += 1
                    elif closes_all:
                        in_trade = False
                        entry_idx = -1
                    else:
                        fraction = (entry_size_sum - f_size) / entry_size_sum
                        entry_size_sum *= fraction
                        entry_gross_sum *= fraction
                        entry_fees_sum *= fraction

                # ---- stops follow the position ----
                if use_stops:
                    if position == 0:
                        sl_cur = math.nan
                        tsl_cur = math.nan
                        tp_cur = math.nan
                    else:
                        if stop_ref_mode == STOP_REF_PRICE:
                            new_ref = order_price
                        else:
                            new_ref = bar_close
                        if prev_position == 0 or sign(position) != sign(prev_position):
                            sl_cur = sl_stop
                            tsl_cur = tsl_stop
                            tp_cur = tp_stop
                            sl_ref = new_ref
                            tsl_ref = new_ref
                            tp_ref = new_ref
                        elif abs(position) > abs(prev_position):
                            if not math.isnan(sl_stop):
                                sl_cur = sl_stop
                                sl_ref = new_ref
                            if not math.isnan(tsl_stop):
                                tsl_cur = tsl_stop
                                tsl_ref = new_ref
                            if not math.isnan(tp_stop):
                                tp_cur = tp_stop
                                tp_ref = new_ref

        # ---- mark to market and accumulate metrics ----
        if position != 0:
            value = cash + position * bar_close
            exposure_bars += 1
        else:
            value = cash
        if keep_equity:
            equity[i, col] = value
        r_count += 1
        r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx, max_dd, max_dd_dur = (
            mark_bar(
                i,
                value,
                prev_value,
                r_sum,
                r_sumsq,
                down_sq,
                dd_started,
                peak_val,
                valley_val,
                peak_idx,
                max_dd,
                max_dd_dur,
            )
        )
        prev_value = value

        # ---- quiet stretch: bars with no signal and no active stop change nothing but prices ----
        # Tight loops with few live variables (the full bar above is several times slower).
        if not (use_stops and position != 0):
            j = i + 1
            if position == 0:
                # Flat: value stays the cash, every bar return is exactly 0, a drawdown neither
                # deepens nor recovers; only the peak index of a non-drawdown moves on.
                while j < n and not (
                    entries[j * r_entries, c_entries]
                    | exits[j * r_exits, c_exits]
                    | short_entries[j * r_sentries, c_sentries]
                    | short_exits[j * r_sexits, c_sexits]
                ):
                    if keep_equity:
                        equity[j, col] = value
                    j += 1
                r_count += j - i - 1
                if not dd_started and j - 1 > i:
                    peak_idx = j - 1
            else:
                while j < n and not (
                    entries[j * r_entries, c_entries]
                    | exits[j * r_exits, c_exits]
                    | short_entries[j * r_sentries, c_sentries]
                    | short_exits[j * r_sexits, c_sexits]
                ):
                    value = cash + position * close[j, c_close]
                    if keep_equity:
                        equity[j, col] = value
                    r_sum, r_sumsq, down_sq, dd_started, peak_val, valley_val, peak_idx, max_dd, max_dd_dur = (
                        mark_bar(j, value, prev_value, r_sum, r_sumsq, down_sq, dd_started, peak_val,
                                 valley_val, peak_idx, max_dd, max_dd_dur)
                    )  # fmt: skip
                    prev_value = value
                    j += 1
                exposure_bars += j - i - 1
                r_count += j - i - 1
            i = j - 1

    if dd_started:
        dur = n - 1 - peak_idx
        if dur > max_dd_dur:
            max_dd_dur = dur
        dd = (valley_val - peak_val) / peak_val
        if dd < max_dd:
            max_dd = dd

    # An open trade is valued at the last close (vectorbt's open exit trade).
    open_pnl = 0.0
    n_open = 0
    if in_trade and is_less(-entry_size_sum, 0.0):
        n_open = 1
        last_close = close[n - 1, c_close]
        entry_price = entry_gross_sum / entry_size_sum
        entry_val = entry_size_sum * entry_price
        val_diff = add(entry_size_sum * last_close, -entry_val)
        if val_diff != 0 and trade_dir == TRADE_SHORT:
            val_diff = -val_diff
        open_pnl = val_diff - entry_fees_sum
        if keep_trades:
            trades[t_ptr, T_COL] = col
            trades[t_ptr, T_SIZE] = entry_size_sum
            trades[t_ptr, T_ENTRY_IDX] = entry_idx
            trades[t_ptr, T_ENTRY_PRICE] = entry_price
            trades[t_ptr, T_ENTRY_FEES] = entry_fees_sum
            trades[t_ptr, T_EXIT_IDX] = n - 1
            trades[t_ptr, T_EXIT_PRICE] = last_close
            trades[t_ptr, T_EXIT_FEES] = 0.0
            trades[t_ptr, T_PNL] = open_pnl
            trades[t_ptr, T_RETURN] = open_pnl / entry_val
            trades[t_ptr, T_DIRECTION] = trade_dir
            trades[t_ptr, T_STATUS] = TRADE_OPEN
            trades[t_ptr, T_POSITION_ID] = position_id
            t_ptr += 1

    # ---- final metrics ----
    write_metrics(
        metrics,
        col,
        value,
        init_cash,
        ann_factor,
        r_count,
        r_sum,
        r_sumsq,
        down_sq,
        max_dd,
        max_dd_dur,
        n_trades_closed,
        n_open,
        n_wins,
        n_losses,
        sum_win,
        sum_loss,
        sum_win_ret,
        sum_loss_ret,
        best_ret,
        worst_ret,
        exposure_bars / n,
        total_fees,
        n_orders,
        open_pnl,
    )


if not CUDA_BUILD:
    import numpy as np
    from numba import njit, prange
    from numba import types as _t

    _RF2 = _t.Array(_t.float64, 2, "A", readonly=True)
    _RB2 = _t.Array(_t.boolean, 2, "A", readonly=True)
    _F2 = _t.Array(_t.float64, 2, "A")
    _I1 = _t.Array(_t.int64, 1, "A")
    _PRICES = _t.UniTuple(_RF2, 5)  # close, open, high, low, price
    _SIGNALS = _t.UniTuple(_RB2, 4)  # entries, exits, short_entries, short_exits
    _OUT = _t.Tuple(
        (_F2, _F2, _F2, _I1, _F2, _I1)
    )  # metrics, equity, orders, offsets, trades, offsets

    # One explicit signature with layout-agnostic ('A'), read-only inputs: C- and F-ordered
    # arrays share a single compiled (and disk-cached) kernel instead of one per layout.
    @njit(_t.void(_PRICES, _SIGNALS, _RF2, _t.float64, _OUT), cache=True, parallel=True, nogil=True)
    def simulate_nb(prices, signals, params, ann_factor, out):
        """Simulate every column of ``params`` in parallel (CPU); see :func:`simulate_column`."""
        for k in prange(params.shape[0]):
            # prange yields uint64; mixing it with int64 would type as float
            simulate_column(np.int64(k), prices, signals, params, ann_factor, out)
