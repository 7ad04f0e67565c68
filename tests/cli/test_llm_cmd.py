"""``celeris optimize`` and ``celeris llm ...`` through the real command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from celeris.cli.main import app

runner = CliRunner()
OPT = ["optimize", "--data", "sample:sp500", "--strategy", "sma_cross", "--bound", "fast=5:60",
       "--bound", "slow=20:200", "--rounds", "2", "--per-round", "3"]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_llm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CELERIS_LLM_BASE_URL", raising=False)
    monkeypatch.setenv("CELERIS_CONFIG", str(tmp_path / "none.toml"))


def test_optimize_optuna_prints_report_and_writes_audit(tmp_path: Path) -> None:
    audit = tmp_path / "run.jsonl"
    result = runner.invoke(app, [*OPT, "--audit", str(audit)])
    assert result.exit_code == 0, result.output
    assert "sma_cross: optuna, 2 rounds, 6 trials, objective sharpe" in result.output
    assert "baseline" in result.output and f"audit log: {audit}" in result.output
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    assert events[0]["event"] == "run" and events[-1]["event"] == "result"

    replayed = runner.invoke(app, ["optimize", "--data", "sample:sp500", "--replay", str(audit)])
    assert replayed.exit_code == 0, replayed.output
    assert "replay reproduces every recorded decision" in replayed.output


def test_optimize_json_has_baseline_and_rejections(tmp_path: Path) -> None:
    result = runner.invoke(app, [*OPT, "--audit", str(tmp_path / "a.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["method"] == "optuna" and doc["baseline"]["params"] == {"fast": 10, "slow": 50}
    assert doc["trials"] == 6 and len(doc["rejected"]) + bool(doc["improved"]) >= 1


def test_optimize_storage_keeps_the_optuna_study(tmp_path: Path) -> None:
    import optuna

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    result = runner.invoke(app, [*OPT, "--audit", str(tmp_path / "a.jsonl"), "--storage", url,
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    store = optuna.storages.RDBStorage(url)
    try:
        (study,) = optuna.get_all_study_summaries(storage=store)
    finally:
        store.engine.dispose()
    assert study.study_name.startswith("celeris-sma_cross-") and study.n_trials >= 6


def test_optimize_llm_without_server_one_line_exit_2() -> None:
    result = runner.invoke(app, [*OPT, "--llm"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no LLM configured" in lines[0] and "Optuna" in lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bound", "fast=9"], "LOW:HIGH"),
        (["--bound", "fst=5:9"], "did you mean 'fast'"),
        (["--objective", "win_rate"], "cannot be judged"),
        (["--holdout", "0.95"], "holdout"),
        (["--storage", "studies.db"], "storage must be a URL"),
        (["--task-size", "2"], "give --ray too"),
    ],
)
def test_optimize_bad_options_one_line_exit_2(extra: list[str], message: str) -> None:
    result = runner.invoke(app, [*OPT, *extra])
    assert result.exit_code == 2 and message in result.output


def test_llm_prompts_lists_templates_with_versions() -> None:
    result = runner.invoke(app, ["llm", "prompts", "--json"])
    assert result.exit_code == 0
    names = {row["name"]: row for row in json.loads(result.output)}
    assert names["strategy_analysis"]["versions"] == [1]
    assert "metrics" in names["strategy_analysis"]["placeholders"]


def test_llm_check_without_server_exit_2() -> None:
    result = runner.invoke(app, ["llm", "check"])
    assert result.exit_code == 2 and "no LLM configured" in result.output


def test_llm_export_dataset_missing_audit_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["llm", "export-dataset", "--audit", str(tmp_path / "no.jsonl"), "--out", "x.jsonl"]
    )
    assert result.exit_code == 2 and "does not exist" in result.output


def test_optimize_default_audit_under_celeris_home_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("CELERIS_HOME", str(home))
    result = runner.invoke(app, OPT)
    assert result.exit_code == 0, result.output
    written = list((home / "runs").glob("optimize-sma_cross-*.jsonl"))
    assert len(written) == 1 and list(cwd.iterdir()) == []
    assert f"audit log: {written[0]}" in result.output.replace("\n", "")
    explicit = runner.invoke(app, [*OPT, "--audit", "mine.jsonl", "--json"])
    assert explicit.exit_code == 0, explicit.output
    assert json.loads(explicit.output)["audit"] == "mine.jsonl" and (cwd / "mine.jsonl").is_file()


def test_llm_export_dataset_several_audits_and_glob_as_docs_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        done = runner.invoke(app, [*OPT, "--rounds", "1", "--audit", f"runs/{name}.jsonl"])
        assert done.exit_code == 0, done.output
    # what the shell makes of `--audit runs/*.jsonl`: one option value, then the rest
    expanded = ["--audit", "runs/a.jsonl", "runs/b.jsonl"]
    for args in (
        expanded,
        ["--audit", "runs/*.jsonl"],
        ["-a", "runs/a.jsonl", "-a", "runs/b.jsonl"],
    ):
        result = runner.invoke(app, ["llm", "export-dataset", *args, "--out", "data.jsonl"])
        assert result.exit_code == 0, result.output
        assert "from 2 audit log(s) to data.jsonl" in result.output
        assert (tmp_path / "data.jsonl").is_file()
    none = runner.invoke(app, ["llm", "export-dataset", "--audit", "logs/*.jsonl", "--out", "d"])
    assert none.exit_code == 2 and "--audit logs/*.jsonl: no file matches" in none.output


def test_llm_serve_tiny_answers_openai_requests(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "celeris.cli.main", "llm", "serve", "--tiny", str(tmp_path / "m"),
           "--port", str(port)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                    models = json.load(r)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"server did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                time.sleep(0.2)
        assert models["data"][0]["id"] == "m"
        from celeris.llm.client import LLMClient
        from celeris.llm.schemas import MarketRegime
        from celeris.llm.settings import LLMSettings

        client = LLMClient(LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0))
        answer = client.ask(MarketRegime, [{"role": "user", "content": "Regime?"}])
        assert isinstance(answer.value, MarketRegime)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
