"""``celeris models`` registry commands: production compatibility and --allow-incompatible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from celeris.cli import serve_cmd

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    serve_cmd.register(app)
    return app


APP = _app()


def invoke(*args: str):
    return runner.invoke(APP, list(args))


def _checkpoint(directory: Path, input_size: int, n_features: int) -> Path:
    from celeris.models.catalogue import build_model, get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.data import StandardScaler

    torch.manual_seed(0)
    config = get_model("cnn_lstm").tiny_config(input_size, 4, n_features)
    model = build_model("cnn_lstm", **config).eval()
    rng = np.random.default_rng(0)
    scaler = StandardScaler().fit(100 + rng.standard_normal((300, n_features)).cumsum(axis=0))
    meta = {"input_size": input_size, "horizon": 4, "n_features": n_features}
    return save_checkpoint(model, directory, scaler=scaler, meta=meta)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("shapes")
    return {"16x3": _checkpoint(base / "a", 16, 3), "32x5": _checkpoint(base / "b", 32, 5)}


def _stages(reg: str) -> dict[int, str]:
    out = invoke("models", "list", "--registry", reg, "--json")
    return {r["version"]: r["stage"] for r in json.loads(out.stdout)}


def _register(reg: str, path: Path, *extra: str):
    return invoke(
        "models", "register", "btc", str(path), "--export", "none", "--registry", reg, *extra
    )


def test_models_promote_other_input_shape_refused_one_line_exit_2(tmp_path, shapes):
    reg = str(tmp_path / "registry")
    assert _register(reg, shapes["16x3"], "--stage", "production").exit_code == 0
    assert _register(reg, shapes["32x5"]).exit_code == 0
    out = invoke("models", "promote", "btc", "2", "--registry", reg)
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "btc@2 cannot replace btc@1 as production" in lines[0]
    assert "input_size 32 instead of 16" in lines[0] and "n_features 5 instead of 3" in lines[0]
    assert "--allow-incompatible" in lines[0]
    assert _stages(reg) == {1: "production", 2: "staging"}

    out = invoke("models", "promote", "btc", "2", "--allow-incompatible", "--registry", reg)
    assert out.exit_code == 0, out.output
    assert _stages(reg) == {1: "archived", 2: "production"}


def test_models_register_production_other_shape_refused_unless_allowed(tmp_path, shapes):
    reg = str(tmp_path / "registry")
    assert _register(reg, shapes["16x3"], "--stage", "production").exit_code == 0
    out = _register(reg, shapes["32x5"], "--stage", "production")
    assert out.exit_code == 2 and "btc@2 cannot replace btc@1" in out.output
    assert _stages(reg) == {1: "production"}
    out = _register(reg, shapes["32x5"], "--stage", "production", "--allow-incompatible")
    assert out.exit_code == 0, out.output
    assert _stages(reg) == {1: "archived", 2: "production"}

    out = invoke("models", "rollback", "btc", "--registry", reg)
    assert out.exit_code == 2 and "btc@1 cannot replace btc@2" in out.output
    out = invoke("models", "rollback", "btc", "--allow-incompatible", "--registry", reg)
    assert out.exit_code == 0 and "btc@1 is production again" in out.stdout


def test_models_promote_allow_incompatible_with_url_refused(tmp_path):
    out = invoke(
        "models", "promote", "btc", "2", "--allow-incompatible", "--url", "http://127.0.0.1:9"
    )
    assert out.exit_code == 2 and "not through --url" in out.output


def test_models_register_metrics_from_fifo_refused_without_hanging(tmp_path, shapes):
    import os

    fifo = tmp_path / "metrics.json"
    os.mkfifo(fifo)
    out = _register(str(tmp_path / "registry"), shapes["16x3"], "--metrics", f"@{fifo}")
    assert out.exit_code == 2 and "metrics.json is a named pipe (FIFO)" in out.output
