"""Shared fixtures of the serving tests: tiny saved checkpoints, a real Redis, a metrics recorder.

Fixtures (all documented where they are defined):

- ``tiny_checkpoint_factory`` (session): ``make(kind="cnn_lstm", seed=0, input_size=16,
  horizon=4, n_features=3) -> Path``, a tiny saved checkpoint with a fitted scaler, built once
  per argument set (~0.1 s). Different seeds give different weights, so two "versions" of a
  model answer differently.
- ``tiny_checkpoint`` (session): the default CNN+LSTM checkpoint of the factory.
- ``make_histories``: ``make(n, input_size=16, n_features=3, seed=0) -> [n, L, C] float32``
  random-walk price histories around 100.
- ``redis_server``: a real ``redis-server`` on a free loopback port, without persistence
  (``--save '' --appendonly no``), killed after the test; ``.kill()`` and ``.start()`` take it
  down and bring it back on the same port mid-test. Skips when ``redis-server`` is missing
  (``make system-deps`` installs it).
- ``postgres_server`` (session) and ``postgres_url``: a real PostgreSQL cluster made by
  ``initdb`` in a temporary directory on a free loopback port (trust auth, fsync off), and a
  fresh empty database per test, dropped afterwards. Skips when PostgreSQL is missing
  (``make system-deps`` installs it).
- ``recording_metrics``: a :class:`~celeris.serving.batcher.MetricsSink` that keeps every call
  in lists, for asserting batch sizes, outcomes and cache events.

Torch runs on one thread in every serving test (small shared machines).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REDIS_START_TIMEOUT_S = 10.0
POSTGRES_START_TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    """Run torch on one thread (set per test: numba's OpenMP layer can reset it)."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="session")
def tiny_checkpoint_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Path]:
    """Return ``make(kind="cnn_lstm", *, seed=0, input_size=16, horizon=4, n_features=3)``.

    ``make`` saves (once per argument set) a tiny untrained model of the registry's ``kind``
    (``"cnn_lstm"`` or ``"nhits"``) built from its ``tiny_config``, with a
    :class:`~celeris.models.data.StandardScaler` fitted on random walks around 100, and
    returns the checkpoint directory. Load it with
    ``Predictor.load(path, backend="torch", threads=1)``.
    """
    import safetensors  # noqa: F401  (a dev extra: missing is a failure)
    import torch

    built: dict[tuple[Any, ...], Path] = {}
    root = tmp_path_factory.mktemp("serving-checkpoints")

    def make(
        kind: str = "cnn_lstm",
        *,
        seed: int = 0,
        input_size: int = 16,
        horizon: int = 4,
        n_features: int = 3,
    ) -> Path:
        args = (kind, seed, input_size, horizon, n_features)
        if args in built:
            return built[args]

        from celeris.models.catalogue import build_model, get_model
        from celeris.models.checkpoint import save_checkpoint
        from celeris.models.data import StandardScaler

        torch.manual_seed(seed)
        config = get_model(kind).tiny_config(input_size, horizon, n_features)
        model = build_model(kind, **config).eval()
        rng = np.random.default_rng(seed)
        scaler = StandardScaler().fit(100 + rng.standard_normal((500, n_features)).cumsum(axis=0))
        directory = root / f"{kind}-s{seed}-L{input_size}-H{horizon}-C{n_features}"
        save_checkpoint(
            model,
            directory,
            scaler=scaler,
            meta={"input_size": input_size, "horizon": horizon, "n_features": n_features},
        )
        built[args] = directory
        return directory

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_factory: Callable[..., Path]) -> Path:
    """The factory's default: a tiny CNN+LSTM, ``input_size=16, horizon=4, n_features=3``."""
    return tiny_checkpoint_factory("cnn_lstm")


@pytest.fixture
def make_histories() -> Callable[..., np.ndarray]:
    """Return ``make(n, input_size=16, n_features=3, seed=0) -> [n, L, C]`` float32 histories."""

    def make(n: int, input_size: int = 16, n_features: int = 3, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        steps = rng.standard_normal((n, input_size, n_features))
        return (100 + steps.cumsum(axis=1)).astype(np.float32)

    return make


# ---------------------------------------------------------------------------- redis


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(
    process: subprocess.Popen[bytes], name: str, up: Callable[[], bool], timeout_s: float
) -> bool:
    """Poll ``up()`` until it is true (True) or ``timeout_s`` passes (False).

    Raises RuntimeError with the server's stderr if the process exits first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"{name} exited with {process.returncode}: {err}")
        if up():
            return True
        time.sleep(0.01)
    return False


@dataclasses.dataclass
class RedisServer:
    """A ``redis-server`` process on 127.0.0.1:``port`` that a test can kill and restart."""

    executable: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return ``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again) on the same port; return once it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        if not _wait_until_up(self.process, "redis-server", self.ping, REDIS_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"redis-server did not answer on port {self.port} in time")

    def ping(self) -> bool:
        """Return whether the server answers ``PING``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """Kill the server (SIGKILL, no shutdown) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def client(self) -> Any:
        """Return a redis-py client of this server."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server for one test (fresh, empty, killed afterwards)."""
    import redis  # noqa: F401  (a dev extra: missing is a failure)

    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: run `make system-deps`")
    server = RedisServer(executable, free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


# ---------------------------------------------------------------------------- postgresql


@dataclasses.dataclass
class PostgresServer:
    """A throw-away PostgreSQL cluster (``initdb`` + ``postgres``) on 127.0.0.1:``port``.

    PostgreSQL refuses to run as root, so under root every command runs as the ``postgres``
    system user (Debian's package creates it) and the data directory is handed to that user.
    """

    bindir: Path
    port: int
    datadir: Path
    process: subprocess.Popen[bytes] | None = None

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def url(self, database: str = "postgres") -> str:
        """Return ``postgresql://celeris@127.0.0.1:PORT/DATABASE`` (trust auth, loopback)."""
        return f"postgresql://celeris@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Create the cluster and start the server; return once it accepts connections."""
        import psycopg

        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "PostgreSQL cannot run as root and there is no postgres user"
                ) from None
            os.chown(self.datadir, owner.pw_uid, owner.pw_gid)
        subprocess.run(
            self._as_owner(
                [str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "celeris",
                 "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]
            ),
            check=True, capture_output=True,
        )  # fmt: skip
        self.process = subprocess.Popen(
            self._as_owner(
                [str(self.bindir / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                 "-k", str(self.datadir), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
            ),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

        def accepts() -> bool:
            try:
                psycopg.connect(self.url(), connect_timeout=1).close()
                return True
            except psycopg.OperationalError:
                return False

        if not _wait_until_up(self.process, "postgres", accepts, POSTGRES_START_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"postgres did not accept connections on port {self.port} in time")

    def create_database(self) -> str:
        """Create an empty database with a fresh name; return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing connections a test may have left open)."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            # pg_ctl's fast mode: ends open sessions instead of waiting for them.
            stop = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop"]
            subprocess.run(self._as_owner(stop), capture_output=True, timeout=30)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


def _postgres_bindir() -> Path | None:
    """Return the directory of ``initdb`` and ``postgres``: Debian's newest, else on PATH."""

    def version(initdb: Path) -> tuple[int, ...]:  # /usr/lib/postgresql/15/bin/initdb, 9.6...
        return tuple(int(part) for part in initdb.parts[-3].split(".") if part.isdigit())

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (per xdist worker), removed afterwards."""
    import psycopg  # noqa: F401  (a dev extra: missing is a failure)

    bindir = _postgres_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: run `make system-deps`")
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # the postgres user when the tests run as root.
    datadir = Path(tempfile.mkdtemp(prefix="celeris-pg-"))
    server = PostgresServer(bindir, free_port(), datadir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


# ---------------------------------------------------------------------------- metrics


@dataclasses.dataclass
class RecordingMetrics:
    """A ``MetricsSink`` that keeps every call, for assertions."""

    requests: list[tuple[str, str, str, float, str]] = dataclasses.field(default_factory=list)
    batches: list[tuple[str, str, int, float]] = dataclasses.field(default_factory=list)
    queue: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    cache_events: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    cache_errors: list[str] = dataclasses.field(default_factory=list)
    errors: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def observe_request(
        self, model: str, version: str, priority: str, seconds: float, outcome: str
    ) -> None:
        self.requests.append((model, version, priority, seconds, outcome))

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        self.batches.append((model, version, size, seconds))

    def set_queue(self, model: str, version: str, items: int) -> None:
        self.queue.append((model, version, items))

    def cache_event(self, tier: str, hit: bool) -> None:
        self.cache_events.append((tier, hit))

    def cache_error(self, tier: str) -> None:
        self.cache_errors.append(tier)

    def error(self, model: str, kind: str) -> None:
        self.errors.append((model, kind))

    def outcomes(self) -> dict[str, int]:
        """Return the number of requests per outcome."""
        counts: dict[str, int] = {}
        for *_, outcome in self.requests:
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def batch_sizes(self) -> list[int]:
        """Return the size of every batch, in order."""
        return [size for _, _, size, _ in self.batches]


@pytest.fixture
def recording_metrics() -> RecordingMetrics:
    """A fresh :class:`RecordingMetrics`."""
    return RecordingMetrics()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``celeris train`` output (tiny NHITS, input 20, horizon 2, one feature): weights, the
    ONNX fp32 + int8 exports and their verification record ``exports.json``."""
    from celeris.data import load
    from celeris.models.catalogue import build_model
    from celeris.models.pipeline import train_on_bars

    tiny = build_model("nhits", input_size=20, horizon=2).tiny_config(20, 2, 1)
    trained = train_on_bars(
        "nhits", load("sample:sp500").iloc[-600:], tmp_path_factory.mktemp("trained") / "m",
        input_size=20, horizon=2, model_options=tiny, max_steps=3, batch_size=32,
        precision="fp32", progress=False,
    )  # fmt: skip
    return trained.directory
