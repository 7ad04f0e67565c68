"""ModelManager against a real uvicorn server: does the process tell the truth about what it
serves when the registry says otherwise, or cannot be read?"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from celeris.serving.app import Server, bind, build, uvicorn_server
from celeris.serving.config import load_serve_settings
from celeris.serving.registry import ModelRegistry

L, H, C = 16, 4, 3


class ServerThread:
    """``server`` under uvicorn on a free loopback port, in a daemon thread."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.uvicorn = uvicorn_server(server)
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(
            target=self.uvicorn.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=self.url) as client:
            while True:
                assert self.thread.is_alive(), "uvicorn exited during startup"
                assert time.monotonic() < deadline, "the server did not get ready"
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        return self
                time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _serve(root: Path, **overrides: Any) -> ServerThread:
    settings = load_serve_settings(
        models=["btc@production"],
        registry=root,
        backend="torch",
        shadow_rows=16,
        log_level="warning",
        **overrides,
    )
    return ServerThread(build(settings))


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def registry_root(tmp_path: Path, tiny_checkpoint_factory: Callable[..., Path]) -> Path:
    """btc@1 in production (inputs [n, 16, 3]); btc@2 staging with inputs [n, 32, 5]."""
    reg = ModelRegistry(tmp_path / "registry")
    reg.register(
        "btc", tiny_checkpoint_factory(input_size=L, horizon=H, n_features=C), stage="production"
    )
    reg.register("btc", tiny_checkpoint_factory(input_size=2 * L, horizon=H, n_features=5))
    return reg.root


def test_readyz_degraded_while_registry_production_cannot_be_served(registry_root):
    reg = ModelRegistry(registry_root)
    x = (100 + np.random.default_rng(0).standard_normal((1, L, C)).cumsum(axis=1)).tolist()
    with _serve(registry_root, registry_poll_s=0.05) as st, httpx.Client(base_url=st.url) as c:
        reg.promote("btc", 2, allow_incompatible=True)  # forced elsewhere: clients would break
        _wait_for("the poller to refuse btc@2", lambda: c.get("/readyz").status_code == 503)
        ready = c.get("/readyz").json()
        assert (ready["ready"], ready["status"]) == (False, "degraded")
        assert ready["models"] == {"btc": 1} and ready["registry_production"] == {"btc": 2}
        mismatch = ready["out_of_sync"]["btc"]
        assert (mismatch["serving"], mismatch["registry_production"]) == (1, 2)
        assert mismatch["pending"] is False
        assert (
            "btc@2 was refused here" in mismatch["reason"] and "input_shape" in mismatch["reason"]
        )
        (model,) = c.get("/v1/models").json()["models"]
        assert (model["serving"]["version"], model["registry_production"]) == (1, 2)
        assert model["in_sync"] is False and "btc@2" in model["out_of_sync_reason"]
        # the process keeps serving what it has
        assert c.post("/v1/models/btc/predict", json={"inputs": x}).json()["version"] == 1

        reg.rollback("btc", allow_incompatible=True)  # the registry agrees with the server again
        _wait_for("ready again", lambda: c.get("/readyz").status_code == 200)
        ready = c.get("/readyz").json()
        assert (ready["status"], ready["out_of_sync"]) == ("ready", {})
        assert c.get("/v1/models").json()["models"][0]["in_sync"] is True


def test_v1_models_unreadable_registry_answers_503_json_and_poller_warns_once(
    registry_root, caplog
):
    db = registry_root / "registry.db"
    with (
        caplog.at_level(logging.INFO, logger="celeris.serving"),
        _serve(registry_root, registry_poll_s=0.02) as st,
        httpx.Client(base_url=st.url) as c,
    ):
        good = db.read_bytes()
        db.write_bytes(b"not a database " * 1000)  # unreadable from now on
        r = c.get("/v1/models")
        assert r.status_code == 503 and r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["error"] == "unavailable" and "registry.db" in body["detail"]
        _wait_for(
            "the poller to notice",
            lambda: not c.get("/readyz").json()["registry"]["reachable"],
        )
        polls = 10
        for _ in range(polls):  # several more polls fail
            time.sleep(0.02)
        ready = c.get("/readyz")
        assert ready.status_code == 200  # serving what it loaded is still right
        assert "registry.db" in ready.json()["registry"]["error"]
        db.write_bytes(good)
        _wait_for("the registry back", lambda: c.get("/readyz").json()["registry"]["reachable"])
        assert c.get("/v1/models").status_code == 200
    warnings = [r for r in caplog.records if "registry unreachable" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert any("registry reachable again" in r.getMessage() for r in caplog.records)


def test_serve_settings_feed_cap_and_redis_budget_reach_the_server(
    registry_root: Path, tmp_path: Path, redis_server: Any
) -> None:
    from celeris.serving.feed import FeedError, SignalSubscriber

    sock = tmp_path / "feed.sock"
    with _serve(
        registry_root,
        socket=sock,
        feed_max_subscribers=1,
        redis=redis_server.url,
        cache_items=8,
        redis_read_budget_ms=250.0,
    ) as srv:
        first = SignalSubscriber(str(sock), timeout_s=10.0)
        try:
            with pytest.raises(FeedError, match="max_subscribers"):
                SignalSubscriber(str(sock))
        finally:
            first.close()
        assert srv.server.cache.redis.read_budget_s == 0.25


def test_serve_default_backend_is_the_fastest_verified_one_and_explicit_wins(
    tmp_path: Path, trained_dir: Path
) -> None:
    from celeris.models.predictor import Predictor

    reg = ModelRegistry(tmp_path / "registry")
    reg.register("btc", trained_dir, stage="production")  # a `celeris train` output, as it is
    expected = Predictor.load(trained_dir).backend
    assert expected.startswith("onnx")  # its exports verified: not torch
    x = (100 + np.random.default_rng(0).standard_normal((2, 20, 1)).cumsum(axis=1)).tolist()
    for overrides, backend in (({}, expected), ({"backend": "torch"}, "torch")):
        settings = load_serve_settings(
            models=["btc@production"], registry=reg.root, shadow_rows=16, log_level="warning",
            **overrides,
        )  # fmt: skip
        with ServerThread(build(settings)) as st, httpx.Client(base_url=st.url) as c:
            (model,) = c.get("/v1/models").json()["models"]
            assert model["backend"] == backend, (overrides, model)
            assert c.post("/v1/models/btc/predict", json={"inputs": x}).status_code == 200
