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

Modules: :mod:`~celeris.serving.feed.wire` (the record and hello formats, pure functions),
:mod:`~celeris.serving.feed.publisher` (the socket server), and
:mod:`~celeris.serving.feed.subscriber` (the client). Every name is importable from here.
The publish-to-receive latency benchmark is :mod:`celeris.bench.feed_latency`.
"""

from __future__ import annotations

from celeris.serving.errors import FeedError, WireFormatError
from celeris.serving.feed.publisher import SignalPublisher
from celeris.serving.feed.subscriber import SignalSubscriber
from celeris.serving.feed.wire import (
    CRC_OFFSET,
    FLAGS_V1,
    HELLO_DTYPE,
    HELLO_MAGIC,
    HELLO_SIZE,
    MAGIC,
    MAX_HORIZON,
    RECORD_DTYPE,
    RECORD_SIZE,
    RESERVED_SIZE,
    VERSION,
    Hello,
    Signal,
    SignalRecord,
    StreamDecoder,
    decode,
    decode_hello,
    decode_many,
    encode,
    encode_hello,
)

__all__ = [
    "CRC_OFFSET",
    "FLAGS_V1",
    "HELLO_DTYPE",
    "HELLO_MAGIC",
    "HELLO_SIZE",
    "MAGIC",
    "MAX_HORIZON",
    "RECORD_DTYPE",
    "RECORD_SIZE",
    "RESERVED_SIZE",
    "VERSION",
    "FeedError",
    "Hello",
    "Signal",
    "SignalPublisher",
    "SignalRecord",
    "SignalSubscriber",
    "StreamDecoder",
    "WireFormatError",
    "decode",
    "decode_hello",
    "decode_many",
    "encode",
    "encode_hello",
]
