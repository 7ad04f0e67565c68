"""The bounds and shape of one load-generator run, and the load generator's own error."""

from __future__ import annotations

import dataclasses
from typing import Any

from celeris.errors import CelerisError, ConfigError

MAX_REQUESTS = 10_000_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 4096
MAX_RATE = 1_000_000.0
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class LoadgenError(CelerisError, RuntimeError):
    """A run could not be carried out (for example the server's process vanished)."""


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """The bounds and shape of one run.

    Parameters
    ----------
    concurrency
        Connections, each with one request in flight at a time. Closed loop (no ``rate``):
        each sends its next request as soon as the previous one is answered. Open loop: the
        most requests in flight at once.
    max_requests
        Measured requests at most (warm-up requests not included).
    duration_s
        Seconds of sending at most; requests in flight at the end are awaited.
    warmup_requests
        Requests sent (over all connections) before measuring, not recorded; ``None``: one
        per connection, which opens every connection before the clock starts.
    timeout_s
        Longest wait for one answer (and for a connection); a request past it counts as a
        ``"timeout"`` error and its connection is reopened.
    rate
        ``None``: closed loop. A number: open loop at this many requests per second on a fixed
        schedule (request ``i`` is due at ``i / rate`` seconds), each request's latency measured
        from the time it was due, so time a request waited for a free connection (a stalled
        server) counts; see :mod:`celeris.bench.loops`.
    """

    concurrency: int = 1
    max_requests: int = 1000
    duration_s: float = 10.0
    warmup_requests: int | None = None
    timeout_s: float = 10.0
    rate: float | None = None

    def __post_init__(self) -> None:
        int_in("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        int_in("max_requests", self.max_requests, 1, MAX_REQUESTS)
        if self.warmup_requests is not None:
            int_in("warmup_requests", self.warmup_requests, 0, MAX_REQUESTS)
        float_in("duration_s", self.duration_s, 0.0, MAX_DURATION_S)
        float_in("timeout_s", self.timeout_s, 0.0, 600.0)
        if self.rate is not None:
            float_in("rate", self.rate, 0.0, MAX_RATE)

    @property
    def warmup(self) -> int:
        """Warm-up requests actually sent."""
        return self.concurrency if self.warmup_requests is None else self.warmup_requests


def int_in(name: str, value: Any, low: int, high: int) -> None:
    """Raise :class:`ConfigError` unless ``value`` is an int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low:,}, {high:,}], got {value!r}")


def float_in(name: str, value: Any, low: float, high: float) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number (not a bool) in ``(low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise ConfigError(f"{name} must be a number in ({low:g}, {high:g}], got {value!r}")
