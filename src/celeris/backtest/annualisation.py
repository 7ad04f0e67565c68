"""The one annualisation rule of Celeris: how many days a year the data's market trades.

Every annualised number (CAGR, volatility, Sharpe, Sortino, Calmar) uses
``ann_factor = year_days * 1 day / bar spacing``. ``from_signals``, ``sweep``, ``walk_forward``,
every CLI command and the LLM analyst take ``year_days`` from :func:`resolve_year_days`, so the
same data gives the same Sharpe ratio everywhere, and every report says which value it used and
why.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from celeris.checks import check_real

#: Days a year of a market that trades every day (crypto) and of an exchange calendar (equities).
CALENDAR_DAYS = 365.0
TRADING_DAYS = 252.0


class YearDays(float):
    """Days per year used to annualise (a float), and where the number came from.

    A ``float`` subclass so that it travels wherever a plain ``year_days=252`` does (option
    dicts, JSON audit logs, Ray tasks) while reports can still say why it is 252.
    """

    source: str

    def __new__(cls, days: float, source: str) -> YearDays:
        obj = super().__new__(cls, days)
        obj.source = source
        return obj

    def __reduce__(self) -> tuple[Any, ...]:
        return (YearDays, (float(self), self.source))

    @property
    def days(self) -> float:
        return float(self)

    def describe(self) -> str:
        """``"annualisation: 252 days/year (inferred from the data: no weekend bars)"``."""
        return f"annualisation: {float(self):g} days/year ({self.source})"


def resolve_year_days(index: Any, given: Any = None) -> YearDays:
    """Return the days per year to annualise ``index``'s bars with: ``given`` wins, else inferred.

    The inference rule: a datetime index with no bar on a Saturday or Sunday follows an
    exchange calendar, 252 days a year (equities); one with weekend bars trades every day, 365
    (crypto). Without a datetime index (or with fewer than two bars) nothing can be inferred and
    365 is used, saying so.

    Parameters
    ----------
    index : pandas.Index
        The bars' timestamps.
    given : float, YearDays or None
        An explicit value (``year_days=252``); ``None`` infers.

    Raises
    ------
    CelerisTypeError
        ``given`` is not a number.
    ConfigError
        ``given`` is not finite and > 0.
    """
    if isinstance(given, YearDays):
        return given
    if given is not None:
        return YearDays(check_real("year_days", given, minimum=0, open_low=True), "given")
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return YearDays(CALENDAR_DAYS, "default: no datetime index to infer from")
    weekend = int((index.day_of_week >= 5).sum())
    if weekend == 0:
        return YearDays(TRADING_DAYS, "inferred from the data: no weekend bars")
    return YearDays(CALENDAR_DAYS, f"inferred from the data: {weekend:,} weekend bars")
