"""The tiny local model and the OpenAI-compatible server, driven through the real openai SDK."""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import llguidance  # noqa: F401  (a dev extra: missing is a failure)
import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from celeris.errors import CelerisTypeError, ConfigError
from celeris.testing.llm_server import OpenAICompatibleServer
from celeris.testing.tiny_llm import (
    Completion,
    ContextLengthError,
    LocalChatModel,
    SchemaError,
    build_tiny_model,
)

from .conftest import LLMServerInfo

USER = [{"role": "user", "content": "Propose a trade for BTC/USDT as JSON."}]
API_KEY = "test-key"


class Leg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    symbol: str
    weight: float = Field(ge=-1, le=1)
    window: int = Field(ge=2, le=400)


class PortableProposal(BaseModel):
    """What every backend enforces: llama.cpp's JSON-schema grammar ignores numeric bounds."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["buy", "sell", "hold"]
    confidence: float
    legs: list[dict[str, str | int]] = Field(min_length=1, max_length=3)


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["buy", "sell", "hold"]
    confidence: float = Field(ge=0, le=1)
    legs: list[Leg] = Field(min_length=1, max_length=3)
    note: str


def _json_schema_format(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema}}


@pytest.fixture(scope="module")
def local_model(tiny_model_dir: Path) -> LocalChatModel:
    return LocalChatModel(tiny_model_dir, threads=1)


@pytest.fixture(scope="module")
def server(local_model: LocalChatModel) -> Iterator[OpenAICompatibleServer]:
    with OpenAICompatibleServer(local_model) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: OpenAICompatibleServer) -> Iterator[Any]:
    # max_retries=0: a failure must show at once, not after the SDK's backoff.
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as sdk:
        yield sdk


def _chat(client: Any, model: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=kwargs.pop("messages", USER), **kwargs
    )


def _raw(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


# ------------------------------------------------------------------------------------------
# build_tiny_model and LocalChatModel


def test_build_tiny_model_same_seed_writes_identical_files(tmp_path: Path) -> None:
    def digest(folder: Path) -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in folder.iterdir()}

    first = build_tiny_model(tmp_path / "a", seed=7)
    again = build_tiny_model(tmp_path / "b", seed=7)
    other = build_tiny_model(tmp_path / "c", seed=8)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(digest(first))
    assert digest(first) == digest(again)
    assert digest(first)["model.safetensors"] != digest(other)["model.safetensors"]
    assert digest(first)["tokenizer.json"] == digest(other)["tokenizer.json"]


def test_build_tiny_model_loads_offline_with_auto_classes(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert 300 <= len(tokenizer) <= 1024
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|pad|>"
    prompt = tokenizer.apply_chat_template(USER, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_build_tiny_model_bad_size_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        build_tiny_model(tmp_path / "m", vocab_size=100)
    with pytest.raises(ConfigError, match="num_heads"):
        build_tiny_model(tmp_path / "m", hidden_size=66, num_heads=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"vocab_size": 512.0}, CelerisTypeError, r"^vocab_size must be an int in \[300, 4096\]"),
        ({"vocab_size": 5000}, ConfigError, r"^vocab_size must be in \[300, 4096\], got 5000$"),
        ({"hidden_size": True}, CelerisTypeError, r"^hidden_size must be an int >= 16, got bool"),
        ({"num_layers": 0}, ConfigError, r"^num_layers must be >= 1, got 0$"),
        ({"num_heads": 2.0}, CelerisTypeError, r"^num_heads must be an int >= 1, got float"),
    ],
)
def test_build_tiny_model_bad_argument_raises_one_type_per_mistake(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    # Before celeris.checks a float vocab_size was trained with, a bool hidden_size was 1.
    with pytest.raises(error, match=message):
        build_tiny_model(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()


def test_local_model_bad_settings_raise_one_type_per_mistake(
    tiny_model_dir: Path, local_model: LocalChatModel
) -> None:
    with pytest.raises(CelerisTypeError, match=r"^max_new_tokens must be an int >= 1, got float"):
        LocalChatModel(tiny_model_dir, max_new_tokens=8.0)
    with pytest.raises(ConfigError, match=r"^threads must be >= 1, got 0$"):
        LocalChatModel(tiny_model_dir, threads=0)
    with pytest.raises(CelerisTypeError, match=r"^temperature must be a real number >= 0, got str"):
        local_model.complete(USER, temperature="hot")
    with pytest.raises(ConfigError, match=r"^temperature must be finite and >= 0, got nan$"):
        local_model.complete(USER, temperature=float("nan"))
    with pytest.raises(CelerisTypeError, match=r"^max_tokens must be an int >= 1, got float 4\.0$"):
        local_model.complete(USER, max_tokens=4.0)


def test_local_model_name_is_directory_name(
    local_model: LocalChatModel, tiny_model_dir: Path
) -> None:
    assert local_model.name == tiny_model_dir.name == "tiny-llama"


def test_count_tokens_text_positive_and_monotone(local_model: LocalChatModel) -> None:
    short = '{"action": "buy"}'
    long = short + " the fast moving average crossed the slow one; sharpe 1.4, drawdown -12%"
    assert local_model.count_tokens("") == 0
    assert 0 < local_model.count_tokens(short) < local_model.count_tokens(long)
    # Sub-additive: tokenizing a concatenation never needs more tokens than the parts apart.
    assert local_model.count_tokens(short + long) <= local_model.count_tokens(
        short
    ) + local_model.count_tokens(long)
    # Every byte is encodable (byte-level BPE), so no text is ever dropped.
    assert local_model.count_tokens("€ ✓ 数据") >= 4


def test_complete_max_tokens_reached_finishes_with_length(local_model: LocalChatModel) -> None:
    # Sampling at a high temperature flattens the model's pull toward ending the turn.
    done = [local_model.complete(USER, max_tokens=3, temperature=2.0, seed=s) for s in range(5)]
    assert all(c.completion_tokens <= 3 for c in done)
    cut = [c for c in done if c.finish_reason == "length"]
    assert cut and all(c.completion_tokens == 3 for c in cut)


def test_complete_greedy_schema_gives_shortest_valid_answer(local_model: LocalChatModel) -> None:
    first = local_model.complete(USER, response_format=_json_schema_format(Proposal), temperature=0)
    again = local_model.complete(USER, response_format=_json_schema_format(Proposal), temperature=0)
    assert isinstance(first, Completion) and first == again
    assert first.finish_reason == "stop"
    Proposal.model_validate_json(first.text)


def test_complete_same_seed_other_prompt_changes_the_answer(local_model: LocalChatModel) -> None:
    # A re-ask (the answer plus the validation error) must be able to change a seeded sample;
    # a model whose output ignored the prompt would repeat the same invalid answer forever.
    fmt = _json_schema_format(Proposal)
    reask = [
        *USER,
        {"role": "assistant", "content": "{}"},
        {"role": "user", "content": "That answer is invalid: legs needs 1 item. Try again."},
    ]
    changed = [
        local_model.complete(USER, response_format=fmt, seed=s).text
        != local_model.complete(reask, response_format=fmt, seed=s).text
        for s in range(5)
    ]
    assert sum(changed) >= 4


def test_complete_streaming_callback_pieces_join_to_text(local_model: LocalChatModel) -> None:
    pieces: list[str] = []
    done = local_model.complete(
        USER, response_format=_json_schema_format(Proposal), seed=5, on_text=pieces.append
    )
    assert len(pieces) > 3 and "".join(pieces) == done.text


def test_complete_bad_inputs_raise_config_errors(local_model: LocalChatModel) -> None:
    with pytest.raises(ConfigError, match="non-empty list"):
        local_model.complete([])
    with pytest.raises(ConfigError, match=r"messages\[0\]\.content"):
        local_model.complete([{"role": "user", "content": 3}])
    with pytest.raises(ConfigError, match="unsupported response_format type 'xml'"):
        local_model.complete(USER, response_format={"type": "xml"})
    with pytest.raises(SchemaError, match="cannot be compiled"):
        bad = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}
        local_model.complete(USER, response_format={"type": "json_object", "schema": bad})
    with pytest.raises(ContextLengthError, match="context window"):
        local_model.complete([{"role": "user", "content": "\x07" * 5000}])


# ------------------------------------------------------------------------------------------
# The HTTP server through the openai SDK


def test_models_list_returns_the_served_model(client: Any, local_model: LocalChatModel) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [local_model.name]
    assert client.models.retrieve(local_model.name).owned_by == "celeris"


def test_completion_free_text_returns_text_and_usage(
    client: Any, local_model: LocalChatModel
) -> None:
    answer = _chat(client, local_model.name, seed=3, temperature=0.7)
    expected = local_model.complete(USER, seed=3, temperature=0.7)
    choice = answer.choices[0]
    assert answer.object == "chat.completion" and answer.model == local_model.name
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert answer.usage.prompt_tokens == expected.prompt_tokens > 0
    assert answer.usage.completion_tokens == expected.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_completion_json_schema_twenty_seeds_all_validate(
    client: Any, local_model: LocalChatModel
) -> None:
    response_format = _json_schema_format(Proposal)
    texts = []
    for seed in range(20):
        answer = _chat(client, local_model.name, seed=seed, response_format=response_format)
        assert answer.choices[0].finish_reason == "stop", answer.choices[0].message.content
        texts.append(answer.choices[0].message.content)
        proposal = Proposal.model_validate_json(texts[-1])
        assert 0 <= proposal.confidence <= 1 and 1 <= len(proposal.legs) <= 3
    # Different seeds sample different answers: the constraint is not a fixed template.
    assert len(set(texts)) >= 15


def test_completion_llamacpp_style_json_object_schema_validates(
    client: Any, local_model: LocalChatModel
) -> None:
    response_format = {"type": "json_object", "schema": Proposal.model_json_schema()}
    for seed in range(5):
        answer = _chat(client, local_model.name, seed=seed, response_format=response_format)
        Proposal.model_validate_json(answer.choices[0].message.content)


def test_completion_json_object_without_schema_returns_an_object(
    client: Any, local_model: LocalChatModel
) -> None:
    for seed in range(5):
        answer = _chat(client, local_model.name, seed=seed, response_format={"type": "json_object"})
        assert isinstance(json.loads(answer.choices[0].message.content), dict)


def test_completion_same_seed_same_text_other_seeds_differ(
    client: Any, local_model: LocalChatModel
) -> None:
    def text(seed: int) -> str:
        answer = _chat(
            client, local_model.name, seed=seed, response_format=_json_schema_format(Proposal)
        )
        return str(answer.choices[0].message.content)

    assert text(11) == text(11)
    assert len({text(s) for s in (12, 13, 14)}) == 3


def test_stream_chunks_join_to_the_unstreamed_answer(
    client: Any, local_model: LocalChatModel
) -> None:
    kwargs = {"seed": 4, "response_format": _json_schema_format(Proposal)}
    whole = _chat(client, local_model.name, **kwargs)
    chunks = list(
        _chat(
            client, local_model.name, stream=True, stream_options={"include_usage": True}, **kwargs
        )
    )
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert len(deltas) > 3
    assert "".join(deltas) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len({c.id for c in chunks}) == 1


def test_stream_unknown_model_raises_before_any_chunk(client: Any) -> None:
    with pytest.raises(openai.NotFoundError):
        _chat(client, "no-such-model", stream=True)


def test_concurrent_requests_same_answers_as_sequential(
    client: Any, local_model: LocalChatModel
) -> None:
    fmt = _json_schema_format(Proposal)
    # temperature is explicit: the server's default is OpenAI's 1.0, the model's is 0.7.
    expected = {
        s: local_model.complete(USER, response_format=fmt, seed=s, temperature=0.7).text
        for s in range(4)
    }
    got: dict[int, str] = {}

    def ask(seed: int) -> None:
        answer = _chat(client, local_model.name, seed=seed, temperature=0.7, response_format=fmt)
        got[seed] = answer.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert got == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"messages": []}, "BadRequestError", "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "BadRequestError", "messages[0]"),
        ({"response_format": {"type": "xml"}}, "BadRequestError", "response_format.type"),
        ({"temperature": 3.5}, "BadRequestError", "temperature"),
        ({"max_tokens": 0}, "BadRequestError", "max_tokens"),
        ({"n": 2}, "BadRequestError", "n"),
    ],
)
def test_completion_bad_request_raises_sdk_error_with_openai_body(
    client: Any, local_model: LocalChatModel, kwargs: dict[str, Any], error: str, param: str
) -> None:
    with pytest.raises(getattr(openai, error)) as info:
        _chat(client, local_model.name, **kwargs)
    assert info.value.status_code == 400
    assert info.value.param == param and info.value.type == "invalid_request_error"
    assert info.value.message


def test_completion_unknown_model_raises_not_found(client: Any) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _chat(client, "gpt-4o")
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    assert "tiny-llama" in info.value.message


def test_completion_uncompilable_schema_raises_unprocessable(
    client: Any, local_model: LocalChatModel
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "bad", "schema": schema}}
    with pytest.raises(openai.UnprocessableEntityError) as info:
        _chat(client, local_model.name, response_format=fmt)
    assert info.value.status_code == 422 and info.value.code == "invalid_json_schema"


def test_completion_prompt_too_long_raises_context_length_exceeded(
    client: Any, local_model: LocalChatModel
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _chat(client, local_model.name, messages=[{"role": "user", "content": "\x07" * 5000}])
    assert info.value.code == "context_length_exceeded"


def test_raw_requests_missing_messages_bad_json_unknown_path_get_openai_errors(
    server: OpenAICompatibleServer, local_model: LocalChatModel
) -> None:
    url = f"{server.base_url}/chat/completions"
    json_header = {"Content-Type": "application/json"}
    status, body = _raw(url, json.dumps({"model": local_model.name}).encode(), json_header)
    assert status == 400 and body["error"]["param"] == "messages"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    status, body = _raw(url, b"{not json", json_header)
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, body = _raw(f"{server.base_url}/embeddings", b"{}", json_header)
    assert status == 404 and body["error"]["code"] == "unknown_url"
    status, body = _raw(server.base_url.removesuffix("/v1") + "/health")
    assert status == 200 and body == {"status": "ok", "model": local_model.name}


def test_server_reports_window_and_counts_tokens_as_the_model(
    server: OpenAICompatibleServer, local_model: LocalChatModel
) -> None:
    status, models = _raw(f"{server.base_url}/models")
    assert status == 200 and models["data"][0]["max_model_len"] == local_model.context_length
    url = server.base_url.removesuffix("/v1") + "/tokenize"
    json_header = {"Content-Type": "application/json"}
    text = "sharpe 0.46 over 5,031 bars"
    status, body = _raw(url, json.dumps({"prompt": text}).encode(), json_header)
    assert status == 200 and body["count"] == local_model.count_tokens(text) == len(body["tokens"])
    assert body["max_model_len"] == local_model.context_length
    chat = {"model": local_model.name, "messages": USER}
    status, body = _raw(url, json.dumps(chat).encode(), json_header)
    assert status == 200 and body["count"] == len(local_model.prompt_tokens(USER))
    assert body["count"] > local_model.count_tokens(USER[0]["content"])  # the chat template
    before = len(server.requests)
    for bad, code in (({"prompt": 3}, 400), ({"model": "other", "prompt": "x"}, 404)):
        status, body = _raw(url, json.dumps(bad).encode(), json_header)
        assert status == code and set(body["error"]) == {"message", "type", "param", "code"}
    assert len(server.requests) == before  # counting is not a chat request


def test_server_records_each_request_body(
    client: Any, server: OpenAICompatibleServer, local_model: LocalChatModel
) -> None:
    before = len(server.requests)
    _chat(client, local_model.name, seed=21, max_tokens=5, response_format={"type": "json_object"})
    assert len(server.requests) == before + 1
    body = server.requests[-1]
    assert body["messages"] == USER and body["seed"] == 21 and body["max_tokens"] == 5
    assert body["response_format"] == {"type": "json_object"}


def test_server_api_key_missing_or_wrong_gets_401(local_model: LocalChatModel) -> None:
    with OpenAICompatibleServer(local_model, api_key=API_KEY) as guarded:
        with openai.OpenAI(base_url=guarded.base_url, api_key="wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError) as info:
                bad.models.list()
            assert info.value.code == "invalid_api_key"
            with pytest.raises(openai.AuthenticationError):
                _chat(bad, local_model.name)
        status, _ = _raw(f"{guarded.base_url}/models")
        assert status == 401
        status, _ = _raw(guarded.base_url.removesuffix("/v1") + "/health")
        assert status == 200
        with openai.OpenAI(base_url=guarded.base_url, api_key=API_KEY, max_retries=0) as good:
            assert (
                _chat(good, local_model.name, seed=1, max_tokens=4).choices[0].message is not None
            )
        assert all(body["model"] == local_model.name for body in guarded.requests)


def test_server_port_zero_picks_free_port_and_close_releases_it(
    local_model: LocalChatModel,
) -> None:
    first = OpenAICompatibleServer(local_model).start()
    second = OpenAICompatibleServer(local_model).start()
    try:
        assert first.port != second.port and first.port > 0
        assert first.base_url == f"http://127.0.0.1:{first.port}/v1"
    finally:
        first.close()
        second.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{first.base_url}/models", timeout=5)


# ------------------------------------------------------------------------------------------
# Whichever backend CELERIS_TEST_LLM_BACKEND selects (llama.cpp's server included)


def test_llm_server_backend_schema_answer_validates(llm_server: LLMServerInfo) -> None:
    schema = PortableProposal.model_json_schema()
    if llm_server.response_format_mode == "json_schema":
        fmt: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {"name": "PortableProposal", "schema": schema},
        }
    else:
        fmt = {"type": "json_object", "schema": schema}
    with openai.OpenAI(base_url=llm_server.base_url, api_key="unused", max_retries=0) as sdk:
        assert llm_server.model in [m.id for m in sdk.models.list().data]
        answer = _chat(
            sdk, llm_server.model, seed=1, temperature=0.7, max_tokens=400, response_format=fmt
        )
    PortableProposal.model_validate_json(answer.choices[0].message.content)


def test_local_server_bad_port_raises_by_the_checks_rule(local_model: LocalChatModel) -> None:
    # A str port escaped as a bare TypeError from the comparison; now celeris.checks' rule.
    from celeris.errors import CelerisTypeError

    with pytest.raises(CelerisTypeError, match="port must be an int in \\[0, 65535\\], got str"):
        OpenAICompatibleServer(local_model, port="8000")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="port must be in \\[0, 65535\\], got 70000"):
        OpenAICompatibleServer(local_model, port=70000)
