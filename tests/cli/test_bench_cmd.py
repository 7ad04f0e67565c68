"""``celeris bench`` against a real Celeris server (uvicorn in a thread, two tiny models)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from celeris.cli import bench_cmd

L, H, C = 16, 4, 3
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def main() -> None:
        """Celeris (test app)."""

    bench_cmd.register(app)
    return app


APP = _app()


def invoke(*args: str) -> Any:
    return runner.invoke(APP, ["bench", *args])


def _checkpoint(directory: Path, seed: int) -> Path:
    from celeris.models.catalogue import build_model, get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import StandardScaler

    torch.manual_seed(seed)
    model = build_model("cnn_lstm", **get_model("cnn_lstm").tiny_config(L, H, C)).eval()
    rng = np.random.default_rng(seed)
    scaler = StandardScaler().fit(100 + rng.standard_normal((300, C)).cumsum(axis=0))
    meta = {"input_size": L, "horizon": H, "n_features": C}
    return save_checkpoint(model, directory, scaler=scaler, meta=meta)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ready Celeris server on 127.0.0.1 serving btc and eth (torch backend, its cache on)."""
    from celeris.serving.app import bind, build, uvicorn_server
    from celeris.serving.config import load_serve_settings
    from celeris.serving.registry import ModelRegistry

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("bench-cli")
    reg = ModelRegistry(base / "registry")
    reg.register("btc", _checkpoint(base / "a", 0), stage="production")
    reg.register("eth", _checkpoint(base / "b", 1), stage="production")
    settings = load_serve_settings(
        models=("btc@production", "eth@production"), registry=base / "registry",
        backend="torch", cache_items=10_000, registry_poll_s=0, log_level="warning",
    )  # fmt: skip
    uv = uvicorn_server(build(settings))
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url) as client:
            while True:
                assert thread.is_alive() and time.monotonic() < deadline, "server not ready"
                if uv.started and client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.02)
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


LOOSE = ("--sla-p50", "0", "--sla-p95", "0", "--sla-p99", "0", "--sla-rps", "0")


def test_bench_help_teaches_with_examples() -> None:
    out = invoke("--help")
    assert out.exit_code == 0
    for words in ("celeris bench latency --url", "celeris bench compare", "loopback", "Exit code"):
        assert words in out.stdout
    for command in ("latency", "load", "stress", "compare"):
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and f"celeris bench {command} --url" in sub.stdout, command


def test_bench_latency_json_shape_read_from_server(server: str) -> None:
    out = invoke("latency", "--url", server, "--model", "btc", "--requests", "30", "--json", *LOOSE)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    run = doc["run"]
    assert run["url"] == f"{server}/v1/models/btc/predict"
    assert (run["mode"], run["concurrency"], run["ok"], run["errors"]) == ("latency", 1, 30, {})
    assert run["latency_ms"]["p50"] > 0 and doc["sla"]["passed"] is True
    assert [c["name"] for c in doc["sla"]["checks"]] == ["error rate"]


def test_bench_latency_missed_sla_exit_1_with_reason(server: str) -> None:
    out = invoke("latency", "--url", server, "--model", "btc", "-n", "10", "--sla-p50", "0.001")
    assert out.exit_code == 1
    assert "SLA missed: p50 latency" in out.stdout and "> 0.001 ms" in out.stdout


def test_bench_load_table_and_png(server: str, tmp_path: Path) -> None:
    png = tmp_path / "load.png"
    out = invoke(
        "load", "--url", server, "--model", "eth", "-c", "4", "-n", "60", "--format", "msgpack",
        "--rows", "3", "--png", str(png), *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert (
        "p99 ms" in out.stdout
        and "SLA met" in out.stdout
        and "/v1/models/eth/predict" in out.stdout
    )
    assert png.read_bytes()[:4] == b"\x89PNG" and f"wrote {png}" in out.output


def test_bench_load_rate_open_loop_sends_the_schedule_and_reports_it(server: str) -> None:
    # 200 req/s for 0.5 s: exactly 100 requests fall due, whatever --requests allows
    out = invoke("load", "--url", server, "--model", "btc", "-c", "4", "--rate", "200", "-d",
                 "0.5", "--json", *LOOSE)  # fmt: skip
    assert out.exit_code == 0, out.output
    run = json.loads(out.stdout)["run"]
    assert (run["sent"], run["ok"], run["errors"]) == (100, 100, {})
    assert run["open_loop"]["rate_rps"] == 200 and run["open_loop"]["behind_schedule"] >= 0
    table = invoke("load", "--url", server, "--model", "btc", "--rate", "100", "-d", "0.2", *LOOSE)
    assert table.exit_code == 0, table.output
    assert "open loop at 100 req/s" in table.stdout and "behind schedule" in table.stdout
    closed = invoke("load", "--url", server, "--model", "btc", "-n", "10", "--json", *LOOSE)
    assert "open_loop" not in json.loads(closed.stdout)["run"]


def test_bench_load_body_file_against_full_url(server: str, tmp_path: Path) -> None:
    body = tmp_path / "req.json"
    x = 100 + np.random.default_rng(0).standard_normal((2, L, C)).cumsum(axis=1)
    body.write_text(json.dumps({"inputs": x.tolist(), "priority": "critical"}))
    out = invoke(
        "load", "--url", f"{server}/v1/models/btc/predict", "--body-file", str(body), "-c", "2",
        "-n", "20", "--json", *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["run"]["ok"] == 20


def test_bench_stress_json_steps(server: str, tmp_path: Path) -> None:
    out = invoke(
        "stress", "--url", server, "--model", "btc", "--steps", "1,2", "-n", "20", "--json",
        "--png", str(tmp_path / "stress.png"), *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [s["concurrency"] for s in doc["steps"]] == [1, 2]
    assert doc["last_passing_concurrency"] == 2 and doc["breached_at_concurrency"] is None
    impossible = invoke("stress", "--url", server, "--model", "btc", "--steps", "1,2", "-n", "5",
                        "--sla-p50", "0.001")  # fmt: skip
    assert impossible.exit_code == 1 and "no step met the SLA" in impossible.stdout


def test_bench_compare_two_models_and_two_urls(server: str) -> None:
    out = invoke(
        "compare", "--url", server, "--model", "btc", "--model", "eth", "-c", "2", "-n", "30",
        "--json", *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["a"]["url"].endswith("/btc/predict") and doc["b"]["url"].endswith("/eth/predict")
    assert doc["a"]["ok"] == doc["b"]["ok"] == 30
    ratio = doc["ratios_a_over_b"]["throughput"]
    assert ratio == pytest.approx(doc["a"]["throughput_rps"] / doc["b"]["throughput_rps"])
    other = server.replace("127.0.0.1", "localhost")
    out = invoke(
        "compare", "--url", server, "--url", other, "--model", "btc", "-n", "20",
        "--label", "first", "--label", "second", *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "first" in out.stdout and "second" in out.stdout and "ratio a / b" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("latency", "--url", "http://10.0.0.1:8000", "--model", "btc"), "refusing to send load"),
        (("load", "--url", "https://127.0.0.1:8000"), "only http://"),
        (("stress", "--url", "http://127.0.0.1:9", "--steps", "1,x"), "--steps must be integers"),
        (("stress", "--url", "http://127.0.0.1:9", "--steps", "4,2"), "must increase"),
        (("compare", "--url", "http://127.0.0.1:9"), "compare needs two targets"),
        (("load", "--url", "http://127.0.0.1:9", "-c", "0"), "concurrency must be"),
        (("load", "--url", "http://127.0.0.1:9", "--body-file", "/no/such.json"), "cannot read"),
        (("load", "--url", "http://127.0.0.1:9", "--model", "x", "--input-size", "3"), "both"),
        (("load", "--url", "http://127.0.0.1:9", "--sla-p99", "-1"), "SLA targets must be >= 0"),
        (("load", "--url", "http://127.0.0.1:9", "--rate", "0"), "rate must be in (0, 1000000]"),
        (
            ("load", "--url", "http://127.0.0.1:9", "--body-file", "b.json", "--distinct", "2"),
            "--distinct makes bodies for --model",
        ),
    ],
)
def test_bench_bad_input_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    out = invoke(*args)
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_bench_unknown_model_named_with_hint(server: str) -> None:
    out = invoke("latency", "--url", server, "--model", "bct", "-n", "5")
    assert out.exit_code == 2
    assert "does not serve a model named 'bct' (did you mean 'btc'?)" in out.output
    assert "served: btc, eth" in out.output


def _cache(*args: str) -> dict[str, Any]:
    out = invoke(*args, "--json", *LOOSE)
    assert out.exit_code == 0, out.output
    run = json.loads(out.stdout)["run"]
    assert run["ok"] == run["sent"], run
    return dict(run["cache"])


def test_bench_load_default_bodies_never_answered_from_server_cache(server: str) -> None:
    # the help's claim: by default every request is unique, so the cache never answers,
    # and a second run does not meet the first run's answers either
    assert "every request is unique by default" in invoke("--help").stdout
    for _ in range(2):
        cache = _cache("load", "--url", server, "--model", "btc", "-c", "4", "-n", "120")
        assert cache == {"lookups": 120, "hits": 0, "hit_ratio": 0.0, "note": ""}
    rows = _cache("load", "--url", server, "--model", "eth", "-c", "2", "-n", "30", "--rows", "3",
                  "--format", "msgpack")  # fmt: skip
    assert (rows["lookups"], rows["hits"]) == (90, 0)


def test_bench_load_distinct_bodies_answered_from_server_cache(server: str) -> None:
    # 4 fixed bodies: the 4 warm-up requests compute them, every measured one is a hit
    cache = _cache("load", "--url", server, "--model", "btc", "-c", "4", "-n", "80",
                   "--distinct", "4")  # fmt: skip
    assert cache == {"lookups": 80, "hits": 80, "hit_ratio": 1.0, "note": ""}


def test_bench_stress_steps_never_repeat_earlier_steps_bodies(server: str) -> None:
    out = invoke("stress", "--url", server, "--model", "btc", "--steps", "1,2,4", "-n", "25",
                 "--json", *LOOSE)  # fmt: skip
    assert out.exit_code == 0, out.output
    steps = json.loads(out.stdout)["steps"]
    assert [(s["cache"]["lookups"], s["cache"]["hits"]) for s in steps] == [(25, 0)] * 3


def test_bench_table_shows_cache_hit_ratio_and_why_missing(server: str) -> None:
    out = invoke("latency", "--url", server, "--model", "btc", "-n", "10", "--distinct", "1",
                 *LOOSE)  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "cache hits" in out.stdout and "100.0%" in out.stdout
    # GET /healthz: no cache look-ups, and the table says why there is no ratio
    out = invoke("latency", "--url", f"{server}/healthz", "-n", "5", *LOOSE)
    assert out.exit_code == 0, out.output
    assert "off" in out.stdout and "no cache look-ups" in out.stdout


def test_bench_load_price_per_hour_reports_cost_per_million_predictions(server: str) -> None:
    import os

    out = invoke(
        "load", "--url", server, "--model", "btc", "-c", "2", "-n", "40", "--rows", "3",
        "--server-pid", str(os.getpid()), "--price-per-hour", "0.05", "--json", *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    cost = doc["cost"][doc["run"]["label"] or "run"]
    assert cost["units"] == doc["run"]["ok"] * 3 == 120 and cost["unit"] == "predictions"
    assert cost["busy_s"] == doc["run"]["server_cpu_s"] > 0
    assert cost["cost"] == pytest.approx(0.05 * cost["busy_s"] / 3600 / 120 * 1e6, rel=1e-12)


def test_bench_price_per_hour_table_line(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("CELERIS_PRICE_PER_HOUR", "0.04")  # read from the environment
    out = invoke(
        "latency", "--url", server, "--model", "btc", "-n", "10", "--server-pid",
        str(os.getpid()), *LOOSE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "per million predictions (at 0.04 per core-hour" in out.stdout


def test_bench_price_per_hour_without_server_pid_exits_2(server: str) -> None:
    out = invoke("latency", "--url", server, "--model", "btc", "-n", "5", "--price-per-hour", "1")
    assert out.exit_code == 2
    assert "--price-per-hour prices the server's CPU seconds: give --server-pid" in out.output
