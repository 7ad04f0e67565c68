"""What a run, a stress run and a comparison measured (JSON-ready)."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from celeris.bench.cache_stats import CacheStats
    from celeris.bench.sla import SLA, SLAVerdict


def finite(value: float) -> float | None:
    """``value``, or ``None`` when it is NaN or infinite (JSON has neither)."""
    return value if math.isfinite(value) else None


@dataclasses.dataclass
class RunResult:
    """What one run measured.

    Attributes
    ----------
    label, url, mode
        The target's label and URL; ``"latency"``, ``"load"``, ``"stress"`` or ``"compare"``.
    concurrency
        Connections used.
    sent, ok
        Measured requests sent; those answered with a 2xx status.
    errors
        Failed requests by kind: an HTTP status (``"429"``) or ``"timeout"``,
        ``"connection"``, ``"protocol"``.
    wall_s
        From the first measured request to the last answer.
    latencies_s
        Latency of every successful request, in completion order (seconds).
    server_cpu_s
        CPU seconds of the server's process tree over the run (``None`` without a PID).
    client_cpu_s
        CPU seconds the load generator itself used over the run.
    warmup
        Warm-up requests sent before measuring.
    started_at
        ISO UTC time of the start of measurement.
    cache
        The server's cache look-ups and hits over the measured requests (``None`` when the
        target has no ``metrics_url``).
    rate
        Open loop: the requests per second asked; ``None``: closed loop.
    behind_schedule
        Open loop: sends written more than 1 ms after they were due (every connection was
        busy, or the client itself fell behind); ``None``: closed loop.
    max_send_lag_s
        Open loop: the latest a send was written after it was due; ``None``: closed loop.
    """

    label: str
    url: str
    mode: str
    concurrency: int
    sent: int
    ok: int
    errors: dict[str, int]
    wall_s: float
    latencies_s: np.ndarray
    server_cpu_s: float | None = None
    client_cpu_s: float = 0.0
    warmup: int = 0
    started_at: str = ""
    cache: CacheStats | None = None
    rate: float | None = None
    behind_schedule: int | None = None
    max_send_lag_s: float | None = None

    @property
    def failed(self) -> int:
        """Requests that failed, of any kind."""
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        """Successful requests per second of wall time."""
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """Failed requests / answered-or-failed requests (0 when nothing was sent)."""
        done = self.ok + self.failed
        return self.failed / done if done else 0.0

    @property
    def requests_per_cpu_s(self) -> float | None:
        """Successful requests per server CPU-second (``None`` without a server PID)."""
        if self.server_cpu_s is None:
            return None
        return self.ok / self.server_cpu_s if self.server_cpu_s > 0 else math.inf

    def percentiles_ms(self) -> dict[str, float]:
        """Return p50, p95, p99, max and mean latency in ms (NaN without successes)."""
        if self.latencies_s.size == 0:
            return dict.fromkeys(("p50", "p95", "p99", "max", "mean"), math.nan)
        ms = self.latencies_s * 1e3
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return {
            "p50": float(p50),
            "p95": float(p95),
            "p99": float(p99),
            "max": float(ms.max()),
            "mean": float(ms.mean()),
        }

    def to_dict(self, *, latencies: bool = False) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (latency samples only if asked)."""
        rpc = self.requests_per_cpu_s
        out: dict[str, Any] = {
            "label": self.label,
            "url": self.url,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(sorted(self.errors.items())),
            "error_rate": self.error_rate,
            "wall_s": self.wall_s,
            "throughput_rps": self.throughput,
            "latency_ms": {k: finite(v) for k, v in self.percentiles_ms().items()},
            "server_cpu_s": self.server_cpu_s,
            "requests_per_server_cpu_s": None if rpc is None else finite(rpc),
            "client_cpu_s": self.client_cpu_s,
            "warmup": self.warmup,
            "started_at": self.started_at,
            "cache": None if self.cache is None else self.cache.to_dict(),
        }
        if self.rate is not None:
            lag = self.max_send_lag_s
            out["open_loop"] = {
                "rate_rps": self.rate,
                "behind_schedule": self.behind_schedule,
                "max_send_lag_ms": None if lag is None else lag * 1e3,
            }
        if latencies:
            out["latencies_ms"] = (self.latencies_s * 1e3).round(4).tolist()
        return out


@dataclasses.dataclass
class StressResult:
    """The steps of a stress run, each with its SLA verdict, up to the first breach."""

    steps: list[tuple[RunResult, SLAVerdict]]
    sla: SLA

    @property
    def last_passing(self) -> RunResult | None:
        """The highest-concurrency step that met the SLA before the first breach (or None)."""
        passing = None
        for result, verdict in self.steps:
            if not verdict.passed:
                break
            passing = result
        return passing

    @property
    def breached_at(self) -> RunResult | None:
        """The first step that breached the SLA (None when every step passed)."""
        for result, verdict in self.steps:
            if not verdict.passed:
                return result
        return None

    def to_dict(self, *, latencies: bool = False) -> dict[str, Any]:
        """Return the steps, verdicts and the last passing concurrency as a dict."""
        last = self.last_passing
        breach = self.breached_at
        return {
            "sla": self.sla.to_dict(),
            "steps": [
                {**r.to_dict(latencies=latencies), "sla": v.to_dict()} for r, v in self.steps
            ],
            "last_passing_concurrency": None if last is None else last.concurrency,
            "last_passing_throughput_rps": None if last is None else last.throughput,
            "breached_at_concurrency": None if breach is None else breach.concurrency,
        }


RATIO_FIELDS = ("throughput", "p50", "p95", "p99", "max", "requests_per_cpu_s")


@dataclasses.dataclass
class CompareResult:
    """Two runs under the same load; ``ratios`` are ``a / b`` for every measure."""

    a: RunResult
    b: RunResult

    @property
    def ratios(self) -> dict[str, float | None]:
        """``a / b`` of throughput, p50, p95, p99, max latency and requests per CPU-second.

        Above 1 means a is higher: better for throughput and requests per CPU-second, worse for
        latencies. ``None`` when a side is missing or zero.
        """
        pa, pb = self.a.percentiles_ms(), self.b.percentiles_ms()
        values = {
            "throughput": (self.a.throughput, self.b.throughput),
            **{k: (pa[k], pb[k]) for k in ("p50", "p95", "p99", "max")},
            "requests_per_cpu_s": (self.a.requests_per_cpu_s, self.b.requests_per_cpu_s),
        }
        out: dict[str, float | None] = {}
        for key, (x, y) in values.items():
            ok = x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
            out[key] = x / y if ok and y else None  # type: ignore[operator]
        return out

    def to_dict(self, *, latencies: bool = False) -> dict[str, Any]:
        """Return both runs and the ratios as a dict."""
        return {
            "a": self.a.to_dict(latencies=latencies),
            "b": self.b.to_dict(latencies=latencies),
            "ratios_a_over_b": self.ratios,
        }
