"""Research on a real two-node Ray cluster on this machine: results equal the local run's.

One cluster for the module (``ray start --head`` and ``ray start --address`` on loopback, token
authentication on, torn down at the end): starting Ray costs ~10 s on two cores.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from celeris import ConfigError
from celeris.backtest import sweep, walk_forward
from celeris.compute.ray_exec import (
    RayExecutor,
    RayTaskError,
    connect,
    resolve_executor,
    run_tasks,
)

GRID = {"fast": [5, 10, 20, 40], "slow": [30, 50, 100, 200]}
AXES_GRID = {**GRID, "sl_stop": [None, 0.05], "fees": [0.0, 0.001]}
OPTS = dict(slippage=0.0005, year_days=252)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    ray = str(Path(sys.executable).with_name("ray"))
    with log.open("wb") as out:
        # --block: the command stays in the foreground and stops its node's processes on SIGTERM
        return subprocess.Popen(
            [ray, "start", "--block", "--disable-usage-stats", "--num-cpus", "1",
             "--node-ip-address", "127.0.0.1", "--include-log-monitor", "false",
             "--dashboard-agent-listen-port", str(_free_port()), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"ray start exited with {proc.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the Ray head did not open port {port} in 60 s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a head and a second node, one CPU each; this process connected to it."""
    import ray
    from ray._private.authentication_test_utils import reset_auth_token_state

    if ray.is_initialized():  # left by another module in this worker: connect() would reuse it
        ray.shutdown()

    root = tmp_path_factory.mktemp("ray")
    # Ray's session sockets live under --temp-dir and a Unix socket path is at most 107 bytes:
    # pytest's temporary paths (with xdist's popen-gwN in them) are too long for it
    temp = Path(tempfile.mkdtemp(prefix="cray-", dir="/tmp"))
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = {**os.environ, **auth, "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    with pytest.MonkeyPatch.context() as mp:
        for key, value in auth.items():
            mp.setenv(key, value)
        reset_auth_token_state()  # Ray reads the authentication settings once, on import
        try:
            head_log = root / "head.log"
            head = ["--head", "--port", str(port), "--include-dashboard", "false"]
            head += ["--dashboard-port", str(_free_port()), "--temp-dir", str(temp)]
            head += ["--ray-client-server-port", str(_free_port())]
            procs.append(_start(head, env, head_log))
            _wait_port(port, procs[0], head_log)
            procs.append(_start(["--address", address], env, root / "node.log"))
            connect(address)
            deadline = time.monotonic() + 60
            while sum(n["Alive"] for n in ray.nodes()) < 2:
                assert time.monotonic() < deadline, (root / "node.log").read_text()[-2000:]
                time.sleep(0.1)
            yield address
        finally:
            if ray.is_initialized():
                ray.shutdown()
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            shutil.rmtree(temp, ignore_errors=True)
    reset_auth_token_state()  # back to this process's own settings for later tests


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    from celeris.data import load

    return load("sample:sp500").iloc[-2000:]  # real daily bars (the arch package's)


# ---- the executor -----------------------------------------------------------------------------


def test_resolve_executor_names_map_to_configs() -> None:
    assert resolve_executor("local") is None and resolve_executor(None) is None
    assert resolve_executor("ray") == RayExecutor()
    given = RayExecutor(address="local", task_size=5)
    assert resolve_executor(given) is given


def test_resolve_executor_unknown_name_raises_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"unknown executor 'rey'.*did you mean 'ray'"):
        resolve_executor("rey")
    with pytest.raises(ConfigError, match="got int"):
        resolve_executor(3)  # type: ignore[arg-type]


def test_ray_executor_bad_fields_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="task_size"):
        RayExecutor(task_size=0)
    with pytest.raises(ConfigError, match="num_cpus"):
        RayExecutor(num_cpus=0)
    with pytest.raises(ConfigError, match="num_gpus"):
        RayExecutor(num_gpus=-1)
    with pytest.raises(ConfigError, match="did you mean 'max_retries'"):
        RayExecutor(retries=2)  # type: ignore[call-arg]


def test_connect_cluster_unreachable_raises_config_error_with_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    def unreachable(**kwargs: Any) -> None:
        raise ConnectionError(f"Failed to connect to Ray cluster at {kwargs['address']}")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    with pytest.raises(
        ConfigError, match=r"cannot reach a Ray cluster at '10.0.0.9:6379'.*ray start --head"
    ):
        connect("10.0.0.9:6379")


def _where(shared: Any, item: int) -> tuple[int, str]:
    import ray

    return item, ray.get_runtime_context().get_node_id()


def test_run_tasks_two_nodes_spread_and_stream_every_result(cluster: str) -> None:
    got: dict[int, str] = {}
    run_tasks(
        _where, None, list(range(6)), lambda i, r: got.__setitem__(i, r),
        executor=RayExecutor(address=cluster), progress=True,
    )  # fmt: skip
    assert sorted(got) == list(range(6))
    assert all(got[i][0] == i for i in got)
    assert len({node for _, node in got.values()}) == 2  # both nodes ran tasks


def test_run_tasks_worker_crash_retried_result_complete(cluster: str, tmp_path: Path) -> None:
    def crash_once(shared: str, item: int) -> int:
        import os

        marker = os.path.join(shared, f"crashed-{item}")
        if item == 1 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker dies: Ray runs the task again
        return item * 10

    got: dict[int, int] = {}
    run_tasks(
        crash_once, str(tmp_path), [0, 1, 2], lambda i, r: got.__setitem__(i, r),
        executor=RayExecutor(address=cluster, max_retries=1), progress=False,
    )  # fmt: skip
    assert got == {0: 0, 1: 10, 2: 20}
    assert (tmp_path / "crashed-1").exists()  # it did crash once


def test_run_tasks_worker_crash_without_retries_raises(cluster: str) -> None:
    def crash(shared: None, item: int) -> int:
        import os

        os._exit(1)

    with pytest.raises(RayTaskError, match="Ray task 0 failed"):
        run_tasks(
            crash, None, [0], lambda i, r: None,
            executor=RayExecutor(address=cluster, max_retries=0), progress=False,
        )  # fmt: skip


def test_run_tasks_task_error_reaches_caller_as_raised(cluster: str) -> None:
    def refuse(shared: None, item: int) -> int:
        from celeris import ConfigError

        raise ConfigError(f"item {item} is bad")

    with pytest.raises(ConfigError, match="item 0 is bad"):
        run_tasks(
            refuse, None, [0], lambda i, r: None,
            executor=RayExecutor(address=cluster), progress=False,
        )  # fmt: skip


# ---- sweeps -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task_size", [None, 3])
def test_sweep_on_ray_equals_local_run(cluster: str, bars: pd.DataFrame, task_size: Any) -> None:
    local = sweep(bars, "sma_cross", GRID, progress=False, **OPTS)
    remote = sweep(
        bars, "sma_cross", GRID, progress=False,
        executor=RayExecutor(address=cluster, task_size=task_size), **OPTS,
    )  # fmt: skip
    assert np.array_equal(remote.metrics, local.metrics, equal_nan=True)
    pd.testing.assert_frame_equal(remote.combos, local.combos)
    assert remote.freq == local.freq
    pd.testing.assert_frame_equal(remote.stats(), local.stats())


def test_sweep_on_ray_option_axes_equal_local_run(cluster: str, bars: pd.DataFrame) -> None:
    local = sweep(bars, "sma_cross", AXES_GRID, progress=False, **OPTS)
    remote = sweep(
        bars, "sma_cross", AXES_GRID, progress=False,
        executor=RayExecutor(address=cluster, task_size=9), **OPTS,  # 9 -> whole groups of 4
    )  # fmt: skip
    assert np.array_equal(remote.metrics, local.metrics, equal_nan=True)
    assert remote.best_position() == local.best_position()
    pd.testing.assert_frame_equal(remote.best(n=5), local.best(n=5))


def test_sweep_on_ray_bad_grid_raises_before_any_task(cluster: str, bars: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="did you mean 'slow'"):
        sweep(bars, "sma_cross", {"fast": [5], "slw": [50]}, progress=False, executor="ray")


# ---- walk-forward -----------------------------------------------------------------------------


@pytest.mark.parametrize("task_size", [None, 2])
def test_walk_forward_on_ray_equals_local_run(
    cluster: str, bars: pd.DataFrame, task_size: Any
) -> None:
    grid = {"fast": [5, 10, 20], "slow": [30, 50, 100], "sl_stop": [None, 0.05]}
    kwargs: dict[str, Any] = dict(train=500, test=250, progress=False, **OPTS)
    local = walk_forward(bars, "sma_cross", grid, **kwargs)
    remote = walk_forward(
        bars, "sma_cross", grid, executor=RayExecutor(address=cluster, task_size=task_size),
        **kwargs,
    )  # fmt: skip
    assert len(local.windows) == 6
    pd.testing.assert_frame_equal(remote.windows, local.windows)
    pd.testing.assert_series_equal(remote.oos_equity, local.oos_equity)
    pd.testing.assert_series_equal(remote.summary, local.summary)


# ---- the command line -------------------------------------------------------------------------


def test_cli_sweep_ray_address_json_equals_local(
    cluster: str, bars: pd.DataFrame, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from celeris.cli.main import app

    path = tmp_path / "bars.csv"
    bars.to_csv(path)
    args = ["sweep", "--data", str(path), "--grid", "fast=5,10,20", "--grid", "slow=50,100"]
    args += ["--json", "--top", "6"]
    local = CliRunner().invoke(app, args)
    remote = CliRunner().invoke(app, [*args, "--ray", cluster, "--task-size", "2"])
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    assert json.loads(remote.output)["top"] == json.loads(local.output)["top"]


def test_cli_task_size_without_ray_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from celeris.cli.main import app

    result = CliRunner().invoke(app, ["sweep", "--data", "sample:sp500", "--task-size", "4"])
    assert result.exit_code == 2
    assert "--task-size sizes Ray tasks: give --ray too" in result.output


# ---- optimisation rounds ----------------------------------------------------------------------


def test_optimize_on_ray_equals_local_run(cluster, bars, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # each round's candidates as Ray tasks (two per task): the proposer asks and is told in the
    # same order as locally, so every trial, decision and the winner are the local run's
    from celeris.compute import ray_exec
    from celeris.llm.optimizer import optimize

    calls: list[int] = []
    real = ray_exec.run_tasks

    def counted(fn, shared, items, on_result, **kw):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        return real(fn, shared, items, on_result, **kw)

    monkeypatch.setattr(ray_exec, "run_tasks", counted)
    search = dict(rounds=3, per_round=4, progress=False, **OPTS)
    bounds = {"fast": "5:100", "slow": "20:400"}
    local = optimize(bars, "sma_cross", bounds, **search)
    remote = optimize(bars, "sma_cross", bounds, executor=RayExecutor(cluster, task_size=2),
                      **search)  # fmt: skip
    pd.testing.assert_frame_equal(remote.trials_frame(), local.trials_frame())
    assert calls and all(n >= 2 for n in calls)  # the rounds went out as several tasks
