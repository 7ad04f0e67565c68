"""The LLM analyst end to end through a real OpenAI-compatible server (``llm_server``).

The strategy is ``bbands_breakout``: its proposal schema is fully expressible as JSON schema
(no cross-parameter constraint), so a schema-constrained model always answers validly and these
tests check the analyst's plumbing, not the luck of a random model.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from celeris.backtest import STRATEGIES, from_signals
from celeris.data import load
from celeris.errors import CelerisTypeError, ConfigError
from celeris.llm import market as mk
from celeris.llm.analyst import ANALYSES, AnalysisReport, analyze
from celeris.llm.audit import read_audit
from celeris.llm.client import LLMClient
from celeris.llm.context import TOKENS_PER_MESSAGE, estimate_tokens, token_counter
from celeris.llm.schemas import MarketRegime, RiskAssessment
from celeris.llm.settings import LLMSettings

torch.set_num_threads(1)

STRATEGY = "bbands_breakout"
PARAMS = {"window": 20, "nbdev": 2.0}
# Leaves room in the tiny model's 4,096-token window for the schema instruction (~1,000 tokens)
# and the answer (max_tokens 400).
BUDGET = 3200  # the schema instruction counts; the tiny model has 4,096 tokens


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load("sample:sp500")


@pytest.fixture(scope="module")
def client(llm_server) -> LLMClient:  # type: ignore[no-untyped-def]
    return LLMClient(
        LLMSettings(
            base_url=llm_server.base_url,
            model=llm_server.model,
            response_format=llm_server.response_format_mode,
            temperature=0.0,
            max_tokens=400,
            max_retries=0,
            validation_retries=2,
            timeout=120,
        )
    )


@pytest.fixture(scope="module")
def counter(llm_server, request):  # type: ignore[no-untyped-def]
    # The tiny model's own tokenizer gives exact counts; llama.cpp's model has none on disk here.
    if llm_server.backend == "local":
        return token_counter(request.getfixturevalue("tiny_model_dir"))
    return estimate_tokens


@pytest.fixture(scope="module")
def analysis(sp500, client, counter, llm_server) -> tuple[AnalysisReport, list]:  # type: ignore[no-untyped-def]
    before = len(llm_server.requests)
    out = analyze(
        sp500, STRATEGY, PARAMS, client=client, budget_tokens=BUDGET, counter=counter,
        fees=0.001, label="sample:sp500",
    )  # fmt: skip
    # What the server received for this report (the local backend logs request bodies).
    return out, list(llm_server.requests[before:])


@pytest.fixture(scope="module")
def report(analysis) -> AnalysisReport:  # type: ignore[no-untyped-def]
    return analysis[0]


def recount(messages, counter) -> int:  # type: ignore[no-untyped-def]
    return sum(counter(m["content"]) + TOKENS_PER_MESSAGE for m in messages)


def test_analyze_local_server_all_three_analyses_parse(report, llm_server):
    assert tuple(report.results) == ANALYSES
    assert isinstance(report.regime, MarketRegime)
    assert isinstance(report.risk, RiskAssessment)
    strategy = report.strategy_analysis
    assert type(strategy).__name__ == "StrategyAnalysis"
    for proposal in strategy.proposals:  # type: ignore[union-attr]
        params = proposal.params.model_dump()
        assert set(params) == {"window", "nbdev"}
        assert 2 <= params["window"] <= 10_000 and 0.1 <= params["nbdev"] <= 10
    assert report.model == llm_server.model
    assert report.templates == {
        "strategy": "strategy_analysis@v1",
        "regime": "market_regime@v1",
        "risk": "risk_assessment@v1",
    }
    for result in report.results.values():
        assert result.attempts >= 1 and result.usage["completion_tokens"] > 0


def test_analyze_each_prompt_within_budget_by_the_same_counter(report, counter):
    for name, result in report.results.items():
        prompt = result.prompt
        assert prompt.budget == BUDGET
        assert prompt.tokens == recount(prompt.messages, counter), name
        assert prompt.tokens <= BUDGET, name
        assert report.prompt_tokens[name] == prompt.tokens


def test_analyze_server_receives_the_rendered_prompts(analysis, llm_server):
    if llm_server.backend != "local":
        pytest.skip("needs the local server's request log")
    report, sent = analysis
    assert len(sent) == 3  # one valid answer per analysis, no re-ask
    for body, result in zip(sent, report.results.values(), strict=True):
        # The client appends the JSON schema to the system message; the user part is ours as is.
        assert body["messages"][1] == result.prompt.messages[1]
        assert body["messages"][0]["content"].startswith(result.prompt.messages[0]["content"])


def test_analyze_backtest_metrics_match_from_signals(report, sp500):
    entries, exits = STRATEGIES[STRATEGY].signals(sp500, PARAMS)
    stats = from_signals(sp500, entries, exits, fees=0.001, year_days=252).stats().iloc[0]
    for name in ("sharpe", "total_return", "max_drawdown", "trades"):
        assert report.backtest[name] == pytest.approx(float(stats[name]), rel=1e-12), name
    assert report.params == {"window": 20, "nbdev": 2.0}


def test_analyze_sensitivity_rows_match_sweep_values(report, sp500):
    rows = report.sensitivity["window"]
    assert [r["window"] for r in rows] == [10, 15, 20, 25, 30]
    now = next(r for r in rows if r["window"] == 20)
    assert now["sharpe"] == pytest.approx(report.backtest["sharpe"], rel=1e-12)
    entries, exits = STRATEGIES[STRATEGY].signals(sp500, {"window": 30, "nbdev": 2.0})
    stats = from_signals(sp500, entries, exits, fees=0.001, year_days=252).stats().iloc[0]
    assert rows[-1]["sharpe"] == pytest.approx(float(stats["sharpe"]), rel=1e-12)
    assert [r["nbdev"] for r in report.sensitivity["nbdev"]] == [1.0, 1.5, 2.0, 2.5, 3.0]


def test_analyze_prompts_carry_the_exact_summaries(report, sp500):
    regime = report.results["regime"].prompt
    user = regime.messages[1]["content"]
    assert mk.price_action_summary(sp500, regime.levels["price_action"]) in user
    assert mk.volatility_summary(sp500, regime.levels["volatility"]) in user
    assert "Funding rates:\nnot supplied" in user
    risk = report.results["risk"].prompt
    assert "Current position:" in risk.messages[1]["content"]
    strategy = report.results["strategy"].prompt.messages[1]["content"]
    assert "Current parameters: window=20, nbdev=2" in strategy
    assert "- window: window=10: " in strategy or "- window: best neighbour" in strategy


def test_report_to_dict_round_trips_through_json(report):
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["model"] == report.model
    assert set(data["analyses"]) == set(ANALYSES)
    assert data["analyses"]["regime"]["answer"] == report.regime.model_dump(mode="json")  # type: ignore[union-attr]
    assert data["analyses"]["risk"]["prompt"]["tokens"] == report.prompt_tokens["risk"]
    assert "messages" not in data["analyses"]["risk"]["prompt"]
    with_messages = report.to_dict(messages=True)
    assert with_messages["analyses"]["risk"]["prompt"]["messages"][1]["role"] == "user"


def test_report_to_text_has_headings_and_the_answers(report):
    text = report.to_text()
    for heading in ("Backtest", "Strategy analysis", "Market regime", "Risk assessment"):
        assert f"\n{heading}\n" in text
    regime = report.regime
    assert f"Regime: {regime.label} (confidence {regime.confidence:.0%})" in text  # type: ignore[union-attr]
    assert f"Exposure: {report.risk.exposure};" in text  # type: ignore[union-attr]
    assert text.startswith(
        "Analysis of bbands_breakout (window=20, nbdev=2) on sample:sp500 (5,031 bars from "
        "1999-01-04 to 2018-12-31)"
    )
    assert "[" not in text.splitlines()[0]  # plain text, no rich markup


def test_analyze_smaller_budget_shrinks_optional_sections_first(sp500, client, counter, report):
    roomy = report.results["regime"].prompt
    budget = roomy.tokens - 150  # above the shortest form of this prompt with either counter
    small = analyze(
        sp500, STRATEGY, PARAMS, client=client, analyses=("regime",), budget_tokens=budget,
        counter=counter, fees=0.001,
    )  # fmt: skip
    prompt = small.results["regime"].prompt
    assert roomy.tokens > budget >= prompt.tokens == recount(prompt.messages, counter)
    # the optional volume profile (lowest priority) goes first: shorter, or dropped
    assert "volume_profile" in prompt.dropped or (
        prompt.levels["volume_profile"] > roomy.levels["volume_profile"]
    )
    assert sum(prompt.levels.values()) + len(prompt.dropped) > sum(roomy.levels.values()) + len(
        roomy.dropped
    )
    # required sections shrink but stay, rendered exactly at their level
    assert "price_action" not in prompt.dropped and "volatility" not in prompt.dropped
    user = prompt.messages[1]["content"]
    assert mk.price_action_summary(sp500, prompt.levels["price_action"]) in user
    assert mk.volatility_summary(sp500, prompt.levels["volatility"]) in user


def test_analyze_budget_too_small_raises_before_asking(sp500, client, counter, llm_server):
    before = len(llm_server.requests)
    with pytest.raises(
        ConfigError, match=r"needs \d+ tokens even with every section at its shortest"
    ):
        analyze(sp500, STRATEGY, PARAMS, client=client, budget_tokens=300, counter=counter)
    assert len(llm_server.requests) == before  # no paid call was made


@pytest.mark.parametrize(
    ("budget", "error", "match"),
    [
        (2500.5, CelerisTypeError, r"budget_tokens must be an int >= 1, got float 2500\.5"),
        (0, ConfigError, "budget_tokens must be >= 1, got 0"),
    ],
)
def test_analyze_bad_budget_raises_before_the_backtest(
    sp500, client, counter, budget, error, match
):
    with pytest.raises(error, match=match):
        analyze(sp500, STRATEGY, PARAMS, client=client, budget_tokens=budget, counter=counter)


def test_analyze_funding_orderbook_and_other_assets_reach_the_prompts(sp500, client, counter):
    funding = pd.Series(
        np.linspace(-1e-4, 2e-4, 90),
        index=pd.date_range("2018-12-01", periods=90, freq="8h", tz="UTC"),
    )
    book = {"bids": [[2506.0, 3.0], [2505.0, 10.0]], "asks": [[2507.0, 2.0], [2510.0, 8.0]]}
    nasdaq = load("sample:nasdaq")
    out = analyze(
        sp500, STRATEGY, PARAMS, client=client, analyses=("risk",), funding=funding,
        orderbook=book, other_assets={"nasdaq": nasdaq}, budget_tokens=3400, counter=counter,
    )  # fmt: skip
    prompt = out.results["risk"].prompt
    user = prompt.messages[1]["content"]
    assert "Correlation with nasdaq: strategy " in user
    for name, text in (
        ("funding", mk.funding_summary(funding, prompt.levels["funding"])),
        ("orderbook", mk.orderbook_summary(book, prompt.levels["orderbook"])),
    ):
        assert name in prompt.dropped or text in user, name
    assert not {"funding", "orderbook"} <= set(prompt.dropped)
    assert prompt.tokens <= 3400


def test_analyze_audit_log_records_prompt_and_answer(sp500, client, counter, tmp_path):
    path = tmp_path / "analyze.jsonl"
    out = analyze(
        sp500, STRATEGY, PARAMS, client=client, analyses=("regime",), budget_tokens=BUDGET,
        counter=counter, audit=path,
    )  # fmt: skip
    events = read_audit(path)
    assert [e["event"] for e in events] == ["run", "prompt", "answer"]
    assert events[0]["kind"] == "analyze" and events[0]["analyses"] == ["regime"]
    assert events[1]["messages"] == [dict(m) for m in out.results["regime"].prompt.messages]
    assert events[1]["tokens"] == out.results["regime"].prompt.tokens
    assert events[2]["parsed"] == out.regime.model_dump(mode="json")  # type: ignore[union-attr]


def test_analyze_unknown_analysis_raises_with_hint(sp500, client):
    with pytest.raises(ConfigError, match=r"unknown analysis 'regim'.*did you mean 'regime'"):
        analyze(sp500, STRATEGY, PARAMS, client=client, analyses=("regim",))


def test_analyze_unknown_objective_raises(sp500, client):
    with pytest.raises(ConfigError, match="unknown objective 'sharp'"):
        analyze(sp500, STRATEGY, PARAMS, client=client, objective="sharp")


def test_analyze_unknown_portfolio_option_raises(sp500, client):
    with pytest.raises(ConfigError, match="unknown backtest option 'fee'"):
        analyze(sp500, STRATEGY, PARAMS, client=client, fee=0.001)


def test_analyze_bad_funding_type_raises(sp500, client):
    with pytest.raises(CelerisTypeError, match="funding must be a Series"):
        analyze(sp500, STRATEGY, PARAMS, client=client, funding=[0.0001])


def test_analyze_zero_volume_data_says_so_in_regime_prompt(sp500, client, counter):
    bars = sp500.assign(volume=0.0)
    out = analyze(
        bars, STRATEGY, PARAMS, client=client, analyses=["regime"], budget_tokens=BUDGET,
        counter=counter,
    )  # fmt: skip
    prompt = out.results["regime"].prompt
    assert "volume_profile" in prompt.dropped or (
        "Volume is zero on all 5,031 bars" in prompt.messages[1]["content"]
    )
    assert math.isfinite(out.backtest["sharpe"])


def test_analysis_report_text_formats_metrics_as_celeris_formatting_does():
    report = AnalysisReport(
        strategy="sma_cross",
        params={"fast": 10, "sl_stop": 0.05},
        market="sample",
        model="m",
        backtest={"total_return": 0.1234, "profit_factor": math.inf, "trades": 1234.0},
        sensitivity={},
        results={},
        budget=1000,
    )
    lines = report.to_text().splitlines()
    assert lines[0] == "Analysis of sma_cross (fast=10, sl_stop=0.05) on sample"
    # An infinite profit factor (no losing trade) reads "inf" as in the reports, not "n/a".
    assert lines[-1] == "  total_return 12.34%, profit_factor inf, trades 1,234"
