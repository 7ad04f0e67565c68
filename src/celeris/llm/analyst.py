"""The LLM analyst: a strategy analysis, a market-regime reading and a risk assessment.

:func:`analyze` backtests a strategy with the given parameters, renders each analysis's
versioned prompt template (``strategy_analysis``, ``market_regime``, ``risk_assessment``) with
exact statistics from :mod:`celeris.llm.market` inside a token budget, asks the model for an
answer that validates against the analysis's pydantic schema, and returns an
:class:`AnalysisReport` that prints as plain text or serialises to JSON.

Every prompt is built before the first question is asked, so a budget too small for any of them
fails at once (:class:`~celeris.errors.ConfigError`) instead of after paying for the others.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel

from celeris.backtest.metrics import format_metric
from celeris.checks import check_int
from celeris.errors import CelerisTypeError, ConfigError, did_you_mean
from celeris.formatting import format_param, format_params
from celeris.jsonsafe import to_jsonable, to_python
from celeris.llm import market as mk
from celeris.llm.context import Context, ContextBuilder, TokenCounter
from celeris.llm.prompts import PromptTemplate, load_prompt
from celeris.llm.schemas import MarketRegime, RiskAssessment, proposal_schema, search_space

if TYPE_CHECKING:  # pragma: no cover
    from celeris.backtest import Portfolio
    from celeris.backtest.strategies import Strategy
    from celeris.llm.audit import AuditLog
    from celeris.llm.client import LLMClient

__all__ = ["ANALYSES", "AnalysisReport", "AnalysisResult", "PromptRecord", "analyze"]

#: The analyses :func:`analyze` can run, in the order it runs them.
ANALYSES: tuple[str, ...] = ("strategy", "regime", "risk")
#: Prompt template of each analysis.
TEMPLATES = {"strategy": "strategy_analysis", "regime": "market_regime", "risk": "risk_assessment"}
#: Multipliers of the current value tried for each parameter in the sensitivity table.
SENSITIVITY_FACTORS = (0.5, 0.75, 1.25, 1.5)
#: Proposals asked for in the strategy analysis.
MAX_PROPOSALS = 3
#: Backtest metrics shown in prompts and reports.
_REPORT_METRICS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "trades",
    "win_rate",
    "profit_factor",
    "exposure",
)
_NOT_SUPPLIED = "not supplied"
_LEVELS = mk.MAX_DETAIL + 1


@dataclass(frozen=True)
class PromptRecord:
    """One rendered prompt: template id and hash, its token count, budget and the detail levels
    the context builder settled on (and the optional sections it dropped)."""

    template: str
    sha256: str
    tokens: int
    budget: int
    levels: dict[str, int]
    dropped: tuple[str, ...]
    messages: tuple[dict[str, str], ...] = field(repr=False)

    def to_dict(self, *, messages: bool = False) -> dict[str, Any]:
        """Return a JSON-able dict (the rendered messages only when ``messages``)."""
        out: dict[str, Any] = {
            "template": self.template,
            "sha256": self.sha256,
            "tokens": self.tokens,
            "budget": self.budget,
            "levels": dict(self.levels),
            "dropped": list(self.dropped),
        }
        if messages:
            out["messages"] = [dict(m) for m in self.messages]
        return out


@dataclass(frozen=True)
class AnalysisResult:
    """The validated answer of one analysis and how it was obtained."""

    name: str
    value: BaseModel
    prompt: PromptRecord
    model: str
    attempts: int
    seconds: float
    usage: dict[str, int]


@dataclass(frozen=True)
class AnalysisReport:
    """What :func:`analyze` found: the backtest, the sensitivity table and each analysis.

    ``results`` maps ``"strategy"``, ``"regime"`` and ``"risk"`` (those that were asked for) to
    their :class:`AnalysisResult`; :attr:`strategy_analysis`, :attr:`regime` and :attr:`risk`
    give the parsed answers directly (``None`` when not asked).
    """

    strategy: str
    params: dict[str, Any]
    market: str
    model: str
    backtest: dict[str, float]
    sensitivity: dict[str, list[dict[str, float]]]
    results: dict[str, AnalysisResult]
    budget: int

    @property
    def strategy_analysis(self) -> BaseModel | None:
        result = self.results.get("strategy")
        return result.value if result else None

    @property
    def regime(self) -> MarketRegime | None:
        result = self.results.get("regime")
        return result.value if result else None  # type: ignore[return-value]

    @property
    def risk(self) -> RiskAssessment | None:
        result = self.results.get("risk")
        return result.value if result else None  # type: ignore[return-value]

    @property
    def prompt_tokens(self) -> dict[str, int]:
        """Tokens of each rendered prompt, as counted against the budget."""
        return {name: r.prompt.tokens for name, r in self.results.items()}

    @property
    def templates(self) -> dict[str, str]:
        """Template id (``name@vN``) of each analysis."""
        return {name: r.prompt.template for name, r in self.results.items()}

    def to_dict(self, *, messages: bool = False) -> dict[str, Any]:
        """Return the report as JSON-able data (rendered prompts only when ``messages``)."""
        return {
            "strategy": self.strategy,
            "params": dict(self.params),
            "market": self.market,
            "model": self.model,
            "budget": self.budget,
            "backtest": to_jsonable(self.backtest),
            "sensitivity": to_jsonable(self.sensitivity),
            "analyses": {
                name: {
                    "answer": r.value.model_dump(mode="json"),
                    "prompt": r.prompt.to_dict(messages=messages),
                    "model": r.model,
                    "attempts": r.attempts,
                    "seconds": r.seconds,
                    "usage": dict(r.usage),
                }
                for name, r in self.results.items()
            },
        }

    def to_text(self) -> str:
        """Return the report as readable plain text with headings (no markup)."""
        lines = [
            f"Analysis of {self.strategy} ({format_params(self.params)}) on {self.market}",
            f"Model: {self.model}; prompts (tokens of the {self.budget:,} budget): "
            + ", ".join(f"{r.prompt.template} {r.prompt.tokens:,}" for r in self.results.values()),
            "",
            "Backtest",
            "  " + ", ".join(f"{k} {format_metric(k, v)}" for k, v in self.backtest.items()),
        ]
        for name, result in self.results.items():
            lines += ["", _TITLES[name], *_TEXT[name](result.value)]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def _signed_return(value: Any) -> str:
    return format_metric("return", value, signed=True)


def _wrap(items: Sequence[str], empty: str = "none") -> list[str]:
    return [f"  - {item}" for item in items] if items else [f"  {empty}"]


def _strategy_text(value: BaseModel) -> list[str]:
    data = value.model_dump()
    lines = [f"  Assessment: {data['assessment']}", "  Proposals:"]
    for i, p in enumerate(data["proposals"], start=1):
        lines.append(f"    {i}. {format_params(p['params'])}: {p['reason']}")
    return lines


def _regime_text(value: BaseModel) -> list[str]:
    r: Any = value
    return [
        f"  Regime: {r.label} (confidence {r.confidence:.0%}), expected to last about "
        f"{mk._plural(r.expected_duration_bars, 'bar')}",
        "  Evidence:",
        *["  " + line for line in _wrap(r.evidence)],
        "  Strategy adjustments:",
        *["  " + line for line in _wrap(r.adjustments)],
    ]


def _risk_text(value: BaseModel) -> list[str]:
    r: Any = value
    lines = [
        f"  Exposure: {r.exposure}; recommended position {r.position_fraction:.0%} of capital "
        f"({r.sizing_reason})",
        "  Scenarios:",
    ]
    for s in r.scenarios:
        lines.append(
            f"    - {s.name} (probability {s.probability:.0%}): strategy return "
            f"{s.strategy_return:+.2%}; {s.description}"
        )
    lines += ["  Hedges:", *["  " + line for line in _wrap(r.hedges)]]
    return lines


_TITLES = {"strategy": "Strategy analysis", "regime": "Market regime", "risk": "Risk assessment"}
_TEXT: dict[str, Callable[[BaseModel], list[str]]] = {
    "strategy": _strategy_text,
    "regime": _regime_text,
    "risk": _risk_text,
}


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _check_analyses(analyses: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(analyses, str):
        analyses = (analyses,)
    chosen = []
    for name in analyses:
        if name not in ANALYSES:
            raise ConfigError(
                f"unknown analysis {name!r}{did_you_mean(str(name), ANALYSES)}; "
                f"choose from {', '.join(ANALYSES)}"
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ConfigError(f"no analysis asked for; choose from {', '.join(ANALYSES)}")
    # Run in the canonical order whatever the order asked, so reports read the same way.
    return tuple(n for n in ANALYSES if n in chosen)


def _bars(data: Any) -> tuple[pd.DataFrame, str]:
    if isinstance(data, str | Path):
        from celeris.data import load

        return load(str(data)), str(data)
    if isinstance(data, pd.DataFrame):
        return data, ""
    raise CelerisTypeError(
        f"data must be a bar frame or a source such as 'sample:sp500', got {type(data).__name__}"
    )


def _funding(funding: Any) -> pd.Series | None:
    if funding is None or isinstance(funding, pd.Series):
        return funding
    if isinstance(funding, str | Path):
        return mk.load_funding(funding)
    raise CelerisTypeError(
        f"funding must be a Series of rates or a CSV path, got {type(funding).__name__}"
    )


def _orderbook(book: Any) -> mk.OrderBook | None:
    if book is None or isinstance(book, mk.OrderBook):
        return book
    if isinstance(book, str | Path):
        return mk.load_orderbook(book)
    if isinstance(book, Mapping):
        return mk.OrderBook.from_mapping(book)
    raise CelerisTypeError(
        f"orderbook must be an OrderBook, a mapping or a JSON path, got {type(book).__name__}"
    )


def _market_line(bars: pd.DataFrame, source: str) -> str:
    daily = mk._daily(bars.index)
    span = (
        f"{len(bars):,} bars from {mk._date(bars.index[0], daily)} to "
        f"{mk._date(bars.index[-1], daily)}"
    )
    return f"{source} ({span})" if source else span


# ---------------------------------------------------------------------------------------------
# backtest and sensitivity
# ---------------------------------------------------------------------------------------------
def _backtest(
    bars: pd.DataFrame,
    strat: Strategy,
    params: Mapping[str, Any],
    device: str,
    options: dict[str, Any],
) -> tuple[Portfolio, dict[str, Any], dict[str, float]]:
    from celeris.backtest import from_signals

    combos = strat.grid({k: [v] for k, v in params.items()})
    full = {str(k): to_python(v) for k, v in combos.iloc[0].items()}
    entries, exits = strat.signals(bars, full)
    pf = from_signals(bars, entries, exits, device=device, **options)
    stats = pf.stats().iloc[0]
    metrics = {k: float(stats[k]) for k in _REPORT_METRICS}
    return pf, full, metrics


def _sensitivity(
    bars: pd.DataFrame,
    strat: Strategy,
    params: Mapping[str, Any],
    objective: str,
    device: str,
    options: dict[str, Any],
) -> dict[str, list[dict[str, float]]]:
    """In-sample objective and trades when one parameter moves by -50% .. +50%."""
    from celeris.backtest import sweep

    table: dict[str, list[dict[str, float]]] = {}
    for p in strat.params:
        current = params[p.name]
        values = {current}
        for factor in SENSITIVITY_FACTORS:
            value = min(max(current * factor, p.low), p.high)
            values.add(round(value) if p.integer else value)
        grid = {k: [v] for k, v in params.items()} | {p.name: sorted(values)}
        try:
            result = sweep(bars, strat, grid, progress=False, device=device, **options)
        except ConfigError:  # no admissible neighbour (the constraint rules them all out)
            table[p.name] = []
            continue
        stats = result.stats()
        table[p.name] = [
            {
                p.name: to_jsonable(result.combos[p.name].iloc[i]),
                objective: float(stats[objective].iloc[i]),
                "trades": float(stats["trades"].iloc[i]),
            }
            for i in range(len(result.combos))
        ]
    return table


def _sensitivity_text(
    table: Mapping[str, list[dict[str, float]]],
    params: Mapping[str, Any],
    objective: str,
    level: int,
) -> str:
    lines = []
    for name, rows in table.items():
        current = params[name]
        others = [r for r in rows if r[name] != current]
        if not others:
            lines.append(f"- {name}: no admissible neighbour")
            continue
        if level == 0:
            cells = ", ".join(
                f"{name}={format_param(r[name])}{' (now)' if r[name] == current else ''}: "
                f"{format_metric(objective, r[objective])} ({int(r['trades'])} trades)"
                for r in rows
            )
            lines.append(f"- {name}: {cells}")
        else:
            now = next((r for r in rows if r[name] == current), None)
            best = max(others, key=lambda r: _finite(r[objective]))
            lines.append(
                f"- {name}: best neighbour {name}={format_param(best[name])} ({objective} "
                f"{format_metric(objective, best[objective])} vs "
                f"{format_metric(objective, now[objective]) if now else 'n/a'} now)"
            )
    return "\n".join(lines)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -math.inf


def _trades_text(pf: Portfolio, level: int) -> str:
    trades = pf.trades
    stats = pf.stats().iloc[0]
    head = (
        f"- trades: {int(stats['trades'])} ({int(stats['closed_trades'])} closed), win rate "
        f"{format_metric('win_rate', stats['win_rate'])}, best {_signed_return(stats['best_trade'])}, "
        f"worst {_signed_return(stats['worst_trade'])}"
    )
    shown = (5, 0)[level]
    if not shown or trades.empty:
        return head
    daily = mk._daily(pf.index)
    rows = [
        f"- {t['direction']} {mk._date(t['entry_time'], daily)} to {mk._date(t['exit_time'], daily)}"
        f"{' (open)' if t['status'] == 'open' else ''}: {_signed_return(t['return'])}"
        for _, t in trades.tail(shown).iterrows()
    ]
    return "\n".join([head, f"- last {len(rows)} trades:", *rows])


# ---------------------------------------------------------------------------------------------
# prompts
# ---------------------------------------------------------------------------------------------
def _optional(
    builder: ContextBuilder,
    name: str,
    value: Any,
    render: Callable[[Any, int], str],
    priority: int,
) -> None:
    # An absent input is stated (required, so never replaced by the longer "omitted" marker);
    # a supplied one shrinks, then may be dropped, before the core sections.
    if value is None:
        builder.add(name, _NOT_SUPPLIED, required=True)
    else:
        builder.add(name, lambda level: render(value, level), levels=_LEVELS, priority=priority)


def _strategy_line(strat: Strategy, params: Mapping[str, Any]) -> str:
    return f"{strat.name} ({format_params(params)}): {strat.description or strat.name}"


def _backtest_line(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {format_metric(k, v)}" for k, v in metrics.items())


@dataclass
class _Inputs:
    bars: pd.DataFrame
    market: str
    strat: Strategy
    params: dict[str, Any]
    pf: Portfolio
    metrics: dict[str, float]
    objective: str
    funding: pd.Series | None
    orderbook: mk.OrderBook | None
    other_assets: Mapping[str, Any] | None
    sensitivity: dict[str, list[dict[str, float]]]


def _strategy_builder(builder: ContextBuilder, x: _Inputs) -> type[BaseModel]:
    strat = x.strat
    builder.add("strategy", strat.name, required=True)
    builder.add("description", strat.description or strat.name, required=True)
    builder.add("market", x.market, required=True)
    builder.add("objective", x.objective, required=True)
    builder.add("constraint", strat.constraint_text or "none", required=True)
    space = search_space(strat)
    builder.add("search_space", "\n".join(f"- {b}" for b in space), required=True)
    builder.add("incumbent", format_params(x.params), required=True)
    builder.add(
        "metrics",
        "\n".join(f"- {k}: {format_metric(k, v)}" for k, v in x.metrics.items() if k != "trades"),
        required=True,
    )
    builder.add(
        "trades", lambda level: _trades_text(x.pf, level), levels=2, priority=3, required=True
    )
    builder.add("max_proposals", str(MAX_PROPOSALS), required=True)
    builder.add(
        "sensitivity",
        lambda level: _sensitivity_text(x.sensitivity, x.params, x.objective, level),
        levels=2,
        priority=2,
    )
    builder.add(
        "history",
        "none: a one-off analysis; no parameter set besides the sensitivity table has been tried",
        required=True,
    )
    builder.add(
        "market_summary",
        lambda level: (
            f"{mk.price_action_summary(x.bars, level)}\n{mk.volatility_summary(x.bars, level)}"
        ),
        levels=_LEVELS,
    )
    return proposal_schema(strat, space, max_proposals=MAX_PROPOSALS)


def _regime_builder(builder: ContextBuilder, x: _Inputs) -> type[BaseModel]:
    builder.add("market", x.market, required=True)
    builder.add("strategy", _strategy_line(x.strat, x.params), required=True)
    builder.add(
        "price_action",
        lambda level: mk.price_action_summary(x.bars, level),
        levels=_LEVELS,
        priority=3,
        required=True,
    )
    builder.add(
        "volatility",
        lambda level: mk.volatility_summary(x.bars, level),
        levels=_LEVELS,
        priority=2,
        required=True,
    )
    builder.add(
        "volume_profile",
        lambda level: mk.volume_profile_summary(x.bars, level),
        levels=_LEVELS,
        priority=1,
    )
    _optional(builder, "funding", x.funding, mk.funding_summary, 1)
    _optional(builder, "orderbook", x.orderbook, mk.orderbook_summary, 0)
    return MarketRegime


def _risk_builder(builder: ContextBuilder, x: _Inputs) -> type[BaseModel]:
    builder.add("market", x.market, required=True)
    builder.add("strategy", _strategy_line(x.strat, x.params), required=True)
    builder.add("backtest", _backtest_line(x.metrics), required=True)
    builder.add(
        "risk",
        lambda level: mk.risk_summary(x.pf, x.bars, x.other_assets, level),
        levels=_LEVELS,
        priority=3,
        required=True,
    )
    builder.add(
        "volatility",
        lambda level: mk.volatility_summary(x.bars, level),
        levels=_LEVELS,
        priority=2,
        required=True,
    )
    _optional(builder, "funding", x.funding, mk.funding_summary, 1)
    _optional(builder, "orderbook", x.orderbook, mk.orderbook_summary, 0)
    return RiskAssessment


_BUILDERS: dict[str, Callable[[ContextBuilder, _Inputs], type[BaseModel]]] = {
    "strategy": _strategy_builder,
    "regime": _regime_builder,
    "risk": _risk_builder,
}


def _record(template: PromptTemplate, context: Context) -> PromptRecord:
    return PromptRecord(
        template=template.id,
        sha256=template.sha256,
        tokens=context.tokens,
        budget=context.budget,
        levels=dict(context.levels),
        dropped=tuple(context.dropped),
        messages=tuple(dict(m) for m in context.messages),
    )


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------
def analyze(
    data: pd.DataFrame | str | Path,
    strategy: str | Strategy,
    params: Mapping[str, Any] | None = None,
    *,
    client: LLMClient,
    analyses: Sequence[str] | str = ANALYSES,
    funding: pd.Series | str | Path | None = None,
    orderbook: mk.OrderBook | Mapping[str, Any] | str | Path | None = None,
    other_assets: Mapping[str, pd.Series | pd.DataFrame] | None = None,
    budget_tokens: int | None = None,
    counter: TokenCounter | None = None,
    objective: str = "sharpe",
    label: str | None = None,
    audit: AuditLog | str | Path | None = None,
    device: str = "auto",
    **portfolio_options: Any,
) -> AnalysisReport:
    """Backtest ``strategy`` with ``params`` and ask the LLM analyst about it.

    Three analyses, each from its versioned prompt template and validated by its schema:

    - ``"strategy"`` (``strategy_analysis``): an assessment of the in-sample results and up to
      three parameter proposals inside the strategy's bounds, reading the metrics, the trades,
      a parameter-sensitivity table (each parameter moved by -50%, -25%, +25%, +50%, others
      fixed, via :func:`celeris.backtest.sweep`) and a market summary;
    - ``"regime"`` (``market_regime``): a :class:`~celeris.llm.schemas.MarketRegime` from price
      action, volatility, the volume profile and, when supplied, funding rates and an order book;
    - ``"risk"`` (``risk_assessment``): a :class:`~celeris.llm.schemas.RiskAssessment` from the
      position, volatility, historical VaR/CVaR, drawdowns and correlations with
      ``other_assets``.

    Each prompt is kept within ``budget_tokens`` by :class:`~celeris.llm.context.ContextBuilder`:
    optional sections (volume profile, funding, order book, sensitivity) shrink and then drop
    first, the core ones (price action, volatility, risk) shrink to their shortest but stay.

    Parameters
    ----------
    data : DataFrame, str or Path
        A bar frame, or a source for :func:`celeris.data.load` (``"sample:sp500"``, a path).
    strategy : str or Strategy
        A built-in strategy name (see ``celeris strategies``) or a :class:`Strategy`.
    params : mapping, optional
        Parameter values; the others take their defaults.
    client : LLMClient
        The model to ask.
    analyses : sequence of {"strategy", "regime", "risk"}
        Which analyses to run (default all three; they are run in that order).
    funding : Series, str or Path, optional
        Funding rates (fractions per interval) or a CSV file for :func:`~celeris.llm.market.load_funding`.
    orderbook : OrderBook, mapping, str or Path, optional
        An order-book snapshot or a JSON file for :func:`~celeris.llm.market.load_orderbook`.
    other_assets : mapping of name to price Series (or bar frame), optional
        Other assets whose returns are correlated with the strategy's and the asset's.
    budget_tokens : int, optional
        Token budget of each rendered prompt (default ``client.prompt_budget()``: the
        configured ``context_tokens``, within what the server's context window leaves).
    counter : callable, optional
        Token counter (default ``client.token_counter()``: the configured tokenizer, else the
        server's own count, else the conservative estimate of
        :func:`~celeris.llm.context.estimate_tokens`).
    objective : str
        Metric the strategy analysis should improve (a :data:`celeris.backtest.METRICS` name).
    label : str, optional
        Name of the data in prompts and the report (default: the source string when ``data``
        is one; the bar count and dates are always added).
    audit : AuditLog, str or Path, optional
        Audit log to append the prompts and answers to.
    device : {"auto", "cpu", "cuda"}
        Backtest device.
    **portfolio_options
        :func:`celeris.backtest.from_signals` options (``fees``, ``slippage``, ``init_cash``,
        ``direction``, stops, ``year_days``...). ``year_days`` defaults to 252 for data without
        weekend bars and 365 otherwise.

    Returns
    -------
    AnalysisReport
        The parsed answers, the backtest metrics, the sensitivity table, each prompt's template
        id and token count, and the model name.

    Raises
    ------
    ConfigError
        An unknown analysis, strategy, parameter, option or objective, or a budget too small
        for a prompt even with every section at its shortest.
    DataError
        Bad market data, funding or order-book input.
    LLMError
        The server cannot be reached or gives no valid answer.
    """
    from celeris.backtest import METRICS
    from celeris.backtest.annualisation import resolve_year_days
    from celeris.backtest.strategies import check_bars, get_strategy
    from celeris.backtest.sweep import check_portfolio_options

    chosen = _check_analyses(analyses)
    if objective not in METRICS:
        raise ConfigError(f"unknown objective {objective!r}{did_you_mean(objective, METRICS)}")
    strat = get_strategy(strategy)
    raw, source = _bars(data)
    bars = check_bars(raw, strat.needs)
    options = check_portfolio_options(portfolio_options)
    options["year_days"] = resolve_year_days(bars.index, options.get("year_days"))
    budget = (
        client.prompt_budget()
        if budget_tokens is None
        else check_int("budget_tokens", budget_tokens, minimum=1)
    )
    count = counter or client.token_counter()

    pf, full, metrics = _backtest(bars, strat, dict(params or {}), device, options)
    inputs = _Inputs(
        bars=bars,
        market=_market_line(bars, label if label is not None else source),
        strat=strat,
        params=full,
        pf=pf,
        metrics=metrics,
        objective=objective,
        funding=_funding(funding),
        orderbook=_orderbook(orderbook),
        other_assets=other_assets,
        sensitivity=(
            _sensitivity(bars, strat, full, objective, device, options)
            if "strategy" in chosen
            else {}
        ),
    )
    # Build every prompt first: a budget too small for any of them fails before a paid call.
    prepared = [_prepare(name, inputs, budget, count) for name in chosen]
    run = {
        "kind": "analyze",
        "strategy": strat.name,
        "params": full,
        "market": inputs.market,
        "analyses": list(chosen),
        "budget": budget,
        "options": options,
    }
    results = _ask_all(client, prepared, audit, run)
    return AnalysisReport(
        strategy=strat.name,
        params=full,
        market=inputs.market,
        model=next(iter(results.values())).model,
        backtest=metrics,
        sensitivity=inputs.sensitivity,
        results=results,
        budget=budget,
    )


@dataclass(frozen=True)
class _Prepared:
    """One analysis ready to ask: its template, answer schema and rendered context."""

    name: str
    template: PromptTemplate
    schema: type[BaseModel]
    context: Context


def _prepare(name: str, inputs: _Inputs, budget: int, count: TokenCounter) -> _Prepared:
    template = load_prompt(TEMPLATES[name])
    builder = ContextBuilder(template, budget, count)
    schema = _BUILDERS[name](builder, inputs)
    builder.schema = schema  # the schema instruction is part of the prompt's budget
    return _Prepared(name, template, schema, builder.build())


def _ask_all(
    client: LLMClient, prepared: Sequence[_Prepared], audit: Any, run: dict[str, Any]
) -> dict[str, AnalysisResult]:
    """Ask each prepared analysis in turn, logging the run, prompts and answers to ``audit``."""
    log, own_log = _audit(audit)
    try:
        if log is not None:
            log.write("run", **run)
        return {p.name: _ask(client, p, log) for p in prepared}
    finally:
        if own_log and log is not None:
            log.close()


def _ask(client: LLMClient, p: _Prepared, log: AuditLog | None) -> AnalysisResult:
    from celeris.llm.client import InvalidAnswer

    name, template, context = p.name, p.template, p.context
    record = _record(template, context)
    if log is not None:
        log.write(
            "prompt",
            analysis=name,
            template=template.id,
            template_sha256=template.sha256,
            messages=context.messages,
            tokens=context.tokens,
            budget=context.budget,
            levels=context.levels,
            dropped=list(context.dropped),
        )
    started = time.perf_counter()

    def log_answer(model: str, attempts: Any, parsed: Any, error: str | None) -> None:
        if log is not None:
            log.write(
                "answer",
                analysis=name,
                model=model,
                template=template.id,
                attempts=[a.__dict__ for a in attempts],
                parsed=parsed,
                error=error,
            )

    try:
        answer = client.ask(p.schema, context.messages)
    except InvalidAnswer as exc:
        log_answer(client.model, exc.attempts, None, str(exc))
        raise
    elapsed = time.perf_counter() - started
    log_answer(answer.model, answer.attempts, answer.value.model_dump(mode="json"), None)
    return AnalysisResult(
        name=name,
        value=answer.value,
        prompt=record,
        model=answer.model,
        attempts=len(answer.attempts),
        seconds=elapsed,
        usage=dict(answer.usage),
    )


def _audit(audit: Any) -> tuple[AuditLog | None, bool]:
    if audit is None:
        return None, False
    from celeris.llm.audit import AuditLog

    if isinstance(audit, AuditLog):
        return audit, False
    return AuditLog(audit), True
