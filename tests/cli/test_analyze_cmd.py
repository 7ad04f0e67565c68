"""``celeris analyze`` through Typer against the real local OpenAI-compatible server."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from celeris.backtest import STRATEGIES, from_signals
from celeris.cli import analyze_cmd
from celeris.data import load

# The session server of the LLM tests (tiny local model, or llama.cpp under make test-llm).
from tests.llm.conftest import llm_server, tiny_model_dir  # noqa: F401

torch.set_num_threads(1)
runner = CliRunner()
BASE = ["analyze", "--data", "sample:sp500", "--strategy", "bbands_breakout"]
PARAMS = ["--param", "window=20", "--param", "nbdev=2"]


def make_app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode="rich", pretty_exceptions_enable=False)

    @app.callback()
    def main() -> None:
        """celeris"""

    analyze_cmd.register(app)
    return app


@pytest.fixture
def llm_env(llm_server, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("CELERIS_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("CELERIS_LLM_BASE_URL", llm_server.base_url)
    monkeypatch.setenv("CELERIS_LLM_MODEL", llm_server.model)
    monkeypatch.setenv("CELERIS_LLM_RESPONSE_FORMAT", llm_server.response_format_mode)
    monkeypatch.setenv("CELERIS_LLM_TEMPERATURE", "0")
    monkeypatch.setenv("CELERIS_LLM_MAX_TOKENS", "400")
    monkeypatch.setenv("CELERIS_LLM_MAX_RETRIES", "0")
    # no CELERIS_LLM_TOKENIZER: the client learns the window and the counts from the server
    monkeypatch.delenv("CELERIS_LLM_TOKENIZER", raising=False)
    return llm_server


def test_analyze_cmd_text_output_has_every_section(llm_env):
    result = runner.invoke(make_app(), [*BASE, *PARAMS, "--budget", "3200", "--fees", "0.001"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(
        "Analysis of bbands_breakout (window=20, nbdev=2) on sample:sp500 (5,031 bars from "
        "1999-01-04 to 2018-12-31)\n"
    )
    assert (
        f"Model: {llm_env.model}; prompts (tokens of the 3,200 budget): strategy_analysis@v1" in out
    )
    for heading in ("Backtest", "Strategy analysis", "Market regime", "Risk assessment"):
        assert f"\n{heading}\n" in out
    assert "  Regime: " in out and "  Exposure: " in out and "  Proposals:" in out


def test_analyze_cmd_json_only_regime_and_risk_with_inputs(llm_env, tmp_path):
    funding = tmp_path / "funding.csv"
    funding.write_text(
        "timestamp,rate\n2018-12-30T00:00:00Z,0.0001\n2018-12-30T08:00:00Z,-0.00005\n"
    )
    book = tmp_path / "book.json"
    book.write_text(json.dumps({"bids": [[2506.0, 3.0]], "asks": [[2507.0, 2.0]]}))
    result = runner.invoke(
        make_app(),
        [
            *BASE, *PARAMS, "--only", "risk", "--only", "regime", "--funding", str(funding),
            "--orderbook", str(book), "--with", "nasdaq=sample:nasdaq", "--budget", "3400",
            "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data["analyses"]) == ["regime", "risk"]  # canonical order
    assert data["analyses"]["regime"]["answer"]["label"] in {
        "trending_up", "trending_down", "ranging", "volatile", "quiet",
    }  # fmt: skip
    assert data["analyses"]["risk"]["answer"]["exposure"] in {"low", "moderate", "high", "extreme"}
    for name in ("regime", "risk"):
        prompt = data["analyses"][name]["prompt"]
        assert prompt["budget"] == 3400 and 0 < prompt["tokens"] <= 3400
    assert data["analyses"]["risk"]["prompt"]["template"] == "risk_assessment@v1"
    bars = load("sample:sp500")
    entries, exits = STRATEGIES["bbands_breakout"].signals(bars, {"window": 20, "nbdev": 2.0})
    stats = from_signals(bars, entries, exits, year_days=252).stats().iloc[0]
    assert data["backtest"]["sharpe"] == pytest.approx(float(stats["sharpe"]), rel=1e-12)
    assert data["sensitivity"] == {}  # no strategy analysis, no sweep
    assert data["model"] == llm_env.model


def test_analyze_cmd_json_prompts_flag_includes_rendered_messages(llm_env):
    result = runner.invoke(
        make_app(),
        [*BASE, *PARAMS, "--only", "regime", "--budget", "3200", "--json", "--prompts"],
    )
    assert result.exit_code == 0, result.output
    messages = json.loads(result.stdout)["analyses"]["regime"]["prompt"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Price action:\nPeriod: 1999-01-04 to 2018-12-31" in messages[1]["content"]


def test_analyze_cmd_without_llm_prints_one_line_and_exits_2(monkeypatch, tmp_path):
    monkeypatch.delenv("CELERIS_LLM_BASE_URL", raising=False)
    monkeypatch.setenv("CELERIS_CONFIG", str(tmp_path / "no-config.toml"))
    result = runner.invoke(make_app(), [*BASE, *PARAMS])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: no LLM configured: set CELERIS_LLM_BASE_URL")
    assert "celeris optimize" in err  # points to the Optuna path
    assert result.stdout == ""


def test_analyze_cmd_unknown_analysis_exits_2_with_hint(llm_env):
    result = runner.invoke(make_app(), [*BASE, "--only", "regim"])
    assert result.exit_code == 2
    assert "unknown analysis 'regim' (did you mean 'regime'?)" in result.stderr


def test_analyze_cmd_bad_funding_file_exits_2_naming_file_and_line(llm_env, tmp_path):
    funding = tmp_path / "funding.csv"
    funding.write_text("timestamp,rate\n2024-01-01T00:00:00Z,0.0001\n2024-01-01T08:00:00Z,abc\n")
    result = runner.invoke(make_app(), [*BASE, "--only", "regime", "--funding", str(funding)])
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())  # rich may wrap a long path
    assert "funding.csv, line 3: rate 'abc' is not a finite number" in err


def test_analyze_cmd_param_with_two_values_exits_2(llm_env):
    result = runner.invoke(make_app(), [*BASE, "--param", "window=10,20"])
    assert result.exit_code == 2
    assert "--param window takes one value, got 2" in result.stderr


def test_analyze_cmd_default_budget_fits_server_window_without_tokenizer(
    llm_env, monkeypatch, request
):
    # `celeris llm serve --tiny` + `celeris analyze` as the docs show: nothing configured but
    # the URL; every prompt, counted as the model counts, leaves a full answer's room
    monkeypatch.delenv("CELERIS_LLM_MAX_TOKENS")
    monkeypatch.delenv("CELERIS_LLM_TEMPERATURE")
    result = runner.invoke(
        make_app(), [*BASE, *PARAMS, "--with", "nasdaq=sample:nasdaq", "--json", "--prompts"]
    )
    assert result.exit_code == 0, result.output
    analyses = json.loads(result.stdout)["analyses"]
    assert list(analyses) == ["strategy", "regime", "risk"]
    if llm_env.backend != "local":
        return
    from celeris.testing.tiny_llm import LocalChatModel

    model = LocalChatModel(request.getfixturevalue("tiny_model_dir"))
    window, answer = model.context_length, 1024  # 4096, the default max_tokens
    for a in analyses.values():
        prompt = a["prompt"]
        chat = model.tokenizer.apply_chat_template(
            prompt["messages"], tokenize=False, add_generation_prompt=True
        )
        exact = model.count_tokens(chat)  # what the model reads
        assert prompt["budget"] == window - answer
        assert exact + answer <= window, (prompt["template"], exact)
