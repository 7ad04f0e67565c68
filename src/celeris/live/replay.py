"""Stored bars driven through the live loop at full speed: ``celeris live --replay``.

A :class:`ReplaySource` has the two methods of :class:`celeris.live.market.MarketStream`
(``start`` and ``next_closed``) and hands out the stored bars in blocks, oldest first, so the
loop runs exactly as it does live, only with many bars per step. The account starts at the
first stored bar (as ``from_signals`` does) and the signal source sees the whole history, which
is what makes a replay's orders and equity those of ``from_signals`` on the same bars.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from celeris.checks import check_int
from celeris.errors import DataError

__all__ = ["ReplaySource"]


class ReplaySource:
    """Blocks of stored bars per symbol (frames on a DatetimeIndex, one per symbol).

    ``block`` bars are handed out per call; ``after`` (ns) skips the bars a resumed run has
    already journaled.
    """

    def __init__(self, bars: Mapping[str, pd.DataFrame], *, block: int = 65_536) -> None:
        if not bars:
            raise DataError("a replay needs the bars of at least one symbol")
        self.block = check_int("block", block, minimum=1)
        self.bars = {str(s): f for s, f in bars.items()}
        for sym, frame in self.bars.items():
            if not isinstance(frame.index, pd.DatetimeIndex):
                raise DataError(f"replay bars of {sym} need a DatetimeIndex")
        self._pos = dict.fromkeys(self.bars, 0)
        self.handed = 0  # bars handed out, all symbols together

    async def start(self) -> dict[str, pd.DataFrame]:
        return {}

    async def next_closed(self, timeout_s: float) -> dict[str, pd.DataFrame]:
        out: dict[str, pd.DataFrame] = {}
        for sym, frame in self.bars.items():
            i = self._pos[sym]
            if i < len(frame):
                out[sym] = frame.iloc[i : i + self.block]
                self._pos[sym] = i + len(out[sym])
                self.handed += len(out[sym])
        return out

    def stale(self, now_ms: int | None = None) -> list[str]:
        return []
