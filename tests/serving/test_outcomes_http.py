"""Outcomes through a real server: served predictions recorded by request id, outcomes posted
back, joined on /metrics, and an A/B test judged on them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from celeris.serving.app import Server, bind, build, uvicorn_server
from celeris.serving.config import load_serve_settings
from celeris.serving.outcomes import OutcomeStore
from celeris.serving.registry import ModelRegistry

L, H, C = 16, 4, 3
TOKEN = "outcomes-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def _running(server: Server) -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    uv = uvicorn_server(server)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            time.sleep(0.02)
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint_factory: Callable[..., Path]):
    root = tmp_path_factory.mktemp("outcomes-http") / "registry"
    reg = ModelRegistry(root)
    reg.register("btc", tiny_checkpoint_factory(input_size=L, horizon=H, n_features=C),
                 stage="production")  # fmt: skip
    reg.register("btc", tiny_checkpoint_factory(seed=1, input_size=L, horizon=H, n_features=C))
    settings = load_serve_settings(
        models=["btc@production"], registry=root, backend="torch", admin_token=TOKEN,
        registry_poll_s=0, shadow_rows=16, log_level="warning",
    )  # fmt: skip
    server = build(settings)
    with _running(server) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, root


def _histories(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return (100 + rng.standard_normal((n, L, C)).cumsum(axis=1)).tolist()


def test_served_forecasts_are_recorded_and_posted_outcomes_join(served):
    c, root = served
    x = _histories(2, seed=1)
    r = c.post(
        "/v1/forecast",
        json={"model": "btc", "histories": {"BTC-USD": x[0], "ETH-USD": x[1]}},
        headers={"X-Request-Id": "bar-0001"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["request_id"] == "bar-0001"
    actual = {s: [v + 1.0 for v in f["forecast"]] for s, f in body["forecasts"].items()}
    posted = c.post("/v1/outcomes", json={"request_id": "bar-0001", "actual": actual})
    assert posted.status_code == 200, posted.text
    assert posted.json() == {
        "recorded": 2, "repeated": 0, "keys": ["bar-0001/BTC-USD", "bar-0001/ETH-USD"]
    }  # fmt: skip
    again = c.post("/v1/outcomes", json={"outcomes": {"bar-0001/BTC-USD": actual["BTC-USD"]}})
    assert again.json()["repeated"] == 1
    other = c.post("/v1/outcomes", json={"outcomes": {"bar-0001/BTC-USD": [0.0] * H}})
    assert other.status_code == 409 and "'bar-0001/BTC-USD'" in other.json()["detail"]
    unknown = c.post("/v1/outcomes", json={"outcomes": {"nope/BTC-USD": [0.0] * H}})
    assert unknown.status_code == 404
    short = c.post("/v1/outcomes", json={"request_id": "bar-0001", "actual": {"ETH-USD": [1.0]}})
    assert short.status_code == 422 and "horizon is 4" in short.json()["detail"]
    bad_id = c.post("/v1/forecast", json={"model": "btc", "histories": {"BTC-USD": x[0]}},
                    headers={"X-Request-Id": "a/b"})  # fmt: skip
    assert bad_id.status_code == 422 and "request_id" in bad_id.json()["detail"]

    # /predict without an id: the server makes one; rows are keyed by position
    p = c.post("/v1/models/btc/predict", json={"inputs": _histories(1, seed=2)}).json()
    rid = p["request_id"]
    assert len(rid) == 32
    assert (
        c.post("/v1/outcomes", json={"request_id": rid, "actual": [[1.0] * H]}).status_code == 200
    )

    metrics = c.get("/metrics").text
    assert "celeris_outcomes_joined 3.0" in metrics
    assert 'celeris_realised_outcomes{model="btc",version="1"} 3.0' in metrics
    with OutcomeStore(root / "outcomes.sqlite") as store:
        joined = store.joined("btc").set_index("key")
    row = joined.loc["bar-0001/BTC-USD"]
    assert row.mae == pytest.approx(1.0, abs=1e-4) and row.symbol == "BTC-USD"  # float32 text
    entry = body["forecasts"]["BTC-USD"]
    if "warning" in entry:  # not published: no signal given, no P&L
        assert pd.isna(row.signal) and np.isnan(row.pnl)
    else:
        assert row.signal == entry["signal"]


def test_ab_test_is_judged_on_realised_outcomes_not_the_mean_forecast(served):
    c, _ = served
    r = c.post("/v1/admin/models/btc/ab", json={"version": 2, "split": 0.5, "salt": "o"},
               headers=AUTH)  # fmt: skip
    assert r.status_code == 200, r.text
    versions = {}
    for i in range(8):
        body = c.post(
            "/v1/models/btc/predict",
            json={"inputs": _histories(1, seed=10 + i), "key": f"client-{i}"},
            headers={"X-Request-Id": f"ab-{i}"},
        ).json()
        versions[i] = body["version"]
        actual = [[v + 0.5 for v in body["outputs"][0]]]
        assert (
            c.post("/v1/outcomes", json={"request_id": f"ab-{i}", "actual": actual}).status_code
            == 200
        )
    status = c.get("/v1/admin/models/btc/ab", headers=AUTH).json()
    assert status["realised"]["error"]["verdict"].startswith("too thin to judge")
    value = c.delete("/v1/admin/models/btc/ab?metric=value", headers=AUTH)
    assert value.status_code == 422 and "mean forecast" in value.json()["detail"]
    stopped = c.delete("/v1/admin/models/btc/ab?metric=error", headers=AUTH)
    assert stopped.status_code == 200, stopped.text
    report = stopped.json()["report"]
    assert report["metric"] == "error"
    n_challenger = sum(v == 2 for v in versions.values())
    assert report["n"] == {"champion": 8 - n_challenger, "challenger": n_challenger}
    assert report["mean"]["champion"] in (None, pytest.approx(0.5, abs=1e-4))
    assert not report["enough_data"] and "joined outcomes" in report["verdict"]


def test_restarted_server_shadow_validates_on_the_recorded_live_inputs(served):
    c, root = served
    x = np.asarray(_histories(3, seed=30), dtype=np.float32)
    r = c.post(
        "/v1/models/btc/predict", json={"inputs": x.tolist()}, headers={"X-Request-Id": "r-1"}
    )
    assert r.status_code == 200
    c.post("/v1/outcomes", json={"request_id": "r-1", "actual": [[0.0] * H] * 3})  # flushes
    settings = load_serve_settings(
        models=["btc@production"], registry=root, backend="torch", registry_poll_s=0,
        shadow_rows=16, log_level="warning",
    )  # fmt: skip
    again = build(settings)  # a second process on the same registry and store
    with _running(again):
        batch, source = again.manager.validation_batch("btc", again.engine.predictor("btc"))
    assert "recent requests' rows" in source
    np.testing.assert_array_equal(batch[-3:], x)  # the newest recorded windows, in order


def test_outcomes_off_builds_no_store_and_no_drift_series(tmp_path):
    settings = load_serve_settings(
        models=["btc@production"], registry=tmp_path / "registry", outcomes=False,
        log_level="warning",
    )  # fmt: skip
    server = build(settings)
    assert server.outcomes is None
    assert not (tmp_path / "registry" / "outcomes.sqlite").exists()
    names = {m.name for m in server.metrics.registry.collect()}
    assert "celeris_drift_psi" not in names and "celeris_outcomes_predictions" not in names
    on = build(load_serve_settings(models=["btc@production"], registry=tmp_path / "on"))
    assert (tmp_path / "on" / "outcomes.sqlite").exists() and on.outcomes is not None
    assert {"celeris_drift_psi", "celeris_outcomes_predictions"} <= {
        m.name for m in on.metrics.registry.collect()
    }
    on.outcomes.close()
