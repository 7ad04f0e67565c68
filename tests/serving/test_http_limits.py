"""Connection limits of ``celeris serve`` against a real server process, with raw sockets:
oversized heads (431), slow heads (408), slow bodies and idle connections (closed), clients
that leave mid-body (counted, never an ERROR line), and the connection limit (503).

One server process for the module, with small limits from ``CELERIS_SERVE_*`` variables. The
socket timeouts below are guards against a hung test, not measurements.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch  # noqa: F401  (a dev extra: missing is a failure)

L, H, C = 16, 4, 3
GUARD_S = 30.0  # longest any socket read may block before the test fails
MAX_HEADER_BYTES = 8192
MAX_CONNECTIONS = 6


class ServeProcess:
    """``celeris serve`` in a subprocess; its stderr goes to a file the tests read."""

    def __init__(self, registry: Path, log: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "CELERIS_SERVE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
            "CELERIS_SERVE_HEADER_TIMEOUT_S": "1",
            "CELERIS_SERVE_BODY_TIMEOUT_S": "1",
            "CELERIS_SERVE_KEEPALIVE_S": "2",
        }
        self._stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celeris.cli.main", "serve", "--model", "btc@production",
             "--registry", str(registry), "--backend", "torch", "--port", str(self.port),
             "--poll", "0", "--max-connections", str(MAX_CONNECTIONS), "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=self._stderr, env=env,
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not get ready: " + self.log.read_text())

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=GUARD_S)
        return sock

    def metric(self, series: str) -> float:
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._stderr.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_factory: Callable[..., Path]
) -> Iterator[ServeProcess]:
    from celeris.serving.registry import ModelRegistry

    root = tmp_path_factory.mktemp("limits")
    checkpoint = tiny_checkpoint_factory("cnn_lstm", seed=0, input_size=L, horizon=H, n_features=C)
    ModelRegistry(root / "registry").register("btc", checkpoint, stage="production")
    proc = ServeProcess(root / "registry", root / "serve.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
        shutil.rmtree(root, ignore_errors=True)


def _read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (EOF or reset)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else -1


def test_oversized_header_in_one_chunk_gets_431_and_close(server):
    with server.connect() as sock:
        big = b"a" * (2 * MAX_HEADER_BYTES)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        answer = _read_all(sock)
    assert _status(answer) == 431, answer[:200]


def test_header_trickled_past_the_limit_is_cut_off_at_the_limit(server):
    sent = 0
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 100 * MAX_HEADER_BYTES:  # a 5 MB header used to be buffered whole
                # Stop at the answer: writing to a closed connection gets a reset, which can
                # discard the answer before it is read.
                if select.select([sock], [], [], 0.002)[0]:
                    break
                sock.sendall(b"a" * 1024)
                sent += 1024
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_all(sock)
    assert _status(answer) == 431, answer[:200]
    assert sent < 100 * MAX_HEADER_BYTES  # the server hung up long before the end


def test_incomplete_head_gets_408_after_the_header_timeout(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        answer = _read_all(sock)
    assert _status(answer) == 408, answer[:200]


def test_incomplete_body_is_disconnected_and_counted_without_an_error_log(server):
    series = 'celeris_errors_total{kind="client_disconnect",model=""}'
    before = server.metric(series)
    with server.connect() as sock:
        sock.sendall(
            b"POST /v1/models/btc/predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            b'{"inputs": [1'
        )
        answer = _read_all(sock)  # the server closes it after the body timeout
    assert answer == b""
    deadline = time.monotonic() + GUARD_S
    while server.metric(series) < before + 1:
        assert time.monotonic() < deadline, "the disconnect was not counted"
        time.sleep(0.05)


def test_clients_leaving_mid_body_are_counted_never_logged_as_errors(server):
    series = 'celeris_errors_total{kind="client_disconnect",model=""}'
    before = server.metric(series)
    for _ in range(30):
        with server.connect() as sock:
            sock.sendall(
                b"POST /v1/forecast HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                b'{"model": "btc", "histories": {"A": [1'
            )
    deadline = time.monotonic() + GUARD_S
    while server.metric(series) < before + 30:
        assert time.monotonic() < deadline, "disconnects were not counted"
        time.sleep(0.05)
    log = server.log.read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-2000:]
    assert " ERROR " not in log, log[-2000:]
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200


def test_malformed_requests_get_400_without_a_warning_each(server):
    for _ in range(20):
        with server.connect() as sock:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            assert _status(_read_all(sock)) == 400
    assert "Invalid HTTP request" not in server.log.read_text()


def test_idle_connection_is_closed_after_the_keepalive_time(server):
    with server.connect() as sock:
        assert _read_all(sock) == b""  # closed by the server, nothing sent either way


def test_connections_past_max_connections_get_503_logged_once_then_recover(server):
    idle = [server.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        for _ in range(20):
            with server.connect() as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = _read_all(sock)
            assert _status(answer) == 503, answer[:200]
    finally:
        for sock in idle:
            sock.close()
    # uvicorn logs a WARNING per refused request; throttled, 20 refusals are one line (two if
    # the burst straddles the throttle's interval).
    assert 1 <= server.log.read_text().count("Exceeded concurrency limit") <= 2
    deadline = time.monotonic() + GUARD_S
    while httpx.get(server.url + "/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_requests_within_the_limits_are_answered(server):
    x = [[[100.0 + i + k for k in range(C)] for i in range(L)]]
    r = httpx.post(
        server.url + "/v1/models/btc/predict",
        json={"inputs": x},
        headers={"X-Padding": "p" * (MAX_HEADER_BYTES // 2)},
        timeout=30,
    )
    assert r.status_code == 200, r.text
