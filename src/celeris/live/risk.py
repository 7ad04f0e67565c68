"""Risk controls of the live loop: position and exposure caps, a daily loss limit, a kill switch.

The controls act on the signals before the paper account (and the feed) sees them, so the
account and the journal record exactly what was allowed:

* ``max_position``: most value (quote currency, at the bar's close) in one symbol; an entry is
  dropped when the position's value, plus what an entry of the bar before still waiting for the
  next open will add, plus what this entry's order can add (its size; an infinite size: all the
  account's cash, times the leverage: :meth:`PaperAccount.entry_value`), would pass the cap.
  Orders are not cut to fit: size them under the cap (``--size``, ``--size-type value``);
* ``max_exposure``: most gross value over all symbols, counted the same way; the entries of a
  bar are taken in symbol order while they fit;
* ``max_daily_loss``: a fraction of the account's value at the start of the UTC day (the last
  value of the day before); once the value has fallen that far the kill switch engages;
* the kill switch (this limit, ``SIGUSR1``, or ``POST /admin/kill``): every entry is dropped and
  every open position gets its exit signal (flatten), bar after bar, until an operator resumes
  (``POST /admin/resume``). Its state is journaled, so a restart stays killed.

Every drop is counted per reason (``celeris_live_risk_blocked_total``) and the first of each run
of them is logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from celeris.checks import check_real

__all__ = ["ENTRY", "EXIT", "SHORT_ENTRY", "SHORT_EXIT", "RiskGuard", "RiskLimits"]

logger = logging.getLogger("celeris.live")

#: Signal bits, as the journal stores them per bar and symbol: the paper account's four signal
#: arrays (the short ones only for a long-short account, ``direction="both"``).
ENTRY, EXIT, SHORT_ENTRY, SHORT_EXIT = 1, 2, 4, 8
_DAY_NS = 86_400 * 10**9


@dataclass(frozen=True)
class RiskLimits:
    """Caps of the live loop; ``None`` turns a control off."""

    max_position: float | None = None
    max_exposure: float | None = None
    max_daily_loss: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_position", "max_exposure"):
            value = getattr(self, name)
            if value is not None:
                check_real(name, value, minimum=0, open_low=True)
        if self.max_daily_loss is not None:
            check_real("max_daily_loss", self.max_daily_loss, minimum=0, maximum=1, open_low=True)


class RiskGuard:
    """Applies :class:`RiskLimits` and the kill switch to a step's signal bits.

    ``long_short``: the account trades the four signal arrays (``direction="both"``), so a long
    position closes on ``EXIT`` and a short one on ``SHORT_EXIT``; otherwise ``ENTRY`` opens the
    account's direction and ``EXIT`` closes it.
    """

    def __init__(self, limits: RiskLimits, n_symbols: int, *, long_short: bool = False) -> None:
        self.limits = limits
        self.n_symbols = n_symbols
        self.long_short = long_short
        self.killed: str | None = None  # the reason, while the kill switch is engaged
        self.blocked: Counter[str] = Counter()
        self._day: int | None = None
        self._day_start_value = np.nan
        self._last_value = np.nan

    @property
    def active(self) -> bool:
        """Whether any control can act (then the loop steps a bar at a time)."""
        limits = self.limits
        return self.killed is not None or any(
            v is not None for v in (limits.max_position, limits.max_exposure, limits.max_daily_loss)
        )

    # ---- the switch -----------------------------------------------------------------------
    def kill(self, reason: str) -> bool:
        """Engage the kill switch; return whether it was off."""
        was_off = self.killed is None
        if was_off:
            self.killed = reason
            logger.warning("kill switch engaged: %s (flattening, no new entries)", reason)
        return was_off

    def resume(self) -> bool:
        """Release the kill switch; return whether it was on."""
        was_on = self.killed is not None
        if was_on:
            logger.warning("kill switch released (was: %s)", self.killed)
        self.killed = None
        return was_on

    # ---- per step -------------------------------------------------------------------------
    def check_loss(self, time_ns: int, value: float) -> bool:
        """Track the day's starting value; engage the switch when the daily loss limit is hit.
        Return whether this call engaged it."""
        day = int(time_ns) // _DAY_NS
        if day != self._day:  # the day starts from the last value of the day before
            self._day = day
            self._day_start_value = value if np.isnan(self._last_value) else self._last_value
        self._last_value = value
        limit = self.limits.max_daily_loss
        if limit is None or self.killed is not None or not self._day_start_value > 0:
            return False
        loss = 1.0 - value / self._day_start_value
        if loss >= limit:
            return self.kill(f"daily loss {loss:.2%} reached the limit {limit:.2%}")
        return False

    def gate(
        self,
        bits: np.ndarray,
        positions: np.ndarray,
        prices: np.ndarray,
        *,
        entry: np.ndarray | None = None,
        pending: np.ndarray | None = None,
        stale: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return the bits of one bar (``(n_symbols,)`` ints) as the controls allow them, given
        the positions held (units), the bar's closes, the value an entry order would add per
        symbol (``entry``), the value of entries waiting for the next open (``pending``; both
        :meth:`PaperAccount.entry_value`, 0 when None); ``stale`` marks symbols whose data is
        stale (no new entries there)."""
        out = bits.copy()
        opens = ENTRY | SHORT_ENTRY if self.long_short else ENTRY
        held = positions != 0
        if self.killed is not None:
            self._count("kill_switch", (out & opens) != 0)
            out &= ~opens
            if self.long_short:
                out[positions > 0] |= EXIT
                out[positions < 0] |= SHORT_EXIT
            else:
                out[held] |= EXIT
            return out
        wants = (out & opens) != 0
        if stale is not None:
            self._count("stale_data", wants & stale)
            wants &= ~stale
        value = np.abs(positions * prices)
        if pending is not None:
            value = value + pending
        add = np.zeros(self.n_symbols) if entry is None else np.asarray(entry, dtype=np.float64)
        adds = wants & (add > 0)  # (an entry into a position it cannot add to changes nothing)
        if self.limits.max_position is not None:
            over = adds & (value + add > self.limits.max_position)
            self._count("max_position", over)
            wants &= ~over
        if self.limits.max_exposure is not None:
            total = float(value.sum())
            over = np.zeros_like(wants)
            for a in np.flatnonzero(wants):  # in symbol order, while they fit
                if total + add[a] > self.limits.max_exposure:
                    over[a] = True
                else:
                    total += add[a]
            self._count("max_exposure", over)
            wants &= ~over
        out[~wants] &= ~opens
        return out

    def _count(self, reason: str, mask: np.ndarray) -> None:
        n = int(np.count_nonzero(mask))
        if n:
            if not self.blocked[reason]:
                logger.warning("risk control %s dropped an entry signal", reason)
            self.blocked[reason] += n
