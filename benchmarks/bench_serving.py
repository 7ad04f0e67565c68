"""Serving: ``celeris serve`` beside Ray Serve on the same model, load generator and machine.

    python benchmarks/bench_serving.py [--quick] [--duration 10] [--json out.json] [--png out.png]

What runs, in one invocation:

* model: a CNN+LSTM (``cnn_lstm`` defaults: conv 64-64, LSTM 64) on windows of 50 bars x 60
  features (the models documentation's "50 steps x 60 features"), horizon 5, untrained weights
  (seed 0; serving cost does not depend on training), saved as a checkpoint and registered with
  its ONNX export; both servers load that registry version with the ONNX backend, 1 thread;
* servers, one at a time: (a) ``celeris serve`` (subprocess; cache off so every request is
  computed; start -> ``/readyz`` timed), (b) the same predictor in Ray Serve behind
  ``@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)`` with
  ``max_ongoing_requests=128`` (:mod:`celeris.serving.ray_serve` via ``celeris serve-ray``, a
  local Ray on 127.0.0.1);
* load: :mod:`celeris.bench` from this process, the same 64 distinct JSON bodies
  (one history each) for both, closed loop at concurrency 1, 8, 32 and 128 for ``--duration``
  seconds each; requests per server CPU-second from the CPU time of each server's whole process
  tree (for Ray: driver, GCS, raylet, controller, proxy and replica);
* in-process: the engine's overhead over the bare batched forward (``Predictor.predict`` on the
  batch sizes the engine formed), and the signal socket's round trip
  (:func:`celeris.bench.feed_latency.roundtrip_latency`).

Then the floors of the work item are printed with pass/fail. The machine is shared: the load
average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

L, C, H = 50, 60, 5  # bars per window, features per bar, horizon
LEVELS = (1, 8, 32, 128)
MODEL = "bench"


# -- setup -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import onnxruntime
    import ray
    import uvicorn

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "ray": ray.__version__,
        "uvicorn": uvicorn.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
    }


def build_registry(root: Path) -> Path:
    """Save the CNN+LSTM checkpoint and register it (with ONNX) as bench@production."""
    import torch

    from celeris.models.catalogue import build_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import StandardScaler
    from celeris.serving.registry import ModelRegistry

    torch.manual_seed(0)
    model = build_model("cnn_lstm", n_features=C, input_size=L, horizon=H).eval()
    params = sum(p.numel() for p in model.parameters())
    rng = np.random.default_rng(0)
    scaler = StandardScaler().fit(100 + rng.standard_normal((5000, C)).cumsum(axis=0))
    ckpt = save_checkpoint(
        model, root / "checkpoint", scaler=scaler,
        meta={"input_size": L, "horizon": H, "n_features": C},
    )  # fmt: skip
    record = ModelRegistry(root / "registry").register(
        MODEL, ckpt, stage="production", exports=("onnx",)
    )
    print(f"model: cnn_lstm, {L} bars x {C} features -> {H}, {params:,} parameters; "
          f"registered {record.ref} (ONNX)")  # fmt: skip
    return root / "registry"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_status(url: str, deadline: float, proc: subprocess.Popen[Any]) -> dict[str, Any]:
    """Poll ``url`` until it answers 200; return its JSON body."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return json.loads(answer.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.005)
    raise SystemExit(f"{url} did not answer 200 in time")


def stop(proc: subprocess.Popen[Any], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def celeris_command() -> list[str]:
    script = Path(sys.executable).with_name("celeris")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "celeris.cli.main"]


# -- servers under load ------------------------------------------------------------------------


def run_levels(
    name: str, url: str, pid: int, levels: tuple[int, ...], duration: float, bodies: Any
) -> dict[int, Any]:
    from celeris import bench

    target = bench.Target(url, bodies[0], bodies[1], label=name)
    out = {}
    for c in levels:
        r = bench.load(
            target,
            concurrency=c,
            max_requests=500_000,
            duration_s=duration,
            warmup_requests=max(2 * c, 50),
            timeout_s=30.0,
            server_pid=pid,
        )
        p = r.percentiles_ms()
        rpc = r.requests_per_cpu_s or float("nan")
        print(f"  {name:<8} c={c:<4} {r.throughput:>8,.0f} req/s  p50 {p['p50']:>8.2f}  "
              f"p95 {p['p95']:>8.2f}  p99 {p['p99']:>8.2f} ms  errors {r.failed:>3}  "
              f"{rpc:>7,.0f} req/server CPU-s  (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        out[c] = r
    return out


def bench_celeris(
    registry: Path, levels: tuple[int, ...], duration: float, bodies: Any, msgpack_bodies: Any
) -> dict[str, Any]:
    import signal

    port = free_port()
    cmd = [
        *celeris_command(), "serve", "--model", f"{MODEL}@production", "--registry", str(registry),
        "--port", str(port), "--backend", "onnx", "--threads", "1", "--poll", "0",
        "--cache-items", "0", "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ, CELERIS_ADMIN_TOKEN="")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        ready = wait_status(f"http://127.0.0.1:{port}/readyz", t0 + 60, proc)
        ready_s = time.monotonic() - t0
        print(f"celeris serve: /readyz 200 after {ready_s:.2f} s from launch "
              f"(server's own process-start-to-ready: {ready['ready_after_s']:.2f} s)")  # fmt: skip
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL}/predict"
        runs = run_levels("celeris", url, proc.pid, levels, duration, bodies)
        extra = None
        if msgpack_bodies is not None:
            extra = run_levels("celeris", url, proc.pid, (32,), duration, msgpack_bodies)[32]
    finally:
        stop(proc, signal.SIGINT)
        if proc.stdout is not None:
            proc.stdout.close()
    return {"ready_s": ready_s, "ready_after_s": ready["ready_after_s"], "runs": runs,
            "msgpack32": extra}  # fmt: skip


def bench_ray(
    registry: Path, levels: tuple[int, ...], duration: float, bodies: Any, msgpack_bodies: Any
) -> dict[str, Any]:
    import signal

    port = free_port()
    cmd = [
        sys.executable, "-m", "celeris.cli.main", "serve-ray", "--registry", str(registry),
        "--model", f"{MODEL}@production", "--port", str(port), "--backend", "onnx",
        "--threads", "1", "--num-cpus", str(os.cpu_count() or 2),
    ]  # fmt: skip
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        line = ""
        for line in proc.stdout:  # "ready in ..." once serve.run returned and HTTP answers
            if line.startswith("ready"):
                break
        if not line.startswith("ready"):
            raise SystemExit(f"Ray Serve did not start (exit code {proc.wait()})")
        ready_s = time.monotonic() - t0
        print(f"Ray Serve: answering after {ready_s:.2f} s from launch ({line.strip()})")
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL}/predict"
        runs = run_levels("ray", url, proc.pid, levels, duration, bodies)
        extra = None
        if msgpack_bodies is not None:
            extra = run_levels("ray", url, proc.pid, (32,), duration, msgpack_bodies)[32]
    finally:
        stop(proc, signal.SIGTERM)
        if proc.stdout is not None:
            proc.stdout.close()
    return {"ready_s": ready_s, "runs": runs, "msgpack32": extra}


# -- in-process measurements -----------------------------------------------------------------


class _Batches:
    """A MetricsSink keeping batch sizes only."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def observe_batch(self, model: str, version: str, size: int, seconds: float) -> None:
        self.sizes.append(size)

    def observe_request(self, *args: Any) -> None: ...
    def set_queue(self, *args: Any) -> None: ...
    def cache_event(self, *args: Any) -> None: ...
    def cache_error(self, *args: Any) -> None: ...
    def error(self, *args: Any) -> None: ...


class _NoModel:
    """A predictor that computes nothing: what is left is the engine's own path."""

    input_size, n_features, horizon = L, C, H

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), H), dtype=np.float32)


def engine_overhead(registry: Path, n: int, rounds: int = 3) -> dict[Any, Any]:
    """Engine time per request minus the bare forward of the same batches, at c=1 and c=32.

    Each round drives an :class:`~celeris.serving.engine.Engine` (uvloop, as in the server; no
    cache) with ``n`` one-history requests from ``concurrency`` tasks, records the batch sizes
    it formed, then times the bare ``Predictor.predict`` on each of those sizes; the round with
    the median overhead is reported. ``"no_model"`` is the engine's own path at c=1 (a
    predictor that returns zeros). The heap is frozen first, as ``celeris serve`` does once its
    models are loaded (:func:`celeris.serving.manager.freeze_heap`): otherwise a full collection of
    this process's ~200,000 start-up objects (~80 ms) lands in the engine's wall time and not in
    the bare forward's median.
    """
    import uvloop

    from celeris.serving.batcher import BatcherConfig
    from celeris.serving.engine import Engine
    from celeris.serving.manager import freeze_heap, synthetic_histories
    from celeris.serving.registry import ModelRegistry

    _, predictor = ModelRegistry(registry).load(
        f"{MODEL}@production", backend="onnx", threads=1, max_batch=256
    )
    xs = synthetic_histories(predictor, 256, seed=3)  # [256, L, C]
    freeze_heap()

    def bare(size: int, repeats: int) -> float:
        x = xs[:size]
        for _ in range(3):
            predictor.predict(x)
        times = np.empty(repeats)
        for k in range(repeats):
            t = time.perf_counter()
            predictor.predict(x)
            times[k] = time.perf_counter() - t
        return float(np.median(times))

    async def drive(
        model: Any, concurrency: int, count: int
    ) -> tuple[float, list[int], np.ndarray]:
        rec = _Batches()
        engine = Engine(cache=None, config=BatcherConfig(), metrics=rec)
        await engine.add_version(MODEL, "1", model)
        for k in range(50):  # warm
            await engine.predict(MODEL, xs[k % 256 : k % 256 + 1], use_cache=False)
        rec.sizes.clear()
        lat: list[float] = []

        async def worker(i: int) -> None:
            for k in range(i, count, concurrency):
                t = time.perf_counter()
                await engine.predict(MODEL, xs[k % 256 : k % 256 + 1], use_cache=False)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        wall = time.perf_counter() - t0
        await engine.close()
        return wall, rec.sizes, np.asarray(lat)

    out: dict[Any, Any] = {}
    for concurrency in (1, 32):
        results = []
        for _ in range(rounds):
            wall, sizes, lat = uvloop.run(drive(predictor, concurrency, n))
            # the bare forward of every batch the engine ran, measured right after
            cost = {s: bare(s, 200 if s <= 4 else 40) for s in sorted(set(sizes))}
            bare_total = sum(cost[s] for s in sizes)
            results.append({
                "requests": n,
                "mean_batch": float(np.mean(sizes)),
                "engine_per_request_us": wall / n * 1e6,
                "bare_per_request_us": bare_total / n * 1e6,
                "overhead_per_request_us": (wall - bare_total) / n * 1e6,
                "engine_p50_us": float(np.median(lat) * 1e6),
                "bare_batch1_p50_us": cost.get(1, bare(1, 200)) * 1e6,
            })  # fmt: skip
        results.sort(key=lambda r: r["overhead_per_request_us"])
        out[concurrency] = results[len(results) // 2]
    _, _, lat = uvloop.run(drive(_NoModel(), 1, n))
    out["no_model"] = {"engine_p50_us": float(np.median(lat) * 1e6)}
    return out


# -- report ------------------------------------------------------------------------------------


def table(cel: dict[int, Any], ray: dict[int, Any]) -> list[dict[str, Any]]:
    rows = []
    print(f"\n{'conc.':>5} {'server':<8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}{'req/CPU-s':>11}{'x thr.':>8}{'x p99':>8}{'x req/CPU':>10}")  # fmt: skip
    for c in cel:
        a, b = cel[c], ray[c]
        pa, pb = a.percentiles_ms(), b.percentiles_ms()
        ra, rb = a.requests_per_cpu_s or float("nan"), b.requests_per_cpu_s or float("nan")
        ratios = (a.throughput / b.throughput, pa["p99"] / pb["p99"], ra / rb)
        for name, r, p, rpc in (("celeris", a, pa, ra), ("ray", b, pb, rb)):
            extra = (
                f"{ratios[0]:>7.1f}x{ratios[1]:>7.2f}x{ratios[2]:>9.1f}x"
                if name == "celeris"
                else ""
            )
            print(f"{c:>5} {name:<8}{r.throughput:>9,.0f}{p['p50']:>9.2f}{p['p95']:>9.2f}"
                  f"{p['p99']:>9.2f}{r.failed:>8}{rpc:>11,.0f}{extra}")  # fmt: skip
        rows.append({
            "concurrency": c, "celeris": a.to_dict(), "ray": b.to_dict(),
            "throughput_ratio": ratios[0], "p99_ratio": ratios[1], "cpu_efficiency_ratio": ratios[2],
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 s per level, fewer samples")
    parser.add_argument("--duration", type=float, default=None, help="seconds per level")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--png", type=Path, default=None, help="latency plot of c=32")
    parser.add_argument("--no-msgpack", action="store_true", help="skip the msgpack-body runs")
    args = parser.parse_args()
    duration = args.duration or (3.0 if args.quick else 10.0)

    from celeris import bench
    from celeris.bench import feed_latency as feed

    info = machine()
    load_start = os.getloadavg()
    print(f"machine: {info['cpu']}, {info['cpus']} CPUs; Python {info['python']}, onnxruntime "
          f"{info['onnxruntime']}, Ray {info['ray']}, uvicorn {info['uvicorn']}; {info['date']}; "
          f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="celeris-bench-serving-"))
    try:
        registry = build_registry(tmp)
        bodies = bench.predict_bodies(L, C, rows=1, distinct=64, seed=7)
        mp = (
            None
            if args.no_msgpack
            else bench.predict_bodies(L, C, distinct=64, fmt="msgpack", seed=7)
        )
        print(f"request body: one history of {L} x {C}, JSON {len(bodies[0][0]):,} bytes"
              + ("" if mp is None else f", msgpack binary {len(mp[0][0]):,} bytes"))  # fmt: skip

        print("\nengine overhead over the bare batched forward (in-process):")
        overhead = engine_overhead(registry, 400 if args.quick else 2000)
        for c, o in overhead.items():
            if c == "no_model":
                print(f"  engine path alone (a model that computes nothing), c=1: p50 "
                      f"{o['engine_p50_us']:.0f} us/request")  # fmt: skip
                continue
            print(f"  c={c:<3} mean batch {o['mean_batch']:5.1f}: engine {o['engine_per_request_us']:7.0f} us/request, "
                  f"bare forward {o['bare_per_request_us']:7.0f} us/request -> overhead "
                  f"{o['overhead_per_request_us']:5.0f} us/request (engine p50 {o['engine_p50_us']:.0f} us, "
                  f"bare batch-1 p50 {o['bare_batch1_p50_us']:.0f} us)")  # fmt: skip

        print("\nsignal socket round trip:")
        rt = feed.roundtrip_latency(500 if args.quick else 5000)
        print(f"  round trip p50 {rt.round_trip_p50_us:.1f} us, p99 {rt.round_trip_p99_us:.1f} us; "
              f"one way p50 {rt.one_way_p50_us:.1f} us, p99 {rt.one_way_p99_us:.1f} us ({rt.n} records)")  # fmt: skip

        print(f"\nload: {duration:g} s per level, closed loop, 64 distinct bodies")
        cel = bench_celeris(registry, LEVELS, duration, bodies, mp)
        ray = bench_ray(registry, LEVELS, duration, bodies, mp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = table(cel["runs"], ray["runs"])
    mp_ratio = None
    if cel["msgpack32"] is not None and ray["msgpack32"] is not None:
        a, b = cel["msgpack32"], ray["msgpack32"]
        mp_ratio = a.throughput / b.throughput
        print(f"msgpack bodies at c=32: celeris {a.throughput:,.0f} req/s p99 "
              f"{a.percentiles_ms()['p99']:.2f} ms, ray {b.throughput:,.0f} req/s p99 "
              f"{b.percentiles_ms()['p99']:.2f} ms ({mp_ratio:.1f}x)")  # fmt: skip
    load_end = os.getloadavg()
    print(f"load average at the end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")

    c32 = next(r for r in rows if r["concurrency"] == 32)
    c1 = cel["runs"][1].percentiles_ms()["p50"]
    batched_overhead = overhead[32]["overhead_per_request_us"]
    floors = [
        ("c=32 throughput vs Ray", f"{c32['throughput_ratio']:.1f}x", ">= 3x", c32["throughput_ratio"] >= 3),
        ("c=32 p99 vs Ray", f"{c32['p99_ratio']:.2f}x", "<= 0.33x", c32["p99_ratio"] <= 1 / 3),
        ("c=32 requests per server CPU-s vs Ray", f"{c32['cpu_efficiency_ratio']:.1f}x", ">= 5x",
         c32["cpu_efficiency_ratio"] >= 5),
        ("c=1 p50", f"{c1:.2f} ms", "< 3 ms", c1 < 3),
        ("engine overhead over the bare batched forward (c=32)", f"{batched_overhead:.0f} us", "< 100 us",
         batched_overhead < 100),
        ("signal socket round trip p99", f"{rt.round_trip_p99_us:.1f} us", "< 100 us", rt.round_trip_p99_us < 100),
        ("celeris serve launch -> /readyz 200", f"{cel['ready_s']:.2f} s", "<= 3 s", cel["ready_s"] <= 3),
    ]  # fmt: skip
    print("\nfloors:")
    for name, value, goal, ok in floors:
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {value} (floor {goal})")
    print(f"  info  engine overhead at c=1 (no batch-mates, vs the bare batch-1 forward): "
          f"{overhead[1]['overhead_per_request_us']:.0f} us; the engine path alone (no model): "
          f"{overhead['no_model']['engine_p50_us']:.0f} us")  # fmt: skip

    if args.png is not None:
        path = bench.plot_latency(
            [cel["runs"][32], ray["runs"][32]], args.png, title="c=32: celeris serve vs Ray Serve"
        )
        print(f"wrote {path}")
    if args.json is not None:
        doc = {
            "machine": info, "load_average_start": load_start, "load_average_end": load_end,
            "duration_s": duration, "levels": rows,
            "celeris_ready_s": cel["ready_s"], "celeris_ready_after_s": cel["ready_after_s"],
            "ray_ready_s": ray["ready_s"], "engine_overhead": overhead,
            "signal_roundtrip_us": {"p50": rt.round_trip_p50_us, "p99": rt.round_trip_p99_us},
            "msgpack32_throughput_ratio": mp_ratio,
            "floors": [{"name": n, "value": v, "floor": g, "passed": ok} for n, v, g, ok in floors],
        }  # fmt: skip
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
