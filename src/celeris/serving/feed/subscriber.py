"""The signal feed's subscriber: connects to a publisher's socket and yields its records."""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import Self

from celeris.errors import CelerisError
from celeris.serving.errors import FeedError, WireFormatError
from celeris.serving.feed.wire import (
    HELLO_SIZE,
    SignalRecord,
    StreamDecoder,
    _check_socket_path,
    decode_hello,
)


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
