"""Overfitting statistics for Sharpe ratios chosen out of many trials.

A strategy picked as the best of N backtests has an inflated Sharpe ratio even when every trial
is noise. These functions measure how much of an observed Sharpe ratio survives that selection:

- :func:`probabilistic_sharpe_ratio` (PSR) -- the probability that the true Sharpe ratio exceeds
  a benchmark, given the sample length and the non-normality of returns (Bailey & López de Prado,
  "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2), 2012).
- :func:`expected_max_sharpe` -- the expected largest of N independent Sharpe ratio estimates
  whose true value is zero (the "false strategy" benchmark).
- :func:`deflated_sharpe_ratio` (DSR) -- PSR against that benchmark (Bailey & López de Prado,
  "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and
  Non-Normality", Journal of Portfolio Management 40(5), 2014).

Conventions
-----------
- Sharpe ratios are **per period** (not annualised) wherever they enter PSR or DSR: ``sr``,
  ``sr_benchmark`` and ``sr_variance`` are in the units of one return observation. Divide an
  annualised Sharpe ratio by ``sqrt(periods_per_year)`` and an annualised variance by
  ``periods_per_year`` first.
- ``kurtosis`` is the **raw** (Pearson, non-excess) kurtosis, 3 for normal returns, as in both
  papers; pass ``excess=True`` to give the excess (Fisher) kurtosis, 0 for normal returns.
- ``n_obs`` is the number of return observations T behind ``sr``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

from celeris.checks import check_int, check_real
from celeris.errors import CelerisTypeError, ConfigError, DataError

__all__ = [
    "deflated_sharpe_from_returns",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "sharpe_ratio",
]


def sharpe_ratio(returns: object, *, periods_per_year: float | None = None) -> float:
    """Return the Sharpe ratio ``mean / std`` (``ddof=1``) of one series of returns.

    Parameters
    ----------
    returns
        1-D sequence of per-period returns (list, numpy array or pandas Series), at least two,
        all finite and not all equal. Excess returns if a risk-free rate matters.
    periods_per_year
        When given, annualise by ``sqrt(periods_per_year)``; otherwise return the per-period
        Sharpe ratio (what PSR and DSR take). Same as
        ``returns.mean() / returns.std() * sqrt(periods_per_year)`` in pandas.

    Raises
    ------
    DataError
        Fewer than two returns, a NaN or infinite return (the first bad position is named), or
        zero dispersion (the Sharpe ratio is undefined).
    ConfigError
        ``periods_per_year`` is not a positive finite number.
    """
    values = _returns_array(returns, "returns")
    sr = _sharpe(values, "returns")
    if periods_per_year is None:
        return sr
    return sr * math.sqrt(
        check_real("periods_per_year", periods_per_year, minimum=0, open_low=True)
    )


def probabilistic_sharpe_ratio(
    sr: float,
    sr_benchmark: float,
    n_obs: int,
    skew: float,
    kurtosis: float,
    *,
    excess: bool = False,
) -> float:
    """Return the probabilistic Sharpe ratio: P(true SR > ``sr_benchmark``).

    Bailey & López de Prado (2012), eq. for PSR::

        PSR = Phi( (SR - SR*) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR**2) )

    with ``Phi`` the standard normal CDF and ``kurt`` the raw kurtosis.

    Parameters
    ----------
    sr, sr_benchmark
        Observed and benchmark Sharpe ratios, **per period** (not annualised).
    n_obs
        Number of return observations T behind ``sr``; at least 2.
    skew
        Skewness of the returns (0 for normal returns).
    kurtosis
        Raw kurtosis of the returns (3 for normal returns), or the excess kurtosis (0 for normal
        returns) when ``excess=True``.
    excess
        Whether ``kurtosis`` is the excess kurtosis.

    Returns
    -------
    float
        A probability in [0, 1].

    Raises
    ------
    ConfigError
        A non-finite argument, ``n_obs < 2``, or moments that make the variance term
        ``1 - skew * SR + (kurt - 1) / 4 * SR**2`` non-positive (impossible for moments of real
        data, whose raw kurtosis is at least ``1 + skew**2``).
    """
    sr = check_real("sr", sr)
    sr_benchmark = check_real("sr_benchmark", sr_benchmark)
    return _psr(sr, sr_benchmark, n_obs, skew, kurtosis, excess=excess)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Return the expected maximum of ``n_trials`` independent Sharpe ratio estimates.

    Under the null that every trial's true Sharpe ratio is zero and the estimates spread with
    variance ``sr_variance`` (Bailey & López de Prado 2014, eq. 6 -- the "false strategy"
    theorem's approximation)::

        E[max SR] = sqrt(V) * ((1 - gamma) * Phi^-1(1 - 1/N) + gamma * Phi^-1(1 - 1/(N e)))

    with ``gamma`` the Euler-Mascheroni constant. The result is in the units of
    ``sqrt(sr_variance)``: per period for a per-period variance.

    Parameters
    ----------
    n_trials
        Number N of independent trials; at least 1. With ``N == 1`` there is no selection and
        the result is exactly 0 (the formula itself is undefined there, ``Phi^-1(0) = -inf``).
    sr_variance
        Variance V of the Sharpe ratio estimates across trials; at least 0.

    Raises
    ------
    ConfigError
        ``n_trials`` is not an integer >= 1, or ``sr_variance`` is negative or not finite.
    """
    n = check_int("n_trials", n_trials, minimum=1, reason="the number of trials tried")
    variance = check_real("sr_variance", sr_variance, minimum=0, reason="it is a variance")
    if n == 1:
        return 0.0
    gamma = float(np.euler_gamma)
    # norm.isf(p) == Phi^-1(1 - p), without rounding 1 - p to 1.0 when N is huge.
    z_n = float(norm.isf(1.0 / n))
    z_ne = float(norm.isf(1.0 / (n * math.e)))
    return math.sqrt(variance) * ((1.0 - gamma) * z_n + gamma * z_ne)


def deflated_sharpe_ratio(
    sr: float,
    sr_variance: float,
    n_trials: int,
    n_obs: int,
    skew: float,
    kurtosis: float,
    *,
    excess: bool = False,
) -> float:
    """Return the deflated Sharpe ratio of the best of ``n_trials`` strategies.

    Bailey & López de Prado (2014): the PSR of ``sr`` against the benchmark
    ``expected_max_sharpe(n_trials, sr_variance)`` -- the Sharpe ratio that the best of
    ``n_trials`` worthless strategies would show on average. A DSR of 0.95 or more means the
    selected strategy's Sharpe ratio is unlikely to be a product of selection alone.

    Parameters
    ----------
    sr
        Per-period Sharpe ratio of the selected strategy.
    sr_variance
        Variance of the per-period Sharpe ratios across all trials.
    n_trials
        Number of (independent) trials the strategy was chosen from; at least 1.
    n_obs, skew, kurtosis, excess
        As in :func:`probabilistic_sharpe_ratio` (raw kurtosis unless ``excess=True``).

    Raises
    ------
    ConfigError
        As :func:`expected_max_sharpe` and :func:`probabilistic_sharpe_ratio`.
    """
    sr = check_real("sr", sr)
    benchmark = expected_max_sharpe(n_trials, sr_variance)
    return _psr(sr, benchmark, n_obs, skew, kurtosis, excess=excess)


def deflated_sharpe_from_returns(returns: object, trial_sharpes: object) -> float:
    """Return the deflated Sharpe ratio of a selected strategy from its returns.

    The per-period Sharpe ratio, skewness and raw kurtosis (population moments) come from
    ``returns``; the variance of the Sharpe ratios (``ddof=1``) and N come from
    ``trial_sharpes``. Same as ``deflated_sharpe_ratio(sharpe_ratio(returns),
    np.var(trial_sharpes, ddof=1), len(trial_sharpes), len(returns), skew, kurtosis)``.

    Parameters
    ----------
    returns
        1-D per-period returns of the selected strategy (see :func:`sharpe_ratio`).
    trial_sharpes
        1-D per-period Sharpe ratios of **every** trial tried, the selected one included; N is
        its length. With a single trial the variance is taken as 0 (no selection happened).

    Raises
    ------
    DataError
        Bad ``returns`` (see :func:`sharpe_ratio`), or an empty or non-finite
        ``trial_sharpes``.
    """
    values = _returns_array(returns, "returns")
    sr = _sharpe(values, "returns")
    trials = _returns_array(trial_sharpes, "trial_sharpes", min_len=1)
    sr_variance = float(np.var(trials, ddof=1)) if trials.size > 1 else 0.0
    demeaned = values - values.mean()
    m2 = float(np.mean(demeaned**2))
    skew = float(np.mean(demeaned**3)) / m2**1.5
    kurtosis = float(np.mean(demeaned**4)) / m2**2
    return deflated_sharpe_ratio(
        sr, sr_variance, int(trials.size), int(values.size), skew, kurtosis
    )


def _psr(
    sr: float, benchmark: float, n_obs: int, skew: float, kurtosis: float, *, excess: bool
) -> float:
    n_obs = check_int("n_obs", n_obs, minimum=2, reason="PSR uses sqrt(n_obs - 1)")
    skew = check_real("skew", skew)
    raw_kurtosis = check_real("kurtosis", kurtosis) + (3.0 if excess else 0.0)
    # Variance of the SR estimator times T (Mertens 2002; Bailey & López de Prado 2012).
    variance_term = 1.0 - skew * sr + (raw_kurtosis - 1.0) / 4.0 * sr**2
    if not variance_term > 0:
        kind = "excess" if excess else "raw"
        raise ConfigError(
            f"1 - skew*sr + (kurtosis - 1)/4 * sr**2 = {variance_term:.6g} is not positive "
            f"(sr={sr:.6g}, skew={skew:.6g}, {kind} kurtosis={kurtosis:.6g}); real data has raw "
            f"kurtosis >= 1 + skew**2 = {1.0 + skew**2:.6g}, which keeps it positive -- check "
            "the moments (and the excess= convention) and that sr is per period, not annualised"
        )
    z = (sr - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(variance_term)
    return float(norm.cdf(z))


def _sharpe(values: np.ndarray, name: str) -> float:
    std = float(values.std(ddof=1))
    if not std > 0:
        raise DataError(f"{name} has zero dispersion (all {values.size} equal); Sharpe undefined")
    return float(values.mean()) / std


def _returns_array(values: object, name: str, *, min_len: int = 2) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CelerisTypeError(f"{name} must be a 1-D sequence of numbers: {exc}") from None
    if array.ndim != 1:
        raise DataError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size < min_len:
        raise DataError(f"{name} needs at least {min_len} values, got {array.size}")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite values; first at position {first} "
            f"({array[first]})"
        )
    return array
