"""Weights at every rebalance date of a walk-forward, all dates solved at once.

:func:`rolling_weights` estimates one covariance per rebalance date from the returns strictly
before that date, then solves minimum variance and maximum Sharpe under a budget and bounds for
every date in one batched torch solve (:mod:`celeris.analytics._batched_qp`, CPU or CUDA);
other objectives and constraints go through the exact one-date solver date by date.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from celeris.analytics.constraints import (
    PortfolioConstraints,
    ResolvedConstraints,
    as_constraints,
    check_feasible,
    resolve_constraints,
)
from celeris.analytics.covariance import (
    CovarianceEstimator,
    SampleCovariance,
    check_enough_rows,
    check_returns,
    resolve_estimator,
)
from celeris.analytics.optimize import (
    OBJECTIVES,
    Objective,
    ObjectiveOptions,
    check_objective_constraints,
    check_variance,
    solve_one,
    zero_variance,
)
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice
from celeris.progress import progress_bar

BATCHED_OBJECTIVES = ("min_variance", "max_sharpe")


def rolling_weights(
    returns: pd.DataFrame,
    every: str | pd.Timedelta | Sequence[Any] | pd.DatetimeIndex = "7D",
    lookback: str | pd.Timedelta | int = "180D",
    objective: Objective | str = "min_variance",
    constraints: PortfolioConstraints | Mapping[str, Any] | None = None,
    estimator: str | CovarianceEstimator = "sample",
    *,
    risk_free_rate: float = 0.0,
    cvar_beta: float = 0.95,
    device: str = "auto",
    progress: bool = False,
    dropna: bool = False,
) -> pd.DataFrame:
    """Return optimal weights at every rebalance date (rows) for every asset (columns).

    The weights at date ``t`` use only the returns in ``[t - lookback, t)``: strictly before
    ``t``, so a rebalance at ``t`` can trade at ``t``'s prices without look-ahead.

    Parameters
    ----------
    returns
        Simple returns (time x assets) on a sorted, unique ``DatetimeIndex``.
    every
        A period (``"7D"``): the rebalance dates are the first timestamp of the index at or
        after ``index[0] + k * every`` for k = 1, 2, ...; dates without a full lookback
        (``t - lookback < index[0]``) are left out of the result, so it starts at the first
        date with a full window. Or explicit dates: each must have a full lookback.
    lookback
        The window: a period (``"180D"``: rows with ``t - 180 days <= time < t``) or a number
        of rows (the last ``lookback`` rows before ``t``).
    objective, constraints, estimator, risk_free_rate, cvar_beta, dropna
        As in :func:`celeris.analytics.optimize_weights`. With ``max_turnover`` the dates are
        chained: the turnover at each date is measured from the weights of the previous
        rebalance date (the first date: from ``current_weights``), so consecutive rows differ by
        at most ``max_turnover`` in ``sum(|w_t - w_{t-1}|)``.
    device
        ``"auto" | "cpu" | "cuda"`` for the batched torch solver
        (:func:`celeris.compute.device.resolve_torch_device`).
    progress
        Show a progress bar for objectives solved date by date.

    Returns
    -------
    pandas.DataFrame
        Weights, index the rebalance dates (``time``), columns the assets. ``attrs`` records
        the ``solver`` and the number of ``fallbacks`` (dates the batched solver handed to the
        exact one-date solver).
    """
    check_choice("objective", objective, OBJECTIVES)
    options = ObjectiveOptions(risk_free_rate=risk_free_rate, cvar_beta=cvar_beta)
    est = resolve_estimator(estimator)
    spec = as_constraints(constraints)
    frame = check_returns(returns, dropna=dropna)
    index = _check_index(frame.index)
    assets = tuple(str(a) for a in frame.columns)
    check_objective_constraints(objective, spec)
    resolved = resolve_constraints(spec, assets)
    dates, starts, ends = _windows(index, every, lookback)
    values = frame.to_numpy()
    n = values.shape[1]
    for t, s, e in zip(dates, starts, ends, strict=True):
        check_enough_rows(
            int(e - s),
            n,
            est,
            f"rolling_weights: the window before {t}",
            singular_ok=objective == "min_cvar",
        )
    if objective in BATCHED_OBJECTIVES and spec.only_bounds_and_budget:
        weights, fallbacks = _solve_batched(
            values, starts, ends, dates, objective, resolved, est, options, device
        )
        solver = "batched-active-set"
    else:
        weights = _solve_each(
            values, starts, ends, dates, objective, resolved, est, options, progress
        )
        fallbacks, solver = 0, "per-date"
    out = pd.DataFrame(weights, index=pd.DatetimeIndex(dates, name="time"), columns=frame.columns)
    out.attrs.update({"objective": objective, "solver": solver, "fallbacks": fallbacks})
    return out


def _check_index(index: pd.Index) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex):
        raise DataError(f"returns must have a DatetimeIndex, got {type(index).__name__}")
    if index.has_duplicates:
        raise DataError(f"returns has the timestamp {index[index.duplicated()][0]} twice")
    if not index.is_monotonic_increasing:
        pos = int(np.flatnonzero(np.diff(index.asi8) < 0)[0]) + 1
        raise DataError(f"returns index is not sorted: {index[pos]} comes after {index[pos - 1]}")
    return index


def _as_timedelta(what: str, value: Any) -> pd.Timedelta:
    try:
        td = pd.Timedelta(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a period like '7D', got {value!r}: {exc}") from exc
    if td <= pd.Timedelta(0):
        raise ConfigError(f"{what} must be a positive period, got {value!r}")
    return td


def _windows(
    index: pd.DatetimeIndex, every: Any, lookback: Any
) -> tuple[list[pd.Timestamp], np.ndarray, np.ndarray]:
    """Return the rebalance dates with a full lookback and their windows ``[start, end)``."""
    explicit = not isinstance(every, str | pd.Timedelta)
    if explicit:
        dates = pd.DatetimeIndex(every)
        if (dates.tz is None) != (index.tz is None):
            raise ConfigError(
                f"every: the rebalance dates are {'tz-naive' if dates.tz is None else 'tz-aware'} "
                f"but the returns' index is {'tz-naive' if index.tz is None else 'tz-aware'}"
            )
        dates = dates.sort_values().unique()
    else:
        step = _as_timedelta("every", every)
        grid = pd.date_range(index[0] + step, index[-1], freq=step)
        pos = index.searchsorted(grid, side="left")
        dates = pd.DatetimeIndex(index[np.unique(pos[pos < len(index)])])
    ends = index.searchsorted(dates, side="left")  # rows strictly before t
    if isinstance(lookback, bool | np.bool_) or not isinstance(
        lookback, numbers.Integral | str | pd.Timedelta
    ):
        raise CelerisTypeError(
            f"lookback must be a period like '180D' or a number of rows, got {lookback!r}"
        )
    if isinstance(lookback, numbers.Integral):
        rows = int(lookback)
        if rows < 1:
            raise ConfigError(f"lookback must be at least 1 row, got {lookback}")
        starts = ends - rows
        full = starts >= 0
    else:
        span = _as_timedelta("lookback", lookback)
        starts = index.searchsorted(dates - span, side="left")
        full = (dates - span) >= index[0]
    if explicit and not full.all():
        bad = dates[~full][0]
        raise DataError(
            f"every: the rebalance date {bad} has no full lookback of {lookback!r} "
            f"(the returns start at {index[0]})"
        )
    if not full.any():
        raise DataError(
            f"rolling_weights: no rebalance date has a full lookback of {lookback!r}: the returns "
            f"span {index[0]} to {index[-1]}"
        )
    return list(dates[full]), np.asarray(starts[full]), np.asarray(ends[full])


def _estimates(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, est: CovarianceEstimator
) -> tuple[np.ndarray, np.ndarray]:
    """Return the ``[B, N, N]`` covariances and ``[B, N]`` means of the windows."""
    if isinstance(est, SampleCovariance):
        return _sliding_sample(values, starts, ends, est.ddof)
    covs = np.stack([est.estimate(values[s:e]) for s, e in zip(starts, ends, strict=True)])
    mus = np.stack([values[s:e].mean(axis=0) for s, e in zip(starts, ends, strict=True)])
    return covs, mus


def _sliding_sample(
    values: np.ndarray, starts: np.ndarray, ends: np.ndarray, ddof: int
) -> tuple[np.ndarray, np.ndarray]:
    # Windows slide forward (starts and ends never decrease), so keep the running sums of x
    # and x x' and add the rows that enter, subtract those that leave: each row is touched
    # twice instead of once per window that holds it (~50x fewer flops for a weekly step and
    # a year's lookback). Same as SampleCovariance(ddof).estimate(values[s:e]) to ~1e-15.
    n = values.shape[1]
    sum_x = np.zeros(n)
    sum_xx = np.zeros((n, n))
    covs = np.empty((len(starts), n, n))
    mus = np.empty((len(starts), n))
    lo = hi = 0
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        if s >= hi:  # no overlap with the last window: start afresh (no drift carried over)
            lo = hi = s
            sum_x[:] = 0.0
            sum_xx[:] = 0.0
        enter, leave = values[hi:e], values[lo:s]
        sum_x += enter.sum(axis=0) - leave.sum(axis=0)
        sum_xx += enter.T @ enter - leave.T @ leave
        lo, hi = s, e
        t = e - s
        mus[i] = sum_x / t
        covs[i] = (sum_xx - t * np.outer(mus[i], mus[i])) / (t - ddof)
    return covs, mus


def _solve_batched(
    values: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    dates: list[pd.Timestamp],
    objective: str,
    c: ResolvedConstraints,
    est: CovarianceEstimator,
    options: ObjectiveOptions,
    device: str,
) -> tuple[np.ndarray, int]:
    import torch

    from celeris.analytics._batched_qp import solve_batched
    from celeris.compute.device import resolve_torch_device

    dev = resolve_torch_device(device)
    covs, mus = _estimates(values, starts, ends, est)
    bsz, n = mus.shape
    # mean |return| of each window from a prefix sum: the scale of the zero-variance check
    prefix = np.concatenate([[0.0], np.cumsum(np.abs(values).sum(axis=1))])
    scale = (prefix[ends] - prefix[starts]) / ((ends - starts) * n)
    zero = zero_variance(np.diagonal(covs, axis1=1, axis2=2), scale[:, None])
    for i in np.flatnonzero(zero.any(axis=1)):
        check_variance(zero[i], objective, c.assets, f" at {dates[int(i)]}")
    excess = None
    if objective == "max_sharpe":
        excess_np = mus - options.risk_free_rate
        best = _best_excess(excess_np, c)
        if (best <= 0).any():
            t = dates[int(np.flatnonzero(best <= 0)[0])]
            raise DataError(
                f"max_sharpe at {t}: no portfolio within the constraints has an expected return "
                f"above the risk-free rate ({options.risk_free_rate:g} per period) over the "
                "window, so the Sharpe ratio has no positive maximum"
            )
        excess = torch.as_tensor(excess_np, dtype=torch.float64, device=dev)
    lower = torch.as_tensor(
        np.broadcast_to(c.lower, (bsz, n)).copy(), dtype=torch.float64, device=dev
    )
    upper = torch.as_tensor(
        np.broadcast_to(c.upper, (bsz, n)).copy(), dtype=torch.float64, device=dev
    )
    cov_t = torch.as_tensor(covs, dtype=torch.float64, device=dev)
    w, converged, _ = solve_batched(cov_t, excess, lower, upper, c.budget)
    weights = w.cpu().numpy()
    missed = np.flatnonzero(~converged.cpu().numpy())
    for i in missed:  # the rare date whose active set did not settle: solve it exactly
        window = values[starts[i] : ends[i]]
        where = f" at {dates[int(i)]}"
        weights[i] = solve_one(window, covs[i], mus[i], objective, c, options, where=where)[0]
    return weights, int(missed.size)


def _best_excess(excess: np.ndarray, c: ResolvedConstraints) -> np.ndarray:
    """Return max a'w over the bounds and budget for each row ``a`` (greedy fractional knapsack)."""
    out = np.empty(excess.shape[0])
    if not np.isfinite(c.lower).all():  # shorts without a floor: a small LP per date
        from scipy.optimize import linprog

        bounds = [
            (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
            for lo, hi in zip(c.lower, c.upper, strict=True)
        ]
        ones = np.ones((1, excess.shape[1]))
        for b, a in enumerate(excess):
            res = linprog(-a, A_eq=ones, b_eq=[c.budget], bounds=bounds, method="highs")
            out[b] = np.inf if res.status == 3 else -float(res.fun)
        return out
    for b, a in enumerate(excess):
        w = c.lower.copy()
        left = c.budget - float(w.sum())
        for i in np.argsort(-a):
            take = min(c.upper[i] - w[i], left)
            w[i] += take
            left -= take
            if left <= 0:
                break
        out[b] = float(a @ w)
    return out


def _solve_each(
    values: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    dates: list[pd.Timestamp],
    objective: str,
    c: ResolvedConstraints,
    est: CovarianceEstimator,
    options: ObjectiveOptions,
    progress: bool,
) -> np.ndarray:
    out = np.empty((len(starts), values.shape[1]))
    bar = progress_bar(progress, label=f"{objective}")
    task = bar.add_task(objective, total=len(starts)) if bar is not None else None
    if bar is not None:
        bar.start()
    try:
        for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
            window = values[s:e]
            if c.max_turnover is not None and i > 0:
                # Turnover is traded from the weights held: the previous rebalance's solution.
                c = dataclasses.replace(c, current=out[i - 1].copy())
                try:
                    check_feasible(c)
                except ConfigError as exc:
                    raise ConfigError(
                        f"rolling_weights: at {dates[i]}, from the weights of {dates[i - 1]}: {exc}"
                    ) from exc
            cov = est.estimate(window)
            where = f" at {dates[i]}"
            out[i] = solve_one(
                window, cov, window.mean(axis=0), objective, c, options, where=where
            )[0]
            if bar is not None and task is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return out
