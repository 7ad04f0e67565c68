"""Synthetic crypto-like bars: GBM with GARCH(1,1) volatility clustering and Poisson jumps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.data.schema import validate
from celeris.errors import ConfigError

_YEAR = pd.Timedelta(days=365.25)  # crypto trades 24/7: a year is 365.25 days of bars
_BASE_DAILY_VOLUME = 20_000.0  # units of the base asset per day, at typical volatility


def synthetic(
    n_bars: int = 100_000,
    *,
    freq: str = "1min",
    seed: int = 0,
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
    seed : int
        Seed of ``numpy.random.default_rng``: the same seed gives the same bars.
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
    seed = check_int("seed", seed, minimum=0)
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


def _check_freq(freq: str) -> pd.Timedelta:
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
        step = pd.Timedelta(offset)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"bad freq {freq!r}: use a fixed pandas frequency such as '1min', '5min', '1h', '1D'"
        ) from exc
    if step <= pd.Timedelta(0):
        raise ConfigError(f"freq must be positive, got {freq!r}")
    return step
