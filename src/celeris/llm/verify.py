"""Backtests that judge a candidate: in sample, on walk-forward windows of the holdout, and DSR.

The data are split once: the first ``1 - holdout`` of the bars are in sample (the only results a
proposer, Optuna or an LLM, ever sees); the rest is cut into ``windows`` consecutive test windows.
A candidate's out-of-sample record is its returns on those windows, each backtested alone with
fresh cash and indicators warmed up on earlier bars (see
:func:`celeris.backtest.walk_forward.backtest_window`), chained into one series.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd

from celeris._settings import FrozenConfig, integer, number
from celeris.analytics.overfitting import deflated_sharpe_from_returns
from celeris.backtest.annualisation import resolve_year_days
from celeris.backtest.returns import returns_metrics
from celeris.backtest.signals import from_signals
from celeris.backtest.strategies import Strategy
from celeris.backtest.walk_forward import backtest_window
from celeris.errors import CelerisError, ConfigError, DataError

# Metrics that can be computed on chained window returns, all "higher is better".
OBJECTIVES = ("sharpe", "sortino", "calmar", "cagr", "total_return")
IN_SAMPLE_COLUMNS = ("sharpe", "sortino", "total_return", "max_drawdown", "trades", "win_rate")


class Guard(FrozenConfig, kw_only=False):
    """When a candidate counts as better: the out-of-sample and selection-bias checks.

    Frozen; an unknown field is refused with a "did you mean" hint, a wrong type raises
    :class:`~celeris.errors.CelerisTypeError`, a value out of range
    :class:`~celeris.errors.ConfigError` (see :class:`~celeris._settings.FrozenConfig`).

    Attributes
    ----------
    holdout
        Share of the bars (the latest) kept out of sample, in (0, 0.9].
    windows
        Walk-forward test windows the holdout is cut into, in [1, 50].
    dsr_threshold
        Minimum deflated Sharpe ratio (Bailey & López de Prado 2014) of the candidate's in-sample
        returns, given the Sharpe ratios of every trial so far, in [0, 1). 0.95 is the paper's
        convention.
    min_improvement
        The out-of-sample objective must exceed the incumbent's by more than this (>= 0).
    min_trades
        In-sample trades below which a candidate is not judged (its Sharpe ratio means little).
    """

    config_label: ClassVar[str] = "guard"

    holdout: Annotated[float, number(gt=0.0, le=0.9)] = 0.3
    windows: Annotated[int, integer(ge=1, le=50)] = 3
    dsr_threshold: Annotated[float, number(ge=0.0, lt=1.0)] = 0.95
    min_improvement: Annotated[float, number(ge=0.0)] = 0.0
    min_trades: Annotated[int, integer(ge=0)] = 5


@dataclass(frozen=True)
class InSample:
    """In-sample result of one parameter set."""

    metrics: dict[str, float]
    sharpe_per_period: float
    returns: np.ndarray


@dataclass(frozen=True)
class OutOfSample:
    """Chained walk-forward result of one parameter set on the holdout."""

    value: float
    window_values: tuple[float, ...]
    total_return: float
    trades: int


def fingerprint(bars: pd.DataFrame) -> str:
    """Return the sha256 of the bars' index and OHLCV values (to check a replay's data)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(getattr(bars.index, "asi8", np.arange(len(bars)))).tobytes())
    for col in sorted(bars.columns):
        h.update(col.encode())
        h.update(np.ascontiguousarray(bars[col].to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


class Verifier:
    """Backtest candidates in sample and out of sample on a fixed split of ``bars``."""

    def __init__(
        self,
        bars: pd.DataFrame,
        strategy: Strategy,
        objective: str,
        guard: Guard,
        *,
        device: str = "auto",
        options: Mapping[str, Any] | None = None,
        executor: Any = None,
    ) -> None:
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"objective {objective!r} cannot be judged on chained out-of-sample returns; "
                f"choose one of {', '.join(OBJECTIVES)}"
            )
        self.bars, self.strategy, self.objective, self.guard = bars, strategy, objective, guard
        self.device = device
        self.options = dict(options or {})
        self.executor = executor  # a RayExecutor: a round's candidates as Ray tasks
        self._shared: Any = None  # the in-sample job in Ray's object store
        # One calendar for the whole run: inferred per window, a short window without a weekend
        # bar would annualise crypto at 252 days while the in-sample backtest used 365.
        self.options["year_days"] = resolve_year_days(bars.index, self.options.get("year_days"))
        n = len(bars)
        self.n_in_sample = round(n * (1.0 - guard.holdout))
        edges = np.linspace(self.n_in_sample, n, guard.windows + 1).round().astype(int)
        self.windows = [(int(a), int(b)) for a, b in itertools.pairwise(edges)]
        shortest = min(b - a for a, b in self.windows)
        if self.n_in_sample < 30 or shortest < 10:
            raise DataError(
                f"{n} bars are too few to split: {self.n_in_sample} in sample and test windows "
                f"of {shortest} bars (need >= 30 and >= 10); use more data, a smaller holdout or "
                "fewer windows"
            )
        self.in_sample_bars = bars.iloc[: self.n_in_sample]
        self.init_cash = float(self.options.get("init_cash", 100_000.0))

    @property
    def split(self) -> dict[str, Any]:
        idx = self.bars.index
        return {
            "in_sample": [idx[0], idx[self.n_in_sample - 1]],
            "out_of_sample": [[idx[a], idx[b - 1]] for a, b in self.windows],
            "in_sample_bars": self.n_in_sample,
            "out_of_sample_bars": len(self.bars) - self.n_in_sample,
        }

    def full_params(self, params: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
        """All of the strategy's parameters: searched ones from ``params``, others ``fixed``."""
        out: dict[str, Any] = {}
        for p in self.strategy.params:
            value = params.get(p.name, fixed.get(p.name, p.default))
            v = p.check(value)
            out[p.name] = int(v) if p.integer else float(v)
        return out

    def in_sample(self, param_sets: Sequence[Mapping[str, Any]]) -> list[InSample]:
        """Backtest each parameter set on the in-sample bars, all in one simulation (with an
        executor: in blocks, as Ray tasks; each column's simulation is its own, so the results
        are the same)."""
        if not param_sets:
            return []
        combos = self.strategy.grid(pd.DataFrame(list(param_sets)))
        if len(combos) != len(param_sets):
            raise ConfigError("in_sample() takes distinct, admissible parameter sets")
        job = _InSampleJob(
            self.in_sample_bars, self.strategy, self.options, self.device, self.objective
        )
        if self.executor is None or len(param_sets) < 2:
            return _in_sample(job, combos)
        from celeris.compute.ray_exec import connect, default_tasks, run_tasks

        ray = connect(self.executor.address)
        if self._shared is None:  # the in-sample bars go to the object store once per run
            self._shared = ray.put(job)
        per = self.executor.task_size or -(-len(combos) // default_tasks(ray, self.executor))
        blocks = [combos.iloc[i : i + per] for i in range(0, len(combos), per)]
        out: list[list[InSample]] = [[] for _ in blocks]

        def take(i: int, block: list[InSample]) -> None:
            out[i] = block

        run_tasks(_in_sample, self._shared, blocks, take, executor=self.executor,
                  units=[len(b) for b in blocks], label="candidates on Ray",
                  progress=False)  # fmt: skip
        return [r for block in out for r in block]

    def out_of_sample(self, params: Mapping[str, Any]) -> OutOfSample:
        """Backtest one parameter set on each holdout window and chain the window returns."""
        pieces, values, trades = [], [], 0
        ann_factor = math.nan
        for start, end in self.windows:
            pf = backtest_window(
                self.bars,
                self.strategy,
                params,
                start,
                end,
                device=self.device,
                **self.options,
            )
            stats = pf.stats().iloc[0]
            values.append(_float(stats[self.objective]))
            trades += int(stats["trades"])
            pieces.append(pf.returns.iloc[:, 0].to_numpy())
            ann_factor = pf.ann_factor
        chained = np.concatenate(pieces)
        summary = returns_metrics(chained, ann_factor, self.init_cash)
        return OutOfSample(
            _float(summary[self.objective]), tuple(values), summary["total_return"], trades
        )


@dataclass(frozen=True)
class _InSampleJob:
    """What every block of in-sample candidates reads (in Ray's object store once)."""

    bars: pd.DataFrame
    strategy: Strategy
    options: dict[str, Any]
    device: str
    objective: str


def _in_sample(job: _InSampleJob, combos: pd.DataFrame) -> list[InSample]:
    """The in-sample backtests of ``combos`` (admissible rows of the strategy's grid), one
    simulation."""
    entries, exits = job.strategy.prepare(job.bars, combos)(slice(0, len(combos)))
    pf = from_signals(job.bars, entries, exits, device=job.device, **job.options)
    stats = pf.stats()
    returns = pf.returns.to_numpy()
    root = math.sqrt(pf.ann_factor)
    out = []
    for j in range(len(combos)):
        row = stats.iloc[j]
        metrics = {k: _float(row[k]) for k in IN_SAMPLE_COLUMNS}
        metrics[job.objective] = _float(row[job.objective])
        out.append(InSample(metrics, metrics["sharpe"] / root, returns[:, j].copy()))
    return out


def deflated_sharpe(returns: np.ndarray, trial_sharpes: Sequence[float]) -> tuple[float, str]:
    """DSR of ``returns`` against the per-period Sharpe ratios of every trial, and a note.

    Returns ``(nan, why)`` when the DSR is undefined (flat returns, degenerate moments).
    """
    trials = [s for s in trial_sharpes if math.isfinite(s)]
    try:
        return deflated_sharpe_from_returns(returns, trials or [0.0]), ""
    except CelerisError as exc:
        return math.nan, f"DSR undefined: {exc}"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
