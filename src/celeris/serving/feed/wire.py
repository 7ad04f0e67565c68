"""The signal feed's wire format: 128-byte little-endian records and the 16-byte hello.

Specified in ``docs/wire-format.md`` and mirrored in C by ``include/celeris_signal.h``; the
tests check that the three agree byte for byte. Pure functions and constants: no sockets (only the rule for a socket's path).
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from numba import njit

from celeris.errors import CelerisTypeError, ConfigError
from celeris.serving.errors import WireFormatError

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


def encode_many(
    first_sequence: int,
    ts_ns: int,
    symbol_ids: Any,
    signals: Any,
    confidences: Any,
    forecasts: Any = None,
    model_versions: Any = None,
) -> bytes:
    """Encode ``n`` records numbered ``first_sequence, first_sequence + 1, ...`` at once: the
    bytes of :func:`encode` on each :class:`SignalRecord`, built in one numpy pass.

    ``symbol_ids``, ``signals``, ``confidences`` and ``model_versions`` (default 0) are length
    ``n``; ``forecasts`` is ``(n, h)`` with ``h <= MAX_HORIZON`` (NaN-free), or None. The checks
    are :class:`SignalRecord`'s; a failure names the field, the value and the record's index.
    """
    sym = np.asarray(symbol_ids, dtype=np.int64).reshape(-1)
    n = sym.shape[0]
    sig = np.asarray(signals, dtype=np.int64).reshape(-1)
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    ver = np.zeros(n, np.int64) if model_versions is None else np.asarray(model_versions, np.int64)
    fc = np.zeros((n, 0)) if forecasts is None else np.asarray(forecasts, dtype=np.float64)
    if fc.ndim != 2 or fc.shape[0] != n or not (sig.shape[0] == conf.shape[0] == ver.size == n):
        raise WireFormatError(f"encode_many: {n} records need fields of length {n}")
    if fc.shape[1] > MAX_HORIZON:
        raise WireFormatError(
            f"field 'forecasts' has {fc.shape[1]} values; the wire format carries at most "
            f"{MAX_HORIZON} (truncate to the first {MAX_HORIZON} horizons)"
        )
    conf32 = conf.astype(np.float32)
    fc32 = fc.astype(np.float32)
    for name, bad, values, why in (
        ("symbol_id", (sym < 0) | (sym > _U32_MAX), sym, f"is outside [0, {_U32_MAX}]"),
        ("signal", (sig < -1) | (sig > 1), sig, "is not -1, 0 or 1"),
        ("confidence", ~((conf32 >= 0) & (conf32 <= 1)), conf, "is outside [0, 1]"),
        ("model_version", (ver < 0) | (ver > _U32_MAX), ver, f"is outside [0, {_U32_MAX}]"),
        ("forecasts", ~np.isfinite(fc32).all(axis=1), fc, "holds a non-finite value"),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _bad(name, values[i].tolist(), f"{why} (record {i})")
    if not (first_sequence >= 1 and first_sequence + n - 1 <= _U64_MAX):
        raise _bad("sequence", first_sequence, "is invalid (sequences start at 1)")
    if not 0 <= ts_ns <= _I64_MAX:
        raise _bad("ts_ns", ts_ns, f"is outside [0, {_I64_MAX}]")
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["magic"] = MAGIC
    out["version"] = VERSION
    out["record_size"] = RECORD_SIZE
    out["sequence"] = np.arange(first_sequence, first_sequence + n, dtype=np.uint64)
    out["ts_ns"] = ts_ns
    out["symbol_id"] = sym
    out["signal"] = sig
    out["horizon_count"] = fc.shape[1]
    out["confidence"] = conf32
    out["forecasts"][:, : fc.shape[1]] = fc32
    out["model_version"] = ver
    raw = out.view(np.uint8).reshape(n, RECORD_SIZE)
    out["crc32"] = _crc32_rows(raw, CRC_OFFSET)
    return out.tobytes()


def _crc_table() -> np.ndarray:
    """The byte table of CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320: ``zlib.crc32``)."""
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0xEDB88320), table >> 1)
    return table.astype(np.uint32)


_CRC_TABLE = _crc_table()


@njit(cache=True, nogil=True)
def _crc32_rows_nb(rows, length, table, out):
    # byte i of every row, then byte i + 1: the rows' table lookups are independent of each
    # other, so they overlap (one row after the other waits on each lookup: 2.3 ns a byte)
    out[:] = np.uint32(0xFFFFFFFF)
    for i in range(length):
        for r in range(rows.shape[0]):
            crc = out[r]
            out[r] = table[(crc ^ rows[r, i]) & 0xFF] ^ (crc >> np.uint32(8))
    for r in range(rows.shape[0]):
        out[r] ^= np.uint32(0xFFFFFFFF)


def _crc32_rows(rows: np.ndarray, length: int) -> np.ndarray:
    """``zlib.crc32`` of the first ``length`` bytes of every row of ``rows`` (uint8 ``[n, m]``),
    in one compiled pass (a step's hundred records: a Python loop over zlib cost 25 us)."""
    out = np.empty(rows.shape[0], dtype=np.uint32)
    _crc32_rows_nb(rows, np.int64(length), _CRC_TABLE, out)
    return out


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


# The socket path, checked alike by both ends.

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
