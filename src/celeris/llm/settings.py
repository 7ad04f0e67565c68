"""Where the language model lives: ``CELERIS_LLM_*`` variables, a TOML file, or arguments.

Precedence, highest first: keyword arguments to :func:`load_llm_settings`, environment variables
(``CELERIS_LLM_BASE_URL``, ``CELERIS_LLM_MODEL``, ``CELERIS_LLM_API_KEY``, ...), the ``[llm]``
table of the config file (``CELERIS_CONFIG`` or ``~/.config/celeris/config.toml``), defaults::

    [llm]
    base_url = "http://127.0.0.1:8080/v1"   # vLLM, llama.cpp's llama-server, Ollama (/v1)
    model = "qwen2.5-7b-instruct"
    response_format = "json_object"         # llama.cpp: json_object + schema
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from celeris._settings import load_settings
from celeris.errors import ConfigError, did_you_mean

ResponseFormat = Literal["json_schema", "json_object", "prompt"]


class LLMSettings(BaseSettings):
    """How to reach an OpenAI-compatible server and how to ask it for structured answers.

    ``response_format`` chooses how the JSON schema of an answer reaches the server:
    ``json_schema`` (OpenAI, vLLM, SGLang: ``{"type": "json_schema", ...}``), ``json_object``
    (llama.cpp's server and Ollama: ``{"type": "json_object", "schema": ...}``) or ``prompt``
    (no constrained decoding; the schema is only in the instructions). Whatever the server
    enforces, every answer is validated by pydantic on our side, which alone guarantees bounds.
    """

    model_config = SettingsConfigDict(env_prefix="CELERIS_LLM_", frozen=True, extra="forbid")

    base_url: str | None = Field(None, description="OpenAI-compatible API root, e.g. .../v1")
    model: str | None = Field(None, description="model name; None = the server's only model")
    api_key: SecretStr = Field(SecretStr("not-needed"), description="bearer key, if any")
    timeout: float = Field(120.0, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(
        3, ge=0, le=10, description="transport retries with exponential backoff"
    )
    response_format: ResponseFormat = "json_schema"
    validation_retries: int = Field(
        2, ge=0, le=10, description="re-asks after an invalid answer, each with the error"
    )
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16, le=32_768, description="answer length cap")
    context_tokens: int = Field(
        3072, ge=256, le=1_000_000, description="token budget of a rendered prompt"
    )
    tokenizer: str | None = Field(
        None, description="tokenizer.json or a model directory, for exact token counts"
    )
    seed: int | None = Field(None, description="sampling seed sent to servers that honour it")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlTable(settings_cls))

    @property
    def configured(self) -> bool:
        return bool(self.base_url)


def config_path() -> Path:
    """Return the config file path: ``$CELERIS_CONFIG`` or ``~/.config/celeris/config.toml``."""
    env = os.environ.get("CELERIS_CONFIG")
    return Path(env).expanduser() if env else Path.home() / ".config" / "celeris" / "config.toml"


class _TomlTable(PydanticBaseSettingsSource):
    """The ``[llm]`` table of the config file, checked for unknown keys."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._table().get(field_name), field_name, False

    def _table(self) -> dict[str, Any]:
        path = config_path()
        if not path.is_file():
            return {}
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        table = doc.get("llm", {})
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: [llm] must be a table")
        for key in table:
            if key not in LLMSettings.model_fields:
                raise ConfigError(
                    f"config file {path}: unknown key llm.{key}"
                    f"{did_you_mean(key, LLMSettings.model_fields)}"
                )
        return dict(table)

    def __call__(self) -> dict[str, Any]:
        return self._table()


def load_llm_settings(**overrides: Any) -> LLMSettings:
    """Return the LLM settings from arguments, ``CELERIS_LLM_*`` variables and the config file.

    Arguments that are ``None`` are ignored (so CLI options left unset fall through).

    Raises
    ------
    ConfigError
        An unknown setting, a value out of range, or an unreadable config file.
    """
    return load_settings(
        LLMSettings, overrides, label="LLM", env_var=lambda field: f"CELERIS_LLM_{field.upper()}"
    )
