"""Publish-to-receive latency of the signal feed, measured against a consumer process.

A benchmark tool, not runtime: ``benchmarks/bench_serving.py`` runs :func:`roundtrip_latency`
(and ``docs/wire-format.md`` shows how to run it by hand).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from celeris.checks import check_int
from celeris.serving.errors import FeedError
from celeris.serving.feed import MAX_HORIZON, SignalPublisher, SignalSubscriber


@dataclass(frozen=True)
class LatencyReport:
    """Publish-to-receive latency of the feed, in microseconds.

    ``one_way`` runs from the start of :meth:`SignalPublisher.publish` to the moment a consumer
    in another process has decoded the record (both read the system-wide monotonic clock);
    ``round_trip`` adds the consumer's acknowledgement travelling back over a pipe.
    """

    n: int
    one_way_p50_us: float
    one_way_p99_us: float
    one_way_max_us: float
    round_trip_p50_us: float
    round_trip_p99_us: float
    round_trip_max_us: float


_ACK = struct.Struct("<Qq")


def _latency_consumer(path: str) -> None:
    """Child side of :func:`roundtrip_latency`: ack each record with (sequence, receive time)."""
    subscriber = SignalSubscriber(path, timeout_s=60.0)
    os.write(1, _ACK.pack(0, 0))  # ready: registered with the publisher
    for record in subscriber:
        os.write(1, _ACK.pack(record.sequence, time.monotonic_ns()))


def _read_fd_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise FeedError("the latency consumer process exited early")
        out += chunk
    return out


def roundtrip_latency(n: int = 2000, *, warmup: int = 200) -> LatencyReport:
    """Measure publish -> receive latency against a consumer in a separate process.

    Publishes ``warmup + n`` records one at a time (each after the previous one was
    acknowledged, so nothing queues) to a :class:`SignalSubscriber` in a child Python process
    and reports percentiles of the last ``n``.
    """
    n = check_int("n", n, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    import celeris

    src = str(Path(celeris.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    forecasts = np.linspace(-0.01, 0.01, MAX_HORIZON, dtype=np.float32).tolist()
    with tempfile.TemporaryDirectory(prefix="celeris-feed-") as tmp:
        path = os.path.join(tmp, "feed.sock")
        with SignalPublisher(path) as publisher:
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from celeris.bench.feed_latency import _latency_consumer; "
                    "_latency_consumer(sys.argv[1])",
                    path,
                ],
                stdout=subprocess.PIPE,
                env=env,
            )
            assert child.stdout is not None
            fd = child.stdout.fileno()
            try:
                _read_fd_exact(fd, _ACK.size)
                one_way = np.empty(n, dtype=np.int64)
                round_trip = np.empty(n, dtype=np.int64)
                for k in range(warmup + n):
                    t0 = time.monotonic_ns()
                    seq = publisher.publish(k % 500, 1, 0.5, forecasts)
                    ack_seq, t_recv = _ACK.unpack(_read_fd_exact(fd, _ACK.size))
                    t_back = time.monotonic_ns()
                    if ack_seq != seq:
                        raise FeedError(f"latency consumer acknowledged {ack_seq}, sent {seq}")
                    if k >= warmup:
                        one_way[k - warmup] = t_recv - t0
                        round_trip[k - warmup] = t_back - t0
            finally:
                publisher.close(linger_s=0.0)
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
                child.stdout.close()
    ow = one_way / 1e3
    rt = round_trip / 1e3
    return LatencyReport(
        n=n,
        one_way_p50_us=float(np.percentile(ow, 50)),
        one_way_p99_us=float(np.percentile(ow, 99)),
        one_way_max_us=float(ow.max()),
        round_trip_p50_us=float(np.percentile(rt, 50)),
        round_trip_p99_us=float(np.percentile(rt, 99)),
        round_trip_max_us=float(rt.max()),
    )
