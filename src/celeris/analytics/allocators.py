"""Allocators that need no convex solver: equal risk contribution and hierarchical risk parity.

Both take plain numpy arrays; formulas and sources are in ``docs/portfolio.md``.
"""

from __future__ import annotations

import numpy as np

from celeris.errors import DataError


class NotConverged(RuntimeError):
    """Raised by an iterative allocator that did not reach its tolerance (a solver status)."""


def equal_risk_contribution(
    cov: np.ndarray, *, tol: float = 1e-13, max_iter: int = 200
) -> np.ndarray:
    """Return the long-only weights (summing to 1) whose variance risk contributions are equal.

    Spinu (2013), "An algorithm for computing risk parity weights", SSRN 2297383: the ERC
    portfolio is ``y / sum(y)`` for the unique minimiser ``y > 0`` of the strictly convex
    ``f(y) = y'Cy / 2 - sum_i log(y_i) / N``, whose gradient ``Cy - 1/(N y)`` vanishes exactly
    when every ``y_i (Cy)_i`` equals ``1/N``. Damped Newton steps keep ``y > 0``.
    """
    n = cov.shape[0]
    zero = np.flatnonzero(~(np.diag(cov) > 0))
    if zero.size:  # y'Cy has no minimiser along that asset: Newton would run off to infinity
        raise DataError(
            f"equal risk contribution: asset {int(zero[0])} has zero variance in the covariance"
        )
    scale = float(np.trace(cov)) / n
    c = cov / scale  # same argmin, unit-scale numbers
    b = np.full(n, 1.0 / n)
    y = 1.0 / np.sqrt(np.diag(c))
    y *= np.sqrt(1.0 / float(y @ c @ y))  # start with y'Cy = 1 = sum(b)
    for _ in range(max_iter):
        grad = c @ y - b / y
        if float(np.abs(grad * y).max()) < tol:
            w = y / y.sum()
            return w
        hess = c + np.diag(b / (y * y))
        step = np.linalg.solve(hess, -grad)
        t = 1.0
        neg = step < 0
        if neg.any():  # stay strictly inside y > 0
            t = min(1.0, 0.95 * float((-y[neg] / step[neg]).min()))
        f0 = 0.5 * float(y @ c @ y) - float(b @ np.log(y))
        slope = float(grad @ step)
        # Armijo backtracking; the slack of 1e-14 |f0| lets a full step through once the
        # decrease is below rounding (near the optimum f changes by ~slope, below 1e-16 f).
        while True:
            y_new = y + t * step
            f1 = 0.5 * float(y_new @ c @ y_new) - float(b @ np.log(y_new))
            if f1 <= f0 + 1e-4 * t * slope + 1e-14 * abs(f0) or t < 1e-12:
                break
            t *= 0.5
        y = y_new
    raise NotConverged(f"equal risk contribution: Newton did not converge in {max_iter} steps")


def hrp_order(values: np.ndarray) -> np.ndarray:
    """Return the HRP asset order: Ward linkage on ``sqrt((1 - corr) / 2)``, optimal leaf order.

    The distance and linkage are skfolio 1.12's defaults (``PearsonDistance``,
    ``HierarchicalSeriation(linkage_method=WARD, optimal_ordering=True)``); Lopez de Prado
    (2016) used single linkage and the quasi-diagonal order of the dendrogram.
    """
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    n = values.shape[1]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    corr = np.corrcoef(values.T)
    dist = np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))
    condensed = squareform(dist, checks=False)
    link = hierarchy.linkage(condensed, method="ward")
    link = hierarchy.optimal_leaf_ordering(link, condensed)
    return np.asarray(hierarchy.leaves_list(link), dtype=np.int64)


def hrp_weights(
    values: np.ndarray,
    cov: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    assets: tuple[str, ...],
) -> np.ndarray:
    """Return hierarchical-risk-parity weights (summing to 1) by recursive bisection.

    Lopez de Prado (2016), "Building diversified portfolios that outperform out of sample",
    J. Portfolio Management 42(4): split the ordered assets in halves, give each half the
    inverse-variance portfolio within it, and split the weight between the halves in inverse
    proportion to those portfolios' variances, ``alpha = 1 - V_left / (V_left + V_right)``.
    Bounds clip ``alpha`` as skfolio does (the split may not push a half's weight outside the
    sum of its assets' bounds).
    """
    variances = np.diag(cov)
    zero = np.flatnonzero(~(variances > 0))
    if zero.size:
        raise DataError(f"hrp: asset {assets[int(zero[0])]!r} has zero variance over the window")
    n = len(variances)
    weights = np.ones(n)
    items = [hrp_order(values)]
    while items:
        new_items = []
        for cluster in items:
            if len(cluster) < 2:
                continue
            mid = len(cluster) // 2
            left, right = cluster[:mid], cluster[mid:]
            new_items += [left, right]
            v_left, v_right = (
                _cluster_variance(cov, variances, left),
                _cluster_variance(cov, variances, right),
            )
            alpha = 1.0 - v_left / (v_left + v_right)
            alpha = _clip_split(alpha, weights, lower, upper, left, right)
            weights[left] *= alpha
            weights[right] *= 1.0 - alpha
        items = new_items
    return weights


def _cluster_variance(cov: np.ndarray, variances: np.ndarray, ids: np.ndarray) -> float:
    inv = 1.0 / variances[ids]
    w = inv / inv.sum()
    return float(w @ cov[np.ix_(ids, ids)] @ w)


def _clip_split(
    alpha: float,
    weights: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
) -> float:
    # skfolio 1.12 `_apply_weight_constraints_to_split_factor`: the parent weight is
    # weights[left[0]] (= weights[right[0]]); each half's share stays within its bounds' sums.
    parent = weights[left[0]]
    alpha = min(upper[left].sum() / parent, max(lower[left].sum() / parent, alpha))
    return 1.0 - min(upper[right].sum() / parent, max(lower[right].sum() / parent, 1.0 - alpha))
