"""What the analyst must answer: frozen pydantic schemas, also sent to the server as JSON schema.

Every schema forbids extra fields and bounds every number and string, so the same object is
(1) the constrained-decoding format the server may enforce, (2) the instructions the model
reads, and (3) the validator that alone guarantees the bounds on our side (llama.cpp's grammar,
for one, ignores numeric bounds).

The strategy-analysis schema is built per strategy and search space: each proposed parameter
set is an object with exactly the searched parameters, each inside its bounds, and the
strategy's own constraint (e.g. ``fast < slow``) is checked too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from celeris.backtest.strategies import Strategy
from celeris.errors import ConfigError

ShortText = Annotated[str, Field(min_length=1, max_length=240)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MarketRegime(_Strict):
    """A reading of the market regime from price action, volatility and volume."""

    label: Literal["trending_up", "trending_down", "ranging", "volatile", "quiet"] = Field(
        description="the regime now"
    )
    confidence: float = Field(ge=0, le=1, description="probability the label is right")
    expected_duration_bars: int = Field(ge=1, le=5000, description="bars the regime may last")
    evidence: list[ShortText] = Field(min_length=1, max_length=4)
    adjustments: list[ShortText] = Field(
        max_length=4, description="how the strategy should adapt to this regime"
    )


class Scenario(_Strict):
    """A stress scenario and what it would do to the strategy."""

    name: Annotated[str, Field(min_length=1, max_length=60)]
    probability: float = Field(ge=0, le=1)
    strategy_return: float = Field(ge=-1, le=10, description="fractional return, -0.1 = -10%")
    description: ShortText


class RiskAssessment(_Strict):
    """Exposure, scenarios, hedges and sizing for the strategy's current book."""

    exposure: Literal["low", "moderate", "high", "extreme"]
    scenarios: list[Scenario] = Field(min_length=1, max_length=4)
    hedges: list[ShortText] = Field(max_length=4)
    position_fraction: float = Field(
        ge=0, le=1, description="recommended fraction of capital in the position"
    )
    sizing_reason: ShortText


@dataclass(frozen=True)
class Bound:
    """Inclusive search bounds of one strategy parameter."""

    name: str
    low: float
    high: float
    integer: bool

    def __str__(self) -> str:
        fmt = (lambda v: f"{int(v)}") if self.integer else (lambda v: f"{v:g}")
        return f"{self.name} in [{fmt(self.low)}, {fmt(self.high)}]"


def search_space(strategy: Strategy, bounds: Mapping[str, Any] | None = None) -> tuple[Bound, ...]:
    """Return the search bounds of ``strategy`` for ``bounds`` (``{"fast": (5, 100)}`` or
    ``{"fast": "5:100"}``); with none, every parameter over its declared range.

    Raises
    ------
    ConfigError
        An unknown parameter, a malformed or empty range, or one outside the declared bounds.
    """
    if not bounds:
        return tuple(Bound(p.name, p.low, p.high, p.integer) for p in strategy.params)
    out = []
    for name, spec in bounds.items():
        p = strategy.param(name)
        if isinstance(spec, str):
            parts = spec.split(":")
            if len(parts) != 2:
                raise ConfigError(f"bound {name}={spec!r}: write LOW:HIGH, e.g. {name}=5:100")
            spec = parts
        try:
            low, high = (float(v) for v in spec)
        except (TypeError, ValueError):
            raise ConfigError(f"bound {name}={spec!r}: LOW and HIGH must be numbers") from None
        if not low < high:
            raise ConfigError(f"bound {name}: LOW ({low:g}) must be below HIGH ({high:g})")
        p.check(low if not p.integer else int(np.ceil(low)))
        p.check(high if not p.integer else int(np.floor(high)))
        if p.integer:
            low, high = float(np.ceil(low)), float(np.floor(high))
        out.append(Bound(name, low, high, p.integer))
    return tuple(out)


def proposal_schema(
    strategy: Strategy,
    space: tuple[Bound, ...],
    fixed: Mapping[str, float] | None = None,
    *,
    max_proposals: int = 3,
) -> type[BaseModel]:
    """Return the strategy-analysis answer schema for ``strategy`` over ``space``.

    The answer is ``{"assessment": str, "proposals": [{"params": {...}, "reason": str}]}``;
    ``params`` holds exactly the searched parameters, each inside its bounds; parameters not
    searched take their ``fixed`` value when the strategy's constraint is checked.
    """
    fixed = dict(fixed or {})
    fields: dict[str, Any] = {}
    for b in space:
        kind: Any = int if b.integer else float
        lo, hi = (int(b.low), int(b.high)) if b.integer else (b.low, b.high)
        fields[b.name] = (kind, Field(ge=lo, le=hi, description=strategy.param(b.name).help))

    def admissible(self: BaseModel) -> BaseModel:
        if strategy.constraint is not None:
            row = {p.name: fixed.get(p.name, p.default) for p in strategy.params}
            row.update(self.model_dump())
            if not bool(strategy.constraint(pd.DataFrame([row]))[0]):
                raise ValueError(f"parameters break the constraint {strategy.constraint_text}")
        return self

    params_model = create_model(  # type: ignore[call-overload]
        f"{_camel(strategy.name)}Params",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        __validators__={"admissible": model_validator(mode="after")(admissible)},  # type: ignore[dict-item]
        **fields,
    )
    proposal = create_model(
        "Proposal",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        params=(params_model, ...),
        reason=(ShortText, Field(description="why this change should help out of sample")),
    )
    return create_model(  # type: ignore[call-overload, no-any-return]
        "StrategyAnalysis",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        assessment=(
            Annotated[str, Field(min_length=1, max_length=600)],
            Field(description="what the results say about the strategy"),
        ),
        proposals=(list[proposal], Field(min_length=1, max_length=max_proposals)),  # type: ignore[valid-type]
    )


def schema_instruction(schema: type[BaseModel]) -> str:
    """Return the instruction that tells any model which JSON object to answer with."""
    return (
        "Answer with exactly one JSON object and nothing else. It must validate against this "
        "JSON schema (respect every minimum, maximum, enum and length):\n"
        + json.dumps(schema.model_json_schema(), separators=(",", ":"), sort_keys=True)
    )


def with_schema_instruction(
    messages: list[dict[str, str]], schema: type[BaseModel]
) -> list[dict[str, str]]:
    """Append the schema instruction to the system message (once: the call is idempotent).

    Every server reads instructions, whatever it enforces; the token budget of a prompt counts
    this text too (see :class:`celeris.llm.context.ContextBuilder`).
    """
    note = schema_instruction(schema)
    if messages and messages[0].get("role") == "system":
        head = dict(messages[0])
        if head["content"].endswith(note):
            return [dict(m) for m in messages]
        head["content"] = f"{head['content']}\n\n{note}"
        return [head, *(dict(m) for m in messages[1:])]
    return [{"role": "system", "content": note}, *(dict(m) for m in messages)]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
