"""The signal feed's publisher: a Unix socket server that never waits on a subscriber.

Each subscriber has a bounded ring of records; when a consumer is too slow the oldest queued
records are dropped and it sees a sequence gap. Every subscriber costs each publish a send
(and a ring of up to 512 KiB), so their number is capped (``max_subscribers``): a connection
over the cap is closed before its hello, counted in ``stats()["refused"]`` and logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import numpy as np

from celeris.checks import check_int
from celeris.serving.errors import FeedError
from celeris.serving.feed.wire import (
    RECORD_SIZE,
    SignalRecord,
    _check_socket_path,
    encode,
    encode_hello,
    encode_many,
)

logger = logging.getLogger("celeris.serving.feed")

_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)  # a vanished peer raises EPIPE, not SIGPIPE
_FLUSH_RECORDS = 256  # records moved from a ring into one write (32 KiB)
_RETRY_EVERY = 64  # a blocked subscriber's socket is retried inline every this many publishes


def _split(blob: bytes, start: int = 0) -> list[bytes]:
    """The records of an encoded blob, from byte ``start``."""
    return [blob[at : at + RECORD_SIZE] for at in range(start, len(blob), RECORD_SIZE)]


class _Subscriber:
    __slots__ = (
        "blocked",
        "cap",
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
        self.cap = 0  # ring size (the publisher's, plus the backlog it was handed on joining)


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
    first_sequence
        Sequence number of the first record (default 1). A publisher that restarts a journaled
        stream (``celeris live``) continues its numbering, so that a record's sequence is its
        id across restarts; a record republished after a crash keeps its id.
    retain
        Records published while no subscriber is connected are kept, up to this many (default
        0: none), and handed to the next subscriber right after its hello, whose
        ``next_sequence`` is then the first kept record's: a consumer that was away (the
        trading engine restarting) still gets them. Past ``retain`` the oldest kept record is
        dropped (counted in ``stats()["retained_dropped"]``). :attr:`delivered_through` says
        up to which sequence every record reached a subscriber (``celeris live`` journals a
        signal as published only then).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_buffer_records: int = 4096,
        mode: int = 0o600,
        max_subscribers: int = 64,
        first_sequence: int = 1,
        retain: int = 0,
    ) -> None:
        max_buffer_records = check_int("max_buffer_records", max_buffer_records, minimum=1)
        self.retain = check_int("retain", retain, minimum=0)
        self._retained: deque[bytes] = deque()  # records no subscriber has had, oldest first
        self._retained_first = first_sequence  # sequence of the first of them
        self._retained_dropped = 0
        first_sequence = check_int("first_sequence", first_sequence, minimum=1)
        max_subscribers = check_int("max_subscribers", max_subscribers, minimum=1)
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
        self._next_seq = first_sequence
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
            if not self._subs and self.retain:
                self._keep([data])
            return record.sequence

    def publish_many(
        self,
        symbol_ids: Any,
        signals: Any,
        confidences: Any,
        forecasts: Any = None,
        model_versions: Any = None,
        ts_ns: int | None = None,
    ) -> int:
        """Publish ``n`` records at once, numbered consecutively; return the first sequence.

        The fields are arrays of length ``n`` (``forecasts`` ``(n, h)`` or None); they are
        checked and encoded in one pass (:func:`~celeris.serving.feed.wire.encode_many`: the
        bytes :meth:`publish` would send record by record) before any is sent, so a bad one
        raises :class:`WireFormatError` and consumes no sequence number. A subscriber with room
        gets them in one write. Same guarantees as :meth:`publish` otherwise (``celeris live``
        sends a bar's signals for all its symbols this way).
        """
        with self._lock:
            if self._closing:
                raise FeedError(f"the signal publisher on {self.path!r} is closed")
            first = self._next_seq
            ts = time.time_ns() if ts_ns is None else ts_ns
            blob = encode_many(first, ts, symbol_ids, signals, confidences, forecasts,
                               model_versions)  # fmt: skip
            n = len(blob) // RECORD_SIZE
            if not n:
                return first
            self._next_seq += n
            self._published += n
            for sub in self._subs:
                self._deliver_many(sub, blob)
            if not self._subs and self.retain:
                self._keep(_split(blob))
            return first

    def _keep(self, records: list[bytes]) -> None:
        """Retain records published with no subscriber (lock held), the oldest dropped past
        ``retain``."""
        if not self._retained:
            self._retained_first = self._next_seq - len(records)
        self._retained.extend(records)
        over = len(self._retained) - self.retain
        if over > 0:
            for _ in range(over):
                self._retained.popleft()
            self._retained_first += over
            if not self._retained_dropped:
                logger.warning(
                    "signal feed on %s: no subscriber for %d records, dropping the oldest "
                    "(retain=%d)", self.path, self.retain + over, self.retain,
                )  # fmt: skip
            self._retained_dropped += over

    def _deliver_many(self, sub: _Subscriber, blob: bytes) -> None:
        """:meth:`_deliver` of consecutive records: one send when the subscriber has room; what
        it does not take is split back into records and queued as :meth:`_deliver` would."""
        if sub.blocked:
            for record in _split(blob):
                self._deliver(sub, record)
            return
        try:
            n = sub.sock.send(blob, _SEND_FLAGS)
        except BlockingIOError:
            n = 0
        except OSError:
            self._kill(sub)
            return
        whole, rest = divmod(n, RECORD_SIZE)
        sub.sent += whole
        if n == len(blob):
            return
        at = whole * RECORD_SIZE
        if rest:
            sub.partial = memoryview(blob[at : at + RECORD_SIZE])[rest:]
            sub.sent += 1
        else:
            sub.queue.append(blob[at : at + RECORD_SIZE])
        self._block(sub)
        for record in _split(blob, at + RECORD_SIZE):
            self._deliver(sub, record)

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
        if len(sub.queue) >= sub.cap:
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
                # Registered under the lock: every record published after the hello reaches it,
                # and so do the records kept while nobody was there (its hello starts at them).
                backlog = self._retained
                hello = encode_hello(self._retained_first if backlog else self._next_seq)
                try:
                    n = conn.send(hello, _SEND_FLAGS)
                except OSError:
                    conn.close()
                    continue
                sub.cap = self.max_buffer_records + len(backlog)
                if n < len(hello):
                    sub.partial = memoryview(hello)[n:]
                    sub.blocked = True
                if backlog:  # queued whole (the I/O thread writes it): never dropped as "slow"
                    sub.queue.extend(backlog)
                    sub.blocked = True
                    self._retained = deque()
                    logger.info("signal subscriber %d gets %d record(s) kept for it", self._next_id
                                - 1, len(backlog))  # fmt: skip
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
    def delivered_through(self) -> int:
        """Sequence up to which every record went to a subscriber (its socket, or its queue
        while the socket is full), or was dropped for one; records kept for a subscriber yet
        to come (``retain``) are not."""
        with self._lock:
            return self._retained_first - 1 if self._retained else self._next_seq - 1

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
                "retained": len(self._retained),
                "retained_dropped": self._retained_dropped,
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
