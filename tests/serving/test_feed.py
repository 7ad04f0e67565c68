"""Signal feed: the wire format in Python, numpy and C, the publisher, subscribers, gaps.

The layout below is written from the table in docs/wire-format.md, independently of the code,
and every implementation (``encode``/``decode``, ``RECORD_DTYPE``, ``include/celeris_signal.h``
through ``examples/signal_consumer.c``) is checked against it.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeris.errors import CelerisTypeError, ConfigError
from celeris.serving.feed import (
    MAX_HORIZON,
    RECORD_DTYPE,
    RECORD_SIZE,
    FeedError,
    Signal,
    SignalPublisher,
    SignalRecord,
    SignalSubscriber,
    StreamDecoder,
    WireFormatError,
    decode,
    decode_hello,
    decode_many,
    encode,
    encode_hello,
)
from celeris.serving.feed.wire import encode_many

ROOT = Path(__file__).resolve().parents[2]
HEADER_DIR = ROOT / "include"
CONSUMER_SOURCE = ROOT / "examples" / "signal_consumer.c"
DOC = ROOT / "docs" / "wire-format.md"

# name: (offset, struct format), from the table in docs/wire-format.md.
LAYOUT = {
    "magic": (0, "<I"),
    "version": (4, "<H"),
    "record_size": (6, "<H"),
    "sequence": (8, "<Q"),
    "ts_ns": (16, "<q"),
    "symbol_id": (24, "<I"),
    "signal": (28, "<b"),
    "flags": (29, "<B"),
    "horizon_count": (30, "<H"),
    "confidence": (32, "<f"),
    "forecasts": (36, "<16f"),
    "model_version": (100, "<I"),
    "reserved": (104, "20s"),
    "crc32": (124, "<I"),
}

EXAMPLE = SignalRecord(
    sequence=1,
    ts_ns=1_700_000_000_123_456_789,
    symbol_id=42,
    signal=1,
    confidence=0.75,
    forecasts=(0.001, 0.0025, -0.0005),
    model_version=7,
)
EXAMPLE_HEX = (
    "4353494701008000010000000000000015cd853dfe9c97172a000000010003000000403f6f12833a0ad7233b"
    "6f1203ba" + "00" * 52 + "07000000" + "00" * 20 + "fdfbd68f"
)


def f32(x: float) -> float:
    """Return ``x`` rounded to float32, as a Python float."""
    return float(np.float32(x))


def slots(*values: float) -> tuple[float, ...]:
    """Return ``values`` padded with +0.0 to the 16 forecast slots."""
    return tuple(values) + (0.0,) * (MAX_HORIZON - len(values))


def raw_record(*, crc: int | None = None, **fields: object) -> bytes:
    """Pack a record by the documented layout; the CRC is recomputed unless ``crc`` is given."""
    values: dict[str, object] = {
        "magic": 0x47495343,
        "version": 1,
        "record_size": 128,
        "sequence": 1,
        "ts_ns": 1_700_000_000_000_000_000,
        "symbol_id": 42,
        "signal": 1,
        "flags": 0,
        "horizon_count": 3,
        "confidence": 0.75,
        "forecasts": slots(0.001, 0.0025, -0.0005),
        "model_version": 7,
        "reserved": bytes(20),
    }
    values.update(fields)
    buf = bytearray(RECORD_SIZE)
    for name, (offset, fmt) in LAYOUT.items():
        if name != "crc32":
            value: Any = values[name]
            args = tuple(value) if name == "forecasts" else (value,)
            struct.pack_into(fmt, buf, offset, *args)
    struct.pack_into("<I", buf, 124, zlib.crc32(buf[:124]) if crc is None else crc)
    return bytes(buf)


def test_raw_record_helper_packs_the_fields_it_is_given() -> None:
    buf = raw_record(sequence=9, confidence=0.5, signal=-1)
    assert struct.unpack_from("<Q", buf, 8)[0] == 9
    assert struct.unpack_from("<f", buf, 32)[0] == 0.5
    assert struct.unpack_from("<b", buf, 28)[0] == -1
    assert struct.unpack_from("<I", buf, 124)[0] == zlib.crc32(buf[:124])
    assert raw_record(crc=5)[124:] == b"\x05\x00\x00\x00"


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A socket path in a fresh short directory (Unix socket paths are limited to 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="celeris-feed-", dir="/tmp")
    try:
        yield os.path.join(directory, "feed.sock")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def publisher_factory(sock_path: str) -> Iterator[Callable[..., SignalPublisher]]:
    """Return ``make(**kwargs)``: a publisher on ``sock_path``, closed after the test."""
    made: list[SignalPublisher] = []

    def make(**kwargs: object) -> SignalPublisher:
        publisher = SignalPublisher(sock_path, **kwargs)  # type: ignore[arg-type]
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close(linger_s=0.0)


def _compiler(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def consumer_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/signal_consumer.c`` compiled with every warning as an error."""
    cc = _compiler("cc", "gcc", "clang")
    if cc is None:
        pytest.fail("no C compiler (cc, gcc or clang) on PATH: run `make system-deps`")
    out = tmp_path_factory.mktemp("c-consumer") / "signal_consumer"
    result = subprocess.run(
        [
            cc,
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Wpedantic",
            "-Wconversion",
            "-Wsign-conversion",
            "-Werror",
            f"-I{HEADER_DIR}",
            str(CONSUMER_SOURCE),
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return out


def run_consumer(
    binary: Path, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def parse_c_record(line: str) -> SignalRecord:
    """Parse a ``record ...`` line printed by the C consumer into a SignalRecord."""
    fields = dict(item.split("=", 1) for item in line.split()[1:])
    forecasts = tuple(f32(float(v)) for v in fields["forecasts"].split(",") if v)
    return SignalRecord(
        sequence=int(fields["seq"]),
        ts_ns=int(fields["ts_ns"]),
        symbol_id=int(fields["symbol"]),
        signal=int(fields["signal"]),
        confidence=f32(float(fields["confidence"])),
        forecasts=forecasts,
        model_version=int(fields["model_version"]),
    )


def random_records(n: int, seed: int) -> list[SignalRecord]:
    """Valid records spanning every field's range (extremes included)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        count = int(rng.integers(0, MAX_HORIZON + 1))
        scale = 10.0 ** float(rng.integers(-30, 30))
        out.append(
            SignalRecord(
                sequence=int(rng.integers(1, 2**63)) * 2 - 1 if k % 7 == 0 else k + 1,
                ts_ns=int(rng.integers(0, 2**63 - 1)),
                symbol_id=int(rng.integers(0, 2**32)),
                signal=int(rng.integers(-1, 2)),
                confidence=float(rng.random()),
                forecasts=(rng.standard_normal(count) * scale).astype(np.float32),
                model_version=int(rng.integers(0, 2**32)),
            )
        )
    return out


# ------------------------------------------------------------------------------------ layout


def test_record_dtype_offsets_equal_documented_layout() -> None:
    assert RECORD_DTYPE.itemsize == RECORD_SIZE == 128
    assert RECORD_DTYPE.fields is not None and RECORD_DTYPE.names is not None
    offsets = {name: RECORD_DTYPE.fields[name][1] for name in RECORD_DTYPE.names}
    assert offsets == {name: offset for name, (offset, _) in LAYOUT.items()}
    for name, (_, fmt) in LAYOUT.items():
        assert RECORD_DTYPE.fields[name][0].itemsize == struct.calcsize(fmt), name


def test_record_dtype_view_of_encoded_bytes_reads_the_fields() -> None:
    records = random_records(20, seed=1)
    view = np.frombuffer(b"".join(map(encode, records)), dtype=RECORD_DTYPE)
    for row, record in zip(view, records, strict=True):
        assert int(row["sequence"]) == record.sequence
        assert int(row["ts_ns"]) == record.ts_ns
        assert int(row["symbol_id"]) == record.symbol_id
        assert int(row["signal"]) == record.signal
        assert float(row["confidence"]) == record.confidence
        count = int(row["horizon_count"])
        assert tuple(row["forecasts"][:count].tolist()) == record.forecasts
        assert not row["forecasts"][count:].any()
        assert int(row["model_version"]) == record.model_version


def test_encode_equals_independent_packing_of_documented_layout() -> None:
    for record in random_records(50, seed=2):
        expected = raw_record(
            sequence=record.sequence,
            ts_ns=record.ts_ns,
            symbol_id=record.symbol_id,
            signal=record.signal,
            horizon_count=len(record.forecasts),
            confidence=record.confidence,
            forecasts=slots(*record.forecasts),
            model_version=record.model_version,
        )
        assert encode(record) == expected


def test_c_header_layout_equals_documented_layout(consumer_binary: Path) -> None:
    result = run_consumer(consumer_binary, "--layout")
    assert result.returncode == 0, result.stderr
    rows = dict(
        (name, (int(offset), int(size)))
        for name, offset, size in (line.split() for line in result.stdout.splitlines()[2:])
    )
    assert result.stdout.splitlines()[:2] == ["sizeof 128", "hello_sizeof 16"]
    assert rows == {name: (offset, struct.calcsize(fmt)) for name, (offset, fmt) in LAYOUT.items()}


def test_c_crc32_matches_zlib_check_value(consumer_binary: Path) -> None:
    for text in ["123456789", "", "celeris signal feed"]:
        result = run_consumer(consumer_binary, "--crc", text)
        assert int(result.stdout, 16) == zlib.crc32(text.encode())
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_c_encoder_equals_python_encode_on_worked_example(consumer_binary: Path) -> None:
    result = run_consumer(consumer_binary, "--encode")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == encode(EXAMPLE).hex() == EXAMPLE_HEX


def test_c_header_compiles_as_cpp11(tmp_path: Path) -> None:
    cxx = _compiler("c++", "g++", "clang++")
    if cxx is None:
        pytest.fail("no C++ compiler on PATH: run `make system-deps`")
    source = tmp_path / "consumer.cpp"
    source.write_text(
        '#include "celeris_signal.h"\n'
        "int main() {\n"
        "    uint8_t buf[CELERIS_SIGNAL_RECORD_SIZE] = {0};\n"
        "    celeris_signal_record rec;\n"
        "    return celeris_signal_decode(buf, sizeof buf, &rec) == CELERIS_SIGNAL_ERR_MAGIC ? 0 : 1;\n"
        "}\n"
    )
    out = tmp_path / "consumer"
    flags = ["-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", f"-I{HEADER_DIR}"]
    compiled = subprocess.run(
        [cxx, *flags, str(source), "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert compiled.returncode == 0, compiled.stderr
    assert subprocess.run([str(out)], timeout=10).returncode == 0


# ------------------------------------------------------------------------------ round trips


EXTREMES = [
    SignalRecord(1, 0, 0, -1, 0.0),
    SignalRecord(2**64 - 1, 2**63 - 1, 2**32 - 1, 1, 1.0, (0.0,) * 16, 2**32 - 1),
    SignalRecord(5, 1, 7, 0, 0.5, (3.4028234663852886e38, -3.4028234663852886e38)),
    SignalRecord(6, 2, 8, 1, 1e-45, (1e-45, -1e-45, 1.1754943508222875e-38, -0.0)),
    SignalRecord(7, 3, 9, -1, -0.0, tuple(float(k) for k in range(16))),
]


@pytest.mark.parametrize("record", EXTREMES, ids=lambda r: f"seq{r.sequence}")
def test_decode_of_encode_returns_record_exactly(record: SignalRecord) -> None:
    data = encode(record)
    assert len(data) == RECORD_SIZE
    back = decode(data)
    assert back == record
    assert [math.copysign(1, v) for v in back.forecasts] == [
        math.copysign(1, v) for v in record.forecasts
    ]
    assert encode(back) == data


def test_encode_worked_example_gives_golden_bytes() -> None:
    assert encode(EXAMPLE).hex() == EXAMPLE_HEX
    assert decode(bytes.fromhex(EXAMPLE_HEX)) == EXAMPLE


def test_doc_hex_dump_equals_encode_of_worked_example() -> None:
    text = DOC.read_text()
    block = re.search(r"<!-- golden-record -->\n```text\n(.*?)```", text, re.S)
    assert block is not None, "the golden-record block is missing from docs/wire-format.md"
    dumped = bytearray()
    for k, line in enumerate(block.group(1).strip().splitlines()):
        offset, *octets = line.split()
        assert int(offset, 16) == 16 * k
        dumped += bytes(int(o, 16) for o in octets)
    assert bytes(dumped) == encode(EXAMPLE)
    hello = re.search(r"hello\n`([0-9a-f ]+)`", text)
    assert hello is not None
    assert bytes.fromhex(hello.group(1)) == encode_hello(1)
    assert "`0x8fd6fbfd`" in text and encode(EXAMPLE)[124:] == (0x8FD6FBFD).to_bytes(4, "little")


def test_record_rounds_values_to_float32_and_normalises_types() -> None:
    record = SignalRecord(
        np.uint64(3), np.int64(10), np.uint32(4), Signal.SHORT, np.float32(0.1),  # type: ignore[arg-type]
        np.array([0.1, 0.2], dtype=np.float64), np.int32(2),  # type: ignore[arg-type]
    )  # fmt: skip
    assert record.confidence == f32(0.1) != 0.1
    assert record.forecasts == (f32(0.1), f32(0.2))
    assert type(record.sequence) is int and type(record.forecasts) is tuple
    assert record.signal is Signal.SHORT
    assert SignalRecord(1, 0, 0, 1, 0.5).signal is Signal.LONG


# ------------------------------------------------------------------------------ validation

BAD_RECORDS = [
    # (id, bytes, message fragment, C status)
    ("magic", raw_record(magic=0x47495344), "field 'magic' = 0x47495344", "magic"),
    ("version", raw_record(version=2), "field 'version' = 2", "version"),
    ("record_size", raw_record(record_size=64), "field 'record_size' = 64", "record_size"),
    ("crc", raw_record(crc=zlib.crc32(raw_record()[:124]) ^ 1), "field 'crc32'", "crc32"),
    ("flags", raw_record(flags=1), "field 'flags' = 0x01", "flags"),
    ("reserved", raw_record(reserved=bytes(3) + b"\x05" + bytes(16)), "field 'reserved'", "reserved"),
    ("sequence", raw_record(sequence=0), "field 'sequence' = 0", "sequence"),
    ("ts_ns", raw_record(ts_ns=-1), "field 'ts_ns' = -1", "ts_ns"),
    ("signal_high", raw_record(signal=2), "field 'signal' = 2", "signal"),
    ("signal_low", raw_record(signal=-128), "field 'signal' = -128", "signal"),
    ("count", raw_record(horizon_count=17), "field 'horizon_count' = 17", "horizon_count"),
    ("conf_nan", raw_record(confidence=math.nan), "field 'confidence' = nan", "confidence"),
    ("conf_inf", raw_record(confidence=math.inf), "field 'confidence' = inf", "confidence"),
    ("conf_high", raw_record(confidence=1.5), "field 'confidence' = 1.5", "confidence"),
    ("conf_low", raw_record(confidence=-0.25), "field 'confidence' = -0.25", "confidence"),
    ("fc_nan", raw_record(forecasts=slots(0.0, math.nan, 1.0)), "field 'forecasts[1]' = nan", "forecasts"),
    ("fc_inf", raw_record(forecasts=slots(0.0, 1.0, -math.inf)), "field 'forecasts[2]' = -inf", "forecasts"),
    ("unused", raw_record(forecasts=slots(1, 2, 3, 0, 0, 1.0)), "field 'forecasts[5]' = 1.0", "unused forecasts"),
    ("unused_neg0", raw_record(forecasts=slots(1, 2, 3, -0.0)), "field 'forecasts[3]' = -0.0", "unused forecasts"),
    ("unused_nan", raw_record(horizon_count=0, forecasts=slots(math.nan)), "field 'forecasts[0]' = nan", "unused forecasts"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "message"), [(b, m) for _, b, m, _ in BAD_RECORDS], ids=[i for i, *_ in BAD_RECORDS]
)
def test_decode_bad_record_raises_naming_field_and_value(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=re.escape(message)):
        decode(data)


@pytest.mark.parametrize("length", [0, 1, 127, 129, 256])
def test_decode_wrong_length_raises(length: int) -> None:
    with pytest.raises(WireFormatError, match=f"128 bytes, got {length}"):
        decode((raw_record() * 2)[:length])


def test_c_decoder_rejects_the_same_records_with_the_same_field(
    consumer_binary: Path, tmp_path: Path
) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(raw_record() + b"".join(b for _, b, _, _ in BAD_RECORDS))
    result = run_consumer(consumer_binary, "--file", str(path))
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert parse_c_record(lines[0]) == decode(raw_record())
    expected = [
        f"error index={k + 1} status={status}" for k, (*_, status) in enumerate(BAD_RECORDS)
    ]
    assert lines[1:] == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sequence": 0}, WireFormatError, "field 'sequence' = 0 is outside [1, 18446744073709551615]"),
        ({"sequence": 2**64}, WireFormatError, "field 'sequence' = 18446744073709551616"),
        ({"ts_ns": -1}, WireFormatError, "field 'ts_ns' = -1"),
        ({"ts_ns": 2**63}, WireFormatError, "field 'ts_ns' = 9223372036854775808"),
        ({"symbol_id": 2**32}, WireFormatError, "field 'symbol_id' = 4294967296"),
        ({"signal": 2}, WireFormatError, "field 'signal' = 2 is outside [-1, 1]"),
        ({"signal": True}, CelerisTypeError, "field 'signal' must be an integer, got bool"),
        ({"sequence": 1.0}, CelerisTypeError, "field 'sequence' must be an integer, got float"),
        ({"confidence": 1.01}, WireFormatError, "field 'confidence' = 1.0099999904632568"),
        ({"confidence": math.nan}, WireFormatError, "field 'confidence' = nan is not finite"),
        ({"confidence": "0.5"}, CelerisTypeError, "field 'confidence' must be a real number, got str"),
        ({"forecasts": [0.0] * 17}, WireFormatError, "field 'forecasts' has 17 values"),
        ({"forecasts": [0.0, 1e39]}, WireFormatError, "field 'forecasts[1]' = 1e+39 does not fit a float32"),
        ({"forecasts": [0.0, 0.0, math.inf]}, WireFormatError, "field 'forecasts[2]' = inf is not finite"),
        ({"forecasts": [1, math.nan]}, WireFormatError, "field 'forecasts[1]' = nan is not finite"),
        ({"forecasts": [1.0, "x"]}, CelerisTypeError, "field 'forecasts[1]' must be a real number"),
        ({"forecasts": np.zeros((2, 2))}, WireFormatError, "field 'forecasts' must be 1-D"),
        ({"forecasts": "abc"}, CelerisTypeError, "field 'forecasts' must be a sequence of numbers"),
        ({"model_version": -1}, WireFormatError, "field 'model_version' = -1"),
    ],
)  # fmt: skip
def test_record_bad_value_raises_naming_field(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    fields: dict[str, object] = {
        "sequence": 1, "ts_ns": 0, "symbol_id": 1, "signal": 0, "confidence": 0.5,
    }  # fmt: skip
    fields.update(kwargs)
    with pytest.raises(error, match=re.escape(message)):
        SignalRecord(**fields)  # type: ignore[arg-type]


def test_decode_many_partial_record_raises_with_leftover() -> None:
    stream = encode(EXAMPLE) * 3
    assert decode_many(stream) == [EXAMPLE] * 3
    assert decode_many(b"") == []
    with pytest.raises(
        WireFormatError,
        match=re.escape(
            "356 bytes is not a whole number of 128-byte records (100 bytes left over)"
        ),
    ):
        decode_many(stream[:356])


def test_decode_hello_checks_every_field() -> None:
    assert decode_hello(encode_hello(17)).next_sequence == 17
    good = encode_hello(1)
    for data, message in [
        (b"XSHL" + good[4:], "field 'hello.magic'"),
        (good[:4] + b"\x02\x00" + good[6:], "field 'hello.version' = 2"),
        (good[:6] + b"\x40\x00" + good[8:], "field 'hello.record_size' = 64"),
        (good[:8] + bytes(8), "field 'hello.next_sequence' = 0"),
        (good[:15], "a hello is 16 bytes, got 15"),
    ]:
        with pytest.raises(WireFormatError, match=re.escape(message)):
            decode_hello(data)


# -------------------------------------------------------------------------------- fuzzing


def _decode_or_wire_error(data: bytes) -> SignalRecord | None:
    try:
        record = decode(data)
    except WireFormatError:
        return None
    # Anything accepted is canonical: it re-encodes to the very same bytes.
    assert encode(record) == data
    assert SignalRecord(
        record.sequence, record.ts_ns, record.symbol_id, record.signal, record.confidence,
        record.forecasts, record.model_version,
    ) == record  # fmt: skip
    return record


def _with_crc(data: bytes | bytearray) -> bytes:
    return bytes(data[:124]) + struct.pack("<I", zlib.crc32(bytes(data[:124])))


HEADER = raw_record()[:8]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

f32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)
valid_records = st.builds(
    SignalRecord,
    sequence=st.integers(1, 2**64 - 1),
    ts_ns=st.integers(0, 2**63 - 1),
    symbol_id=st.integers(0, 2**32 - 1),
    signal=st.sampled_from([-1, 0, 1]),
    confidence=st.floats(0.0, 1.0, width=32),
    forecasts=st.lists(f32_values, max_size=MAX_HORIZON).map(tuple),
    model_version=st.integers(0, 2**32 - 1),
)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_random_bytes_raises_only_wire_format_error(data: bytes) -> None:
    _decode_or_wire_error(data)


@FUZZ
@given(st.binary(min_size=116, max_size=116))
def test_decode_random_body_with_valid_header_and_crc_never_crashes(body: bytes) -> None:
    _decode_or_wire_error(_with_crc(HEADER + body + bytes(4)))


any_f32 = st.floats(width=32)  # NaN, infinities, -0.0 and subnormals included
field_level_records = st.builds(
    raw_record,
    sequence=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
    ts_ns=st.integers(-(2**63), 2**63 - 1),
    symbol_id=st.integers(0, 2**32 - 1),
    signal=st.one_of(st.sampled_from([-1, 0, 1]), st.integers(-128, 127)),
    flags=st.one_of(st.just(0), st.integers(0, 255)),
    horizon_count=st.one_of(st.integers(0, MAX_HORIZON), st.integers(0, 2**16 - 1)),
    confidence=st.one_of(st.floats(0.0, 1.0, width=32), any_f32),
    forecasts=st.one_of(
        st.lists(f32_values, min_size=16, max_size=16).map(tuple),
        st.lists(any_f32, min_size=16, max_size=16).map(tuple),
    ),
    model_version=st.integers(0, 2**32 - 1),
    reserved=st.one_of(st.just(bytes(20)), st.binary(min_size=20, max_size=20)),
)


@FUZZ
@given(field_level_records)
def test_decode_field_level_fuzz_accepts_exactly_the_documented_rules(data: bytes) -> None:
    record = _decode_or_wire_error(data)
    view = np.frombuffer(data, dtype=RECORD_DTYPE)[0]
    count = int(view["horizon_count"])
    forecasts = view["forecasts"]
    valid = (
        int(view["flags"]) == 0
        and not view["reserved"].any()
        and int(view["sequence"]) >= 1
        and int(view["ts_ns"]) >= 0
        and -1 <= int(view["signal"]) <= 1
        and count <= MAX_HORIZON
        and bool(np.isfinite(view["confidence"]))
        and 0.0 <= float(view["confidence"]) <= 1.0
        and bool(np.isfinite(forecasts[:count]).all())
        and not forecasts[count:].view(np.uint32).any()
    )
    assert (record is not None) == valid


@FUZZ
@given(
    valid_records,
    st.lists(st.tuples(st.integers(0, 127), st.integers(0, 255)), min_size=1, max_size=6),
    st.booleans(),
)
def test_decode_mutated_valid_record_never_crashes(
    record: SignalRecord, edits: list[tuple[int, int]], fix_crc: bool
) -> None:
    data = bytearray(encode(record))
    for position, value in edits:
        data[position] = value
    mutated = _with_crc(data) if fix_crc else bytes(data)
    result = _decode_or_wire_error(mutated)
    if not fix_crc and mutated != encode(record):
        assert result is None  # an unrepaired edit of a few bytes always breaks the CRC-32


@FUZZ
@given(valid_records)
def test_valid_record_round_trips_exactly(record: SignalRecord) -> None:
    data = encode(record)
    assert decode(data) == record
    assert encode(decode(data)) == data


@settings(max_examples=150, deadline=None)
@given(st.lists(valid_records, max_size=8), st.lists(st.integers(0, 1100), max_size=12))
def test_stream_decoder_any_chunking_gives_the_same_records(
    records: list[SignalRecord], cuts: list[int]
) -> None:
    stream = b"".join(map(encode, records))
    bounds = sorted({0, len(stream), *(c for c in cuts if c <= len(stream))})
    decoder = StreamDecoder()
    out: list[SignalRecord] = []
    for start, end in itertools.pairwise(bounds):
        out += decoder.feed(stream[start:end])
        assert decoder.pending_bytes == end % RECORD_SIZE
    assert out == records


def test_stream_decoder_byte_by_byte_gives_records() -> None:
    records = random_records(3, seed=3)
    decoder = StreamDecoder()
    out: list[SignalRecord] = []
    for byte in b"".join(map(encode, records)):
        out += decoder.feed(bytes([byte]))
    assert out == records and decoder.pending_bytes == 0


# ------------------------------------------------------------------ publisher and subscribers


def test_publisher_subscribers_each_receive_every_record_in_order(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    subscribers = [SignalSubscriber(sock_path, timeout_s=10.0) for _ in range(3)]
    try:
        assert publisher.subscribers == 3
        sent = []
        for k in range(600):  # 75 KiB each: more than the kernel buffer, so the ring is used
            seq = publisher.publish(k % 50, (k % 3) - 1, k / 600, [k * 1e-4] * (k % 17))
            sent.append(seq)
        assert sent == list(range(1, 601))
        for subscriber in subscribers:
            got = [next(subscriber) for _ in range(600)]
            assert [r.sequence for r in got] == sent
            assert [r.symbol_id for r in got] == [k % 50 for k in range(600)]
            assert got[-1].forecasts == (f32(599e-4),) * (599 % 17)
            assert subscriber.gaps == subscriber.missed == 0
            assert subscriber.received == 600
        stats = publisher.stats()
        assert stats["published"] == 600 and stats["dropped"] == 0 and stats["subscribers"] == 3
    finally:
        for subscriber in subscribers:
            subscriber.close()


def test_publish_many_numbers_consecutively_and_reaches_every_subscriber_in_order(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    # batches larger than the kernel buffer: the tail of a batch goes through the ring
    publisher = publisher_factory(first_sequence=41)
    subscribers = [SignalSubscriber(sock_path, timeout_s=10.0) for _ in range(2)]
    try:
        k = np.arange(900)
        fc = np.full((900, 16), 1e-4) * k[:, None]
        firsts = [
            publisher.publish_many(k[i : i + 300] % 50, k[i : i + 300] % 3 - 1,
                                   k[i : i + 300] / 900, fc[i : i + 300], k[i : i + 300] % 4)
            for i in range(0, 900, 300)
        ]  # fmt: skip
        assert firsts == [41, 341, 641]
        assert publisher.publish_many([], [], []) == 941
        for subscriber in subscribers:
            got = [next(subscriber) for _ in range(900)]
            assert [r.sequence for r in got] == list(range(41, 941))
            assert [(r.symbol_id, r.signal, r.model_version) for r in got] == [
                (k % 50, (k % 3) - 1, k % 4) for k in range(900)
            ]
            assert got[-1].forecasts == (f32(899e-4),) * 16
            # the same bytes as publish, record by record
            assert got[5] == SignalRecord(
                46, got[5].ts_ns, 5, 1, f32(5 / 900), (f32(5e-4),) * 16, 1
            )
            assert subscriber.gaps == 0
    finally:
        for subscriber in subscribers:
            subscriber.close()


def test_records_published_with_nobody_connected_are_kept_for_the_next_subscriber(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    # the trading engine away (restarting): what is published meanwhile waits for it
    publisher = publisher_factory(first_sequence=10, retain=100)
    assert publisher.publish_many([1, 2, 3], [1, 0, -1], [0.5, 0.5, 0.5]) == 10
    publisher.publish(4, 1, 0.25)
    assert publisher.delivered_through == 9 and publisher.stats()["retained"] == 4
    with SignalSubscriber(sock_path, timeout_s=10.0) as engine:
        assert engine.next_sequence == 10  # the hello starts at the first kept record
        publisher.publish(5, 1, 1.0)
        got = [next(engine) for _ in range(5)]
        assert [(r.sequence, r.symbol_id) for r in got] == [(10, 1), (11, 2), (12, 3), (13, 4),
                                                            (14, 5)]  # fmt: skip
        assert engine.gaps == 0 and publisher.delivered_through == 14
        with SignalSubscriber(sock_path, timeout_s=10.0) as later:  # someone was there: no backlog
            assert later.next_sequence == 15
        assert publisher.stats()["retained"] == 0


def test_kept_records_past_retain_drop_the_oldest_and_say_so(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory(retain=3)
    publisher.publish_many(np.arange(5), np.zeros(5), np.ones(5))
    assert publisher.stats()["retained_dropped"] == 2 and publisher.delivered_through == 2
    with SignalSubscriber(sock_path, timeout_s=10.0) as engine:
        assert engine.next_sequence == 3
        assert [next(engine).sequence for _ in range(3)] == [3, 4, 5]


def test_without_retain_nothing_is_kept_for_a_late_subscriber(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    publisher.publish_many([1, 2], [1, 1], [1.0, 1.0])
    assert publisher.delivered_through == 2 and publisher.stats()["retained"] == 0
    with SignalSubscriber(sock_path, timeout_s=10.0) as late:
        assert late.next_sequence == 3


def test_encode_many_is_encode_record_by_record() -> None:
    # the batch path (its CRC-32 compiled) gives the bytes of encode, record by record
    rng = np.random.default_rng(5)
    n, h = 257, 7
    sym, sig = rng.integers(0, 2**32, n), rng.integers(-1, 2, n)
    conf, fc, ver = rng.random(n), rng.normal(0, 1e3, (n, h)), rng.integers(0, 2**32, n)
    blob = encode_many(17, 123_456_789, sym, sig, conf, fc, ver)
    for i in range(n):
        record = SignalRecord(17 + i, 123_456_789, int(sym[i]), int(sig[i]), float(conf[i]),
                              tuple(fc[i].tolist()), int(ver[i]))  # fmt: skip
        assert blob[128 * i : 128 * (i + 1)] == encode(record), i


def test_publish_many_with_a_bad_record_sends_none_and_consumes_no_sequence(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    with pytest.raises(
        WireFormatError, match=re.escape("field 'confidence' = 3.0 is outside [0, 1] (record 1)")
    ):
        publisher.publish_many([1, 2], [1, 1], [0.5, 3.0])
    with pytest.raises(WireFormatError, match="field 'signal' = 2"):
        publisher.publish_many([1], [2], [0.5])
    with pytest.raises(WireFormatError, match="non-finite"):
        publisher.publish_many([1], [1], [0.5], [[np.nan]])
    assert publisher.publish(1, 1, 0.5) == 1
    assert publisher.stats()["published"] == 1


def test_subscriber_joining_late_starts_at_hello_sequence_without_gap(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    for _ in range(3):
        publisher.publish(1, 0, 0.5)
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        assert subscriber.next_sequence == 4 and subscriber.last_sequence == 3
        publisher.publish(2, 1, 0.25, ts_ns=123)
        record = next(subscriber)
        assert (record.sequence, record.symbol_id, record.ts_ns) == (4, 2, 123)
        assert subscriber.gaps == 0


def test_publish_default_timestamp_is_wall_clock_ns(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        before = time.time_ns()
        publisher.publish(1, 1, 1.0, np.array([1.5], dtype=np.float32), model_version=3)
        after = time.time_ns()
        record = next(subscriber)
    assert before <= record.ts_ns <= after
    assert record.forecasts == (1.5,) and record.model_version == 3


def test_publish_bad_value_raises_and_consumes_no_sequence(
    publisher_factory: Callable[..., SignalPublisher],
) -> None:
    publisher = publisher_factory()
    with pytest.raises(WireFormatError, match=re.escape("field 'confidence' = 2.0")):
        publisher.publish(1, 1, 2.0)
    with pytest.raises(WireFormatError, match="field 'forecasts' has 20 values"):
        publisher.publish(1, 1, 0.5, np.zeros(20))
    assert publisher.publish(1, 1, 0.5) == 1
    assert publisher.stats()["published"] == 1


def test_subscriber_that_never_reads_does_not_stall_publisher(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory(max_buffer_records=100)
    # A raw client: connects and never reads a byte, not even the hello.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(sock_path)
    try:
        assert publisher.wait_for_subscribers(1)
        n = 20_000
        durations = np.empty(n)
        start = time.perf_counter()
        for k in range(n):
            t0 = time.perf_counter()
            publisher.publish(k, 1, 0.5, [0.1] * 16)
            durations[k] = time.perf_counter() - t0
        elapsed = time.perf_counter() - start
        (sub,) = publisher.stats()["per_subscriber"]
        # Every record is accounted for: handed to the kernel, still in the ring, or dropped.
        assert sub["sent"] + sub["queued"] + sub["dropped"] == n
        assert sub["queued"] == 100 and sub["dropped"] > n // 2
        assert elapsed < 20.0 and durations.max() < 0.5, (elapsed, durations.max())
    finally:
        stuck.close()


def test_slow_subscriber_loses_oldest_while_fast_subscriber_gets_everything(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    n, ring = 6000, 256
    publisher = publisher_factory(max_buffer_records=ring)
    fast = SignalSubscriber(sock_path, timeout_s=10.0)
    slow = SignalSubscriber(sock_path, timeout_s=10.0)
    fast_seqs: list[int] = []

    def read_fast() -> None:
        for record in fast:
            fast_seqs.append(record.sequence)
            if record.sequence == n:
                return

    reader = threading.Thread(target=read_fast)
    reader.start()
    try:
        deadline = time.monotonic() + 30.0
        for k in range(n):
            publisher.publish(k % 100, 1, 0.5, [0.01] * 16)
            # Keep the fast reader within half a ring (it competes for the GIL with this
            # loop); the slow one never reads while we publish.
            while len(fast_seqs) < k - ring // 2 and time.monotonic() < deadline:
                time.sleep(0.0005)
        reader.join(timeout=20.0)
        assert not reader.is_alive()
        assert fast_seqs == list(range(1, n + 1))
        assert fast.gaps == fast.missed == 0

        stats = {s["id"]: s for s in publisher.stats()["per_subscriber"]}
        slow_stats = stats[max(stats)]
        assert slow_stats["dropped"] > 0 and stats[min(stats)]["dropped"] == 0

        slow_seqs = []
        for record in slow:  # the ring still holds the newest records: read up to the last
            slow_seqs.append(record.sequence)
            if record.sequence == n:
                break
        assert slow_seqs == sorted(slow_seqs) and slow_seqs[-1] == n
        assert slow.gaps >= 1
        assert slow.missed == slow_stats["dropped"]
        assert slow.received + slow.missed == n
        assert len(slow_seqs) <= ring + 2000  # bounded by the ring plus the kernel buffer
    finally:
        fast.close()
        slow.close()
        reader.join(timeout=5.0)


def _serve_bytes(path: str, payload: bytes) -> threading.Thread:
    """Serve ``payload`` to the first client of a listening socket at ``path``, then close."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(payload)

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


def _record(seq: int) -> bytes:
    return encode(SignalRecord(seq, 1, 2, 0, 0.5))


@pytest.mark.parametrize(
    ("next_sequence", "sequences", "gaps", "missed"),
    [
        (1, [1, 2, 5, 6, 10], 2, 5),
        (3, [5, 6], 1, 2),
        (1, [1, 2, 3], 0, 0),
        (7, [7, 2**64 - 1], 1, 2**64 - 9),
    ],
)
def test_subscriber_counts_gaps_and_missed_records(
    sock_path: str, next_sequence: int, sequences: list[int], gaps: int, missed: int
) -> None:
    payload = encode_hello(next_sequence) + b"".join(_record(s) for s in sequences)
    server = _serve_bytes(sock_path, payload)
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        got = [r.sequence for r in subscriber]
    server.join(timeout=10.0)
    assert got == sequences
    assert (subscriber.gaps, subscriber.missed, subscriber.received) == (gaps, missed, len(got))


def test_subscriber_sequence_going_backwards_raises(sock_path: str) -> None:
    server = _serve_bytes(sock_path, encode_hello(1) + _record(1) + _record(2) + _record(2))
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        assert [next(subscriber).sequence for _ in range(2)] == [1, 2]
        with pytest.raises(WireFormatError, match="field 'sequence' = 2 went backwards"):
            next(subscriber)
    server.join(timeout=10.0)


def test_subscriber_stream_cut_inside_record_ends_and_counts_discarded(sock_path: str) -> None:
    server = _serve_bytes(sock_path, encode_hello(1) + _record(1) + _record(2)[:50])
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        assert [r.sequence for r in subscriber] == [1]
        assert subscriber.discarded_bytes == 50
    server.join(timeout=10.0)


def test_subscriber_unknown_hello_version_refuses_to_read(sock_path: str) -> None:
    hello = encode_hello(1)
    server = _serve_bytes(sock_path, hello[:4] + b"\x02\x00" + hello[6:] + _record(1))
    with pytest.raises(WireFormatError, match=re.escape("field 'hello.version' = 2")):
        SignalSubscriber(sock_path, timeout_s=10.0)
    server.join(timeout=10.0)


def test_subscriber_missing_socket_raises_feed_error(sock_path: str) -> None:
    with pytest.raises(FeedError, match="cannot subscribe to the signal feed"):
        SignalSubscriber(sock_path)


def test_subscriber_read_timeout_raises_timeout_error(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher_factory()
    with SignalSubscriber(sock_path, timeout_s=0.05) as subscriber, pytest.raises(TimeoutError):
        next(subscriber)


def test_subscriber_leaving_is_forgotten_by_publisher(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    subscriber = SignalSubscriber(sock_path)
    assert publisher.subscribers == 1
    subscriber.close()
    deadline = time.monotonic() + 10.0
    while publisher.subscribers and time.monotonic() < deadline:
        publisher.publish(1, 0, 0.5)  # a write to a closed peer also reveals it
        time.sleep(0.01)
    assert publisher.subscribers == 0
    assert publisher.stats()["connected_total"] == 1


def test_subscriber_leaving_costs_the_others_nothing(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    leaving = [SignalSubscriber(sock_path) for _ in range(3)]
    staying = SignalSubscriber(sock_path, timeout_s=10.0)
    try:
        # Holding the publisher's lock keeps its I/O thread from noticing the departures, so
        # the failed sends to the closed peers happen inside publish(), mid-iteration.
        with publisher._lock:
            for subscriber in leaving:
                subscriber.close()
        for k in range(200):
            publisher.publish(k, 0, 0.5)
        assert [next(staying).sequence for _ in range(200)] == list(range(1, 201))
        assert staying.gaps == 0
    finally:
        staying.close()


def test_close_lets_subscriber_drain_its_ring_then_ends_iteration(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    n = 20_000  # 2.5 MiB: ten times what the kernel buffers, the rest waits in the ring
    publisher = publisher_factory(max_buffer_records=n)
    subscriber = SignalSubscriber(sock_path, timeout_s=10.0)
    for k in range(n):
        publisher.publish(k, 0, 0.5, [0.0] * 16)
    assert publisher.stats()["queued"] > n // 2
    closer = threading.Thread(target=publisher.close, kwargs={"linger_s": 20.0})
    closer.start()
    try:
        sequences = [r.sequence for r in subscriber]
    finally:
        closer.join(timeout=30.0)
        subscriber.close()
    assert sequences == list(range(1, n + 1))
    assert not os.path.exists(sock_path)
    with pytest.raises(FeedError, match="is closed"):
        publisher.publish(1, 0, 0.5)


# --------------------------------------------------------------------------- socket file


def test_close_removes_socket_file_and_is_idempotent(sock_path: str) -> None:
    publisher = SignalPublisher(sock_path)
    assert stat_is_socket(sock_path)
    assert os.stat(sock_path).st_mode & 0o777 == 0o600
    publisher.close()
    assert not os.path.exists(sock_path)
    publisher.close()


def stat_is_socket(path: str) -> bool:
    import stat

    return stat.S_ISSOCK(os.lstat(path).st_mode)


def test_stale_socket_file_is_replaced(sock_path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()  # the file stays, nobody listens: what a crashed publisher leaves
    assert stat_is_socket(sock_path)
    with (
        SignalPublisher(sock_path) as publisher,
        SignalSubscriber(sock_path, timeout_s=10.0) as sub,
    ):
        publisher.publish(1, 1, 0.5)
        assert next(sub).sequence == 1


def test_regular_file_at_socket_path_is_refused_and_kept(sock_path: str) -> None:
    Path(sock_path).write_text("not a socket")
    with pytest.raises(FeedError, match="exists and is not a socket"):
        SignalPublisher(sock_path)
    assert Path(sock_path).read_text() == "not a socket"


def test_second_publisher_on_live_socket_is_refused(
    publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    first = publisher_factory()
    with pytest.raises(FeedError, match="another publisher is already listening"):
        SignalPublisher(sock_path)
    with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
        first.publish(3, -1, 0.1)
        assert next(subscriber).symbol_id == 3


def test_close_leaves_a_newer_publishers_socket_alone(sock_path: str) -> None:
    old = SignalPublisher(sock_path)
    os.unlink(sock_path)
    new = SignalPublisher(sock_path)
    try:
        old.close()
        assert stat_is_socket(sock_path)
        with SignalSubscriber(sock_path, timeout_s=10.0) as subscriber:
            new.publish(1, 0, 0.5)
            assert next(subscriber).sequence == 1
    finally:
        new.close()
    assert not os.path.exists(sock_path)


def test_socket_path_too_long_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="Unix socket paths are limited to 107"):
        SignalPublisher("/tmp/" + "x" * 120)


def test_publisher_bad_buffer_size_raises() -> None:
    with pytest.raises(ConfigError, match="max_buffer_records must be >= 1, got 0"):
        SignalPublisher("/tmp/unused.sock", max_buffer_records=0)
    with pytest.raises(CelerisTypeError, match="max_buffer_records must be an int"):
        SignalPublisher("/tmp/unused.sock", max_buffer_records=1.5)  # type: ignore[arg-type]


def test_wait_for_subscribers_times_out_false(
    publisher_factory: Callable[..., SignalPublisher],
) -> None:
    assert publisher_factory().wait_for_subscribers(1, timeout_s=0.05) is False


# ------------------------------------------------------------------------------ C consumer


def test_c_consumer_decodes_python_records_from_file(consumer_binary: Path, tmp_path: Path) -> None:
    records = random_records(200, seed=4)
    data = bytearray(b"".join(map(encode, records)))
    data[57 * RECORD_SIZE + 40] ^= 0x10  # corrupt one forecast byte of record 57
    path = tmp_path / "records.bin"
    path.write_bytes(bytes(data))
    result = run_consumer(consumer_binary, "--file", str(path))
    assert result.returncode == 3
    lines = result.stdout.splitlines()
    assert lines[57] == "error index=57 status=crc32"
    decoded = [parse_c_record(line) for k, line in enumerate(lines) if k != 57]
    assert decoded == records[:57] + records[58:]


def test_c_consumer_reads_live_feed_with_checksums(
    consumer_binary: Path, publisher_factory: Callable[..., SignalPublisher], sock_path: str
) -> None:
    publisher = publisher_factory()
    publisher.publish(0, 0, 0.0)  # before the consumer joins: not expected by it
    process = subprocess.Popen(
        [str(consumer_binary), "--socket", sock_path, "50"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert publisher.wait_for_subscribers(1, timeout_s=10.0)
        expected = []
        rng = np.random.default_rng(5)
        for k in range(50):
            forecasts = rng.standard_normal(k % 17).astype(np.float32)
            signal, confidence = int(rng.integers(-1, 2)), float(rng.random())
            ts_ns = 1_700_000_000_000_000_000 + k
            seq = publisher.publish(k, signal, confidence, forecasts, ts_ns, model_version=k)
            expected.append(
                SignalRecord(seq, ts_ns, k, signal, confidence, tuple(forecasts.tolist()), k)
            )
        out, _ = process.communicate(timeout=30.0)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    lines = out.splitlines()
    assert lines[0] == "hello version=1 record_size=128 next_sequence=2"
    got = [parse_c_record(line) for line in lines[1:-1]]
    assert [r.sequence for r in got] == list(range(2, 52))
    assert got == expected
    assert lines[-1] == "summary received=50 gaps=0 missed=0"


def test_subscribers_over_the_cap_refused_counted_and_logged_once(
    publisher_factory: Callable[..., SignalPublisher],
    sock_path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    publisher = publisher_factory(max_subscribers=2)
    first, second = SignalSubscriber(sock_path, timeout_s=10.0), SignalSubscriber(sock_path)
    try:
        assert publisher.subscribers == 2
        with caplog.at_level(logging.WARNING, logger="celeris.serving.feed"):
            for _ in range(3):
                with pytest.raises(FeedError, match="max_subscribers"):
                    SignalSubscriber(sock_path)
        stats = publisher.stats()
        assert (stats["subscribers"], stats["refused"], stats["max_subscribers"]) == (2, 3, 2)
        assert stats["connected_total"] == 2
        refusals = [r for r in caplog.records if "refuses subscribers" in r.getMessage()]
        assert len(refusals) == 1  # one line per run of refusals, not one per connection
        publisher.publish(1, 1, 0.5)
        assert next(first).sequence == 1  # those admitted are served as before
        second.close()
        deadline = time.monotonic() + 10.0
        while publisher.subscribers == 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        third = SignalSubscriber(sock_path)  # room again: admitted
        assert publisher.subscribers == 2
        third.close()
    finally:
        first.close()
        second.close()


def test_publisher_bad_max_subscribers_raises(sock_path: str) -> None:
    with pytest.raises(ConfigError, match="max_subscribers must be >= 1"):
        SignalPublisher(sock_path, max_subscribers=0)
    with pytest.raises(CelerisTypeError, match="max_subscribers must be an int"):
        SignalPublisher(sock_path, max_subscribers=2.5)  # type: ignore[arg-type]
