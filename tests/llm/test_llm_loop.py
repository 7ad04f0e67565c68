"""The analyst through a real OpenAI-compatible server: structured answers, re-asks, the loop.

Runs against the local tiny-model server by default and against llama.cpp's server with the
bundled SmolLM2-135M under ``make test-llm`` (``CELERIS_TEST_LLM_BACKEND=llamacpp``).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest

from celeris.backtest.strategies import get_strategy
from celeris.data import load
from celeris.errors import LLMError
from celeris.llm.audit import read_audit
from celeris.llm.client import InvalidAnswer, LLMClient
from celeris.llm.dataset import examples_from_events, export_dataset
from celeris.llm.optimizer import optimize, replay
from celeris.llm.schemas import MarketRegime, RiskAssessment, proposal_schema, search_space
from celeris.llm.settings import LLMSettings


def _client(server, **kw) -> LLMClient:  # type: ignore[no-untyped-def]
    settings = {
        "base_url": server.base_url,
        "model": server.model,
        "response_format": server.response_format_mode,
        "temperature": 0.7,
        "max_tokens": 400,
        "max_retries": 0,
        "timeout": 120,
        **kw,
    }
    return LLMClient(LLMSettings(**settings))


def _local_only(server) -> None:  # type: ignore[no-untyped-def]
    if server.backend != "local":
        pytest.skip("needs the local server's request log")


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load("sample:sp500")


@pytest.mark.parametrize("schema", [MarketRegime, RiskAssessment])
def test_client_structured_answer_validates(llm_server, schema) -> None:  # type: ignore[no-untyped-def]
    answer = _client(llm_server).ask(
        schema, [{"role": "user", "content": "The index fell 8% this month on rising volume."}]
    )
    assert isinstance(answer.value, schema)
    assert answer.model == llm_server.model and answer.raw
    assert answer.usage["completion_tokens"] > 0 and answer.seconds > 0


def test_client_sends_schema_as_response_format_and_instruction(llm_server) -> None:  # type: ignore[no-untyped-def]
    _local_only(llm_server)
    before = len(llm_server.requests)
    _client(llm_server).ask(MarketRegime, [{"role": "user", "content": "Regime?"}], seed=1)
    body = llm_server.requests[before]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["label"]["enum"][0] == "trending_up"
    assert "JSON schema" in body["messages"][0]["content"]
    assert body["seed"] == 1


def test_client_reasks_with_validation_error_then_succeeds(llm_server) -> None:  # type: ignore[no-untyped-def]
    # The JSON schema cannot express fast < slow, so the constrained model breaks it about
    # half the time; the re-ask carries the error. Some seed among these shows a fail-then-pass.
    _local_only(llm_server)
    strat = get_strategy("sma_cross")
    schema = proposal_schema(strat, search_space(strat, {"fast": "5:100", "slow": "20:400"}))
    client = _client(llm_server, validation_retries=3)
    for seed in range(30):
        before = len(llm_server.requests)
        try:
            answer = client.ask(schema, [{"role": "user", "content": "Improve it."}], seed=seed)
        except InvalidAnswer:
            continue
        if len(answer.attempts) > 1:
            break
    else:
        pytest.fail("no seed in 0..29 produced a re-ask that then validated")
    assert answer.attempts[0].error is not None and answer.attempts[-1].error is None
    assert "constraint fast < slow" in answer.attempts[0].error
    reask = llm_server.requests[before + 1]["messages"]
    assert reask[-2]["role"] == "assistant" and reask[-2]["content"] == answer.attempts[0].raw
    assert "That answer is invalid" in reask[-1]["content"]
    assert "fast < slow" in reask[-1]["content"]


def test_client_gives_up_with_raw_answer_after_bounded_reasks(llm_server) -> None:  # type: ignore[no-untyped-def]
    # Without constrained decoding a random tiny model cannot produce the schema.
    _local_only(llm_server)
    client = _client(llm_server, response_format="prompt", validation_retries=2, max_tokens=40)
    before = len(llm_server.requests)
    with pytest.raises(InvalidAnswer, match=r"gave no valid MarketRegime in 3 attempts") as info:
        client.ask(MarketRegime, [{"role": "user", "content": "Regime?"}], seed=3)
    assert len(info.value.attempts) == 3 and info.value.raw == info.value.attempts[-1].raw
    assert "last answer:" in str(info.value)
    assert len(llm_server.requests) - before == 3
    assert "response_format" not in llm_server.requests[before]


def test_client_unreachable_server_fails_in_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LLMClient(
        LLMSettings(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=5)
    )
    with pytest.raises(LLMError, match=r"cannot reach the LLM server at http://127.0.0.1"):
        client.ask(MarketRegime, [{"role": "user", "content": "x"}])


def test_client_model_discovered_when_server_has_one(llm_server) -> None:  # type: ignore[no-untyped-def]
    client = LLMClient(LLMSettings(base_url=llm_server.base_url, max_retries=0))
    assert client.model == llm_server.model


@pytest.fixture(scope="module")
def llm_run(llm_server, tiny_model_dir, sp500: pd.DataFrame, tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("llm") / "run.jsonl"
    # Both servers have a 4,096-token context: the prompt gets 3,000, the answer 400.
    # The local model's tokenizer counts exactly; llama.cpp's is estimated conservatively.
    tokenizer = str(tiny_model_dir) if llm_server.backend == "local" else None
    client = _client(llm_server, validation_retries=3, context_tokens=3000, tokenizer=tokenizer)
    result = optimize(
        sp500, "sma_cross", {"fast": "5:100", "slow": "20:400"}, method="llm", rounds=2,
        per_round=2, client=client, audit=path, progress=False, year_days=252,
    )  # fmt: skip
    return result, path


def test_optimize_with_llm_backtests_every_valid_proposal(llm_run) -> None:  # type: ignore[no-untyped-def]
    result, _ = llm_run
    assert result.method == "llm" and result.model
    proposals = [t for t in result.trials if t.source == "llm"]
    sensitivity = [t for t in result.trials if t.source == "sensitivity"]
    assert sensitivity, "the model must be shown a sensitivity table"
    if len(result.failed_rounds) < 2:
        assert proposals and all(t.reason and t.decision for t in proposals)
    for t in proposals:
        assert 5 <= t.params["fast"] <= 100 and 20 <= t.params["slow"] <= 400
        assert t.params["fast"] < t.params["slow"]
    # Context variants count as trials for the deflated Sharpe ratio.
    judged = [t for t in result.trials if t.oos is not None and t.source != "baseline"]
    for t in judged:
        assert t.n_trials >= 1 + len(sensitivity)


def test_optimize_with_llm_audit_has_prompts_answers_and_decisions(llm_run) -> None:  # type: ignore[no-untyped-def]
    result, path = llm_run
    events = read_audit(path)
    prompts = [e for e in events if e["event"] == "prompt"]
    answers = [e for e in events if e["event"] == "answer"]
    assert len(prompts) == 2 and len(answers) == 2
    for p in prompts:
        assert p["template"] == "strategy_analysis@v1" and len(p["template_sha256"]) == 64
        assert p["model"] == result.model and p["tokens"] <= p["budget"]
    for a in answers:
        assert a["attempts"] and all("raw" in att for att in a["attempts"])
        assert (a["parsed"] is None) == (a["error"] is not None)


def test_optimize_with_llm_prompt_shows_no_out_of_sample_bars(llm_run) -> None:  # type: ignore[no-untyped-def]
    result, path = llm_run
    oos_start = pd.Timestamp(result.split["out_of_sample"][0][0])
    text = json.dumps([e["messages"] for e in read_audit(path) if e["event"] == "prompt"])
    in_sample_end = pd.Timestamp(result.split["in_sample"][1]).strftime("%Y-%m-%d")
    assert in_sample_end in text
    for day in pd.date_range(oos_start, pd.Timestamp(result.split["out_of_sample"][-1][1])):
        assert day.strftime("%Y-%m-%d") not in text


def test_replay_of_llm_run_reproduces_without_the_model(llm_run, sp500) -> None:  # type: ignore[no-untyped-def]
    result, path = llm_run
    again, diffs = replay(path, sp500)
    assert diffs == []
    assert [t.params for t in again.trials if t.source == "llm"] == [
        t.params for t in result.trials if t.source == "llm"
    ]


def test_export_dataset_from_llm_run(llm_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path = llm_run
    out = tmp_path / "data.jsonl"
    n_all = export_dataset([path], out, include_rejected=True)
    answered = [e for e in read_audit(path) if e["event"] == "answer" and e["parsed"]]
    assert n_all == len(answered)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for ex in lines:
        roles = [m["role"] for m in ex["messages"]]
        assert roles == ["system", "user", "assistant"]
        target = json.loads(ex["messages"][-1]["content"])
        assert set(target) == {"assessment", "proposals"}
        assert ex["meta"]["template"] == "strategy_analysis@v1"
    n_verified = export_dataset([path], out)
    assert n_verified == sum(1 for ex in lines if ex["meta"]["accepted"] > 0)


def test_examples_keep_only_accepted_proposals() -> None:
    run = "r1"
    params_a, params_b = {"fast": 10, "slow": 50}, {"fast": 20, "slow": 80}
    events = [
        {"run_id": run, "event": "prompt", "round": 1, "template": "t@v1",
         "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
        {"run_id": run, "event": "answer", "round": 1, "model": "m", "parsed": {
            "assessment": "a",
            "proposals": [{"params": params_a, "reason": "ra"}, {"params": params_b, "reason": "rb"}],
        }},
        {"run_id": run, "event": "decision", "round": 1, "source": "llm", "accepted": False,
         "params": params_a, "reason": "out-of-sample ..."},
        {"run_id": run, "event": "decision", "round": 1, "source": "llm", "accepted": True,
         "params": params_b, "reason": "accepted ..."},
    ]  # fmt: skip
    (example,) = examples_from_events(events)
    target = json.loads(example["messages"][-1]["content"])
    assert target["proposals"] == [{"params": params_b, "reason": "rb"}]
    assert example["meta"]["accepted"] == 1 and len(example["meta"]["outcomes"]) == 2
    events[3]["accepted"] = False
    assert examples_from_events(events) == []
    assert len(examples_from_events(events, include_rejected=True)) == 1


def test_finetune_on_exported_dataset(llm_run, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from celeris.llm.finetune import finetune_lora

    _, path = llm_run
    data = tmp_path / "data.jsonl"
    if export_dataset([path], data, include_rejected=True) == 0:
        # The offline tiny model answers under a grammar, so a round always parses: nothing to
        # export is a regression. A real small model (make test-llm) may fail validation.
        if os.environ.get("CELERIS_TEST_LLM_BACKEND"):
            pytest.xfail("the real model answered no round validly")
        pytest.fail("the model answered no round validly: nothing to fine-tune on")
    res = finetune_lora(tiny_model_dir, data, tmp_path / "adapter", epochs=2, progress=False)
    assert res.steps >= 2 and res.trainable_params > 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
