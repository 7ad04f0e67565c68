"""A bounded HTTP load generator for loopback servers, with SLA checks and reports.

Modes
    :func:`latency`  one connection, one request at a time (concurrency 1): the latency an idle
                     server gives a single client.
    :func:`load`     a fixed number of connections, each sending its next request as soon as
                     the previous one is answered (a closed loop).
    :func:`stress`   :func:`load` at growing concurrency until a step breaches the SLA; reports
                     the last step that passed.
    :func:`compare`  the same load against two targets (two servers, or two models of one
                     server), side by side with ratios ``a / b``.

Every run is bounded twice: at most ``max_requests`` measured requests and at most
``duration_s`` seconds of sending (a request in flight at the time cap is still awaited, for at
most ``timeout_s``). Only loopback targets are accepted (``127.0.0.0/8``, ``::1``,
``localhost`` resolving to loopback): the tool cannot be pointed at somebody else's server.

What is measured
    Latency is the time from writing a request to having read its whole response, for the
    requests answered with a 2xx status; throughput counts those successful answers per second
    of wall time (from the first measured request to the last answer). Anything else is an
    error, counted by HTTP status (``"429"``, ``"503"``...) or by transport failure
    (``"timeout"``, ``"connection"``, ``"protocol"``). Given the server's process id, the
    server's CPU time over the run (the process and all its descendants, from psutil) gives
    requests per server CPU-second; processes that exit during the run are not counted.

Measuring the model, not the cache
    A Celeris server caches answers per input window, so a body sent twice is answered the
    second time from memory. A :class:`Target` with :class:`Stamps` (what :func:`predict_target`
    builds by default) writes a request counter into the last values of every history of every
    request, so no two requests of a run - or of later runs of the same target - repeat a
    window. Given ``metrics_url`` (the CLI always gives ``/metrics`` of the target's server),
    the server's ``celeris_cache_events_total`` counters are read right before and right after
    the measured requests and the run reports the share of looked-up rows answered from a cache
    (:class:`CacheStats`); other traffic to the server in that time counts too.

Why a hand-written HTTP/1.1 client
    On the 2-core development machine ``httpx.AsyncClient`` spent ~700 us of client CPU per
    request (p50 ~0.8-1.0 ms against a trivial server) and a raw :class:`asyncio.Protocol`
    client ~35 us (p50 ~0.1 ms): with the client and the server sharing two cores, httpx would
    have measured mostly itself. The client here keeps one keep-alive connection per concurrent
    worker, writes prebuilt request bytes and parses ``Content-Length`` and chunked responses
    (it never pipelines). It runs on uvloop when installed.

Reports
    :func:`render_table`, :func:`render_compare`, :func:`render_stress` (rich tables),
    :func:`report_dict` (JSON-ready) and :func:`plot_latency` (PNG: latency histogram and CDF
    per run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import itertools
import math
import os
import resource
import socket
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from celeris.data.atomic import atomic_path
from celeris.errors import CelerisError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

__all__ = [
    "SLA",
    "CacheStats",
    "CompareResult",
    "LoadConfig",
    "LoadgenError",
    "ProcessTreeCPU",
    "RunResult",
    "SLACheck",
    "SLAVerdict",
    "Stamps",
    "StressResult",
    "Target",
    "check_loopback",
    "compare",
    "latency",
    "load",
    "model_shape",
    "parse_cache_counters",
    "plot_latency",
    "predict_bodies",
    "predict_target",
    "render_compare",
    "render_stress",
    "render_table",
    "report_dict",
    "run_async",
    "stress",
]

T = TypeVar("T")

MAX_REQUESTS = 10_000_000
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 4096
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LOOPBACK_HELP = "127.0.0.0/8, ::1 or localhost"


class LoadgenError(CelerisError, RuntimeError):
    """A run could not be carried out (for example the server's process vanished)."""


# -- targets ---------------------------------------------------------------------------------


def check_loopback(url: str) -> tuple[str, int, str]:
    """Return ``(host, port, path)`` of an ``http://`` URL on a loopback address.

    ``localhost`` is resolved and every address it resolves to must be loopback; any other
    host name is refused without a lookup.

    Raises
    ------
    ConfigError
        The URL is not ``http://``, or its host is not loopback.
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"the URL must be a non-empty string, got {url!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ConfigError(
            f"only http:// URLs on a loopback address are supported, got {url!r}"
            + (" (run against the server's local http port)" if parts.scheme == "https" else "")
        )
    host = parts.hostname
    if not host:
        raise ConfigError(f"the URL {url!r} has no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"the URL {url!r} has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if host.lower() == "localhost":
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"cannot resolve localhost: {exc}") from None
        addresses = {str(info[4][0]) for info in infos}
        if not addresses or not all(_is_loopback(a) for a in addresses):
            raise ConfigError(
                f"localhost resolves to {', '.join(sorted(addresses))}, not only loopback; "
                "use 127.0.0.1"
            )
        return host, port, path
    if not _is_loopback(host):
        raise ConfigError(
            f"refusing to send load to {host}: the load generator only targets loopback "
            f"addresses ({_LOOPBACK_HELP}) so it cannot be pointed at someone else's server"
        )
    return host, port, path


def _is_loopback(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


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


def model_shape(base_url: str, model: str, *, timeout_s: float = 10.0) -> tuple[int, int]:
    """Ask a Celeris server (``GET /v1/models``) for ``model``'s ``(input_size, n_features)``."""
    import json
    import urllib.error
    import urllib.request

    host, port, _ = check_loopback(base_url)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            doc = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the model list from {url} ({getattr(exc, 'reason', exc)}); give "
            "--input-size and --n-features, or --body-file"
        ) from None
    names = []
    for entry in doc.get("models", []):
        names.append(str(entry.get("name")))
        if entry.get("name") == model:
            return int(entry["input_size"]), int(entry["n_features"])
    from celeris.errors import did_you_mean

    raise ConfigError(
        f"{url} does not serve a model named {model!r}{did_you_mean(model, names)}; "
        f"served: {', '.join(names) or 'none'}"
    )


def _random_walks(
    input_size: int, n_features: int, rows: int, distinct: int, fmt: str, seed: int | None
) -> list[np.ndarray]:
    """Return ``distinct`` arrays ``[rows, input_size, n_features]`` of random walks near 100."""
    for name, value, top in (
        ("input_size", input_size, 1_000_000),
        ("n_features", n_features, 100_000),
        ("rows", rows, 100_000),
        ("distinct", distinct, 100_000),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ConfigError(f"{name} must be an integer in [1, {top}], got {value!r}")
    if fmt not in ("json", "msgpack"):
        raise ConfigError(f"fmt must be 'json' or 'msgpack', got {fmt!r}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(distinct):
        steps = rng.standard_normal((rows, input_size, n_features)) * 0.5
        out.append(np.round(100.0 + steps.cumsum(axis=1), 4))  # [rows, L, C]
    return out


def predict_bodies(
    input_size: int,
    n_features: int,
    *,
    rows: int = 1,
    distinct: int = 1,
    fmt: str = "json",
    priority: str | None = None,
    seed: int | None = 0,
) -> tuple[tuple[bytes, ...], str]:
    """Return ``(bodies, content_type)`` of ``POST /v1/models/{name}/predict`` requests.

    Each body holds ``rows`` random-walk histories ``[rows, input_size, n_features]`` around 100
    (4 decimals in JSON); ``fmt="msgpack"`` sends them as a binary float32 array, which the
    server reads without parsing numbers. ``distinct`` different bodies are made: a server with
    a response cache answers a repeated one from the cache (see :func:`predict_target` for
    bodies that never repeat).
    """
    bodies = []
    for x in _random_walks(input_size, n_features, rows, distinct, fmt, seed):
        doc: dict[str, Any]
        if fmt == "json":
            import orjson

            doc = {"inputs": x}
            if priority is not None:
                doc["priority"] = priority
            bodies.append(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
        else:
            import msgpack

            arr = x.astype("<f4")
            doc = {"inputs": {"shape": list(arr.shape), "dtype": "<f4", "data": arr.tobytes()}}
            if priority is not None:
                doc["priority"] = priority
            bodies.append(msgpack.packb(doc))
    content_type = "application/json" if fmt == "json" else "application/msgpack"
    return tuple(bodies), content_type


# Sites per history: 100**5 (JSON) or 256**5 (msgpack) stamps, far above MAX_REQUESTS.
STAMP_SITES = 5
# JSON stamps change the 3rd-4th decimals, which float32 (what the server computes in) tells
# apart only below 2**10; sites are chosen among values under this magnitude.
_JSON_STAMP_MAX = 1000.0


def _stamped_json(x: np.ndarray, priority: str | None) -> tuple[bytes, tuple[tuple[int, ...], ...]]:
    """Return a JSON predict body of ``x [rows, L, C]`` (4 decimals) and its stamp sites."""
    rows, length, width = x.shape
    parts: list[str] = ['{"inputs":[']
    pos = len(parts[0])
    offsets = []
    for r in range(rows):
        flat = x[r].ravel()
        small = np.flatnonzero(np.abs(flat) < _JSON_STAMP_MAX)[::-1][:STAMP_SITES]
        if small.size == 0:
            raise ConfigError("cannot stamp a history whose values are all 1000 or more")
        chosen = set(small.tolist())
        row_sites = []
        head = ("," if r else "") + "["
        parts.append(head)
        pos += len(head)
        for i in range(length):
            bar = ("," if i else "") + "["
            parts.append(bar)
            pos += len(bar)
            for j in range(width):
                if j:
                    parts.append(",")
                    pos += 1
                text = f"{flat[i * width + j]:.4f}"
                if i * width + j in chosen:
                    row_sites.append((i * width + j, pos + len(text) - 2))
                parts.append(text)
                pos += len(text)
            parts.append("]")
            pos += 1
        parts.append("]")
        pos += 1
        # least significant digit on the newest value
        offsets.append(tuple(o for _, o in sorted(row_sites, reverse=True)))
    parts.append("]")
    if priority is not None:
        parts.append(f',"priority":"{priority}"')
    parts.append("}")
    return "".join(parts).encode(), tuple(offsets)


def _stamped_msgpack(
    x: np.ndarray, priority: str | None
) -> tuple[bytes, tuple[tuple[int, ...], ...]]:
    """Return a msgpack predict body of ``x [rows, L, C]`` (float32) and its stamp sites."""
    import msgpack

    arr = np.ascontiguousarray(x.astype("<f4"))
    data = arr.tobytes()
    doc: dict[str, Any] = {} if priority is None else {"priority": priority}
    # the binary array last, so its bytes end the message
    doc["inputs"] = {"shape": list(arr.shape), "dtype": "<f4", "data": data}
    body = msgpack.packb(doc)
    start = len(body) - len(data)
    if body[start:] != data:  # pragma: no cover - msgpack keeps insertion order
        raise LoadgenError("the float32 array does not end the msgpack body")
    rows, length, width = arr.shape
    per_row = length * width
    offsets = tuple(
        tuple(
            start + 4 * (r * per_row + j)  # little-endian: the first byte is the lowest
            for j in range(per_row - 1, max(per_row - 1 - STAMP_SITES, -1), -1)
        )
        for r in range(rows)
    )
    return body, offsets


def predict_target(
    url: str,
    input_size: int,
    n_features: int,
    *,
    rows: int = 1,
    distinct: int | None = None,
    fmt: str = "json",
    priority: str | None = None,
    seed: int | None = None,
    label: str = "",
    metrics_url: str | None = None,
) -> Target:
    """Return a :class:`Target` of ``POST /v1/models/{name}/predict`` requests.

    By default (``distinct=None``) every request is unique: one random-walk body whose
    histories carry a request counter in their last values (:class:`Stamps`), so a server's
    response cache never answers and the run measures computation. ``distinct=N`` cycles
    through ``N`` fixed bodies instead (a server with a cache then answers all but the first
    ``N`` from it: that measures the cache). ``seed=None`` draws fresh bodies, so a second run
    against the same server does not meet the first run's answers in its cache.
    """
    if distinct is not None:
        bodies, ctype = predict_bodies(
            input_size, n_features, rows=rows, distinct=distinct, fmt=fmt,
            priority=priority, seed=seed,
        )  # fmt: skip
        return Target(url, bodies, ctype, label, metrics_url=metrics_url)
    x = _random_walks(input_size, n_features, rows, 1, fmt, seed)[0]
    body, offsets = (_stamped_json if fmt == "json" else _stamped_msgpack)(x, priority)
    ctype = "application/json" if fmt == "json" else "application/msgpack"
    stamps = Stamps((offsets,), 100 if fmt == "json" else 256)
    return Target(url, (body,), ctype, label, stamps=stamps, metrics_url=metrics_url)


# -- configuration and SLA -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadConfig:
    """The bounds and shape of one run.

    Parameters
    ----------
    concurrency
        Connections, each with one request in flight at a time (closed loop).
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
    """

    concurrency: int = 1
    max_requests: int = 1000
    duration_s: float = 10.0
    warmup_requests: int | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _int_in("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        _int_in("max_requests", self.max_requests, 1, MAX_REQUESTS)
        if self.warmup_requests is not None:
            _int_in("warmup_requests", self.warmup_requests, 0, MAX_REQUESTS)
        _float_in("duration_s", self.duration_s, 0.0, MAX_DURATION_S)
        _float_in("timeout_s", self.timeout_s, 0.0, 600.0)

    @property
    def warmup(self) -> int:
        """Warm-up requests actually sent."""
        return self.concurrency if self.warmup_requests is None else self.warmup_requests


def _int_in(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low:,}, {high:,}], got {value!r}")


def _float_in(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low < value <= high:
        raise ConfigError(f"{name} must be a number in ({low:g}, {high:g}], got {value!r}")


@dataclasses.dataclass(frozen=True)
class SLA:
    """Service-level targets a run must meet; ``None`` skips a target.

    Defaults: p50 <= 50 ms, p95 <= 80 ms, p99 <= 100 ms, >= 200 successful requests/s, <= 1%
    errors.
    """

    p50_ms: float | None = 50.0
    p95_ms: float | None = 80.0
    p99_ms: float | None = 100.0
    min_throughput: float | None = 200.0
    max_error_rate: float | None = 0.01

    def __post_init__(self) -> None:
        for name in ("p50_ms", "p95_ms", "p99_ms", "min_throughput"):
            value = getattr(self, name)
            if value is not None:
                _float_in(name, value, 0.0, math.inf)
        rate = self.max_error_rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1
        ):
            raise ConfigError(f"max_error_rate must be a fraction in [0, 1], got {rate!r}")

    def check(self, result: RunResult) -> SLAVerdict:
        """Return whether ``result`` meets every target, with a reason for each miss."""
        checks: list[SLACheck] = []
        pct = result.percentiles_ms()
        for name in ("p50", "p95", "p99"):
            target = getattr(self, f"{name}_ms")
            if target is not None:
                actual = pct[name]
                checks.append(
                    SLACheck(f"{name} latency", "<=", target, actual, "ms", actual <= target)
                )
        if self.min_throughput is not None:
            checks.append(
                SLACheck(
                    "throughput",
                    ">=",
                    self.min_throughput,
                    result.throughput,
                    "req/s",
                    result.throughput >= self.min_throughput,
                )
            )
        if self.max_error_rate is not None:
            checks.append(
                SLACheck(
                    "error rate",
                    "<=",
                    self.max_error_rate,
                    result.error_rate,
                    "",
                    result.error_rate <= self.max_error_rate,
                )
            )
        reasons = [c.reason for c in checks if not c.passed]
        if result.ok == 0:
            reasons.insert(0, "no successful responses")
        return SLAVerdict(not reasons, tuple(checks), tuple(reasons))

    def to_dict(self) -> dict[str, Any]:
        """Return the targets as a dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SLACheck:
    """One SLA target against what was measured (NaN never passes)."""

    name: str
    op: str
    target: float
    actual: float
    unit: str
    passed: bool

    @property
    def reason(self) -> str:
        """The check as text, e.g. ``"p99 latency 132.4 ms > 100 ms"``."""
        if self.name == "error rate":
            shown, goal = f"{self.actual:.2%}", f"{self.target:.2%}"
        else:
            shown = "n/a" if math.isnan(self.actual) else f"{self.actual:.4g}"
            goal = f"{self.target:g}"
        unit = f" {self.unit}" if self.unit else ""
        op = self.op if self.passed else {"<=": ">", ">=": "<"}[self.op]
        return f"{self.name} {shown}{unit} {op} {goal}{unit}"

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a dict (NaN as None)."""
        d = dataclasses.asdict(self)
        d["actual"] = _finite(self.actual)
        d["reason"] = self.reason
        return d


@dataclasses.dataclass(frozen=True)
class SLAVerdict:
    """Pass or fail, every check, and the reasons of the failures."""

    passed: bool
    checks: tuple[SLACheck, ...]
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as a dict."""
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }


# -- results ---------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """The server's response cache over the measured requests (its ``/metrics`` counters).

    Attributes
    ----------
    lookups
        Histories (rows) looked up in the first cache tier; ``None`` when the counters could
        not be read.
    hits
        Histories answered from any tier (memory, or Redis after a memory miss).
    note
        Why there is no ratio (counters unavailable, or no look-ups: the cache is off).
    """

    lookups: int | None
    hits: int | None
    note: str = ""

    @property
    def hit_ratio(self) -> float | None:
        """``hits / lookups``; ``None`` without look-ups or counters."""
        if not self.lookups or self.hits is None:
            return None
        return self.hits / self.lookups

    def text(self) -> str:
        """The ratio for a table: ``"0.0%"``, ``"off"`` (no look-ups) or ``"n/a"``."""
        ratio = self.hit_ratio
        if ratio is not None:
            return f"{ratio:.1%}"
        return "off" if self.lookups == 0 else "n/a"

    def to_dict(self) -> dict[str, Any]:
        """Return the counts, the ratio and the note as a dict."""
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_ratio": self.hit_ratio,
            "note": self.note,
        }


_CACHE_SAMPLE = "celeris_cache_events_total{"
_CACHE_FAMILY = "# TYPE celeris_cache_events_total counter"


def parse_cache_counters(text: str) -> dict[tuple[str, str], float] | None:
    """Return ``{(tier, result): count}`` of ``celeris_cache_events_total`` in a Prometheus
    text exposition; ``None`` when the family is absent (not a Celeris server)."""
    if _CACHE_FAMILY not in text and _CACHE_SAMPLE not in text:
        return None
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(_CACHE_SAMPLE):
            continue
        labels_text, _, value = line[len(_CACHE_SAMPLE) :].partition("}")
        labels = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (p.partition("=") for p in labels_text.split(",") if p)
        )
        try:
            count = float(value.split()[0])
        except (IndexError, ValueError):
            raise LoadgenError(f"unreadable cache counter line {line[:120]!r}") from None
        key = (labels.get("tier", ""), labels.get("result", ""))
        out[key] = out.get(key, 0.0) + count
    return out


async def _read_cache_counters(url: str, timeout_s: float) -> dict[tuple[str, str], float] | str:
    """GET the server's ``/metrics`` and return its cache counters, or why not."""
    host, port, path = check_loopback(url)
    shown = f"[{host}]" if ":" in host else host
    raw = (
        f"GET {path} HTTP/1.1\r\nHost: {shown}:{port}\r\nUser-Agent: celeris-bench\r\n\r\n"
    ).encode("latin-1")
    client = _Client(host, port, timeout_s)
    try:
        status, body = await client.send(raw)
    except Exception as exc:
        return f"cannot read {url} ({_error_kind(exc)})"
    finally:
        client.close()
    if status != 200:
        return f"no metrics at {url} (HTTP {status})"
    counters = parse_cache_counters(body.decode("utf-8", "replace"))
    if counters is None:
        return f"{url} exports no celeris_cache_events_total"
    return counters


def _cache_delta(
    before: dict[tuple[str, str], float] | str, after: dict[tuple[str, str], float] | str
) -> CacheStats:
    if isinstance(before, str) or isinstance(after, str):
        return CacheStats(None, None, before if isinstance(before, str) else str(after))

    def d(tier: str, result: str) -> int:
        return int(after.get((tier, result), 0.0) - before.get((tier, result), 0.0))

    lookups = d("memory", "hit") + d("memory", "miss")
    hits = d("memory", "hit") + d("redis", "hit")
    note = "" if lookups else "no cache look-ups: the server's cache is off"
    return CacheStats(lookups, hits, note)


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
            "latency_ms": {k: _finite(v) for k, v in self.percentiles_ms().items()},
            "server_cpu_s": self.server_cpu_s,
            "requests_per_server_cpu_s": None if rpc is None else _finite(rpc),
            "client_cpu_s": self.client_cpu_s,
            "warmup": self.warmup,
            "started_at": self.started_at,
            "cache": None if self.cache is None else self.cache.to_dict(),
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


# -- server CPU ------------------------------------------------------------------------------


class ProcessTreeCPU:
    """CPU time of a process and all its descendants (psutil), for requests per CPU-second."""

    def __init__(self, pid: int) -> None:
        import psutil

        _int_in("server pid", pid, 1, 2**31 - 1)
        try:
            self._root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise ConfigError(f"no process with id {pid} (the server's PID)") from None
        except psutil.AccessDenied:
            raise ConfigError(f"not allowed to read process {pid}'s CPU times") from None
        self.pid = pid

    def snapshot(self) -> dict[tuple[int, float], float]:
        """Return ``{(pid, create_time): user + system CPU seconds}`` of the live tree."""
        import psutil

        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.NoSuchProcess:
            raise LoadgenError(f"the server process {self.pid} is gone") from None
        out = {}
        for p in procs:
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    out[(p.pid, p.create_time())] = float(t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # exited between the listing and the read
        return out

    @staticmethod
    def delta(
        before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]
    ) -> float:
        """CPU seconds spent between two snapshots by the processes alive at the second."""
        return sum(max(0.0, cpu - before.get(key, 0.0)) for key, cpu in after.items())


# -- the HTTP client -------------------------------------------------------------------------


class _ProtocolError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = True
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._buf = bytearray()
        # parsed head of the response being read: status, length, chunked, close, body start
        self._head: tuple[int, int | None, bool, bool, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            self._parse()
        except _ProtocolError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            head = self._head
            if head is not None and head[1] is None and not head[2]:
                # no length and not chunked: the body ends where the connection does
                w.set_result((head[0], bytes(self._buf[head[4] :])))
            else:
                w.set_exception(ConnectionError("the server closed the connection"))
        self._buf.clear()
        self._head = None

    def _fail(self, exc: BaseException) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        self.close()

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _parse(self) -> None:
        w = self.waiter
        if w is None or w.done():
            return
        buf = self._buf
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise _ProtocolError("response headers too large")
                return
            self._head = _parse_head(bytes(buf[:end]), end + 4)
        status, length, chunked, close, start = self._head
        if length is not None:
            stop = start + length
            if len(buf) < stop:
                return
            body = bytes(buf[start:stop])
        elif chunked:
            found = _parse_chunked(buf, start)
            if found is None:
                return
            body, stop = found
        else:
            return  # read until the server closes (connection_lost)
        del buf[:stop]
        self._head = None
        if close:
            self.close()
        w.set_result((status, body))


def _parse_head(head: bytes, body_start: int) -> tuple[int, int | None, bool, bool, int]:
    """Return ``(status, content_length, chunked, close, body_start)`` of a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise _ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise _ProtocolError(f"bad status code {parts[1][:10]!r}") from None
    length: int | None = None
    chunked = False
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise _ProtocolError(f"bad Content-Length {value[:20]!r}") from None
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            v = value.strip().lower()
            close = v == b"close" or (close and v != b"keep-alive")
    if chunked:
        length = None
    if status in (204, 304) or 100 <= status < 200:
        length, chunked = 0, False
    return status, length, chunked, close, body_start


def _parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Return ``(body, end)`` of a complete chunked body at ``buf[start:]``, else None."""
    pos = start
    parts: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            # optional trailers end with an empty line
            end = buf.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return None
            return b"".join(parts), end + 4
        if len(buf) < pos + size + 2:
            return None
        parts.append(bytes(buf[pos : pos + size]))
        pos += size + 2


class _Client:
    """A worker's connection: reopened after an error, with a per-request timeout."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.conn: _Connection | None = None

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        conn = self.conn
        if conn is None or conn.closed:
            conn = await self._connect(loop)
        fut: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        conn.waiter = fut
        assert conn.transport is not None
        conn.transport.write(raw)
        handle = loop.call_later(self.timeout_s, _expire, fut, conn)
        try:
            return await fut
        finally:
            handle.cancel()
            conn.waiter = None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        # a connect past the timeout raises TimeoutError, counted as "timeout"
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.host, self.port), self.timeout_s
        )
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = conn
        return conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _expire(fut: asyncio.Future[Any], conn: _Connection) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no answer in time"))
        conn.close()  # the late answer would be read as the next request's


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, _ProtocolError):
        return "protocol"
    return "connection"


# -- running ---------------------------------------------------------------------------------


async def run_async(
    target: Target,
    config: LoadConfig,
    *,
    server_pid: int | None = None,
    mode: str = "load",
) -> RunResult:
    """Run ``config`` against ``target`` in the running event loop; return what it measured.

    See the module docstring for what is measured. Use :func:`latency`, :func:`load`,
    :func:`stress` or :func:`compare` from synchronous code.
    """
    if not isinstance(target, Target):
        raise ConfigError(f"target must be a Target, got {type(target).__name__}")
    if not isinstance(config, LoadConfig):
        raise ConfigError(f"config must be a LoadConfig, got {type(config).__name__}")
    host, port, _ = check_loopback(target.url)
    left = target.unique_left
    if left is not None and left < config.warmup + config.max_requests:
        raise ConfigError(
            f"this target can make {left:,} more unique requests, fewer than the "
            f"{config.warmup + config.max_requests:,} asked (warm-up included); lower "
            "max_requests or cycle fixed bodies (distinct=N)"
        )
    next_request = target.request_source()
    cpu = ProcessTreeCPU(server_pid) if server_pid is not None else None
    clients = [_Client(host, port, config.timeout_s) for _ in range(config.concurrency)]
    try:
        # Warm-up: open the connections and warm the server; nothing recorded.
        warm_left = config.warmup

        async def warm(client: _Client) -> None:
            nonlocal warm_left
            while warm_left > 0:
                warm_left -= 1
                try:
                    await client.send(next_request())
                except Exception:
                    client.close()

        await asyncio.gather(*(warm(c) for c in clients))
        metrics_url = target.metrics_url
        cache_before = (
            await _read_cache_counters(metrics_url, config.timeout_s)
            if metrics_url is not None
            else None
        )

        issued = 0
        ok = 0
        errors: dict[str, int] = {}
        latencies: list[float] = []
        record = latencies.append
        perf = time.perf_counter
        cpu_before = cpu.snapshot() if cpu is not None else None
        usage_before = resource.getrusage(resource.RUSAGE_SELF)
        started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        t_start = perf()
        t_stop = t_start + config.duration_s
        max_requests = config.max_requests

        async def worker(client: _Client) -> None:
            nonlocal issued, ok
            while issued < max_requests and perf() < t_stop:
                issued += 1
                raw = next_request()
                t0 = perf()
                try:
                    status, _ = await client.send(raw)
                except Exception as exc:
                    client.close()
                    kind = _error_kind(exc)
                    errors[kind] = errors.get(kind, 0) + 1
                    continue
                if 200 <= status < 300:
                    record(perf() - t0)
                    ok += 1
                else:
                    kind = str(status)
                    errors[kind] = errors.get(kind, 0) + 1

        await asyncio.gather(*(worker(c) for c in clients))
        wall = perf() - t_start
        usage_after = resource.getrusage(resource.RUSAGE_SELF)
        server_cpu = (
            ProcessTreeCPU.delta(cpu_before, cpu.snapshot())
            if cpu is not None and cpu_before is not None
            else None
        )
        cache = (
            _cache_delta(cache_before, await _read_cache_counters(metrics_url, config.timeout_s))
            if metrics_url is not None and cache_before is not None
            else None
        )
    finally:
        for c in clients:
            c.close()
        await asyncio.sleep(0)  # let the transports close
    client_cpu = (
        usage_after.ru_utime + usage_after.ru_stime - usage_before.ru_utime - usage_before.ru_stime
    )
    return RunResult(
        label=target.label,
        url=target.url,
        mode=mode,
        concurrency=config.concurrency,
        sent=issued,
        ok=ok,
        errors=errors,
        wall_s=wall,
        latencies_s=np.asarray(latencies, dtype=np.float64),
        server_cpu_s=server_cpu,
        client_cpu_s=float(client_cpu),
        warmup=config.warmup,
        started_at=started_at,
        cache=cache,
    )


def _run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on a fresh event loop (uvloop when installed)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ConfigError(
            "called from a running event loop; await celeris.serving.loadgen.run_async instead"
        )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(make())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())


def latency(
    target: Target,
    *,
    max_requests: int = 1000,
    duration_s: float = 10.0,
    warmup_requests: int | None = 20,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
) -> RunResult:
    """Measure one request at a time on one connection (concurrency 1)."""
    config = LoadConfig(1, max_requests, duration_s, warmup_requests, timeout_s)
    return _run_sync(lambda: run_async(target, config, server_pid=server_pid, mode="latency"))


def load(
    target: Target,
    *,
    concurrency: int = 32,
    max_requests: int = 100_000,
    duration_s: float = 10.0,
    warmup_requests: int | None = None,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
) -> RunResult:
    """Measure ``concurrency`` connections in a closed loop."""
    config = LoadConfig(concurrency, max_requests, duration_s, warmup_requests, timeout_s)
    return _run_sync(lambda: run_async(target, config, server_pid=server_pid, mode="load"))


def stress(
    target: Target,
    *,
    steps: Sequence[int] = DEFAULT_STEPS,
    sla: SLA | None = None,
    max_requests: int = 100_000,
    duration_s: float = 5.0,
    timeout_s: float = 10.0,
    server_pid: int | None = None,
    on_step: Callable[[RunResult, SLAVerdict], None] | None = None,
) -> StressResult:
    """Run :func:`load` at each concurrency of ``steps`` (increasing) until the SLA breaks.

    Each step is bounded by ``max_requests`` and ``duration_s``; the run stops after the first
    step that breaches ``sla`` (default :class:`SLA`). ``on_step`` sees each step as it ends.
    """
    sla = SLA() if sla is None else sla
    steps = tuple(steps)
    if not steps:
        raise ConfigError("give at least one concurrency step")
    for s in steps:
        _int_in("stress step", s, 1, MAX_CONCURRENCY)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError(f"stress steps must increase, got {list(steps)}")

    async def go() -> StressResult:
        out: list[tuple[RunResult, SLAVerdict]] = []
        for c in steps:
            config = LoadConfig(c, max_requests, duration_s, None, timeout_s)
            result = await run_async(target, config, server_pid=server_pid, mode="stress")
            verdict = sla.check(result)
            out.append((result, verdict))
            if on_step is not None:
                on_step(result, verdict)
            if not verdict.passed:
                break
        return StressResult(out, sla)

    return _run_sync(go)


def compare(
    a: Target,
    b: Target,
    config: LoadConfig,
    *,
    server_pids: tuple[int | None, int | None] = (None, None),
) -> CompareResult:
    """Run the same ``config`` against ``a`` then ``b``; ratios are ``a / b``."""
    if a.label == b.label:
        a = dataclasses.replace(a, label=f"A: {a.label}")
        b = dataclasses.replace(b, label=f"B: {b.label}")

    async def go() -> CompareResult:
        ra = await run_async(a, config, server_pid=server_pids[0], mode="compare")
        rb = await run_async(b, config, server_pid=server_pids[1], mode="compare")
        return CompareResult(ra, rb)

    return _run_sync(go)


# -- reports ---------------------------------------------------------------------------------


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
    _cache_caption(table, results)
    return table


def _cache_caption(table: Table, results: Sequence[RunResult]) -> None:
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


def plot_latency(results: Sequence[RunResult], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG with a latency histogram and a latency CDF per run; return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = [r for r in results if r.latencies_s.size]
    if not results:
        raise ConfigError("no successful requests to plot")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"the plot is a PNG: give a path ending in .png, got {str(path)!r}")
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    hist, cdf = fig.subplots(1, 2)
    all_ms = np.concatenate([r.latencies_s for r in results]) * 1e3
    low = max(float(all_ms.min()), 1e-3)
    high = max(float(all_ms.max()), low * 1.01)
    bins = np.geomspace(low, high, 60)
    for r in results:
        ms = np.sort(r.latencies_s * 1e3)
        name = f"{r.label} (c={r.concurrency})"
        hist.hist(ms, bins=bins, histtype="step", linewidth=1.4, label=name)
        q = np.arange(1, ms.size + 1) / ms.size
        (line,) = cdf.plot(ms, q * 100, linewidth=1.4, label=name)
        p99 = float(np.percentile(ms, 99))
        cdf.axvline(p99, color=line.get_color(), linestyle=":", linewidth=1)
    hist.set_xscale("log")
    hist.set_xlabel("latency (ms, log scale)")
    hist.set_ylabel("requests")
    hist.set_title("latency histogram")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log scale)")
    cdf.set_ylabel("% of requests at or below")
    cdf.set_title("latency CDF (dotted: p99)")
    cdf.set_ylim(0, 100.5)
    for ax in (hist, cdf):
        ax.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # the temporary name hides the suffix: name the format
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".").lower() or "png")
    return path
