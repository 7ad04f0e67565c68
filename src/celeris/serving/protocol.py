"""The HTTP/1.1 connection protocol of ``celeris serve``: uvicorn's httptools protocol plus the
limits it lacks.

uvicorn's httptools protocol reads a request head of any size and waits for the rest of a
request forever (its one timer is the keep-alive between requests, armed only after a
response): measured before this module, 100 clients sending 5 MB headers held 480 MB and 3,000
half-sent requests were never dropped. :func:`guarded_protocol` returns a subclass that

* answers 431 and closes once a request's line and headers exceed ``max_header_bytes`` (bytes
  are counted as they arrive, so a slow giant header is cut off at the limit, not buffered);
* answers 408 and closes when a request's head is still incomplete ``header_timeout_s`` after
  its first byte (slowloris);
* closes the connection when the body is still incomplete ``body_timeout_s`` after the head,
  unless the server itself paused reading (flow control); the application sees a disconnect;
* closes a connection that sends nothing within the keep-alive time after it opens;
* logs uvicorn's per-request warnings ("Exceeded concurrency limit." for every request refused
  past ``max_connections``) at most once per :data:`WARNING_INTERVAL_S` each, with the count
  of the ones held back, and malformed requests at DEBUG: a client must not be able to flood
  the log.

The per-request cost is one timer (armed at the request's first byte, cancelled at its last)
and an addition per received chunk and per header.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("celeris.serving")

WARNING_INTERVAL_S = 10.0


class _ThrottledWarnings(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's ``uvicorn.error`` logger, with each distinct warning at most once per
    :data:`WARNING_INTERVAL_S` (errors and other levels pass through)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self._last: dict[str, tuple[float, int]] = {}  # message -> (logged at, held back)

    @property
    def level(self) -> int:  # uvicorn reads logger.level to decide on TRACE logging
        return self.logger.level

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        now = time.monotonic()
        key = str(msg)
        last, held = self._last.get(key, (-WARNING_INTERVAL_S, 0))
        if now - last < WARNING_INTERVAL_S:
            self._last[key] = (last, held + 1)
            return
        self._last[key] = (now, 0)
        if held:
            msg = f"{msg} ({held} more in the last {WARNING_INTERVAL_S:g} s not logged)"
        self.logger.warning(msg, *args, **kwargs)


_UVICORN_LOG = _ThrottledWarnings(logging.getLogger("uvicorn.error"))


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing an oversized head."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head-size and read-time limits (see the module)."""

    max_header_bytes: int = 32 << 10
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _UVICORN_LOG  # type: ignore[assignment]
        self._in_head = True  # waiting for (the rest of) a request line and headers
        self._head_received = 0  # bytes received since the head began, while in the head
        self._head_size = 0  # bytes of the URL and headers the parser reported
        self._body_deadline = 0.0
        self._read_timer: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn arms its keep-alive timer only after a response: a connection that never
        # sends a byte would be held forever.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but an oversized head is 431 and a malformed request logs at DEBUG:
        # uvicorn's WARNING per bad request lets any client flood the log.
        if self._in_head:
            self._head_received += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(431, "request line and headers exceed the limit")
            else:  # an exception of the application's callbacks: uvicorn's answer
                log.debug("invalid HTTP request: %s", exc.__context__ or exc)
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            log.debug("invalid HTTP request: %s", exc)
            self.send_400_response("Invalid HTTP request received.")
            return
        if self._in_head and self._head_received > self.max_header_bytes:
            # Still no complete head after the limit's worth of bytes (a chunk may hold the
            # head's end and part of a body, hence the check after parsing it).
            self._refuse(431, "request line and headers exceed the limit")

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_size = 0
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.header_timeout_s, self._read_timeout)

    def on_url(self, url: bytes) -> None:
        self._grow_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value) + 4)  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_received = 0
        self._body_deadline = self.loop.time() + self.body_timeout_s
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        super().on_message_complete()

    # -- limits -------------------------------------------------------------------------------

    def _grow_head(self, n: int) -> None:
        # The parser hands over whole headers, so one received chunk could hold a head over
        # the limit: this catches it (data_received catches heads spread over chunks).
        self._head_size += n
        if self._head_size > self.max_header_bytes:
            raise _HeadTooLarge  # data_received answers 431

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timeout(self) -> None:
        self._read_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, "request head not received in time")
            return
        remaining = self._body_deadline - self.loop.time()
        if remaining > 0 or (self.flow is not None and self.flow.read_paused):
            # The body's own deadline is later, or the server paused reading: not the client.
            self._read_timer = self.loop.call_later(max(remaining, 1.0), self._read_timeout)
            return
        log.debug("closing a connection whose request body did not arrive in time")
        self.transport.close()  # the application's receive() reports the disconnect

    def _refuse(self, status: int, reason: str) -> None:
        """Answer ``status`` with ``reason`` and close, unless a response is under way."""
        self._cancel_read_timer()
        if self.transport is None or self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            body = reason.encode("ascii")
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: %d\r\n" % len(body),
                        b"connection: close\r\n\r\n",
                        body,
                    ]
                )
            )
        log.debug("refused a request with %d: %s", status, reason)
        self.transport.close()


def guarded_protocol(
    *, max_header_bytes: int, header_timeout_s: float, body_timeout_s: float
) -> type[GuardedHttpToolsProtocol]:
    """Return a :class:`GuardedHttpToolsProtocol` subclass with these limits (for
    ``uvicorn.Config(http=...)``)."""
    return type(
        "CelerisHttpProtocol",
        (GuardedHttpToolsProtocol,),
        {
            "max_header_bytes": int(max_header_bytes),
            "header_timeout_s": float(header_timeout_s),
            "body_timeout_s": float(body_timeout_s),
        },
    )
