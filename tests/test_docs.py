"""Every example in README.md and docs/ runs as written, in a temporary directory.

Python blocks run one by one (``exec``). Shell blocks (```bash, ```sh, ```console) of a
document run in order in one temporary directory, as a reader following the document would,
with ``CELERIS_HOME`` and ``HOME`` inside it, each under :data:`BLOCK_TIMEOUT_S`; a block fails
the test when any of its commands fails (``set -e -o pipefail``; ``curl`` fails on an HTTP
error status). A block that cannot run here carries a marker on the line before it, naming
why: ``<!-- not-run: needs an NVIDIA GPU -->``; an unmarked block that fails fails the test.

What the runner provides, so that blocks can be written as a user types them:

- Servers. ``celeris serve``, ``celeris serve-ray``, ``celeris llm serve``, ``celeris exchange
  fake`` and ``python -m celeris.serving.ray_serve`` are started in the background (a trailing ``&`` is dropped),
  waited for until they answer, and stopped when the block ends; ``$SERVER_PID`` is the
  newest one, and ``$(pgrep -f 'celeris serve')`` means it (other tests' servers would match
  too). The admin API is on (``CELERIS_ADMIN_TOKEN``). ``celeris bench`` exiting 1 (a missed
  SLA on a shared machine) is a measurement, not a failure.
- Ports. The documents' ports (8000, 8001, 8002, 8080, 9000, 6379) become free ports, the same
  within a block, so blocks, documents and parallel test workers never collide; ``/tmp/`` paths
  move into the temporary directory.
- An LLM. ``CELERIS_LLM_BASE_URL`` points at ``celeris llm serve --tiny`` (a tiny random
  model), started once for the documents whose commands ask an LLM, with a fixed seed,
  temperature 1 and six re-asks (a random model needs them to satisfy ``fast < slow``).
- What a document assumes exists (:data:`SETUP`): e.g. serving.md's quick start registers
  "a trained checkpoint directory (celeris train ... --out runs/btc)": the runner trains one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK_TIMEOUT_S = 300
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<why>[^>]*?)\s*-->\s*$")
SHELL_LANGS = ("bash", "sh", "console")
DOC_PORTS = (8000, 8001, 8002, 8080, 9000, 6379)
NEEDS_LLM = re.compile(r"celeris (analyze|llm check)|celeris optimize .*--llm")

# Shell run before a document's block k: what the document says exists already.
# ``{python[DOC:K]}`` stands for DOC's K-th Python block, as text.
ZSCORE_PY = "cat > zscore.py <<'CELERIS_DOC_EOF'\n{python[strategies.md:0]}CELERIS_DOC_EOF\n"
SETUP: dict[tuple[str, int], str] = {
    # "Save this as zscore.py:" (the Python block above)
    ("strategies.md", 0): ZSCORE_PY,
    # "your own (docs/strategies.md)"
    ("README.md", 1): ZSCORE_PY,
    # "a trained checkpoint directory (celeris train ... --out runs/btc) becomes version 1"
    # (btc reads 8 closes, as the curls send); the second server serves eth@3 and uses Redis
    ("serving.md", 0): (
        "celeris train nhits --data sample:sp500 --horizon 5 --input-size 8 --steps 20 "
        "--out runs/btc --json > /dev/null\n"
        "for v in 1 2 3; do celeris models register eth runs/btc --json > /dev/null; done\n"
        "_serve 6379 '' redis-server --port 6379 --save '' --appendonly no\n"
    ),
    # the HTTP API's curls: a server with the admin API on, and a version 2 to promote
    ("serving.md", 1): (
        "celeris models register btc runs/btc --json > /dev/null\n"
        "celeris serve --model btc@production\n"
    ),
    # compare: "two model versions: serve each on its own port"
    (
        "serving.md",
        3,
    ): "celeris serve --model btc@1 --port 8001\nceleris serve --model btc@2 --port 8002\n",
    # the Python example above the block wrote this audit log
    ("llm.md", 1): (
        "celeris optimize --data sample:sp500 --strategy sma_cross --bound fast=5:100 "
        "--bound slow=20:400 --rounds 2 --per-round 2 --year-days 252 --audit runs/sma.jsonl "
        "--json > /dev/null\n"
    ),
}

PRELUDE = r"""
set -e -o pipefail
_started_log="$CELERIS_DOC_PIDS"
curl() { command curl --fail-with-body --max-time 60 "$@"; }
_port_of() {  # _port_of DEFAULT ARGS...: the value of --port among ARGS, else DEFAULT
  local default=$1; shift
  while [ $# -gt 0 ]; do
    case $1 in --port) echo "$2"; return;; --port=*) echo "${1#--port=}"; return;; esac
    shift
  done
  echo "$default"
}
_serve() {  # _serve PORT READY_PATH COMMAND...: start in the background, wait until it answers
  local port=$1 ready=$2; shift 2
  local log; log=$(mktemp -p "$CELERIS_DOC_LOGS" server.XXXXXX)
  setsid "$@" > "$log" 2>&1 &
  SERVER_PID=$!
  echo "$SERVER_PID" >> "$_started_log"
  local deadline=$((SECONDS + 180))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2> /dev/null \
      && { [ -z "$ready" ] || command curl -sf -o /dev/null "http://127.0.0.1:$port$ready"; }; do
    if ! kill -0 "$SERVER_PID" 2> /dev/null || [ $SECONDS -gt $deadline ]; then
      echo "server did not come up: $*" >&2; tail -n 30 "$log" >&2; return 1
    fi
    sleep 0.2
  done
}
celeris() {
  if [ "$1" = serve ]; then
    local port; port=$(_port_of "$CELERIS_DOC_PORT_8000" "$@")
    case " $* " in *" --port "*|*" --port="*) ;; *) set -- "$@" --port "$port";; esac
    _serve "$port" /readyz "$CELERIS_DOC_BIN/celeris" "$@"
  elif [ "$1" = serve-ray ]; then
    _serve "$(_port_of "$CELERIS_DOC_PORT_8000" "$@")" /healthz "$CELERIS_DOC_BIN/celeris" "$@"
  elif [ "$1" = llm ] && [ "$2" = serve ]; then
    local port; port=$(_port_of "$CELERIS_DOC_PORT_8080" "$@")
    case " $* " in *" --port "*|*" --port="*) ;; *) set -- "$@" --port "$port";; esac
    _serve "$port" /health "$CELERIS_DOC_BIN/celeris" "$@"
  elif [ "$1" = exchange ] && [ "$2" = fake ]; then
    _serve "$(_port_of "$CELERIS_DOC_PORT_9000" "$@")" /api/v3/ping "$CELERIS_DOC_BIN/celeris" "$@"
  elif [ "$1" = bench ]; then  # exit 1 is a missed SLA: a measurement, not a failure
    local rc=0; "$CELERIS_DOC_BIN/celeris" "$@" || rc=$?
    [ "$rc" -le 1 ] || return "$rc"
  else
    "$CELERIS_DOC_BIN/celeris" "$@"
  fi
}
python() {
  if [ "$1" = -m ] && [ "$2" = celeris.serving.ray_serve ]; then
    _serve "$(_port_of "$CELERIS_DOC_PORT_8000" "$@")" /healthz "$CELERIS_DOC_PYTHON" "$@"
  else
    "$CELERIS_DOC_PYTHON" "$@"
  fi
}
python3() { python "$@"; }
"""


@dataclass(frozen=True)
class Block:
    doc: str
    index: int  # among the document's blocks of this kind
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the marker's reason


def _blocks(langs: tuple[str, ...]) -> list[Block]:
    out = []
    fence = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
    for path in DOCS:
        text = path.read_text()
        k = 0
        for match in fence.finditer(text):
            lang = match.group(1)
            if lang not in langs:
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = NOT_RUN.search(before)
            out.append(
                Block(path.name, k, line, lang, match.group(2), marker and marker.group("why"))
            )
            k += 1
    return out


# -- Python --------------------------------------------------------------------------------


@pytest.mark.parametrize("block", _blocks(("python",)), ids=lambda b: f"{b.doc}[{b.index}]")
def test_docs_python_example_runs(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    namespace: dict = {"__name__": f"doc_{block.doc}_{block.index}"}
    exec(compile(block.code, f"{block.doc}[{block.index}]", "exec"), namespace)


# -- shell ---------------------------------------------------------------------------------


def _commands(block: Block) -> str:
    """The block as a script: console blocks keep their ``$ `` lines (output is dropped)."""
    if block.lang != "console":
        return block.code
    lines = []
    for line in block.code.splitlines():
        if line.startswith("$ "):
            lines.append(line[2:])
        elif lines and lines[-1].endswith("\\"):
            lines.append(line)
    return "\n".join(lines) + "\n"


def _localise(script: str, ports: dict[int, int], tmp: Path) -> str:
    """Free ports for the documents' ports, /tmp/ inside the test's directory, the newest
    server for ``pgrep``, and no ``&`` after a server command (the runner backgrounds it)."""
    for doc_port, port in ports.items():
        script = re.sub(rf"(?<![\d.]){doc_port}(?!\d)", str(port), script)
    script = script.replace("/tmp/", f"{tmp}/tmp/")
    script = re.sub(r"\$\(pgrep -f '[^']*'\)", "$SERVER_PID", script)
    server = (
        r"^(\s*(?:celeris (?:llm )?serve|celeris exchange fake|python3? -m "
        r"celeris\.serving\.ray_serve)\b[^#\n]*?)"
    )
    return re.sub(server + r"\s*&(\s*(?:#.*)?)$", r"\1\2", script, flags=re.M)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pids_file: Path) -> None:
    """Stop the servers a block started: SIGTERM to each (Ray's launcher then stops the Ray it
    started; signalling its whole group would kill Ray under it), then SIGKILL to whatever is
    left in their process groups."""
    if not pids_file.is_file():
        return
    pids = [int(p) for p in pids_file.read_text().split()]
    pids_file.unlink()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``celeris llm serve --tiny`` on a free port, for the documents that ask an LLM."""
    (port,) = _free_ports(1)
    folder = tmp_path_factory.mktemp("doc-llm")
    log = (folder / "serve.log").open("w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": str(folder)}
    command = [sys.executable, "-m", "celeris.cli.main", "llm", "serve", "--tiny",
               str(folder / "tiny-llm"), "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        import urllib.request

        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"llm serve --tiny did not start: {(folder / 'serve.log').read_text()}"
                    )
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


SHELL_DOCS = sorted({b.doc for b in _blocks(SHELL_LANGS)})


def test_docs_shell_blocks_marked_not_run_say_why() -> None:
    for block in _blocks(SHELL_LANGS):
        if block.not_run is not None:
            assert len(block.not_run) >= 10, f"{block.doc}:{block.line}: say why it cannot run"


@pytest.mark.parametrize("doc", SHELL_DOCS)
def test_docs_shell_examples_run(doc: str, tmp_path: Path, request: pytest.FixtureRequest):
    _run_shell_blocks([b for b in _blocks(SHELL_LANGS) if b.doc == doc], tmp_path, request)


def _run_shell_blocks(blocks: list[Block], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Run the unmarked blocks in order (see the module docstring); fail on the first that
    fails, naming its document and line."""
    runnable = [b for b in blocks if b.not_run is None]
    if not runnable:
        return
    tmp_path.mkdir(parents=True, exist_ok=True)
    for sub in ("home", "celeris-home", "tmp", "logs"):
        (tmp_path / sub).mkdir()
    pids = tmp_path / "logs" / "pids"
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "CELERIS_HOME": str(tmp_path / "celeris-home"),
        "CELERIS_CONFIG": str(tmp_path / "home" / "no-config.toml"),
        "CELERIS_DOC_PIDS": str(pids),
        "CELERIS_DOC_LOGS": str(tmp_path / "logs"),
        "CELERIS_DOC_BIN": str(bin_dir),
        "CELERIS_DOC_PYTHON": sys.executable,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".cache" / "numba")),
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "120",
        "CELERIS_ADMIN_TOKEN": "doc-admin-token",
    }
    for key in [k for k in env if k.startswith("CELERIS_LLM_")]:
        del env[key]
    if any(NEEDS_LLM.search(b.code) for b in runnable):
        env["CELERIS_LLM_BASE_URL"] = request.getfixturevalue("tiny_llm")
        # the tiny model is random: a fixed seed makes its answers repeatable; sampling at
        # temperature 1 and more re-asks let `analyze` get a schema-valid answer (fast < slow)
        # out of it (at 0.2 it answers fast=37, slow=37 again and again)
        env["CELERIS_LLM_SEED"] = "0"
        env["CELERIS_LLM_TEMPERATURE"] = "1.0"
        env["CELERIS_LLM_VALIDATION_RETRIES"] = "6"
    try:
        for block in runnable:
            # fresh ports per block: a stopping server (Ray takes seconds) may hold the old ones
            ports = dict(zip(DOC_PORTS, _free_ports(len(DOC_PORTS)), strict=True))
            env.update({f"CELERIS_DOC_PORT_{p}": str(q) for p, q in ports.items()})
            doc = block.doc
            setup = SETUP.get((doc, block.index), "")
            for b in _blocks(("python",)):
                setup = setup.replace(f"{{python[{b.doc}:{b.index}]}}", b.code)
            script = PRELUDE + _localise(setup + _commands(block), ports, tmp_path)
            path = tmp_path / "logs" / f"block{block.index}.sh"
            path.write_text(script)
            try:
                done = subprocess.run(
                    ["bash", str(path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                    timeout=BLOCK_TIMEOUT_S,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                pytest.fail(
                    f"{doc}:{block.line}: the shell block ran past {BLOCK_TIMEOUT_S} s\n"
                    f"{(exc.stderr or b'')[-3000:]!r}"
                )
            _stop(pids)  # the block's servers
            if done.returncode != 0:
                pytest.fail(
                    f"{doc}:{block.line}: the shell block failed (exit {done.returncode}); mark "
                    "it <!-- not-run: why --> only if it cannot run here\n--- stdout\n"
                    f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
                )
    finally:
        _stop(pids)
        shutil.rmtree(tmp_path / "home", ignore_errors=True)


# -- the runner itself ---------------------------------------------------------------------


def _block(code: str, not_run: str | None = None) -> Block:
    return Block("example.md", 0, 7, "bash", code, not_run)


def test_docs_runner_localises_ports_tmp_pgrep_and_background(tmp_path: Path) -> None:
    script = (
        "celeris serve --model btc --socket /tmp/c.sock &   # serve\n"
        "curl -s localhost:8000/x 127.0.0.18000 --server-pid $(pgrep -f 'celeris serve')\n"
        "sleep 3 &\n"
    )
    out = _localise(script, {8000: 41234}, tmp_path)
    assert out.splitlines() == [
        f"celeris serve --model btc --socket {tmp_path}/tmp/c.sock   # serve",
        "curl -s localhost:41234/x 127.0.0.18000 --server-pid $SERVER_PID",
        "sleep 3 &",  # only server commands lose their &
    ]


def test_docs_runner_marker_parsed_and_console_prompts_kept(tmp_path: Path) -> None:
    doc = tmp_path / "m.md"
    doc.write_text(
        "<!-- not-run: needs an NVIDIA GPU -->\n```bash\nnvidia-smi\n```\n\n"
        "```console\n$ echo one \\\n    two\none two\n$ true\n```\n"
    )
    global DOCS
    saved, DOCS = DOCS, [doc]
    try:
        marked, console = _blocks(SHELL_LANGS)
    finally:
        DOCS = saved
    assert (marked.not_run, console.not_run) == ("needs an NVIDIA GPU", None)
    assert _commands(console) == "echo one \\\n    two\ntrue\n"


def test_docs_runner_failing_block_fails_marked_block_skipped(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _run_shell_blocks([_block("exit 3\n", not_run="needs a real exchange")], tmp_path, request)
    with pytest.raises(pytest.fail.Exception, match=r"example\.md:7: the shell block failed"):
        _run_shell_blocks([_block("true\nfalse\necho never\n")], tmp_path / "b", request)
    import http.server
    import threading

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:  # curl fails on an HTTP error status (here 501: the handler serves nothing)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/nothing"
        with pytest.raises(pytest.fail.Exception, match="exit 22"):
            _run_shell_blocks([_block(f"curl -s {url}\n")], tmp_path / "c", request)
    finally:
        httpd.shutdown()
        httpd.server_close()
