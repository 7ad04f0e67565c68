"""``celeris doctor --llm``: the configured OpenAI-compatible endpoint answers, and it holds its
answers to a JSON schema (constrained decoding), which ``celeris analyze`` relies on.

The probe asks an unrelated question ("say hello") with only the ``response_format`` carrying a
small schema, and one attempt: a server that enforces the schema answers JSON that validates
whatever the model would have said; one that ignores it answers prose. Each ``response_format``
style is tried the way :class:`celeris.llm.client.LLMClient` sends it.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from celeris.doctor.base import Context, Finding, fail, ok, redact, warn

_STYLES = ("json_schema", "json_object")


class SchemaProbe(BaseModel):
    """The probe's schema: short enums and a flag, so any constrained answer ends quickly."""

    model_config = ConfigDict(extra="forbid")

    greeting: Literal["hello", "hi"]
    ready: bool


def _response_format(style: str) -> dict[str, Any]:
    schema = SchemaProbe.model_json_schema()
    if style == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "SchemaProbe", "schema": schema, "strict": True},
        }
    return {"type": "json_object", "schema": schema}


def _honours(sdk: Any, model: str, style: str) -> tuple[bool, str, float]:
    """Ask once with ``style``; return (answer validates, what came back, seconds)."""
    from celeris.llm.client import extract_json

    t0 = time.perf_counter()
    response = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello to the operator in one short sentence."}],
        response_format=_response_format(style),
        temperature=0.0,
        max_tokens=64,
    )
    seconds = time.perf_counter() - t0
    raw = response.choices[0].message.content or ""
    try:
        SchemaProbe.model_validate(extract_json(raw))
        return True, raw, seconds
    except (ValueError, ValidationError):
        return False, raw, seconds


def check_llm(ctx: Context) -> Finding:
    """The LLM endpoint answers ``/v1/models`` and honours a JSON schema in ``response_format``."""
    if ctx.llm_error is not None:
        return fail(ctx.llm_error, "correct the CELERIS_LLM_* variable or the [llm] table named")
    settings = ctx.llm
    if settings is None or not settings.configured:
        from celeris.llm.client import NOT_CONFIGURED

        return fail(NOT_CONFIGURED.split(":")[0], NOT_CONFIGURED.split(": ", 1)[1])
    import openai

    from celeris.errors import LLMError
    from celeris.llm.client import LLMClient

    url = redact(str(settings.base_url))
    configured = settings.response_format
    client = LLMClient(settings.model_copy(update={"max_retries": 0}))
    details: dict[str, Any] = {"base_url": url, "response_format": configured}
    try:
        t0 = time.perf_counter()
        model = client.model
        details["models_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        limits = client.limits()
    except LLMError as exc:
        return fail(
            str(exc),
            "start the server (docs/llm.md: vLLM or llama.cpp's llama-server) or correct "
            "CELERIS_LLM_BASE_URL (it ends in /v1); curl BASE_URL/models must list the model",
            **details,
        )
    details.update(model=model, context_window=limits.context_window, tokenize=limits.tokenize)
    sdk = openai.OpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value() or "not-needed",
        timeout=min(settings.timeout, max(10.0, ctx.options.timeout_s)),
        max_retries=0,
    )
    styles = [configured] if configured in _STYLES else list(_STYLES)
    styles += [s for s in _STYLES if s not in styles]
    results: dict[str, Any] = {}
    for style in styles:
        try:
            valid, raw, seconds = _honours(sdk, model, style)
            results[style] = {"valid": valid, "seconds": round(seconds, 3), "answer": raw[:200]}
        except openai.APIStatusError as exc:
            results[style] = {"valid": False, "refused": f"HTTP {exc.status_code}: {exc.message}"}
        except openai.APIError as exc:
            results[style] = {"valid": False, "error": str(exc)[:200]}
        if style == configured and results[style]["valid"]:
            break  # the configured style works: nothing to suggest
    details["probes"] = results
    working = [s for s in styles if results.get(s, {}).get("valid")]
    head = f"{model} at {url}"
    if configured in working:
        return ok(
            f"{head} answers and honours response_format={configured} (an unrelated prompt "
            f"came back as schema-valid JSON in {results[configured]['seconds']} s)",
            **details,
        )
    if working:
        judge = warn if configured == "prompt" else fail
        return judge(
            f"{head} honours response_format={working[0]}, but Celeris is configured with "
            f"{configured}",
            f"set CELERIS_LLM_RESPONSE_FORMAT={working[0]}",
            **details,
        )
    seen = results.get(styles[0], {})
    what = seen.get("refused") or seen.get("error") or f"answered {seen.get('answer', '')!r}"
    return fail(
        f"{head} answers but does not hold answers to a JSON schema ({styles[0]}: {what})",
        "serve the model with structured output: vLLM (response_format json_schema, on by "
        "default) or llama.cpp's llama-server (CELERIS_LLM_RESPONSE_FORMAT=json_object); "
        "docs/llm.md has the flags",
        **details,
    )
