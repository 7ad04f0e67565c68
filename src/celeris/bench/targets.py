"""What to send: a loopback URL, the request bodies, and stamps that make every request unique.

A Celeris server caches answers per input window, so a body sent twice is answered the second
time from memory. A :class:`Target` with :class:`Stamps` writes a request counter into the last
values of every history of every request, so no two requests of a run - or of later runs of the
same target - repeat a window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from celeris.bench.config import LoadgenError
from celeris.bench.loopback import check_loopback
from celeris.errors import ConfigError


class _Sequence:
    """A counter shared by every run of one target (so a later run never repeats a stamp)."""

    def __init__(self) -> None:
        self.value = 0


@dataclasses.dataclass(frozen=True)
class Stamps:
    """Where a request counter is written into each body so that no two requests repeat.

    A Celeris server caches answers per history (the input window), so the counter goes into
    every history of a body: request ``k`` writes ``k`` in base ``radix`` over each history's
    sites, least significant digit first.

    Parameters
    ----------
    offsets
        Per body, per history, the byte offsets (in the body) of that history's sites.
    radix
        100: each site is two ASCII digits (the last two decimals of a JSON number, a change
        of at most 0.0099); 256: each site is one byte (the low mantissa byte of a
        little-endian float32, a relative change below 2**-15).
    """

    offsets: tuple[tuple[tuple[int, ...], ...], ...]
    radix: int

    def __post_init__(self) -> None:
        if self.radix not in (100, 256):
            raise ConfigError(
                f"radix must be 100 (two ASCII digits) or 256 (a byte), got {self.radix!r}"
            )
        if not self.offsets or not all(rows and all(rows) for rows in self.offsets):
            raise ConfigError("stamps need at least one site per history of every body")

    @property
    def capacity(self) -> int:
        """Distinct stamps: ``radix ** sites`` of the history with the fewest sites."""
        sites = min(len(row) for rows in self.offsets for row in rows)
        return int(self.radix**sites)

    def digits(self) -> list[bytes]:
        """The bytes written for each digit value."""
        if self.radix == 100:
            return [f"{d:02d}".encode() for d in range(100)]
        return [bytes((d,)) for d in range(256)]


@dataclasses.dataclass(frozen=True)
class Target:
    """What to send: a loopback URL and the request bodies to cycle through.

    Parameters
    ----------
    url
        ``http://127.0.0.1:PORT/path`` (loopback only, checked here).
    bodies
        Request bodies, sent in turn; none: ``GET`` requests. A server with a response cache
        answers a repeated body from the cache: give ``stamps`` to make every request unique.
    content_type
        ``Content-Type`` of the bodies.
    label
        Name of the target in reports (default: the URL).
    stamps
        Where to write a request counter into each body (see :class:`Stamps`); ``None``: the
        bodies are sent as they are.
    metrics_url
        The server's Prometheus endpoint (``http://127.0.0.1:PORT/metrics``, loopback): its
        cache counters are read before and after the measured requests and the run reports
        the cache-hit ratio (:class:`CacheStats`). ``None``: not read.
    """

    url: str
    bodies: tuple[bytes, ...] = ()
    content_type: str = "application/json"
    label: str = ""
    stamps: Stamps | None = None
    metrics_url: str | None = None
    _sequence: _Sequence = dataclasses.field(default_factory=_Sequence, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_loopback(self.url)
        if not isinstance(self.bodies, tuple) or not all(
            isinstance(b, bytes | bytearray) for b in self.bodies
        ):
            raise ConfigError("bodies must be a tuple of bytes")
        if self.stamps is not None:
            if len(self.stamps.offsets) != len(self.bodies):
                raise ConfigError(
                    f"stamps give sites for {len(self.stamps.offsets)} bodies, the target has "
                    f"{len(self.bodies)}"
                )
            width = 2 if self.stamps.radix == 100 else 1
            for body, rows in zip(self.bodies, self.stamps.offsets, strict=True):
                if any(not 0 <= o <= len(body) - width for row in rows for o in row):
                    raise ConfigError("a stamp site lies outside its body")
        if self.metrics_url is not None:
            check_loopback(self.metrics_url)
        if not self.label:
            object.__setattr__(self, "label", self.url)

    @property
    def method(self) -> str:
        """``POST`` with bodies, else ``GET``."""
        return "POST" if self.bodies else "GET"

    @property
    def unique_left(self) -> int | None:
        """Requests this target can still make unique (``None``: no stamps)."""
        if self.stamps is None:
            return None
        return self.stamps.capacity - self._sequence.value

    def raw_requests(self) -> list[bytes]:
        """Return the complete HTTP/1.1 request bytes, one per body (one GET without bodies)."""
        host, port, path = check_loopback(self.url)
        shown = f"[{host}]" if ":" in host else host
        head = f"{self.method} {path} HTTP/1.1\r\nHost: {shown}:{port}\r\nUser-Agent: celeris-bench\r\n"
        if not self.bodies:
            return [(head + "\r\n").encode("latin-1")]
        return [
            (
                head + f"Content-Type: {self.content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1")
            + bytes(body)
            for body in self.bodies
        ]

    def request_source(self) -> Callable[[], bytes]:
        """Return a function that gives the next request's bytes (stamped when asked).

        Without stamps the bodies are cycled; with stamps every call writes the next value of
        the target's counter into the body, so no request repeats another of any run of this
        target.
        """
        raws = self.raw_requests()
        n = len(raws)
        seq = self._sequence
        if self.stamps is None:

            def cycle() -> bytes:
                k = seq.value
                seq.value = k + 1
                return raws[k % n]

            return cycle
        radix = self.stamps.radix
        digits = self.stamps.digits()
        width = len(digits[0])
        capacity = self.stamps.capacity
        sites = [
            [tuple(len(raw) - len(body) + o for o in row) for row in rows]
            for raw, body, rows in zip(raws, self.bodies, self.stamps.offsets, strict=True)
        ]

        def stamped() -> bytes:
            k = seq.value
            if k >= capacity:
                raise LoadgenError(
                    f"every request unique: the {capacity:,} stamps of this target are used up"
                )
            seq.value = k + 1
            i = k % n
            buf = bytearray(raws[i])
            for row in sites[i]:
                q = k
                for o in row:
                    q, d = divmod(q, radix)
                    buf[o : o + width] = digits[d]
            return bytes(buf)

        return stamped
