"""Shared fixtures of the doctor tests.

- ``doctor_env``: a clean environment for :func:`celeris.doctor.run_doctor` in this process:
  no ``CELERIS_*`` variable from outside, ``CELERIS_HOME`` in a temporary directory (so the
  default registry is empty), no config file, and ``CELERIS_SERVE_PORT`` on a free port (the
  default 8000 may be taken on a shared machine). Returns the ``pytest.MonkeyPatch`` to set
  more variables with.
- ``run_cli(*args, env=...)``: ``celeris doctor ARGS`` in a fresh interpreter (for settings numba
  reads once, at import: ``NUMBA_*``), with that clean environment plus ``env``; returns
  ``(exit code, parsed JSON or None, stdout + stderr)``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(environ: dict[str, str], home: Path) -> dict[str, str]:
    """``environ`` without ``CELERIS_*``, plus a private home, no config, a free serve port."""
    env = {k: v for k, v in environ.items() if not k.startswith("CELERIS_")}
    env.update(
        CELERIS_HOME=str(home),
        CELERIS_CONFIG=str(home / "no-config.toml"),
        CELERIS_SERVE_PORT=str(free_port()),
    )
    return env


@pytest.fixture
def doctor_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean ``CELERIS_*`` environment in this process (see the module docstring)."""
    for key in [k for k in os.environ if k.startswith("CELERIS_")]:
        monkeypatch.delenv(key)
    for key, value in clean_env({}, tmp_path / "home").items():
        monkeypatch.setenv(key, value)
    return monkeypatch


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., tuple[int, Any, str]]:
    """Run ``celeris doctor ARGS`` in a fresh interpreter (see the module docstring)."""

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
        environ = clean_env(dict(os.environ), tmp_path / "cli-home")
        environ.update(env or {})
        done = subprocess.run(
            [sys.executable, "-m", "celeris.cli.main", "doctor", *args],
            env=environ,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        doc = json.loads(done.stdout) if "--json" in args and done.stdout.strip() else None
        return done.returncode, doc, done.stdout + done.stderr

    return run


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checks of a ``--json`` report by name."""
    return {c["name"]: c for c in doc["checks"]}
