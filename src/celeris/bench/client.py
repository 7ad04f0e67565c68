"""A minimal keep-alive HTTP/1.1 client on :class:`asyncio.Protocol`.

Why hand-written: on the 2-core development machine ``httpx.AsyncClient`` spent ~700 us of
client CPU per request (p50 ~0.8-1.0 ms against a trivial server) and a raw
:class:`asyncio.Protocol` client ~35 us (p50 ~0.1 ms): with the client and the server sharing
two cores, httpx would have measured mostly itself. One connection has at most one request in
flight (it never pipelines); it writes prebuilt request bytes and parses ``Content-Length`` and
chunked responses.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

MAX_HEADER_BYTES = 64 * 1024


class ProtocolError(Exception):
    """The answer is not a well-formed HTTP/1.x response (counted as ``"protocol"``)."""


class Connection(asyncio.Protocol):
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
        except ProtocolError as exc:
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
                    raise ProtocolError("response headers too large")
                return
            self._head = parse_head(bytes(buf[:end]), end + 4)
        status, length, chunked, close, start = self._head
        if length is not None:
            stop = start + length
            if len(buf) < stop:
                return
            body = bytes(buf[start:stop])
        elif chunked:
            found = parse_chunked(buf, start)
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


def parse_head(head: bytes, body_start: int) -> tuple[int, int | None, bool, bool, int]:
    """Return ``(status, content_length, chunked, close, body_start)`` of a response head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ProtocolError(f"bad status code {parts[1][:10]!r}") from None
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
                raise ProtocolError(f"bad Content-Length {value[:20]!r}") from None
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


def parse_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
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
            raise ProtocolError("bad chunk size") from None
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


class Client:
    """A worker's connection: reopened after an error, with a per-request timeout."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.conn: Connection | None = None

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

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Connection:
        # a connect past the timeout raises TimeoutError, counted as "timeout"
        _, conn = await asyncio.wait_for(
            loop.create_connection(Connection, self.host, self.port), self.timeout_s
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


def _expire(fut: asyncio.Future[Any], conn: Connection) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no answer in time"))
        conn.close()  # the late answer would be read as the next request's


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ProtocolError):
        return "protocol"
    return "connection"
