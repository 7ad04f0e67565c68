"""Signal feed: fixed-size little-endian binary records streamed over a Unix domain socket.

A trading engine subscribes to a :class:`SignalPublisher` and reads 128-byte
:class:`SignalRecord` frames (magic, version, sequence, timestamp, symbol, signal, confidence,
up to :data:`MAX_HORIZON` float32 forecasts, CRC-32). The format is specified in
``docs/wire-format.md`` and mirrored in C by ``include/celeris_signal.h``; the tests check that
the three agree byte for byte.

The publisher never waits on a subscriber: each one has a bounded ring of records, and when a
consumer is too slow the oldest queued records are dropped and it sees a sequence gap. Every
subscriber costs each publish a send (and a ring of up to 512 KiB), so their number is capped
(``max_subscribers``): a connection over the cap is closed before its hello, counted in
``stats()["refused"]`` and logged (the subscriber gets a :class:`FeedError` saying so).
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import selectors
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from celeris.errors import CelerisError, CelerisTypeError, ConfigError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Wire format (docs/wire-format.md). Change nothing here without bumping VERSION and the header.
# ---------------------------------------------------------------------------------------------

MAGIC = 0x47495343  # the bytes b"CSIG" read as a little-endian u32
HELLO_MAGIC = 0x4C485343  # b"CSHL"
VERSION = 1
RECORD_SIZE = 128
HELLO_SIZE = 16
MAX_HORIZON = 16
CRC_OFFSET = 124  # the CRC-32 covers bytes [0, CRC_OFFSET) and sits in the last 4 bytes
RESERVED_SIZE = 20
FLAGS_V1 = 0  # every flag bit is reserved in version 1

# "<" means little-endian with no implicit padding, so the offsets are exactly those listed in
# RECORD_DTYPE and include/celeris_signal.h (tests assert all three agree).
_BODY = struct.Struct(f"<IHHQqIbBHf{MAX_HORIZON}fI{RESERVED_SIZE}s")
_RECORD = struct.Struct(f"<IHHQqIbBHf{MAX_HORIZON}fI{RESERVED_SIZE}sI")
_CRC = struct.Struct("<I")
_HELLO = struct.Struct("<IHHQ")
_F32 = struct.Struct("<f")
_ZERO_RESERVED = bytes(RESERVED_SIZE)
_FLOAT_ONLY = {float}
_FORECAST_FORMATS = [struct.Struct(f"<{n}f") for n in range(MAX_HORIZON + 1)]
_FORECASTS_OFFSET = 36

RECORD_DTYPE = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "record_size",
            "sequence",
            "ts_ns",
            "symbol_id",
            "signal",
            "flags",
            "horizon_count",
            "confidence",
            "forecasts",
            "model_version",
            "reserved",
            "crc32",
        ],
        "formats": [
            "<u4",
            "<u2",
            "<u2",
            "<u8",
            "<i8",
            "<u4",
            "i1",
            "u1",
            "<u2",
            "<f4",
            ("<f4", (MAX_HORIZON,)),
            "<u4",
            ("u1", (RESERVED_SIZE,)),
            "<u4",
        ],
        "offsets": [0, 4, 6, 8, 16, 24, 28, 29, 30, 32, 36, 100, 104, 124],
        "itemsize": RECORD_SIZE,
    }
)
"""numpy view of a record: ``np.frombuffer(data, RECORD_DTYPE)`` reads a captured stream
without validation (use :func:`decode` or :func:`decode_many` to validate)."""

HELLO_DTYPE = np.dtype(
    {
        "names": ["magic", "version", "record_size", "next_sequence"],
        "formats": ["<u4", "<u2", "<u2", "<u8"],
        "offsets": [0, 4, 6, 8],
        "itemsize": HELLO_SIZE,
    }
)

_U64_MAX = (1 << 64) - 1
_I64_MAX = (1 << 63) - 1
_U32_MAX = (1 << 32) - 1


class WireFormatError(CelerisError, ValueError):
    """Bytes are not a valid record, or a value cannot be put on the wire; names field and value."""


class FeedError(CelerisError, RuntimeError):
    """The signal socket cannot be set up, reached or used (path taken, publisher closed...)."""


class Signal(IntEnum):
    """Trading direction carried in a record's ``signal`` byte (an ``int8`` on the wire)."""

    SHORT = -1
    FLAT = 0
    LONG = 1


_SIGNALS = {int(s): s for s in Signal}  # a dict lookup is ~10x faster than Signal(value)

# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _int_field(name: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int:  # fast path for plain ints; numpy integers etc. pass below
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise CelerisTypeError(
                f"field {name!r} must be an integer, got {type(value).__name__} {value!r}"
            )
        value = int(value)
    if not lo <= value <= hi:
        raise WireFormatError(f"field {name!r} = {value} is outside [{lo}, {hi}]")
    return value


def _f32_field(name: str, value: object) -> float:
    """Return ``value`` rounded to float32, rejecting non-numbers, NaN, inf and overflow."""
    if type(value) is not float and (
        isinstance(value, bool) or not isinstance(value, numbers.Real)
    ):
        raise CelerisTypeError(
            f"field {name!r} must be a real number, got {type(value).__name__} {value!r}"
        )
    x = float(value)
    if not math.isfinite(x):
        raise WireFormatError(f"field {name!r} = {x!r} is not finite")
    try:
        # Round once here, so that decode(encode(record)) == record exactly.
        return float(_F32.unpack(_F32.pack(x))[0])
    except OverflowError:
        raise WireFormatError(f"field {name!r} = {x!r} does not fit a float32") from None


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One signal on the wire.

    Parameters
    ----------
    sequence
        Publisher sequence number, 1, 2, 3... in publish order (u64, 0 is never used).
    ts_ns
        Publish time in nanoseconds since the UNIX epoch, UTC (i64, >= 0).
    symbol_id
        The instrument, as an id both sides agree on (u32).
    signal
        -1 short, 0 flat, +1 long (stored as :class:`Signal`).
    confidence
        In [0, 1]; stored rounded to float32.
    forecasts
        The model's forecasts for steps 1..n ahead, at most :data:`MAX_HORIZON` finite values,
        stored rounded to float32 (so a round trip through the wire is exact).
    model_version
        Registry version of the model that produced the signal (u32, 0 when unknown).
    """

    sequence: int
    ts_ns: int
    symbol_id: int
    signal: int
    confidence: float
    forecasts: tuple[float, ...] = ()
    model_version: int = 0

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "sequence", _int_field("sequence", self.sequence, 1, _U64_MAX))
        setattr_(self, "ts_ns", _int_field("ts_ns", self.ts_ns, 0, _I64_MAX))
        setattr_(self, "symbol_id", _int_field("symbol_id", self.symbol_id, 0, _U32_MAX))
        setattr_(self, "signal", _SIGNALS[_int_field("signal", self.signal, -1, 1)])
        confidence = _f32_field("confidence", self.confidence)
        if not 0.0 <= confidence <= 1.0:
            raise WireFormatError(f"field 'confidence' = {confidence!r} is outside [0, 1]")
        setattr_(self, "confidence", confidence)
        setattr_(self, "forecasts", _forecasts_field(self.forecasts))
        setattr_(
            self, "model_version", _int_field("model_version", self.model_version, 0, _U32_MAX)
        )


def _forecasts_field(values: object) -> tuple[float, ...]:
    if type(values) is tuple:
        items: tuple[Any, ...] = values
    elif type(values) is list:
        items = tuple(values)
    elif isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise WireFormatError(
                f"field 'forecasts' must be 1-D, got an array of shape {values.shape}"
            )
        items = tuple(values.tolist())
    elif isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise CelerisTypeError(
            f"field 'forecasts' must be a sequence of numbers, got {type(values).__name__}"
        )
    else:
        items = tuple(values)
    n = len(items)
    if n > MAX_HORIZON:
        raise WireFormatError(
            f"field 'forecasts' has {n} values; the wire format carries at most "
            f"{MAX_HORIZON} (truncate to the first {MAX_HORIZON} horizons)"
        )
    # Fast path (publish() is latency-critical): plain floats rounded to float32 in one call.
    # A sum of at most 16 finite float32 values cannot overflow a float64, so a finite sum
    # means every value is finite.
    if not items or set(map(type, items)) == _FLOAT_ONLY:
        with contextlib.suppress(OverflowError):
            fmt = _FORECAST_FORMATS[n]
            rounded: tuple[float, ...] = fmt.unpack(fmt.pack(*items))
            if math.isfinite(sum(rounded)):
                return rounded
    # Slow path: find the first bad value and name it.
    return tuple(_f32_field(f"forecasts[{k}]", v) for k, v in enumerate(items))


def encode(record: SignalRecord) -> bytes:
    """Return the 128-byte wire form of ``record`` (little-endian, CRC-32 in the last 4 bytes)."""
    forecasts = record.forecasts
    count = len(forecasts)
    body = _BODY.pack(
        MAGIC,
        VERSION,
        RECORD_SIZE,
        record.sequence,
        record.ts_ns,
        record.symbol_id,
        record.signal,
        FLAGS_V1,
        count,
        record.confidence,
        *forecasts,
        *((0.0,) * (MAX_HORIZON - count)),  # unused slots are +0.0: all bits zero
        record.model_version,
        _ZERO_RESERVED,
    )
    return body + _CRC.pack(zlib.crc32(body))


def _bad(field: str, value: object, why: str) -> WireFormatError:
    return WireFormatError(f"field {field!r} = {value} {why}")


def decode(buf: bytes | bytearray | memoryview) -> SignalRecord:
    """Parse one 128-byte record, strictly.

    Raises
    ------
    WireFormatError
        Wrong length, magic, version, record size or checksum; a non-zero flag or reserved
        byte; sequence 0; a negative timestamp; a signal outside -1..1; a horizon count above
        :data:`MAX_HORIZON`; a confidence outside [0, 1] or not finite; a non-finite forecast;
        a non-zero unused forecast slot. The message names the field and its value.
    """
    if len(buf) != RECORD_SIZE:
        raise WireFormatError(f"a record is {RECORD_SIZE} bytes, got {len(buf)}")
    (
        magic,
        version,
        record_size,
        sequence,
        ts_ns,
        symbol_id,
        signal,
        flags,
        count,
        confidence,
        *rest,
    ) = _RECORD.unpack(buf)
    forecasts = rest[:MAX_HORIZON]
    model_version, reserved, crc = rest[MAX_HORIZON:]
    # Framing checks first: a wrong magic usually means a desynchronised stream.
    if magic != MAGIC:
        raise _bad("magic", f"0x{magic:08x}", f"is not 0x{MAGIC:08x} (b'CSIG')")
    if version != VERSION:
        raise _bad("version", version, f"is not supported (this decoder reads {VERSION})")
    if record_size != RECORD_SIZE:
        raise _bad("record_size", record_size, f"is not {RECORD_SIZE}")
    expected_crc = zlib.crc32(memoryview(buf)[:CRC_OFFSET])
    if crc != expected_crc:
        raise _bad(
            "crc32",
            f"0x{crc:08x}",
            f"does not match the checksum of the record (0x{expected_crc:08x})",
        )
    if flags != FLAGS_V1:
        raise _bad("flags", f"0x{flags:02x}", "is not 0 (all flags are reserved in version 1)")
    if reserved != _ZERO_RESERVED:
        raise _bad("reserved", reserved.hex(), "is not all zero")
    if sequence == 0:
        raise _bad("sequence", 0, "is invalid (sequences start at 1)")
    if ts_ns < 0:
        raise _bad("ts_ns", ts_ns, "is negative")
    if not -1 <= signal <= 1:
        raise _bad("signal", signal, "is not -1, 0 or 1")
    if count > MAX_HORIZON:
        raise _bad("horizon_count", count, f"exceeds {MAX_HORIZON}")
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        raise _bad("confidence", confidence, "is outside [0, 1]")
    used = tuple(forecasts[:count])
    if not math.isfinite(sum(used)):  # float32 values: the sum overflows only through inf/NaN
        k = next(k for k, value in enumerate(used) if not math.isfinite(value))
        raise _bad(f"forecasts[{k}]", used[k], "is not finite")
    if count < MAX_HORIZON:
        unused = bytes(buf[_FORECASTS_OFFSET + 4 * count : _FORECASTS_OFFSET + 4 * MAX_HORIZON])
        if any(unused):
            k = count + next(i for i, b in enumerate(unused) if b) // 4
            raise _bad(
                f"forecasts[{k}]", forecasts[k], f"is not +0.0 (unused: horizon_count = {count})"
            )
    # Every invariant of SignalRecord has been checked above: skip the constructor's checks.
    record = object.__new__(SignalRecord)
    setattr_ = object.__setattr__
    setattr_(record, "sequence", sequence)
    setattr_(record, "ts_ns", ts_ns)
    setattr_(record, "symbol_id", symbol_id)
    setattr_(record, "signal", _SIGNALS[signal])
    setattr_(record, "confidence", confidence)
    setattr_(record, "forecasts", used)
    setattr_(record, "model_version", model_version)
    return record


def decode_many(buf: bytes | bytearray | memoryview) -> list[SignalRecord]:
    """Parse back-to-back records (a captured stream); its length must be a multiple of 128."""
    view = memoryview(buf)
    if len(view) % RECORD_SIZE:
        raise WireFormatError(
            f"a stream of {len(view)} bytes is not a whole number of {RECORD_SIZE}-byte records "
            f"({len(view) % RECORD_SIZE} bytes left over)"
        )
    return [decode(view[k : k + RECORD_SIZE]) for k in range(0, len(view), RECORD_SIZE)]


class StreamDecoder:
    """Turn arbitrary chunks of a record stream (partial reads) into whole records."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete record held until the rest arrives."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[SignalRecord]:
        """Append ``data`` and return every record it completes, in order."""
        if not self._buf:
            # Common case: the read starts on a record boundary; decode in place.
            view = memoryview(data)
            whole = len(view) - len(view) % RECORD_SIZE
            records = [decode(view[k : k + RECORD_SIZE]) for k in range(0, whole, RECORD_SIZE)]
            self._buf += view[whole:]
            return records
        self._buf += data
        whole = len(self._buf) - len(self._buf) % RECORD_SIZE
        chunk = bytes(self._buf[:whole])
        del self._buf[:whole]
        return decode_many(chunk)


@dataclass(frozen=True, slots=True)
class Hello:
    """The 16-byte greeting a publisher sends each subscriber before any record."""

    version: int
    record_size: int
    next_sequence: int


def encode_hello(next_sequence: int) -> bytes:
    """Return the hello telling a new subscriber the sequence of the next record published."""
    return _HELLO.pack(HELLO_MAGIC, VERSION, RECORD_SIZE, next_sequence)


def decode_hello(buf: bytes | bytearray | memoryview) -> Hello:
    """Parse and check a hello (magic, version, record size, next sequence >= 1)."""
    if len(buf) != HELLO_SIZE:
        raise WireFormatError(f"a hello is {HELLO_SIZE} bytes, got {len(buf)}")
    magic, version, record_size, next_sequence = _HELLO.unpack(buf)
    if magic != HELLO_MAGIC:
        raise _bad("hello.magic", f"0x{magic:08x}", f"is not 0x{HELLO_MAGIC:08x} (b'CSHL')")
    if version != VERSION:
        raise _bad("hello.version", version, f"is not supported (this decoder reads {VERSION})")
    if record_size != RECORD_SIZE:
        raise _bad("hello.record_size", record_size, f"is not {RECORD_SIZE}")
    if next_sequence == 0:
        raise _bad("hello.next_sequence", 0, "is invalid (sequences start at 1)")
    return Hello(version, record_size, next_sequence)


# ---------------------------------------------------------------------------------------------
# Publisher
# ---------------------------------------------------------------------------------------------

_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)  # a vanished peer raises EPIPE, not SIGPIPE
_FLUSH_RECORDS = 256  # records moved from a ring into one write (32 KiB)
_RETRY_EVERY = 64  # a blocked subscriber's socket is retried inline every this many publishes
_SUN_PATH_MAX = 107  # Linux sockaddr_un.sun_path is 108 bytes including the terminating NUL


def _check_socket_path(path: str | os.PathLike[str]) -> str:
    out = os.fspath(path)
    if not out:
        raise ConfigError("the signal socket path is empty")
    if len(os.fsencode(out)) > _SUN_PATH_MAX:
        raise ConfigError(
            f"signal socket path {out!r} is {len(os.fsencode(out))} bytes; Unix socket paths "
            f"are limited to {_SUN_PATH_MAX} (use a shorter path, e.g. under /tmp or /run)"
        )
    return out


class _Subscriber:
    __slots__ = (
        "blocked",
        "connected_at",
        "dead",
        "dropped",
        "id",
        "partial",
        "queue",
        "sent",
        "since_retry",
        "sock",
        "write_registered",
    )

    def __init__(self, sock: socket.socket, sub_id: int) -> None:
        self.sock = sock
        self.id = sub_id
        self.queue: deque[bytes] = deque()
        # The unsent tail of a write already started: never dropped, so framing stays intact.
        self.partial: memoryview | None = None
        self.blocked = False  # its socket is full; records wait in `queue`
        self.dead = False
        self.dropped = 0
        self.sent = 0  # records handed to the socket (whole or started)
        self.since_retry = 0
        self.write_registered = False  # owned by the I/O thread
        self.connected_at = time.time()


class SignalPublisher:
    """Serve signal records to any number of subscribers on a Unix domain socket.

    The socket is bound and listening when the constructor returns. :meth:`publish` writes
    straight to each subscriber's socket when it has room, so the fast path has no thread
    hand-off; when a subscriber's socket is full its records wait in a ring of at most
    ``max_buffer_records`` and a background thread flushes them as the consumer catches up.
    When the ring is full the oldest queued record is dropped (counted in :meth:`stats`) and
    the consumer sees a sequence gap. :meth:`publish` never blocks on a subscriber.

    Parameters
    ----------
    path
        Filesystem path of the socket (at most 107 bytes). A stale socket file left by a dead
        publisher is removed; a live publisher or a non-socket file there is an error.
    max_buffer_records
        Ring size per subscriber, beyond the kernel's socket buffer (4096 records = 512 KiB).
    mode
        Permission bits of the socket file (default owner only).
    max_subscribers
        Most subscribers connected at once; further connections are refused (closed before
        the hello) and counted, so no number of clients can make publishing slow.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_buffer_records: int = 4096,
        mode: int = 0o600,
        max_subscribers: int = 64,
    ) -> None:
        for name, value in (
            ("max_buffer_records", max_buffer_records),
            ("max_subscribers", max_subscribers),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise CelerisTypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.path = _check_socket_path(path)
        self.max_buffer_records = max_buffer_records
        self.max_subscribers = max_subscribers
        self._refused = 0
        self._refusing = False  # logged once per run of refusals, again after one is accepted
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Copy-on-write: publish() iterates it while a failed send may remove a subscriber.
        self._subs: tuple[_Subscriber, ...] = ()
        self._dead: list[_Subscriber] = []
        self._next_seq = 1
        self._next_id = 1
        self._published = 0
        self._dropped_closed = 0  # drops counted on subscribers that have since disconnected
        self._connected_total = 0
        self._closing = False
        self._closed = False
        self._wake_pending = False

        self._remove_stale_socket()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(self.path)
        except OSError as exc:
            self._listener.close()
            raise FeedError(f"cannot bind the signal socket at {self.path!r}: {exc}") from exc
        st = os.lstat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        os.chmod(self.path, mode)
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(
            target=self._run, name=f"celeris-feed:{self.path}", daemon=True
        )
        self._thread.start()
        logger.info("signal feed listening on %s", self.path)

    def _remove_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FeedError(f"{self.path!r} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except ConnectionRefusedError:
            # Nobody listens: a socket file left by a publisher that died. Safe to replace.
            logger.info("removing stale signal socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            raise FeedError(f"cannot probe the existing socket {self.path!r}: {exc}") from exc
        finally:
            probe.close()
        raise FeedError(f"another publisher is already listening on {self.path!r}")

    # -- publishing (caller's thread) --------------------------------------------------------

    def publish(
        self,
        symbol_id: int,
        signal: int,
        confidence: float,
        forecasts: Sequence[float] | np.ndarray = (),
        ts_ns: int | None = None,
        *,
        model_version: int = 0,
    ) -> int:
        """Validate, encode and send one record to every subscriber; return its sequence.

        ``ts_ns`` defaults to ``time.time_ns()``. Bad values raise :class:`WireFormatError` and
        consume no sequence number. Never blocks on a subscriber.
        """
        with self._lock:
            if self._closing:
                raise FeedError(f"the signal publisher on {self.path!r} is closed")
            record = SignalRecord(
                self._next_seq,
                time.time_ns() if ts_ns is None else ts_ns,
                symbol_id,
                signal,
                confidence,
                forecasts,  # type: ignore[arg-type]  # normalised to a tuple by the record
                model_version,
            )
            data = encode(record)
            self._next_seq += 1
            self._published += 1
            for sub in self._subs:
                self._deliver(sub, data)
            return record.sequence

    def _deliver(self, sub: _Subscriber, data: bytes) -> None:
        # Invariant: a subscriber that is not blocked has nothing queued and nothing partial.
        if not sub.blocked:
            try:
                n = sub.sock.send(data, _SEND_FLAGS)
            except BlockingIOError:
                n = 0
            except OSError:
                self._kill(sub)
                return
            if n == len(data):
                sub.sent += 1
                return
            if n:
                sub.partial = memoryview(data)[n:]
                sub.sent += 1
            else:
                sub.queue.append(data)
            self._block(sub)
            return
        if len(sub.queue) >= self.max_buffer_records:
            sub.queue.popleft()
            sub.dropped += 1
            if sub.dropped == 1:
                logger.warning(
                    "signal subscriber %d on %s is too slow: dropping its oldest records",
                    sub.id,
                    self.path,
                )
        sub.queue.append(data)
        # Retry a full socket now and then from here: if the I/O thread is starved of the GIL
        # by a tight publish loop, a consumer that has caught up still gets its records.
        sub.since_retry += 1
        if sub.since_retry >= _RETRY_EVERY:
            sub.since_retry = 0
            if self._flush(sub):
                sub.blocked = False

    def _block(self, sub: _Subscriber) -> None:
        sub.blocked = True
        sub.since_retry = 0
        self._wake()

    def _wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(BlockingIOError):
                self._wake_w.send(b"\0")

    def _kill(self, sub: _Subscriber) -> None:
        if sub.dead:
            return
        sub.dead = True
        sub.queue.clear()
        sub.partial = None
        self._subs = tuple(s for s in self._subs if s is not sub)
        self._dead.append(sub)
        self._dropped_closed += sub.dropped
        self._changed.notify_all()
        self._wake()

    def _flush(self, sub: _Subscriber) -> bool:
        """Write what the socket takes (lock held); return True when nothing is left."""
        while True:
            if sub.partial is not None:
                try:
                    n = sub.sock.send(sub.partial, _SEND_FLAGS)
                except BlockingIOError:
                    return False
                except OSError:
                    self._kill(sub)
                    return True
                if n < len(sub.partial):
                    sub.partial = sub.partial[n:]
                    return False
                sub.partial = None
            if not sub.queue:
                return True
            k = min(len(sub.queue), _FLUSH_RECORDS)
            popleft = sub.queue.popleft
            sub.partial = memoryview(b"".join([popleft() for _ in range(k)]))
            sub.sent += k

    # -- the I/O thread ----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug; keep the process alive and say so
            logger.exception("signal feed I/O thread on %s failed", self.path)

    def _loop(self) -> None:
        selector = self._selector
        while True:
            for key, mask in selector.select():
                what = key.data
                if what == "listen":
                    self._accept()
                elif what == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while self._wake_r.recv(4096):
                            pass
                    with self._lock:
                        self._wake_pending = False
                else:
                    self._service(what, mask)
            with self._lock:
                if self._closed:
                    return
                dead, self._dead = self._dead, []
                live = self._subs
            for sub in dead:
                with contextlib.suppress(KeyError, ValueError):
                    selector.unregister(sub.sock)
                sub.sock.close()
                logger.info("signal subscriber %d left %s", sub.id, self.path)
            for sub in live:
                want = sub.blocked
                if want != sub.write_registered:
                    events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
                    with contextlib.suppress(KeyError, ValueError):
                        selector.modify(sub.sock, events, sub)
                        sub.write_registered = want

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                logger.warning("accept on %s failed: %s", self.path, exc)
                return
            conn.setblocking(False)
            with self._lock:
                if len(self._subs) >= self.max_subscribers:
                    self._refused += 1
                    first = not self._refusing
                    self._refusing = True
                    conn.close()  # before the hello: the subscriber's connect fails at once
                    if first:
                        logger.warning(
                            "signal feed on %s refuses subscribers: %d connected, the most "
                            "allowed (max_subscribers); refusals are counted in stats()",
                            self.path,
                            self.max_subscribers,
                        )
                    continue
                self._refusing = False
                sub = _Subscriber(conn, self._next_id)
                self._next_id += 1
                self._connected_total += 1
                # Registered under the lock: every record published after the hello reaches it.
                hello = encode_hello(self._next_seq)
                try:
                    n = conn.send(hello, _SEND_FLAGS)
                except OSError:
                    conn.close()
                    continue
                if n < len(hello):
                    sub.partial = memoryview(hello)[n:]
                    sub.blocked = True
                self._subs = (*self._subs, sub)
                self._changed.notify_all()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sub.blocked else 0)
            sub.write_registered = sub.blocked
            self._selector.register(conn, events, sub)
            logger.info("signal subscriber %d joined %s", sub.id, self.path)

    def _service(self, sub: _Subscriber, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            # Subscribers only read; anything they send is discarded. EOF means they left.
            try:
                data = sub.sock.recv(4096)
            except BlockingIOError:
                data = b"-"
            except OSError:
                data = b""
            if not data:
                with self._lock:
                    self._kill(sub)
                return
        if mask & selectors.EVENT_WRITE:
            with self._lock:
                if not sub.dead and self._flush(sub):
                    sub.blocked = False
                    self._changed.notify_all()

    # -- inspection and shutdown -------------------------------------------------------------

    @property
    def subscribers(self) -> int:
        """Number of connected subscribers."""
        with self._lock:
            return len(self._subs)

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record published (0 before the first)."""
        with self._lock:
            return self._next_seq - 1

    def wait_for_subscribers(self, n: int, timeout_s: float = 5.0) -> bool:
        """Wait until at least ``n`` subscribers are connected; return False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._subs) >= n, timeout_s)

    def stats(self) -> dict[str, Any]:
        """Return counters: published, subscribers, refused (over ``max_subscribers``),
        dropped (total and per subscriber), queued."""
        with self._lock:
            per = [
                {
                    "id": s.id,
                    "queued": len(s.queue),
                    "dropped": s.dropped,
                    "sent": s.sent,
                    "blocked": s.blocked,
                    "connected_at": s.connected_at,
                }
                for s in self._subs
            ]
            return {
                "path": self.path,
                "published": self._published,
                "last_sequence": self._next_seq - 1,
                "subscribers": len(per),
                "connected_total": self._connected_total,
                "refused": self._refused,
                "max_subscribers": self.max_subscribers,
                "dropped": self._dropped_closed + sum(s["dropped"] for s in per),
                "queued": sum(s["queued"] for s in per),
                "per_subscriber": per,
                "max_buffer_records": self.max_buffer_records,
            }

    def close(self, linger_s: float = 1.0) -> None:
        """Stop publishing, give subscribers up to ``linger_s`` to drain, close, remove the file.

        Idempotent. The socket file is removed only if it is still the one this publisher
        created (a newer publisher's socket at the same path is left alone).
        """
        with self._changed:
            if self._closing:
                return
            self._closing = True
            self._changed.wait_for(lambda: not any(s.blocked for s in self._subs), linger_s)
            self._closed = True
            self._wake()
        self._thread.join(timeout=5.0)
        with self._lock:
            subs = [*self._subs, *self._dead]
            self._subs = ()
            self._dead = []
        for sub in subs:
            sub.sock.close()
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.path)
        logger.info("signal feed on %s closed", self.path)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Subscriber
# ---------------------------------------------------------------------------------------------


class SignalSubscriber:
    """Read records from a :class:`SignalPublisher`; iterate to get them in order.

    When the constructor returns the publisher has registered this subscriber: every record
    published from then on is delivered or counted as missed. Iteration ends when the
    publisher closes.

    Attributes
    ----------
    received
        Records returned so far.
    gaps
        Number of sequence gaps seen (each a run of records dropped for this subscriber).
    missed
        Total records in those gaps.
    last_sequence
        Sequence of the last record returned (``next_sequence - 1`` of the hello before any).

    Parameters
    ----------
    path
        The publisher's socket path.
    timeout_s
        Read timeout; ``None`` waits for ever. A timeout raises :class:`TimeoutError`.
    connect_timeout_s
        Time allowed to connect and receive the hello.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout_s: float | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.path = _check_socket_path(path)
        self.received = 0
        self.gaps = 0
        self.missed = 0
        self.discarded_bytes = 0  # an incomplete record cut off by the publisher closing
        self._decoder = StreamDecoder()
        self._ready: deque[SignalRecord] = deque()
        self._eof = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout_s)
        try:
            self._sock.connect(self.path)
            hello = decode_hello(self._read_exact(HELLO_SIZE))
        except (OSError, CelerisError) as exc:
            self._sock.close()
            if isinstance(exc, CelerisError):  # a bad hello, or none (refused)
                raise
            raise FeedError(f"cannot subscribe to the signal feed at {self.path!r}: {exc}") from exc
        self.next_sequence = hello.next_sequence
        self.last_sequence = hello.next_sequence - 1
        self._sock.settimeout(timeout_s)

    def _read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self._sock.recv(n - len(out))
            if not chunk:
                raise FeedError(
                    f"the publisher on {self.path!r} closed the connection before its hello "
                    "(it refuses subscribers over its max_subscribers, or is shutting down)"
                )
            out += chunk
        return bytes(out)

    def fileno(self) -> int:
        """Return the socket's file descriptor (for select/poll in an event loop)."""
        return self._sock.fileno()

    def __iter__(self) -> Iterator[SignalRecord]:
        return self

    def __next__(self) -> SignalRecord:
        while not self._ready:
            if self._eof:
                raise StopIteration
            data = self._sock.recv(65536)
            if not data:
                self._eof = True
                self.discarded_bytes = self._decoder.pending_bytes
                raise StopIteration
            self._ready.extend(self._decoder.feed(data))
        record = self._ready.popleft()
        expected = self.last_sequence + 1
        if record.sequence != expected:
            if record.sequence < expected:
                raise WireFormatError(
                    f"field 'sequence' = {record.sequence} went backwards (expected >= {expected})"
                )
            self.gaps += 1
            self.missed += record.sequence - expected
        self.last_sequence = record.sequence
        self.received += 1
        return record

    def close(self) -> None:
        """Disconnect (the publisher forgets this subscriber)."""
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Latency measurement
# ---------------------------------------------------------------------------------------------


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
    if n < 1 or warmup < 0:
        raise ConfigError(f"n must be >= 1 and warmup >= 0, got n={n}, warmup={warmup}")
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
                    "import sys; from celeris.serving.feed import _latency_consumer; "
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
