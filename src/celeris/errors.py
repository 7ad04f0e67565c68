"""The Celeris error hierarchy.

Every bad input raises a subclass of :class:`CelerisError` whose message names what was wrong
and where (the column, the first bad timestamp, the parameter). The CLI turns these into a
one-line message and exit code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CelerisError(Exception):
    """Base class of every error Celeris raises on bad input or bad state."""


class DataError(CelerisError, ValueError):
    """Market data breaks a rule of the bar schema (see :func:`celeris.data.validate`)."""


class ConfigError(CelerisError, ValueError):
    """An option, parameter or configuration value is invalid or unknown."""


class CelerisTypeError(CelerisError, TypeError):
    """An argument has the wrong type."""


class DeviceError(CelerisError, RuntimeError):
    """A requested compute device cannot run (for example ``device="cuda"`` without a GPU)."""


class ExchangeError(CelerisError, RuntimeError):
    """An exchange could not be reached or answered with something unusable."""


class StoreError(CelerisError, RuntimeError):
    """The local market-data store could not be read or written."""


class LLMError(CelerisError, RuntimeError):
    """A language-model server could not be reached, refused a request or answered unusably."""


class LLMNotConfigured(LLMError):
    """No language-model server is configured (``CELERIS_LLM_BASE_URL`` is unset)."""


class ModelNotFound(CelerisError, LookupError):
    """No model, version or stage matches a reference: not in the model registry, or not
    loaded in the serving engine, or no version of it is serving (HTTP 404)."""


class CelerisWarning(UserWarning):
    """A recoverable oddity the user should know about (results are still produced)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean 'x'?)"`` hint for an unknown ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_choice(what: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ConfigError` with a hint."""
    options = list(choices)
    if value not in options:
        raise ConfigError(
            f"unknown {what} {value!r}{did_you_mean(str(value), options)}; "
            f"choose one of {', '.join(map(repr, options))}"
        )
    return value
