"""Stored bars driven through the live loop at full speed: ``celeris live --replay``.

A :class:`ReplaySource` has the two methods of :class:`celeris.live.market.MarketStream`
(``start`` and ``next_closed``) and hands out the stored bars in blocks, oldest first, so the
loop runs exactly as it does live, only with many bars per step. The account starts at the
first stored bar (as ``from_signals`` does) and the signal source sees the whole history, which
is what makes a replay's orders and equity those of ``from_signals`` on the same bars.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.errors import DataError

__all__ = ["ReplaySource"]


def _ns(index: pd.Index) -> np.ndarray:
    return pd.DatetimeIndex(index).as_unit("ns").asi8


class ReplaySource:
    """Blocks of stored bars per symbol (frames on a DatetimeIndex, one per symbol).

    ``block`` bars are handed out per call, every ``pace_s`` seconds (0: as fast as the loop
    takes them; a pace makes a replay look like a live feed, for demos and crash tests).
    ``after`` (ns): start after that bar time (a resumed run's last journaled bar).
    """

    def __init__(
        self,
        bars: Mapping[str, pd.DataFrame],
        *,
        block: int = 65_536,
        pace_s: float = 0.0,
        after: int | None = None,
    ) -> None:
        if not bars:
            raise DataError("a replay needs the bars of at least one symbol")
        self.block = check_int("block", block, minimum=1)
        self.pace_s = check_real("pace_s", pace_s, minimum=0)
        self.bars = {str(s): f for s, f in bars.items()}
        for sym, frame in self.bars.items():
            if not isinstance(frame.index, pd.DatetimeIndex):
                raise DataError(f"replay bars of {sym} need a DatetimeIndex")
        # A resumed run starts after its last journaled bar (ns), without pacing through the rest.
        self._pos = {
            sym: 0 if after is None else int(np.searchsorted(_ns(f.index), after, side="right"))
            for sym, f in self.bars.items()
        }
        self.handed = 0  # bars handed out, all symbols together

    async def start(self) -> dict[str, pd.DataFrame]:
        return {}

    async def next_closed(self, timeout_s: float) -> dict[str, pd.DataFrame]:
        if self.pace_s:
            await asyncio.sleep(self.pace_s)
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
