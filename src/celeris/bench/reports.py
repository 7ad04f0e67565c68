"""Reports of runs: rich tables and a JSON-ready dict with SLA verdicts."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeris.bench.results import CompareResult, RunResult, StressResult
from celeris.bench.sla import SLA, SLAVerdict
from celeris.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table


def report_dict(
    result: RunResult | StressResult | CompareResult,
    *,
    sla: SLA | None = None,
    latencies: bool = False,
) -> dict[str, Any]:
    """Return a JSON-ready report of a run, stress or compare result (with SLA verdicts)."""
    machine = {"cpus": os.cpu_count(), "load_average": list(os.getloadavg())}
    if isinstance(result, RunResult):
        out = {"kind": "run", "run": result.to_dict(latencies=latencies), "machine": machine}
        if sla is not None:
            out["sla"] = {"targets": sla.to_dict(), **sla.check(result).to_dict()}
        return out
    if isinstance(result, StressResult):
        return {"kind": "stress", **result.to_dict(latencies=latencies), "machine": machine}
    if isinstance(result, CompareResult):
        out = {"kind": "compare", **result.to_dict(latencies=latencies), "machine": machine}
        if sla is not None:
            out["sla"] = {
                "targets": sla.to_dict(),
                "a": sla.check(result.a).to_dict(),
                "b": sla.check(result.b).to_dict(),
            }
        return out
    raise ConfigError(f"cannot report a {type(result).__name__}")


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}x{v}" for k, v in sorted(errors.items())) or "0"


def _row(r: RunResult, verdict: SLAVerdict | None) -> list[str]:
    p = r.percentiles_ms()
    rpc = r.requests_per_cpu_s
    row = [
        r.label,
        str(r.concurrency),
        f"{r.sent:,}",
        f"{r.throughput:,.0f}",
        _ms(p["p50"]),
        _ms(p["p95"]),
        _ms(p["p99"]),
        _ms(p["max"]),
        _errors_text(r.errors) + (f" ({r.error_rate:.1%})" if r.failed else ""),
        "-" if rpc is None else f"{rpc:,.0f}",
        "-" if r.cache is None else r.cache.text(),
    ]
    if verdict is not None:
        row.append("[green]pass[/]" if verdict.passed else "[bold red]FAIL[/]")
    return row


def _table(title: str, with_sla: bool) -> Table:
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    table.add_column("run")
    for col in (
        "conc.",
        "requests",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "req/server CPU-s",
        "cache hits",
    ):
        table.add_column(col, justify="right")
    if with_sla:
        table.add_column("SLA")
    return table


def render_table(results: Sequence[RunResult], *, sla: SLA | None = None, title: str = "") -> Table:
    """Return a rich table of runs (with an SLA column when ``sla`` is given).

    The caption says why a run has no cache-hit ratio ("off", "n/a"), when one has none.
    """
    table = _table(title or "load test", sla is not None)
    for r in results:
        table.add_row(*_row(r, None if sla is None else sla.check(r)))
    _schedule_caption(table, results)
    _cache_caption(table, results)
    return table


def _schedule_caption(table: Table, results: Sequence[RunResult]) -> None:
    """Say, for each open-loop run, how many of its sends fell behind the schedule."""
    lines = []
    for r in results:
        if r.rate is None:
            continue
        lag = "" if r.max_send_lag_s is None else f", latest {r.max_send_lag_s * 1e3:.1f} ms late"
        unsent = r.errors.get("unsent", 0)
        lines.append(
            f"{r.label}: open loop at {r.rate:g} req/s, {r.behind_schedule or 0:,} of "
            f"{r.sent:,} sends behind schedule{lag}"
            + (f", {unsent:,} due but never sent" if unsent else "")
            + "; latency counted from each request's due time"
        )
    if lines:
        caption = table.caption if isinstance(table.caption, str) else ""
        table.caption = "\n".join(filter(None, [caption, *lines]))


def _cache_caption(table: Table, results: Sequence[RunResult]) -> None:
    """Say why a run has no cache-hit ratio, for each run that has none."""
    notes = dict.fromkeys(
        f"cache hits: {r.cache.note}" for r in results if r.cache is not None and r.cache.note
    )
    if notes:
        caption = table.caption if isinstance(table.caption, str) else ""
        table.caption = "\n".join(filter(None, [caption, *notes]))


def render_stress(result: StressResult) -> Table:
    """Return a rich table of the stress steps; the caption names the last passing step."""
    table = _table("stress: concurrency steps until the SLA breaks", True)
    for r, v in result.steps:
        table.add_row(*_row(r, v))
    last = result.last_passing
    lines = []
    if last is not None:
        lines.append(
            f"last passing step: concurrency {last.concurrency} ({last.throughput:,.0f} req/s)"
        )
    else:
        lines.append("no step met the SLA")
    breaches = [(r, v) for r, v in result.steps if not v.passed]
    if breaches:
        r, v = breaches[0]
        lines.append(f"breached at concurrency {r.concurrency}: {'; '.join(v.reasons)}")
    else:
        lines.append("every step met the SLA")
    table.caption = "\n".join(lines)
    _cache_caption(table, [r for r, _ in result.steps])
    return table


def render_compare(result: CompareResult, *, sla: SLA | None = None) -> Table:
    """Return a rich table of both runs and a ratio row ``a / b``."""
    table = _table("compare: same load, a / b", sla is not None)
    for r in (result.a, result.b):
        table.add_row(*_row(r, None if sla is None else sla.check(r)))
    ratios = result.ratios

    def x(key: str) -> str:
        v = ratios[key]
        return "-" if v is None else f"{v:.2f}x"

    row = [
        "ratio a / b",
        "",
        "",
        x("throughput"),
        x("p50"),
        x("p95"),
        x("p99"),
        x("max"),
        "",
        x("requests_per_cpu_s"),
        "",
    ]
    if sla is not None:
        row.append("")
    table.add_row(*row, style="bold")
    _cache_caption(table, [result.a, result.b])
    return table
