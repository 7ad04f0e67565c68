"""Covariance estimators for a returns frame (time x assets): sample, Ledoit-Wolf, EWMA.

Each estimator is a small frozen object with one method, ``estimate(values)``, that takes a
plain ``(T, N)`` float64 array whose rows are periods and columns assets, and returns the
``(N, N)`` covariance of one period's returns. :func:`covariance` is the pandas wrapper: it
validates the frame (see :func:`check_returns`) and labels the result with the asset names.

Formulas and sources are in ``docs/portfolio.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from celeris.checks import check_int, check_real
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice

EstimatorName = Literal["sample", "ledoit_wolf", "ewma"]
ESTIMATORS: tuple[str, ...] = ("sample", "ledoit_wolf", "ewma")

# RiskMetrics' published decay for daily data (J.P. Morgan/Reuters, RiskMetrics Technical
# Document, 4th ed., 1996, sec. 5.3.2: lambda = 0.94 for daily, 0.97 for monthly).
RISKMETRICS_DAILY_DECAY = 0.94


@dataclass(frozen=True)
class SampleCovariance:
    """The sample covariance, normalised by ``T - ddof`` (``numpy.cov(values.T, ddof=ddof)``)."""

    ddof: int = 1

    def __post_init__(self) -> None:
        check_int("SampleCovariance.ddof", self.ddof, minimum=0)

    @property
    def needs_rows(self) -> int:
        return self.ddof + 1

    def estimate(self, values: np.ndarray) -> np.ndarray:
        """Return the ``(N, N)`` sample covariance of ``values`` ``(T, N)``."""
        centred = values - values.mean(axis=0)
        return (centred.T @ centred) / (values.shape[0] - self.ddof)


@dataclass(frozen=True)
class LedoitWolf:
    """Ledoit-Wolf (2004) shrinkage of the sample covariance towards a scaled identity.

    Same as ``sklearn.covariance.LedoitWolf().fit(values).covariance_`` (the sample
    covariance normalised by ``T``, the data centred first), computed in closed form.
    """

    @property
    def needs_rows(self) -> int:
        return 2

    def shrinkage(self, values: np.ndarray) -> float:
        """Return the shrinkage intensity in [0, 1] (``rho`` in docs/portfolio.md)."""
        return _ledoit_wolf(values)[1]

    def estimate(self, values: np.ndarray) -> np.ndarray:
        """Return the ``(N, N)`` shrunk covariance of ``values`` ``(T, N)``."""
        return _ledoit_wolf(values)[0]


@dataclass(frozen=True)
class EWMA:
    """The RiskMetrics exponentially weighted covariance (zero mean, weights summing to one).

    Give exactly one of ``decay`` (RiskMetrics' lambda), ``halflife`` (in rows) or ``span``
    (pandas' convention, ``decay = 1 - 2 / (span + 1)``); none means RiskMetrics' daily 0.94.
    Entry ``(i, j)`` equals ``(r_i * r_j).ewm(alpha=1 - decay).mean().iloc[-1]`` in pandas.
    """

    decay: float | None = None
    halflife: float | None = None
    span: float | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("decay", "halflife", "span") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ConfigError(f"EWMA takes one of decay, halflife or span; got {', '.join(given)}")
        if self.decay is not None:
            check_real(
                "EWMA.decay", self.decay, minimum=0.0, maximum=1.0, open_low=True, open_high=True
            )
        if self.halflife is not None:
            check_real("EWMA.halflife", self.halflife, minimum=0.0, open_low=True)
        if self.span is not None:
            check_real("EWMA.span", self.span, minimum=1.0)

    @property
    def needs_rows(self) -> int:
        return 1

    @property
    def lam(self) -> float:
        """The decay factor lambda: the weight of a row relative to the next newer one."""
        if self.halflife is not None:
            return math.exp(math.log(0.5) / self.halflife)
        if self.span is not None:
            return 1.0 - 2.0 / (self.span + 1.0)
        return RISKMETRICS_DAILY_DECAY if self.decay is None else float(self.decay)

    def weights(self, n_rows: int) -> np.ndarray:
        """Return the ``(n_rows,)`` row weights, oldest first, summing to one."""
        w = self.lam ** np.arange(n_rows - 1, -1, -1, dtype=np.float64)
        return w / w.sum()

    def estimate(self, values: np.ndarray) -> np.ndarray:
        """Return the ``(N, N)`` EWMA covariance of ``values`` ``(T, N)`` (no demeaning)."""
        w = self.weights(values.shape[0])
        return (values * w[:, None]).T @ values


CovarianceEstimator = SampleCovariance | LedoitWolf | EWMA


def _ledoit_wolf(values: np.ndarray) -> tuple[np.ndarray, float]:
    # Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance
    # matrices", J. Multivariate Anal. 88(2), Lemma 3.2-3.4 and Theorem 3.1 with the norm
    # ||A||^2 = tr(A A') / N: target m*I, m = <S, I>; d^2 = ||S - mI||^2;
    # b^2 = min(d^2, (1/T^2) sum_t ||x_t x_t' - S||^2); shrunk = (b^2/d^2) m I + (1 - b^2/d^2) S.
    t, n = values.shape
    x = values - values.mean(axis=0)
    s = (x.T @ x) / t
    m = float(np.trace(s)) / n
    d2 = float(((s - m * np.eye(n)) ** 2).sum()) / n
    # sum_t ||x_t x_t' - S||_F^2 = sum_t |x_t|^4 - T ||S||_F^2 (as sum_t x_t x_t' = T S)
    row_sq = (x * x).sum(axis=1)
    b2_bar = (float((row_sq * row_sq).sum()) - t * float((s * s).sum())) / (t * t * n)
    b2 = min(max(b2_bar, 0.0), d2)
    rho = 0.0 if d2 == 0.0 else b2 / d2
    return rho * m * np.eye(n) + (1.0 - rho) * s, rho


def resolve_estimator(estimator: str | CovarianceEstimator) -> CovarianceEstimator:
    """Return the estimator object for a name (``"sample"``, ``"ledoit_wolf"``, ``"ewma"``)."""
    if isinstance(estimator, SampleCovariance | LedoitWolf | EWMA):
        return estimator
    if not isinstance(estimator, str):
        raise CelerisTypeError(
            "estimator must be 'sample', 'ledoit_wolf', 'ewma' or a SampleCovariance, "
            f"LedoitWolf or EWMA object, got {type(estimator).__name__}"
        )
    check_choice("estimator", estimator, ESTIMATORS)
    if estimator == "sample":
        return SampleCovariance()
    return LedoitWolf() if estimator == "ledoit_wolf" else EWMA()


def check_returns(returns: object, *, dropna: bool = False) -> pd.DataFrame:
    """Return ``returns`` as a float64 frame (time x assets) after checking it.

    Raises :class:`~celeris.DataError` naming the asset and the row of the first NaN (unless
    ``dropna``, which drops the rows holding one) or infinite value, and for duplicate asset
    names or an empty frame; :class:`~celeris.CelerisTypeError` when it is not a DataFrame.
    """
    if not isinstance(returns, pd.DataFrame):
        raise CelerisTypeError(
            f"returns must be a pandas DataFrame (time x assets), got {type(returns).__name__}"
        )
    if returns.shape[1] == 0:
        raise DataError("returns has no asset columns")
    if returns.columns.has_duplicates:
        dup = returns.columns[returns.columns.duplicated()][0]
        raise DataError(f"returns has the asset column {dup!r} twice")
    try:
        frame = returns.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"returns must be numeric: {exc}") from exc
    if dropna:
        frame = frame.dropna(axis=0, how="any")
    values = frame.to_numpy()
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(values[row, col]) else "an infinite value"
        hint = " (pass dropna=True to drop rows with a NaN)" if what == "NaN" else ""
        raise DataError(
            f"returns has {what} in asset {frame.columns[col]!r} at row {frame.index[row]!r} "
            f"(position {row}){hint}"
        )
    if frame.shape[0] == 0:
        raise DataError("returns has no rows" + (" left after dropna" if dropna else ""))
    return frame


def check_enough_rows(
    n_rows: int,
    n_assets: int,
    estimator: CovarianceEstimator,
    where: str,
    *,
    singular_ok: bool = False,
) -> None:
    """Raise :class:`~celeris.DataError` when ``n_rows`` cannot give a usable covariance.

    ``singular_ok``: the caller does not solve with the covariance (``min_cvar`` reads the
    return scenarios and only reports the covariance), so no more rows than assets is fine.
    """
    if n_rows < estimator.needs_rows:
        raise DataError(
            f"{where}: {n_rows} rows of returns; the {type(estimator).__name__} estimator needs "
            f"at least {estimator.needs_rows}"
        )
    if not singular_ok and not isinstance(estimator, LedoitWolf) and n_rows <= n_assets:
        raise DataError(
            f"{where}: {n_rows} rows of returns for {n_assets} assets; a {type(estimator).__name__} "
            "covariance is singular with no more rows than assets: use more rows, fewer assets or "
            "estimator='ledoit_wolf'"
        )


def covariance(
    returns: pd.DataFrame,
    estimator: str | CovarianceEstimator = "sample",
    *,
    dropna: bool = False,
) -> pd.DataFrame:
    """Estimate the covariance of one period's returns from a returns frame (time x assets).

    Parameters
    ----------
    returns
        Simple returns, one row per period, one column per asset.
    estimator
        ``"sample"`` (``ddof=1``), ``"ledoit_wolf"``, ``"ewma"`` (RiskMetrics, decay 0.94), or a
        :class:`SampleCovariance`, :class:`LedoitWolf` or :class:`EWMA` object.
    dropna
        Drop the rows holding a NaN instead of raising.

    Returns
    -------
    pandas.DataFrame
        The ``(N, N)`` covariance labelled by asset on both axes.
    """
    est = resolve_estimator(estimator)
    frame = check_returns(returns, dropna=dropna)
    check_enough_rows(frame.shape[0], frame.shape[1], est, "covariance")
    cov = est.estimate(frame.to_numpy())
    return pd.DataFrame(cov, index=frame.columns, columns=frame.columns)
