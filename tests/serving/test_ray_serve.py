"""Celeris on a real local Ray Serve: both deployments answer over HTTP like ``celeris serve``.

One Ray instance (loopback, 2 CPUs, no dashboard) for the module, with two applications: the
``@serve.batch`` baseline under ``/batched`` and the Celeris engine under ``/engine``. Ray takes
~10-15 s to start on the 2-core development machine; the module stays under a minute.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import numpy as np
import onnxruntime  # noqa: F401  (a dev extra: missing is a failure)
import pytest
import ray.serve  # noqa: F401  (a dev extra: missing is a failure)

from celeris.errors import CelerisTypeError, ConfigError
from celeris.serving import ray_serve
from tests.serving.conftest import free_port

L, H, C = 16, 4, 3
FEATURES = ("close", "log_volume", "atr_14")  # names celeris.models.features computes


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint_factory: Callable[..., Path]
) -> Path:
    from celeris.models.checkpoint import load_checkpoint, save_checkpoint
    from celeris.serving.registry import ModelRegistry

    root = tmp_path_factory.mktemp("ray-registry") / "registry"
    tiny = load_checkpoint(
        tiny_checkpoint_factory("cnn_lstm", seed=0, input_size=L, horizon=H, n_features=C)
    )
    # the same tiny model, with the feature names a trained checkpoint carries
    ckpt = save_checkpoint(
        tiny.model,
        root.parent / "btc-checkpoint",
        scaler=tiny.scaler,
        meta={**tiny.meta, "features": list(FEATURES)},
    )
    ModelRegistry(root).register("btc", ckpt, stage="production", exports=("onnx",))
    return root


@pytest.fixture(scope="module")
def local_predictor(registry: Path) -> Any:
    from celeris.serving.registry import ModelRegistry

    _, predictor = ModelRegistry(registry).load("btc@production", backend="onnx", threads=1)
    return predictor


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """HOME and CELERIS_HOME as empty directories while Ray runs (restored afterwards)."""
    base = tmp_path_factory.mktemp("ray-homes")
    dirs = {"HOME": base / "home", "CELERIS_HOME": base / "celeris-home"}
    with pytest.MonkeyPatch.context() as mp:
        for key, path in dirs.items():
            path.mkdir()
            mp.setenv(key, str(path))
        for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "ORT_DISABLE_TELEMETRY"):
            mp.delenv(key, raising=False)  # restored when the module ends
        yield dirs


@pytest.fixture(scope="module")
def apps(registry: Path, homes: dict[str, Path]) -> Iterator[dict[str, ray_serve.RayServeApp]]:
    port = free_port()
    try:
        batched = ray_serve.deploy(
            registry, "btc@production", deployment="batched", port=port, num_cpus=2,
            replica_cpus=0.5, app_name="batched", route_prefix="/batched",
        )  # fmt: skip
        engine = ray_serve.deploy(
            registry, "btc@production", deployment="engine", port=port, replica_cpus=0.5,
            app_name="engine", route_prefix="/engine",
            engine_options={"batcher": {"max_batch_size": 32}, "cache_items": 0},
        )  # fmt: skip
        yield {"batched": batched, "engine": engine}
    finally:
        ray_serve.shutdown()


def _histories(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + rng.standard_normal((n, L, C)).cumsum(axis=1)).astype(np.float32)


@pytest.mark.parametrize("kind", ["batched", "engine"])
def test_deployment_predicts_like_the_predictor(apps: Any, local_predictor: Any, kind: str) -> None:
    app = apps[kind]
    x = _histories(3, seed=1)
    with httpx.Client(timeout=30) as client:
        r = client.post(app.predict_url(), json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["model"] == "btc"
        np.testing.assert_allclose(doc["outputs"], local_predictor.predict(x), rtol=1e-5, atol=1e-4)
        # msgpack with a binary array, answered in msgpack
        body = {"inputs": {"shape": list(x.shape), "dtype": "<f4", "data": x.tobytes()}}
        r = client.post(
            app.predict_url(),
            content=msgpack.packb(body),
            headers={"Content-Type": "application/msgpack"},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
        np.testing.assert_allclose(
            msgpack.unpackb(r.content)["outputs"], local_predictor.predict(x), rtol=1e-5, atol=1e-4
        )
        assert client.get(f"{app.url}/healthz").status_code == 200


@pytest.mark.parametrize("kind", ["batched", "engine"])
def test_deployment_concurrent_requests_each_get_their_own_rows(
    apps: Any, local_predictor: Any, kind: str
) -> None:
    # Batched together on the server, split back per request: each answer must be its own.
    app = apps[kind]
    inputs = [_histories(1 + i % 3, seed=10 + i) for i in range(24)]

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(client.post(app.predict_url(), json={"inputs": x.tolist()}) for x in inputs)
            )

    answers = asyncio.run(go())
    for x, r in zip(inputs, answers, strict=True):
        assert r.status_code == 200, r.text
        out = np.asarray(r.json()["outputs"])
        assert out.shape == (len(x), H)
        np.testing.assert_allclose(out, local_predictor.predict(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", ["batched", "engine"])
def test_deployment_bad_requests_answered_with_4xx(apps: Any, kind: str) -> None:
    app = apps[kind]
    with httpx.Client(timeout=30) as client:
        r = client.post(app.predict_url(), json={"inputs": [[1.0, 2.0]]})
        assert r.status_code == 422 and r.json()["error"] == "invalid"
        nan = _histories(1, 0)
        nan[0, 3, 1] = np.nan
        r = client.post(
            app.predict_url(), content=json.dumps({"inputs": nan.tolist()}).replace("NaN", "null")
        )
        assert r.status_code == 422 and "non-finite" in r.json()["detail"]
        r = client.post(app.predict_url("eth"), json={"inputs": _histories(1, 0).tolist()})
        assert r.status_code == 404
        r = client.post(app.predict_url(), content=b"{not json")
        assert r.status_code == 400


@pytest.mark.parametrize("kind", ["batched", "engine"])
def test_deployment_lists_models_and_answers_version_number(apps: Any, kind: str) -> None:
    # GET /v1/models is what `celeris bench --model btc` asks before it sends anything
    app = apps[kind]
    with httpx.Client(timeout=30) as client:
        r = client.get(f"{app.url}/v1/models")
        assert r.status_code == 200, r.text
        (entry,) = r.json()["models"]
        assert (entry["name"], entry["version"], entry["input_size"], entry["n_features"]) == (
            "btc", 1, L, C,
        )  # fmt: skip
        assert entry["features"] == list(FEATURES)  # as celeris serve lists them
        r = client.post(app.predict_url(), json={"inputs": _histories(1, 0).tolist()})
        assert r.status_code == 200 and r.json()["version"] == 1  # btc@production is version 1


def test_deployment_spec_lists_the_models_features(registry: Path) -> None:
    # The deployment classes themselves, built without Ray: a replica describes its model as
    # celeris serve does (serving.manager.model_spec), features included.
    batched = ray_serve.BatchedPredictor.func_or_class(str(registry), "btc@production")
    engine = ray_serve.EngineDeployment.func_or_class(str(registry), ["btc@production"])
    for deployment in (batched, engine):
        spec = deployment.specs["btc"]
        assert (spec.version, spec.features) == (1, FEATURES)


def test_ray_writes_nothing_under_home_but_under_celeris_home(
    apps: Any, homes: dict[str, Path]
) -> None:
    # Ray 2.60 would write ~/.ray/auth_token, onnxruntime ~/.cache/Microsoft/DeveloperTools
    assert sorted(homes["HOME"].rglob("*")) == []
    token = homes["CELERIS_HOME"] / "ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o077 == 0


def test_loadgen_against_ray_serve_all_answered(apps: Any) -> None:
    from celeris import bench

    bodies, ctype = bench.predict_bodies(L, C, distinct=8)
    for kind in ("batched", "engine"):
        target = bench.Target(apps[kind].predict_url(), bodies, ctype)
        r = bench.load(target, concurrency=8, max_requests=64, duration_s=30)
        assert (r.ok, r.errors) == (64, {}), kind


def test_deploy_arguments_checked_before_starting_ray(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ray_started(*args: Any) -> None:
        raise AssertionError("deploy started Ray before refusing its arguments")

    monkeypatch.setattr(ray_serve, "start_local_ray", ray_started)
    for kwargs in (
        {"deployment": "bached"},
        {"num_replicas": 0},
        {"route_prefix": "engine"},
        {"port": 70_000},
        {"threads": 0},
        {"max_batch_size": 0},
        {"max_ongoing_requests": 0},
        {"num_cpus": 0},
        {"replica_cpus": -1.0},
        {"batch_wait_timeout_s": float("nan")},
    ):
        with pytest.raises(ConfigError, match=f"{next(iter(kwargs))}|deployment"):
            ray_serve.deploy(registry, "btc@production", **kwargs)
    # celeris.checks: a bool is not a count (True was accepted as 1 replica), nor a float
    for kwargs in ({"num_replicas": True}, {"num_replicas": 2.0}, {"threads": "2"}):
        with pytest.raises(CelerisTypeError, match=next(iter(kwargs))):
            ray_serve.deploy(registry, "btc@production", **kwargs)
    with pytest.raises(ConfigError):
        ray_serve.deploy(registry, "@production")


def test_shutdown_stops_ray_and_its_processes(apps: Any) -> None:
    import psutil
    import ray

    ours = psutil.Process()
    assert ray.is_initialized()
    assert any("raylet" in p.name() for p in ours.children(recursive=True))
    ray_serve.shutdown()
    assert not ray.is_initialized()

    def leftovers() -> list[str]:
        # Ray's processes only: a test worker may also run other servers of other tests'
        # session fixtures (PostgreSQL, redis-server) as its children
        names = []
        for p in ours.children(recursive=True):
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "ray" in " ".join(p.cmdline()):
                    names.append(p.name())
            except psutil.NoSuchProcess:
                continue
        return names

    deadline = time.monotonic() + 15
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers() == []
