"""``rebalance``: a frame of target weights in, one cash-sharing account trading to them out.

The weights become target-percent orders of :func:`~celeris.backtest.from_orders` on one account
(``cash_sharing=True``, ``call_seq="auto"``: sells first, so they release cash for the buys).
This module only decides *when* each row of weights is traded and checks the weights; the
simulation, fees and stats are ``from_orders``' and the :class:`~celeris.backtest.Book`'s.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest.annualisation import YearDays
from celeris.backtest.book import Book
from celeris.backtest.orders import from_orders
from celeris.data.panel import Panel, to_panel
from celeris.data.schema import check_time_index
from celeris.errors import CelerisTypeError, ConfigError, DataError, did_you_mean

#: Slack on the gross and net sums of a weights row (rounding of weights that sum to 1).
BUDGET_TOLERANCE = 1e-9


def rebalance(
    bars: Any,
    weights: pd.DataFrame,
    *,
    every: str | pd.Timedelta | Sequence[Any] | pd.DatetimeIndex | None = None,
    threshold: float = 0.0,
    fees: Any = 0.0,
    fixed_fees: Any = 0.0,
    slippage: Any = 0.0,
    init_cash: float = 100_000.0,
    execution: str = "next_open",
    leverage: float = 1.0,
    freq: Any = None,
    year_days: float | YearDays | None = None,
    device: str = "auto",
) -> Book:
    """Trade one account to target weights at each rebalance and return its :class:`Book`.

    A weights row dated ``t`` is a decision taken at ``t``: it applies at the first bar whose
    timestamp is at or after ``t`` (the *rebalance bar*), where every symbol is ordered to its
    target fraction of the account's value (vectorbt's ``targetpercent``). As for every order
    in Celeris, the orders of a rebalance bar fill at the next bar's open
    (``execution="next_open"``; a rebalance on the last bar therefore trades nothing) or at
    that bar's close (``execution="close"``). Weights computed from data up to the rebalance
    bar's close carry no look-ahead under either execution.

    Parameters
    ----------
    bars
        Bars of the assets: anything :func:`~celeris.data.panel.to_panel` takes (a dict of
        bar frames, a frame with ``(symbol, field)`` columns, a :class:`~celeris.data.panel.Panel`).
        Assets may list late or delist early (NaN bars outside their listed span).
    weights : pandas.DataFrame
        Target weights: index the decision times (UTC, sorted, unique), columns symbols of
        ``bars``, values fractions of the account's value (negative: short). A symbol missing
        from the columns is held at 0. NaN is an error: write 0 to hold nothing. A row must have
        ``sum(|w|) <= leverage`` and ``sum(w) <= 1`` (spot positions cannot borrow cash; short
        sales credit it), each within 1e-9. A row dated after the last bar is an error.
    every
        Which bars rebalance. ``None`` (default): the rebalance bar of every weights row (two
        rows applying at the same bar are an error). A period (``"7D"``): the first bar at or
        after ``t0 + k * every`` for k = 0, 1, ..., where ``t0`` is the rebalance bar of the
        first weights row. Or a list of dates (sorted, unique; naive dates are read as UTC),
        each applied at its first bar at or after it. With a period or dates, each rebalance uses the latest weights row dated at
        or before its bar.
    threshold
        Skip a rebalance unless some symbol's current weight is at least ``threshold`` away from
        its target (absolute, in fractions: 0.05 is 5 points). Weights are measured at the fill
        bar, at the order price, against the live positions. 0 (default): always trade.
    fees, fixed_fees, slippage
        As in :func:`~celeris.backtest.from_orders`: a scalar or one value per symbol of
        ``bars``.
    init_cash
        The account's starting cash.
    execution
        ``"next_open"`` (default) or ``"close"``, as above.
    leverage
        Gross budget: the largest ``sum(|w|)`` a row may ask for (>= 1).
    freq, year_days, device
        As in :func:`~celeris.backtest.from_signals`.

    Returns
    -------
    Book
        One group (``"group"``) with one column per symbol of ``bars``. ``book.turnover``,
        ``book.stats()["total_fees"]`` and ``book.orders`` report the rebalancing's cost.

    Raises
    ------
    CelerisTypeError
        ``weights`` is not a DataFrame or not numeric.
    ConfigError
        A weights column names no symbol of ``bars``; ``leverage < 1``; a bad ``threshold``,
        ``every`` or ``execution``.
    DataError
        NaN or infinite weights (naming the symbol and date), a row above the gross or net
        budget, a row or rebalance date after the last bar, two rows or dates applying at the
        same bar, a rebalance date before the first weights row, a non-zero weight where its
        symbol is not tradable (before its listing, or from its delisting bar on).

    Examples
    --------
    >>> import pandas as pd
    >>> import celeris
    >>> from celeris.data import load
    >>> bars = {"sp500": load("sample:sp500"), "nasdaq": load("sample:nasdaq")}
    >>> weights = pd.DataFrame({"sp500": [0.6], "nasdaq": [0.4]},
    ...                        index=pd.DatetimeIndex(["1999-01-04"], tz="UTC"))
    >>> book = celeris.backtest.rebalance(bars, weights, every="30D", threshold=0.05)
    >>> book.weights.iloc[-1].round(2).tolist()
    [0.61, 0.39]
    """
    I.check_choice("execution", execution, I.EXECUTIONS)
    _check_leverage(leverage)
    _check_threshold(threshold)
    panel = to_panel(bars)
    targets = rebalance_targets(panel, weights, every=every, leverage=leverage)
    _check_tradable(panel, targets, execution)
    return from_orders(
        panel,
        targets,
        size_type="targetpercent",
        execution=execution,
        fees=fees,
        fixed_fees=fixed_fees,
        slippage=slippage,
        init_cash=init_cash,
        group_by=True,
        cash_sharing=True,
        call_seq="auto",
        freq=freq,
        year_days=year_days,
        device=device,
        _threshold=float(threshold),
    )


def rebalance_targets(
    bars: Any,
    weights: pd.DataFrame,
    *,
    every: str | pd.Timedelta | Sequence[Any] | pd.DatetimeIndex | None = None,
    leverage: float = 1.0,
) -> pd.DataFrame:
    """Return the target-percent frame :func:`rebalance` gives ``from_orders``.

    Bars x symbols: the target weights at each rebalance bar (0 for symbols the weights do
    not name), NaN at every other bar (no order). ``weights``, ``every`` and ``leverage`` are
    checked as in :func:`rebalance`.
    """
    _check_leverage(leverage)
    panel = bars if isinstance(bars, Panel) else to_panel(bars)
    frame = _check_weights(weights, panel, leverage)
    times = pd.DatetimeIndex(frame.index)
    index = panel.index
    rows = _row_bars(times, index, "weights row")
    if every is None:
        _check_distinct(rows, times, index, "weights rows")
        bar_pos, row_pos = rows, np.arange(len(frame))
    else:
        bar_pos = _schedule(every, index, int(rows[0]), times[0])
        # The latest row dated at or before each rebalance bar.
        row_pos = times.searchsorted(index[bar_pos], side="right") - 1
    values = frame.reindex(columns=panel.symbols, fill_value=0.0).to_numpy(dtype=np.float64)
    out = np.full((len(index), len(panel.symbols)), np.nan)
    out[bar_pos] = values[row_pos]
    return pd.DataFrame(out, index=index, columns=panel.symbols)


def _check_leverage(leverage: Any) -> None:
    if isinstance(leverage, bool) or not isinstance(leverage, numbers.Real):
        raise CelerisTypeError(f"leverage must be a number, got {leverage!r}")
    if not math.isfinite(leverage) or leverage < 1:
        raise ConfigError(
            f"leverage must be a finite number >= 1 (the gross budget, sum of |weight|), "
            f"got {leverage!r}"
        )


def _check_threshold(threshold: Any) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise CelerisTypeError(f"threshold must be a number, got {threshold!r}")
    if not math.isfinite(threshold) or threshold < 0:
        raise ConfigError(
            f"threshold must be a finite weight distance >= 0 (0.05: 5 points), got {threshold!r}"
        )


def _check_weights(weights: Any, panel: Panel, leverage: float) -> pd.DataFrame:
    """The weights frame, checked: known symbols, time index, finite values, within budget."""
    if not isinstance(weights, pd.DataFrame):
        raise CelerisTypeError(
            "weights must be a DataFrame (index: decision times, columns: symbols), got "
            f"{type(weights).__name__}"
        )
    if weights.empty:
        raise DataError(
            f"weights is empty ({weights.shape[0]} rows x {weights.shape[1]} columns); give at "
            "least one row of target weights"
        )
    symbols = [str(s) for s in panel.symbols]
    if weights.columns.has_duplicates:
        dup = weights.columns[weights.columns.duplicated()][0]
        raise DataError(f"weights has the column {dup!r} twice")
    for col in weights.columns:
        if col not in panel.symbols:
            raise ConfigError(
                f"weights column {col!r} is not a symbol of the bars"
                f"{did_you_mean(str(col), symbols)}; the bars have {', '.join(symbols)}"
            )
    check_time_index(weights.index, "weights index")
    for col in weights.columns:
        dtype = weights[col].dtype
        if not pd.api.types.is_numeric_dtype(dtype):
            raise CelerisTypeError(f"weights column {col!r} must be numeric, got dtype {dtype}")
    values = weights.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"weights of {weights.columns[col]!r} at {weights.index[row]} is {values[row, col]}; "
            "every weight must be a finite number (write 0 to hold nothing)"
        )
    gross = np.abs(values).sum(axis=1)
    over = np.flatnonzero(gross > leverage + BUDGET_TOLERANCE)
    if over.size:
        r = int(over[0])
        raise DataError(
            f"weights at {weights.index[r]} have a gross exposure (sum of |weight|) of "
            f"{gross[r]:.10g}, above leverage={leverage:g}; scale the row down or pass "
            f"leverage >= {gross[r]:.10g}"
        )
    net = values.sum(axis=1)
    over = np.flatnonzero(net > 1.0 + BUDGET_TOLERANCE)
    if over.size:
        r = int(over[0])
        raise DataError(
            f"weights at {weights.index[r]} sum to {net[r]:.10g} net (longs minus shorts), above "
            "the budget of 1 (the account's value: buying more than the cash there is would "
            "need borrowed cash, which spot positions cannot take)"
        )
    return pd.DataFrame(values, index=weights.index, columns=weights.columns)


def _row_bars(times: pd.DatetimeIndex, index: pd.DatetimeIndex, what: str) -> np.ndarray:
    """Position of the first bar at or after each time; a time after the last bar is an error."""
    pos = index.searchsorted(times, side="left")
    after = np.flatnonzero(pos >= len(index))
    if after.size:
        raise DataError(
            f"{what} {times[after[0]]} is after the last bar ({index[-1]}); no bar can apply it "
            "(drop the rows past the data's end or extend the bars)"
        )
    return pos.astype(np.int64)


def _check_distinct(
    pos: np.ndarray, times: pd.DatetimeIndex, index: pd.DatetimeIndex, what: str
) -> None:
    same = np.flatnonzero(np.diff(pos) == 0)
    if same.size:
        k = int(same[0])
        raise DataError(
            f"{what} {times[k]} and {times[k + 1]} both apply at the bar {index[pos[k]]}; keep "
            "one of them (or pass every=... to rebalance on a schedule with the latest weights)"
        )


def _schedule(
    every: Any, index: pd.DatetimeIndex, first_bar: int, first_row: pd.Timestamp
) -> np.ndarray:
    """Rebalance bar positions of ``every`` (a period or explicit dates)."""
    if isinstance(every, str | pd.Timedelta) or (
        isinstance(every, np.timedelta64 | numbers.Number) and not isinstance(every, bool)
    ):
        period = _period(every)
        start = index[first_bar]
        count = int((index[-1] - start) // period) + 1
        times = start + period * np.arange(count)
        pos = np.unique(index.searchsorted(times, side="left"))
        return pos[pos < len(index)].astype(np.int64)
    if isinstance(every, Sequence | pd.Index | np.ndarray) and not isinstance(every, bytes):
        try:
            dates = pd.DatetimeIndex(list(every))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"every must be a period like '7D' or a list of dates: {exc}"
            ) from exc
        if dates.tz is None:  # a schedule written as plain dates means UTC, as the bars are
            dates = dates.tz_localize("UTC")
        if len(dates) == 0:
            raise ConfigError("every is an empty list of dates; give at least one date or None")
        check_time_index(dates, "every (rebalance dates)")
        pos = _row_bars(dates, index, "rebalance date")
        _check_distinct(pos, dates, index, "rebalance dates")
        early = np.flatnonzero(index[pos] < first_row)
        if early.size:
            d = dates[early[0]]
            raise DataError(
                f"rebalance date {d} (bar {index[pos[early[0]]]}) comes before the first weights "
                f"row ({first_row}): no weights are known there"
            )
        return pos
    raise ConfigError(
        f"every must be None, a period like '7D' or a list of dates, got {type(every).__name__}"
    )


def _period(every: Any) -> pd.Timedelta:
    if isinstance(every, numbers.Number) and not isinstance(every, np.timedelta64):
        raise ConfigError(f"every must be a period with a unit like '7D', got {every!r}")
    try:
        period = pd.Timedelta(every)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"every must be a period like '7D', got {every!r}: {exc}") from exc
    if pd.isna(period) or period <= pd.Timedelta(0):
        raise ConfigError(f"every must be a positive period like '7D', got {every!r}")
    return period


def _check_tradable(panel: Panel, targets: pd.DataFrame, execution: str) -> None:
    """Refuse a non-zero target where its symbol cannot trade at the fill bar.

    Orders fill on the rebalance bar (``close``) or the next (``next_open``). A symbol trades
    from its first listed bar up to, not including, its delisting bar (where the kernel settles
    the position at the last close instead of filling orders); on the data's last bar it trades.
    """
    values = targets.to_numpy()
    n = len(panel.index)
    shift = 1 if execution == "next_open" else 0
    rows = np.flatnonzero(~np.isnan(values).all(axis=1))
    fill = rows + shift
    rows, fill = rows[fill < n], fill[fill < n]
    first = panel.index.get_indexer(pd.DatetimeIndex(panel.first_valid))
    last = panel.index.get_indexer(pd.DatetimeIndex(panel.last_valid))
    trade_end = np.where(last < n - 1, last - 1, last)  # [A] last bar an order can fill
    nonzero = values[rows] != 0
    closed = (fill[:, None] < first) | (fill[:, None] > trade_end)
    bad = nonzero & closed
    if bad.any():
        r, a = np.argwhere(bad)[0]
        symbol = panel.symbols[a]
        raise DataError(
            f"weights give {symbol!r} {values[rows[r], a]:g} at the rebalance bar "
            f"{panel.index[rows[r]]}, whose orders fill at {panel.index[fill[r]]}, but "
            f"{symbol!r} trades only from {panel.index[first[a]]} to "
            f"{panel.index[trade_end[a]]} (listed to {panel.index[last[a]]}); give it 0 there"
        )
