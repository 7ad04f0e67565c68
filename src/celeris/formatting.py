"""How Celeris shows numbers, durations and timestamps to people: one home for the rules.

Metrics are shown by :func:`celeris.backtest.metrics.format_metric`, which picks the kind of a
metric (percent, cash, ratio, count) from the metric metadata and formats the value with the
functions here. Everything else — latencies, parameter labels, table cells, timestamps —
uses these functions directly, so a percent, a duration or a missing value reads the same in
the HTML report, the CLI tables, the LLM prompts and the serving verdicts.

The visible choices that differ by audience are parameters, not copies: the missing-value
marker (``"n/a"`` in reports and prompts, ``"-"`` in CLI tables) and a sign on returns.

A leaf module: numpy only (pandas timestamps and durations are ``datetime`` subclasses, so the
serving process, which never imports pandas, can use it), nothing from Celeris.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = [
    "MISSING",
    "NumberKind",
    "format_duration",
    "format_number",
    "format_param",
    "format_params",
    "format_timestamp",
    "is_missing",
    "redact_url",
]

#: The marker shown for a missing value (None, NaN, NaT) unless the caller picks another.
MISSING = "n/a"

#: How a number is shown: ``percent`` ``"30.87%"``, ``cash`` ``"1,234.50"``, ``ratio``
#: ``"0.216"``, ``count`` ``"1,234"``, ``number`` an int if the value is whole else three
#: decimals, ``general`` ``digits`` significant digits.
NumberKind = Literal["percent", "cash", "ratio", "count", "number", "general"]


def is_missing(value: Any) -> bool:
    """Return True for ``None``, a float NaN and a NaT (pandas' or numpy's)."""
    if value is None:
        return True
    if (
        isinstance(
            value,
            float
            | np.floating
            | datetime.datetime
            | datetime.timedelta
            | np.datetime64
            | np.timedelta64,
        )
        or type(value).__name__ == "NaTType"
    ):
        return bool(value != value)  # NaN and NaT are the values unequal to themselves
    return False


def format_number(
    value: Any,
    kind: NumberKind = "number",
    *,
    signed: bool = False,
    missing: str = MISSING,
    digits: int = 4,
) -> str:
    """Format a number of the given ``kind`` for people.

    Parameters
    ----------
    value
        An int, float or numpy number (``None`` and NaN show ``missing``; a bool shows
        ``"yes"``/``"no"``; anything else its ``str``).
    kind
        See :data:`NumberKind`.
    signed
        Prefix a ``+`` on non-negative values (``"+1.50%"``), as returns are shown in prompts.
    missing
        What a missing value shows.
    digits
        Significant digits of the ``general`` kind.

    Examples
    --------
    >>> format_number(0.308658, "percent")
    '30.87%'
    >>> format_number(0.015, "percent", signed=True)
    '+1.50%'
    >>> format_number(1234567.891, "cash")
    '1,234,567.89'
    >>> format_number(float("nan"), "ratio", missing="-")
    '-'
    >>> format_number(2.0), format_number(0.12345), format_number(0.00123456, "general", digits=3)
    ('2', '0.123', '0.00123')
    """
    if is_missing(value):
        return missing
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    sign = "+" if signed else ""
    whole = isinstance(value, int | np.integer) or (kind == "count" and v.is_integer())
    if whole and kind in ("count", "number"):
        return f"{int(value):{sign},}"
    if kind == "percent":
        return f"{v:{sign}.2%}"
    if kind == "cash":
        return f"{v:{sign},.2f}"
    if kind == "ratio":
        return f"{v:{sign}.3f}"
    if kind == "general":
        return f"{v:{sign}.{digits}g}"
    if v.is_integer() and abs(v) < 1e6:
        return f"{int(v):{sign}d}"
    return f"{v:{sign}.3f}"


def format_duration(value: Any, *, missing: str = MISSING) -> str:
    """Format a time span compactly: ``"2,907 days 4 h"``, ``"3 h 15 min"``, ``"45 s"``.

    Examples
    --------
    >>> format_duration(datetime.timedelta(days=2907, hours=4))
    '2,907 days 4 h'
    >>> format_duration(np.timedelta64(195, "m")), format_duration(np.timedelta64("NaT"))
    ('3 h 15 min', 'n/a')
    """
    if is_missing(value):
        return missing
    if isinstance(value, np.timedelta64):
        value = value.astype("timedelta64[us]").item()
    total = int(value.total_seconds())
    days, rem = divmod(total, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, seconds = divmod(rem, 60)
    parts = []
    if days:
        parts.append(f"{days:,} day{'s' if days != 1 else ''}")
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    if seconds and not days and not hours:
        parts.append(f"{seconds} s")
    return " ".join(parts) or "0 s"


def format_timestamp(
    value: Any,
    *,
    precision: Literal["auto", "minute", "second"] = "auto",
    missing: str = MISSING,
) -> str:
    """Format a timestamp: ``"2018-12-31"`` at midnight, else ``"2018-12-31 14:30"``.

    ``precision="minute"`` always shows the time; ``"second"`` also shows seconds when they
    are not zero (data listings of intraday bars). A non-timestamp (a bar position) reads
    ``"bar 12"``.

    Examples
    --------
    >>> format_timestamp(datetime.datetime(2018, 12, 31))
    '2018-12-31'
    >>> format_timestamp(np.datetime64("2018-12-31T14:30"))
    '2018-12-31 14:30'
    >>> format_timestamp(datetime.datetime(2024, 1, 1, 0, 0, 5), precision="second")
    '2024-01-01 00:00:05'
    >>> format_timestamp(12)
    'bar 12'
    """
    if is_missing(value):
        return missing
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    if not isinstance(value, datetime.datetime):
        return f"bar {value}"
    if precision == "second" and value.second:
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if precision == "auto" and value.time() == datetime.time(0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%d %H:%M")


def format_param(value: Any) -> str:
    """Format a strategy parameter's value: floats in their shortest form (``0.05``, ``1e-05``).

    Examples
    --------
    >>> format_param(0.05), format_param(np.float64(2.0)), format_param(np.int64(20)), format_param("ema")
    ('0.05', '2', '20', 'ema')
    """
    if isinstance(value, float | np.floating):
        return f"{float(value):g}"
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def format_params(params: Mapping[str, Any]) -> str:
    """Format parameters as ``"fast=10, slow=50, sl_stop=0.05"``.

    Examples
    --------
    >>> format_params({"fast": 10, "sl_stop": 0.05})
    'fast=10, sl_stop=0.05'
    """
    return ", ".join(f"{k}={format_param(v)}" for k, v in params.items())


_URL_PASSWORD = re.compile(r"//([^:@/]*):[^@/]*@")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for messages, logs and reports)."""
    return _URL_PASSWORD.sub(r"//\1:***@", url)
