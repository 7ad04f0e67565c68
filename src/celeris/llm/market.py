"""Compact, exact-number text summaries of market data for LLM prompts.

A prompt cannot hold 5,000 raw bars, and a language model reads statistics better than rows.
Each function here turns a long series into a short plain-text section whose numbers are
computed exactly from the data (no sampling, no model), so every figure the analyst quotes can
be checked against pandas.

Every summary takes ``detail``: ``0`` is the most detailed; each level up drops tables and
secondary lines, so a token-budgeted context builder can shrink a section by asking again with
a higher level. Levels above :data:`MAX_DETAIL` give the shortest form. The headline numbers do
not change with the level; only how many of them are shown.

Formatting is the same everywhere: fractions as percents with two decimals (``+1.23%`` for
signed changes such as returns and drawdowns, ``12.34%`` for magnitudes such as volatility);
funding rates per interval with four decimals (they are typically ``0.0100%``); prices with at
least six significant digits; dates as ``YYYY-MM-DD`` for daily data and ``YYYY-MM-DD HH:MM``
(UTC) otherwise.

User-supplied files
-------------------
Funding rates and order-book snapshots are read and validated by :mod:`celeris.data.funding`
(:func:`load_funding`) and :mod:`celeris.data.orderbook` (:class:`OrderBook`,
:func:`load_orderbook`), where their file formats are documented; they stay importable from
here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from celeris.analytics.risk import historical_var_cvar, max_drawdown
from celeris.checks import check_int
from celeris.data.funding import load_funding
from celeris.data.orderbook import OrderBook, load_orderbook
from celeris.data.schema import check_time_index, validate
from celeris.errors import CelerisTypeError, ConfigError, DataError

__all__ = [
    "MAX_DETAIL",
    "OrderBook",
    "bars_per_year",
    "funding_summary",
    "load_funding",
    "load_orderbook",
    "orderbook_summary",
    "price_action_summary",
    "risk_summary",
    "volatility_summary",
    "volume_profile_summary",
    "year_days",
]

#: The shortest level of every summary; higher ``detail`` values give the same text.
MAX_DETAIL = 3

#: Horizons (in bars) of the trailing returns in :func:`price_action_summary`.
RETURN_HORIZONS = (1, 5, 20, 60, 250)
#: Bars per sliding window in the window tables.
WINDOW = 20
#: Bars of history used for "recent" statistics (about a trading year of daily bars).
LOOKBACK = 250
#: Windows shown in the sliding-window tables at detail 0, 1, 2, 3.
_WINDOWS_SHOWN = (12, 6, 3, 0)
#: Price bins of the volume profile.
PROFILE_BINS = 24
#: Share of volume inside the value area (the Market Profile convention).
VALUE_AREA = 0.70
#: Order-book depth bands, as fractions of the mid price.
DEPTH_BANDS = (0.001, 0.005, 0.01)


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def _pct(x: float, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x * 100:+.2f}%" if signed else f"{x * 100:.2f}%"


def _rate(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 100:+.4f}%"


def _price(x: float, ref: float | None = None) -> str:
    """At least six significant digits and two decimals (0.0000123400, 42,000.50).

    ``ref`` (a price level) sets the decimals instead, so that a spread or an ATR is written
    to the precision of the prices it was computed from.
    """
    if not math.isfinite(x):
        return "n/a"
    scale = abs(ref if ref is not None else x)
    if scale == 0 or not math.isfinite(scale):
        return f"{x:,.2f}"
    decimals = min(12, max(2, 5 - math.floor(math.log10(scale))))
    return f"{x:,.{decimals}f}"


def _qty(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    if float(x).is_integer():
        return f"{x:,.0f}"
    # Sizes below one (0.0012 BTC) keep six significant digits; larger ones two decimals.
    return f"{x:,.2f}" if abs(x) >= 1 else f"{x:.6g}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def _daily(index: pd.Index) -> bool:
    index = cast(pd.DatetimeIndex, index)
    return bool(len(index)) and bool(
        ((index.hour == 0) & (index.minute == 0) & (index.second == 0)).all()
    )


def _date(ts: Any, daily: bool) -> str:
    return ts.strftime("%Y-%m-%d") if daily else ts.strftime("%Y-%m-%d %H:%M")


def _bp(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x * 1e4:+.1f} bp"


def _spacing(index: pd.Index) -> pd.Timedelta:
    index = cast(pd.DatetimeIndex, index)
    # asi8 counts in the index's own unit (pandas 3 builds "us" indexes by default).
    return pd.Timedelta(float(np.median(np.diff(index.asi8))), unit=index.unit)


def _span(delta: pd.Timedelta) -> str:
    seconds = round(delta.total_seconds())
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{seconds} seconds"


def _level(detail: int) -> int:
    return min(check_int("detail", detail, minimum=0, reason="0 = most detailed"), MAX_DETAIL)


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _finite_column(values: pd.Series, what: str, column: str) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise DataError(f"{what} column {column!r} must be numeric, got dtype {values.dtype}")
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        kind = "NaN" if np.isnan(arr[pos]) else "an infinite value"
        raise DataError(f"{what} column {column!r} has {kind} at {values.index[pos]}")
    return arr


def _check_bars(
    bars: Any, what: str, min_bars: int, columns: Sequence[str] = ("high", "low", "close")
) -> pd.DataFrame:
    """The bar schema's rules for the named columns (:func:`celeris.data.validate`); the index
    may be tz-naive or in any zone, as the summaries print the timestamps they are given."""
    if not isinstance(bars, pd.DataFrame):
        raise CelerisTypeError(f"{what} needs a bar frame (DataFrame), got {type(bars).__name__}")
    try:
        bars = validate(bars, columns=columns, utc=False)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    if len(bars) < min_bars:
        raise DataError(f"{what} needs at least {min_bars} bars, got {len(bars)}")
    return bars


def year_days(index: pd.Index) -> int:
    """Return the days per year to annualise with: 252 if no bar falls on a weekend, else 365.

    The rule of ``celeris backtest --year-days``: data without weekend bars follows an exchange
    calendar (equities); 24/7 crypto data has weekend bars.
    """
    from celeris.backtest.annualisation import resolve_year_days

    return int(resolve_year_days(index).days)


def bars_per_year(index: pd.Index) -> float:
    """Return the bars per year used to annualise: ``year_days * 1 day / median spacing``.

    ``year_days`` is 252 when no bar falls on a weekend (equities) and 365 otherwise (24/7
    crypto), the rule ``celeris backtest`` uses for ``--year-days`` and the same
    ``ann_factor`` convention as :func:`celeris.backtest.from_signals`.

    Parameters
    ----------
    index : pandas.DatetimeIndex
        Sorted bar timestamps, at least two.

    Returns
    -------
    float
        Bars per year (252.0 for daily equity bars, 8,760.0 for hourly crypto bars).
    """
    index = check_time_index(index, "bars_per_year", utc=False)
    if len(index) < 2:
        raise DataError("bars_per_year needs at least 2 timestamps to measure the bar spacing")
    return year_days(index) * pd.Timedelta(days=1) / _spacing(index)


def _simple_returns(close: np.ndarray) -> np.ndarray:
    return close[1:] / close[:-1] - 1.0


# ---------------------------------------------------------------------------------------------
# price action
# ---------------------------------------------------------------------------------------------
def wilder_adx(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14
) -> tuple[float, float, float]:
    """Return the last ADX, +DI and -DI (Wilder 1978), same as ``talib.ADX/PLUS_DI/MINUS_DI``.

    The last bar of :func:`celeris.indicators.adx` (formulas there). NaN when there are fewer
    than ``2 * window`` bars (the ADX's warm-up).
    """
    from celeris.indicators import adx

    if close.shape[0] < 2 * window:
        return math.nan, math.nan, math.nan
    line, plus, minus = (np.asarray(v) for v in adx(high, low, close, window))
    return float(line[-1]), float(plus[-1]), float(minus[-1])


def _efficiency_ratio(close: np.ndarray, window: int) -> float:
    # Kaufman's efficiency ratio: net move / sum of absolute moves (1 = straight line).
    if close.shape[0] <= window:
        return math.nan
    seg = close[-window - 1 :]
    path = float(np.abs(np.diff(seg)).sum())
    return abs(float(seg[-1] - seg[0])) / path if path > 0 else 0.0


def _window_rows(
    bars: pd.DataFrame, close: np.ndarray, count: int, ann: float, daily: bool
) -> list[str]:
    """Non-overlapping windows of WINDOW bars ending at the last bar, oldest first."""
    count = min(count, (len(close) - 1) // WINDOW)
    rows = []
    high = bars["high"].to_numpy(np.float64)
    low = bars["low"].to_numpy(np.float64)
    for k in range(count, 0, -1):
        end = len(close) - 1 - (k - 1) * WINDOW
        start = end - WINDOW + 1
        rets = _simple_returns(close[start - 1 : end + 1])
        before = close[start - 1]
        rows.append(
            f"{_date(bars.index[start], daily)} to {_date(bars.index[end], daily)} | "
            f"{_pct(close[end] / before - 1.0)} | {_pct(float(rets.std(ddof=1)) * math.sqrt(ann), False)} | "
            f"{_pct((high[start : end + 1].max() - low[start : end + 1].min()) / before, False)}"
        )
    return rows


def price_action_summary(bars: pd.DataFrame, detail: int = 0) -> str:
    """Summarise price action: period, trailing returns, trend, drawdown, sliding windows.

    Lines (fewer as ``detail`` grows): the period and bar spacing; the last bar; simple
    close-to-close returns over 1, 5, 20, 60 and 250 bars (where the history is long enough);
    the close against its 20/50/200-bar SMAs and their slopes over the last 20 bars; Wilder's
    ADX(14) with +DI/-DI and Kaufman's efficiency ratio over 20 bars; the 250-bar high/low and
    where the close sits in that range; the maximum and current drawdown of the close; and a
    table of the last non-overlapping 20-bar windows (return, annualised realised volatility of
    the bar returns with ``ddof=1``, and the high-low range divided by the close before the
    window): 12 windows at detail 0, 6 at 1, 3 at 2, none at 3.

    Parameters
    ----------
    bars : pandas.DataFrame
        Bar frame with ``high, low, close`` columns (at least 2 bars), valid for
        :func:`celeris.data.validate` in those columns (a sorted, unique UTC index).
    detail : int
        0 = most detailed; higher is shorter (``MAX_DETAIL`` and above: shortest).

    Returns
    -------
    str
        Plain text, one fact per line.
    """
    level = _level(detail)
    bars = _check_bars(bars, "price_action_summary", 2)
    close = bars["close"].to_numpy(np.float64)
    n = len(close)
    index = bars.index
    daily = _daily(index)
    ann = bars_per_year(index)
    spacing = _spacing(index)
    last = bars.iloc[-1]
    lines = [
        f"Period: {_date(index[0], daily)} to {_date(index[-1], daily)}, {n:,} bars of "
        f"{_span(spacing)} ({ann:,.0f} bars per year).",
        f"Last bar ({_date(index[-1], daily)}): close {_price(float(last['close']), close[-1])}, "
        f"high {_price(float(last['high']), close[-1])}, low {_price(float(last['low']), close[-1])}.",
    ]
    horizons = [h for h in RETURN_HORIZONS if h < n]
    lines.append(
        "Returns: "
        + ", ".join(
            f"{h} bar{'s' if h > 1 else ''} {_pct(close[-1] / close[-1 - h] - 1.0)}"
            for h in horizons
        )
        + "."
    )
    sma_parts, slope_parts = [], []
    for w in (20, 50, 200):
        if n >= w:
            sma = pd.Series(close).rolling(w).mean().to_numpy()
            sma_parts.append(
                f"SMA{w} {_price(sma[-1], close[-1])} ({_pct(close[-1] / sma[-1] - 1.0)})"
            )
            if n >= w + WINDOW:
                slope_parts.append(f"SMA{w} {_pct(sma[-1] / sma[-1 - WINDOW] - 1.0)}")
    if sma_parts:
        lines.append("Close vs moving averages: " + ", ".join(sma_parts) + ".")
    if slope_parts and level <= 2:
        lines.append(
            f"Moving-average change over the last {WINDOW} bars: " + ", ".join(slope_parts) + "."
        )
    high = bars["high"].to_numpy(np.float64)
    low = bars["low"].to_numpy(np.float64)
    adx, p_di, m_di = wilder_adx(high, low, close, 14)
    trend = []
    if math.isfinite(adx):
        trend.append(f"ADX(14) {_num(adx)} (+DI {_num(p_di)}, -DI {_num(m_di)})")
    er = _efficiency_ratio(close, WINDOW)
    if math.isfinite(er):
        trend.append(f"efficiency ratio({WINDOW}) {_num(er)} (1 = straight line, 0 = no net move)")
    if trend:
        lines.append("Trend strength: " + "; ".join(trend) + ".")
    if level <= 1:
        span = min(n, LOOKBACK)
        hi, lo = float(high[-span:].max()), float(low[-span:].min())
        pos = (close[-1] - lo) / (hi - lo) if hi > lo else math.nan
        lines.append(
            f"Range of the last {span} bars: high {_price(hi, close[-1])}, low {_price(lo, close[-1])}; the close is at "
            f"{_pct(pos, False)} of that range (0% = low, 100% = high)."
        )
    mdd, peak, trough = max_drawdown(close)
    cur_peak = int(np.argmax(close))
    lines.append(
        f"Max drawdown of the close: {_pct(mdd)} ({_date(index[peak], daily)} to "
        f"{_date(index[trough], daily)}); now {_pct(close[-1] / close[cur_peak] - 1.0)} "
        f"from the peak of {_date(index[cur_peak], daily)}."
    )
    rows = _window_rows(bars, close, _WINDOWS_SHOWN[level], ann, daily)
    if rows:
        lines.append(
            f"Last {len(rows)} windows of {WINDOW} bars (oldest first): "
            "window | return | realised vol (annualised) | high-low range"
        )
        lines.extend(rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# volatility
# ---------------------------------------------------------------------------------------------
def _percentile_rank(history: np.ndarray, value: float) -> float:
    # Share of history at or below the value (the "weak" percentile rank), in [0, 1].
    history = history[np.isfinite(history)]
    return float((history <= value).mean()) if history.size else math.nan


def _vol_regime(rank: float) -> str:
    if not math.isfinite(rank):
        return "unknown"
    if rank < 0.2:
        return "low"
    if rank < 0.8:
        return "normal"
    if rank < 0.95:
        return "high"
    return "extreme"


def volatility_summary(bars: pd.DataFrame, detail: int = 0) -> str:
    """Summarise volatility: realised volatility by horizon, its percentile, vol of vol, ATR.

    Realised volatility is the standard deviation (``ddof=1``) of simple close-to-close bar
    returns times ``sqrt(bars_per_year)`` (see :func:`bars_per_year`), as the backtest's
    ``volatility`` metric. The current 20-bar volatility is ranked against every earlier
    20-bar value (percentile rank: share of history at or below it); the regime is ``low``
    below the 20th percentile, ``normal`` to the 80th, ``high`` to the 95th, else ``extreme``.
    Vol of vol is the coefficient of variation (std / mean) of the rolling 20-bar volatility
    over the last 250 bars. ATR is Wilder's ATR(14) (TA-Lib's). Parkinson's (1980) high-low
    volatility ``sqrt(mean(ln(H/L)^2) / (4 ln 2))`` over the last 20 bars is given beside it.
    No GARCH: every number is a plain statistic of the data.

    Parameters
    ----------
    bars : pandas.DataFrame
        Bar frame with ``high, low, close`` (at least 3 bars).
    detail : int
        0 = most detailed (with a table of the last 12 rolling-volatility readings); higher is
        shorter.

    Returns
    -------
    str
        Plain text.
    """
    from celeris.indicators import atr

    level = _level(detail)
    bars = _check_bars(bars, "volatility_summary", 3)
    close = bars["close"].to_numpy(np.float64)
    n = len(close)
    daily = _daily(bars.index)
    ann = bars_per_year(bars.index)
    rets = pd.Series(_simple_returns(close), index=bars.index[1:])
    root = math.sqrt(ann)
    days = year_days(bars.index)
    lines = [
        f"Annualisation: {ann:,.0f} bars per year ({days} days per year"
        f"{', no weekend bars' if days == 252 else ''}); volatility = std of bar returns x sqrt(bars per year)."
    ]
    parts = []
    for h in (WINDOW, 60, LOOKBACK):
        if len(rets) >= h and h >= 2:
            parts.append(f"last {h} bars {_pct(float(rets.iloc[-h:].std(ddof=1)) * root, False)}")
    parts.append(f"whole history {_pct(float(rets.std(ddof=1)) * root, False)}")
    lines.append("Realised volatility: " + ", ".join(parts) + ".")
    rolling = (rets.rolling(WINDOW).std(ddof=1) * root).dropna()
    if len(rolling):
        current = float(rolling.iloc[-1])
        rank = _percentile_rank(rolling.to_numpy(), current)
        lines.append(
            f"Current {WINDOW}-bar volatility {_pct(current, False)} is at percentile "
            f"{rank * 100:.0f} of its {len(rolling):,} readings since {_date(rolling.index[0], daily)} "
            f"(min {_pct(float(rolling.min()), False)}, median {_pct(float(rolling.median()), False)}, "
            f"max {_pct(float(rolling.max()), False)}): {_vol_regime(rank)} volatility regime."
        )
        recent = rolling.iloc[-LOOKBACK:]
        if len(recent) >= 2 and level <= 2:
            cv = float(recent.std(ddof=1) / recent.mean()) if recent.mean() > 0 else math.nan
            lines.append(
                f"Vol of vol: the {WINDOW}-bar volatility over the last {len(recent)} readings has "
                f"a coefficient of variation of {_num(cv)} (std {_pct(float(recent.std(ddof=1)), False)})."
            )
        if len(rolling) > 60 and level <= 1:
            lines.append(
                f"{WINDOW}-bar volatility 60 bars ago: {_pct(float(rolling.iloc[-61]), False)} "
                f"(change {_pct(current / float(rolling.iloc[-61]) - 1.0)})."
            )
    if n > 14:
        atr_s = atr(bars, window=14)
        atr_pct = (cast(pd.Series, atr_s) / bars["close"]).dropna()
        last_atr = float(cast(pd.Series, atr_s).iloc[-1])
        lines.append(
            f"ATR(14): {_price(last_atr, close[-1])} = {_pct(last_atr / close[-1], False)} of the last close "
            f"(ATR % at percentile {_percentile_rank(atr_pct.to_numpy(), float(atr_pct.iloc[-1])) * 100:.0f} of its history)."
        )
    if level <= 1:
        hl = np.log(
            bars["high"].to_numpy(np.float64)[-WINDOW:] / bars["low"].to_numpy(np.float64)[-WINDOW:]
        )
        park = math.sqrt(float(np.mean(hl**2)) / (4.0 * math.log(2.0))) * root
        lines.append(
            f"Parkinson high-low volatility, last {min(WINDOW, n)} bars: {_pct(park, False)}."
        )
    if level == 0 and len(rets) >= 60:
        recent_rets = rets.iloc[-LOOKBACK:]
        lines.append(
            f"Bar returns over the last {len(recent_rets)} bars: skewness "
            f"{_num(cast(float, recent_rets.skew()))}, excess kurtosis "
            f"{_num(cast(float, recent_rets.kurt()))}, largest fall "
            f"{_pct(float(recent_rets.min()))} ({_date(recent_rets.idxmin(), daily)}), largest rise "
            f"{_pct(float(recent_rets.max()))} ({_date(recent_rets.idxmax(), daily)})."
        )
    shown = _WINDOWS_SHOWN[level] if level <= 1 else 0
    if shown and len(rolling):
        readings = rolling.iloc[::-WINDOW].iloc[:shown].iloc[::-1]
        lines.append(
            f"{WINDOW}-bar volatility every {WINDOW} bars (oldest first): "
            + ", ".join(f"{_date(ts, daily)} {_pct(float(v), False)}" for ts, v in readings.items())
            + "."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# volume
# ---------------------------------------------------------------------------------------------
def _value_area(volume: np.ndarray, share: float) -> tuple[int, int, int]:
    """Point of control and value-area bin bounds (inclusive).

    Start at the bin with the most volume and add the neighbouring bin with more volume (the
    upper one on a tie) until ``share`` of the volume is inside, one bin at a time.
    """
    poc = int(np.argmax(volume))
    lo = hi = poc
    total = volume.sum()
    inside = volume[poc]
    while inside < share * total and (lo > 0 or hi < len(volume) - 1):
        below = volume[lo - 1] if lo > 0 else -1.0
        above = volume[hi + 1] if hi < len(volume) - 1 else -1.0
        if above >= below:
            hi += 1
            inside += volume[hi]
        else:
            lo -= 1
            inside += volume[lo]
    return poc, lo, hi


def volume_profile_summary(bars: pd.DataFrame, detail: int = 0) -> str:
    """Summarise volume: trend, up- vs down-volume and the volume-by-price profile.

    Over the last 250 bars (all bars if fewer), each bar's volume is assigned to one of 24
    equal price bins between the lowest low and the highest high by its typical price
    ``(high + low + close) / 3``. The point of control (POC) is the bin with the most volume;
    the value area grows from it one neighbouring bin at a time (the bin with more volume
    first) until it holds 70% of the volume. Up-volume is the volume of bars closing above the
    previous close, down-volume below it.

    A frame without a ``volume`` column, or whose volume is zero on every bar, gives a one-line
    section saying so instead of an error (many index and FX feeds carry no volume).

    Parameters
    ----------
    bars : pandas.DataFrame
        Bar frame with ``high, low, close`` and, normally, ``volume`` (at least 2 bars).
    detail : int
        0 = all 24 bins listed; 1 = the value-area bins only; 2 = POC and value area;
        3 = shortest.

    Returns
    -------
    str
        Plain text.
    """
    level = _level(detail)
    has_volume = isinstance(bars, pd.DataFrame) and "volume" in bars.columns
    columns = ("high", "low", "close", "volume") if has_volume else ("high", "low", "close")
    bars = _check_bars(bars, "volume_profile_summary", 2, columns)
    if not has_volume:
        return "No volume column in the data: volume analysis is unavailable."
    volume = bars["volume"].to_numpy()
    if not (volume > 0).any():
        return f"Volume is zero on all {len(volume):,} bars: volume analysis is unavailable."
    daily = _daily(bars.index)
    close = bars["close"].to_numpy(np.float64)
    n = len(close)
    span = min(n, LOOKBACK)
    lines = []
    zero = int((volume == 0).sum())
    if zero:
        lines.append(f"{zero:,} of {n:,} bars have zero volume.")
    trend = [f"last bar {_qty(float(volume[-1]))}"]
    for w in (WINDOW, span):
        if n >= w:
            trend.append(f"{w}-bar mean {_qty(float(volume[-w:].mean()))}")
    if n >= WINDOW and volume[-span:].mean() > 0:
        trend.append(
            f"ratio {WINDOW}-bar / {span}-bar mean {_num(float(volume[-WINDOW:].mean() / volume[-span:].mean()))}"
        )
    lines.append("Volume: " + ", ".join(trend) + ".")
    change = np.sign(np.diff(close))
    # Bar-to-bar changes exist from the second bar on, so a span covers at most n - 1 bars.
    spans = sorted({min(WINDOW, n - 1), min(span, n - 1)} if level <= 2 else {min(span, n - 1)})
    for w in spans:
        if w >= 1:
            vol_w, ch = volume[-w:], change[-w:]
            total = vol_w.sum()
            up, down = vol_w[ch > 0].sum(), vol_w[ch < 0].sum()
            lines.append(
                f"Last {w} bars: up-volume {_pct(up / total if total else math.nan, False)}, "
                f"down-volume {_pct(down / total if total else math.nan, False)} "
                f"({int((ch > 0).sum())} up bars, {int((ch < 0).sum())} down bars)."
            )
    if level <= 1 and n >= WINDOW + 1:
        mean20 = pd.Series(volume).rolling(WINDOW).mean().shift(1).to_numpy()
        recent = slice(n - min(span, n - WINDOW), n)
        spikes = np.flatnonzero(volume[recent] > 2.0 * mean20[recent]) + recent.start
        text = ", ".join(_date(bars.index[i], daily) for i in spikes[-5:])
        lines.append(
            f"Volume spikes (above twice the previous {WINDOW}-bar mean) in the last {recent.stop - recent.start} bars: "
            f"{len(spikes)}" + (f"; latest {text}." if len(spikes) else ".")
        )
    high = bars["high"].to_numpy(np.float64)[-span:]
    low = bars["low"].to_numpy(np.float64)[-span:]
    typical = (high + low + close[-span:]) / 3.0
    vol = volume[-span:]
    lo_p, hi_p = float(low.min()), float(high.max())
    if hi_p <= lo_p or vol.sum() == 0:
        lines.append(f"Volume by price: no price range or no volume in the last {span} bars.")
        return "\n".join(lines)
    edges = np.linspace(lo_p, hi_p, PROFILE_BINS + 1)
    which = np.clip(np.searchsorted(edges, typical, side="right") - 1, 0, PROFILE_BINS - 1)
    by_bin = np.bincount(which, weights=vol, minlength=PROFILE_BINS)
    share = by_bin / by_bin.sum()
    poc, va_lo, va_hi = _value_area(by_bin, VALUE_AREA)
    last = close[-1]
    where = (
        "inside"
        if edges[va_lo] <= last <= edges[va_hi + 1]
        else ("above" if last > edges[va_hi + 1] else "below")
    )
    lines.append(
        f"Volume by price, last {span} bars, {PROFILE_BINS} bins of {_price(edges[1] - edges[0], last)}: point of control "
        f"{_price(edges[poc], last)}-{_price(edges[poc + 1], last)} ({_pct(share[poc], False)} of volume); "
        f"value area ({VALUE_AREA:.0%} of volume) {_price(edges[va_lo], last)}-{_price(edges[va_hi + 1], last)}; "
        f"the last close {_price(last)} is {where} the value area."
    )
    if level <= 1:
        shown = range(PROFILE_BINS) if level == 0 else range(va_lo, va_hi + 1)
        lines.append("Price bin | share of volume (highest price first):")
        lines.extend(
            f"{_price(edges[i], last)}-{_price(edges[i + 1], last)} | {_pct(share[i], False)}"
            + (" (POC)" if i == poc else "")
            for i in reversed(shown)
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# funding rates
# ---------------------------------------------------------------------------------------------
def _check_funding(funding: Any, what: str = "funding") -> pd.Series:
    if not isinstance(funding, pd.Series):
        raise CelerisTypeError(
            f"{what} must be a pandas Series of rates, got {type(funding).__name__}"
        )
    if funding.empty:
        raise DataError(f"{what}: the series is empty")
    check_time_index(funding.index, what, utc=False)
    _finite_column(funding, what, str(funding.name or "rate"))
    return funding.astype(np.float64)


def funding_summary(funding: pd.Series, detail: int = 0) -> str:
    """Summarise perpetual-futures funding rates: level, averages, persistence, extremes.

    Averages are taken over the last 24 hours, 7 days and 30 days of timestamps (calendar
    time, not counts); the annualised rate is the mean rate times the intervals per 365-day
    year (simple, not compounded), the interval being the median spacing. The z-score compares
    the last rate with the mean and standard deviation (``ddof=1``) of the last 30 days.

    Parameters
    ----------
    funding : pandas.Series
        Rates as fractions per interval on a sorted DatetimeIndex (see :func:`load_funding`).
    detail : int
        0 = with the daily sums of the last 14 days; 1 = last 7 days; 2 = no table; 3 = shortest.

    Returns
    -------
    str
        Plain text.
    """
    level = _level(detail)
    funding = _check_funding(funding)
    index = funding.index
    daily = _daily(index)
    rates = funding.to_numpy(np.float64)
    last_ts = index[-1]
    lines = [
        f"Funding rates: {len(rates):,} readings from {_date(index[0], daily)} to {_date(last_ts, daily)}; "
        f"last {_rate(rates[-1])}."
    ]
    if len(rates) < 2:
        return "\n".join(lines)
    interval = _spacing(index)
    per_year = pd.Timedelta(days=365) / interval
    lines[0] = lines[0][:-1] + f" (funding interval {_span(interval)})."
    parts = []
    for label, delta in (
        ("24h", pd.Timedelta(hours=24)),
        ("7d", pd.Timedelta(days=7)),
        ("30d", pd.Timedelta(days=30)),
    ):
        window = rates[index > last_ts - delta]
        parts.append(
            f"{label} mean {_rate(float(window.mean()))} (annualised {_pct(float(window.mean()) * per_year)})"
        )
    lines.append("Averages: " + ", ".join(parts) + ".")
    month = rates[index > last_ts - pd.Timedelta(days=30)]
    if level <= 2:
        sd = float(month.std(ddof=1)) if len(month) > 1 else math.nan
        z = (rates[-1] - month.mean()) / sd if sd > 0 else math.nan
        flips = int((np.diff(np.sign(month)) != 0).sum())
        lines.append(
            f"Last 30 days: {_pct(float((month > 0).mean()), False)} of readings positive, sum "
            f"{_pct(float(month.sum()))}, sign changes {flips}; z-score of the last rate {_num(z)}."
        )
    if level <= 1:
        hi, lo = int(np.argmax(rates)), int(np.argmin(rates))
        lines.append(
            f"Extremes of the whole series: highest {_rate(rates[hi])} ({_date(index[hi], daily)}), "
            f"lowest {_rate(rates[lo])} ({_date(index[lo], daily)})."
        )
    days = (14, 7, 0, 0)[level]
    if days:
        sums = funding.groupby(cast(pd.DatetimeIndex, index).floor("D")).sum().iloc[-days:]
        lines.append(
            f"Daily sums, last {len(sums)} days: "
            + ", ".join(f"{_date(ts, True)} {_rate(float(v))}" for ts, v in sums.items())
            + "."
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# order book
# ---------------------------------------------------------------------------------------------
def orderbook_summary(book: OrderBook | Mapping[str, Any], detail: int = 0) -> str:
    """Summarise an order-book snapshot: mid, spread, depth and imbalance near the mid.

    Depth within ``x`` of the mid sums the size (and notional, price x size) of bids priced at
    or above ``mid (1 - x)`` and asks at or below ``mid (1 + x)``, for x = 0.1%, 0.5% and 1%.
    Imbalance is ``(bid notional - ask notional) / (bid notional + ask notional)`` in that band:
    +100% means only bids, -100% only asks.

    Parameters
    ----------
    book : OrderBook or mapping
        A snapshot (a mapping is validated with :meth:`OrderBook.from_mapping`).
    detail : int
        0 = with the five best levels of each side and the largest resting orders; 1 = largest
        orders; 2 = depth only; 3 = spread and the 1% band.

    Returns
    -------
    str
        Plain text.
    """
    level = _level(detail)
    if not isinstance(book, OrderBook):
        book = OrderBook.from_mapping(book)
    bids, asks = book.bids, book.asks
    best_bid, best_ask = float(bids[0, 0]), float(asks[0, 0])
    mid = (best_bid + best_ask) / 2.0
    spread = best_ask - best_bid
    head = "Order book"
    if book.symbol:
        head += f" {book.symbol}"
    if book.timestamp is not None:
        head += f" at {book.timestamp.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    lines = [
        f"{head}: {len(bids)} bid and {len(asks)} ask levels; best bid {_price(best_bid, mid)} "
        f"(size {_qty(float(bids[0, 1]))}), best ask {_price(best_ask, mid)} (size {_qty(float(asks[0, 1]))}); "
        f"mid {_price(mid)}, spread {_price(spread, mid)} = {spread / mid * 1e4:.2f} bp."
    ]
    bands = DEPTH_BANDS if level <= 2 else DEPTH_BANDS[-1:]
    for band in bands:
        b = bids[bids[:, 0] >= mid * (1.0 - band)]
        a = asks[asks[:, 0] <= mid * (1.0 + band)]
        b_not, a_not = float((b[:, 0] * b[:, 1]).sum()), float((a[:, 0] * a[:, 1]).sum())
        total = b_not + a_not
        imbalance = (b_not - a_not) / total if total > 0 else math.nan
        lines.append(
            f"Within {band * 100:g}% of mid: bids {_qty(float(b[:, 1].sum()))} ({_qty(b_not)} notional, "
            f"{_plural(len(b), 'level')}), asks {_qty(float(a[:, 1].sum()))} ({_qty(a_not)} notional, {_plural(len(a), 'level')}); "
            f"imbalance {_pct(imbalance)}."
        )
    if level <= 2:
        lines.append(
            f"Book reaches {_pct(float(bids[-1, 0]) / mid - 1.0)} (bids) and "
            f"{_pct(float(asks[-1, 0]) / mid - 1.0)} (asks) from mid."
        )
    if level <= 1:
        for name, side in (("bids", bids), ("asks", asks)):
            top = np.argsort(-side[:, 1], kind="stable")[:3]
            lines.append(
                f"Largest {name}: "
                + ", ".join(
                    f"{_qty(float(side[i, 1]))} at {_price(float(side[i, 0]), mid)} ({_bp(float(side[i, 0]) / mid - 1.0)} from mid)"
                    for i in top
                )
                + "."
            )
    if level == 0:
        for name, side in (("bids", bids), ("asks", asks)):
            lines.append(
                f"Best 5 {name} (price x size): "
                + ", ".join(f"{_price(float(p), mid)} x {_qty(float(s))}" for p, s in side[:5])
                + "."
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# risk
# ---------------------------------------------------------------------------------------------
def _strategy_returns(obj: Any, bars: pd.DataFrame) -> tuple[pd.Series, Any]:
    from celeris.backtest import Portfolio

    if isinstance(obj, Portfolio):
        if len(obj.columns) != 1:
            raise ConfigError(
                f"risk_summary takes a portfolio with one column, got {len(obj.columns)}; select one "
                "with pf[label] or pf.iloc([i])"
            )
        if not obj.index.equals(bars.index):
            raise DataError("risk_summary: the portfolio and the bars have different timestamps")
        return obj.returns.iloc[:, 0].rename("strategy"), obj
    if isinstance(obj, pd.DataFrame) and obj.shape[1] == 1:
        obj = obj.iloc[:, 0]
    if not isinstance(obj, pd.Series):
        raise CelerisTypeError(
            f"risk_summary takes a Portfolio or a Series of strategy bar returns, got {type(obj).__name__}"
        )
    if obj.empty:
        raise DataError("risk_summary: the strategy returns are empty")
    check_time_index(obj.index, "risk_summary: the strategy returns", utc=False)
    _finite_column(obj, "risk_summary: the strategy returns", str(obj.name or "returns"))
    missing = obj.index.difference(bars.index)
    if len(missing):
        raise DataError(f"risk_summary: strategy return at {missing[0]} has no bar")
    if (obj <= -1.0).any():
        raise DataError(
            f"risk_summary: strategy return <= -100% at {obj.index[int(np.argmax((obj <= -1.0).to_numpy()))]}"
        )
    return obj.astype(np.float64).rename("strategy"), None


def _position_lines(pf: Any, bars: pd.DataFrame, daily: bool) -> list[str]:
    stats = pf.stats().iloc[0]
    equity = pf.equity.iloc[:, 0]
    trades = pf.trades
    open_trades = trades[trades["status"] == "open"]
    last_close = float(bars["close"].iloc[-1])
    lines = []
    if len(open_trades):
        t = open_trades.iloc[-1]
        value = float(t["size"]) * last_close
        lines.append(
            f"Current position: {t['direction']} {_qty(float(t['size']))} units since "
            f"{_date(t['entry_time'], daily)} at {_price(float(t['entry_price']), last_close)}; value "
            f"{_qty(value)} = {_pct(value / float(equity.iloc[-1]), False)} of equity "
            f"{_qty(float(equity.iloc[-1]))}; unrealised {_pct(float(t['return']))} ({_qty(float(t['pnl']))})."
        )
    else:
        lines.append(f"Current position: flat (all cash); equity {_qty(float(equity.iloc[-1]))}.")
    lines.append(
        f"Backtest: total return {_pct(float(stats['total_return']))}, Sharpe {_num(float(stats['sharpe']))}, "
        f"time in market {_pct(float(stats['exposure']), False)}, {int(stats['trades'])} trades, "
        f"win rate {_pct(float(stats['win_rate']), False)}."
    )
    return lines


def _aligned_returns(other: Any, name: str) -> pd.Series:
    if isinstance(other, pd.DataFrame) and "close" in other.columns:
        other = other["close"]
    if not isinstance(other, pd.Series):
        raise CelerisTypeError(
            f"other asset {name!r} must be a price Series, got {type(other).__name__}"
        )
    what = f"risk_summary: other asset {name!r}"
    if len(other) < 2:
        raise DataError(f"{what} needs at least 2 prices, got {len(other)}")
    check_time_index(other.index, what, utc=False)
    prices = _finite_column(other, what, str(other.name or "close"))
    if (prices <= 0).any():
        raise DataError(f"{what} has a price <= 0 at {other.index[int(np.argmax(prices <= 0))]}")
    return pd.Series(_simple_returns(prices), index=other.index[1:])


def _corr(a: pd.Series, b: pd.Series) -> tuple[float, int]:
    both = pd.concat([a, b], axis=1, join="inner")
    if len(both) < WINDOW or both.iloc[:, 0].std() == 0 or both.iloc[:, 1].std() == 0:
        return math.nan, len(both)
    return float(both.iloc[:, 0].corr(both.iloc[:, 1])), len(both)


def risk_summary(
    portfolio_or_returns: Any,
    bars: pd.DataFrame,
    other_assets: Mapping[str, pd.Series] | None = None,
    detail: int = 0,
) -> str:
    """Summarise the risk of a strategy: position, volatility, VaR/CVaR, drawdowns, correlations.

    VaR and CVaR are historical (no distribution assumed) over one-bar returns at 95% and 99%,
    for the strategy and for holding the asset, as positive losses: VaR = minus the 5% (1%)
    quantile of returns (numpy's linear interpolation), CVaR = minus the mean return at or below
    that quantile. Strategy returns include flat bars (return 0), so with little time in the
    market they understate the loss per bar held; the exposure line says how much. Correlations
    are Pearson correlations of simple bar returns on the timestamps both series have (at least
    20), over the whole overlap and the last 250 bars; beta is ``cov(strategy, asset) /
    var(asset)``.

    Parameters
    ----------
    portfolio_or_returns : Portfolio or pandas.Series
        A one-column :class:`celeris.backtest.Portfolio` run on ``bars`` (gives the open
        position and backtest figures) or the strategy's bar returns on (a subset of) the bars'
        timestamps.
    bars : pandas.DataFrame
        The traded asset's bars (``high, low, close``, at least 3).
    other_assets : mapping of name to price Series, optional
        Other assets' close prices (or bar frames) for correlations.
    detail : int
        0 = most detailed (5 worst bars, correlations over two spans); higher is shorter.

    Returns
    -------
    str
        Plain text.
    """
    level = _level(detail)
    bars = _check_bars(bars, "risk_summary", 3)
    strat, pf = _strategy_returns(portfolio_or_returns, bars)
    if len(strat) < 3:
        raise DataError(f"risk_summary needs at least 3 strategy returns, got {len(strat)}")
    daily = _daily(bars.index)
    ann = pf.ann_factor if pf is not None else bars_per_year(bars.index)
    root = math.sqrt(ann)
    close = bars["close"]
    asset = close.pct_change().iloc[1:].rename("asset")
    lines = (
        _position_lines(pf, bars, daily)
        if pf is not None
        else [
            f"Strategy returns supplied directly ({len(strat):,} bars); the open position is not known."
        ]
    )
    s_arr, a_arr = strat.to_numpy(), asset.to_numpy()
    in_market = float((s_arr != 0).mean())
    lines.append(
        f"Volatility (annualised, {ann:,.0f} bars per year): strategy {_pct(float(s_arr.std(ddof=1)) * root, False)}, "
        f"asset {_pct(float(a_arr.std(ddof=1)) * root, False)}; the strategy's return is non-zero on "
        f"{_pct(in_market, False)} of bars."
    )
    for label, arr in (("strategy", s_arr), ("asset", a_arr)):
        v95, c95 = historical_var_cvar(arr, 0.95)
        v99, c99 = historical_var_cvar(arr, 0.99)
        lines.append(
            f"One-bar historical VaR/CVaR, {label}: 95% {_pct(v95, False)} / {_pct(c95, False)}, "
            f"99% {_pct(v99, False)} / {_pct(c99, False)}."
        )
    equity = (1.0 + strat).cumprod().to_numpy() if pf is None else pf.equity.iloc[:, 0].to_numpy()
    mdd, peak, trough = max_drawdown(equity)
    eq_index = strat.index
    cur_peak = int(np.argmax(equity))
    lines.append(
        f"Strategy drawdown: now {_pct(equity[-1] / equity[cur_peak] - 1.0)} (peak {_date(eq_index[cur_peak], daily)}), "
        f"max {_pct(mdd)} ({_date(eq_index[peak], daily)} to {_date(eq_index[trough], daily)})."
    )
    worst = (5, 3, 1, 0)[level]
    if worst:
        order = np.argsort(s_arr, kind="stable")[:worst]
        lines.append(
            ("Worst strategy bar: " if len(order) == 1 else f"Worst {len(order)} strategy bars: ")
            + ", ".join(f"{_date(eq_index[i], daily)} {_pct(float(s_arr[i]))}" for i in order)
            + "."
        )
    corr_sa, n_sa = _corr(strat, asset)
    both = pd.concat([strat, asset], axis=1, join="inner")
    var_a = float(both["asset"].var(ddof=1))
    beta = float(both["strategy"].cov(both["asset"])) / var_a if var_a > 0 else math.nan
    corr_text = (
        f"Strategy vs asset: correlation {_num(corr_sa)} over {n_sa:,} bars, beta {_num(beta)}"
    )
    if level <= 1 and len(both) > LOOKBACK:
        recent, _ = _corr(both["strategy"].iloc[-LOOKBACK:], both["asset"].iloc[-LOOKBACK:])
        corr_text += f"; last {LOOKBACK} bars correlation {_num(recent)}"
    lines.append(corr_text + ".")
    for name, prices in (other_assets or {}).items():
        other = _aligned_returns(prices, name)
        c_s, n_s = _corr(strat, other)
        c_a, _ = _corr(asset, other)
        text = f"Correlation with {name}: strategy {_num(c_s)}, asset {_num(c_a)} over {n_s:,} common bars"
        if n_s < WINDOW:
            text += f" (fewer than {WINDOW} common bars: not computed)"
        elif level <= 1:
            joined = pd.concat([strat, asset, other.rename("other")], axis=1, join="inner").iloc[
                -LOOKBACK:
            ]
            text += (
                f"; last {len(joined)}: strategy {_num(float(joined['strategy'].corr(joined['other'])))}, "
                f"asset {_num(float(joined['asset'].corr(joined['other'])))}"
            )
        lines.append(text + ".")
    return "\n".join(lines)
