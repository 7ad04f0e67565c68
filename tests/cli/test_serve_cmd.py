"""``celeris serve`` as a real process and ``celeris models`` on a registry directory."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from celeris.cli import serve_cmd

L, H, C = 16, 4, 3
TOKEN = "cli-test-token"
CELERIS = Path(sys.executable).with_name("celeris")
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    serve_cmd.register(app)
    return app


APP = _app()


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(APP, list(args), env=env)


def _celeris() -> list[str]:
    """The ``celeris`` command with ``serve`` (the script once main.py registers it)."""
    from celeris.cli.main import app

    if any(c.name == "serve" for c in app.registered_commands):
        return [str(CELERIS)]
    code = (
        "import typer; from celeris.cli import serve_cmd; "
        "app = typer.Typer(add_completion=False); serve_cmd.register(app); app()"
    )
    return [sys.executable, "-c", code]


def _checkpoint(directory: Path, seed: int, nan: bool = False) -> Path:
    from celeris.models.catalogue import build_model, get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import StandardScaler

    torch.manual_seed(seed)
    model = build_model("cnn_lstm", **get_model("cnn_lstm").tiny_config(L, H, C)).eval()
    if nan:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float("nan"))
    rng = np.random.default_rng(seed)
    scaler = StandardScaler().fit(100 + rng.standard_normal((300, C)).cumsum(axis=0))
    meta = {"input_size": L, "horizon": H, "n_features": C}
    return save_checkpoint(model, directory, scaler=scaler, meta=meta)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("cli-ckpts")
    return {
        "a": _checkpoint(base / "a", 0),
        "b": _checkpoint(base / "b", 1),
        "nan": _checkpoint(base / "nan", 0, nan=True),
    }


@pytest.fixture(scope="module")
def onnx_registry(tmp_path_factory: pytest.TempPathFactory, checkpoints) -> Path:
    """btc@1 production and btc@2 staging, both with their ONNX export (what serving loads)."""
    root = tmp_path_factory.mktemp("cli-onnx") / "registry"
    for key, stage in (("a", "production"), ("b", "staging")):
        result = invoke(
            "models", "register", "btc", str(checkpoints[key]), "--stage", stage,
            "--registry", str(root), "--json",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return root


# -- celeris models ----------------------------------------------------------------------------


def test_models_register_list_promote_rollback_round_trip(tmp_path, checkpoints):
    reg = str(tmp_path / "registry")
    out = invoke(
        "models", "register", "btc", str(checkpoints["a"]), "--metrics", '{"mae": 0.5}',
        "--export", "none", "--registry", reg, "--json",
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    first = json.loads(out.stdout)
    assert (first["ref"], first["stage"], first["metrics"]) == ("btc@1", "staging", {"mae": 0.5})
    assert len(first["sha256"]) == 64
    out = invoke(
        "models", "register", "btc", str(checkpoints["b"]), "--export", "none", "--registry", reg
    )
    assert out.exit_code == 0 and "registered btc@2 (staging)" in out.stdout
    assert "celeris models promote btc 2" in out.stdout

    for version in ("1", "2"):
        out = invoke("models", "promote", "btc", version, "--registry", reg, "--json")
        assert out.exit_code == 0, out.output
        assert json.loads(out.stdout)["shadow"]["passed"] is True
    stages = {
        r["version"]: r["stage"]
        for r in json.loads(invoke("models", "list", "--registry", reg, "--json").stdout)
    }
    assert stages == {1: "archived", 2: "production"}

    out = invoke("models", "rollback", "btc", "--registry", reg)
    assert out.exit_code == 0 and "btc@1 is production again" in out.stdout
    table = invoke("models", "list", "btc", "--registry", reg).stdout
    assert "production" in table and "archived" in table and "mae=0.5" in table


def test_models_promote_nan_model_refused_by_shadow_validation(tmp_path, checkpoints):
    reg = str(tmp_path / "registry")
    for key in ("a", "nan"):
        assert (
            invoke(
                "models",
                "register",
                "btc",
                str(checkpoints[key]),
                "--export",
                "none",
                "--registry",
                reg,
            ).exit_code
            == 0
        )
    assert invoke("models", "promote", "btc", "1", "--registry", reg).exit_code == 0
    out = invoke("models", "promote", "btc", "2", "--registry", reg)
    assert out.exit_code == 2
    assert (
        "btc@2 failed shadow validation on 64 synthetic histories (finite); not promoted"
        in out.output
    )
    assert "FAIL finite" in out.output
    stages = {
        r["version"]: r["stage"]
        for r in json.loads(invoke("models", "list", "--registry", reg, "--json").stdout)
    }
    assert stages == {1: "production", 2: "staging"}


def test_models_bad_input_one_line_errors(tmp_path, checkpoints):
    reg = str(tmp_path / "registry")
    out = invoke("models", "promote", "nope", "--registry", reg)
    assert out.exit_code == 2 and "no model named 'nope'" in out.output
    out = invoke("models", "register", "btc", str(tmp_path), "--registry", reg)
    assert out.exit_code == 2 and "not a checkpoint" in out.output
    out = invoke(
        "models", "register", "btc", str(checkpoints["a"]), "--metrics", "{bad", "--registry", reg
    )
    assert out.exit_code == 2 and "--metrics is not valid JSON" in out.output
    out = invoke(
        "models", "ab", "btc", "--url", "http://127.0.0.1:9", env={"CELERIS_ADMIN_TOKEN": "x"}
    )
    assert out.exit_code == 2 and "cannot reach http://127.0.0.1:9" in out.output
    out = invoke(
        "models", "rollback", "btc", "--url", "http://127.0.0.1:9", env={"CELERIS_ADMIN_TOKEN": ""}
    )
    assert out.exit_code == 2 and "set CELERIS_ADMIN_TOKEN" in out.output
    out = invoke("serve", "--model", "btc@production", "--registry", reg, "--max-wait-ms", "1,2")
    assert out.exit_code == 2 and "give 4 waits in ms" in out.output
    out = invoke("serve", "--registry", reg, env={"CELERIS_SERVE_MODELS": ""})
    assert out.exit_code == 2 and "no model to serve" in out.output
    # That failure came after the port was bound: a leaked socket would warn (an error here).
    gc.collect()


def test_models_ab_table_shows_missing_and_nan_figures_as_dash():
    # The A/B table formats through celeris.formatting: None and NaN both show "-" (NaN showed
    # "nan" with the old local helper); numbers keep 4 significant digits.
    arm = {"requests": 3, "errors": 0, "latency_p50_ms": 1.23456, "latency_p95_ms": None}
    out = {
        "ab": {"champion": 2, "challenger": 1, "split": 0.5},
        "arms": {
            "champion": {**arm, "value_mean": float("nan")},
            "challenger": {**arm, "value_mean": 12345.678},
        },
    }
    with serve_cmd.console.capture() as captured:
        serve_cmd._print_ab("btc", out, stopped=False)
    cells = [
        [c.strip() for c in line.strip().strip("│").split("│")]
        for line in captured.get().splitlines()
        if line.count("│") == 7
    ]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["champion"] == ["3", "0", "1.235", "-", "-"]
    assert rows["challenger"] == ["3", "0", "1.235", "-", "1.235e+04"]


def test_serve_and_models_help_teach_with_examples():
    serve_help = invoke("serve", "--help").stdout
    for fragment in (
        "celeris serve --model btc@production",
        "/v1/forecast",
        "CELERIS_ADMIN_TOKEN",
        "--redis",
    ):
        assert fragment in serve_help
    models_help = invoke("models", "--help").stdout
    for command in ("list", "register", "promote", "ab", "rollback"):
        assert command in models_help
    assert "celeris models promote btc 2" in models_help


# -- celeris serve, a real process -------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``celeris serve ...`` in a subprocess; records how long it took to answer /readyz 200."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [*_celeris(), "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.ready_s: float | None = None

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.proc.communicate()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    self.ready_s = time.monotonic() - self.started
                    return self.ready_s
            except httpx.HTTPError:
                pass
            time.sleep(0.005)
        raise AssertionError("serve did not get ready in time")

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err


@pytest.fixture
def serving(onnx_registry: Path, tmp_path: Path) -> Iterator[ServeProcess]:
    root = tmp_path / "registry"
    shutil.copytree(onnx_registry, root)
    proc = ServeProcess(
        "--model", "btc@production", "--registry", str(root), "--poll", "0.2",
        env={"CELERIS_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate()


def test_serve_process_gets_ready_serves_and_obeys_models_commands(serving):
    ready_s = serving.wait_ready()
    # The floor is 3 s on an idle machine (measured ~1-1.5 s); shared CI runners get slack.
    assert ready_s < 15.0, f"ready after {ready_s:.2f} s"
    x = (100 + np.random.default_rng(0).standard_normal((2, L, C)).cumsum(axis=1)).tolist()
    r = httpx.post(serving.url + "/v1/models/btc/predict", json={"inputs": x})
    assert r.status_code == 200 and r.json()["version"] == 1
    assert httpx.get(serving.url + "/v1/models").json()["models"][0]["backend"] == "onnx"

    env = {"CELERIS_ADMIN_TOKEN": TOKEN}
    out = invoke("models", "promote", "btc", "2", "--url", serving.url, env=env)
    assert out.exit_code == 0, out.output
    assert "now serves btc@2 (was btc@1); shadow validation passed" in out.stdout
    assert (
        httpx.post(serving.url + "/v1/models/btc/predict", json={"inputs": x}).json()["version"]
        == 2
    )

    out = invoke(
        "models", "ab", "btc", "--version", "1", "--split", "0.5", "--url", serving.url, env=env
    )
    assert out.exit_code == 0 and "champion v2 vs challenger v1 (50% of keys)" in out.stdout, (
        out.output
    )
    for i in range(10):
        httpx.post(serving.url + "/v1/models/btc/predict", json={"inputs": x, "key": f"k{i}"})
    out = invoke("models", "ab", "btc", "--url", serving.url, "--json", env=env)
    assert sum(a["requests"] for a in json.loads(out.stdout)["arms"].values()) == 10
    out = invoke("models", "ab", "btc", "--stop", "--url", serving.url, env=env)
    assert out.exit_code == 0 and "too thin to judge" in out.stdout, out.output

    out = invoke("models", "rollback", "btc", "--url", serving.url, env=env)
    assert out.exit_code == 0 and "now serves btc@1 (was btc@2)" in out.stdout
    wrong = invoke(
        "models", "rollback", "btc", "--url", serving.url, env={"CELERIS_ADMIN_TOKEN": "wrong"}
    )
    assert wrong.exit_code == 2 and "server answered 401" in wrong.output

    code, stdout, _ = serving.stop()
    assert code == 0
    assert f"serving btc@1 at {serving.url}" in stdout and "ready in" in stdout
    assert "admin API enabled" in stdout
    assert re.search(r"[\d,]{6,} start-up objects frozen out of the GC", stdout), stdout


def test_serve_refuses_tampered_artifact_and_exits_2(onnx_registry, tmp_path):
    root = tmp_path / "registry"
    shutil.copytree(onnx_registry, root)
    with (root / "artifacts" / "btc" / "1" / "model.onnx").open("ab") as f:
        f.write(b"\0")
    proc = ServeProcess(
        "--model", "btc@production", "--registry", str(root), "--log-level", "critical"
    )
    _, stderr = proc.proc.communicate(timeout=60)  # it exits on its own
    assert proc.proc.returncode == 2
    assert (
        "error:" in stderr and "does not match the registry" in stderr and "refusing it" in stderr
    )
