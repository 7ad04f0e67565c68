"""Every error of the serving package, each carrying the HTTP answer it becomes.

A :class:`ServingError` says its own status (``http_status``), its error kind (``http_error``)
and any extra fields or headers of the answer (:meth:`ServingError.http_body`,
``http_headers``). The HTTP layer (:func:`celeris.serving.http.problem_of`) reads those
attributes and imports no domain module back to map them; domain code raises these errors and
knows nothing of HTTP requests. Errors from outside the package map by their base class there:
:class:`~celeris.errors.ModelNotFound` is 404, a bad argument (``DataError``,
``ConfigError``, ``CelerisTypeError``: :data:`INPUT_ERRORS`) 422, anything else 500.

This module imports nothing from :mod:`celeris.serving`, so every serving module may import it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from celeris.errors import CelerisError, CelerisTypeError, ConfigError, DataError

if TYPE_CHECKING:  # pragma: no cover
    from celeris.serving.rollout import ShadowReport

__all__ = [
    "ABNotRunning",
    "ArtifactTampered",
    "BatcherClosed",
    "Conflict",
    "DeadlineExceeded",
    "FeedError",
    "IncompatibleVersion",
    "ModelLoading",
    "NotServing",
    "Overloaded",
    "RegistryError",
    "RegistryUnavailable",
    "RequestFailed",
    "ServingError",
    "ShadowValidationFailed",
    "SymbolLimitReached",
    "WireFormatError",
]


class ServingError(CelerisError):
    """Base of the serving errors: ``http_status`` and ``http_error`` (the answer's
    ``"error"`` kind) say what an HTTP client gets; 500 ``internal`` unless a subclass says
    otherwise."""

    http_status: int = 500
    http_error: str = "internal"
    http_headers: dict[str, str] | None = None

    def http_body(self) -> dict[str, Any]:
        """Return the error answer's fields besides ``error``: ``detail`` and any extras."""
        return {"detail": str(self)}


#: The errors that refuse the caller's input, by :mod:`celeris.checks`' rule: a wrong type
#: (``CelerisTypeError``) or a bad value (``DataError``, ``ConfigError``). A model raising one
#: on a request's rows answers 422, whichever it is (:class:`RequestFailed`). Not in
#: ``__all__``, which lists the serving errors themselves.
INPUT_ERRORS: tuple[type[CelerisError], ...] = (DataError, ConfigError, CelerisTypeError)


# -- requests -------------------------------------------------------------------------------


class NotServing(ServingError, LookupError):
    """The model is not served by this process (HTTP 404)."""

    http_status = 404
    http_error = "not_found"


class ModelLoading(ServingError):
    """The model is configured but still loading (HTTP 503; retry shortly)."""

    http_status = 503
    http_error = "unavailable"


class SymbolLimitReached(ServingError, DataError):
    """A request named new symbols beyond ``max_symbols`` (HTTP 422)."""

    http_status = 422
    http_error = "symbol_limit"


# -- the batcher ----------------------------------------------------------------------------


class Overloaded(ServingError):
    """The batcher's queue is full; retry after ``retry_after_s`` seconds (HTTP 429 with
    ``Retry-After`` in whole seconds and ``retry_after_ms`` in the body)."""

    http_status = 429
    http_error = "overloaded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        retry = max(retry_after_s, 0.001)
        self.http_headers = {"Retry-After": str(max(1, math.ceil(retry)))}
        self._retry_after_ms = round(retry * 1e3, 3)

    def http_body(self) -> dict[str, Any]:
        """Return ``detail`` and ``retry_after_ms``."""
        return {"detail": str(self), "retry_after_ms": self._retry_after_ms}


class DeadlineExceeded(ServingError):
    """A request's deadline passed before it was computed; it was not computed (HTTP 504)."""

    http_status = 504
    http_error = "timeout"


class RequestFailed(ServingError):
    """The model raised on this request's rows (alone, after its batch was split); see ``cause``.

    HTTP 422 ``invalid`` (the cause's message) when the model refused the input (one of
    :data:`INPUT_ERRORS`: ``DataError``, ``ConfigError``, ``CelerisTypeError``), else 500
    ``model_failed``.
    """

    http_status = 500
    http_error = "model_failed"

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        if isinstance(cause, INPUT_ERRORS):
            self.http_status, self.http_error = 422, "invalid"

    def http_body(self) -> dict[str, Any]:
        """Return ``detail``: the cause's message when the input was refused."""
        return {"detail": str(self.cause if self.http_status == 422 else self)}


class BatcherClosed(ServingError):
    """The batcher was stopped before this request could be queued or computed (HTTP 503)."""

    http_status = 503
    http_error = "unavailable"


# -- versions, rollouts and the registry ----------------------------------------------------


class Conflict(ServingError):
    """The request contradicts the current state (an A/B test already running...; HTTP 409)."""

    http_status = 409
    http_error = "conflict"


class ABNotRunning(ServingError):
    """No A/B test runs for the model (HTTP 409)."""

    http_status = 409
    http_error = "conflict"


class ShadowValidationFailed(ServingError):
    """A candidate failed shadow validation; ``report`` holds every check (HTTP 409, the
    report in the body)."""

    http_status = 409
    http_error = "shadow_validation_failed"

    def __init__(self, message: str, report: ShadowReport) -> None:
        super().__init__(message)
        self.report = report

    def http_body(self) -> dict[str, Any]:
        """Return ``detail`` and the validation ``report``."""
        return {"detail": str(self), "report": self.report.to_dict()}


class RegistryError(ServingError, RuntimeError):
    """The registry cannot do what was asked in its current state (or its database failed;
    HTTP 409)."""

    http_status = 409
    http_error = "conflict"


class ArtifactTampered(RegistryError):
    """An artifact's files no longer hash to the sha256 recorded when it was registered."""

    http_error = "artifact_tampered"


class RegistryUnavailable(RegistryError):
    """The registry database cannot be opened or read (a server answers 503 meanwhile)."""

    http_status = 503
    http_error = "unavailable"


class IncompatibleVersion(RegistryError):
    """A version would become production although its inputs or outputs differ from the
    current production version's (clients of ``NAME@production`` would break)."""


# -- the signal feed ------------------------------------------------------------------------


class WireFormatError(ServingError, ValueError):
    """Bytes are not a valid record, or a value cannot be put on the wire; names field and value."""

    http_status = 422
    http_error = "invalid"


class FeedError(ServingError, RuntimeError):
    """The signal socket cannot be set up, reached or used (path taken, publisher closed...)."""
