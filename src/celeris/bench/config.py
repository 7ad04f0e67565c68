"""The bounds and shape of one load-generator run, and the load generator's own error."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from celeris._settings import FrozenConfig, integer, number
from celeris.checks import check_int
from celeris.errors import CelerisError

MAX_REQUESTS = 10_000_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 4096
MAX_RATE = 1_000_000.0
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class LoadgenError(CelerisError, RuntimeError):
    """A run could not be carried out (for example the server's process vanished)."""


class LoadConfig(FrozenConfig, kw_only=False):
    """The bounds and shape of one run (frozen; see :class:`~celeris._settings.FrozenConfig`).

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

    config_label: ClassVar[str] = "load"

    concurrency: Annotated[int, integer(ge=1, le=MAX_CONCURRENCY)] = 1
    max_requests: Annotated[int, integer(ge=1, le=MAX_REQUESTS)] = 1000
    duration_s: Annotated[float, number(gt=0.0, le=MAX_DURATION_S)] = 10.0
    warmup_requests: Annotated[int | None, integer(ge=0, le=MAX_REQUESTS)] = None
    timeout_s: Annotated[float, number(gt=0.0, le=600.0)] = 10.0
    rate: Annotated[float | None, number(gt=0.0, le=MAX_RATE)] = None

    @property
    def warmup(self) -> int:
        """Warm-up requests actually sent."""
        return self.concurrency if self.warmup_requests is None else self.warmup_requests


def int_in(name: str, value: Any, low: int, high: int) -> None:
    """Check that ``value`` is an integer in ``[low, high]`` (:func:`celeris.checks.check_int`).

    Raises
    ------
    CelerisTypeError
        ``value`` is not an integer (a bool, a float, a string).
    ConfigError
        ``value`` is outside ``[low, high]``.
    """
    check_int(name, value, minimum=low, maximum=high)
