"""``celeris serve-ray``: the Ray Serve command in the Typer CLI (its end-to-end run against a real
Ray is docs/serving.md's shell example, run by tests/test_docs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from celeris.cli import ray_cmd
from celeris.cli.main import app

runner = CliRunner()


def test_serve_ray_registry_defaults_to_celeris_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIS_HOME", "/srv/celeris")
    monkeypatch.delenv("CELERIS_SERVE_REGISTRY", raising=False)
    assert ray_cmd.registry_dir(None) == "/srv/celeris/registry"
    monkeypatch.setenv("CELERIS_SERVE_REGISTRY", "/data/reg")
    assert ray_cmd.registry_dir(None) == "/data/reg"
    assert ray_cmd.registry_dir(Path("r")) == "r"


def test_serve_ray_registry_read_through_serve_settings_like_celeris_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celeris.serving.config import load_serve_settings

    # ServeSettings reads its variables case-insensitively; a hand-written getenv did not.
    monkeypatch.delenv("CELERIS_SERVE_REGISTRY", raising=False)
    monkeypatch.setenv("celeris_serve_registry", "/data/lower")
    assert ray_cmd.registry_dir(None) == str(load_serve_settings().registry) == "/data/lower"


def test_serve_ray_bad_serve_variable_one_line_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELERIS_SERVE_REGISTRY", raising=False)
    monkeypatch.setenv("CELERIS_SERVE_PORT", "eighty")
    out = runner.invoke(app, ["serve-ray", "--model", "btc@production"])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "CELERIS_SERVE_PORT" in lines[0], out.output


def test_serve_ray_help_teaches_with_an_example() -> None:
    out = runner.invoke(app, ["serve-ray", "--help"])
    assert out.exit_code == 0, out.output
    assert "celeris serve-ray --model btc@production" in out.stdout and "--replicas" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("--model", "btc", "--deployment", "bached"), "unknown deployment 'bached' (did you mean"),
        (("--model", "btc", "--replicas", "0"), "num_replicas must be >= 1, got 0"),
        (("--model", "@3"), "model must be NAME@VERSION or NAME@STAGE"),
    ],
)
def test_serve_ray_bad_input_one_line_exit_2_before_starting_ray(
    args: tuple[str, ...], message: str
) -> None:
    out = runner.invoke(app, ["serve-ray", *args])
    assert out.exit_code == 2, out.output
    lines = [line for line in out.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.output


def test_serve_ray_old_module_entry_point_forwards_with_a_deprecation_note() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celeris.serving.ray_serve", "--model", "btc", "--replicas", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "deprecated" in done.stderr and "celeris serve-ray" in done.stderr
    assert "num_replicas must be >= 1, got 0" in done.stderr
