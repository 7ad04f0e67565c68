"""pandas-friendly technical indicators over the kernels in :mod:`celeris.indicators.nb`.

Each function takes ``close`` (or ``high``/``low``/``close``) as a pandas Series, a 1-D numpy
array, or a bar frame (its ``close``/``high``/``low`` columns are used, matched
case-insensitively), or as time x assets (below). Every window argument is an int or a
sequence of ints; for one series:

* an int returns a Series named like ``sma_20`` with the input's index (a 1-D array for numpy
  input);
* a sequence returns a DataFrame with one column per window, columns an Index named
  ``window`` (a MultiIndex ``(fast, slow, signal)`` for :func:`macd`), same index as the input
  (a RangeIndex for numpy input).

Time x assets (2-D) input works for every indicator: a 2-D numpy array ``[T, A]``, a frame
with one column per asset (closes; for atr, donchian and adx one such frame each for high, low
and close, same index and columns), or a multi-asset bar frame with MultiIndex columns
``(symbol, field)`` (or ``(field, symbol)``, as yfinance downloads). Each asset column is
computed on its own (its own leading NaNs), with the same values as a 1-D call on that column:

* an int returns a time x assets DataFrame with the input's columns (a 2-D array ``[T, A]``
  for numpy input);
* a sequence returns a DataFrame whose columns are a MultiIndex of the parameter level(s)
  (``window``, or ``fast, slow, signal``) then the asset level, parameter-major, so
  ``sma(closes, [10, 20])[10]`` is the time x assets frame of window 10 (for numpy input the
  asset level holds the column positions and the index is a RangeIndex).

A frame is read as a bar frame when it has any of the columns open, high, low, close, volume
(matched case-insensitively); then it must have the field the indicator needs.

Multi-output indicators return a NamedTuple of those (:class:`BBands`, :class:`MACD`,
:class:`Donchian`, :class:`ADX`). Values match TA-Lib to 1e-9 wherever it has the indicator.

NaN handling (the rule of every kernel): leading NaNs are skipped, the warm-up counts from the
first bar where every input is valid; a NaN after that makes the indicator NaN from that bar on,
and the call warns (``RuntimeWarning``). Empty input or ``inf`` raises :class:`DataError`; a
non-numeric input, an array of more than 2 dimensions or a window outside ``[1, len(data)]`` raises
:class:`ConfigError`; a window that is not an int raises :class:`CelerisTypeError`.

Warm-up (NaN bars from the first valid bar): ``w - 1`` for sma, ema, wma, rolling_std, zscore,
bbands and donchian; ``w`` for rsi and atr (both need a previous close); ``w`` for the DIs of adx and ``2 w - 1``
for its ADX;
``max(fast, slow) - 1 + signal - 1`` for macd.
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.errors import CelerisTypeError
from celeris.indicators import _inputs
from celeris.indicators._inputs import Output

__all__ = [
    "ADX",
    "MACD",
    "BBands",
    "Donchian",
    "adx",
    "atr",
    "bbands",
    "donchian",
    "ema",
    "macd",
    "rolling_std",
    "rsi",
    "sma",
    "wma",
    "zscore",
]


class BBands(NamedTuple):
    """Bollinger Bands: SMA plus/minus a multiple of the population standard deviation."""

    upper: Output
    middle: Output
    lower: Output


class MACD(NamedTuple):
    """MACD line (fast EMA minus slow EMA), its signal EMA and the histogram (line - signal)."""

    macd: Output
    signal: Output
    hist: Output


class Donchian(NamedTuple):
    """Donchian channel: highest high, midpoint, lowest low over the window."""

    upper: Output
    middle: Output
    lower: Output


class ADX(NamedTuple):
    """Wilder's average directional index and the two directional indicators, in ``[0, 100]``."""

    adx: Output
    plus_di: Output
    minus_di: Output


def _nb() -> ModuleType:
    # numba compiles (or loads from cache) on first use, not on `import celeris.indicators`
    from celeris.indicators import nb

    return nb


def _window_index(windows: np.ndarray) -> pd.Index:
    return pd.Index(windows, name="window")


def _single(
    kernel_name: str,
    prefix: str,
    close: Any,
    window: Any,
    *extra: Any,
    minimum: int = 1,
) -> Output:
    data = _inputs.bars([(close, "close", "close")])
    _inputs.warn_on_gap(data, ["close"], stacklevel=4)
    ws, scalar = _inputs.windows(window, "window", data.n_bars, minimum)
    (matrix,) = _inputs.run_kernel(getattr(_nb(), kernel_name), data, (ws, *extra), len(ws), 1)
    return _inputs.shape_output(
        matrix, _window_index(ws), scalar, f"{prefix}_{ws[0]}", data.index, data.assets
    )


def sma(close: Any, window: Any = 20) -> Output:
    """Return the simple moving average, same as ``talib.SMA`` / ``close.rolling(w).mean()``.

    Parameters
    ----------
    close
        Series, 1-D array or bar frame.
    window
        Window length or sequence of lengths, each in ``[1, len(close)]``.

    Examples
    --------
    >>> import numpy as np
    >>> sma(np.array([1.0, 2.0, 3.0, 4.0]), 2)
    array([nan, 1.5, 2.5, 3.5])
    """
    return _single("sma_nb", "sma", close, window)


def ema(close: Any, window: Any = 20) -> Output:
    """Return the exponential moving average (``k = 2 / (w + 1)``) seeded with the SMA of the
    first ``w`` bars, same as ``talib.EMA``.

    Examples
    --------
    >>> import numpy as np
    >>> ema(np.array([1.0, 2.0, 3.0, 4.0]), 3)
    array([nan, nan,  2.,  3.])
    """
    return _single("ema_nb", "ema", close, window)


def wma(close: Any, window: Any = 20) -> Output:
    """Return the linearly weighted moving average (weights ``1 .. w``), same as ``talib.WMA``."""
    return _single("wma_nb", "wma", close, window)


def rsi(close: Any, window: Any = 14) -> Output:
    """Return Wilder's RSI in ``[0, 100]``, same as ``talib.RSI``; warm-up ``w`` bars.

    0 where prices did not move over the whole smoothing memory, TA-Lib's value.

    Examples
    --------
    >>> import numpy as np
    >>> rsi(np.array([1.0, 2.0, 1.5, 2.5]), 2)
    array([        nan,         nan, 66.66666667, 85.71428571])
    """
    return _single("rsi_nb", "rsi", close, window)


def rolling_std(close: Any, window: Any = 20, ddof: int = 0) -> Output:
    """Return the rolling standard deviation with ``ddof`` delta degrees of freedom.

    ``ddof=0`` (population, the default) is ``talib.STDDEV(close, w, 1)``; ``ddof=1`` is
    ``close.rolling(w).std()``. Each window must exceed ``ddof``.
    """
    ddof = check_int("ddof", ddof, minimum=0)
    return _single("rolling_std_nb", "rolling_std", close, window, ddof, minimum=ddof + 1)


def zscore(close: Any, window: Any = 20) -> Output:
    """Return the rolling z-score ``(close - mean) / std`` with population std (``ddof=0``).

    NaN where the window is flat (std 0), so ``window=1`` gives NaN everywhere.
    """
    return _single("zscore_nb", "zscore", close, window)


def bbands(close: Any, window: Any = 20, nbdev_up: float = 2.0, nbdev_dn: float = 2.0) -> BBands:
    """Return Bollinger Bands, same as ``talib.BBANDS(close, w, nbdev_up, nbdev_dn, 0)``.

    Parameters
    ----------
    close
        Series, 1-D array or bar frame.
    window
        Window length or sequence of lengths.
    nbdev_up, nbdev_dn
        Multiples (``>= 0``) of the population standard deviation above and below the SMA.
    """
    up = check_real("nbdev_up", nbdev_up, minimum=0)
    dn = check_real("nbdev_dn", nbdev_dn, minimum=0)
    data = _inputs.bars([(close, "close", "close")])
    _inputs.warn_on_gap(data, ["close"])
    ws, scalar = _inputs.windows(window, "window", data.n_bars)
    mats = _inputs.run_kernel(_nb().bbands_nb, data, (ws, up, dn), len(ws), 3)
    cols = _window_index(ws)
    return BBands(
        *(
            _inputs.shape_output(m, cols, scalar, f"bbands_{part}_{ws[0]}", data.index, data.assets)
            for m, part in zip(mats, BBands._fields, strict=True)
        )
    )


def macd(close: Any, fast: Any = 12, slow: Any = 26, signal: Any = 9) -> MACD:
    """Return MACD, same as ``talib.MACD(close, fast, slow, signal)`` for ``fast <= slow``.

    Any of ``fast``, ``slow``, ``signal`` may be a sequence: every combination (the Cartesian
    product) is computed, in ``itertools.product(fast, slow, signal)`` order, with columns a
    MultiIndex named ``(fast, slow, signal)``. TA-Lib's warm-up alignment: both EMAs are seeded
    on bar ``max(fast, slow) - 1``, so all three outputs start at bar
    ``max(fast, slow) - 1 + signal - 1``. A combination with ``fast > slow`` is computed as
    written, ``EMA(fast) - EMA(slow)`` (TA-Lib would silently swap the two).

    Examples
    --------
    >>> import numpy as np
    >>> line, sig, hist = macd(np.arange(1.0, 41.0), 12, 26, 9)
    >>> int(np.isnan(line).sum()), float(line[-1])
    (33, 7.0)
    """
    data = _inputs.bars([(close, "close", "close")])
    _inputs.warn_on_gap(data, ["close"])
    n = data.n_bars
    fs, f_scalar = _inputs.windows(fast, "fast", n)
    ss, s_scalar = _inputs.windows(slow, "slow", n)
    gs, g_scalar = _inputs.windows(signal, "signal", n)
    combos = np.array(list(itertools.product(fs, ss, gs)), dtype=np.int64)  # [k, 3]
    scalar = f_scalar and s_scalar and g_scalar
    periods = tuple(np.ascontiguousarray(combos[:, i]) for i in range(3))
    mats = _inputs.run_kernel(_nb().macd_nb, data, periods, combos.shape[0], 3)
    cols = pd.MultiIndex.from_arrays(
        [combos[:, 0], combos[:, 1], combos[:, 2]], names=["fast", "slow", "signal"]
    )
    suffix = f"{fs[0]}_{ss[0]}_{gs[0]}"
    return MACD(
        *(
            _inputs.shape_output(m, cols, scalar, f"{prefix}_{suffix}", data.index, data.assets)
            for m, prefix in zip(mats, ("macd", "macd_signal", "macd_hist"), strict=True)
        )
    )


def _hlc(high: Any, low: Any, close: Any, window: Any, func: str, fields: tuple[str, ...]) -> Any:
    # Resolve atr(df, window=14) / atr(h, l, c, 14) / donchian(df) / donchian(h, l, 20).
    if isinstance(high, pd.DataFrame) and low is None and close is None:
        _inputs.require_bar_frame(high, fields, func)
        objs = [high] * len(fields)
    elif isinstance(high, pd.DataFrame) and isinstance(low, int | np.integer | list | tuple):
        raise CelerisTypeError(f"pass the window by keyword: {func}(frame, window=...)")
    else:
        objs = [high, low, close][: len(fields)]
        for obj, field in zip(objs, fields, strict=True):
            if obj is None:
                raise CelerisTypeError(
                    f"{func}: {field} is missing; pass {', '.join(fields)} or one bar frame"
                )
    return _inputs.bars([(o, f, f) for o, f in zip(objs, fields, strict=True)])


def atr(high: Any, low: Any = None, close: Any = None, window: Any = 14) -> Output:
    """Return Wilder's average true range, same as ``talib.ATR(high, low, close, w)``.

    Call as ``atr(high, low, close, window)`` or ``atr(bars, window=14)`` with a bar frame.
    The first ATR, on bar ``w``, is the mean of the true ranges of bars ``1 .. w``; then
    ``atr = (atr * (w - 1) + tr) / w``. A NaN in any of the three inputs counts as a gap.
    """
    data = _hlc(high, low, close, window, "atr", ("high", "low", "close"))
    _inputs.warn_on_gap(data, ["high", "low", "close"])
    ws, scalar = _inputs.windows(window, "window", data.n_bars)
    (matrix,) = _inputs.run_kernel(_nb().atr_nb, data, (ws,), len(ws), 1)
    return _inputs.shape_output(
        matrix, _window_index(ws), scalar, f"atr_{ws[0]}", data.index, data.assets
    )


def donchian(high: Any, low: Any = None, window: Any = 20) -> Donchian:
    """Return the Donchian channel: ``high.rolling(w).max()``, the midpoint, ``low.rolling(w).min()``.

    Call as ``donchian(high, low, window)`` or ``donchian(bars, window=20)`` with a bar frame.
    """
    data = _hlc(high, low, None, window, "donchian", ("high", "low"))
    _inputs.warn_on_gap(data, ["high", "low"])
    ws, scalar = _inputs.windows(window, "window", data.n_bars)
    mats = _inputs.run_kernel(_nb().donchian_nb, data, (ws,), len(ws), 3)
    cols = _window_index(ws)
    return Donchian(
        *(
            _inputs.shape_output(
                m, cols, scalar, f"donchian_{part}_{ws[0]}", data.index, data.assets
            )
            for m, part in zip(mats, Donchian._fields, strict=True)
        )
    )


def adx(high: Any, low: Any = None, close: Any = None, window: Any = 14) -> ADX:
    """Return Wilder's ADX with +DI and -DI, same as ``talib.ADX``, ``talib.PLUS_DI`` and
    ``talib.MINUS_DI`` of ``(high, low, close, w)``.

    Call as ``adx(high, low, close, window)`` or ``adx(bars, window=14)`` with a bar frame.
    Each window must be in ``[2, len(data)]`` (TA-Lib's range starts at 2). Warm-up: ``w``
    bars for the DIs, ``2 w - 1`` for the ADX. Formulas (Wilder 1978, TA-Lib's seeding) in
    :func:`celeris.indicators.nb.adx_nb`.

    Examples
    --------
    >>> import numpy as np
    >>> high = np.array([10.0, 11.0, 12.0, 11.5, 12.5])
    >>> low = high - 1.0
    >>> line, plus, minus = adx(high, low, high - 0.5, 2)
    >>> [round(float(v), 4) for v in line[3:]]
    [60.0, 64.6154]
    """
    data = _hlc(high, low, close, window, "adx", ("high", "low", "close"))
    _inputs.warn_on_gap(data, ["high", "low", "close"])
    ws, scalar = _inputs.windows(
        window, "window", data.n_bars, 2, "the ADX smooths at least two moves"
    )
    mats = _inputs.run_kernel(_nb().adx_nb, data, (ws,), len(ws), 3)
    cols = _window_index(ws)
    return ADX(
        *(
            _inputs.shape_output(m, cols, scalar, f"{part}_{ws[0]}", data.index, data.assets)
            for m, part in zip(mats, ADX._fields, strict=True)
        )
    )
