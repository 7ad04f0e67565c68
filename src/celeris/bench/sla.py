"""Service-level targets and the verdict of a run against them."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from celeris._settings import FrozenConfig, number
from celeris.bench.results import finite

if TYPE_CHECKING:  # pragma: no cover
    from celeris.bench.results import RunResult


class SLA(FrozenConfig, kw_only=False):
    """Service-level targets a run must meet; ``None`` skips a target.

    Defaults: p50 <= 50 ms, p95 <= 80 ms, p99 <= 100 ms, >= 200 successful requests/s, <= 1%
    errors. Frozen; an unknown target is refused with a hint, a latency or throughput target
    must be a number > 0, the error rate a fraction in [0, 1] (see
    :class:`~celeris._settings.FrozenConfig`).
    """

    config_label: ClassVar[str] = "SLA"

    p50_ms: Annotated[float | None, number(gt=0.0, finite=False)] = 50.0
    p95_ms: Annotated[float | None, number(gt=0.0, finite=False)] = 80.0
    p99_ms: Annotated[float | None, number(gt=0.0, finite=False)] = 100.0
    min_throughput: Annotated[float | None, number(gt=0.0, finite=False)] = 200.0
    max_error_rate: Annotated[float | None, number(ge=0.0, le=1.0)] = 0.01

    def check(self, result: RunResult) -> SLAVerdict:
        """Return whether ``result`` meets every target, with a reason for each miss."""
        checks: list[SLACheck] = []
        pct = result.percentiles_ms()
        for name in ("p50", "p95", "p99"):
            target = getattr(self, f"{name}_ms")
            if target is not None:
                actual = pct[name]
                checks.append(
                    SLACheck(f"{name} latency", "<=", target, actual, "ms", actual <= target)
                )
        if self.min_throughput is not None:
            checks.append(
                SLACheck(
                    "throughput",
                    ">=",
                    self.min_throughput,
                    result.throughput,
                    "req/s",
                    result.throughput >= self.min_throughput,
                )
            )
        if self.max_error_rate is not None:
            checks.append(
                SLACheck(
                    "error rate",
                    "<=",
                    self.max_error_rate,
                    result.error_rate,
                    "",
                    result.error_rate <= self.max_error_rate,
                )
            )
        reasons = [c.reason for c in checks if not c.passed]
        if result.ok == 0:
            reasons.insert(0, "no successful responses")
        return SLAVerdict(not reasons, tuple(checks), tuple(reasons))

    def to_dict(self) -> dict[str, Any]:
        """Return the targets as a dict."""
        return self.model_dump()


@dataclasses.dataclass(frozen=True)
class SLACheck:
    """One SLA target against what was measured (NaN never passes)."""

    name: str
    op: str
    target: float
    actual: float
    unit: str
    passed: bool

    @property
    def reason(self) -> str:
        """The check as text, e.g. ``"p99 latency 132.4 ms > 100 ms"``."""
        if self.name == "error rate":
            shown, goal = f"{self.actual:.2%}", f"{self.target:.2%}"
        else:
            shown = "n/a" if math.isnan(self.actual) else f"{self.actual:.4g}"
            goal = f"{self.target:g}"
        unit = f" {self.unit}" if self.unit else ""
        op = self.op if self.passed else {"<=": ">", ">=": "<"}[self.op]
        return f"{self.name} {shown}{unit} {op} {goal}{unit}"

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a dict (NaN as None)."""
        d = dataclasses.asdict(self)
        d["actual"] = finite(self.actual)
        d["reason"] = self.reason
        return d


@dataclasses.dataclass(frozen=True)
class SLAVerdict:
    """Pass or fail, every check, and the reasons of the failures."""

    passed: bool
    checks: tuple[SLACheck, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as a dict."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }
