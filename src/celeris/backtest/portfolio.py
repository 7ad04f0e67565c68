"""``from_signals`` and the :class:`Portfolio` it returns."""

from __future__ import annotations

import inspect
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays, resolve_year_days
from celeris.backtest.engine import KernelInputs, KernelOutputs, simulate
from celeris.backtest.returns import returns_metrics
from celeris.errors import CelerisTypeError, CelerisWarning, ConfigError, did_you_mean

#: Columns of :meth:`Portfolio.stats`, in order, with their kernel slot and meaning.
METRICS: dict[str, tuple[int, str]] = {
    "end_value": (K.M_END_VALUE, "portfolio value at the last bar"),
    "total_return": (K.M_TOTAL_RETURN, "end value / start value - 1"),
    "cagr": (K.M_CAGR, "compound annual growth rate, (end/start)^(ann_factor/n_bars) - 1"),
    "volatility": (K.M_VOLATILITY, "annualised std of bar returns (ddof=1)"),
    "sharpe": (K.M_SHARPE, "mean / std of bar returns * sqrt(ann_factor), risk-free 0"),
    "sortino": (K.M_SORTINO, "mean return * ann_factor / annualised downside deviation"),
    "calmar": (K.M_CALMAR, "cagr / max_drawdown"),
    "max_drawdown": (K.M_MAX_DD, "largest peak-to-valley fall of value, as a positive fraction"),
    "max_drawdown_duration": (K.M_MAX_DD_DURATION, "longest drawdown, peak to recovery (or end)"),
    "trades": (K.M_TRADES, "trades, including one still open at the end"),
    "closed_trades": (K.M_CLOSED_TRADES, "closed trades"),
    "win_rate": (K.M_WIN_RATE, "share of closed trades with pnl > 0"),
    "profit_factor": (K.M_PROFIT_FACTOR, "gross profit / gross loss of closed trades"),
    "expectancy": (K.M_EXPECTANCY, "expected pnl per closed trade (cash)"),
    "best_trade": (K.M_BEST_TRADE, "best closed-trade return"),
    "worst_trade": (K.M_WORST_TRADE, "worst closed-trade return"),
    "avg_winning_trade": (K.M_AVG_WIN, "mean return of winning closed trades"),
    "avg_losing_trade": (K.M_AVG_LOSS, "mean return of losing closed trades"),
    "exposure": (K.M_EXPOSURE, "share of bars that end with an open position"),
    "total_fees": (K.M_TOTAL_FEES, "fees paid (cash)"),
    "orders": (K.M_ORDERS, "filled orders"),
    "open_trade_pnl": (K.M_OPEN_PNL, "unrealised pnl of the open trade at the last close"),
}
#: Metrics that are fractions (shown as percents) and cash amounts, for reports and tables.
PERCENT_METRICS = frozenset(
    {
        "total_return",
        "cagr",
        "volatility",
        "max_drawdown",
        "win_rate",
        "best_trade",
        "worst_trade",
        "avg_winning_trade",
        "avg_losing_trade",
        "exposure",
        "benchmark_return",
        "benchmark_max_drawdown",
    }
)
#: Buy-and-hold of the same bars, added to :meth:`Portfolio.stats` after :data:`METRICS`.
BENCHMARK_METRICS = ("benchmark_return", "benchmark_sharpe", "benchmark_max_drawdown")
CASH_METRICS = frozenset({"start_value", "end_value", "expectancy", "total_fees", "open_trade_pnl"})
_COUNT_METRICS = ("trades", "closed_trades", "orders")
_HIGHER_IS_WORSE = ("max_drawdown", "max_drawdown_duration", "volatility", "total_fees")


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
    _copy: bool = True,
    _first_signals: dict[str, bool] | None = None,
    **unknown: Any,
) -> Portfolio:
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
    if unknown:
        name = next(iter(unknown))
        raise ConfigError(
            f"from_signals got an unknown parameter {name!r}{did_you_mean(name, _keywords())}"
        )
    I.check_choice("execution", execution, I.EXECUTIONS)
    I.check_choice("stop_exit_price", stop_exit_price, I.STOP_EXIT_PRICES)

    # ---- prices ----
    if isinstance(close, pd.DataFrame) and "close" in close.columns and close.columns.nlevels == 1:
        bars = close
        close = bars["close"]
        open = bars["open"] if open is None and "open" in bars else open
        high = bars["high"] if high is None and "high" in bars else high
        low = bars["low"] if low is None and "low" in bars else low
    index = close.index if isinstance(close, pd.Series | pd.DataFrame) else None
    if index is not None:
        I.check_index(index)
    close_arr = I.as_2d_float("close", close, copy=_copy)
    n_bars = close_arr.shape[0]
    open_arr = close_arr if open is None else I.as_2d_float("open", open, n_bars, copy=_copy)
    # Without high/low, a bar's range is its open and close (vectorbt does the same).
    if high is None:
        high_arr = close_arr if open is None else np.maximum(open_arr, close_arr)
    else:
        high_arr = I.as_2d_float("high", high, n_bars, copy=_copy)
    if low is None:
        low_arr = close_arr if open is None else np.minimum(open_arr, close_arr)
    else:
        low_arr = I.as_2d_float("low", low, n_bars, copy=_copy)
    if price is not None and execution == "next_open":
        raise ConfigError(
            "price=... sets the order price of execution='close'; pass execution='close' with "
            "it (the default, 'next_open', fills at the next bar's open)"
        )
    price_arr = close_arr if price is None else I.as_2d_float("price", price, n_bars, copy=_copy)
    if execution == "next_open":
        if open is None:
            raise ConfigError(
                "execution='next_open' (the default: fill at the next bar's open) needs open "
                "prices: pass a bar frame or open=..., or execution='close' to fill at the "
                "signal bar's close"
            )
        price_arr = open_arr

    # ---- signals ----
    def signal(name: str, data: Any) -> np.ndarray:
        if data is None:
            return np.zeros((1, 1), dtype=np.bool_)
        arr = I.as_2d_bool(name, data, n_bars, index, copy=_copy and execution != "next_open")
        if execution == "next_open":
            shifted = np.zeros_like(arr)
            shifted[1:] = arr[:-1]
            # A walk-forward window's signal from the bar before it fills at its first open.
            if _first_signals is not None:
                shifted[0] = bool(_first_signals.get(name, False))
            return shifted
        if _first_signals is not None:
            arr = arr.copy()
            arr[0] = bool(_first_signals.get(name, False))
        return arr

    if entries is None and short_entries is None:
        raise ConfigError("no entries: pass entries=... (or short_entries=...)")
    sig = {
        "entries": signal("entries", entries),
        "exits": signal("exits", exits),
        "short_entries": signal("short_entries", short_entries),
        "short_exits": signal("short_exits", short_exits),
    }
    ls_mode = short_entries is not None or short_exits is not None

    # ---- parameters ----
    raw: dict[str, np.ndarray] = {
        "init_cash": I.param_values("init_cash", init_cash),
        "fees": I.param_values("fees", fees),
        "fixed_fees": I.param_values("fixed_fees", fixed_fees),
        "slippage": I.param_values("slippage", slippage),
        "size": I.param_values("size", size),
        "sl_stop": I.param_values("sl_stop", sl_stop),
        "tsl_stop": I.param_values("tsl_stop", tsl_stop),
        "tp_stop": I.param_values("tp_stop", tp_stop),
        "accumulate": I.param_values("accumulate", accumulate),
        "size_granularity": I.param_values("size_granularity", size_granularity),
    }
    I.check_range("init_cash", raw["init_cash"], low=0, low_inclusive=False)
    I.check_range("fees", raw["fees"], low=0, high=1)
    I.check_range("fixed_fees", raw["fixed_fees"], low=0)
    I.check_range("slippage", raw["slippage"], low=0, high=1)
    I.check_range("size", raw["size"], low=0, low_inclusive=False, allow_inf=True)
    I.check_range("sl_stop", raw["sl_stop"], low=0, high=1, low_inclusive=False, allow_nan=True)
    I.check_range("tsl_stop", raw["tsl_stop"], low=0, high=1, low_inclusive=False, allow_nan=True)
    I.check_range(
        "tp_stop", raw["tp_stop"], low=0, low_inclusive=False, allow_nan=True, allow_inf=True
    )
    I.check_range(
        "size_granularity", raw["size_granularity"], low=0, low_inclusive=False, allow_nan=True
    )
    if not np.isin(raw["accumulate"], (0.0, 1.0)).all():
        raise ConfigError(f"accumulate must be True or False, got {accumulate!r}")
    size_type_codes = I.choice_codes("size_type", size_type, I.SIZE_TYPES)
    direction_codes = I.choice_codes("direction", direction, I.DIRECTIONS)
    if ls_mode:
        if (direction_codes == K.SHORT_ONLY).any():
            raise ConfigError(
                "direction='shortonly' cannot be combined with short_entries/short_exits"
            )
        direction_codes = np.full_like(
            direction_codes, K.LONG_ONLY
        )  # entries/exits are long signals
    raw["size_type"] = size_type_codes
    raw["direction"] = direction_codes
    if (raw["tsl_stop"] >= 1).any():
        raise ConfigError("tsl_stop must be < 1")

    width = I.broadcast_width(
        {
            "close": close_arr.shape[1],
            "open": open_arr.shape[1],
            "high": high_arr.shape[1],
            "low": low_arr.shape[1],
            "price": price_arr.shape[1],
            **{k: v.shape[1] for k, v in sig.items()},
            **{k: v.size for k, v in raw.items()},
        }
    )
    params = np.empty((width, K.N_PARAMS), dtype=np.float64)
    slots = {
        "init_cash": K.P_INIT_CASH,
        "fees": K.P_FEES,
        "fixed_fees": K.P_FIXED_FEES,
        "slippage": K.P_SLIPPAGE,
        "size": K.P_SIZE,
        "size_type": K.P_SIZE_TYPE,
        "direction": K.P_DIRECTION,
        "sl_stop": K.P_SL,
        "tsl_stop": K.P_TSL,
        "tp_stop": K.P_TP,
        "accumulate": K.P_ACCUMULATE,
        "size_granularity": K.P_GRANULARITY,
    }
    for key, slot in slots.items():
        params[:, slot] = np.broadcast_to(raw[key], (width,))
    percent = params[:, K.P_SIZE_TYPE] == K.PERCENT
    if percent.any():
        sizes = params[percent, K.P_SIZE]
        if (~np.isfinite(sizes) | (sizes > 1)).any():
            raise ConfigError(
                "size_type='percent' needs 0 < size <= 1 (a fraction of available cash)"
            )
        if ls_mode or (params[percent, K.P_DIRECTION] == K.BOTH).any():
            raise ConfigError(
                "size_type='percent' cannot reverse positions; use 'amount' or 'value' with direction='both' "
                "or short signals"
            )
    params[:, K.P_STOP_EXIT] = I.STOP_EXIT_PRICES[stop_exit_price]
    params[:, K.P_STOP_REF] = K.STOP_REF_PRICE if execution == "next_open" else K.STOP_REF_CLOSE

    td = I.infer_freq(index if index is not None else pd.RangeIndex(n_bars), freq)
    annual = resolve_year_days(index, year_days)
    ann_factor = float(annual.days * pd.Timedelta(days=1) / td) if td is not None else float("nan")

    param_axes = {
        k: v
        for k, v in {
            "init_cash": init_cash,
            "fees": fees,
            "fixed_fees": fixed_fees,
            "slippage": slippage,
            "size": size,
            "sl_stop": sl_stop,
            "tsl_stop": tsl_stop,
            "tp_stop": tp_stop,
            "size_type": size_type,
            "direction": direction,
            "accumulate": accumulate,
        }.items()
        if not np.isscalar(v) and v is not None
    }
    columns = I.columns_from(
        [entries, exits, short_entries, short_exits, close, price],
        width,
        {k: np.asarray(v) for k, v in param_axes.items()},
    )
    inputs = KernelInputs(
        close=close_arr,
        open=open_arr,
        high=high_arr,
        low=low_arr,
        price=price_arr,
        entries=sig["entries"],
        exits=sig["exits"],
        short_entries=sig["short_entries"],
        short_exits=sig["short_exits"],
        params=params,
        ann_factor=ann_factor,
    )
    bar_index = index if index is not None else pd.RangeIndex(n_bars, name="bar")
    return Portfolio(
        inputs,
        bar_index,
        columns,
        freq=td,
        year_days=annual,
        execution=execution,
        device=device,
    )


def metrics_frame(metrics: np.ndarray, index: pd.Index, freq: pd.Timedelta | None) -> pd.DataFrame:
    """Kernel metric rows as a frame of :data:`METRICS` (counts as ints, durations as Timedelta)."""
    data: dict[str, Any] = {}
    for name, (slot, _) in METRICS.items():
        col = metrics[:, slot]
        if name in _COUNT_METRICS:
            data[name] = col.astype(np.int64)
        elif name == "max_drawdown_duration" and freq is not None:
            data[name] = pd.to_timedelta(col * freq.value, unit="ns")
        else:
            data[name] = col
    return pd.DataFrame(data, index=index)


def rank_order(values: np.ndarray, metric: str) -> np.ndarray:
    """Positions of finite ``values`` from best to worst (ascending for drawdown-like metrics)."""
    key = np.asarray(values, dtype=np.float64)
    order = np.argsort(key if metric in _HIGHER_IS_WORSE else -key, kind="stable")
    return order[np.isfinite(key[order])]


def _keywords() -> list[str]:
    return [p for p in inspect.signature(from_signals).parameters if p != "unknown" and p[0] != "_"]


#: How each ``execution`` fills an order, in words, for reports.
FILL_RULES = {
    "next_open": "fills at the next bar's open",
    "close": "fills at the signal bar's close",
}


class Portfolio:
    """Result of a simulation: metrics for every column, curves and records on request.

    Metrics are computed inside the kernel, so a large sweep costs only (n_cols x 22) floats.
    ``equity``, ``returns``, ``drawdown``, ``orders`` and ``trades`` re-run the (fast) kernel for
    the columns held and are cached; select columns first (``pf[label]`` or :meth:`best`) to keep
    them small.
    """

    def __init__(
        self,
        inputs: KernelInputs,
        index: pd.Index,
        columns: pd.Index,
        *,
        freq: pd.Timedelta | None,
        year_days: YearDays,
        execution: str,
        device: str = "auto",
        outputs: KernelOutputs | None = None,
    ) -> None:
        self._inputs = inputs
        self.index = index
        self.columns = columns
        self.freq = freq
        self.annualisation = year_days
        self.execution = execution
        self.device = device
        #: What was backtested, for report titles (``"sma_cross (fast=10, slow=50)"``); set by
        #: sweeps and the CLI, or by you.
        self.name: str | None = None
        self._outputs = outputs if outputs is not None else simulate(inputs, device=device)

    # ---- selection ----
    def __len__(self) -> int:
        return len(self.columns)

    def __repr__(self) -> str:
        return f"Portfolio({len(self.index)} bars x {len(self.columns)} columns)"

    def __getitem__(self, key: Any) -> Portfolio:
        """Select columns by label (a parameter tuple such as ``pf[(10, 50)]``) or label list."""
        try:
            loc = self.columns.get_indexer_for([key] if not isinstance(key, list) else key)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            loc = np.array([-1])
        if (loc < 0).any():
            raise KeyError(f"no column {key!r}; columns are named {list(self.columns.names)}")
        return self.iloc(loc)

    def iloc(self, positions: Any) -> Portfolio:
        """Select columns by position."""
        arr = np.atleast_1d(np.asarray(positions))
        if arr.dtype == np.bool_:
            if arr.shape != (len(self.columns),):
                raise ConfigError(
                    f"a boolean mask must have one entry per column ({len(self.columns)})"
                )
            arr = np.flatnonzero(arr)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise CelerisTypeError(
                f"iloc takes integer positions or a boolean mask, got dtype {arr.dtype}"
            )
        n = len(self.columns)
        pos = arr.astype(np.int64)
        if ((pos < -n) | (pos >= n)).any():
            raise ConfigError(
                f"column position out of range for {n} columns: {pos[(pos < -n) | (pos >= n)][0]}"
            )
        pos = pos % n
        out = KernelOutputs(self._outputs.metrics[pos], None, None, None)
        selected = Portfolio(
            self._inputs.select(pos),
            self.index,
            self.columns[pos],
            freq=self.freq,
            year_days=self.annualisation,
            execution=self.execution,
            device=self.device,
            outputs=out,
        )
        selected.name = self.name
        return selected

    # ---- how it was simulated ----
    @property
    def year_days(self) -> float:
        """Days per year used to annualise (see :attr:`annualisation` for where it came from)."""
        return self.annualisation.days

    @property
    def fill_rule(self) -> str:
        """How orders filled, in words (``"fills at the next bar's open"``)."""
        return FILL_RULES[self.execution]

    def describe(self) -> str:
        """One line naming the fill rule and the annualisation, for report titles and tables."""
        return f"{self.execution} ({self.fill_rule}); {self.annualisation.describe()}"

    # ---- metrics ----
    @property
    def ann_factor(self) -> float:
        """Bars per year used to annualise (``year_days * 1 day / freq``)."""
        return self._inputs.ann_factor

    @property
    def init_cash(self) -> pd.Series:
        return pd.Series(
            self._inputs.params[:, K.P_INIT_CASH], index=self.columns, name="init_cash"
        )

    def stats(self) -> pd.DataFrame:
        """Return one row per column with every metric (see :data:`METRICS` for definitions).

        Returns are fractions (0.12 = 12%); ``max_drawdown_duration`` is a Timedelta when the bar
        spacing is known, else a bar count. ``benchmark_return``, ``benchmark_sharpe`` and
        ``benchmark_max_drawdown`` are those of buying and holding the same bars (first close
        to last close, no costs); ``execution`` and ``year_days`` say how orders filled and how
        the figures were annualised (``stats().attrs["setup"]`` says it in words). Without a datetime index or ``freq=`` the bar spacing
        is unknown and the annualised metrics (cagr, volatility, sharpe, sortino, calmar) are NaN,
        with a :class:`~celeris.errors.CelerisWarning`.
        """
        if np.isnan(self.ann_factor):
            warnings.warn(
                "bar spacing unknown (no datetime index and no freq=...): annualised metrics are NaN; "
                "pass freq='1h' (or the data's spacing) to from_signals",
                CelerisWarning,
                stacklevel=2,
            )
        frame = metrics_frame(self._outputs.metrics, self.columns, self.freq)
        frame.insert(0, "start_value", self._inputs.params[:, K.P_INIT_CASH])
        frame.insert(0, "end", self.index[-1])
        frame.insert(0, "start", self.index[0])
        for name, values in self._benchmark().items():
            frame[name] = values
        frame["execution"] = self.execution
        frame["year_days"] = self.annualisation.days
        frame.attrs["setup"] = self.describe()
        return frame

    def _benchmark(self) -> dict[str, np.ndarray]:
        """Buy-and-hold of the same bars: hold from the first close to the last, no costs."""
        close = self._inputs.close  # [n_bars, 1 or n_cols]
        out = {name: np.empty(close.shape[1]) for name in BENCHMARK_METRICS}
        for j in range(close.shape[1]):
            rets = np.empty(close.shape[0])
            rets[0] = 0.0
            rets[1:] = close[1:, j] / close[:-1, j] - 1.0
            m = returns_metrics(rets, self.ann_factor)
            for name in BENCHMARK_METRICS:
                key = name.removeprefix("benchmark_")
                out[name][j] = m["total_return" if key == "return" else key]
        return {k: np.broadcast_to(v, (len(self.columns),)) for k, v in out.items()}

    def best(self, metric: str = "sharpe", n: int = 10) -> pd.DataFrame:
        """Return the ``n`` best columns by ``metric`` (lowest first for drawdown-like metrics)."""
        if metric not in METRICS:
            raise ConfigError(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}")
        if n < 1:
            raise ConfigError(f"n must be >= 1, got {n}")
        return self.stats().iloc[
            rank_order(self._outputs.metrics[:, METRICS[metric][0]], metric)[:n]
        ]

    # ---- curves and records (re-run on demand) ----
    @cached_property
    def _full(self) -> KernelOutputs:
        return simulate(self._inputs, device=self.device, keep_equity=True, keep_records=True)

    @property
    def equity(self) -> pd.DataFrame:
        """Portfolio value (cash + position x close) at each bar's close."""
        equity = self._full.equity
        assert equity is not None
        return pd.DataFrame(equity, index=self.index, columns=self.columns)

    @property
    def returns(self) -> pd.DataFrame:
        """Bar returns of the equity curve; the first bar is measured against ``init_cash``."""
        equity = self.equity
        prev = equity.shift(1)
        prev.iloc[0] = self._inputs.params[:, K.P_INIT_CASH]
        return equity / prev - 1.0

    @property
    def drawdown(self) -> pd.DataFrame:
        """Drawdown of the equity curve from its running peak (<= 0)."""
        equity = self.equity
        return equity / equity.cummax() - 1.0

    @property
    def orders(self) -> pd.DataFrame:
        """Filled orders: column, time, side, size, fill price (after slippage), fees, stop flag."""
        rec = self._full.orders
        assert rec is not None
        cols = rec[:, K.O_COL].astype(np.int64)
        idx = rec[:, K.O_IDX].astype(np.int64)
        return pd.DataFrame(
            {
                "column": self._labels(cols),
                "time": self.index[idx],
                "bar": idx,
                "side": np.where(rec[:, K.O_SIDE] == K.BUY, "buy", "sell"),
                "size": rec[:, K.O_SIZE],
                "price": rec[:, K.O_PRICE],
                "fees": rec[:, K.O_FEES],
                "stop": rec[:, K.O_STOP] == 1.0,
            }
        )

    @property
    def trades(self) -> pd.DataFrame:
        """Trades as vectorbt's exit trades: one per exit (an open trade is valued at the last close)."""
        rec = self._full.trades
        assert rec is not None
        cols = rec[:, K.T_COL].astype(np.int64)
        entry = rec[:, K.T_ENTRY_IDX].astype(np.int64)
        exit_ = rec[:, K.T_EXIT_IDX].astype(np.int64)
        return pd.DataFrame(
            {
                "column": self._labels(cols),
                "direction": np.where(rec[:, K.T_DIRECTION] == K.TRADE_LONG, "long", "short"),
                "status": np.where(rec[:, K.T_STATUS] == K.TRADE_CLOSED, "closed", "open"),
                "size": rec[:, K.T_SIZE],
                "entry_time": self.index[entry],
                "entry_bar": entry,
                "entry_price": rec[:, K.T_ENTRY_PRICE],
                "entry_fees": rec[:, K.T_ENTRY_FEES],
                "exit_time": self.index[exit_],
                "exit_bar": exit_,
                "exit_price": rec[:, K.T_EXIT_PRICE],
                "exit_fees": rec[:, K.T_EXIT_FEES],
                "pnl": rec[:, K.T_PNL],
                "return": rec[:, K.T_RETURN],
                "position_id": rec[:, K.T_POSITION_ID].astype(np.int64),
            }
        )

    def _labels(self, positions: np.ndarray) -> list[Any]:
        return list(self.columns[positions]) if len(positions) else []

    @property
    def close(self) -> pd.DataFrame:
        """Close prices broadcast to the portfolio's columns."""
        arr = np.broadcast_to(self._inputs.close, (len(self.index), len(self.columns)))
        return pd.DataFrame(arr, index=self.index, columns=self.columns)

    # ---- reports ----
    def to_html(self, path: str | Path, *, column: Any = None, title: str | None = None) -> Path:
        """Write an interactive HTML report (price with trades, equity, drawdown, stats; a heat-map
        of the sweep when the columns have two parameter levels). Return the path."""
        from celeris.backtest.report import write_html

        return write_html(self, Path(path), column=column, title=title)

    def plot(self, *, column: Any = None, title: str | None = None) -> Any:
        """Return a plotly Figure of price with trades, equity and drawdown for one column.

        For notebooks: nothing is written (``fig.show()`` draws it, ``fig.write_html`` saves
        it). The default column is the only one, else the best by Sharpe ratio; the title names
        what was backtested, the period, the fill rule and the annualisation.
        """
        from celeris.backtest.report import figure

        return figure(self, column=column, title=title)

    def plot_png(self, path: str | Path, *, column: Any = None, title: str | None = None) -> Path:
        """Write a PNG of price with trades, equity and drawdown for one column. Return the path."""
        from celeris.backtest.report import write_png

        return write_png(self, Path(path), column=column, title=title)
