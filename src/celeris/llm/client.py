"""One client for every OpenAI-compatible server, returning validated pydantic answers.

vLLM, SGLang, llama.cpp's ``llama-server``/``llama_cpp.server`` and Ollama all speak the OpenAI
chat-completions API, so Celeris talks to them through the ``openai`` SDK. A structured answer
is asked with the server's JSON-schema ``response_format`` where it has one; whatever the server
enforces, the answer is extracted and validated by the task's pydantic schema here, and an
invalid answer is re-asked with the validation error a bounded number of times.

Every request must fit the model's context window with room for the answer, whichever server
it is, so the client asks the server (once) how large the window is and whether it can count
tokens: ``max_model_len`` (or ``context_length``) of the model's ``/v1/models`` card, and
``POST /tokenize`` (vLLM and the test server :mod:`celeris.testing.llm_server` count a whole
chat; llama.cpp's server counts text). :meth:`LLMClient.prompt_budget` and
:meth:`LLMClient.token_counter` give the prompt builders a budget and a counter that fit that
window; :meth:`LLMClient.ask` caps each answer at the room left and shortens re-asks that
would not fit. Without a known window the configured ``context_tokens`` and ``max_tokens`` are
used as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from celeris.errors import LLMError, LLMNotConfigured
from celeris.llm.context import TOKENS_PER_MESSAGE, TokenCounter, estimate_tokens, token_counter
from celeris.llm.schemas import with_schema_instruction
from celeris.llm.settings import LLMSettings, load_llm_settings

T = TypeVar("T", bound=BaseModel)
Message = Mapping[str, str]

NOT_CONFIGURED = (
    "no LLM configured: set CELERIS_LLM_BASE_URL (and CELERIS_LLM_MODEL) to an "
    "OpenAI-compatible server such as vLLM, llama.cpp or Ollama, or [llm] base_url in "
    "~/.config/celeris/config.toml; without one, `celeris optimize` (no --llm) runs the same "
    "verified loop with Optuna"
)


@dataclass(frozen=True)
class Attempt:
    """One request/answer exchange of a structured ask."""

    raw: str
    error: str | None
    seconds: float
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A validated answer and how it was obtained."""

    value: T
    raw: str
    model: str
    attempts: tuple[Attempt, ...]
    messages: tuple[dict[str, str], ...] = field(repr=False)

    @property
    def seconds(self) -> float:
        return sum(a.seconds for a in self.attempts)

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": sum(a.prompt_tokens for a in self.attempts),
            "completion_tokens": sum(a.completion_tokens for a in self.attempts),
        }


# An answer shorter than this cannot hold a structured reply: a request that leaves less room
# in the context window is refused before it is sent.
MIN_ANSWER_TOKENS = 64
_COUNT_CACHE_SIZE = 4096


@dataclass(frozen=True)
class ServerLimits:
    """What the server says about its model's context window and token counting.

    Attributes
    ----------
    context_window
        Tokens the model attends to (prompt + answer); ``None`` when the server does not say.
    tokenize
        How ``POST /tokenize`` counts: ``"chat"`` (whole chats, template included: vLLM,
        Celeris' server), ``"text"`` (text only: llama.cpp's server) or ``None`` (it cannot).
    """

    context_window: int | None = None
    tokenize: str | None = None


class InvalidAnswer(LLMError):
    """The model gave no schema-valid answer within the allowed re-asks."""

    def __init__(self, message: str, raw: str, attempts: tuple[Attempt, ...]) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


class LLMClient:
    """Ask an OpenAI-compatible server for answers that validate against a pydantic schema.

    Parameters
    ----------
    settings
        Where and how to ask; by default :func:`~celeris.llm.settings.load_llm_settings`
        (``CELERIS_LLM_*`` variables, then the config file).

    Raises
    ------
    LLMNotConfigured
        No ``base_url`` is configured; the message says how to configure one and points to
        the Optuna path that needs none.
    """

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings if settings is not None else load_llm_settings()
        if not self.settings.configured:
            raise LLMNotConfigured(NOT_CONFIGURED)
        import openai

        self._openai = openai
        self._sdk = openai.OpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key.get_secret_value() or "not-needed",
            timeout=self.settings.timeout,
            max_retries=self.settings.max_retries,
        )
        self._model = self.settings.model
        self._limits: ServerLimits | None = None
        self._counts: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        return str(self.settings.base_url)

    # -- the context window ------------------------------------------------------------------

    def limits(self) -> ServerLimits:
        """Ask the server (once) for its model's context window and how it counts tokens.

        A server that answers neither gives ``ServerLimits()``; an unreachable one raises
        :class:`~celeris.errors.LLMError` as any request would.
        """
        if self._limits is not None:
            return self._limits
        window = None
        model = self.model
        try:
            cards = self._call(self._sdk.models.list).data
        except LLMError:  # a server without /v1/models: no window known
            cards = []
        for card in cards:
            if card.id != model:
                continue
            extra = dict(card.model_extra or {})
            for key in ("max_model_len", "context_length"):
                if isinstance(extra.get(key), int) and extra[key] > 0:
                    window = int(extra[key])
                    break
        mode = None
        probe = self._tokenize({"model": model, "messages": [{"role": "user", "content": "x"}]})
        if probe is not None and isinstance(probe.get("count"), int):
            mode = "chat"
            if window is None and isinstance(probe.get("max_model_len"), int):
                window = int(probe["max_model_len"])
        elif self._tokenize({"content": "x"}) is not None:
            mode = "text"
        self._limits = ServerLimits(window, mode)
        return self._limits

    def _tokenize(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST ``/tokenize`` at the server's root; ``None`` when it cannot count."""
        import httpx

        root = self.base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        key = self.settings.api_key.get_secret_value()
        try:
            answer = httpx.post(
                f"{root}/tokenize",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=self.settings.timeout,
            )
        except httpx.HTTPError as exc:
            raise LLMError(f"cannot reach the LLM server at {self.base_url}: {exc}") from None
        if answer.status_code != 200:
            return None
        try:
            doc = answer.json()
        except ValueError:
            return None
        if not isinstance(doc, dict):
            return None
        if "count" not in doc and isinstance(doc.get("tokens"), list):
            doc["count"] = len(doc["tokens"])
        return doc if isinstance(doc.get("count"), int) else None

    def token_counter(self) -> TokenCounter:
        """Return the counter the prompt builders should use: the configured ``tokenizer``,
        else the server's own count (``/tokenize``), else the conservative estimate."""
        if self.settings.tokenizer is not None:
            return token_counter(self.settings.tokenizer)
        if self.limits().tokenize is None:
            return estimate_tokens
        return self._remote_count

    def _remote_count(self, text: str) -> int:
        n = self._counts.get(text)
        if n is None:
            doc = self._tokenize({"model": self.model, "prompt": text, "add_special_tokens": False})
            if doc is None:
                raise LLMError(f"the LLM server at {self.base_url} stopped counting tokens")
            n = int(doc["count"])
            if len(self._counts) >= _COUNT_CACHE_SIZE:
                self._counts.clear()
            self._counts[text] = n
        return n

    def chat_tokens(self, messages: Sequence[Message]) -> int:
        """Return the tokens ``messages`` take as a prompt (exact when the server counts
        chats; otherwise each message's count plus a few tokens of chat template)."""
        if self.settings.tokenizer is None and self.limits().tokenize == "chat":
            doc = self._tokenize({"model": self.model, "messages": [dict(m) for m in messages]})
            if doc is not None:
                return int(doc["count"])
        count = self.token_counter()
        return sum(count(m["content"]) + TOKENS_PER_MESSAGE for m in messages)

    def prompt_budget(self) -> int:
        """Tokens a rendered prompt may take: ``context_tokens``, and no more than the
        server's context window leaves after an answer of ``max_tokens`` (at most half the
        window)."""
        budget = self.settings.context_tokens
        window = self.limits().context_window
        if window is None:
            return budget
        room = window - min(self.settings.max_tokens, window // 2)
        return max(1, min(budget, room))

    @property
    def model(self) -> str:
        """The model name; asked from the server when it serves exactly one and none is set."""
        if self._model is None:
            ids = [m.id for m in self._call(self._sdk.models.list).data]
            if len(ids) != 1:
                raise LLMError(
                    f"the server at {self.base_url} serves {len(ids)} models "
                    f"({', '.join(ids[:10]) or 'none'}); set CELERIS_LLM_MODEL to one of them"
                )
            self._model = ids[0]
        return self._model

    def ask(
        self,
        schema: type[T],
        messages: Sequence[Message],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Answer[T]:
        """Ask for one answer that validates against ``schema``.

        The schema is described in the system message and, depending on
        ``settings.response_format``, also sent as the server's constrained-decoding format.
        An answer that is not JSON or breaks the schema is re-asked with the validation error,
        at most ``settings.validation_retries`` times.

        Raises
        ------
        InvalidAnswer
            No valid answer after the re-asks; the message and ``.raw`` hold the last answer.
        LLMError
            The server cannot be reached, times out, or refuses the request.
        """
        if not messages:
            raise LLMError("ask() needs at least one message")
        js = schema.model_json_schema()
        convo = [dict(m) for m in messages]
        convo = with_schema_instruction(convo, schema)
        extra: dict[str, Any] = {}
        fmt = self.settings.response_format
        if fmt == "json_schema":
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema.__name__, "schema": js, "strict": True},
            }
        elif fmt == "json_object":
            extra["response_format"] = {"type": "json_object", "schema": js}
        seed = seed if seed is not None else self.settings.seed
        attempts: list[Attempt] = []
        raw = ""
        cap = max_tokens or self.settings.max_tokens
        history: list[dict[str, str]] = []  # the failed answers and their corrections so far
        for attempt in range(self.settings.validation_retries + 1):
            request, answer_tokens = self._fit(convo, history, cap)
            if seed is not None:
                # a re-ask under the same seed samples the same way; the next seed keeps the
                # run repeatable without repeating the refused answer
                extra["seed"] = seed + attempt
            t0 = time.perf_counter()
            response = self._call(
                self._sdk.chat.completions.create,
                model=self.model,
                messages=request,
                temperature=self.settings.temperature if temperature is None else temperature,
                max_tokens=answer_tokens,
                **extra,
            )
            seconds = time.perf_counter() - t0
            choice = response.choices[0]
            raw = choice.message.content or ""
            usage = response.usage
            try:
                value = schema.model_validate(extract_json(raw))
                error = None
            except (ValueError, ValidationError) as exc:
                error = describe_error(exc)
                if choice.finish_reason == "length":
                    error += " (the answer was cut off at max_tokens)"
            attempts.append(
                Attempt(
                    raw=raw,
                    error=error,
                    seconds=seconds,
                    prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                    completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                )
            )
            if error is None:
                return Answer(value, raw, self.model, tuple(attempts), tuple(request))
            history += [
                {"role": "assistant", "content": raw},
                {
                    "role": "user",
                    "content": (
                        f"That answer is invalid: {error}. Answer again with only one JSON "
                        "object that satisfies the schema, every value inside its bounds."
                    ),
                },
            ]
        raise InvalidAnswer(
            f"{self.model} at {self.base_url} gave no valid {schema.__name__} in "
            f"{len(attempts)} attempts; last error: {attempts[-1].error}; last answer: "
            f"{_clip(raw)!r}",
            raw,
            tuple(attempts),
        )

    def _fit(
        self, convo: list[dict[str, str]], history: list[dict[str, str]], cap: int
    ) -> tuple[list[dict[str, str]], int]:
        """Return the messages of the next attempt and its answer cap, within the window.

        A re-ask carries every failed answer and its correction when they fit with room for a
        full answer; else only the last ones; else only the last correction, quoting no answer.
        The answer cap is what the window leaves, at most ``cap``.
        """
        window = self.limits().context_window
        if window is None:
            return [*convo, *history], cap
        if history:
            last_error = history[-1]["content"].replace("That answer", "Your last answer", 1)
            candidates = [
                [*convo, *history],
                [*convo, *history[-2:]],
                [*convo, {"role": "user", "content": last_error}],
            ]
        else:
            candidates = [list(convo)]
        used = 0
        for request in candidates:
            used = self.chat_tokens(request)
            if used + cap <= window:
                return request, cap
        room = window - used
        if room < MIN_ANSWER_TOKENS:
            raise LLMError(
                f"the prompt takes {used} tokens of the {window}-token context window of "
                f"{self.model} at {self.base_url}, leaving {max(room, 0)} for the answer (at "
                f"least {MIN_ANSWER_TOKENS} needed): lower CELERIS_LLM_CONTEXT_TOKENS"
            )
        return candidates[-1], room

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        oa = self._openai
        try:
            return fn(**kwargs)
        except oa.APITimeoutError:
            raise LLMError(
                f"the LLM server at {self.base_url} did not answer within "
                f"{self.settings.timeout:g} s (CELERIS_LLM_TIMEOUT) after "
                f"{self.settings.max_retries} retries"
            ) from None
        except oa.APIConnectionError as exc:
            raise LLMError(
                f"cannot reach the LLM server at {self.base_url} after "
                f"{self.settings.max_retries} retries: {exc.__cause__ or exc}"
            ) from None
        except oa.APIStatusError as exc:
            hint = ""
            if exc.status_code in (400, 422) and "response_format" in str(exc.message):
                hint = (
                    "; this server may not support response_format="
                    f"{self.settings.response_format!r}: set CELERIS_LLM_RESPONSE_FORMAT to "
                    "json_object (llama.cpp, Ollama) or prompt"
                )
            raise LLMError(
                f"the LLM server at {self.base_url} refused the request "
                f"(HTTP {exc.status_code}): {exc.message}{hint}"
            ) from None


def extract_json(text: str) -> Any:
    """Return the first JSON object in ``text`` (code fences and prose around it are ignored).

    Control characters inside strings (a raw newline, which small models emit) are accepted.

    Raises
    ------
    ValueError
        ``text`` holds no JSON object; the message gives the first parse error, if any.
    """
    decoder = json.JSONDecoder(strict=False)
    first_error = ""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            first_error = first_error or f": {exc.msg} at character {exc.pos}"
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    raise ValueError(f"no valid JSON object in the answer ({len(text)} characters){first_error}")


def describe_error(exc: Exception) -> str:
    """Return a short, model-readable description of a parse or validation error."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for err in exc.errors()[:8]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {_clip(repr(got), 60)})"
        parts.append(f"{where}: {err['msg']}{shown}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _clip(text: str, n: int = 2000) -> str:
    return text if len(text) <= n else text[:n] + f"... [{len(text) - n} more characters]"
