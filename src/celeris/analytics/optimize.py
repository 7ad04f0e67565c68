"""Portfolio weights for one date: minimum variance, maximum Sharpe, risk parity, HRP, min CVaR.

:func:`optimize_weights` returns the weights as a Series; :func:`optimize_portfolio` returns
an :class:`OptimizationResult` with the solver, its status and the risk contributions too.
Convex objectives are solved exactly by cvxpy with Clarabel (an interior-point solver, run
with tolerances of 1e-10); equal risk contribution by Newton's method on Spinu's convex
formulation; HRP by recursive bisection. Formulas and sources: ``docs/portfolio.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from celeris.analytics.allocators import NotConverged, equal_risk_contribution, hrp_weights
from celeris.analytics.constraints import (
    PortfolioConstraints,
    ResolvedConstraints,
    as_constraints,
    resolve_constraints,
)
from celeris.analytics.covariance import (
    CovarianceEstimator,
    check_enough_rows,
    check_returns,
    resolve_estimator,
)
from celeris.checks import check_fraction, check_real
from celeris.errors import CelerisError, ConfigError, DataError, check_choice

Objective = Literal["min_variance", "max_sharpe", "risk_parity", "hrp", "min_cvar"]
OBJECTIVES: tuple[str, ...] = ("min_variance", "max_sharpe", "risk_parity", "hrp", "min_cvar")

# Clarabel's defaults are 1e-8; tighter so that two exact methods agree to ~1e-7 in weights.
_CLARABEL = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 400}


class SolverError(CelerisError, RuntimeError):
    """The solver stopped without an optimal solution (numerical trouble, not bad input)."""


@dataclass(frozen=True)
class OptimizationResult:
    """The weights of one optimisation and how they were found.

    ``risk_contributions`` are each asset's share of the portfolio variance,
    ``w_i (C w)_i / w'Cw`` (they sum to 1); ``volatility`` and ``expected_return`` are per
    period of the returns, from the covariance estimate and the sample mean.
    """

    weights: pd.Series
    objective: str
    solver: str
    status: str
    risk_contributions: pd.Series
    expected_return: float
    volatility: float


@dataclass(frozen=True)
class ObjectiveOptions:
    """Objective parameters: the risk-free rate (per period) and the CVaR confidence level."""

    risk_free_rate: float = 0.0
    cvar_beta: float = 0.95

    def __post_init__(self) -> None:
        check_real("risk_free_rate", self.risk_free_rate)
        check_fraction("cvar_beta", self.cvar_beta, open_low=True, open_high=True)


def optimize_weights(
    returns: pd.DataFrame,
    objective: Objective | str = "min_variance",
    constraints: PortfolioConstraints | Mapping[str, Any] | None = None,
    estimator: str | CovarianceEstimator = "sample",
    *,
    risk_free_rate: float = 0.0,
    cvar_beta: float = 0.95,
    dropna: bool = False,
) -> pd.Series:
    """Return optimal portfolio weights, a Series indexed by asset.

    Parameters
    ----------
    returns
        Simple returns, one row per period, one column per asset (time x assets).
    objective
        ``"min_variance"``, ``"max_sharpe"``, ``"risk_parity"`` (equal variance risk
        contributions), ``"hrp"`` (hierarchical risk parity) or ``"min_cvar"``.
    constraints
        A :class:`PortfolioConstraints` or a dict of its fields; ``None``: long-only, fully
        invested.
    estimator
        The covariance estimator: ``"sample"``, ``"ledoit_wolf"``, ``"ewma"`` or an estimator
        object from :mod:`celeris.analytics.covariance` (``min_cvar`` uses the returns only).
    risk_free_rate
        Per period, for ``max_sharpe``: the ratio is ``(mu'w - rf * budget) / sqrt(w'Cw)``.
    cvar_beta
        The CVaR confidence level of ``min_cvar``.
    dropna
        Drop rows of ``returns`` that hold a NaN instead of raising.
    """
    return optimize_portfolio(
        returns,
        objective,
        constraints,
        estimator,
        risk_free_rate=risk_free_rate,
        cvar_beta=cvar_beta,
        dropna=dropna,
    ).weights


def optimize_portfolio(
    returns: pd.DataFrame,
    objective: Objective | str = "min_variance",
    constraints: PortfolioConstraints | Mapping[str, Any] | None = None,
    estimator: str | CovarianceEstimator = "sample",
    *,
    risk_free_rate: float = 0.0,
    cvar_beta: float = 0.95,
    dropna: bool = False,
) -> OptimizationResult:
    """Return the :class:`OptimizationResult` of :func:`optimize_weights` (same parameters)."""
    check_choice("objective", objective, OBJECTIVES)
    options = ObjectiveOptions(risk_free_rate=risk_free_rate, cvar_beta=cvar_beta)
    est = resolve_estimator(estimator)
    spec = as_constraints(constraints)
    frame = check_returns(returns, dropna=dropna)
    assets = tuple(str(a) for a in frame.columns)
    check_objective_constraints(objective, spec)
    resolved = resolve_constraints(spec, assets)
    values = frame.to_numpy()
    check_enough_rows(
        values.shape[0],
        values.shape[1],
        est,
        f"optimize_weights({objective!r})",
        singular_ok=objective == "min_cvar",
    )
    cov = est.estimate(values)
    mu = values.mean(axis=0)
    w, solver, status = solve_one(values, cov, mu, objective, resolved, options)
    var = float(w @ cov @ w)
    rc = w * (cov @ w) / var if var > 0 else np.full_like(w, np.nan)
    return OptimizationResult(
        weights=pd.Series(w, index=frame.columns, name="weight"),
        objective=objective,
        solver=solver,
        status=status,
        risk_contributions=pd.Series(rc, index=frame.columns, name="risk_contribution"),
        expected_return=float(mu @ w),
        volatility=float(np.sqrt(max(var, 0.0))),
    )


def check_objective_constraints(objective: str, spec: PortfolioConstraints) -> None:
    """Raise :class:`~celeris.ConfigError` for a constraint the objective cannot honour."""
    if objective not in ("risk_parity", "hrp"):
        if objective == "max_sharpe" and spec.budget <= 0:
            raise ConfigError(f"max_sharpe needs budget > 0, got {spec.budget}")
        return
    unsupported = [
        name
        for name, on in (
            ("long_only=False", not spec.long_only),
            ("max_gross", spec.max_gross is not None),
            ("max_turnover", spec.max_turnover is not None),
        )
        if on
    ]
    if objective == "risk_parity" and (spec.min_weight is not None or spec.max_weight is not None):
        unsupported.append("min_weight/max_weight")
    if (
        objective == "hrp"
        and spec.budget != 1.0
        and (spec.min_weight is not None or spec.max_weight is not None)
    ):
        unsupported.append("a budget other than 1 together with bounds")
    if spec.budget <= 0:
        unsupported.append(f"budget {spec.budget}")
    if unsupported:
        raise ConfigError(
            f"{objective} supports long-only weights, a positive budget"
            + (" and min_weight/max_weight" if objective == "hrp" else "")
            + f"; remove: {', '.join(unsupported)}"
        )


def solve_one(
    values: np.ndarray,
    cov: np.ndarray,
    mu: np.ndarray,
    objective: str,
    c: ResolvedConstraints,
    options: ObjectiveOptions,
    *,
    where: str = "",
) -> tuple[np.ndarray, str, str]:
    """Solve one problem on plain arrays; return ``(weights, solver, status)``.

    ``where`` (e.g. ``" at 2024-01-07"``) is added to the objective in error messages.
    """
    scale = float(np.abs(values).mean()) if values.size else 0.0
    check_variance(zero_variance(np.diag(cov), scale), objective, c.assets, where)
    if objective == "risk_parity":
        try:
            return c.budget * equal_risk_contribution(cov), "newton", "optimal"
        except NotConverged as exc:
            raise SolverError(f"risk_parity: {exc}") from exc
    if objective == "hrp":
        return c.budget * hrp_weights(values, cov, c.lower, c.upper, c.assets), "hrp", "optimal"
    import cvxpy as cp

    n = cov.shape[0]
    w = cp.Variable(n)
    if objective == "min_cvar":
        # Rockafellar & Uryasev (2000): CVaR_beta = min_alpha alpha + E[(loss - alpha)+] / (1-beta)
        t = values.shape[0]
        scale = float(np.abs(values).mean()) or 1.0
        r = values / scale
        alpha = cp.Variable()
        excess = cp.Variable(t, nonneg=True)
        cons = [*_weight_constraints(w, c, 1.0), excess >= -r @ w - alpha]
        obj = alpha + cp.sum(excess) / ((1.0 - options.cvar_beta) * t)
        _solve(cp.Problem(cp.Minimize(obj), cons), objective)
        return np.asarray(w.value, dtype=np.float64), "clarabel", "optimal"
    s = cp.psd_wrap(cov / (float(np.trace(cov)) / n))
    if objective == "min_variance":
        _solve(
            cp.Problem(cp.Minimize(cp.quad_form(w, s)), _weight_constraints(w, c, 1.0)), objective
        )
        return np.asarray(w.value, dtype=np.float64), "clarabel", "optimal"
    # max_sharpe, homogenised (Cornuejols & Tütüncü 2007, sec. 8.2): y = k w, k > 0.
    a = mu - options.risk_free_rate
    a = a / (float(np.abs(a).max()) or 1.0)
    k = cp.Variable(nonneg=True)
    cons = [*_weight_constraints(w, c, k), a @ w == 1.0]
    status = _solve(
        cp.Problem(cp.Minimize(cp.quad_form(w, s)), cons), objective, infeasible_ok=True
    )
    if status == "infeasible" or k.value is None or float(k.value) <= 0:
        raise DataError(
            "max_sharpe: no portfolio within the constraints has an expected return above the "
            f"risk-free rate ({options.risk_free_rate:g} per period): the Sharpe ratio has no "
            "positive maximum; use min_variance or a lower risk_free_rate"
        )
    return np.asarray(w.value, dtype=np.float64) / float(k.value), "clarabel", "optimal"


def zero_variance(variances: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    """Return where a variance is zero: at most ``(1e-10 x scale)^2`` (or NaN).

    ``scale`` is the mean absolute return of the window: the sample variance of a constant
    series is not exactly 0 in floating point but ~1e-38 of its level, far below this bound.
    Works on ``[N]`` variances with a scalar scale and on ``[B, N]`` with a ``[B, 1]`` scale.
    """
    bound = 1e-20 * np.square(scale)
    return np.asarray(~(variances > bound))


def check_variance(zero: np.ndarray, objective: str, assets: tuple[str, ...], where: str) -> None:
    """Raise :class:`~celeris.DataError` for zero variances the objective cannot work with.

    Every objective but ``min_cvar`` (which reads the returns, not the covariance) needs some
    asset with risk; risk parity and HRP divide by each asset's variance, so need them all.
    """
    if objective == "min_cvar" or not zero.any():
        return
    if zero.all():
        raise DataError(
            f"{objective}{where}: the returns of every asset have zero variance over the window "
            "(constant, e.g. all 0): the covariance is zero, so there is no risk to minimise or "
            "to divide by; check the returns or use a longer window"
        )
    if objective in ("risk_parity", "hrp"):
        i = int(np.flatnonzero(zero)[0])
        raise DataError(
            f"{objective}{where}: asset {assets[i]!r} has zero variance over the window "
            f"(constant returns): {objective} divides by each asset's variance; drop the asset"
        )


def _weight_constraints(w: Any, c: ResolvedConstraints, k: Any) -> list[Any]:
    import cvxpy as cp

    cons = [cp.sum(w) == c.budget * k]
    lo = np.flatnonzero(np.isfinite(c.lower))
    hi = np.flatnonzero(np.isfinite(c.upper))
    if lo.size:
        cons.append(w[lo] >= c.lower[lo] * k)
    if hi.size:
        cons.append(w[hi] <= c.upper[hi] * k)
    if c.max_gross is not None:
        cons.append(cp.norm1(w) <= c.max_gross * k)
    if c.max_turnover is not None:
        cons.append(cp.norm1(w - c.current * k) <= c.max_turnover * k)
    return cons


def _solve(problem: Any, objective: str, *, infeasible_ok: bool = False) -> str:
    import cvxpy as cp

    try:
        problem.solve(solver=cp.CLARABEL, **_CLARABEL)
    except cp.error.SolverError as exc:
        raise SolverError(f"{objective}: Clarabel failed: {exc}") from exc
    status = str(problem.status)
    if status in ("infeasible", "infeasible_inaccurate") and infeasible_ok:
        return "infeasible"
    if status not in ("optimal", "optimal_inaccurate"):
        raise SolverError(
            f"{objective}: Clarabel stopped with status {status!r} (the constraints were "
            "checked feasible beforehand, so this is numerical trouble)"
        )
    return status
