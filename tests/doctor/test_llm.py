"""``celeris doctor --llm`` against the repository's OpenAI-compatible test server (a tiny random
model whose answers only llguidance's constrained decoding holds to a schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeris.doctor import DoctorOptions, Status
from celeris.doctor.llm import check_llm
from celeris.doctor.runner import build_context
from tests.doctor.conftest import free_port
from tests.llm.conftest import LLMServerInfo, llm_server, tiny_model_dir  # noqa: F401


def _check(env: pytest.MonkeyPatch, **variables: str) -> Any:
    for key, value in variables.items():
        env.setenv(f"CELERIS_LLM_{key.upper()}", value)
    return check_llm(build_context(DoctorOptions(llm=True, timeout_s=30.0)))


def test_llm_endpoint_honours_configured_format_ok(
    doctor_env: pytest.MonkeyPatch,
    llm_server: LLMServerInfo,  # noqa: F811
) -> None:
    finding = _check(
        doctor_env,
        base_url=llm_server.base_url,
        model=llm_server.model,
        response_format=llm_server.response_format_mode,
    )
    assert finding.status is Status.OK, finding.summary
    assert f"honours response_format={llm_server.response_format_mode}" in finding.summary
    assert finding.details["model"] == llm_server.model
    assert finding.details["probes"][llm_server.response_format_mode]["valid"] is True


def test_llm_prompt_format_configured_warns_naming_the_working_one(
    doctor_env: pytest.MonkeyPatch,
    llm_server: LLMServerInfo,  # noqa: F811
) -> None:
    finding = _check(
        doctor_env, base_url=llm_server.base_url, model=llm_server.model, response_format="prompt"
    )
    assert finding.status is Status.WARN, finding.summary
    assert finding.fix == f"set CELERIS_LLM_RESPONSE_FORMAT={llm_server.response_format_mode}"


class _IgnoresResponseFormat:
    """A real model behind a server that drops ``response_format`` (as servers without
    structured output do): it answers free text."""

    def __init__(self, model: Any) -> None:
        self._model = model

    @property
    def name(self) -> str:
        return str(self._model.name)

    def __getattr__(self, attr: str) -> Any:  # context_length, prompt_tokens, text_tokens
        return getattr(self._model, attr)

    def complete(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        kwargs["response_format"] = None
        return self._model.complete(messages, **kwargs)


@pytest.fixture(scope="module")
def unconstrained_url(tiny_model_dir: Path) -> Iterator[str]:  # noqa: F811
    from celeris.testing.llm_server import OpenAICompatibleServer
    from celeris.testing.tiny_llm import LocalChatModel

    model = _IgnoresResponseFormat(LocalChatModel(tiny_model_dir, threads=1))
    with OpenAICompatibleServer(model) as server:  # type: ignore[arg-type]
        yield server.base_url


def test_llm_server_ignoring_schema_fails_with_fix(
    doctor_env: pytest.MonkeyPatch, unconstrained_url: str
) -> None:
    finding = _check(doctor_env, base_url=unconstrained_url, response_format="json_schema")
    assert finding.status is Status.FAIL, finding.summary
    assert "does not hold answers to a JSON schema" in finding.summary
    assert finding.fix and "vLLM" in finding.fix and "json_object" in finding.fix
    assert set(finding.details["probes"]) == {"json_schema", "json_object"}


@pytest.mark.parametrize(
    ("variables", "words", "fix_words"),
    [
        ({}, "no LLM configured", "CELERIS_LLM_BASE_URL"),
        ({"base_url": "http://127.0.0.1:{port}/v1"}, "cannot reach", "CELERIS_LLM_BASE_URL"),
        ({"base_url": "http://x/v1", "temperature": "9"}, "CELERIS_LLM_TEMPERATURE", "correct"),
    ],
)
def test_llm_unconfigured_unreachable_or_bad_setting_fails(
    doctor_env: pytest.MonkeyPatch,
    variables: dict[str, str],
    words: str,
    fix_words: str,
) -> None:
    port = free_port()
    finding = _check(doctor_env, **{k: v.format(port=port) for k, v in variables.items()})
    assert finding.status is Status.FAIL and words in finding.summary
    assert finding.fix and fix_words in finding.fix


def test_doctor_without_llm_flag_runs_no_llm_check(doctor_env: pytest.MonkeyPatch) -> None:
    from celeris.doctor import run_doctor

    report = run_doctor(DoctorOptions(quick=True))
    assert "llm" not in [c.name for c in report.checks] and not report.llm
