"""Verified strategy optimisation: propose in sample, accept only what holds up out of sample.

Each round a proposer (Optuna's TPE sampler, an LLM analyst, or a recorded run being replayed)
suggests parameter sets. Every candidate is backtested in sample; a candidate is **accepted**
only if, judged in order of in-sample objective,

1. it has at least ``guard.min_trades`` in-sample trades,
2. its in-sample objective beats the incumbent's (selection happens in sample only),
3. its chained walk-forward objective on the holdout beats the incumbent's by more than
   ``guard.min_improvement``, and
4. its deflated Sharpe ratio, given the in-sample Sharpe ratios of **every** trial so far
   (proposals and the variants shown to an LLM as sensitivity), is at least
   ``guard.dsr_threshold``.

Proposers never see out-of-sample numbers. Every proposal, backtest and decision goes to the
audit log (see :mod:`celeris.llm.audit`), which :func:`replay` can re-run to check a result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from celeris.backtest.strategies import Strategy, check_bars, get_strategy
from celeris.backtest.sweep import check_portfolio_options
from celeris.checks import check_int
from celeris.errors import ConfigError, DataError, LLMError, did_you_mean
from celeris.formatting import format_number, format_param
from celeris.jsonsafe import to_jsonable
from celeris.llm.audit import AuditLog, read_audit
from celeris.llm.proposers import (
    Candidate,
    LLMProposer,
    OptunaProposer,
    Proposer,
    ReplayProposer,
    SearchState,
)
from celeris.llm.schemas import Bound, search_space
from celeris.llm.verify import Guard, OutOfSample, Verifier, deflated_sharpe, fingerprint
from celeris.progress import progress_bar

METHODS = ("optuna", "llm")


@dataclass
class Trial:
    """One backtested parameter set and what became of it."""

    number: int
    round: int
    source: str
    params: dict[str, Any]
    reason: str = ""
    in_sample: dict[str, float] = field(default_factory=dict)
    sharpe_per_period: float = math.nan
    oos: OutOfSample | None = None
    dsr: float = math.nan
    n_trials: int = 0
    accepted: bool = False
    decision: str = ""
    returns: Any = field(default=None, repr=False)  # in-sample bar returns, for the DSR

    @property
    def key(self) -> tuple[Any, ...]:
        return tuple(sorted(self.params.items()))

    def row(self, objective: str) -> dict[str, Any]:
        return {
            "trial": self.number,
            "round": self.round,
            "source": self.source,
            **self.params,
            f"is_{objective}": self.in_sample.get(objective, math.nan),
            "is_trades": self.in_sample.get("trades", math.nan),
            f"oos_{objective}": self.oos.value if self.oos else math.nan,
            "dsr": self.dsr,
            "accepted": self.accepted,
            "decision": self.decision,
        }


@dataclass
class OptimizeResult:
    """Baseline vs accepted parameters, in and out of sample, with every trial and decision."""

    strategy: str
    objective: str
    method: str
    model: str | None
    guard: Guard
    space: tuple[Bound, ...]
    split: dict[str, Any]
    baseline: Trial
    incumbent: Trial
    trials: list[Trial]
    rounds: int
    run_id: str
    audit_path: Path | None
    failed_rounds: list[str] = field(default_factory=list)

    @property
    def improved(self) -> bool:
        return self.incumbent is not self.baseline

    @property
    def accepted(self) -> list[Trial]:
        return [t for t in self.trials if t.accepted]

    @property
    def rejected(self) -> list[Trial]:
        return [
            t for t in self.trials if t.source not in ("baseline", "sensitivity") and not t.accepted
        ]

    def trials_frame(self) -> pd.DataFrame:
        """Every trial as a row: params, in-sample and out-of-sample objective, DSR, decision."""
        return pd.DataFrame([t.row(self.objective) for t in self.trials]).set_index("trial")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "strategy": self.strategy,
                "objective": self.objective,
                "method": self.method,
                "model": self.model,
                "run_id": self.run_id,
                "audit": str(self.audit_path) if self.audit_path else None,
                "guard": self.guard.__dict__,
                "space": [b.__dict__ for b in self.space],
                "split": self.split,
                "improved": self.improved,
                "baseline": _trial_dict(self.baseline),
                "accepted": _trial_dict(self.incumbent) if self.improved else None,
                "trials": len([t for t in self.trials if t.source != "baseline"]),
                "rejected": [_trial_dict(t) for t in self.rejected],
                "failed_rounds": self.failed_rounds,
            }
        )

    def summary(self) -> str:
        """Readable report: the split, baseline vs accepted, and each rejection with its reason."""
        obj = self.objective
        split = self.split
        head = (
            f"{self.strategy}: {self.method}"
            + (f" ({self.model})" if self.model else "")
            + f", {self.rounds} rounds, {len(self.trials) - 1} trials, "
            f"objective {obj}\n"
            f"in sample {_day(split['in_sample'][0])} .. {_day(split['in_sample'][1])} "
            f"({split['in_sample_bars']} bars); out of sample {len(split['out_of_sample'])} "
            f"walk-forward windows {_day(split['out_of_sample'][0][0])} .. "
            f"{_day(split['out_of_sample'][-1][1])} ({split['out_of_sample_bars']} bars)\n"
            f"guard: out-of-sample {obj} must beat the incumbent's, DSR >= "
            f"{self.guard.dsr_threshold:g}, >= {self.guard.min_trades} in-sample trades\n"
        )
        rows: list[tuple[str, ...]] = [
            ("", "params", f"IS {obj}", f"OOS {obj}", "OOS return", "DSR", "trials")
        ]
        for label, t in (("baseline", self.baseline), ("accepted", self.incumbent)):
            if label == "accepted" and not self.improved:
                continue
            rows.append(
                (
                    label,
                    _params(t.params),
                    _num(t.in_sample.get(obj)),
                    _num(t.oos.value if t.oos else None),
                    _pct(t.oos.total_return if t.oos else None),
                    _num(t.dsr),
                    str(t.n_trials),
                )
            )
        lines = [head, _table(rows)]
        verdict = (
            f"accepted {_params(self.incumbent.params)} (trial {self.incumbent.number}, round "
            f"{self.incumbent.round}, {self.incumbent.source})"
            if self.improved
            else "no proposal held up out of sample: the baseline stands"
        )
        lines.append(f"\n{verdict}")
        if self.rejected:
            lines.append(f"\nrejected proposals ({len(self.rejected)}):")
            for t in self.rejected:
                lines.append(
                    f"  #{t.number} round {t.round} {t.source} {_params(t.params)}: {t.decision}"
                )
        for failure in self.failed_rounds:
            lines.append(f"  failed round: {failure}")
        if self.audit_path:
            lines.append(f"\naudit log: {self.audit_path} (run {self.run_id})")
        return "\n".join(lines)


def optimize(
    data: Any,
    strategy: str | Strategy,
    bounds: Mapping[str, Any] | None = None,
    *,
    method: str = "optuna",
    rounds: int = 10,
    per_round: int = 4,
    objective: str = "sharpe",
    params: Mapping[str, Any] | None = None,
    guard: Guard | None = None,
    client: Any = None,
    audit: str | Path | AuditLog | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "auto",
    executor: Any = "local",
    storage: str | None = None,
    _proposer: Proposer | None = None,
    **options: Any,
) -> OptimizeResult:
    """Search ``bounds`` for parameters that beat ``params`` out of sample, honestly.

    Parameters
    ----------
    data
        Bars (a frame with ``close`` and what the strategy needs) or a close Series.
    strategy
        A registered strategy name or :class:`~celeris.backtest.strategies.Strategy`.
    bounds
        ``{"fast": (5, 100), "slow": "20:400"}``; parameters not given stay at their baseline
        value. Default: every parameter over its declared range.
    method
        ``"optuna"`` (TPE sampler, no LLM needed) or ``"llm"`` (needs ``client``, an
        :class:`~celeris.llm.client.LLMClient`).
    rounds, per_round
        Proposal rounds, and candidates asked per round.
    objective
        One of :data:`~celeris.llm.verify.OBJECTIVES`, maximised.
    params
        Baseline parameters (default: the strategy's defaults).
    guard
        Acceptance rules (:class:`~celeris.llm.verify.Guard`).
    audit
        A JSONL path (appended to) or an open :class:`~celeris.llm.audit.AuditLog`.
    executor
        ``"local"``, or ``"ray"`` / a :class:`~celeris.compute.ray_exec.RayExecutor`: each
        round's candidates are backtested as Ray tasks (the proposer asks and is told in the
        same order, so the result is the local run's; pays when a candidate's backtest is long).
    storage
        ``method="optuna"``: where the study lives, Optuna's own storage: a database URL
        (``sqlite:///PATH``, the registry's ``postgresql://...``) or ``redis://HOST:PORT/DB``
        (Optuna's journal on Redis); a new study named ``celeris-STRATEGY-...`` each run, for
        optuna-dashboard or later analysis. The trials are the in-memory run's.
    options
        :func:`celeris.backtest.from_signals` keywords (fees, slippage, stops, direction...).

    Returns
    -------
    OptimizeResult
        ``.summary()`` for people, ``.to_dict()`` for machines, ``.trials_frame()``.

    Raises
    ------
    ConfigError
        Unknown method or objective, bad bounds or baseline, ``method="llm"`` without client.
    DataError
        Bad bars, or too few of them to split.
    """
    method = method.lower()
    if _proposer is None and method not in METHODS:
        raise ConfigError(f"unknown method {method!r}{did_you_mean(method, METHODS)}")
    rounds = check_int("rounds", rounds, minimum=1)
    per_round = check_int("per_round", per_round, minimum=1)
    strat = get_strategy(strategy)
    bars = check_bars(data, strat.needs)
    options = check_portfolio_options(options)
    space = search_space(strat, bounds)
    guard = guard or Guard()
    from celeris.compute.ray_exec import resolve_executor

    verifier = Verifier(bars, strat, objective, guard, device=device, options=options,
                        executor=resolve_executor(executor))  # fmt: skip
    for name in params or {}:
        strat.param(name)
    base_params = verifier.full_params(params or {}, {})
    strat.grid({k: [v] for k, v in base_params.items()})  # baseline must satisfy the constraint
    fixed = {k: v for k, v in base_params.items() if k not in {b.name for b in space}}
    if storage is not None and method != "optuna":
        raise ConfigError("storage= is where an Optuna study lives: it needs method='optuna'")
    proposer = (
        _proposer
        if _proposer is not None
        else _make_proposer(method, client, seed, storage, strat.name)
    )

    log = audit if isinstance(audit, AuditLog) else AuditLog(audit) if audit else None
    loop = _Loop(verifier, strat, space, fixed, objective, guard, log)
    if log:
        # The strategy as given (MODULE:ATTR, path/to/file.py:ATTR or an entry point), so a
        # replay in another process finds a strategy that is not built in.
        spec = strategy if isinstance(strategy, str) else strat.name
        loop.log_run(spec, base_params, proposer, seed, rounds, per_round, bars, options)
    baseline = loop.baseline(base_params)
    state = SearchState(
        strat, space, fixed, objective, verifier, loop.trials, per_round, loop.add_context_trials
    )
    failed: list[str] = []
    try:
        _run_rounds(loop, state, proposer, rounds, failed, progress)
    finally:
        close = getattr(proposer, "close", None)  # (a study kept in a database)
        if close is not None:
            close()
        result = loop.result(proposer, baseline, rounds, failed)
        if log:
            log.write("result", **result.to_dict())
            if not isinstance(audit, AuditLog):
                log.close()
    return result


def _make_proposer(
    method: str, client: Any, seed: int, storage: str | None, strategy: str
) -> Proposer:
    if method == "llm":
        if client is None:
            raise ConfigError("method='llm' needs client=LLMClient(...)")
        return LLMProposer(client, seed=seed)
    return OptunaProposer(seed=seed, storage=storage, study_prefix=f"celeris-{strategy}")


def _run_rounds(
    loop: _Loop,
    state: SearchState,
    proposer: Proposer,
    rounds: int,
    failed: list[str],
    progress: bool,
) -> None:
    """Ask, judge and record ``rounds`` rounds; a round whose proposer fails is noted in
    ``failed`` and judged with no candidates."""
    with progress_bar(progress) or nullcontext(None) as bar:
        task = bar.add_task(f"{loop.strategy.name}: {proposer.name}", total=rounds) if bar else None
        for r in range(1, rounds + 1):
            state.round = r
            state.incumbent = loop.incumbent
            try:
                candidates = proposer.propose(state, loop.log)
            except LLMError as exc:
                failed.append(f"round {r}: {exc}")
                candidates = []
            loop.round(r, candidates, proposer)
            if bar is not None and task is not None:
                bar.update(task, advance=1)


class _Loop:
    """The judged search: trials so far, the incumbent, and the rules of acceptance."""

    def __init__(
        self,
        verifier: Verifier,
        strategy: Strategy,
        space: tuple[Bound, ...],
        fixed: dict[str, Any],
        objective: str,
        guard: Guard,
        log: AuditLog | None,
    ) -> None:
        self.v, self.strategy, self.space, self.fixed = verifier, strategy, space, fixed
        self.objective, self.guard, self.log = objective, guard, log
        self.trials: list[Trial] = []
        self.seen: dict[tuple[Any, ...], Trial] = {}
        self.incumbent: Trial

    def log_run(
        self,
        strategy_spec: str,
        baseline: dict[str, Any],
        proposer: Proposer,
        seed: int,
        rounds: int,
        per_round: int,
        bars: pd.DataFrame,
        options: dict[str, Any],
    ) -> None:
        """Write the run's settings and data fingerprint: what :func:`replay` re-runs."""
        assert self.log is not None
        self.log.write(
            "run",
            strategy=self.strategy.name,
            strategy_spec=strategy_spec,
            space=[b.__dict__ for b in self.space],
            fixed=self.fixed,
            baseline=baseline,
            objective=self.objective,
            method=proposer.name,
            model=getattr(proposer, "model", None),
            seed=seed,
            rounds=rounds,
            per_round=per_round,
            guard=self.guard.__dict__,
            split=self.v.split,
            data={
                "bars": len(bars),
                "first": bars.index[0],
                "last": bars.index[-1],
                "sha256": fingerprint(bars),
            },
            options=options,
        )

    def result(
        self, proposer: Proposer, baseline: Trial, rounds: int, failed: list[str]
    ) -> OptimizeResult:
        return OptimizeResult(
            strategy=self.strategy.name,
            objective=self.objective,
            method=proposer.name,
            model=getattr(proposer, "model", None),
            guard=self.guard,
            space=self.space,
            split=self.v.split,
            baseline=baseline,
            incumbent=self.incumbent,
            trials=self.trials,
            rounds=rounds,
            run_id=self.log.run_id if self.log else "",
            audit_path=self.log.path if self.log else None,
            failed_rounds=failed,
        )

    def _record(self, trials: list[Trial]) -> None:
        results = self.v.in_sample([t.params for t in trials])
        for t, res in zip(trials, results, strict=True):
            t.in_sample, t.sharpe_per_period = res.metrics, res.sharpe_per_period
            t.returns = res.returns
            self.trials.append(t)
            self.seen[t.key] = t
            if self.log:
                self.log.write(
                    "backtest",
                    round=t.round,
                    trial=t.number,
                    source=t.source,
                    params=t.params,
                    in_sample=t.in_sample,
                    sharpe_per_period=t.sharpe_per_period,
                )

    def _dsr(self, t: Trial) -> tuple[float, str]:
        t.n_trials = len(self.trials)
        return deflated_sharpe(t.returns, [s.sharpe_per_period for s in self.trials])

    def baseline(self, params: dict[str, Any]) -> Trial:
        t = Trial(0, 0, "baseline", params, "starting point")
        self._propose_log(t)
        self._record([t])
        t.oos = self.v.out_of_sample(params)
        t.dsr, _ = self._dsr(t)
        t.decision = "baseline"
        self.incumbent = t
        self._decide_log(t)
        return t

    def add_context_trials(
        self, r: int, param_sets: list[dict[str, Any]], source: str
    ) -> list[Trial]:
        """Backtest variants a proposer will look at (they count as trials for the DSR)."""
        keys = [tuple(sorted(self.v.full_params(p, self.fixed).items())) for p in param_sets]
        new: dict[tuple[Any, ...], Trial] = {}
        for key in keys:
            if key not in self.seen and key not in new:
                new[key] = Trial(len(self.trials) + len(new), r, source, dict(key), "context")
        self._record(list(new.values()))
        for t in new.values():
            t.decision = "shown to the proposer as context (not a proposal)"
        return [self.seen[key] for key in keys]

    def round(self, r: int, candidates: list[Candidate], proposer: Proposer) -> None:
        fresh: list[Trial] = []
        judged: list[Trial] = []
        for c in candidates:
            try:
                full = self.v.full_params(c.params, self.fixed)
                self.strategy.grid({k: [v] for k, v in full.items()})
            except ConfigError as exc:
                t = Trial(-1, r, c.source, dict(c.params), c.reason, decision=f"invalid: {exc}")
                self._propose_log(t)
                self._decide_log(t)
                proposer.observe([(c, None)])
                continue
            t = Trial(len(self.trials) + len(fresh), r, c.source, full, c.reason)
            self._propose_log(t)
            earlier = self.seen.get(t.key) or next((f for f in fresh if f.key == t.key), None)
            if earlier is not None:
                t.decision = f"duplicate of trial {earlier.number}; not re-tested"
                self._decide_log(t)
                proposer.observe([(c, earlier)])
                continue
            fresh.append(t)
        self._record(fresh)
        proposer.observe([(_cand(t), t) for t in fresh])
        obj = self.objective
        for t in sorted(fresh, key=lambda t: -_finite(t.in_sample.get(obj))):
            judged.append(t)
            inc = self.incumbent
            is_value, inc_value = t.in_sample.get(obj, math.nan), inc.in_sample.get(obj, math.nan)
            trades = t.in_sample.get("trades", 0)
            if not trades >= self.guard.min_trades:
                t.decision = f"only {_int(trades)} in-sample trades (< {self.guard.min_trades})"
            elif not _finite(is_value) > _finite(inc_value):
                t.decision = (
                    f"in-sample {obj} {_num(is_value)} does not beat the incumbent's "
                    f"{_num(inc_value)}"
                )
            else:
                t.oos = self.v.out_of_sample(t.params)
                t.dsr, note = self._dsr(t)
                assert inc.oos is not None
                bar = inc.oos.value + self.guard.min_improvement
                if not _finite(t.oos.value) > _finite(bar):
                    t.decision = (
                        f"out-of-sample {obj} {_num(t.oos.value)} does not beat the incumbent's "
                        f"{_num(inc.oos.value)}"
                        + (
                            f" + {self.guard.min_improvement:g}"
                            if self.guard.min_improvement
                            else ""
                        )
                    )
                elif not t.dsr >= self.guard.dsr_threshold:
                    t.decision = note or (
                        f"deflated Sharpe ratio {t.dsr:.3f} < {self.guard.dsr_threshold:g} after "
                        f"{t.n_trials} trials (in-sample {obj} {_num(is_value)} is likely "
                        "selection luck)"
                    )
                else:
                    t.accepted = True
                    t.decision = (
                        f"accepted: out-of-sample {obj} {_num(t.oos.value)} > "
                        f"{_num(inc.oos.value)}, DSR {t.dsr:.3f} after {t.n_trials} trials"
                    )
                    self.incumbent = t
            self._decide_log(t)

    def _propose_log(self, t: Trial) -> None:
        if self.log:
            self.log.write(
                "proposal", round=t.round, source=t.source, params=t.params, reason=t.reason
            )

    def _decide_log(self, t: Trial) -> None:
        if self.log:
            self.log.write(
                "decision",
                round=t.round,
                trial=t.number,
                source=t.source,
                params=t.params,
                accepted=t.accepted,
                reason=t.decision,
                in_sample=t.in_sample.get(self.objective),
                out_of_sample=t.oos.value if t.oos else None,
                out_of_sample_windows=list(t.oos.window_values) if t.oos else None,
                dsr=t.dsr,
                n_trials=t.n_trials,
            )


def replay(
    audit: str | Path,
    data: Any,
    *,
    run_id: str | None = None,
    progress: bool = False,
    device: str = "auto",
) -> tuple[OptimizeResult, list[str]]:
    """Re-run a recorded optimisation from its audit log, without the LLM or Optuna.

    The recorded proposals are fed back round by round; every backtest and decision is redone
    on ``data`` (which must match the recorded fingerprint). Returns the new result and a list
    of differences from the recorded decisions (empty when the run reproduces exactly).

    Raises
    ------
    DataError
        The log has no such run, or ``data`` differs from the data the run used.
    """
    events = read_audit(audit, run_id)
    starts = [e for e in events if e["event"] == "run"]
    if not starts:
        raise DataError(f"audit log {audit} has no run" + (f" {run_id!r}" if run_id else ""))
    start = starts[-1]
    run_events = [e for e in events if e["run_id"] == start["run_id"]]
    strat = get_strategy(start.get("strategy_spec", start["strategy"]))
    bars = check_bars(data, strat.needs)
    if fingerprint(bars) != start["data"]["sha256"]:
        raise DataError(
            f"the data differ from those of run {start['run_id']} ({start['data']['bars']} bars "
            f"{start['data']['first']} .. {start['data']['last']}); replay needs the same bars"
        )
    result = optimize(
        bars,
        strat,
        {b["name"]: (b["low"], b["high"]) for b in start["space"]},
        rounds=start["rounds"],
        per_round=start["per_round"],
        objective=start["objective"],
        params=start["baseline"],
        guard=Guard(**start["guard"]),
        progress=progress,
        device=device,
        _proposer=ReplayProposer(run_events),
        **start["options"],
    )
    recorded = {
        (e["round"], tuple(sorted(e["params"].items()))): e
        for e in run_events
        if e["event"] == "decision" and e["source"] not in ("baseline",)
    }
    diffs = []
    for t in result.trials:
        if t.source in ("baseline", "sensitivity"):
            continue
        rec = recorded.get((t.round, t.key))
        if rec is None:
            diffs.append(f"round {t.round} {_params(t.params)}: not in the recording")
        elif bool(rec["accepted"]) != t.accepted:
            diffs.append(
                f"round {t.round} {_params(t.params)}: recorded "
                f"{'accepted' if rec['accepted'] else 'rejected'}, now {t.decision}"
            )
    return result, diffs


def _cand(t: Trial) -> Candidate:
    return Candidate(t.params, t.reason, t.source)


def _trial_dict(t: Trial) -> dict[str, Any]:
    return {
        "trial": t.number,
        "round": t.round,
        "source": t.source,
        "params": t.params,
        "reason": t.reason,
        "in_sample": t.in_sample,
        "out_of_sample": t.oos.value if t.oos else None,
        "out_of_sample_windows": list(t.oos.window_values) if t.oos else None,
        "out_of_sample_return": t.oos.total_return if t.oos else None,
        "dsr": t.dsr,
        "n_trials": t.n_trials,
        "accepted": t.accepted,
        "decision": t.decision,
    }


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf


def _int(x: Any) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


def _num(x: Any) -> str:
    return format_number(x, "ratio", missing="-")


def _pct(x: Any) -> str:
    return format_number(x, "percent", signed=True, missing="-")


def _params(params: Mapping[str, Any]) -> str:
    # Space-separated (the summary's table column), each value as celeris.formatting shows it.
    return " ".join(f"{k}={format_param(v)}" for k, v in params.items())


def _day(ts: Any) -> str:
    return str(ts)[:10] if hasattr(ts, "isoformat") or isinstance(ts, str) else str(ts)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    )
