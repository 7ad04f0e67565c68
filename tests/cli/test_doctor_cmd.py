"""``celeris doctor`` through the real command: exit codes, the table, ``--json``, bad options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from celeris.cli.main import app
from celeris.doctor import check_names
from tests.doctor.conftest import by_name, doctor_env  # noqa: F401  (fixture)
from tests.llm.conftest import LLMServerInfo, llm_server, tiny_model_dir  # noqa: F401

runner = CliRunner()


def test_doctor_quick_json_exit_0_every_quick_check(doctor_env: pytest.MonkeyPatch) -> None:  # noqa: F811
    result = runner.invoke(app, ["doctor", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [c["name"] for c in doc["checks"]] == check_names(quick=True)
    assert doc["quick"] is True and doc["ok"] is True and doc["counts"]["fail"] == 0
    assert all(c["fix"] for c in doc["checks"] if c["status"] in ("warn", "fail"))


def test_doctor_failing_check_exit_1_json_and_table_give_fix(
    doctor_env: pytest.MonkeyPatch,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "feed.sock").write_text("a regular file")
    doctor_env.setenv("CELERIS_SERVE_SOCKET", str(tmp_path / "feed.sock"))
    result = runner.invoke(app, ["doctor", "--quick", "--json"])
    assert result.exit_code == 1
    check = by_name(json.loads(result.output))["socket"]
    assert check["status"] == "fail" and "not a socket" in check["summary"]
    assert "choose another CELERIS_SERVE_SOCKET" in check["fix"]

    table = runner.invoke(app, ["doctor", "--quick"])
    assert table.exit_code == 1
    assert "FAILED: 10 checks" in table.output and "1 fail" in table.output
    assert "Signal socket" in table.output and "not a socket" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lock", "/no/such/constraints.txt"], "--lock /no/such/constraints.txt: no such file"),
        (["--timeout", "0"], "--timeout"),
        (["--port", "0"], "--port"),
    ],
)
def test_doctor_bad_option_exit_2(
    doctor_env: pytest.MonkeyPatch,  # noqa: F811
    args: list[str],
    message: str,
) -> None:
    result = runner.invoke(app, ["doctor", "--quick", *args])
    assert result.exit_code == 2 and message in result.output


def test_doctor_lock_mismatch_fails_packages(
    doctor_env: pytest.MonkeyPatch,  # noqa: F811
    tmp_path: Path,
) -> None:
    lock = tmp_path / "constraints.txt"
    lock.write_text("# a lock\nnumpy==0.0.1\nnot-installed-pkg==1.0\nrich>=1\n")
    result = runner.invoke(app, ["doctor", "--quick", "--json", "--lock", str(lock)])
    assert result.exit_code == 1
    check = by_name(json.loads(result.output))["packages"]
    assert (
        check["status"] == "fail"
        and "numpy" in check["summary"]
        and "lock 0.0.1" in check["summary"]
    )
    assert "pip install -c" in check["fix"]
    assert check["details"]["not_installed"] == 1 and check["details"]["not_pins"] == [
        "line 4: rich>=1"
    ]


def test_doctor_llm_flag_checks_endpoint(
    doctor_env: pytest.MonkeyPatch,  # noqa: F811
    llm_server: LLMServerInfo,  # noqa: F811
) -> None:
    doctor_env.setenv("CELERIS_LLM_BASE_URL", llm_server.base_url)
    doctor_env.setenv("CELERIS_LLM_RESPONSE_FORMAT", llm_server.response_format_mode)
    result = runner.invoke(app, ["doctor", "--quick", "--llm", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["llm"] is True and by_name(doc)["llm"]["status"] == "ok"
