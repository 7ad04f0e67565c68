"""The client fits every request into the server's context window, as the server reports it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import llguidance  # noqa: F401  (a dev extra: missing is a failure)
import pytest
from pydantic import BaseModel, ConfigDict, Field

from celeris.errors import LLMError
from celeris.llm.client import LLMClient, ServerLimits
from celeris.llm.context import estimate_tokens
from celeris.llm.settings import LLMSettings
from celeris.testing.llm_server import OpenAICompatibleServer
from celeris.testing.tiny_llm import Completion, ContextLengthError, LocalChatModel


class Small(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int = Field(ge=0, le=9)


def _tokens(text: str) -> list[int]:
    return [0] * -(-len(text) // 3)  # one token per 3 characters


def _chat(messages: list[dict[str, Any]]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


class Scripted:
    """A chat model that answers from a script and says nothing about its window."""

    name = "strict"

    def __init__(self, window: int, answers: list[str]) -> None:
        self.window = window
        self.answers = list(answers)
        self.seen: list[tuple[int, int, list[dict[str, Any]]]] = []
        self.seeds: list[int | None] = []

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int | None = None,
        seed: int | None = None,
        **_: Any,
    ) -> Completion:
        self.seeds.append(seed)
        used = len(_tokens(_chat(messages)))
        cap = max_tokens or 1024
        self.seen.append((used, cap, messages))
        if used + cap > self.window:
            raise ContextLengthError(
                f"{used} prompt tokens + max_tokens {cap} exceed the window of {self.window}"
            )
        text = self.answers.pop(0)
        return Completion(text, used, len(_tokens(text)), "stop")


class StrictWindow(Scripted):
    """Refuses a request whose prompt plus ``max_tokens`` exceeds the window, as vLLM does
    (Celeris' own server clamps the answer instead); reports the window and counts tokens."""

    @property
    def context_length(self) -> int:
        return self.window

    def text_tokens(self, text: str) -> list[int]:
        return _tokens(text)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        return _tokens(_chat(messages))


def _client(base_url: str, **settings: Any) -> LLMClient:
    return LLMClient(LLMSettings(base_url=base_url, max_retries=0, **settings))


@pytest.fixture
def strict() -> Callable[..., Iterator[tuple[StrictWindow, str]]]:
    servers: list[OpenAICompatibleServer] = []

    def make(window: int, answers: list[str], kind: type = StrictWindow) -> tuple[Scripted, str]:
        model = kind(window, answers)
        server = OpenAICompatibleServer(model).start()  # type: ignore[arg-type]
        servers.append(server)
        return model, server.base_url

    yield make  # type: ignore[misc]
    for server in servers:
        server.close()


def test_client_limits_read_window_and_chat_counting_from_server(tiny_model_dir: Path) -> None:
    model = LocalChatModel(tiny_model_dir, threads=1)
    with OpenAICompatibleServer(model) as server:
        client = _client(server.base_url, max_tokens=1024, context_tokens=3072)
        assert client.limits() == ServerLimits(model.context_length, "chat")
        assert client.prompt_budget() == min(3072, model.context_length - 1024)
        count = client.token_counter()
        text = '{"fast": 10, "slow": 50} sharpe 0.46, max drawdown 31.4%'
        assert count(text) == model.count_tokens(text) != estimate_tokens(text)
        chat = [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": text}]
        assert client.chat_tokens(chat) == len(model.prompt_tokens(chat))
        # a larger configured budget is still held inside the window; a long answer cap
        # takes at most half of it
        wide = _client(server.base_url, max_tokens=3000, context_tokens=100_000)
        assert wide.prompt_budget() == model.context_length - model.context_length // 2
        # a configured tokenizer wins over the server's count
        local = _client(server.base_url, tokenizer=str(tiny_model_dir))
        assert local.token_counter()(text) == model.count_tokens(text)


def test_client_answer_capped_at_room_left_in_window(strict: Any) -> None:
    model, url = strict(300, ['{"value": 3}'])
    client = _client(url, max_tokens=1024, response_format="prompt")
    answer = client.ask(Small, [{"role": "user", "content": "Pick a digit."}])
    assert answer.value == Small(value=3)
    used, cap, _ = model.seen[0]
    assert used + cap == 300  # the whole room, never more


@pytest.mark.parametrize(("window", "carried"), [(700, [0, 1, 1]), (450, [0, 0, 0])])
def test_client_reask_shortened_to_fit_window(strict: Any, window: int, carried: list[int]) -> None:
    # a long invalid answer: re-asks carrying every earlier one would pass the window
    long_invalid = json.dumps({"value": 42, "note": "x" * 600})
    model, url = strict(window, [long_invalid, long_invalid, '{"value": 7}'])
    client = _client(url, max_tokens=200, response_format="prompt", validation_retries=2)
    answer = client.ask(Small, [{"role": "user", "content": "Pick a digit."}])
    assert answer.value == Small(value=7) and len(answer.attempts) == 3
    assert [cap for _, cap, _ in model.seen] == [200] * 3  # a full answer's room each time
    assert all(used + cap <= window for used, cap, _ in model.seen)
    # 700: the third request keeps the last answer only; 450: it quotes the last error only
    assert [sum(m["content"] == long_invalid for m in msgs) for *_, msgs in model.seen] == carried
    if not carried[-1]:
        assert "Your last answer is invalid" in model.seen[2][2][-1]["content"]


def test_client_prompt_over_window_refused_before_sending(strict: Any) -> None:
    model, url = strict(100, [])
    client = _client(url, response_format="prompt")
    with pytest.raises(LLMError, match=r"tokens of the 100-token context window of strict"):
        client.ask(Small, [{"role": "user", "content": "y" * 600}])
    assert model.seen == []


def test_client_server_without_window_uses_settings(strict: Any) -> None:
    model, url = strict(10_000, ['{"value": 1}'], Scripted)
    client = _client(url, max_tokens=123, context_tokens=999, response_format="prompt")
    assert client.limits() == ServerLimits(None, None)
    assert client.prompt_budget() == 999 and client.token_counter() is estimate_tokens
    assert client.ask(Small, [{"role": "user", "content": "Digit?"}]).value == Small(value=1)
    assert model.seen[0][1] == 123


def test_client_reasks_sample_under_the_next_seeds(strict: Any) -> None:
    # the same seed would sample the refused answer again from a model that ignores the error
    model, url = strict(10_000, ['{"value": 11}', '{"value": 12}', '{"value": 5}'])
    client = _client(url, seed=7, response_format="prompt", validation_retries=2)
    assert client.ask(Small, [{"role": "user", "content": "Digit?"}]).value == Small(value=5)
    assert model.seeds == [7, 8, 9]
