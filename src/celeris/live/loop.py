"""The live loop: closed bars in, signals out on the feed and the journal, a paper account marked.

One step (:meth:`LiveLoop.process`) takes the bars that closed since the last step, on one
index for every symbol (a live step is usually one bar; a replay step is a block of them), and

1. appends them to the bar history and asks the signal source (a rule strategy or a model) for
   the new bars' signal bits;
2. passes the bits through the risk controls (:mod:`celeris.live.risk`) bar by bar;
3. advances the paper account (:class:`~celeris.live.paper.PaperAccount`: the backtest's kernel)
   over the bars with those bits, which fills the orders of earlier signals at these bars'
   opens, and stops;
4. turns the bits into the direction each symbol's account will hold once they fill (+1, 0,
   -1) and keeps a signal where it changes (or on every bar with ``publish="every-bar"``);
5. journals the bars, bits, signals and fills in one transaction (:mod:`celeris.live.journal`)
   and only then publishes the signals on the feed, ids = feed sequence numbers.

On start, :meth:`LiveLoop.resume` rebuilds the account from the journal (one step over every
journaled bar, whose fills must equal the journaled ones) and republishes signals journaled but
not known to have gone out. :meth:`LiveLoop.run` drives the steps from a bar source: the
exchange stream (:class:`celeris.live.market.MarketStream`) or a replay
(:class:`celeris.live.replay.ReplaySource`), which have the same two methods.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from celeris.backtest import kernel as K
from celeris.errors import ConfigError, DataError
from celeris.live.journal import Journal, SignalBlock
from celeris.live.paper import PaperAccount
from celeris.live.risk import ENTRY, EXIT, SHORT_ENTRY, SHORT_EXIT, RiskGuard, RiskLimits
from celeris.live.signals import SignalBatch, SignalSource
from celeris.serving.feed.wire import MAX_HORIZON

if TYPE_CHECKING:
    from celeris.live.funding import FundingSource

__all__ = ["BarSource", "LiveLoop", "StepReport", "settle"]

logger = logging.getLogger("celeris.live")

_FIELDS = ("open", "high", "low", "close", "volume")
PUBLISH_MODES = ("changes", "every-bar")


class BarSource(Protocol):
    async def start(self) -> dict[str, pd.DataFrame]: ...

    async def next_closed(self, timeout_s: float) -> dict[str, pd.DataFrame]: ...


class Publisher(Protocol):
    def publish_many(
        self,
        symbol_ids: Any,
        signals: Any,
        confidences: Any,
        forecasts: Any = None,
        model_versions: Any = None,
        ts_ns: int | None = None,
    ) -> int: ...

    #: the sequence up to which every record reached a subscriber (the journal's mark)
    @property
    def delivered_through(self) -> int: ...


@dataclass
class StepReport:
    """What one step did: bars, signals published, fills (the kernel's order records), the
    account's value after it, and when its bars were received and its signals published."""

    bars: int
    signals: SignalBlock
    records: np.ndarray
    account: PaperAccount
    value: float
    received_ns: int = 0
    published_ns: int = 0

    @property
    def fills(self) -> pd.DataFrame:
        """The step's fills, labelled (time, symbol, side, size, price, fees, kind)."""
        return self.account.orders_frame(self.records)


def settle() -> None:
    """Collect the set-up's garbage, then move every object alive now out of the garbage
    collector's sight (``gc.freeze``): a long-lived process's imports hold millions of objects,
    and a full collection over them stalls a step for milliseconds (100 symbols: p99 of a step
    1.05 -> 0.46 ms). New objects are still collected. :meth:`LiveLoop.run` calls it once the
    history is loaded, before the first step."""
    gc.collect()
    gc.freeze()


class _History:
    """The loop's bar history, aligned over symbols; bounded to ``keep`` bars (None: all).

    Stored symbol-major (``[n_symbols, 5, capacity]``): a symbol's field over time is one
    contiguous row, what the signal sources' compiled kernels read (a strategy's closes, a
    model's feature inputs) without copying; :meth:`view` hands it out as ``[n, 5, n_symbols]``
    (a transposed view)."""

    def __init__(self, n_symbols: int, keep: int | None) -> None:
        self.n_symbols = n_symbols
        self.keep = keep
        self.times = np.empty(0, dtype=np.int64)
        self.bars = np.empty((n_symbols, 5, 0))
        self._n = 0
        self.appended = 0  # bars appended so far

    def append(self, times: np.ndarray, ohlcv: np.ndarray) -> None:
        k = times.shape[0]
        need = self._n + k
        if need > self.times.shape[0]:
            if self.keep is not None and self._n + k > 2 * self.keep + k:
                # drop all but the last `keep` bars before growing
                start = self._n - self.keep
                self.times[: self.keep] = self.times[start : self._n]
                self.bars[:, :, : self.keep] = self.bars[:, :, start : self._n]
                self._n = self.keep
                need = self._n + k
            if need > self.times.shape[0]:
                cap = max(need, 2 * self.times.shape[0], 1024)
                times_buf = np.empty(cap, dtype=np.int64)
                bars_buf = np.empty((self.n_symbols, 5, cap))
                times_buf[: self._n] = self.times[: self._n]
                bars_buf[:, :, : self._n] = self.bars[:, :, : self._n]
                self.times, self.bars = times_buf, bars_buf
        self.times[self._n : need] = times
        self.bars[:, :, self._n : need] = ohlcv.transpose(2, 1, 0)
        self._n = need
        self.appended += k

    def drop_last(self, k: int) -> None:
        """Forget the last ``k`` bars appended (a step that failed)."""
        self._n -= k
        self.appended -= k

    def view(self, at_least: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The last ``keep`` bars (all without a bound), or ``at_least`` if more: a step of
        many bars (after a downtime) sees the history before its first bar too. Times ``(n,)``
        and OHLCV ``(n, 5, n_symbols)`` (a view of the symbol-major store)."""
        start = 0 if self.keep is None else max(0, self._n - max(self.keep, at_least))
        return self.times[start : self._n], self.bars[:, :, start : self._n].transpose(2, 1, 0)


class LiveLoop:
    """A live (or replayed) run: signal source, risk controls, paper account, journal, feed.

    Parameters
    ----------
    symbols : sequence of str
        The instruments, in the order of their feed symbol ids (0, 1, ...).
    source : SignalSource
        :class:`~celeris.live.signals.RuleSignals` or :class:`~celeris.live.signals.ModelSignals`.
    journal : Journal
        Where the run is recorded (and resumed from).
    options : mapping
        ``from_signals`` options of the paper account (fees, slippage, size, stops, execution,
        cash sharing, perpetual options...). Under ``direction="both"`` the account trades
        long and short signal arrays (the source's exits become short entries, exactly
        ``from_signals``' reading of exits under "both"), so that the risk controls can close
        either side without reversing.
    publisher : optional
        The signal feed (:class:`~celeris.serving.feed.SignalPublisher`); None: journal only.
    limits : RiskLimits
        The risk controls.
    history : int or None
        Bars of history kept for the signal source (None: all, as a replay does).
    publish : {"changes", "every-bar"}
        Publish a symbol's signal when its direction changes, or on every bar.
    metrics : optional
        A :class:`celeris.live.metrics.LiveMetrics` to update.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        source: SignalSource,
        journal: Journal,
        *,
        options: Mapping[str, Any] | None = None,
        publisher: Publisher | None = None,
        limits: RiskLimits | None = None,
        history: int | None = None,
        publish: str = "changes",
        metrics: Any = None,
    ) -> None:
        if publish not in PUBLISH_MODES:
            raise ConfigError(f"publish must be one of {list(PUBLISH_MODES)}, got {publish!r}")
        self.symbols = tuple(symbols)
        self.source = source
        self.journal = journal
        self.options = dict(options or {})
        direction = str(self.options.get("direction", "longonly"))
        self.long_short = direction == "both"
        self.risk = RiskGuard(limits or RiskLimits(), len(self.symbols), long_short=self.long_short)
        self.account = PaperAccount(self.symbols, self.options, long_short=self.long_short)
        self.publisher = publisher
        self.publish_mode = publish
        self.metrics = metrics
        if history is not None and history < source.warmup + 1:
            raise ConfigError(
                f"history={history} bars is shorter than the signal source needs "
                f"({source.warmup + 1}: its warm-up and the new bar)"
            )
        self.history = _History(len(self.symbols), history)
        self.direction = np.zeros(len(self.symbols), dtype=np.int64)  # last signal per symbol
        self.sign = -1 if direction == "shortonly" else 1
        self._published_up_to = journal.first_unpublished() - 1
        self._pending: dict[str, pd.DataFrame] = {}
        self.tz: Any = "UTC"
        self.filled_bars = 0  # bars synthesised for a symbol missing a time others have
        self._broken: str | None = None  # why a step failed after the account moved

    # ---- the kill switch ------------------------------------------------------------------
    def kill(self, reason: str) -> None:
        """Engage the kill switch (journaled: a restart stays killed)."""
        if self.risk.kill(reason):
            self.journal.record_event("kill", {"reason": reason})

    def release(self) -> None:
        """Release the kill switch (journaled)."""
        if self.risk.resume():
            self.journal.record_event("resume", {})

    # ---- resume ---------------------------------------------------------------------------
    def resume(self) -> int:
        """Rebuild the account and history from the journal; republish what may not have
        gone out. Return the number of journaled bars."""
        hist = self.journal.history()
        traded = hist.flags[:, 0] >= 0 if len(hist) else np.zeros(0, dtype=bool)
        if traded.any():
            rec = self.account.step(
                hist.times[traded], hist.ohlcv[traded, :4], self._arrays(hist.flags[traded]),
                funding=self._funding(hist.funding[traded]), tz=self.tz, index_name="time",
            )  # fmt: skip
            j_times, j_rest = self.journal.fill_records()
            mine = np.column_stack(
                [
                    self.account.record_symbols(rec),
                    rec[:, K.O_SIDE],
                    rec[:, K.O_SIZE],
                    rec[:, K.O_PRICE],
                ]
            ).reshape(-1, 4)
            same = np.array_equal(j_times, self.account.record_times(rec)) and np.array_equal(
                j_rest, mine
            )
            if not same:
                raise DataError(
                    f"the journal {self.journal.path} records {j_times.shape[0]} fills but its "
                    f"bars and signals give {mine.shape[0]} different ones: the paper account's "
                    "accounting changed since it was written; start a new --state directory"
                )
        if len(hist):
            self.history.append(hist.times, hist.ohlcv)
            sent = self.journal.signal_block()
            # each symbol's last record (np.unique finds a value's first index: reversed)
            symbols, at = np.unique(sent.symbol[::-1], return_index=True)
            self.direction[symbols] = sent.signal[::-1][at]
        events = self.journal.events()
        switch = events[events["kind"].isin(["kill", "resume"])]
        if len(switch) and switch["kind"].iloc[-1] == "kill":
            self.risk.killed = str(json.loads(switch["detail"].iloc[-1]).get("reason", "journal"))
            logger.warning("resumed with the kill switch engaged: %s", self.risk.killed)
        self._republish()
        return len(hist)

    def _funding(self, funding: np.ndarray) -> np.ndarray | None:
        return funding if self.options.get("instrument") == "perp" else None

    def _republish(self) -> None:
        pending = self.journal.unpublished()
        self._send(pending)
        if pending:
            logger.info("republished %d journaled signal(s) after a restart", len(pending))

    # ---- one step -------------------------------------------------------------------------
    def process(
        self,
        times: np.ndarray,
        ohlcv: np.ndarray,
        *,
        funding: np.ndarray | None = None,
        stale: np.ndarray | None = None,
        received_ns: int | None = None,
    ) -> StepReport:
        """One step over ``k`` closed bars (``times`` int64 ns, ``ohlcv`` ``(k, 5, n_symbols)``).

        A step that raises before the paper account moved (bad bars, a signal source's error)
        leaves the loop as it was; one that raises after it (the journal's disk full...) leaves
        the account ahead of the journal, and the loop refuses further steps: restart it (a new
        loop resumes from the journal)."""
        if self._broken is not None:
            raise DataError(
                f"the live loop stopped in the middle of a step ({self._broken}): its account is "
                "ahead of its journal; make a new loop and resume() from the journal"
            )
        n_before, appended = self.account.n, self.history.appended
        try:
            return self._process(times, ohlcv, funding, stale, received_ns)
        except BaseException as exc:
            if self.account.n != n_before:
                self._broken = f"{type(exc).__name__}: {exc}"
            else:
                # (a stateful signal source sees the history jump back and restarts from it)
                self.history.drop_last(self.history.appended - appended)
            raise

    def _process(
        self,
        times: np.ndarray,
        ohlcv: np.ndarray,
        funding: np.ndarray | None,
        stale: np.ndarray | None,
        received_ns: int | None,
    ) -> StepReport:
        received = time.perf_counter_ns() if received_ns is None else received_ns
        k = int(times.shape[0])
        last = self.journal.last_ts()
        if last is not None and times[0] <= last:
            raise DataError(
                f"bar {pd.Timestamp(times[0], tz='UTC')} is not after the last journaled bar "
                f"{pd.Timestamp(last, tz='UTC')}"
            )
        self.history.append(times, ohlcv)
        h_times, h_ohlcv = self.history.view(k + self.source.warmup)
        batch = self._signals(h_times, h_ohlcv, k)
        bits = self._gate(self._source_bits(batch.bits), ohlcv, stale)
        rates = np.zeros((k, len(self.symbols))) if funding is None else funding
        before = self.account.position_array()
        rec = self.account.step(
            times, ohlcv[:, :4], self._arrays(bits),
            funding=self._funding(rates), tz=self.tz, index_name="time",
        )  # fmt: skip
        block = self._signal_block(times, bits, batch, rec, before)
        self.journal.commit_step(
            times, ohlcv, bits, rates, block, rec, self.account.record_times(rec),
            self.account.record_symbols(rec),
            published_up_to=self._delivered(),
        )  # fmt: skip
        self._send(block)
        published = time.perf_counter_ns()
        report = StepReport(k, block, rec, self.account, self.account.value(), received, published)
        if self.metrics is not None:
            self.metrics.observe_step(self, report, times)
        return report

    def _signals(self, times: np.ndarray, ohlcv: np.ndarray, k: int) -> SignalBatch:
        n = times.shape[0]
        batch = self.source.compute(times, ohlcv, k, self.tz)
        if n - k < self.source.warmup:  # new bars still in the source's warm-up: no signal
            batch.bits[np.arange(n - k, n) < self.source.warmup - 1] = 0
        return batch

    def _gate(self, bits: np.ndarray, ohlcv: np.ndarray, stale: np.ndarray | None) -> np.ndarray:
        """The risk controls, bar by bar (a kill switch engaged at a bar flattens from it on)."""
        if not self.risk.active and stale is None:
            return bits
        out = bits.copy()
        positions = self.account.position_array()
        for i in range(bits.shape[0]):
            if self.account.n and self.risk.limits.max_daily_loss is not None:
                engaged = self.risk.check_loss(
                    int(self.account.last_time() or 0),
                    self.account.value(),
                )
                if engaged:
                    self.journal.record_event("kill", {"reason": self.risk.killed})
            closes = ohlcv[i, 3]
            out[i] = self.risk.gate(
                bits[i], positions, closes, entry=self.account.entry_value(closes),
                pending=self.account.entry_value(closes, pending=True), stale=stale,
            )  # fmt: skip
        return out

    def _arrays(self, bits: np.ndarray) -> dict[str, np.ndarray]:
        """The paper account's signal arrays from the journal's bits."""
        out = {"entries": (bits & ENTRY) != 0, "exits": (bits & EXIT) != 0}
        if self.long_short:
            out["short_entries"] = (bits & SHORT_ENTRY) != 0
            out["short_exits"] = (bits & SHORT_EXIT) != 0
        return out

    def _source_bits(self, bits: np.ndarray) -> np.ndarray:
        """A source's entries/exits as the account's bits (under "both" exits enter shorts)."""
        if not self.long_short:
            return bits
        return (bits & ENTRY) | np.where((bits & EXIT) != 0, SHORT_ENTRY, 0)

    def _wanted(self, bits: np.ndarray, held: np.ndarray) -> np.ndarray:
        """Direction each account holds once the bits fill, from the direction held: the
        kernel's signal resolution (a conflicting pair of signals is ignored)."""
        entry = (bits & ENTRY) != 0
        exit_ = (bits & EXIT) != 0
        long_in, long_out = entry & ~exit_, exit_ & ~entry
        if not self.long_short:
            return np.where(long_in, self.sign, np.where(long_out, 0, held))
        s_entry = (bits & SHORT_ENTRY) != 0
        s_exit = (bits & SHORT_EXIT) != 0
        short_in, short_out = s_entry & ~s_exit, s_exit & ~s_entry
        both = long_in & short_in
        long_in, short_in = long_in & ~both, short_in & ~both
        want = held.copy()
        want[long_out & (held > 0)] = 0
        want[short_out & (held < 0)] = 0
        want[long_in] = 1
        want[short_in] = -1
        return want

    def _signal_block(
        self,
        times: np.ndarray,
        bits: np.ndarray,
        batch: SignalBatch,
        rec: np.ndarray,
        before: np.ndarray,
    ) -> SignalBlock:
        """The direction each symbol's account holds once the bar's signal fills; a record
        where it changes (or every bar)."""
        k, n_sym = bits.shape
        # (rounded: a position closed in several fills may sum to a few ulps, not to 0)
        held = np.broadcast_to(np.sign(np.round(before, 12)).astype(np.int64), (k, n_sym))
        if rec.shape[0]:  # position after each bar of the step, from the step's fills
            signed = np.where(rec[:, K.O_SIDE] == K.BUY, rec[:, K.O_SIZE], -rec[:, K.O_SIZE])
            bar = rec[:, K.O_IDX].astype(np.int64) - (self.account.n - k)
            delta = np.zeros((k, n_sym))
            np.add.at(delta, (bar, self.account.record_symbols(rec)), signed)
            held = np.sign(np.round(before + np.cumsum(delta, axis=0), 12)).astype(np.int64)
        want = self._wanted(bits, held)
        fc = batch.forecasts
        if self.publish_mode == "every-bar":  # bar-major: the (k, n_symbols) arrays flattened
            n = k * n_sym
            ts = np.repeat(times.astype(np.int64), n_sym)
            sym = np.tile(np.arange(n_sym, dtype=np.int64), k)
            sig, conf = want.reshape(n), batch.confidence.reshape(n)
            fc = None if fc is None else fc.reshape(n, fc.shape[2])
        else:  # where the direction differs from the bar before (the last step's, first)
            previous = np.vstack([self.direction[None, :], want[:-1]])
            bar_idx, sym = np.nonzero(want != previous)
            n = bar_idx.shape[0]
            ts, sig = times[bar_idx].astype(np.int64), want[bar_idx, sym]
            conf = batch.confidence[bar_idx, sym]
            fc = None if fc is None else fc[bar_idx, sym]
        self.direction[:] = want[-1]
        return SignalBlock(
            self.journal.new_signal_ids(n),
            ts,
            sym.astype(np.int64, copy=False),
            sig.astype(np.int64, copy=False),
            conf.astype(np.float64),
            # (the wire's precision)
            np.zeros((n, 0), np.float32) if fc is None else fc[:, :MAX_HORIZON].astype(np.float32),
            np.full(n, batch.model_version, dtype=np.int64),
        )

    def _send(self, block: SignalBlock) -> None:
        """Publish the records in one go (one write per subscriber); their ids are the feed's
        sequence numbers."""
        if not len(block):
            return
        if self.publisher is not None:
            first = self.publisher.publish_many(
                block.symbol, block.signal, block.confidence,
                block.forecasts if block.forecasts.shape[1] else None, block.model_version,
            )  # fmt: skip
            if first != block.first_id:
                raise DataError(
                    f"the feed numbered signal {block.first_id} as {first}: the publisher must "
                    "start at the journal's first unpublished id"
                )
        self._published_up_to = block.last_id

    def _delivered(self) -> int:
        """The journal's publication mark: the records a subscriber got (the feed keeps what
        it publishes with nobody connected for the next one: those are not marked, and a
        restart publishes them again); without a feed, every record sent."""
        if self.publisher is None:
            return self._published_up_to
        return self.publisher.delivered_through

    # ---- driving --------------------------------------------------------------------------
    def take_arrays(self, new: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`take` of a stream's arrays (``ClosedBars``: epoch-ms open times, ``[n, 5]``
        OHLCV): when every symbol brings the same bar times and nothing waits, the block is
        stacked without a frame (a live bar of 100 symbols); otherwise through :meth:`take`."""
        if not self._pending and len(new) == len(self.symbols) and set(new) == set(self.symbols):
            first = np.asarray(new[self.symbols[0]].times)
            if all(np.array_equal(np.asarray(new[s].times), first) for s in self.symbols):
                if not len(first):
                    return None
                ohlcv = np.stack([np.asarray(new[s].values, np.float64) for s in self.symbols], 2)
                return first.astype(np.int64) * 1_000_000, ohlcv
        return self.take({s: bars.frame() for s, bars in new.items()})

    def take(self, new: Mapping[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray] | None:
        """Add a source's new bars; return the block every symbol has closed (or None).

        A time that some symbols have and another skipped (a minute without trades that the
        exchange did not report) gets a flat bar for it at the previous close with no volume,
        counted in :attr:`filled_bars`.
        """
        for sym, frame in new.items():
            if sym not in self.symbols:
                raise DataError(f"the bar source sent bars of {sym!r}, not one of {self.symbols}")
            if len(frame) == 0:
                continue
            old = self._pending.get(sym)
            self._pending[sym] = frame if old is None else pd.concat([old, frame])
            if isinstance(frame.index, pd.DatetimeIndex) and frame.index.tz is not None:
                self.tz = frame.index.tz
        if len(self._pending) < len(self.symbols):
            return None
        ready = min(frame.index[-1] for frame in self._pending.values())
        stamps = [pd.DatetimeIndex(f.index).as_unit("ns").asi8 for f in self._pending.values()]
        limit = pd.Timestamp(ready).as_unit("ns").value
        first = stamps[0][stamps[0] <= limit]
        same = all(np.array_equal(t[t <= limit], first) for t in stamps[1:])
        union = first if same else np.unique(np.concatenate([t[t <= limit] for t in stamps]))
        if not len(union):
            return None
        index = pd.DatetimeIndex(union, tz="UTC").tz_convert(self.tz)
        block = np.empty((len(index), 5, len(self.symbols)))
        for a, sym in enumerate(self.symbols):
            frame = self._pending[sym]
            part = frame.loc[frame.index <= ready, list(_FIELDS)]
            if len(part) != len(index):
                part = self._fill_missing(sym, part, index)
            block[:, :, a] = part.to_numpy(np.float64)
            rest = frame.loc[frame.index > ready]
            if len(rest):
                self._pending[sym] = rest
            else:
                del self._pending[sym]
        return index.as_unit("ns").asi8, block

    def _fill_missing(self, sym: str, part: pd.DataFrame, index: pd.DatetimeIndex) -> pd.DataFrame:
        a = self.symbols.index(sym)
        full = part.reindex(index)
        missing = full["close"].isna()
        prev_close = full["close"].ffill()
        if pd.isna(prev_close.iloc[0]):
            h_times, h_ohlcv = self.history.view()
            if not len(h_times):
                raise DataError(f"{sym} has no bar at {index[0]} and no earlier bar to carry")
            prev_close.iloc[0] = h_ohlcv[-1, 3, a]
            prev_close = prev_close.ffill()
        for col in ("open", "high", "low", "close"):
            full.loc[missing, col] = prev_close[missing]
        full.loc[missing, "volume"] = 0.0
        self.filled_bars += int(missing.sum())
        self.journal.record_event(
            "filled_bars",
            {"symbol": sym, "count": int(missing.sum()), "first": str(index[missing][0])},
        )
        logger.warning("%s skipped %d bar(s) from %s: flat bars carried", sym, int(missing.sum()),
                       index[missing][0])  # fmt: skip
        return full

    async def run(
        self,
        bars: BarSource,
        *,
        stop: asyncio.Event | None = None,
        idle_timeout_s: float = 1.0,
        stale: Any = None,
        until_exhausted: bool = False,
        funding: FundingSource | None = None,
    ) -> int:
        """Drive steps from ``bars`` until ``stop`` is set (or, ``until_exhausted``, until the
        source has nothing more); return the number of bars processed.

        A fresh run keeps the source's back-filled bars (``start()``) as history for the signal
        source only (journaled as warm-up, not traded); a resumed run processes the ones after
        its last journaled bar (the bars it missed while down) as its first step.

        ``funding`` (a perpetual account): the source of each step's funding rates
        (:mod:`celeris.live.funding`: a replay's series or the exchange's), started after
        ``bars``; a step's rates are asked for with its bars, before the step runs.
        """
        perp = self.options.get("instrument") == "perp"
        if funding is not None and not perp:
            raise ConfigError(
                "funding rates were given for a spot account: they apply to perpetual futures "
                "(options instrument='perp')"
            )
        if perp and funding is None:
            logger.warning("a perpetual account without a funding source: no funding is charged")
        stop = stop or asyncio.Event()
        first = await bars.start()
        if funding is not None:
            await funding.start()
        last = self.journal.last_ts()
        if last is None:
            block = self.take(first)
            if block is not None:
                self.journal.commit_warmup(*block)
                self.history.append(*block)
            total = 0
        else:
            block = self.take(self._after(first, last))
            total = self._step_block(block, stale, None, await self._rates(block, funding))
        arrays = getattr(bars, "next_closed_arrays", None)  # a stream's frame-free path
        settle()
        while not stop.is_set():
            new = await (arrays or bars.next_closed)(idle_timeout_s)
            if not new:
                if until_exhausted:
                    break
                continue
            received = time.perf_counter_ns()
            last = self.journal.last_ts()
            if arrays is not None:
                block = self.take_arrays(new)
                if block is not None and last is not None:
                    keep = block[0] > last
                    block = (block[0][keep], block[1][keep]) if keep.any() else None
            else:
                block = self.take(new if last is None else self._after(new, last))
            rates = None if funding is None else await self._rates(block, funding)
            total += self._step_block(block, stale, received, rates)
        flush = getattr(self.source, "flush", None)  # a model's predictions and outcomes
        if flush is not None:
            flush()
        return total

    @staticmethod
    async def _rates(
        block: tuple[np.ndarray, np.ndarray] | None, funding: FundingSource | None
    ) -> np.ndarray | None:
        """A block's funding rates, ``(k, n_symbols)`` (None: no block or no source)."""
        if block is None or funding is None:
            return None
        return await funding.rates(block[0])

    @staticmethod
    def _after(new: Mapping[str, pd.DataFrame], last: int) -> dict[str, pd.DataFrame]:
        return {
            s: f.loc[pd.DatetimeIndex(f.index).as_unit("ns").asi8 > last] for s, f in new.items()
        }

    def _step_block(
        self,
        block: tuple[np.ndarray, np.ndarray] | None,
        stale: Any,
        received: int | None,
        funding: np.ndarray | None = None,
    ) -> int:
        if block is None:
            return 0
        times, ohlcv = block
        mask = None
        if stale is not None:
            names = set(stale())
            mask = np.array([s in names for s in self.symbols]) if names else None
        # Risk controls read the positions and value bar by bar: then a block is stepped a bar
        # at a time, as live.
        step = 1 if self.risk.active else len(times)
        for i in range(0, len(times), step):
            rates = None if funding is None else funding[i : i + step]
            self.process(times[i : i + step], ohlcv[i : i + step], funding=rates, stale=mask,
                         received_ns=received)  # fmt: skip
        return int(times.shape[0])
