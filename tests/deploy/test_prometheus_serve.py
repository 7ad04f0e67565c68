"""A real Prometheus scrapes a real ``celeris serve``; an induced overload fires the alert.

The server gets a queue of 4 rows and batches of 1 row, and 16 clients at once: most requests
are refused with 429. Prometheus (Debian's ``prometheus``, started here on loopback) scrapes
every 0.5 s and evaluates ``CelerisOverloaded`` as deploy/prometheus/alerts.yml writes it,
with its 5-minute rate window and its 2-minute ``for`` scaled down to seconds so that the test
takes seconds; the test then reads the firing alert from ``/api/v1/alerts``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from tests.deploy import promql

L, H, C = 16, 4, 3
CELERIS = Path(sys.executable).with_name("celeris")
START_TIMEOUT_S = 60.0
ALERT_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[str], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited: {proc.communicate()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer 200 in {timeout_s:.0f} s")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _registry(root: Path) -> Path:
    """A registry with btc@1 in production: a tiny CNN+LSTM served by torch (no ONNX export)."""
    import torch

    from celeris.models.catalogue import build_model, get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import StandardScaler
    from celeris.serving.registry import ModelRegistry

    torch.manual_seed(0)
    model = build_model("cnn_lstm", **get_model("cnn_lstm").tiny_config(L, H, C)).eval()
    rng = np.random.default_rng(0)
    scaler = StandardScaler().fit(100 + rng.standard_normal((300, C)).cumsum(axis=0))
    meta = {"input_size": L, "horizon": H, "n_features": C}
    checkpoint = save_checkpoint(model, root / "checkpoint", scaler=scaler, meta=meta)
    registry = root / "registry"
    ModelRegistry(registry).register("btc", checkpoint, stage="production")
    return registry


def _scaled_overload_rule() -> dict[str, Any]:
    """``CelerisOverloaded`` from alerts.yml with its windows in seconds instead of minutes."""
    rule = dict(promql.alerts()["CelerisOverloaded"])
    assert "[5m]" in rule["expr"] and rule["for"] == "2m"
    rule["expr"] = rule["expr"].replace("[5m]", "[3s]")
    rule["for"] = "1s"
    return rule


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    prometheus = shutil.which("prometheus")
    assert prometheus is not None, "prometheus is not installed: run `make system-deps`"
    assert CELERIS.exists(), f"{CELERIS} is missing: install Celeris (make venv)"
    tmp = tmp_path_factory.mktemp("prometheus-serve")
    serve_port, prom_port = _free_port(), _free_port()
    serve = subprocess.Popen(
        [
            str(CELERIS), "serve", "--model", "btc@production",
            "--registry", str(_registry(tmp)), "--port", str(serve_port),
            "--backend", "torch", "--threads", "1", "--max-batch-size", "1",
            "--max-queue", "4", "--max-wait-ms", "1,1,1,1", "--cache-items", "0",
            "--poll", "0", "--log-level", "warning",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    rules = {"groups": [{"name": "celeris-serving", "rules": [_scaled_overload_rule()]}]}
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    config = {
        "global": {"scrape_interval": "500ms", "evaluation_interval": "500ms"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {
                "job_name": "celeris-serve",
                "static_configs": [{"targets": [f"127.0.0.1:{serve_port}"]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    prom = subprocess.Popen(
        [
            prometheus, f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp,
    )  # fmt: skip
    try:
        serve_url, prom_url = f"http://127.0.0.1:{serve_port}", f"http://127.0.0.1:{prom_port}"
        _wait(f"{prom_url}/-/ready", prom)
        _wait(f"{serve_url}/readyz", serve)
        yield {"serve": serve_url, "prometheus": prom_url}
    finally:
        _stop(serve)
        _stop(prom)


def _query(prom_url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom_url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _firing(prom_url: str, name: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prom_url}/api/v1/alerts", timeout=5).json()
    return [
        a
        for a in body["data"]["alerts"]
        if a["labels"]["alertname"] == name and a["state"] == "firing"
    ]


def _until(check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    return None


async def _overload(url: str, stop: asyncio.Event, clients: int = 16) -> dict[int, int]:
    x = (100 + np.random.default_rng(1).standard_normal((1, L, C)).cumsum(axis=1)).tolist()
    codes: dict[int, int] = {}

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            r = await http.post(f"{url}/v1/models/btc/predict", json={"inputs": x})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return codes


def test_prometheus_scrapes_serve_and_overload_fires_the_alert(stack: dict[str, str]) -> None:
    prom = stack["prometheus"]
    # the readiness gauge, scraped (a scrape from before the model was warm reads 0)
    ready = 'celeris_ready{job="celeris-serve"} == 1'
    assert _until(lambda: _query(prom, ready), 10.0), _query(prom, "celeris_ready")
    assert _query(prom, 'up{job="celeris-serve"}')[0]["value"][1] == "1"
    assert _firing(prom, "CelerisOverloaded") == []

    async def run() -> tuple[dict[int, int], list[dict[str, Any]] | None]:
        stop = asyncio.Event()
        load = asyncio.create_task(_overload(stack["serve"], stop))
        alerts = await asyncio.to_thread(
            _until, lambda: _firing(prom, "CelerisOverloaded"), ALERT_TIMEOUT_S
        )
        stop.set()
        return await load, alerts

    codes, alerts = asyncio.run(run())
    assert codes.get(429, 0) > 0 and set(codes) <= {200, 429}, codes
    assert alerts, f"CelerisOverloaded did not fire in {ALERT_TIMEOUT_S:.0f} s; answers {codes}"
    (alert,) = alerts
    assert alert["labels"] == {
        "alertname": "CelerisOverloaded",
        "job": "celeris-serve",
        "model": "btc",
        "severity": "warning",
    }
    assert "of requests refused with 429" in alert["annotations"]["summary"]
    assert float(alert["value"]) > 0.01
