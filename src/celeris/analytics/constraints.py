"""Portfolio constraints: long-only, weight bounds, budget, gross leverage, turnover.

:class:`PortfolioConstraints` is what users pass; :func:`resolve_constraints` turns it into
per-asset arrays for one asset list and checks, before any solver runs, that the constraints
have a common solution, naming the ones that conflict when they do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_bool, check_real
from celeris.errors import CelerisTypeError, ConfigError, did_you_mean

PerAsset = float | Mapping[str, float] | pd.Series
_TOL = 1e-9


@dataclass(frozen=True)
class PortfolioConstraints:
    """The constraints on the weights of one portfolio (all optional but the budget).

    Parameters
    ----------
    long_only
        No negative weight (the default).
    min_weight, max_weight
        A bound for every asset (a number) or per asset (a mapping or Series by asset name;
        assets left out get no bound beyond ``long_only``).
    budget
        The sum of the weights (1 by default: fully invested).
    max_gross
        Gross leverage: ``sum(|w|) <= max_gross``.
    max_turnover
        ``sum(|w - current_weights|) <= max_turnover``; needs ``current_weights``.
    current_weights
        The weights held now (a mapping or Series by asset; assets left out are not held).
    """

    long_only: bool = True
    min_weight: PerAsset | None = None
    max_weight: PerAsset | None = None
    budget: float = 1.0
    max_gross: float | None = None
    max_turnover: float | None = None
    current_weights: Mapping[str, float] | pd.Series | None = None

    def __post_init__(self) -> None:
        check_bool("long_only", self.long_only)
        check_real("budget", self.budget)
        if self.max_gross is not None:
            check_real("max_gross", self.max_gross, minimum=0.0, open_low=True)
        if self.max_turnover is not None:
            check_real("max_turnover", self.max_turnover, minimum=0.0)
            if self.current_weights is None:
                raise ConfigError("max_turnover needs current_weights (the weights held now)")
        if self.long_only and self.budget < 0:
            raise ConfigError(f"long_only with a negative budget ({self.budget}) has no solution")

    @property
    def only_bounds_and_budget(self) -> bool:
        """True when nothing but long-only, bounds and the budget is set."""
        return self.max_gross is None and self.max_turnover is None


def as_constraints(
    constraints: PortfolioConstraints | Mapping[str, Any] | None,
) -> PortfolioConstraints:
    """Return ``constraints`` as a :class:`PortfolioConstraints` (``None``: the defaults)."""
    if constraints is None:
        return PortfolioConstraints()
    if isinstance(constraints, PortfolioConstraints):
        return constraints
    if not isinstance(constraints, Mapping):
        raise CelerisTypeError(
            "constraints must be a PortfolioConstraints, a dict of its fields or None, "
            f"got {type(constraints).__name__}"
        )
    names = [f.name for f in fields(PortfolioConstraints)]
    for key in constraints:
        if key not in names:
            raise ConfigError(
                f"unknown constraint {key!r}{did_you_mean(str(key), names)}; "
                f"choose from {', '.join(names)}"
            )
    return PortfolioConstraints(**constraints)


@dataclass(frozen=True)
class ResolvedConstraints:
    """Constraints as arrays over one asset list (``lower``/``upper`` may be infinite)."""

    assets: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    budget: float
    max_gross: float | None
    max_turnover: float | None
    current: np.ndarray
    long_only: bool

    @property
    def has_finite_upper(self) -> bool:
        return bool(np.isfinite(self.upper).any())


def _per_asset(
    what: str, value: PerAsset | None, assets: Sequence[str], default: float
) -> np.ndarray:
    out = np.full(len(assets), default, dtype=np.float64)
    if value is None:
        return out
    if isinstance(value, Mapping | pd.Series):
        items = value.items()
        known = {a: i for i, a in enumerate(assets)}
        for label, v in items:
            name = str(label)  # assets are named by str(column), whatever the column labels
            if name not in known:
                raise ConfigError(
                    f"{what} names the asset {name!r} that is not in the returns"
                    f"{did_you_mean(str(name), [str(a) for a in assets])}"
                )
            out[known[name]] = check_real(f"{what}[{name!r}]", v)
        return out
    out[:] = check_real(what, value)
    return out


def resolve_constraints(
    constraints: PortfolioConstraints, assets: Sequence[str]
) -> ResolvedConstraints:
    """Return the constraints as arrays over ``assets``, checked for a common solution."""
    lower = _per_asset("min_weight", constraints.min_weight, assets, -np.inf)
    upper = _per_asset("max_weight", constraints.max_weight, assets, np.inf)
    if constraints.long_only:
        negative = np.flatnonzero(np.isfinite(lower) & (lower < 0))
        if negative.size:
            i = int(negative[0])
            raise ConfigError(
                f"min_weight for {assets[i]!r} is {lower[i]} but long_only forbids negative "
                "weights: set long_only=False or a min_weight >= 0"
            )
        lower = np.maximum(lower, 0.0)
    current = _per_asset("current_weights", constraints.current_weights, assets, 0.0)
    resolved = ResolvedConstraints(
        assets=tuple(assets),
        lower=lower,
        upper=upper,
        budget=float(constraints.budget),
        max_gross=None if constraints.max_gross is None else float(constraints.max_gross),
        max_turnover=None if constraints.max_turnover is None else float(constraints.max_turnover),
        current=current,
        long_only=constraints.long_only,
    )
    check_feasible(resolved)
    return resolved


def check_feasible(c: ResolvedConstraints) -> None:
    """Raise :class:`~celeris.ConfigError` naming the constraints that have no common solution."""
    bad = np.flatnonzero(c.lower > c.upper + _TOL)
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"min_weight {c.lower[i]} > max_weight {c.upper[i]} for asset {c.assets[i]!r}"
        )
    n = len(c.assets)
    lo_sum, hi_sum = float(c.lower.sum()), float(c.upper.sum())
    if lo_sum > c.budget + _TOL:
        raise ConfigError(
            f"min_weight and budget conflict: the lower bounds of the {n} assets sum to "
            f"{lo_sum:g} > budget {c.budget:g}"
        )
    if hi_sum < c.budget - _TOL:
        raise ConfigError(
            f"max_weight and budget conflict: the upper bounds of the {n} assets sum to "
            f"{hi_sum:g} < budget {c.budget:g} (e.g. {n} x max_weight < budget)"
        )
    if c.max_gross is not None:
        least = _least_l1(c, np.zeros(n))
        if least > c.max_gross + _TOL:
            raise ConfigError(
                f"max_gross conflicts with the budget and bounds: every portfolio within them "
                f"has sum(|w|) >= {least:g} > max_gross {c.max_gross:g}"
            )
    if c.max_turnover is not None:
        least = _least_l1(c, c.current)
        if least > c.max_turnover + _TOL:
            raise ConfigError(
                f"max_turnover conflicts with the budget and bounds: every portfolio within them "
                f"is at least {least:g} from current_weights > max_turnover {c.max_turnover:g}"
            )
        if c.max_gross is not None and not _gross_and_turnover_feasible(c):
            raise ConfigError(
                f"max_gross {c.max_gross:g} and max_turnover {c.max_turnover:g} conflict: no "
                "portfolio within the budget and bounds meets both"
            )


def _least_l1(c: ResolvedConstraints, centre: np.ndarray) -> float:
    """Return min sum|w - centre| over lower <= w <= upper, sum(w) = budget (exact).

    From the box point nearest to ``centre`` every feasible move of the sum towards the budget
    takes some asset away from its centre value (an asset clipped at a bound can only move
    further from it, or not at all), so each unit of the gap costs exactly one more unit.
    """
    w = np.clip(centre, c.lower, c.upper)
    return float(np.abs(w - centre).sum()) + abs(c.budget - float(w.sum()))


def _gross_and_turnover_feasible(c: ResolvedConstraints) -> bool:
    from scipy.optimize import linprog

    # Variables [w, s, t]: |w| <= s, |w - w0| <= t; sum s <= G, sum t <= T, sum w = b.
    n = len(c.assets)
    eye, zero = np.eye(n), np.zeros((n, n))
    a_ub = np.vstack(
        [
            np.hstack([eye, -eye, zero]),
            np.hstack([-eye, -eye, zero]),
            np.hstack([eye, zero, -eye]),
            np.hstack([-eye, zero, -eye]),
            np.concatenate([np.zeros(n), np.ones(n), np.zeros(n)])[None, :],
            np.concatenate([np.zeros(2 * n), np.ones(n)])[None, :],
        ]
    )
    b_ub = np.concatenate(
        [np.zeros(2 * n), c.current, -c.current, [c.max_gross or 0.0, c.max_turnover or 0.0]]
    )
    a_eq = np.concatenate([np.ones(n), np.zeros(2 * n)])[None, :]
    lo = np.concatenate([np.where(np.isfinite(c.lower), c.lower, -np.inf), np.zeros(2 * n)])
    hi = np.concatenate([c.upper, np.full(2 * n, np.inf)])
    bounds = [
        (None if not np.isfinite(a) else a, None if not np.isfinite(b) else b)
        for a, b in zip(lo, hi, strict=True)
    ]
    res = linprog(
        np.zeros(3 * n),
        A_ub=a_ub,
        b_ub=b_ub + 1e-12,
        A_eq=a_eq,
        b_eq=[c.budget],
        bounds=bounds,
        method="highs",
    )
    return bool(res.status == 0)
