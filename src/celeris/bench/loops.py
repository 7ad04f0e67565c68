"""The two ways of sending: a closed loop and an open loop (fixed arrival schedule).

Closed loop
    Each connection sends its next request as soon as the previous one is answered. When the
    server stalls, the client stops sending too: the requests that would have arrived during
    the stall are never made, and a 200 ms stall shows up as one slow sample per connection.
    This is *coordinated omission* (Gil Tene, "How NOT to Measure Latency", 2013; the reason
    wrk2 exists beside wrk): closed-loop percentiles understate what users arriving at a steady
    rate would see.

Open loop
    Request ``i`` is due at ``t0 + i / rate`` whatever happened before. It is sent on a free
    connection when it is due; when every connection is busy it waits for one and is counted
    as *behind schedule*. The latency of a request sent behind schedule runs from the time it
    was due, so time spent waiting - for a connection held by a stalled server, and then in
    the server's queue - is in the latency; a request sent on time (within
    ``SCHEDULE_SLACK_S`` of its due time) is timed from when it was written, so the event
    loop's millisecond timers do not add up to a millisecond to every sample. Requests written
    on time to a stalled server wait in its queue, which their latency shows as well. Requests due before the end of the run that
    could not be sent by then (every connection busy until the end) are counted as errors of
    kind ``"unsent"``, so a server that cannot keep up with the rate fails the error-rate
    target instead of disappearing from the figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable

from celeris.bench.client import Client, error_kind

# A send written more than this after its due time counts as behind schedule (and is timed from
# its due time): the event loop's timers are kept in whole milliseconds (uvloop), so a send can
# be up to ~1 ms late for the clock alone. Measured: timing every send from its due time gave
# a p50 of 0.9 ms against a server that answers in 0.08 ms.
SCHEDULE_SLACK_S = 0.001


@dataclasses.dataclass
class Tally:
    """What the measured requests of a run gave (filled in by a loop)."""

    issued: int = 0
    ok: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    latencies: list[float] = dataclasses.field(default_factory=list)
    behind_schedule: int = 0
    max_send_lag_s: float = 0.0

    def count_error(self, kind: str, n: int = 1) -> None:
        """Add ``n`` failures of ``kind`` (an HTTP status or a transport failure)."""
        self.errors[kind] = self.errors.get(kind, 0) + n


async def closed_loop(
    clients: list[Client],
    next_request: Callable[[], bytes],
    tally: Tally,
    *,
    max_requests: int,
    t_stop: float,
) -> None:
    """Send on every client, each again as soon as it is answered, until a cap is reached."""
    record = tally.latencies.append
    perf = time.perf_counter

    async def worker(client: Client) -> None:
        while tally.issued < max_requests and perf() < t_stop:
            tally.issued += 1
            raw = next_request()
            t0 = perf()
            try:
                status, _ = await client.send(raw)
            except Exception as exc:
                client.close()
                tally.count_error(error_kind(exc))
                continue
            if 200 <= status < 300:
                record(perf() - t0)
                tally.ok += 1
            else:
                tally.count_error(str(status))

    await asyncio.gather(*(worker(c) for c in clients))


async def open_loop(
    clients: list[Client],
    next_request: Callable[[], bytes],
    tally: Tally,
    *,
    rate: float,
    max_requests: int,
    t_start: float,
    duration_s: float,
) -> None:
    """Send request ``i`` at ``t_start + i / rate`` on a free client; a late one is timed from
    its due time.

    ``ceil(duration_s * rate)`` requests (at most ``max_requests``) are due. Sending stops at
    ``t_start + duration_s``: requests due by then but not yet sent count as ``"unsent"``
    errors. Requests in flight at the end are awaited (each for at most the client timeout).
    """
    perf = time.perf_counter
    t_stop = t_start + duration_s
    due_count = min(max_requests, max(1, math.ceil(duration_s * rate)))
    idle: asyncio.Queue[Client] = asyncio.Queue()
    for c in clients:
        idle.put_nowait(c)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(client: Client, raw: bytes, start: float) -> None:
        try:
            status, _ = await client.send(raw)
        except Exception as exc:
            client.close()
            tally.count_error(error_kind(exc))
            return
        finally:
            idle.put_nowait(client)
        if 200 <= status < 300:
            tally.latencies.append(perf() - start)
            tally.ok += 1
        else:
            tally.count_error(str(status))

    for i in range(due_count):
        due = t_start + i / rate
        wait = due - perf()
        if wait > 0:
            await asyncio.sleep(wait)
        free = await _free_client(idle, t_stop - perf())
        if free is None:  # every connection stayed busy until the end of the run
            tally.count_error("unsent", due_count - i)
            break
        raw = next_request()
        sent = perf()
        lag = sent - due
        if lag > SCHEDULE_SLACK_S:
            tally.behind_schedule += 1
        tally.max_send_lag_s = max(tally.max_send_lag_s, lag)
        tally.issued += 1
        start = due if lag > SCHEDULE_SLACK_S else sent
        task = asyncio.create_task(one(free, raw, start))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)


async def _free_client(idle: asyncio.Queue[Client], left_s: float) -> Client | None:
    """Return an idle client, waiting at most ``left_s`` seconds for one (``None``: none came)."""
    if not idle.empty():
        return idle.get_nowait()
    if left_s <= 0:
        return None
    try:
        return await asyncio.wait_for(idle.get(), left_s)
    except TimeoutError:
        return None
