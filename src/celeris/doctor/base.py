"""The pieces every check shares: what a check finds, what it is given, how it is declared."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from celeris._settings import FrozenConfig, integer, number
from celeris.doctor.report import Status
from celeris.formatting import redact_url

if TYPE_CHECKING:
    from celeris.llm.settings import LLMSettings
    from celeris.serving.config import ServeSettings

__all__ = [
    "Check",
    "Context",
    "DoctorOptions",
    "Finding",
    "fail",
    "ok",
    "redact",
    "skip",
    "warn",
]


@dataclass(frozen=True)
class Finding:
    """What one check found; the runner adds its name, title and duration."""

    status: Status
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


def ok(summary: str, **details: Any) -> Finding:
    """Return an ``ok`` finding."""
    return Finding(Status.OK, summary, None, details)


def warn(summary: str, fix: str, **details: Any) -> Finding:
    """Return a ``warn`` finding with the fix."""
    return Finding(Status.WARN, summary, fix, details)


def fail(summary: str, fix: str, **details: Any) -> Finding:
    """Return a ``fail`` finding with the fix."""
    return Finding(Status.FAIL, summary, fix, details)


def skip(summary: str, **details: Any) -> Finding:
    """Return a ``skip`` finding: nothing to check here."""
    return Finding(Status.SKIP, summary, None, details)


def worst(findings: list[Finding]) -> Status:
    """Return the most serious status among ``findings`` (fail > warn > ok > skip)."""
    order = (Status.SKIP, Status.OK, Status.WARN, Status.FAIL)
    return max((f.status for f in findings), key=order.index, default=Status.SKIP)


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (reports are shared in tickets)."""
    return redact_url(url)


class DoctorOptions(FrozenConfig):
    """What to check, from the command line (frozen; unknown fields refused).

    Parameters
    ----------
    quick
        Only the fast, local checks (no imports of torch or onnxruntime, no network, no
        kernel compiles, no artifact hashing).
    llm
        Also check the configured LLM endpoint (``CELERIS_LLM_*``).
    lock
        The lock file (``constraints.txt``) to compare installed packages with; ``None``
        looks in the current directory, then beside the source tree.
    ports
        TCP ports to check besides the serving port (``CELERIS_SERVE_PORT``).
    expect_gpu
        A missing NVIDIA GPU is a failure (a GPU node), not a skip.
    timeout_s
        Connect timeout of each network check (Redis, PostgreSQL, the LLM endpoint).
    """

    config_label: ClassVar[str] = "doctor"

    quick: bool = False
    llm: bool = False
    lock: Path | None = None
    ports: tuple[Annotated[int, integer(ge=1, le=65_535)], ...] = ()
    expect_gpu: bool = False
    timeout_s: Annotated[float, number(gt=0, le=600)] = 3.0


@dataclass(frozen=True)
class Context:
    """What the checks read: the options and the settings ``celeris serve`` would use.

    ``serve`` is ``None`` when the ``CELERIS_SERVE_*`` settings do not load; ``serve_error``
    then says why (the ``config`` check reports it, the checks that need them skip).
    """

    options: DoctorOptions
    serve: ServeSettings | None
    serve_error: str | None
    llm: LLMSettings | None = None
    llm_error: str | None = None


@dataclass(frozen=True)
class Check:
    """One check: a stable ``name`` (the JSON key), a ``title`` for the table, whether it is in
    the ``--quick`` subset, and the function that runs it."""

    name: str
    title: str
    quick: bool
    run: Callable[[Context], Finding]
