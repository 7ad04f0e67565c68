"""Settings from arguments over the environment, with errors that name the variable to fix.

Shared by :func:`celeris.llm.settings.load_llm_settings` and
:func:`celeris.serving.config.load_serve_settings`; kept out of :mod:`celeris.errors`, which
must not import pydantic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from celeris.errors import ConfigError, did_you_mean

S = TypeVar("S", bound=BaseModel)


def load_settings(
    cls: type[S], overrides: dict[str, Any], *, label: str, env_var: Callable[[str], str]
) -> S:
    """Build ``cls`` from the ``overrides`` that are not ``None``, over its other sources.

    Parameters
    ----------
    cls
        The settings class (a pydantic ``BaseSettings``).
    overrides
        Keyword arguments; ``None`` ones are dropped, so CLI options left unset fall through
        to the environment and the defaults.
    label
        What the settings are, for messages: ``"LLM"`` gives "unknown LLM setting ...".
    env_var
        The environment variable of a field, named in the message of a bad value.

    Raises
    ------
    ConfigError
        An unknown setting (with a "did you mean" hint) or a bad value, naming its variable.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    for key in given:
        if key not in cls.model_fields:
            raise ConfigError(
                f"unknown {label} setting {key!r}{did_you_mean(key, cls.model_fields)}"
            )
    try:
        return cls(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        field = str(first["loc"][0]) if first["loc"] else where
        msg = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"{label} setting {where}: {msg} (got {first.get('input')!r}; environment "
            f"variable {env_var(field)})"
        ) from None
