"""The MA-crossover sweep on a Ray cluster started on this machine: scaling and task overhead.

    python benchmarks/bench_sweep_ray.py                  # 20k bars, 2,035 variants
    python benchmarks/bench_sweep_ray.py --bars 100000 --price-per-hour 0.0235

Starts a head and a second node on loopback (``ray start --head`` / ``ray start --address``,
one CPU each, token authentication on, both stopped at the end) and measures, on the same data:

* local: ``sweep()`` in this process with numba on all cores, then on one thread;
* Ray on one node, then on both: ``sweep(..., executor=RayExecutor(task_size=...))`` with the
  default task size (about four tasks per CPU) -- the scaling a cluster gives over one core;
* the overhead of a task: ``run_tasks`` over empty tasks (scheduling and result transfer), and
  the sweep cut into small and large tasks (the same work, so the difference per extra task is
  what a task costs inside a sweep: size tasks so that this is small against their work).

Each Ray figure is the best of --repeat runs after one warm-up run (workers started, numba
cache loaded). Results are checked equal to the local run's. With --price-per-hour each line
gets its cost per billion bar-variants from the CPU seconds of every process of the run
(this one, and the nodes' workers, read with psutil).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FAST = list(range(10, 101, 2))
SLOW = list(range(50, 501, 10))
SAME = dict(fees=0.001, slippage=0.0005, execution="close", year_days=365, device="cpu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalCluster:
    """A head on this machine, and more nodes joined with :meth:`add_node`; each is a
    ``ray start --block`` process, stopped by SIGTERM."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self._start(["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--dashboard-port", str(_free_port()), "--temp-dir", str(root / "t"),
                     "--ray-client-server-port", str(_free_port())])  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.procs[0].poll() is not None:
                log = (root / "node0.log").read_text()[-2000:]
                raise SystemExit(f"ray start --head failed: {log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit("the Ray head did not start in 60 s")

    def _start(self, args: list[str]) -> None:
        env = {**os.environ, **self.auth, "RAY_USAGE_STATS_ENABLED": "0"}
        ray = str(Path(sys.executable).with_name("ray"))
        common = ["--block", "--disable-usage-stats", "--num-cpus", "1", "--node-ip-address",
                  "127.0.0.1", "--include-log-monitor", "false",
                  "--dashboard-agent-listen-port", str(_free_port())]  # fmt: skip
        log = (self.root / f"node{len(self.procs)}.log").open("wb")
        self.procs.append(
            subprocess.Popen(
                [ray, "start", *common, *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        )

    def add_node(self) -> None:
        self._start(["--address", self.address])

    def connect(self, nodes: int) -> Any:
        """Connect this process (once) and wait until ``nodes`` nodes are alive."""
        os.environ.update(self.auth)  # before Ray reads its authentication settings
        from celeris.compute.ray_exec import connect

        ray = connect(self.address)
        deadline = time.monotonic() + 60
        while sum(n["Alive"] for n in ray.nodes()) < nodes:
            if time.monotonic() > deadline:
                raise SystemExit(f"{nodes} Ray nodes were not up in 60 s")
            time.sleep(0.1)
        return ray

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds of the processes ``pids`` and all their descendants, alive now."""
    import psutil

    total = 0.0
    seen: set[int] = set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root, *root.children(recursive=True)]:
                if p.pid in seen:
                    continue
                seen.add(p.pid)
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bars", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--empty-tasks", type=int, default=200)
    parser.add_argument("--price-per-hour", type=float, default=None)
    args = parser.parse_args()

    import numba

    import celeris.data as cd
    from celeris.backtest import sweep
    from celeris.bench.cost import price_per_hour, sweep_cost
    from celeris.compute.ray_exec import RayExecutor, run_tasks

    price = price_per_hour(args.price_per_hour)
    bars = cd.synthetic(args.bars, freq="1min", seed=0)
    grid = {"fast": FAST, "slow": SLOW}
    n_variants = sum(f < s for f in FAST for s in SLOW)
    work = n_variants * args.bars
    print(f"machine: {os.cpu_count()} cores; {args.bars:,} bars x {n_variants:,} variants = "
          f"{work / 1e6:,.0f} M bar-variants")  # fmt: skip
    pids = [os.getpid()]

    def timed(label: str, fn: Any) -> Any:
        best = None
        for _ in range(args.repeat):
            c0, t0 = _tree_cpu(pids), time.perf_counter()
            out = fn()
            wall, cpu = time.perf_counter() - t0, _tree_cpu(pids) - c0
            if best is None or wall < best[0]:
                best = (wall, cpu, out)
        assert best is not None
        wall, cpu, out = best
        cost = f" | {sweep_cost(price, cpu, work).text()}" if price is not None else ""
        print(f"{label:<34} {wall:7.2f} s  {work / wall / 1e6:7.0f} M bar-variants/s  "
              f"{cpu:6.2f} CPU-s{cost}")  # fmt: skip
        return wall, out

    sweep(bars, "sma_cross", grid, progress=False, **SAME)  # numba cache loaded
    _, local = timed("local, numba on all cores", lambda: sweep(
        bars, "sma_cross", grid, progress=False, **SAME))  # fmt: skip
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    one_core, _ = timed("local, one numba thread", lambda: sweep(
        bars, "sma_cross", grid, progress=False, **SAME))  # fmt: skip
    numba.set_num_threads(threads)

    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp))
        try:
            for nodes in (1, 2):
                if nodes == 2:
                    cluster.add_node()
                cluster.connect(nodes)
                pids[1:] = [p.pid for p in cluster.procs]
                ex = RayExecutor(address=cluster.address)

                def on_ray(ex: RayExecutor = ex) -> Any:
                    return sweep(bars, "sma_cross", grid, progress=False, executor=ex, **SAME)

                on_ray()  # warm-up: workers start, numba cache loads
                wall, res = timed(f"Ray, {nodes} node(s) x 1 CPU", on_ray)
                assert np.array_equal(res.metrics, local.metrics, equal_nan=True), "differs"
                print(f"{'':<34} speed-up over one local thread: {one_core / wall:.2f}x")

            def empty(shared: Any, item: int) -> int:
                return item

            n = args.empty_tasks
            ex = RayExecutor(address=cluster.address)
            run_tasks(empty, None, list(range(8)), lambda i, r: None, executor=ex, progress=False)
            t0 = time.perf_counter()
            run_tasks(empty, None, list(range(n)), lambda i, r: None, executor=ex, progress=False)
            per = (time.perf_counter() - t0) / n
            print(f"empty tasks: {n} in {per * n:.2f} s = {per * 1e3:.2f} ms per task "
                  f"(2 nodes, pipelined)")  # fmt: skip
            walls = {}
            for size in (n_variants // 4, 16):
                walls[size], _ = timed(f"Ray sweep, task_size {size}", lambda size=size: sweep(
                    bars, "sma_cross", grid, progress=False,
                    executor=RayExecutor(address=cluster.address, task_size=size), **SAME,
                ))  # fmt: skip
            small, large = 16, n_variants // 4
            extra = -(-n_variants // small) - -(-n_variants // large)
            print(f"overhead per extra sweep task: {(walls[small] - walls[large]) / extra * 1e3:.2f} "
                  f"ms ({extra} more tasks of {small} variants x {args.bars:,} bars)")  # fmt: skip
        finally:
            import ray as _ray

            if _ray.is_initialized():
                _ray.shutdown()
            cluster.stop()


if __name__ == "__main__":
    main()
