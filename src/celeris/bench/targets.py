"""What to send: a loopback URL, the request bodies, and stamps that make every request unique.

A Celeris server caches answers per input window, so a body sent twice is answered the second
time from memory. A :class:`Target` with :class:`Stamps` writes a request counter into the last
values of every history of every request, so no two requests of a run - or of later runs of the
same target - repeat a window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, ClassVar

from pydantic import PrivateAttr, field_validator, model_validator

from celeris._settings import FrozenConfig, integer
from celeris.bench.config import LoadgenError
from celeris.bench.loopback import check_loopback
from celeris.checks import check_int
from celeris.errors import CelerisTypeError, ConfigError


class _Sequence:
    """A counter shared by every run of one target (so a later run never repeats a stamp)."""

    def __init__(self) -> None:
        self.value = 0


def _short_repr(value: object, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


class Stamps(FrozenConfig, kw_only=False):
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

    config_label: ClassVar[str] = "stamps"

    offsets: tuple[tuple[tuple[int, ...], ...], ...]
    radix: Annotated[int, integer()]

    @field_validator("offsets", mode="before")
    @classmethod
    def _offsets_as_tuples(cls, offsets: Any) -> Any:
        def nested(value: Any, where: str, depth: int) -> Any:
            if depth == 0:
                return check_int(where, value, minimum=0)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence):
                raise CelerisTypeError(
                    f"{where} must be a sequence (per body, per history, byte offsets), "
                    f"got {type(value).__name__} {value!r}"
                )
            return tuple(nested(v, f"{where}[{i}]", depth - 1) for i, v in enumerate(value))

        return nested(offsets, "offsets", 3)

    @field_validator("radix")
    @classmethod
    def _two_digits_or_a_byte(cls, radix: int) -> int:
        if radix not in (100, 256):
            raise ConfigError(
                f"radix must be 100 (two ASCII digits) or 256 (a byte), got {radix!r}"
            )
        return radix

    @model_validator(mode="after")
    def _a_site_per_history(self) -> Stamps:
        if not self.offsets or not all(rows and all(rows) for rows in self.offsets):
            raise ConfigError("stamps need at least one site per history of every body")
        return self

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


class Target(FrozenConfig, kw_only=False):
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

    A target is frozen; ``target.model_copy(update={"label": ...})`` gives a relabelled one
    that shares its request counter (so the copy does not repeat the original's stamps).
    """

    config_label: ClassVar[str] = "target"

    url: str
    bodies: tuple[bytes, ...] = ()
    content_type: str = "application/json"
    label: str = ""
    stamps: Stamps | None = None
    metrics_url: str | None = None
    _sequence: _Sequence = PrivateAttr(default_factory=_Sequence)

    @model_validator(mode="before")
    @classmethod
    def _label_defaults_to_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("label") and "url" in data:
            data = {**data, "label": data["url"]}
        return data

    @field_validator("url", "metrics_url")
    @classmethod
    def _loopback_only(cls, url: str | None) -> str | None:
        if url is not None:
            check_loopback(url)
        return url

    @field_validator("bodies", mode="before")
    @classmethod
    def _bodies_are_bytes(cls, bodies: Any) -> Any:
        if not isinstance(bodies, tuple) or not all(
            isinstance(b, bytes | bytearray) for b in bodies
        ):
            raise CelerisTypeError(
                f"bodies must be a tuple of bytes, got {type(bodies).__name__} "
                f"{_short_repr(bodies)}"
            )
        return tuple(bytes(b) for b in bodies)

    @model_validator(mode="after")
    def _stamps_fit_bodies(self) -> Target:
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
        return self

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
