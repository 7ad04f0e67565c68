"""What ``celeris doctor`` reports: one :class:`CheckResult` per check, gathered in a :class:`Report`.

The JSON form (``celeris doctor --json``) is :meth:`Report.to_json`: its keys are a stable
interface for scripts and monitoring (``SCHEMA_VERSION`` changes when they do), checked by
``tests/doctor/test_report.py``.
"""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from celeris.jsonsafe import to_jsonable

__all__ = ["SCHEMA_VERSION", "CheckResult", "Report", "Status"]

SCHEMA_VERSION = 1
"""Version of the JSON report's shape; bumped when a key is renamed or removed."""


class Status(enum.StrEnum):
    """The outcome of one check.

    ``ok``: as it should be. ``warn``: works, but slower or riskier than it could be (does not
    change the exit code). ``fail``: something Celeris needs is broken (exit code 1).
    ``skip``: not applicable here (nothing configured, no GPU) or not run (``--quick``).
    """

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class CheckResult(BaseModel):
    """The outcome of one check: its status, one line saying what was found, and the fix.

    ``fix`` is required when the status is ``warn`` or ``fail``: every problem says how to
    solve it. ``details`` holds the measured values (versions, sizes, latencies), JSON-safe.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    status: Status
    summary: str
    fix: str | None = None
    details: dict[str, Any] = {}
    seconds: float = 0.0

    @field_validator("details", mode="before")
    @classmethod
    def _jsonable(cls, value: Any) -> Any:
        return to_jsonable(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _fix_for_problems(self) -> CheckResult:
        if self.status in (Status.WARN, Status.FAIL) and not self.fix:
            raise ValueError(f"check {self.name!r} is {self.status.value} but gives no fix")
        return self


class Report(BaseModel):
    """Every check's result, in the order they ran."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    celeris_version: str
    quick: bool
    llm: bool
    checks: tuple[CheckResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether no check failed (warnings and skips do not count)."""
        return all(c.status is not Status.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        """``0`` when no check failed, else ``1`` (``2`` stays the CLI's bad-input code)."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        """Return the number of checks per status, every status present."""
        out = {s.value: 0 for s in Status}
        for c in self.checks:
            out[c.status.value] += 1
        return out

    def get(self, name: str) -> CheckResult:
        """Return the result of the check called ``name``.

        Raises
        ------
        KeyError
            No check of that name ran.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r} in this report")

    def to_json(self) -> dict[str, Any]:
        """Return the report as the JSON document ``celeris doctor --json`` prints."""
        return {
            "schema_version": self.schema_version,
            "celeris_version": self.celeris_version,
            "quick": self.quick,
            "llm": self.llm,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "checks": [
                {
                    "name": c.name,
                    "title": c.title,
                    "status": c.status.value,
                    "summary": c.summary,
                    "fix": c.fix,
                    "details": c.details,
                    "seconds": round(c.seconds, 3),
                }
                for c in self.checks
            ],
        }
