"""rolling_weights: batched solver = exact one-date solver, no look-ahead, windows, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skfolio.optimization import MeanRisk, ObjectiveFunction

from celeris.analytics import _batched_qp, rolling_weights
from celeris.analytics.constraints import PortfolioConstraints, resolve_constraints
from celeris.analytics.covariance import EWMA, LedoitWolf, SampleCovariance
from celeris.analytics.optimize import ObjectiveOptions, optimize_weights, solve_one
from celeris.analytics.rolling import _estimates, _windows
from celeris.errors import CelerisTypeError, ConfigError, DataError
from tests.analytics.conftest import factor_returns


def _exact(
    r: pd.DataFrame,
    weights: pd.DataFrame,
    objective: str,
    spec: PortfolioConstraints,
    lookback: str,
) -> np.ndarray:
    """The one-date exact solver (cvxpy + Clarabel) on each date's window."""
    c = resolve_constraints(spec, [str(a) for a in r.columns])
    out = []
    for t in weights.index:
        window = r.loc[(r.index >= t - pd.Timedelta(lookback)) & (r.index < t)].to_numpy()
        cov = SampleCovariance().estimate(window)
        w, _, _ = solve_one(window, cov, window.mean(axis=0), objective, c, ObjectiveOptions())
        out.append(w)
    return np.array(out)


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe"])
@pytest.mark.parametrize(
    "spec",
    [PortfolioConstraints(), PortfolioConstraints(min_weight=0.01, max_weight=0.08)],
    ids=["long_only", "bounds"],
)
def test_rolling_weights_batched_solver_matches_exact_solver(
    objective: str, spec: PortfolioConstraints
) -> None:
    r = factor_returns(30, 400, seed=7) + 0.001  # every window has a positive Sharpe ratio
    got = rolling_weights(r, "14D", "120D", objective, spec)
    assert got.attrs["solver"] == "batched-active-set"
    want = _exact(r, got, objective, spec, "120D")
    assert np.abs(got.to_numpy() - want).max() < 1e-6


def test_rolling_weights_long_short_bounds_matches_exact_solver() -> None:
    r = factor_returns(15, 300, seed=8)
    spec = PortfolioConstraints(long_only=False, min_weight=-0.1, max_weight=0.25)
    for objective in ("min_variance", "max_sharpe"):
        got = rolling_weights(r, "21D", "150D", objective, spec)
        assert (got.to_numpy() < -1e-6).any()  # shorts are used
        want = _exact(r, got, objective, spec, "150D")
        assert np.abs(got.to_numpy() - want).max() < 1e-6


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe"])
def test_rolling_weights_hundred_assets_matches_skfolio(objective: str) -> None:
    r = factor_returns(100, 700, seed=2)
    got = rolling_weights(r, "60D", "365D", objective)
    tight = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10, "max_iter": 400}
    fn = (
        ObjectiveFunction.MINIMIZE_RISK
        if objective == "min_variance"
        else ObjectiveFunction.MAXIMIZE_RATIO
    )
    for t, row in got.iterrows():
        window = r.loc[(r.index >= t - pd.Timedelta("365D")) & (r.index < t)]
        want = MeanRisk(objective_function=fn, solver_params=tight).fit(window).weights_
        assert np.abs(row.to_numpy() - want).max() < 1e-4


def test_rolling_weights_unsettled_active_set_falls_back_to_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = factor_returns(20, 300, seed=3)
    real = _batched_qp.solve_batched
    monkeypatch.setattr(_batched_qp, "solve_batched", lambda *a, **k: real(*a, **k, max_iter=1))
    got = rolling_weights(r, "14D", "120D", "min_variance")
    assert got.attrs["fallbacks"] > 0
    want = _exact(r, got, "min_variance", PortfolioConstraints(), "120D")
    assert np.abs(got.to_numpy() - want).max() < 1e-6


@pytest.mark.parametrize("objective", ["risk_parity", "hrp", "min_cvar"])
def test_rolling_weights_other_objectives_match_optimize_weights_per_window(objective: str) -> None:
    r = factor_returns(8, 250, seed=4)
    got = rolling_weights(r, "30D", "120D", objective, progress=True)
    assert got.attrs["solver"] == "per-date"
    for t, row in got.iterrows():
        window = r.loc[(r.index >= t - pd.Timedelta("120D")) & (r.index < t)]
        np.testing.assert_allclose(
            row.to_numpy(), optimize_weights(window, objective).to_numpy(), atol=1e-12
        )


def test_rolling_weights_turnover_goes_per_date_and_is_honoured() -> None:
    r = factor_returns(8, 250, seed=4)
    current = {a: 1 / 8 for a in r.columns}
    spec = PortfolioConstraints(max_turnover=0.2, current_weights=current)
    got = rolling_weights(r, "30D", "120D", "min_variance", spec)
    assert got.attrs["solver"] == "per-date"
    # the first rebalance trades from current_weights, each later one from the one before
    assert np.abs(got.to_numpy()[0] - 1 / 8).sum() <= 0.2 + 1e-8
    assert (np.abs(np.diff(got.to_numpy(), axis=0)).sum(axis=1) <= 0.2 + 1e-8).all()


@pytest.mark.parametrize("objective", ["min_variance", "max_sharpe", "min_cvar"])
def test_rolling_weights_turnover_chained_from_previous_rebalance(objective: str) -> None:
    # Each date's turnover is measured from the previous date's weights (the first date's from
    # current_weights): consecutive rows differ by at most T. Measured from the same
    # current_weights every time, consecutive rows could differ by up to 2T and the portfolio
    # could never move further than T from where it started.
    r = factor_returns(8, 400, seed=4) + 0.002  # every window has a positive Sharpe ratio
    current = pd.Series(1 / 8, index=r.columns)
    t_max = 0.1
    spec = PortfolioConstraints(max_turnover=t_max, current_weights=current)
    got = rolling_weights(r, "20D", "120D", objective, spec).to_numpy()
    assert len(got) >= 10
    steps = np.abs(np.diff(np.vstack([current.to_numpy(), got]), axis=0)).sum(axis=1)
    assert (steps <= t_max + 1e-9).all()
    # the chain walks: some date ends up further than T from the starting weights
    assert np.abs(got - current.to_numpy()).sum(axis=1).max() > t_max + 1e-6
    # and each date equals the one-date solve from the previous date's weights
    for i in (1, len(got) - 1):
        t = rolling_weights(r, "20D", "120D", objective, spec).index[i]
        window = r.loc[(r.index >= t - pd.Timedelta("120D")) & (r.index < t)]
        prev = pd.Series(got[i - 1], index=r.columns)
        want = optimize_weights(
            window, objective, {"max_turnover": t_max, "current_weights": prev}
        ).to_numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-6)


def test_rolling_weights_early_dates_without_full_lookback_are_left_out() -> None:
    r = factor_returns(5, 200, seed=0)  # daily from 2020-01-01
    got = rolling_weights(r, "7D", "60D")
    first = r.index[0]
    assert got.index[0] - pd.Timedelta("60D") >= first
    assert (
        got.index[0] - pd.Timedelta("7D") - pd.Timedelta("60D") < first
    )  # the one before lacked it
    assert ((got.index[1:] - got.index[:-1]) == pd.Timedelta("7D")).all()
    assert got.index.name == "time" and list(got.columns) == list(r.columns)


def test_rolling_weights_row_lookback_uses_last_rows_before_date() -> None:
    r = factor_returns(5, 200, seed=0)
    got = rolling_weights(r, "20D", 50)
    t = got.index[0]
    window = r.loc[r.index < t].iloc[-50:]
    np.testing.assert_allclose(
        got.iloc[0].to_numpy(), optimize_weights(window).to_numpy(), atol=1e-6
    )


@pytest.mark.parametrize("rows", [np.int64(50), np.int32(50), np.uint16(50)])
def test_rolling_weights_numpy_integer_lookback_equals_int_lookback(rows: object) -> None:
    r = factor_returns(5, 200, seed=0)
    pd.testing.assert_frame_equal(rolling_weights(r, "20D", rows), rolling_weights(r, "20D", 50))


@pytest.mark.parametrize("bad", [True, np.bool_(True), 50.0])
def test_rolling_weights_bool_or_float_lookback_raises_type_error(bad: object) -> None:
    with pytest.raises(CelerisTypeError, match="lookback must be a period like '180D' or a number"):
        rolling_weights(factor_returns(5, 200, seed=0), "20D", bad)


def test_rolling_weights_numpy_integer_lookback_below_one_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="lookback must be at least 1 row, got 0"):
        rolling_weights(factor_returns(5, 200, seed=0), "20D", np.int64(0))


def test_rolling_weights_explicit_date_without_lookback_raises_data_error() -> None:
    r = factor_returns(5, 200, seed=0)
    dates = [r.index[100], r.index[10]]
    with pytest.raises(DataError, match=r"rebalance date 2020-01-11.*no full lookback of '60D'"):
        rolling_weights(r, dates, "60D")
    got = rolling_weights(r, [r.index[150], r.index[100]], "60D")
    assert list(got.index) == [r.index[100], r.index[150]]


def test_rolling_weights_lookback_longer_than_data_raises_data_error() -> None:
    with pytest.raises(DataError, match="no rebalance date has a full lookback of '400D'"):
        rolling_weights(factor_returns(5, 200), "7D", "400D")


def test_rolling_weights_bad_period_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="every must be a positive period"):
        rolling_weights(factor_returns(5, 200), "-7D", "60D")


def test_rolling_weights_max_sharpe_losing_window_raises_data_error_naming_date() -> None:
    r = factor_returns(5, 200, seed=0) - 0.02
    with pytest.raises(DataError, match=r"max_sharpe at 2020-0.*no portfolio"):
        rolling_weights(r, "7D", "60D", "max_sharpe")


def test_rolling_weights_unsorted_index_raises_data_error() -> None:
    r = factor_returns(5, 200, seed=0)
    with pytest.raises(DataError, match="not sorted"):
        rolling_weights(r.iloc[::-1], "7D", "60D")


@pytest.mark.parametrize("estimator", [SampleCovariance(ddof=0), LedoitWolf(), EWMA(halflife=30)])
def test_rolling_estimates_each_window_equal_direct_estimate(estimator: object) -> None:
    r = factor_returns(6, 300, seed=1)
    _dates, starts, ends = _windows(r.index, "10D", "90D")
    covs, mus = _estimates(r.to_numpy(), starts, ends, estimator)  # type: ignore[arg-type]
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        window = r.to_numpy()[s:e]
        np.testing.assert_allclose(covs[i], estimator.estimate(window), rtol=1e-10, atol=1e-16)  # type: ignore[attr-defined]
        np.testing.assert_allclose(mus[i], window.mean(axis=0), rtol=1e-10, atol=1e-16)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=60, max_value=239),
    objective=st.sampled_from(["min_variance", "max_sharpe"]),
    shock=st.floats(min_value=-0.5, max_value=0.5, allow_nan=False).filter(lambda x: abs(x) > 1e-3),
)
def test_rolling_weights_changed_future_returns_leave_past_weights_unchanged(
    cut: int, objective: str, shock: float
) -> None:
    base = factor_returns(6, 240, seed=11) + 0.003  # positive means: max_sharpe defined
    changed = base.copy()
    changed.iloc[cut:] = changed.iloc[cut:] * (1 + shock) + abs(shock) / 100  # rewrite the future
    before = rolling_weights(base, "7D", "50D", objective)
    after = rolling_weights(changed, "7D", "50D", objective)
    t_cut = base.index[cut]
    past = before.index[before.index <= t_cut]  # rows strictly before t <= t_cut are all < cut
    assert len(past) > 0
    pd.testing.assert_frame_equal(before.loc[past], after.loc[past], check_exact=True)
    future = before.index[before.index > t_cut]
    if len(future):
        assert not np.allclose(
            before.loc[future].to_numpy(), after.loc[future].to_numpy(), atol=1e-9
        )


def test_rolling_weights_naive_dates_for_aware_index_raise_config_error() -> None:
    r = factor_returns(5, 200, seed=0)
    with pytest.raises(
        ConfigError, match="rebalance dates are tz-naive but the returns' index is tz-aware"
    ):
        rolling_weights(r, [pd.Timestamp("2020-05-01")], "60D")
    naive = r.tz_localize(None)
    with pytest.raises(ConfigError, match="tz-aware but the returns' index is tz-naive"):
        rolling_weights(naive, [pd.Timestamp("2020-05-01", tz="UTC")], "60D")


@pytest.mark.parametrize(
    "estimator", [LedoitWolf(), EWMA(halflife=40)], ids=["ledoit_wolf", "ewma"]
)
def test_rolling_weights_batched_with_estimator_matches_exact_solver(estimator: object) -> None:
    r = factor_returns(12, 300, seed=9) + 0.001
    spec = PortfolioConstraints(max_weight=0.3)
    c = resolve_constraints(spec, [str(a) for a in r.columns])
    for objective in ("min_variance", "max_sharpe"):
        got = rolling_weights(r, "21D", "90D", objective, spec, estimator)  # type: ignore[arg-type]
        for t, row in got.iterrows():
            window = r.loc[(r.index >= t - pd.Timedelta("90D")) & (r.index < t)].to_numpy()
            cov = estimator.estimate(window)  # type: ignore[attr-defined]
            want, _, _ = solve_one(
                window, cov, window.mean(axis=0), objective, c, ObjectiveOptions()
            )
            assert np.abs(row.to_numpy() - want).max() < 1e-6


@pytest.mark.parametrize(
    ("objective", "solver"),
    [("min_variance", "batched"), ("max_sharpe", "batched"), ("risk_parity", "per-date")],
)
def test_rolling_weights_zero_variance_window_raises_data_error_naming_date(
    objective: str, solver: str
) -> None:
    r = factor_returns(5, 200, seed=0) + 0.001
    r.iloc[:80] = 0.0  # the windows before 2020-03-21 hold only zeros
    with pytest.raises(DataError, match=rf"{objective} at 2020-0.*every asset have zero variance"):
        rolling_weights(r, "7D", 60, objective)


def test_rolling_weights_min_cvar_fewer_rows_than_assets_solves() -> None:
    r = factor_returns(30, 200, seed=1)
    got = rolling_weights(r, "30D", 20, "min_cvar")
    assert np.allclose(got.sum(axis=1), 1.0)
