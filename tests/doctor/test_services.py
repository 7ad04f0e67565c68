"""The service checks against real servers: a registry with real artifacts (one tampered),
redis-server, PostgreSQL, a TCP port held by a stranger, and the signal socket's path."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from celeris.doctor import DoctorOptions, Report, Status, run_doctor
from celeris.serving.registry import ModelRegistry
from tests.serving.conftest import (  # noqa: F401  (fixtures)
    PostgresServer,
    RedisServer,
    free_port,
    postgres_server,
    postgres_url,
    redis_server,
    tiny_checkpoint,
    tiny_checkpoint_factory,
)


def _full(**options: object) -> Report:
    return run_doctor(DoctorOptions(timeout_s=1.0, **options))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ registry


@pytest.fixture
def registry(doctor_env: pytest.MonkeyPatch, tmp_path: Path, tiny_checkpoint: Path) -> Path:  # noqa: F811
    """A SQLite registry with two versions of ``btc`` (one in production), set as
    ``CELERIS_SERVE_REGISTRY``."""
    root = tmp_path / "registry"
    reg = ModelRegistry(root)
    reg.register("btc", tiny_checkpoint, stage="production")
    reg.register("btc", tiny_checkpoint)
    doctor_env.setenv("CELERIS_SERVE_REGISTRY", str(root))
    return root


def test_registry_every_artifact_hash_verified_ok(registry: Path) -> None:
    from celeris.doctor.runner import build_context
    from celeris.doctor.services import check_registry

    finding = check_registry(build_context(DoctorOptions()))
    assert finding.status is Status.OK, finding.summary
    assert finding.details["versions"] == 2 and finding.details["verified"] == 2
    assert finding.details["bytes_hashed"] > 0 and "1 in production" in finding.summary


def test_registry_tampered_artifact_fails_exit_1_with_fix(registry: Path) -> None:
    weights = next((registry / "artifacts" / "btc" / "2").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    report = _full()
    check = report.get("registry")
    assert check.status is Status.FAIL and report.exit_code == 1
    assert "1 of 2 artifacts" in check.summary and "btc@2" in check.summary
    assert check.fix and "re-register" in check.fix


def test_registry_configured_model_missing_fails(
    registry: Path, doctor_env: pytest.MonkeyPatch
) -> None:
    doctor_env.setenv("CELERIS_SERVE_MODELS", "btc@production,eth@production")
    check = _full().get("registry")
    assert check.status is Status.FAIL and "eth@production" in check.summary
    assert check.fix and "CELERIS_SERVE_MODELS" in check.fix


def test_registry_absent_with_models_configured_fails(doctor_env: pytest.MonkeyPatch) -> None:
    doctor_env.setenv("CELERIS_SERVE_MODELS", "btc@production")
    check = _full().get("registry")
    assert check.status is Status.FAIL and "no registry at" in check.summary
    assert check.fix and "celeris models register" in check.fix


# -------------------------------------------------------------------------- redis, postgresql


def test_redis_up_ok_then_down_fails_with_fix(
    doctor_env: pytest.MonkeyPatch,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    doctor_env.setenv("CELERIS_SERVE_REDIS", redis_server.url)
    check = _full().get("redis")
    assert check.status is Status.OK, check.summary
    assert check.details["write_read"] is True and check.details["version"]
    redis_server.kill()
    report = _full()
    check = report.get("redis")
    assert check.status is Status.FAIL and report.exit_code == 1
    assert check.fix and "redis-cli" in check.fix and redis_server.url in check.fix


def test_redis_password_never_printed(doctor_env: pytest.MonkeyPatch) -> None:
    url = f"redis://user:s3cret-pass@127.0.0.1:{free_port()}/0"
    doctor_env.setenv("CELERIS_SERVE_REDIS", url)
    text = json.dumps(_full().to_json())
    assert "s3cret-pass" not in text and "user:***@" in text


def test_postgres_registry_url_ok_then_unreachable_fails(
    doctor_env: pytest.MonkeyPatch,
    postgres_url: str,  # noqa: F811
) -> None:
    doctor_env.setenv("CELERIS_SERVE_REGISTRY_URL", postgres_url)
    report = _full()
    check = report.get("postgres")
    assert check.status is Status.OK, check.summary
    assert check.details["version"] and check.details["connect_ms"] > 0
    assert report.get("registry").status is Status.OK  # the tables are created on open
    doctor_env.setenv("CELERIS_SERVE_REGISTRY_URL", f"postgresql://x@127.0.0.1:{free_port()}/db")
    report = _full()
    assert report.get("postgres").status is Status.FAIL
    assert report.get("registry").status is Status.FAIL and report.exit_code == 1
    assert "CELERIS_SERVE_REGISTRY_URL" in (report.get("postgres").fix or "")


# --------------------------------------------------------------------------- ports, socket


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthz_server() -> Iterator[int]:
    """An HTTP server answering ``/healthz`` as ``celeris serve`` does; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_ports_held_by_stranger_fails_by_healthz_server_ok(
    doctor_env: pytest.MonkeyPatch, healthz_server: int
) -> None:
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        doctor_env.setenv("CELERIS_SERVE_PORT", str(port))
        report = run_doctor(DoctorOptions(quick=True, ports=(healthz_server,), timeout_s=0.3))
    check = report.get("ports")
    assert check.status is Status.FAIL and report.exit_code == 1
    assert f"127.0.0.1:{port} is in use by something that is not a Celeris server" in check.summary
    assert check.fix and "CELERIS_SERVE_PORT" in check.fix
    assert check.details["ports"] == {str(port): "busy", str(healthz_server): "celeris"}


def test_ports_host_not_on_this_machine_fails(doctor_env: pytest.MonkeyPatch) -> None:
    doctor_env.setenv("CELERIS_SERVE_HOST", "192.0.2.1")  # TEST-NET-1: never local
    check = run_doctor(DoctorOptions(quick=True)).get("ports")
    assert check.status is Status.FAIL and "not an address of this machine" in check.summary


def _socket_check(doctor_env: pytest.MonkeyPatch, path: Path) -> tuple[Status, str, str]:
    doctor_env.setenv("CELERIS_SERVE_SOCKET", str(path))
    check = run_doctor(DoctorOptions(quick=True)).get("socket")
    return check.status, check.summary, check.fix or ""


def test_socket_path_rules(doctor_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    status, summary, _ = _socket_check(doctor_env, tmp_path / "feed.sock")
    assert status is Status.OK and "is free" in summary
    status, summary, fix = _socket_check(doctor_env, tmp_path / ("x" * 120) / "feed.sock")
    assert status is Status.FAIL and "107" in summary and "shorter path" in fix
    status, summary, fix = _socket_check(doctor_env, tmp_path / "missing" / "feed.sock")
    assert status is Status.FAIL and "does not exist" in summary and "mkdir -p" in fix
    (tmp_path / "file.sock").write_text("")
    status, summary, fix = _socket_check(doctor_env, tmp_path / "file.sock")
    assert status is Status.FAIL and "not a socket" in summary and "remove" in fix


def test_socket_listening_publisher_and_stale_file_ok(
    doctor_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen()
        status, summary, _ = _socket_check(doctor_env, path)
        assert status is Status.OK and "a publisher is listening" in summary
    status, summary, _ = _socket_check(doctor_env, path)  # closed: the file stays behind
    assert status is Status.OK and "stale socket file" in summary


def test_registry_empty_opens_ok(doctor_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ModelRegistry(tmp_path / "empty")
    doctor_env.setenv("CELERIS_SERVE_REGISTRY", str(tmp_path / "empty"))
    check = _full().get("registry")
    assert check.status is Status.OK and "no model registered yet" in check.summary
