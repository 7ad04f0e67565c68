"""Where candidates come from: Optuna's TPE sampler, an LLM analyst, or a recorded run.

A proposer sees only in-sample results (the trials so far and, for the LLM, a sensitivity table
and a market summary of the in-sample period); the optimiser alone looks out of sample.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from celeris.backtest.metrics import format_metric
from celeris.errors import ConfigError
from celeris.formatting import format_param, format_params, redact_url
from celeris.llm.audit import AuditLog
from celeris.llm.context import ContextBuilder, TokenCounter
from celeris.llm.prompts import PromptTemplate, load_prompt
from celeris.llm.schemas import Bound, proposal_schema

if TYPE_CHECKING:  # pragma: no cover
    from celeris.backtest.strategies import Strategy
    from celeris.llm.client import LLMClient
    from celeris.llm.optimizer import Trial
    from celeris.llm.verify import Verifier


@dataclass(frozen=True)
class Candidate:
    """A proposed parameter set (searched parameters at least) and why."""

    params: Mapping[str, Any]
    reason: str
    source: str


@dataclass
class SearchState:
    """What a proposer may look at: the problem and the in-sample trials so far."""

    strategy: Strategy
    space: tuple[Bound, ...]
    fixed: dict[str, Any]
    objective: str
    verifier: Verifier
    trials: list[Trial]
    per_round: int
    context_trials: Callable[[int, list[dict[str, Any]], str], list[Trial]]
    round: int = 0
    incumbent: Trial | None = None


class Proposer(Protocol):
    name: str

    def propose(self, state: SearchState, log: AuditLog | None) -> list[Candidate]: ...

    def observe(self, results: list[tuple[Candidate, Trial | None]]) -> None: ...


def _key(space: tuple[Bound, ...], params: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(b.name) for b in space)


class OptunaProposer:
    """Candidates from Optuna's TPE sampler (seeded), told each candidate's in-sample objective.

    The baseline is added to the study as a completed trial, so the sampler starts from it; a
    draw that breaks the strategy's constraint (e.g. ``fast >= slow``) is marked failed and
    redrawn; a candidate without a finite objective (no trades) is told as failed.
    """

    name = "optuna"
    model = None

    def __init__(
        self,
        seed: int = 0,
        max_redraws: int = 200,
        *,
        storage: str | None = None,
        study_prefix: str = "celeris",
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        self._optuna = optuna
        self.seed = seed
        self.max_redraws = max_redraws
        self.storage = storage
        self._store: Any = None
        self.study_name: str | None = None
        self._prefix = study_prefix
        self.study: Any = None
        self.space: tuple[Bound, ...] = ()
        self.objective = "sharpe"
        self.pending: dict[tuple[Any, ...], list[Any]] = {}

    def _distributions(self) -> dict[str, Any]:
        d = self._optuna.distributions
        return {
            b.name: d.IntDistribution(int(b.low), int(b.high))
            if b.integer
            else d.FloatDistribution(b.low, b.high)
            for b in self.space
        }

    def _start(self, state: SearchState) -> None:
        optuna = self._optuna
        self.space = state.space
        self.objective = state.objective
        sampler = optuna.samplers.TPESampler(seed=self.seed)
        if self.storage is None:
            self.study = optuna.create_study(direction="maximize", sampler=sampler)
        else:
            import uuid

            self.study_name = f"{self._prefix}-{uuid.uuid4().hex[:12]}"
            self._store = optuna_storage(self.storage)
            self.study = optuna.create_study(
                direction="maximize", sampler=sampler, study_name=self.study_name,
                storage=self._store,
            )  # fmt: skip
        base = state.incumbent
        if base is not None:
            value = base.in_sample.get(state.objective, math.nan)
            params = {b.name: base.params[b.name] for b in self.space}
            inside = all(b.low <= params[b.name] <= b.high for b in self.space)
            if inside and math.isfinite(value):
                self.study.add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=self._distributions(), value=value
                    )
                )

    def close(self) -> None:
        """Release the storage's database connections (a study in a database or on Redis)."""
        close_storage(self._store)
        self._store = None

    def propose(self, state: SearchState, log: AuditLog | None) -> list[Candidate]:
        if self.study is None:
            self._start(state)
        out = []
        for _ in range(state.per_round):
            for _draw in range(self.max_redraws):
                trial = self.study.ask()
                params = {
                    b.name: trial.suggest_int(b.name, int(b.low), int(b.high))
                    if b.integer
                    else trial.suggest_float(b.name, b.low, b.high)
                    for b in self.space
                }
                try:
                    state.strategy.grid({k: [v] for k, v in {**state.fixed, **params}.items()})
                except ConfigError:
                    self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
                    continue
                self.pending.setdefault(_key(self.space, params), []).append(trial)
                out.append(Candidate(params, "TPE sample", self.name))
                break
            else:
                raise ConfigError(
                    f"Optuna drew {self.max_redraws} inadmissible parameter sets in a row "
                    f"(constraint {state.strategy.constraint_text}); widen the bounds"
                )
        return out

    def observe(self, results: list[tuple[Candidate, Trial | None]]) -> None:
        fail = self._optuna.trial.TrialState.FAIL
        for cand, trial in results:
            value = math.nan
            if trial is not None:
                value = trial.in_sample.get(self.objective, math.nan)
            for ot in self.pending.pop(_key(self.space, cand.params), []):
                if math.isfinite(value):
                    self.study.tell(ot, value)
                else:
                    self.study.tell(ot, state=fail)


class LLMProposer:
    """Candidates from an LLM analyst reading the in-sample results (template
    ``strategy_analysis``), validated against the per-strategy proposal schema."""

    name = "llm"

    def __init__(
        self,
        client: LLMClient,
        *,
        seed: int = 0,
        template: PromptTemplate | None = None,
        budget: int | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        self.client = client
        self.seed = seed
        self.template = template or load_prompt("strategy_analysis")
        # what fits the server's context window, counted as the server counts when it can
        self.budget = budget or client.prompt_budget()
        self.counter = counter or client.token_counter()
        self.model = client.model

    def observe(self, results: list[tuple[Candidate, Trial | None]]) -> None:
        """The history the LLM reads is rebuilt from the trials each round; nothing to keep."""

    def propose(self, state: SearchState, log: AuditLog | None) -> list[Candidate]:
        from celeris.llm.client import InvalidAnswer

        strat, inc = state.strategy, state.incumbent
        assert inc is not None
        schema = proposal_schema(strat, state.space, state.fixed, max_proposals=state.per_round)
        sensitivity = self._sensitivity(state)
        bars = state.verifier.in_sample_bars
        builder = ContextBuilder(self.template, self.budget, self.counter, schema)
        builder.add("strategy", strat.name, required=True)
        builder.add("description", strat.description or strat.name, required=True)
        builder.add("market", _market_line(bars), required=True)
        builder.add("objective", state.objective, required=True)
        builder.add("constraint", strat.constraint_text or "none", required=True)
        builder.add("search_space", "\n".join(f"- {b}" for b in state.space), required=True)
        builder.add("incumbent", format_params(inc.params), required=True)
        builder.add("metrics", _metrics_text(inc.in_sample), required=True)
        builder.add("trades", _trades_text(inc.in_sample), priority=3, required=True)
        builder.add("max_proposals", str(state.per_round), required=True)
        builder.add(
            "sensitivity",
            lambda level: _sensitivity_text(sensitivity, state, level),
            levels=2,
            priority=2,
        )
        builder.add(
            "history", lambda level: _history_text(state, (30, 10, 3)[level]), levels=3, priority=1
        )
        builder.add("market_summary", lambda level: _market_summary(bars, level), levels=3)
        context = builder.build()
        if log:
            log.write(
                "prompt",
                round=state.round,
                template=self.template.id,
                template_sha256=self.template.sha256,
                model=self.model,
                messages=context.messages,
                tokens=context.tokens,
                budget=context.budget,
                levels=context.levels,
                dropped=list(context.dropped),
            )
        try:
            answer = self.client.ask(schema, context.messages, seed=self.seed + state.round)
        except InvalidAnswer as exc:
            if log:
                log.write(
                    "answer",
                    round=state.round,
                    model=self.model,
                    template=self.template.id,
                    attempts=[a.__dict__ for a in exc.attempts],
                    parsed=None,
                    error=str(exc),
                )
            raise
        if log:
            log.write(
                "answer",
                round=state.round,
                model=answer.model,
                template=self.template.id,
                attempts=[a.__dict__ for a in answer.attempts],
                parsed=answer.value.model_dump(),
                error=None,
            )
        proposals = answer.value.proposals  # type: ignore[attr-defined]
        return [Candidate(p.params.model_dump(), p.reason, self.name) for p in proposals]

    def _sensitivity(self, state: SearchState) -> dict[str, list[Trial]]:
        """In-sample results when one searched parameter moves by -50%..+50% (cached trials)."""
        inc = state.incumbent
        assert inc is not None
        out: dict[str, list[Trial]] = {}
        for b in state.space:
            sets = []
            for factor in (0.5, 0.75, 1.25, 1.5):
                value = min(max(inc.params[b.name] * factor, b.low), b.high)
                value = round(value) if b.integer else value
                params = {**inc.params, b.name: value}
                if value == inc.params[b.name]:
                    continue
                try:
                    state.strategy.grid({k: [v] for k, v in params.items()})
                except ConfigError:
                    continue
                if params not in sets:
                    sets.append(params)
            out[b.name] = state.context_trials(state.round, sets, "sensitivity") if sets else []
        return out


class ReplayProposer:
    """The proposals of a recorded run, round by round (for :func:`celeris.llm.optimizer.replay`)."""

    name = "replay"
    model = None

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.rounds: dict[int, list[Candidate]] = {}
        for e in events:
            if e["event"] == "proposal" and e["source"] not in ("baseline", "sensitivity"):
                self.rounds.setdefault(int(e["round"]), []).append(
                    Candidate(e["params"], e.get("reason", ""), e["source"])
                )

    def propose(self, state: SearchState, log: AuditLog | None) -> list[Candidate]:
        return self.rounds.get(state.round, [])

    def observe(self, results: list[tuple[Candidate, Trial | None]]) -> None:
        """A replay does not learn."""


def _metrics_text(metrics: Mapping[str, Any]) -> str:
    return "\n".join(f"- {k}: {format_metric(k, v)}" for k, v in metrics.items() if k != "trades")


def _trades_text(metrics: Mapping[str, Any]) -> str:
    return (
        f"- trades: {format_metric('trades', metrics.get('trades'))}, win rate "
        f"{format_metric('win_rate', metrics.get('win_rate'))}"
    )


def _sensitivity_text(table: dict[str, list[Trial]], state: SearchState, level: int) -> str:
    obj = state.objective
    inc = state.incumbent
    assert inc is not None
    lines = []
    for name, trials in table.items():
        if not trials:
            lines.append(f"- {name}: no admissible neighbour")
            continue
        points = sorted(trials, key=lambda t: t.params[name])
        if level == 0:
            cells = ", ".join(
                f"{name}={format_param(t.params[name])}:"
                f" {format_metric(obj, t.in_sample.get(obj))} ({format_metric('trades', t.in_sample.get('trades'))} trades)"
                for t in points
            )
            lines.append(f"- {name} (now {inc.params[name]}): {cells}")
        else:
            best = max(points, key=lambda t: _num(t.in_sample.get(obj)))
            lines.append(
                f"- {name}: best neighbour {name}={best.params[name]} "
                f"({obj} {format_metric(obj, best.in_sample.get(obj))} vs {format_metric(obj, inc.in_sample.get(obj))})"
            )
    return "\n".join(lines)


def _history_text(state: SearchState, n: int) -> str:
    obj = state.objective
    judged = [t for t in state.trials if t.source not in ("sensitivity",)]
    if len(judged) <= 1:
        return "none yet"
    shown = judged[-n:]
    lines = [
        f"- {format_params({b.name: t.params[b.name] for b in state.space})}: {obj} "
        f"{format_metric(obj, t.in_sample.get(obj))}, {format_metric('trades', t.in_sample.get('trades'))} trades"
        f"{', accepted' if t.accepted else ', baseline' if t.source == 'baseline' else ''}"
        for t in shown
    ]
    if len(judged) > n:
        lines.insert(0, f"({len(judged) - n} earlier trials not shown)")
    return "\n".join(lines)


def _market_line(bars: Any) -> str:
    idx = bars.index
    return f"{len(bars)} bars from {str(idx[0])[:10]} to {str(idx[-1])[:10]}"


def _market_summary(bars: Any, level: int) -> str:
    from celeris.llm.market import price_action_summary, volatility_summary

    return f"{price_action_summary(bars, detail=level)}\n{volatility_summary(bars, detail=level)}"


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf


def optuna_storage(url: str) -> Any:
    """Optuna's storage for ``url``: ``redis://...`` its journal on Redis, a database URL its
    RDB storage (``postgresql://`` goes through psycopg 3, the driver Celeris's registry uses).

    Raises
    ------
    ConfigError
        The URL names no storage Optuna can open (the message says which).
    """
    import optuna

    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            "storage must be a URL (sqlite:///PATH, postgresql://..., redis://...), got "
            f"{redact_url(str(url))!r}"
        )
    try:
        if url.startswith(("redis://", "rediss://")):
            from optuna.storages.journal import JournalRedisBackend

            with warnings.catch_warnings():  # "experimental since v3.1": the API we pin
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.JournalStorage(JournalRedisBackend(url))
        if url.startswith(("postgresql://", "postgres://")):
            return optuna.storages.RDBStorage("postgresql+psycopg://" + url.split("://", 1)[1])
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy's, redis's and Optuna's errors alike
        where = redact_url(url)
        raise ConfigError(
            f"cannot open the Optuna storage {where!r}: {redact_url(str(exc))}"
        ) from None


def close_storage(storage: Any) -> None:
    """Close what :func:`optuna_storage` opened: an RDB storage's connection pool."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()
