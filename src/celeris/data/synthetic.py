"""Synthetic crypto-like data for tests and demos, deterministic per seed.

:func:`synthetic`: bars, GBM with GARCH(1,1) volatility clustering and Poisson jumps;
:func:`synthetic_funding`: perpetual-swap funding rates at funding times, by the exchange's
funding formula over a mean-reverting premium.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.data.funding_schema import MAX_ABS_RATE, validate_funding
from celeris.data.schema import validate
from celeris.errors import ConfigError, DataError

_YEAR = pd.Timedelta(days=365.25)  # crypto trades 24/7: a year is 365.25 days of bars
_BASE_DAILY_VOLUME = 20_000.0  # units of the base asset per day, at typical volatility


def synthetic(
    n_bars: int = 100_000,
    *,
    freq: str = "1min",
    seed: int | None = 0,
    start: str | pd.Timestamp = "2020-01-01",
    s0: float = 30_000.0,
    mu: float = 0.0,
    sigma: float = 0.6,
    garch_alpha: float = 0.05,
    garch_beta: float = 0.94,
    jump_intensity: float = 2.0,
    jump_scale: float = 0.01,
) -> pd.DataFrame:
    """Simulate crypto-like OHLCV bars, deterministically per ``seed``.

    Log-returns are geometric Brownian motion whose per-bar variance follows a GARCH(1,1)
    recursion (Bollerslev 1986), ``h[t] = omega + alpha * eps[t-1]**2 + beta * h[t-1]``, with
    ``omega`` chosen so that the unconditional volatility is ``sigma``; compound-Poisson jumps
    with normal log-sizes are added on top (Merton 1976). Each bar opens at the previous close
    times a tiny gap (a twentieth of the bar's volatility); the high and the low are drawn
    exactly from the distribution of the maximum and minimum of a Brownian bridge from open to
    close (Glasserman 2004, *Monte Carlo Methods in Financial Engineering*, sec. 6.4), so
    ``high >= max(open, close)`` and ``low <= min(open, close)`` by construction. Volume is
    positive, log-normal and grows with ``|return|`` relative to the typical bar move.

    Parameters
    ----------
    n_bars : int
        Number of bars.
    freq : str
        Bar length as a pandas frequency (``"1min"``, ``"5min"``, ``"1h"``, ``"1D"``).
    seed : int or None
        Seed of ``numpy.random.default_rng``: the same seed gives the same bars; ``None`` draws
        fresh entropy (different bars each call).
    start : str or pandas.Timestamp
        Time of the first bar (naive is taken as UTC).
    s0 : float
        Close of the bar before the first one (the first open is near it).
    mu : float
        Annualised drift of log-prices (before the ``-h/2`` Itô correction).
    sigma : float
        Annualised unconditional volatility of the diffusion (jumps add to it).
    garch_alpha, garch_beta : float
        GARCH(1,1) reaction and persistence; ``alpha + beta < 1``.
    jump_intensity : float
        Expected number of jumps per day.
    jump_scale : float
        Standard deviation of a jump's log-size (0.01 is about 1%).

    Returns
    -------
    pandas.DataFrame
        A validated bar frame with ``n_bars`` rows.

    Raises
    ------
    CelerisTypeError
        A parameter has the wrong type (a float ``n_bars``, a bool where a number is wanted).
    ConfigError
        A parameter is out of range, NaN or infinite.
    """
    n_bars = check_int("n_bars", n_bars, minimum=1)
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    step = _check_freq(freq)
    s0 = check_real("s0", s0, minimum=0, open_low=True)
    mu = check_real("mu", mu)
    sigma = check_real("sigma", sigma, minimum=0, open_low=True)
    garch_alpha = check_real("garch_alpha", garch_alpha, minimum=0)
    garch_beta = check_real("garch_beta", garch_beta, minimum=0)
    if garch_alpha + garch_beta >= 1:
        raise ConfigError(
            "garch_alpha + garch_beta must be < 1 for a finite variance, got "
            f"{garch_alpha + garch_beta}"
        )
    jump_intensity = check_real("jump_intensity", jump_intensity, minimum=0)
    jump_scale = check_real("jump_scale", jump_scale, minimum=0)
    from celeris.data.nb import garch_variance_nb

    dt_years = step / _YEAR
    sigma_bar = sigma * np.sqrt(dt_years)
    omega = sigma_bar**2 * (1.0 - garch_alpha - garch_beta)

    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_bars)
    h = garch_variance_nb(z, omega, garch_alpha, garch_beta)  # [T] per-bar variance
    vol = np.sqrt(h)
    lam = jump_intensity * (step / pd.Timedelta(days=1))
    n_jumps = rng.poisson(lam, n_bars)
    # A sum of k normal jumps is normal with variance k * scale^2.
    jumps = np.sqrt(n_jumps) * jump_scale * rng.standard_normal(n_bars)
    ret = (mu * dt_years - 0.5 * h) + vol * z + jumps  # close-to-close log-return

    log_close = np.log(s0) + np.cumsum(ret)
    log_prev = np.empty(n_bars)
    log_prev[0] = np.log(s0)
    log_prev[1:] = log_close[:-1]
    log_open = log_prev + 0.05 * vol * rng.standard_normal(n_bars)
    move = log_close - log_open  # intrabar move b
    var = h + n_jumps * jump_scale**2
    # Max of a Brownian bridge from 0 to b with variance v: P(M > m) = exp(-2 m (m - b) / v),
    # so M = (b + sqrt(b^2 - 2 v ln U)) / 2; the minimum mirrors it.
    u1 = rng.random(n_bars)
    u2 = rng.random(n_bars)
    log_u1 = np.log1p(-u1)  # ln U with U in (0, 1]
    log_u2 = np.log1p(-u2)
    up = 0.5 * (move + np.sqrt(move * move - 2.0 * var * log_u1))
    down = 0.5 * (move - np.sqrt(move * move - 2.0 * var * log_u2))
    open_ = np.exp(log_open)
    close = np.exp(log_close)
    # Envelope in price space too: exp() rounding must not put high a ulp below the close.
    high = np.maximum(np.exp(log_open + up), np.maximum(open_, close))
    low = np.minimum(np.exp(log_open + down), np.minimum(open_, close))

    typical = np.sqrt(omega / (1.0 - garch_alpha - garch_beta))
    bars_per_day = pd.Timedelta(days=1) / step
    volume = (
        (_BASE_DAILY_VOLUME / bars_per_day)
        * (0.3 + np.abs(ret) / typical)
        * np.exp(0.5 * rng.standard_normal(n_bars) - 0.125)
    )

    t0 = pd.Timestamp(start)
    t0 = t0.tz_localize("UTC") if t0.tz is None else t0.tz_convert("UTC")
    index = pd.date_range(t0, periods=n_bars, freq=step, name="time", unit="ns")
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index
    )
    return validate(frame)


def synthetic_funding(
    bars: pd.DataFrame | pd.DatetimeIndex,
    *,
    interval: str = "8h",
    mean: float = 0.0001,
    vol: float = 0.0004,
    half_life: str = "1D",
    interest: float | None = None,
    damper: float = 0.0005,
    cap: float = 0.0075,
    seed: int = 0,
) -> pd.Series:
    """Simulate funding rates at the funding times within the bars' span, deterministically.

    Funding times are the multiples of ``interval`` since the Unix epoch from the first to the
    last bar, both included (00:00, 08:00 and 16:00 UTC for ``"8h"``, as on Binance). At each
    the premium index follows a Gaussian AR(1), an Ornstein-Uhlenbeck process sampled at the
    funding times, started from its stationary law::

        P[0] = mean + vol * z[0]
        P[k] = mean + phi * (P[k-1] - mean) + vol * sqrt(1 - phi**2) * z[k],
        phi  = 0.5 ** (interval / half_life)

    and the rate is Binance's USDⓈ-M funding formula (its published "Introduction to Binance
    Futures Funding Rates"): the premium plus the interest-rate gap damped to ``+-damper``,
    then clamped to the symbol's cap as exchanges clamp funding::

        rate[k] = clip(P[k] + clip(interest - P[k], -damper, damper), -cap, cap)

    so whenever the premium is within ``damper`` of the interest rate the funding is exactly
    ``interest`` (0.01% per 8 hours), as most real funding prints are.

    Parameters
    ----------
    bars : pandas.DataFrame or pandas.DatetimeIndex
        Bars (or their UTC index): the funding times span their first to last time.
    interval : str
        Time between funding times, a pandas frequency (``"8h"``, ``"4h"``, ``"1h"``).
    mean, vol : float
        Long-run mean and stationary standard deviation of the premium index, as fractions
        per interval.
    half_life : str
        Time for a premium shock to halve (a pandas frequency, ``"1D"``).
    interest : float, optional
        The interest-rate component per interval; default Binance's 0.01% per 8 hours scaled
        to the interval (0.03% a day).
    damper : float
        Bound of the interest-rate correction (Binance: 0.05%).
    cap : float
        Clamp of the funding rate per interval, at most :data:`MAX_ABS_RATE`.
    seed : int
        Seed of ``numpy.random.default_rng``: the same seed gives the same rates.

    Returns
    -------
    pandas.Series
        float64 rates named ``rate`` on the UTC funding times (index named ``time``); put them
        on the bars with :func:`~celeris.data.funding.align_funding`.

    Raises
    ------
    CelerisTypeError
        A parameter has the wrong type.
    ConfigError
        A parameter is out of range, or no funding time falls within the bars' span.
    DataError
        The bar index is not a UTC DatetimeIndex.
    """
    index = bars.index if isinstance(bars, pd.DataFrame) else bars
    if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC" or not len(index):
        raise DataError(
            f"synthetic_funding needs bars on a non-empty UTC DatetimeIndex, got {index!r:.80}"
        )
    step = _check_freq(interval, "interval")
    seed = check_int("seed", seed, minimum=0)
    mean = check_real("mean", mean, minimum=-MAX_ABS_RATE, maximum=MAX_ABS_RATE)
    vol = check_real("vol", vol, minimum=0, maximum=MAX_ABS_RATE)
    decay = _check_freq(half_life, "half_life")
    damper = check_real("damper", damper, minimum=0, maximum=MAX_ABS_RATE)
    cap = check_real("cap", cap, minimum=0, maximum=MAX_ABS_RATE)
    if interest is None:
        interest = 0.0001 * (step / pd.Timedelta(hours=8))
    interest = check_real("interest", interest, minimum=-MAX_ABS_RATE, maximum=MAX_ABS_RATE)

    first, last = index.min(), index.max()
    times = pd.date_range(first.ceil(step), last, freq=step, name="time", unit="ns")
    if not len(times):
        raise ConfigError(
            f"no {interval} funding time between the first bar ({first}) and the last ({last})"
        )
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(len(times))
    phi = 0.5 ** (step / decay)
    shock = vol * np.sqrt(1.0 - phi * phi)
    premium = np.empty(len(times))
    premium[0] = mean + vol * z[0]
    for k in range(1, len(times)):  # ~1,100 funding times a year at 8 h: no kernel needed
        premium[k] = mean + phi * (premium[k - 1] - mean) + shock * z[k]
    gap = interest - premium
    # Within the damper P + (I - P) is I; written as I so that it is I to the last bit.
    damped = np.where(np.abs(gap) <= damper, interest, premium + np.clip(gap, -damper, damper))
    rate = np.clip(damped, -cap, cap)
    out = validate_funding(pd.Series(rate, index=times, name="rate"), "synthetic_funding")
    return out["rate"]


def _check_freq(freq: str, what: str = "freq") -> pd.Timedelta:
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
        step = pd.Timedelta(offset)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bad {what} {freq!r}: use a fixed pandas frequency such as '1min', '5min', '1h', '1D'"
        ) from exc
    if step <= pd.Timedelta(0):
        raise ConfigError(f"{what} must be positive, got {freq!r}")
    return step
