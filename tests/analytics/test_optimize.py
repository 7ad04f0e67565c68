"""optimize_weights: parity with skfolio 1.12 per objective and constraint, and clear errors."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from skfolio import RiskMeasure
from skfolio.optimization import (
    HierarchicalRiskParity,
    MeanRisk,
    ObjectiveFunction,
    RiskBudgeting,
)

from celeris.analytics import PortfolioConstraints, optimize_portfolio, optimize_weights
from celeris.errors import ConfigError, DataError
from tests.analytics.conftest import factor_returns

# skfolio runs Clarabel at its defaults (1e-8 gaps), which leaves ~1e-4 in the weights of a
# 20-asset problem; tightened to 1e-12, the two exact solutions agree to ~1e-5 or better.
TIGHT = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12, "max_iter": 1000}
TOL = 1e-4


def _peer(objective: str, **kw: Any) -> Any:
    return _Quiet(_make_peer(objective, **kw))


class _Quiet:
    """A skfolio model whose fit ignores its "Solution may be inaccurate" warning: at 1e-12
    Clarabel sometimes stops at "almost solved"; the weights are compared to 1e-4 anyway."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def fit(self, x: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Solution may be inaccurate", category=UserWarning
            )
            return self.model.fit(x)


def _make_peer(objective: str, **kw: Any) -> Any:
    if objective == "min_variance":
        return MeanRisk(solver_params=TIGHT, **kw)
    if objective == "max_sharpe":
        return MeanRisk(
            objective_function=ObjectiveFunction.MAXIMIZE_RATIO, solver_params=TIGHT, **kw
        )
    if objective == "min_cvar":
        return MeanRisk(risk_measure=RiskMeasure.CVAR, solver_params=TIGHT, **kw)
    if objective == "risk_parity":
        return RiskBudgeting(solver_params=TIGHT, **kw)
    return HierarchicalRiskParity(**kw)


OBJECTIVES = ["min_variance", "max_sharpe", "risk_parity", "hrp", "min_cvar"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_optimize_weights_factor_panel_matches_skfolio(
    objective: str, factor_panel: pd.DataFrame
) -> None:
    got = optimize_weights(factor_panel, objective)
    want = _peer(objective).fit(factor_panel).weights_
    assert list(got.index) == list(factor_panel.columns)
    assert got.sum() == pytest.approx(1.0, abs=1e-9)
    assert np.abs(got.to_numpy() - want).max() < TOL


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_optimize_weights_real_index_returns_matches_skfolio(
    objective: str, index_returns: pd.DataFrame
) -> None:
    window = index_returns.loc["2014":"2018"]  # S&P 500 and NASDAQ rose: a positive Sharpe exists
    got = optimize_weights(window, objective)
    want = _peer(objective).fit(window).weights_
    assert np.abs(got.to_numpy() - want).max() < TOL


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_optimize_weights_synthetic_bars_matches_skfolio(
    objective: str, synthetic_panel: pd.DataFrame
) -> None:
    shifted = synthetic_panel + 0.002  # a positive mean for every asset, so max_sharpe exists
    got = optimize_weights(shifted, objective)
    want = _peer(objective).fit(shifted).weights_
    assert np.abs(got.to_numpy() - want).max() < TOL


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "min_cvar", "hrp"])
def test_optimize_weights_bounds_matches_skfolio(
    objective: str, factor_panel: pd.DataFrame
) -> None:
    lo = {a: 0.01 for a in factor_panel.columns}
    got = optimize_weights(factor_panel, objective, {"min_weight": lo, "max_weight": 0.12})
    want = _peer(objective, min_weights=0.01, max_weights=0.12).fit(factor_panel).weights_
    assert got.max() <= 0.12 + 1e-9 and got.min() >= 0.01 - 1e-9
    assert np.abs(got.to_numpy() - want).max() < TOL


def _split_turnover_reference(
    r: pd.DataFrame, objective: str, current: np.ndarray, cap: float
) -> np.ndarray:
    """The same problem written independently: w = w0 + up - down, up, down >= 0,
    sum(up + down) <= cap, solved by OSQP (QPs) or SciPy's HiGHS (the CVaR LP)."""
    import cvxpy as cp
    from scipy.optimize import linprog

    x = r.to_numpy()
    t, n = x.shape
    if objective == "min_cvar":
        # variables [up (n), down (n), alpha, u (t)]
        beta = 0.95
        c = np.concatenate([np.zeros(2 * n), [1.0], np.full(t, 1 / ((1 - beta) * t))])
        # u >= -x (w0 + up - down) - alpha  <=>  -x up + x down - alpha - u <= x w0
        a_ub = np.hstack([-x, x, -np.ones((t, 1)), -np.eye(t)])
        b_ub = x @ current
        a_ub = np.vstack([a_ub, np.concatenate([np.ones(2 * n), [0.0], np.zeros(t)])])
        b_ub = np.concatenate([b_ub, [cap]])
        a_eq = np.concatenate([np.ones(n), -np.ones(n), [0.0], np.zeros(t)])[None, :]
        b_eq = [1.0 - current.sum()]
        # long-only: w0 + up - down >= 0  <=>  -up + down <= w0
        a_ub = np.vstack([a_ub, np.hstack([-np.eye(n), np.eye(n), np.zeros((n, 1 + t))])])
        b_ub = np.concatenate([b_ub, current])
        bounds = [(0, None)] * (2 * n) + [(None, None)] + [(0, None)] * t
        res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        return current + res.x[:n] - res.x[n : 2 * n]
    cov = np.cov(x.T)
    up, down = cp.Variable(n, nonneg=True), cp.Variable(n, nonneg=True)
    if objective == "min_variance":
        w = current + up - down
        cons = [cp.sum(w) == 1, w >= 0, cp.sum(up + down) <= cap]
        cp.Problem(cp.Minimize(cp.quad_form(w, cp.psd_wrap(cov * 1e4))), cons).solve(
            solver=cp.OSQP, eps_abs=1e-12, eps_rel=1e-12, max_iter=200_000, polish=True
        )
        return np.asarray(w.value)
    k = cp.Variable(nonneg=True)
    y = current * k + up - down
    mu = x.mean(axis=0)
    cons = [cp.sum(y) == k, y >= 0, cp.sum(up + down) <= cap * k, (mu / np.abs(mu).max()) @ y == 1]
    cp.Problem(cp.Minimize(cp.quad_form(y, cp.psd_wrap(cov * 1e4))), cons).solve(
        solver=cp.OSQP, eps_abs=1e-12, eps_rel=1e-12, max_iter=200_000, polish=True
    )
    return np.asarray(y.value) / float(k.value)


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "min_cvar"])
def test_optimize_weights_turnover_matches_independent_formulation(
    objective: str, factor_panel: pd.DataFrame
) -> None:
    # skfolio's max_turnover bounds each asset's |w_i - w0_i|, not their sum: not the same
    # constraint, so the reference is the problem written with split variables and another
    # solver (OSQP / HiGHS).
    current = pd.Series(1.0 / 20, index=factor_panel.columns)
    got = optimize_weights(
        factor_panel, objective, {"max_turnover": 0.3, "current_weights": current}
    )
    want = _split_turnover_reference(factor_panel, objective, current.to_numpy(), 0.3)
    assert np.abs(got - current).sum() <= 0.3 + 1e-8
    assert np.abs(got - current).sum() == pytest.approx(0.3, abs=1e-6)  # the cap binds here
    assert np.abs(got.to_numpy() - want).max() < TOL


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "min_cvar"])
def test_optimize_weights_gross_leverage_matches_skfolio(
    objective: str, factor_panel: pd.DataFrame
) -> None:
    # 130/30: sum(|w|) <= 1.6 with budget 1 is skfolio's max_short = (1.6 - 1) / 2.
    spec = PortfolioConstraints(long_only=False, min_weight=-0.2, max_weight=0.3, max_gross=1.6)
    got = optimize_weights(factor_panel, objective, spec)
    want = (
        _peer(objective, min_weights=-0.2, max_weights=0.3, max_short=0.3)
        .fit(factor_panel)
        .weights_
    )
    assert np.abs(got).sum() <= 1.6 + 1e-8
    assert np.abs(got.to_numpy() - want).max() < TOL


def test_optimize_weights_budget_scales_long_only_min_variance() -> None:
    r = factor_returns(10, 300, seed=5)
    got = optimize_weights(r, "min_variance", {"budget": 0.6})
    want = _peer("min_variance", budget=0.6).fit(r).weights_
    assert got.sum() == pytest.approx(0.6)
    assert np.abs(got.to_numpy() - want).max() < TOL


def test_optimize_portfolio_risk_parity_risk_contributions_are_equal(
    factor_panel: pd.DataFrame,
) -> None:
    res = optimize_portfolio(factor_panel, "risk_parity")
    np.testing.assert_allclose(res.risk_contributions.to_numpy(), 1 / 20, rtol=1e-9)
    assert res.solver == "newton" and res.status == "optimal"


def test_optimize_portfolio_min_variance_variance_not_above_skfolio(
    factor_panel: pd.DataFrame,
) -> None:
    res = optimize_portfolio(factor_panel, "min_variance")
    peer = MeanRisk().fit(factor_panel).weights_
    cov = factor_panel.cov().to_numpy()
    assert res.volatility**2 <= float(peer @ cov @ peer) * (1 + 1e-9)


def test_optimize_weights_max_weight_times_assets_below_budget_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(
        ConfigError, match=r"max_weight and budget conflict.*20 assets sum to 0\.8 < budget 1"
    ):
        optimize_weights(factor_panel, "min_variance", {"max_weight": 0.04})


def test_optimize_weights_min_weights_above_budget_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match=r"min_weight and budget conflict.*sum to 2 > budget 1"):
        optimize_weights(factor_panel, "max_sharpe", {"min_weight": 0.1})


def test_optimize_weights_min_above_max_raises_config_error_naming_asset(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match=r"min_weight 0.2 > max_weight 0.1 for asset 'A03'"):
        optimize_weights(
            factor_panel, "min_variance", {"min_weight": {"A03": 0.2}, "max_weight": 0.1}
        )


def test_optimize_weights_gross_below_bounds_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    spec = {"long_only": False, "min_weight": -0.5, "max_gross": 1.5, "max_weight": {"A00": -0.4}}
    with pytest.raises(
        ConfigError, match=r"max_gross conflicts .* sum\(\|w\|\) >= 1\.8 > max_gross 1\.5"
    ):
        optimize_weights(factor_panel, "min_variance", spec)


def test_optimize_weights_turnover_too_small_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    spec = {"max_turnover": 0.1, "current_weights": {"A00": 0.5}, "max_weight": 0.3}
    with pytest.raises(
        ConfigError,
        match=r"max_turnover conflicts.*at least 0.9 from current_weights > max_turnover 0.1",
    ):
        optimize_weights(factor_panel, "min_variance", spec)


def test_optimize_weights_gross_and_turnover_together_raise_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    current = {"A00": 1.5, "A01": -0.5}
    spec = {"long_only": False, "max_gross": 1.0, "max_turnover": 0.5, "current_weights": current}
    with pytest.raises(ConfigError, match=r"max_gross 1 and max_turnover 0.5 conflict"):
        optimize_weights(factor_panel, "min_variance", spec)


def test_optimize_weights_unknown_constraint_raises_with_hint(factor_panel: pd.DataFrame) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown constraint 'max_weights' \(did you mean 'max_weight'"
    ):
        optimize_weights(factor_panel, "min_variance", {"max_weights": 0.1})


def test_optimize_weights_unknown_asset_in_bounds_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match=r"max_weight names the asset 'A99'"):
        optimize_weights(factor_panel, "min_variance", {"max_weight": {"A99": 0.1}})


def test_optimize_weights_turnover_without_current_weights_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"max_turnover needs current_weights"):
        PortfolioConstraints(max_turnover=0.2)


def test_optimize_weights_negative_min_weight_long_only_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match=r"long_only forbids negative"):
        optimize_weights(factor_panel, "min_variance", {"min_weight": -0.1})


def test_optimize_weights_risk_parity_with_bounds_raises_config_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(ConfigError, match=r"risk_parity supports .* remove: min_weight/max_weight"):
        optimize_weights(factor_panel, "risk_parity", {"max_weight": 0.2})


def test_optimize_weights_max_sharpe_all_negative_means_raises_data_error(
    factor_panel: pd.DataFrame,
) -> None:
    with pytest.raises(DataError, match=r"max_sharpe: no portfolio .* above the risk-free rate"):
        optimize_weights(factor_panel - 0.01, "max_sharpe")


def test_optimize_weights_unknown_objective_raises_with_hint(factor_panel: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'min_variance'"):
        optimize_weights(factor_panel, "min_varience")


def test_optimize_weights_nan_raises_data_error_naming_asset(factor_panel: pd.DataFrame) -> None:
    bad = factor_panel.copy()
    bad.iloc[10, 4] = np.nan
    with pytest.raises(DataError, match=r"NaN in asset 'A04'"):
        optimize_weights(bad, "hrp")
    assert optimize_weights(bad, "hrp", dropna=True).sum() == pytest.approx(1.0)


def test_optimize_weights_fewer_rows_than_assets_raises_data_error() -> None:
    r = factor_returns(30, 25, seed=1)
    with pytest.raises(DataError, match=r"25 rows of returns for 30 assets"):
        optimize_weights(r, "min_variance")
    assert optimize_weights(r, "min_variance", estimator="ledoit_wolf").sum() == pytest.approx(1.0)


def test_optimize_weights_risk_parity_flat_objective_at_optimum_converges() -> None:
    # The docs' panel: Newton's line search once stalled at the optimum, where the decrease of
    # the objective is below rounding, and raised "did not converge".
    rng = np.random.default_rng(0)
    factors = rng.normal(0, 0.01, (730, 3))
    values = factors @ rng.normal(0.5, 0.5, (3, 12)) + rng.normal(0, 0.01, (730, 12)) + 5e-4
    res = optimize_portfolio(pd.DataFrame(values), "risk_parity")
    np.testing.assert_allclose(res.risk_contributions.to_numpy(), 1 / 12, rtol=1e-9)


def test_optimize_weights_integer_asset_labels_accept_per_asset_bounds() -> None:
    r = factor_returns(5, 300, seed=2)
    r.columns = pd.Index([10, 11, 12, 13, 14])
    got = optimize_weights(r, "min_variance", {"max_weight": {12: 0.05}})
    assert got[12] <= 0.05 + 1e-9


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "risk_parity", "hrp"])
@pytest.mark.parametrize("level", [0.0, 0.001], ids=["zero", "constant"])
def test_optimize_weights_zero_variance_returns_raise_data_error(
    objective: str, level: float
) -> None:
    # All-zero returns gave a bare cvxpy ValueError ("Problem data contains NaN or Inf") or
    # "Newton did not converge"; constant ones a covariance of rounding noise (~1e-38).
    r = factor_returns(5, 100, seed=0) * 0.0 + level
    with pytest.raises(DataError, match=rf"{objective}: the returns of every asset have zero var"):
        optimize_weights(r, objective)


def test_optimize_weights_min_cvar_zero_returns_still_solves() -> None:
    # min_cvar reads the scenarios, not the covariance: every portfolio has CVaR 0
    got = optimize_weights(factor_returns(5, 100, seed=0) * 0.0, "min_cvar")
    assert got.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("objective", ["risk_parity", "hrp"])
def test_optimize_weights_one_constant_asset_risk_parity_raises_data_error_naming_it(
    objective: str,
) -> None:
    # hrp returned NaN weights (the variance was ~1e-38, not 0); risk_parity all in that asset
    r = factor_returns(5, 100, seed=0)
    r["A02"] = 0.001
    with pytest.raises(DataError, match=rf"{objective}: asset 'A02' has zero variance"):
        optimize_weights(r, objective)


def test_equal_risk_contribution_zero_variance_raises_data_error() -> None:
    from celeris.analytics.allocators import equal_risk_contribution

    with pytest.raises(DataError, match="asset 1 has zero variance"):
        equal_risk_contribution(np.diag([1e-4, 0.0, 2e-4]))


def test_optimize_weights_min_cvar_fewer_rows_than_assets_solves() -> None:
    # min_cvar never uses the covariance: 20 scenarios for 30 assets is a valid LP.
    r = factor_returns(30, 20, seed=1)
    got = optimize_weights(r, "min_cvar", {"max_weight": 0.2})
    assert got.sum() == pytest.approx(1.0)
    assert (got >= -1e-9).all() and (got <= 0.2 + 1e-9).all()
    with pytest.raises(DataError, match=r"20 rows of returns for 30 assets"):
        optimize_weights(r, "min_variance")
