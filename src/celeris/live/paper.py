"""The paper account of ``celeris live``: the backtest's grouped kernel, advanced as bars close.

A :class:`PaperAccount` is ``from_signals`` run one step at a time. It asks
:func:`celeris.backtest.signals.book_layout` for exactly the kernel inputs ``from_signals`` would
build from the same options (fees, slippage, sizing, stops, next-open fills, cash sharing,
perpetual futures: every column its own account unless ``cash_sharing=True``), then feeds the
kernel's stepping entries (:func:`~celeris.backtest.group_kernel.advance_groups_nb`) the bars of
each step. The kernel's whole state (per-column state, accumulators, the run's scalars) lives
in arrays between steps, so a run split into steps *is* the run over all its bars: replaying
history through the account gives ``from_signals``'s orders, trades and equity bit for bit
(``tests/live/test_paper.py`` checks every option set of the parity suite).

After a restart the account is rebuilt by stepping once over the journal's bars and signals:
the state is a function of them, and the fills this gives are checked against the journal's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest._inputs import annualise
from celeris.backtest.book import ORDER_KINDS, Book, BookLayout
from celeris.backtest.group_engine import GroupInputs, GroupOutputs
from celeris.backtest.signals import book_layout
from celeris.errors import ConfigError, DataError

__all__ = ["SIGNAL_NAMES", "PaperAccount"]

#: The signal arrays a step takes, as ``from_signals`` names them.
SIGNAL_NAMES = ("entries", "exits", "short_entries", "short_exits")
#: Options that vary per bar: a live account takes them per step (funding) or not yet (limits).
_PER_BAR = {
    "funding_rate": "pass funding rates per step (PaperAccount.step(..., funding=...))",
    "mark_price": "the mark price is the bar's open in the paper account",
    "limit_price": "limit orders are not placed by the live loop yet; use market orders",
    "price": "the paper account fills at the next open or the close (execution=...)",
    "order_type": "limit orders are not placed by the live loop yet; use market orders",
    "limit_expiry": "limit orders are not placed by the live loop yet",
    "device": "the paper account steps on the CPU",
}
_NEVER = float(2**62)
_PARALLEL_WORK = 50_000  # bars x groups of a step from which the groups run on numba's threads  # a last listed bar that never comes: a live column is not delisted
_FIELDS = ("open", "high", "low", "close")


class PaperAccount:
    """One account (or one per symbol) marked to market with the backtest's accounting.

    Parameters
    ----------
    symbols : sequence of str
        The instruments, one column each, in this order.
    options : mapping
        ``from_signals`` options (``init_cash``, ``fees``, ``slippage``, ``size``,
        ``size_type``, ``direction``, ``sl_stop``/``tp_stop``/``tsl_stop``, ``accumulate``,
        ``execution``, ``cash_sharing``, ``call_seq``, ``instrument``, ``leverage``,
        ``margin_mode``, ``maintenance_margin``, ``liquidation_fee``, ``freq``...). Per-bar
        options are refused here: funding rates come with each step.
    long_short : bool
        Whether steps bring short signals (``short_entries``/``short_exits``), as
        ``from_signals`` with those arrays.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        options: Mapping[str, Any] | None = None,
        *,
        long_short: bool = False,
    ) -> None:
        if isinstance(symbols, str) or not symbols:
            raise ConfigError("a paper account needs a non-empty list of symbols")
        self.symbols = tuple(str(s) for s in symbols)
        if len(set(self.symbols)) != len(self.symbols):
            raise ConfigError(f"repeated symbols in {list(self.symbols)}")
        self.options = dict(options or {})
        for name, why in _PER_BAR.items():
            if name in self.options and not (name == "device" and self.options[name] == "cpu"):
                raise ConfigError(f"paper account option {name!r} is not supported: {why}")
        self.options["device"] = "cpu"
        self.long_short = bool(long_short)
        self.execution = str(self.options.get("execution", "next_open"))
        self._layout: BookLayout | None = None
        self._cap = 0
        self.n = 0  # bars processed
        self._tz: Any = "UTC"
        self._index_name: Any = None
        self._orders: list[np.ndarray] = []
        self._trades: list[np.ndarray] = []
        # Refuse bad options now, not at the first bar (which may come minutes later live):
        # book_layout validates them as from_signals does, here on two flat placeholder bars.
        day = 86_400 * 10**9
        self._first = self._layout_of(
            np.array([0, day]), np.ones((2, 4, len(self.symbols))), "UTC", None
        ).inputs  # (its sizing and cash answer entry_value before the first bar)

    # ---- set-up on the first step ---------------------------------------------------------
    def _layout_of(self, times: np.ndarray, ohlc: np.ndarray, tz: Any, name: Any) -> BookLayout:
        """What ``book_layout`` (from_signals' own validation) gives for these bars, no signal."""
        index = pd.DatetimeIndex(times, tz="UTC", name=name).tz_convert(tz)
        bars = pd.concat(
            {
                s: pd.DataFrame(ohlc[:, :, a], index=index, columns=list(_FIELDS))
                for a, s in enumerate(self.symbols)
            },
            axis=1,
        )
        sig = np.zeros((len(bars), len(self.symbols)), dtype=bool)
        shorts = {"short_entries": sig, "short_exits": sig} if self.long_short else {}
        return book_layout(bars, sig, sig, **shorts, **self.options)

    def _build(self, times: np.ndarray, ohlc: np.ndarray, tz: Any, name: Any) -> None:
        """The kernel inputs ``book_layout`` gives for the first step's bars; allocate."""
        layout = self._layout_of(times, ohlc, tz, name)
        inp = layout.inputs
        if list(layout.assets) != list(self.symbols):
            raise DataError(
                f"bars give assets {list(layout.assets)}, expected {list(self.symbols)}"
            )
        col_params = inp.col_params.copy()
        col_params[:, GK.C_FIRST] = 0.0
        col_params[:, GK.C_LAST] = _NEVER
        self._layout = layout
        self._col_params = col_params
        self._perp = bool((inp.group_params[:, GK.G_PERP] != 0).any())
        n_cols, n_assets, n_groups = inp.n_cols, len(self.symbols), inp.n_groups
        self._asset_of = col_params[:, GK.C_ASSET].astype(np.int64)
        self._tz = tz
        self._index_name = name
        # Growing buffers, one C-contiguous array per kernel input so that [:n] is a view.
        self._buffers = {
            "close": np.empty((0, n_assets)),
            "open": np.empty((0, n_assets)),
            "high": np.empty((0, n_assets)),
            "low": np.empty((0, n_assets)),
            "price": np.empty((0, n_assets)),
            "funding": np.zeros((0, n_assets)),
            "equity": np.empty((0, n_groups)),
            "times": np.empty(0, dtype=np.int64),  # bar times, ns since the epoch
            **{name: np.zeros((0, n_cols), dtype=np.bool_) for name in SIGNAL_NAMES},
        }
        self._grow(1024)
        self._last_signals = np.zeros((4, n_cols), dtype=bool)  # next-open carry
        self.scratch = (
            np.zeros((n_cols, GK.N_STATE)),
            np.zeros((n_cols, GK.N_IW), dtype=np.int64),
            np.zeros((n_groups, GK.N_ACC)),
            np.zeros((n_groups, 4)),
        )
        self.carry = np.zeros((n_groups, GK.N_RUN))
        self.spans = np.zeros(n_groups, dtype=np.bool_)
        self._placeholders = (np.zeros((1, 1), dtype=np.bool_), np.full((1, 1), np.nan))
        self._spare_out: dict[int, tuple[np.ndarray, ...]] = {}
        GK.start_groups_nb(
            self._kernel_args(1)[0], col_params, inp.group_params, inp.groups, self._out(1, 0),
            self.scratch, self.carry, self.spans,
        )  # fmt: skip

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap)
        for name, a in self._buffers.items():
            b = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
            b[: self.n] = a[: self.n]
            self._buffers[name] = b
        self._cap = cap

    def _out(self, n: int, n_records: int, *, reuse: bool = True) -> tuple[np.ndarray, ...]:
        """The kernel's ``out``: equity rows ``[:n]``, ``n_records`` record rows per column.
        With ``reuse`` the arrays are kept for the next step of as many bars (live: every
        step), so only what :meth:`_collect` copies out of them may outlive the step."""
        inp = self.layout.inputs
        spare = self._spare_out.get(n_records) if reuse else None
        if spare is None:
            offsets = np.zeros(inp.n_groups + 1, dtype=np.int64)
            np.cumsum(n_records * np.diff(inp.groups), out=offsets[1:])
            rows = max(int(offsets[-1]), 1)
            spare = (
                np.full((inp.n_groups, K.N_METRICS), np.nan),
                np.empty((rows, K.N_ORDER_FIELDS)),
                offsets if n_records else np.zeros(1, dtype=np.int64),
                np.empty((rows, K.N_TRADE_FIELDS)),
                offsets.copy() if n_records else np.zeros(1, dtype=np.int64),
            )
            if reuse:
                self._spare_out = {n_records: spare}  # (one size kept: a replay's vary)
        metrics, orders, order_offsets, trades, trade_offsets = spare
        return (metrics, self._buffers["equity"][:n], orders, order_offsets, trades, trade_offsets)

    @property
    def layout(self) -> BookLayout:
        if self._layout is None:
            raise ConfigError("the paper account has no bars yet")
        return self._layout

    # ---- stepping -------------------------------------------------------------------------
    def step(
        self,
        times: np.ndarray,
        ohlc: np.ndarray,
        signals: Mapping[str, np.ndarray],
        *,
        funding: np.ndarray | None = None,
        tz: Any = "UTC",
        index_name: Any = None,
    ) -> np.ndarray:
        """Advance over ``k`` newly closed bars; return the order records filled in them.

        ``times`` are the bars' open times (``k`` int64 ns since the epoch, UTC), ``ohlc`` is
        ``(k, 4, n_symbols)``: open, high, low, close of every symbol. ``signals`` maps
        ``entries``/``exits`` (and ``short_entries``/``short_exits`` for a long-short account)
        to ``(k, n_symbols)`` bool arrays: the signals computed at these bars' closes. Under
        next-open execution a signal fills at the next bar's open, as in ``from_signals``, so a
        signal of a step's last bar fills in the next step. ``funding`` is ``(k, n_symbols)``
        rates paid at these bars' opens (perpetuals; 0 where none is due). The records are
        the kernel's (``kernel.O_*`` fields, ``O_IDX`` counting bars from the account's first);
        :meth:`orders_frame` labels them.
        """
        times = np.asarray(times, dtype=np.int64).reshape(-1)
        k = times.shape[0]
        ohlc = np.asarray(ohlc, dtype=np.float64)
        if ohlc.shape != (k, 4, len(self.symbols)):
            raise DataError(f"ohlc must be ({k}, 4, {len(self.symbols)}), got {ohlc.shape}")
        if k == 0:
            return np.empty((0, K.N_ORDER_FIELDS))
        bad = np.zeros(0, dtype=bool)
        if not (ohlc > 0).all() or not np.isfinite(ohlc).all():  # (NaN > 0 is False)
            bad = ~(np.isfinite(ohlc) & (ohlc > 0)).all(axis=(1, 2))
        if bad.any():
            raise DataError(
                f"step bars have a missing or non-positive price at {pd.Timestamp(times[bad][0])}"
            )
        last = self.last_time()
        if (np.diff(times) <= 0).any() or (last is not None and times[0] <= last):
            raise DataError(
                f"bar {pd.Timestamp(times[0], tz='UTC')} is not after the last processed bar"
                + ("" if last is None else f" {pd.Timestamp(last, tz='UTC')}")
            )
        raw = self._raw_signals(signals, k)
        if self._layout is None:
            self._build(times, ohlc, tz, index_name)
        i0, i1 = self.n, self.n + k
        self._grow(i1)
        self._write(times, ohlc, raw, funding, i0, i1)
        args = self._kernel_args(i1)
        out = self._out(i1, 2 * k)  # a column fills at most twice a bar (liquidation + order)
        # numba's dispatchers, typed by their first call; threads only pay off on long steps
        parallel = (
            k * self.layout.inputs.n_groups >= _PARALLEL_WORK and self.layout.inputs.n_groups > 1
        )
        advance: Any = GK.advance_groups_par_nb if parallel else GK.advance_groups_nb
        advance(np.int64(i0), np.int64(i1), *args, out, self.scratch, self.carry, self.spans)
        self.n = i1
        orders, trades = self._collect(out)
        if len(orders):  # (a live account steps every bar; most bars fill nothing)
            self._orders.append(orders)
        if len(trades):
            self._trades.append(trades)
        return orders

    def _raw_signals(self, signals: Mapping[str, np.ndarray], k: int) -> np.ndarray:
        names = SIGNAL_NAMES if self.long_short else SIGNAL_NAMES[:2]
        unknown = set(signals) - set(names)
        if unknown:
            raise ConfigError(f"unknown signal(s) {sorted(unknown)}; expected {list(names)}")
        raw = np.zeros((k, 4, len(self.symbols)), dtype=bool)
        for j, name in enumerate(names):
            if name in signals:
                arr = np.asarray(signals[name], dtype=bool)
                if arr.shape != (k, len(self.symbols)):
                    raise DataError(f"{name} must be ({k}, {len(self.symbols)}), got {arr.shape}")
                raw[:, j] = arr
        return raw

    def _write(
        self,
        times: np.ndarray,
        ohlc: np.ndarray,
        raw: np.ndarray,
        funding: np.ndarray | None,
        i0: int,
        i1: int,
    ) -> None:
        b = self._buffers
        b["times"][i0:i1] = times
        for j, name in enumerate(_FIELDS):
            b[name][i0:i1] = ohlc[:, j]
        b["price"][i0:i1] = ohlc[:, 0] if self.execution == "next_open" else ohlc[:, 3]
        per_col = raw[:, :, self._asset_of]  # kernel order: column c trades _asset_of[c]
        for j, name in enumerate(SIGNAL_NAMES):
            if self.execution == "next_open":  # a signal fills at the next bar's open
                b[name][i0] = self._last_signals[j]
                b[name][i0 + 1 : i1] = per_col[:-1, j]
            else:
                b[name][i0:i1] = per_col[:, j]
        self._last_signals = per_col[-1].copy()
        if funding is not None:
            rates = np.asarray(funding, dtype=np.float64)
            if rates.shape != (i1 - i0, len(self.symbols)) or not np.isfinite(rates).all():
                raise DataError(
                    f"funding must be ({i1 - i0}, {len(self.symbols)}) finite rates, "
                    f"got {rates.shape}"
                )
            b["funding"][i0:i1] = rates

    def _kernel_args(self, n: int) -> tuple[Any, ...]:
        inp = self.layout.inputs
        b = self._buffers
        no_signal, no_size = self._placeholders
        shorts = self.long_short
        signals = tuple(
            b[name][:n] if j < 2 or shorts else no_signal for j, name in enumerate(SIGNAL_NAMES)
        )
        funding, mark, tiers = inp.perp
        if self._perp:
            funding = b["funding"][:n]
            mark = np.zeros((1, 1))
        return (
            tuple(b[name][:n] for name in ("close", "open", "high", "low", "price")),
            signals,
            no_size,
            (funding, mark, tiers),
            self._col_params,
            inp.group_params,
            inp.groups,
            np.int64(GK.MODE_SIGNALS),
        )

    def _collect(self, out: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The rows each group wrote this step (from its offset to its pointer), group order."""
        ptrs = self.scratch[3]
        picked = []
        for field, (records, offsets) in enumerate(((out[2], out[3]), (out[4], out[5]))):
            starts = offsets[:-1]
            if offsets.shape[0] < 2 or (ptrs[:, field] <= starts).all():  # (most live bars)
                picked.append(records[:0].copy())
                continue
            rows = np.arange(int(offsets[-1]))
            picked.append(records[: rows.size][rows < np.repeat(ptrs[:, field], np.diff(offsets))])
        return picked[0], picked[1]

    def step_frame(self, bars: pd.DataFrame, signals: Mapping[str, Any], **kw: Any) -> pd.DataFrame:
        """:meth:`step` from a bar frame (``(symbol, field)`` columns, or a plain bar frame for
        one symbol) and signal arrays; return the filled orders labelled."""
        if not isinstance(bars, pd.DataFrame) or not isinstance(bars.index, pd.DatetimeIndex):
            raise DataError("bars must be a DataFrame on a DatetimeIndex")
        wanted: list[Any] = [(s, f) for f in _FIELDS for s in self.symbols]
        if bars.columns.nlevels == 1:
            if len(self.symbols) != 1:
                raise DataError("bars of several symbols need (symbol, field) columns")
            wanted = list(_FIELDS)
        positions = bars.columns.get_indexer(pd.Index(wanted, tupleize_cols=False))
        if (positions < 0).any():
            lacking = [str(w) for w, p in zip(wanted, positions, strict=True) if p < 0]
            raise DataError(f"step bars lack {', '.join(lacking[:4])}")
        values = bars.to_numpy(np.float64)[:, positions]
        ohlc = values.reshape(len(bars), len(_FIELDS), len(self.symbols))
        index = bars.index.tz_localize("UTC") if bars.index.tz is None else bars.index
        rec = self.step(
            index.as_unit("ns").asi8, ohlc, {n: np.asarray(v) for n, v in signals.items()},
            tz=bars.index.tz, index_name=bars.index.name, **kw,
        )  # fmt: skip
        return self.orders_frame(rec)

    # ---- results --------------------------------------------------------------------------
    @property
    def index(self) -> pd.DatetimeIndex:
        """The bars processed so far."""
        if self._layout is None:
            return pd.DatetimeIndex([], tz="UTC")
        index = pd.DatetimeIndex(self._buffers["times"][: self.n], tz="UTC", name=self._index_name)
        return index.tz_convert(self._tz)

    def record_times(self, rec: np.ndarray) -> np.ndarray:
        """Bar time (int64 ns since the epoch, UTC) of each order record of :meth:`step`."""
        return self._buffers["times"][rec[:, K.O_IDX].astype(np.int64)]

    def record_symbols(self, rec: np.ndarray) -> np.ndarray:
        """Symbol position (in :attr:`symbols`) of each order record of :meth:`step`."""
        return self._asset_of[rec[:, K.O_COL].astype(np.int64)]

    def last_time(self) -> int | None:
        """Open time (int64 ns) of the last processed bar, None before the first step."""
        return int(self._buffers["times"][self.n - 1]) if self.n else None

    def orders_frame(self, rec: np.ndarray) -> pd.DataFrame:
        """Order records of :meth:`step` as a table: time, symbol, side, size, price, fees, kind."""
        times = pd.DatetimeIndex(self.record_times(rec), tz="UTC").tz_convert(self._tz)
        return pd.DataFrame(
            {
                "time": times,
                "symbol": np.array(self.symbols, dtype=object)[self.record_symbols(rec)]
                if len(rec)
                else np.array([], dtype=object),
                "side": np.where(rec[:, K.O_SIDE] == K.BUY, "buy", "sell"),
                "size": rec[:, K.O_SIZE],
                "price": rec[:, K.O_PRICE],
                "fees": rec[:, K.O_FEES],
                "kind": [ORDER_KINDS[int(x)] for x in rec[:, K.O_STOP]],
            }
        )

    def entry_value(self, prices: np.ndarray, *, pending: bool = False) -> np.ndarray:
        """The most quote value (at ``prices``, one per symbol) an entry order could add to each
        symbol's position: what its size asks (``size_type`` amount: size x price; value: size;
        percent: size x cash; an infinite size: all the cash), at most the cash of its account
        times its leverage, since an order is cut to what the cash buys (an upper bound: fees
        and slippage take a little off). 0 where a position is open and ``accumulate`` is off
        (the kernel ignores that entry). With ``pending``: only for the entries signalled at the
        last bar that fill at the next bar's open (next-open execution), 0 elsewhere. The risk
        controls add these to the value held (:class:`~celeris.live.risk.RiskGuard`)."""
        out = np.zeros(len(self.symbols))
        if pending and (self._layout is None or self.execution != "next_open"):
            return out  # nothing waits for the next open
        inp = self._first if self._layout is None else self.layout.inputs
        cp = inp.col_params
        asset = cp[:, GK.C_ASSET].astype(np.int64)
        group_of = np.repeat(np.arange(inp.n_groups), np.diff(inp.groups))
        cash = inp.group_params[group_of, GK.G_INIT_CASH]
        pos = np.zeros(cp.shape[0])
        if self._layout is not None:
            cash = self.carry[group_of, 0]
            pos = self.scratch[0][:, GK.S_POS]
        lev = np.where(cp[:, GK.C_PERP] != 0, cp[:, GK.C_LEVERAGE], 1.0)
        size, kind = cp[:, K.P_SIZE], cp[:, K.P_SIZE_TYPE]
        price = np.asarray(prices, dtype=np.float64)[asset]
        with np.errstate(invalid="ignore"):  # (inf x 0 where an infinite size meets no cash)
            asked = np.where(
                kind == K.VALUE, size, np.where(kind == K.PERCENT, size * cash * lev, size * price)
            )
        value = np.minimum(asked, np.maximum(cash, 0.0) * lev)
        value = np.where((pos != 0) & (cp[:, K.P_ACCUMULATE] == 0), 0.0, value)
        if pending:  # the entries of the last bar's signals (entries, short entries)
            value = np.where(self._last_signals[0] | self._last_signals[2], value, 0.0)
        np.add.at(out, asset, np.nan_to_num(value))
        return out

    def position_array(self) -> np.ndarray:
        """Current position of every symbol (units; negative: short), in symbol order."""
        pos = np.zeros(len(self.symbols))
        if self._layout is not None:
            np.add.at(pos, self._asset_of, self.scratch[0][:, GK.S_POS])
        return pos

    @property
    def positions(self) -> pd.Series:
        """Current position of every symbol (units; negative: short)."""
        return pd.Series(self.position_array(), index=list(self.symbols), name="position")

    def value(self) -> float:
        """Value of the account(s) at the last processed bar's close (NaN before any bar)."""
        return float(self._buffers["equity"][self.n - 1].sum()) if self.n else float("nan")

    @property
    def equity(self) -> pd.DataFrame:
        """Value of every account at each processed bar's close."""
        groups = self.layout.groups if self._layout is not None else pd.Index([])
        equity = self._buffers["equity"][: self.n].copy() if self._layout is not None else None
        return pd.DataFrame(equity, index=self.index, columns=groups)

    @property
    def cash(self) -> np.ndarray:
        """Cash (a perpetual book: wallet balance) of every account now."""
        return self.carry[:, 0].copy() if self._layout is not None else np.zeros(0)

    def book(self) -> Book:
        """The :class:`~celeris.backtest.book.Book` of the bars so far, from this run's own
        records: what ``from_signals`` returns on the same bars and signals."""
        layout = self.layout
        inp = layout.inputs
        n = self.n
        # annualised over the bars so far (the layout saw only the first step's)
        td, year_days, ann_factor = annualise(
            self.index, self.options.get("freq"), self.options.get("year_days")
        )
        out = self._out(n, 1, reuse=False)  # one open trade per column; the Book keeps them
        prices, signals, sizes, perp, col_params, group_params, groups, mode = self._kernel_args(n)
        last = col_params.copy()
        last[:, GK.C_LAST] = n - 1
        GK.finish_groups_nb(
            np.int64(n), prices, last, group_params, groups, float(ann_factor), out,
            self.scratch, self.carry,
        )  # fmt: skip
        open_trades = [out[4][out[5][g] : int(self.scratch[3][g, 1])] for g in range(inp.n_groups)]
        orders = np.concatenate(self._orders) if self._orders else out[2][:0]
        closed = np.concatenate(self._trades) if self._trades else out[4][:0]
        trades = np.concatenate([closed, *open_trades])
        group_of = np.repeat(np.arange(inp.n_groups), np.diff(inp.groups))
        trades = trades[np.argsort(group_of[trades[:, K.T_COL].astype(np.int64)], kind="stable")]
        outputs = GroupOutputs(
            out[0],
            self._buffers["equity"][:n].copy(),
            orders,
            trades,
            self.scratch[2].copy(),
            self.scratch[0][:, GK.S_FUNDING].copy(),
        )
        fields = dict(zip(("close", "open", "high", "low", "price"), prices, strict=True))
        fields.update(zip(SIGNAL_NAMES, signals, strict=True))
        full = GroupInputs(
            **fields, sizes=sizes, col_params=last, group_params=group_params, groups=groups,
            mode=int(mode), ann_factor=ann_factor, perp=perp,
        )  # fmt: skip
        return Book(
            full,
            self.index,
            layout.columns,
            layout.assets,
            layout.groups,
            freq=td,
            year_days=year_days,
            execution=layout.execution,
            device="cpu",
            outputs=outputs,
        )
