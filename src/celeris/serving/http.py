"""The HTTP API of a serving process: FastAPI on uvicorn (uvloop, httptools).

Routes
    ``POST /v1/models/{name}/predict``  one history or a batch → forecasts
    ``POST /v1/forecast``               many symbols' histories (or raw OHLCV bars, turned into
                                        the model's inputs by its own feature spec:
                                        :func:`symbol_bars`) in one request → forecasts and
                                        signals (published on the signal feed when one runs)
    ``GET  /v1/models``                 served models, versions, shapes, A/B state, registry rows
    ``GET  /v1/symbols``                the signal feed's symbol ids
    ``POST /v1/outcomes``               realised values of served predictions, by request id or
                                        key (joined for A/B tests and drift; see outcomes.py)
    ``GET  /healthz``                   the process is up (200 while it runs)
    ``GET  /readyz``                    every model loaded and warm (200), else 503
    ``GET  /metrics``                   Prometheus text format
    admin (``Authorization: Bearer $CELERIS_ADMIN_TOKEN``)
    ``POST   /v1/admin/models``                   register a checkpoint directory on the server
    ``POST   /v1/admin/models/{name}/promote``    shadow-validate, then hot-swap (409 on failure)
    ``POST   /v1/admin/models/{name}/ab``         shadow-validate, then start an A/B test
    ``GET    /v1/admin/models/{name}/ab``         the running test's per-arm statistics and its
                                                  realised comparison so far
    ``DELETE /v1/admin/models/{name}/ab``         stop it; Welch t-test report on realised error
                                                  (``?metric=error``, the default), paper P&L
                                                  (``pnl``) or ``latency``
    ``POST   /v1/admin/models/{name}/rollback``   the previous production version, hot-swapped

Without ``CELERIS_ADMIN_TOKEN`` the admin routes answer 403 ("admin API disabled"): disabled,
never open. A missing or wrong token is 401. With ``CELERIS_PUBLISH_TOKEN`` set,
``/v1/forecast`` (it publishes signals) needs ``Authorization: Bearer`` that token too.

Bodies are JSON (``Content-Type: application/json``, parsed with orjson) or msgpack
(``application/msgpack``), and the Content-Type must say so (415 otherwise, also when missing:
the types a browser may post across origins without a CORS preflight are all refused). The
reply uses the request's format unless ``Accept`` names the other. Histories hold numbers only:
a string or boolean among them is 422 naming its position.
In msgpack, ``inputs`` (or a symbol's history) may also be a binary array
``{"shape": [n, L, C], "dtype": "<f4", "data": <bytes>}``, which skips number parsing entirely.

Shapes follow :class:`celeris.models.predictor.Predictor`: ``[n, L, C]`` histories of ``L >=
input_size`` bars of ``C = n_features`` features (the last ``input_size`` bars are used); for
one-feature models ``[n, L]`` and ``[L]`` also work, and ``[L, C]`` is one multi-feature history.

Status codes: 400 malformed body, 401/403 admin or publish auth, 404 unknown model (with a
did-you-mean hint), 409 shadow validation failed, 413 body or item count over the limits, 415
missing or unsupported content type, 422 invalid values (shape, a non-number, NaN or a
magnitude over the limit naming the item and bar, a non-positive price, priority, timeout,
new symbols past the symbol limit),
429 overloaded (``Retry-After`` in whole seconds, ``retry_after_ms`` in the body), 503 not ready,
504 deadline passed before the request was computed. Errors are ``{"error": KIND, "detail":
MESSAGE, ...}``. One request's failure never affects another's. Errors raised by the engine,
the model manager or the registry carry their own answer (:mod:`celeris.serving.errors`);
:func:`problem_of` reads it, so this module imports none of them.

The two hot routes are plain Starlette routes rather than FastAPI path operations: FastAPI's
per-request dependency solving measured ~100 us on this machine, and they parse their bodies
themselves anyway.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack
import numpy as np
import orjson
from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Route

from celeris.errors import CelerisError, DataError, ModelNotFound
from celeris.jsonsafe import json_default
from celeris.serving.config import ServeSettings
from celeris.serving.errors import INPUT_ERRORS, ServingError, SymbolLimitReached

if TYPE_CHECKING:  # pragma: no cover
    from celeris.serving.manager import ModelManager, ModelSpec
    from celeris.serving.metrics import PrometheusMetrics

log = logging.getLogger(__name__)

JSON = "application/json"
MSGPACK = "application/msgpack"
_MSGPACK_TYPES = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_PRIORITIES = ("critical", "high", "normal", "low")
_MAX_KEY = 512
# Bodies larger than this are parsed and validated in a worker thread, one at a time, so the
# event loop answers (/healthz, small requests) between the parse's C calls instead of after
# all of them: orjson.loads of a 14 MB JSON body took ~340 ms and its conversion to an array
# ~100 ms more, on the loop. Each C call holds the GIL, so the JSON size limit
# (CELERIS_SERVE_MAX_JSON_BYTES) is what bounds the longest stall. A one-history benchmark
# body (25 KB) stays on the loop, where a thread hand-off would cost more than the parse.
_INLINE_BODY_BYTES = 256 << 10
# Large or chunked bodies held in memory at once (each at most CELERIS_SERVE_MAX_BODY_BYTES).
_LARGE_BODIES = 4
# The default bound on input magnitudes (CELERIS_SERVE_MAX_ABS_VALUE).
MAX_ABS_VALUE = 1e15
_T = TypeVar("_T")


class Problem(Exception):
    """An HTTP error answer: status, a short kind, a message and optional extra fields."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers
        self.extra = extra


# -- bodies ---------------------------------------------------------------------------------


async def read_body(
    request: Request, limit: int, setting: str = "CELERIS_SERVE_MAX_BODY_BYTES"
) -> bytes:
    """Return the request body, refusing one over ``limit`` bytes (413) before reading it all.

    A client that disconnects before its body arrived is :data:`CLIENT_GONE` (status 499,
    nginx's "client closed request"): nobody is left to answer, and it is not the server's
    error, so it is counted, not logged as one.
    """
    declared = request.headers.get("content-length")
    try:
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Problem(400, "bad_request", f"invalid Content-Length {declared!r}") from None
            if size > limit:
                raise _too_large(size, limit, setting)
            return await request.body()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # chunked upload: count as it arrives
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit, setting, at_least=True)
            chunks.append(chunk)
        return b"".join(chunks)
    except ClientDisconnect:
        log.debug("client disconnected before sending its whole body (%s)", request.url.path)
        raise Problem(499, "client_disconnect", "the client disconnected mid-request") from None


def _too_large(size: int, limit: int, setting: str, at_least: bool = False) -> Problem:
    more = "more than " if at_least else ""
    hint = (
        "; send msgpack with binary arrays, or split the request"
        if setting == "CELERIS_SERVE_MAX_JSON_BYTES"
        else "; split the request"
    )
    return Problem(
        413,
        "too_large",
        f"request body of {more}{size:,} bytes exceeds the limit of {limit:,} bytes "
        f"({setting}){hint}",
    )


def decode_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Parse a JSON or msgpack body into a dict (400 when malformed, 415 for other types).

    Lenient about the type: none or ``text/plain`` is read as JSON. The Ray Serve front end
    uses it; ``celeris serve``, which publishes signals, requires the type (:func:`_decode`).
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return _decode(body, "json" if kind in ("", "text/plain") else _media_type(content_type))[0]


def _decode(body: bytes, media: str) -> tuple[dict[str, Any], bool]:
    """Return the body's object and whether it is JSON whose arrays hold only numbers and nulls
    (:func:`_json_numbers_only`; False means "not known": check the arrays one by one).

    ``media`` is ``"json"`` or ``"msgpack"``, as :func:`_media_type` answered for the request.
    """
    if media == "msgpack":
        if not body:
            raise Problem(400, "bad_request", "empty request body; send a msgpack map")
        try:
            doc = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise Problem(400, "bad_request", f"malformed msgpack body: {exc}") from None
        numbers_only = False
    else:
        if not body:
            raise Problem(400, "bad_request", "empty request body; send a JSON object")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, "bad_request", f"malformed JSON body: {exc}") from None
        numbers_only = isinstance(doc, dict) and _json_numbers_only(body, doc)
    if not isinstance(doc, dict):
        raise Problem(400, "bad_request", f"the body must be an object, got {type(doc).__name__}")
    return doc, numbers_only


def _media_type(content_type: str | None) -> str:
    """Return ``"json"`` or ``"msgpack"`` for a request's Content-Type; 415 for any other.

    The Content-Type must say JSON or msgpack (415 also when missing). A browser may send
    ``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data`` across
    origins without a CORS preflight; ``application/json`` needs one, so a web page cannot
    post a forecast, and so publish a signal, on a visitor's behalf.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == JSON:
        return "json"
    if kind in _MSGPACK_TYPES:
        return "msgpack"
    if kind.startswith("application/") and kind.endswith("+json"):
        return "json"
    given = f"Content-Type {kind!r}" if kind else "no Content-Type"
    raise Problem(
        415,
        "unsupported_media_type",
        f"unsupported media type: {given}; send Content-Type: {JSON} or {MSGPACK}",
    )


def _json_numbers_only(body: bytes, doc: dict[str, Any]) -> bool:
    """Return True when no array of the JSON ``body`` can hold a string, boolean or object.

    Inside an array those need a ``"``, ``t`` (true), ``f`` (false) or ``{``, characters no
    JSON number or null contains. The body's count of each must then equal the count in the
    keys and string values outside arrays (plus one ``{`` per object, two ``"`` per string);
    a backslash (an escape, whose parsed text differs from its bytes) or any surplus answers
    False, and the caller checks the arrays element by element instead. Exact, and a few
    memchr passes over the body (~7 us for a 25 KB history, of which the passes ~2 us) where
    the element-by-element check is ~50 us.
    """
    if body.find(b"\\") >= 0:
        return False
    strings: list[str] = []
    objects = 0
    stack = [doc]
    while stack:
        obj = stack.pop()
        objects += 1
        for key, value in obj.items():
            strings.append(key)
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                stack.append(value)
    text = "".join(strings)
    return (
        _occurs(body, b'"', 2 * len(strings))
        and _occurs(body, b"{", objects + text.count("{"))
        and _occurs(body, b"t", text.count("t"))
        and _occurs(body, b"f", text.count("f"))
    )


def _occurs(body: bytes, char: bytes, times: int) -> bool:
    """Return whether ``char`` occurs exactly ``times`` times in ``body``."""
    if times > 32:  # many symbols' names: one counting pass beats a find per occurrence
        return body.count(char) == times
    find = body.find
    i = find(char)
    seen = 0
    while i >= 0:  # each find is a memchr from where the last one stopped
        seen += 1
        if seen > times:
            return False
        i = find(char, i + 1)
    return seen == times


def reply_format(request: Request) -> str:
    """Return ``"msgpack"`` or ``"json"``: what ``Accept`` asks for, else the request's format."""
    accept = request.headers.get("accept")
    if accept:
        if "msgpack" in accept:
            return "msgpack"
        if "json" in accept:
            return "json"
    ctype = request.headers.get("content-type", "")
    return "msgpack" if "msgpack" in ctype else "json"


def encode(
    obj: Any, fmt: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """Return ``obj`` as a JSON or msgpack response (numpy arrays included)."""
    if fmt == "msgpack":
        content = msgpack.packb(obj, default=json_default)
        return Response(content, status_code=status, media_type=MSGPACK, headers=headers)
    content = orjson.dumps(obj, option=_JSON_OPTIONS, default=json_default)
    return Response(content, status_code=status, media_type=JSON, headers=headers)


def problem_response(problem: Problem, fmt: str) -> Response:
    """Return the error answer of ``problem``."""
    body = {"error": problem.error, "detail": problem.detail, **problem.extra}
    return encode(body, fmt, problem.status, problem.headers)


# -- validation -----------------------------------------------------------------------------


_NUMBER_TYPES = frozenset({float, int, type(None)})  # None: null, reported as non-finite
_MAX_DEPTH = 3  # [n, L, C]


def _check_numbers(value: list[Any], what: str, depth: int = 1) -> None:
    """Raise 422 naming the first element of nested lists that is not a number (or null).

    Strict where numpy is lenient: ``np.asarray(["1", True], dtype=np.float32)`` is
    ``[1.0, 1.0]``. One ``set(map(type, ...))`` per innermost list keeps it ~15 ns an element.
    """
    kinds = set(map(type, value))
    if kinds <= _NUMBER_TYPES:
        return
    for i, item in enumerate(value):
        kind = type(item)
        if kind is list:
            if depth >= _MAX_DEPTH:
                raise Problem(
                    422, "invalid", f"{what}[{i}] nests deeper than [n, L, C]; send numbers"
                )
            _check_numbers(item, f"{what}[{i}]", depth + 1)
        elif kind not in _NUMBER_TYPES:
            shown = repr(item)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            name = {bool: "a boolean", str: "a string", dict: "an object"}.get(
                kind, f"a {kind.__name__}"
            )
            raise Problem(
                422,
                "invalid",
                f"{what}[{i}] is {name} ({shown}), not a number; histories hold numbers only",
            )


def _array(value: Any, what: str, *, numbers_checked: bool = False) -> np.ndarray:
    """A float32 array from nested lists of numbers (or a msgpack binary array).

    ``numbers_checked``: the caller knows the lists hold only numbers and nulls (a JSON body
    that passed :func:`_json_numbers_only`); otherwise every element's type is checked.
    """
    if isinstance(value, dict):
        return _binary_array(value, what)
    if not isinstance(value, list):
        raise Problem(
            422,
            "invalid",
            f"{what} must be an array of numbers (one history or a batch), got "
            f"{type(value).__name__}",
        )
    if not numbers_checked:
        _check_numbers(value, what)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are reported below
            return np.asarray(value, dtype=np.float32)
    except OverflowError:  # an integer beyond float64
        raise Problem(
            422, "invalid", f"{what} holds an integer too large for a float; send finite numbers"
        ) from None
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(". The detected", 1)[0]
        raise Problem(
            422,
            "invalid",
            f"{what} must be a rectangular array of numbers (every history the same length, "
            f"every bar the same number of features): {reason}",
        ) from None


def _binary_array(value: dict[str, Any], what: str) -> np.ndarray:
    try:
        shape, dtype, data = _binary_parts(value)
    except ValueError as exc:
        raise Problem(
            422,
            "invalid",
            f"{what} as a binary array needs shape, dtype (a float type) and data bytes of "
            f"matching size: {exc}",
        ) from None
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    with np.errstate(over="ignore"):  # a float64 beyond float32 is inf, reported later
        return arr.astype(np.float32, copy=False)


def _binary_parts(value: dict[str, Any]) -> tuple[tuple[int, ...], np.dtype[Any], bytes]:
    """Check a binary array's fields strictly (no ``int("3")``, ``int(True)``, ``int(inf)``)."""
    shape = value.get("shape")
    dtype_name = value.get("dtype", "<f4")
    data = value.get("data")
    if not isinstance(shape, list | tuple) or not 1 <= len(shape) <= _MAX_DEPTH:
        raise ValueError("shape must be a list of 1 to 3 sizes")
    if not all(type(n) is int and 0 <= n <= 1 << 40 for n in shape):
        raise ValueError(f"shape sizes must be non-negative integers, got {list(shape)!r:.80}")
    if not isinstance(dtype_name, str) or not isinstance(data, bytes | bytearray):
        raise ValueError("dtype must be a string such as '<f4' and data bytes")
    try:
        dtype = np.dtype(dtype_name)
    except (TypeError, ValueError):  # not a dtype at all
        dtype = np.dtype("O")
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a float type ('<f4', '<f8'), got {dtype_name!r:.40}")
    need = math.prod(shape) * dtype.itemsize
    if need != len(data):
        raise ValueError(
            f"shape {list(shape)} of {dtype_name} needs {need:,} data bytes, got {len(data):,}"
        )
    return tuple(shape), dtype, bytes(data)


def _expect(spec: ModelSpec) -> str:
    one = f"; one-feature models also take [n, {spec.input_size}] or [{spec.input_size}]"
    return (
        f"model {spec.name} expects [n, {spec.input_size}, {spec.n_features}] (n histories of "
        f"at least {spec.input_size} bars of {spec.n_features} feature(s))"
        + (one if spec.n_features == 1 else f", or [{spec.input_size}, {spec.n_features}] for one")
    )


def histories(
    value: Any,
    spec: ModelSpec,
    *,
    what: str = "inputs",
    max_abs: float = MAX_ABS_VALUE,
    numbers_checked: bool = False,
) -> np.ndarray:
    """Validate ``value`` as histories for ``spec``; return ``[n, input_size, n_features]``.

    The last ``input_size`` bars of each history are kept (like ``Predictor``). Shape errors name
    the expected shape; a string or boolean names its position; a non-finite value, or one
    beyond ``max_abs`` in magnitude, names the history and bar.
    """
    return batch_of(_array(value, what, numbers_checked=numbers_checked), spec, what, None, max_abs)


def batch_of(
    arr: np.ndarray,
    spec: ModelSpec,
    what: str,
    names: list[str] | None = None,
    max_abs: float = MAX_ABS_VALUE,
) -> np.ndarray:
    """Shape a float32 array as ``[n, input_size, n_features]`` (see :func:`histories`).

    ``names`` label the histories in error messages (``histories['BTC-USD']``) instead of
    ``what[i]``.
    """
    length, feats = spec.input_size, spec.n_features
    if arr.ndim == 1 and feats == 1:
        arr = arr.reshape(1, -1, 1)  # [L] -> [1, L, 1]
    elif arr.ndim == 2:
        if feats == 1:
            # [n, L] -> [n, L, 1]; an [L, 1] column is one history
            arr = arr.reshape(1, -1, 1) if arr.shape[1] == 1 and length > 1 else arr[:, :, None]
        elif arr.shape[1] == feats:
            arr = arr[None]  # [L, C] -> [1, L, C]
        else:
            raise Problem(422, "invalid", f"{what} has shape {list(arr.shape)}; {_expect(spec)}")
    elif arr.ndim != 3:
        raise Problem(422, "invalid", f"{what} has shape {list(arr.shape)}; {_expect(spec)}")
    n, got_length, got_feats = arr.shape
    if n == 0:
        raise Problem(422, "invalid", f"{what} holds no histories; {_expect(spec)}")
    if got_feats != feats or got_length < length:
        short = f" (too short: {got_length} bars)" if got_length < length else ""
        raise Problem(422, "invalid", f"{what} has shape {list(arr.shape)}{short}; {_expect(spec)}")
    x = np.ascontiguousarray(arr[:, got_length - length :, :])  # [n, L, C]
    with np.errstate(invalid="ignore"):
        ok = np.abs(x) <= max_abs  # False for NaN and inf too: one pass for both checks
    if not ok.all():
        i, t, k = (int(v) for v in np.argwhere(~ok)[0])
        item = f"histories[{names[i]!r}]" if names is not None else f"{what}[{i}]"
        bar = f"bar {t + got_length - length} (feature {k})"
        if np.isfinite(x[i, t, k]):
            raise Problem(
                422,
                "invalid",
                f"{item} has {float(x[i, t, k]):.6g} at {bar}, beyond the largest magnitude "
                f"accepted, {max_abs:g} (CELERIS_SERVE_MAX_ABS_VALUE)",
            )
        raise Problem(
            422,
            "invalid",
            f"{item} has a non-finite value ({x[i, t, k]}: null, NaN, inf or an overflow) at "
            f"{bar}; send finite numbers",
        )
    return x


def symbol_histories(
    value: Any,
    spec: ModelSpec,
    limit: int,
    *,
    max_abs: float = MAX_ABS_VALUE,
    numbers_checked: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Validate ``{"SYM": history, ...}``; return the symbols and ``[n, input_size, C]``.

    Symbol names are strings (their format is checked when a new one gets a feed id); values
    as in :func:`histories`. For a price-like target (``spec.target_kind == "level"``) the
    target feature (feature 0) must be positive: the signal's simple returns are undefined
    otherwise (422 naming the symbol and bar).
    """
    if not isinstance(value, dict) or not value:
        raise Problem(
            422,
            "invalid",
            'histories must be a non-empty object {"SYMBOL": history, ...} with each history '
            f"[L] or [L, C]; {_expect(spec)}",
        )
    if len(value) > limit:
        raise Problem(
            413,
            "too_large",
            f"{len(value)} symbols exceed the limit of {limit} per request "
            "(CELERIS_SERVE_MAX_ITEMS); split the request",
        )
    symbols = list(value)
    if not all(isinstance(s, str) and s for s in symbols):
        bad = next(s for s in symbols if not isinstance(s, str) or not s)
        raise Problem(422, "invalid", f"symbol names must be non-empty strings, got {bad!r:.40}")
    rows = list(value.values())
    x = _symbol_rows(symbols, rows, spec, max_abs, numbers_checked)
    _check_level_target(x, symbols, spec, "histories")
    return symbols, x


def _check_level_target(x: np.ndarray, symbols: list[str], spec: ModelSpec, what: str) -> None:
    """422 when a price-like target (``spec.target_kind == "level"``, feature 0) is not
    positive: the signal's simple returns are undefined otherwise."""
    if spec.target_kind != "level":
        return
    bad_rows = np.flatnonzero((x[:, :, 0] <= 0).any(axis=1))
    if len(bad_rows):
        i = int(bad_rows[0])
        t = int(np.flatnonzero(x[i, :, 0] <= 0)[0])
        raise Problem(
            422,
            "invalid",
            f"{what}[{symbols[i]!r}] has {float(x[i, t, 0]):g} in its target (feature 0) "
            f"at bar {t} of its last {spec.input_size}; model {spec.name} forecasts a price "
            "level, which must be positive for a signal (a return is undefined otherwise)",
        )


_BAR_FIELDS = ("open", "high", "low", "close", "volume")


def symbol_bars(
    value: Any,
    spec: ModelSpec,
    limit: int,
    *,
    max_abs: float = MAX_ABS_VALUE,
    numbers_checked: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Validate raw bars ``{"SYM": bars, ...}`` and compute the model's inputs from them with
    the model's own feature spec; return the symbols and ``[n, input_size, C]`` float32.

    Each symbol's bars, oldest first, are columns ``{"open": [...], "high": [...], "low":
    [...], "close": [...], "volume": [...]}`` (the fields its features read; in msgpack each
    may be a binary 1-D array) or rows ``[[open, high, low, close, volume], ...]`` (in msgpack
    also a binary ``[T, 5]`` array). Prices are read as float64, as training read them. The
    inputs are :meth:`FeatureSpec.last_windows
    <celeris.models.features.FeatureSpec.last_windows>` of the bars: the last ``input_size``
    rows of the same function that built the training windows. At least ``lookback +
    input_size`` bars per symbol (422 naming how many, also as ``needed``).
    """
    features = spec.feature_spec
    if features is None:
        raise Problem(
            422,
            "invalid",
            f"model {spec.name} records no input features, so its inputs cannot be computed "
            f'from bars; send finished windows as "histories" ({_expect(spec)})',
        )
    need = features.lookback + spec.input_size
    if not isinstance(value, dict) or not value:
        raise Problem(
            422,
            "invalid",
            'bars must be a non-empty object {"SYMBOL": {"open": [...], "high": [...], '
            '"low": [...], "close": [...], "volume": [...]}, ...} (or rows [[o, h, l, c, v], '
            f"...] per symbol) of at least {need} bars each",
            needed=need,
        )
    if len(value) > limit:
        raise Problem(
            413,
            "too_large",
            f"{len(value)} symbols exceed the limit of {limit} per request "
            "(CELERIS_SERVE_MAX_ITEMS); split the request",
        )
    symbols = list(value)
    if not all(isinstance(s, str) and s for s in symbols):
        bad = next(s for s in symbols if not isinstance(s, str) or not s)
        raise Problem(422, "invalid", f"symbol names must be non-empty strings, got {bad!r:.40}")
    parsed: dict[str, dict[str, np.ndarray]] = {}
    for symbol, one in value.items():
        what = f"bars[{symbol!r}]"
        fields = _bar_fields(one, what, features.fields, numbers_checked)
        n = len(fields["close"])
        if n < need:
            raise Problem(
                422,
                "invalid",
                f"{what} has {n} bar(s); model {spec.name} needs at least {need}: the features' "
                f"warm-up (lookback {features.lookback}) + input_size {spec.input_size}. Send "
                "the same history the model was trained on for inputs equal to training's",
                needed=need,
            )
        for field, arr in fields.items():
            with np.errstate(invalid="ignore"):
                ok = np.abs(arr) <= max_abs
            if not ok.all():
                t = int(np.flatnonzero(~ok)[0])
                kind = "non-finite" if not np.isfinite(arr[t]) else "too large"
                raise Problem(
                    422,
                    "invalid",
                    f"{what} has a {kind} {field} ({arr[t]:.6g}) at bar {t} of {n}; send "
                    f"finite numbers of magnitude at most {max_abs:g}",
                )
        parsed[symbol] = fields
    try:
        x64 = features.last_windows(parsed, spec.input_size)
    except DataError as exc:
        raise Problem(422, "invalid", f"bars: {exc}") from None
    with np.errstate(over="ignore"):
        x = x64.astype(np.float32)
    x = batch_of(x, spec, "bars", symbols, max_abs)
    _check_level_target(x, symbols, spec, "bars")
    return symbols, x


def _bar_fields(
    one: Any, what: str, needed: tuple[str, ...], numbers_checked: bool
) -> dict[str, np.ndarray]:
    """One symbol's bars as ``{field: float64 [T]}`` for the ``needed`` fields (422 on any
    other shape, a non-number, an unknown field, fields of different lengths)."""
    if isinstance(one, dict) and "shape" in one and "data" in one:
        rows = _float64_array(one, what, numbers_checked)
        one = rows  # a binary [T, 5] array of rows
    if isinstance(one, list | np.ndarray):
        rows = one if isinstance(one, np.ndarray) else _float64_array(one, what, numbers_checked)
        if rows.ndim != 2 or rows.shape[1] != len(_BAR_FIELDS):
            raise Problem(
                422,
                "invalid",
                f"{what} as rows must be [T, 5] (open, high, low, close, volume per bar), got "
                f"shape {list(rows.shape)}",
            )
        return {f: np.ascontiguousarray(rows[:, _BAR_FIELDS.index(f)]) for f in needed}
    if not isinstance(one, dict):
        raise Problem(
            422,
            "invalid",
            f'{what} must be columns {{"close": [...], ...}} or rows [[o, h, l, c, v], ...], '
            f"got {type(one).__name__}",
        )
    unknown = [k for k in one if k not in _BAR_FIELDS]
    if unknown:
        from celeris.errors import did_you_mean

        key = str(unknown[0])
        raise Problem(
            422,
            "invalid",
            f"{what} has an unknown field {key[:40]!r}{did_you_mean(key, _BAR_FIELDS)}; "
            f"fields are {', '.join(_BAR_FIELDS)}",
        )
    missing = [f for f in needed if f not in one]
    if missing:
        raise Problem(
            422,
            "invalid",
            f"{what} lacks {', '.join(missing)}: the model's features read {', '.join(needed)}",
        )
    out = {}
    for f in one:  # every field given is checked, the ones the features read are kept
        arr = _float64_array(one[f], f"{what}[{f!r}]", numbers_checked)
        if arr.ndim != 1:
            raise Problem(
                422,
                "invalid",
                f"{what}[{f!r}] must be a list of numbers, got shape {list(arr.shape)}",
            )
        out[f] = arr
    lengths = {f: len(a) for f, a in out.items()}
    if len(set(lengths.values())) > 1:
        raise Problem(422, "invalid", f"{what} has fields of different lengths: {lengths}")
    return {f: out[f] for f in needed}


def _float64_array(value: Any, what: str, numbers_checked: bool) -> np.ndarray:
    """Numbers (nested lists, or a msgpack binary array) as float64: raw prices keep every
    digit, as the training bars did."""
    if isinstance(value, dict):
        try:
            shape, dtype, data = _binary_parts(value)
        except ValueError as exc:
            raise Problem(
                422,
                "invalid",
                f"{what} as a binary array needs shape, dtype (a float type) and data bytes of "
                f"matching size: {exc}",
            ) from None
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(np.float64)
    if not isinstance(value, list):
        raise Problem(
            422, "invalid", f"{what} must be an array of numbers, got {type(value).__name__}"
        )
    if not numbers_checked:
        _check_numbers(value, what)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(value, dtype=np.float64)
    except OverflowError:
        raise Problem(
            422, "invalid", f"{what} holds an integer too large for a float; send finite numbers"
        ) from None
    except (ValueError, TypeError) as exc:
        reason = str(exc).split(". The detected", 1)[0]
        raise Problem(
            422, "invalid", f"{what} must be a rectangular array of numbers: {reason}"
        ) from None


def _symbol_rows(
    symbols: list[str], rows: list[Any], spec: ModelSpec, max_abs: float, numbers_checked: bool
) -> np.ndarray:
    if not numbers_checked:
        for symbol, row in zip(symbols, rows, strict=True):
            if isinstance(row, list):
                _check_numbers(row, f"histories[{symbol!r}]")
    # Fast path: equal-length histories parse as one array in a single call.
    if not any(isinstance(r, dict) for r in rows):
        stacked: np.ndarray | None
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                stacked = np.asarray(rows, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):
            stacked = None  # ragged, or an odd row: checked one by one below
        if stacked is not None and stacked.ndim == 2 and spec.n_features == 1:
            stacked = stacked[:, :, None]  # [n, L] -> [n, L, 1]
        if stacked is not None and stacked.ndim == 3:
            return batch_of(stacked, spec, "histories", symbols, max_abs)
    out = np.empty((len(rows), spec.input_size, spec.n_features), dtype=np.float32)
    for i, (symbol, row) in enumerate(zip(symbols, rows, strict=True)):
        what = f"histories[{symbol!r}]"
        arr = _array(row, what, numbers_checked=True)  # lists checked above
        if arr.ndim > 2 or (arr.ndim == 2 and spec.n_features == 1 and arr.shape[1] != 1):
            raise Problem(
                422,
                "invalid",
                f"{what} must be one history [L] or [L, C], got shape {list(arr.shape)}; "
                f"{_expect(spec)}",
            )
        if arr.ndim == 1 and spec.n_features > 1:
            raise Problem(422, "invalid", f"{what} has shape {list(arr.shape)}; {_expect(spec)}")
        one = arr.reshape(1, -1, 1) if arr.ndim == 1 else arr[None]  # -> [1, L, C]
        out[i] = batch_of(one, spec, what, [symbol], max_abs)[0]
    return out


def parse_options(
    doc: dict[str, Any], settings: ServeSettings
) -> tuple[str, float | None, str | None]:
    """Return ``(priority, timeout_ms, key)`` from a request body, validated (422)."""
    priority = doc.get("priority", "normal")
    if isinstance(priority, str):
        label = priority.strip().lower()
        if label not in _PRIORITIES:
            from celeris.errors import did_you_mean

            raise Problem(
                422,
                "invalid",
                f"unknown priority {priority!r}{did_you_mean(label, _PRIORITIES)}; choose one "
                f"of {', '.join(_PRIORITIES)}",
            )
    elif isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 3:
        label = _PRIORITIES[priority]
    else:
        raise Problem(422, "invalid", f"priority must be one of {', '.join(_PRIORITIES)}")
    timeout = doc.get("timeout_ms")
    if timeout is not None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= settings.max_timeout_ms
        ):
            raise Problem(
                422,
                "invalid",
                f"timeout_ms must be a number in (0, {settings.max_timeout_ms:g}], got {timeout!r}",
            )
        timeout = float(timeout)
    key = doc.get("key")
    if key is not None and (not isinstance(key, str) or len(key) > _MAX_KEY):
        raise Problem(422, "invalid", f"key must be a string of at most {_MAX_KEY} characters")
    return label, timeout, key


# -- signals --------------------------------------------------------------------------------


def forecast_signals(
    x: np.ndarray, forecasts: np.ndarray, *, kind: str = "level", threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(signal, confidence, expected, usable)`` per history from its forecast.

    The rule, per history (``x [n, L, C]`` with the target as feature 0, ``forecasts [n, H]``):

    * ``expected``: the forecast move to the end of the horizon. For a price-like target
      (``kind="level"``) ``f[H-1] / last - 1`` with ``last`` the history's final value; for a
      stationary target (``kind="return"``: the model forecasts returns) ``sum(f)``.
    * ``signal``: ``+1`` when ``expected > threshold``, ``-1`` when ``expected < -threshold``,
      else ``0``.
    * ``confidence``: ``erf(|z| / sqrt(2))`` with ``z = expected / (sigma * sqrt(H))`` and
      ``sigma`` the standard deviation of the history's one-bar moves (simple returns of a
      level, the values of a return series): the two-sided probability that noise of the
      recent volatility would move less than the forecast does. 0 for no move, near 1 for a
      move many sigmas large.
    * ``usable``: False where the rule has nothing to measure against, and then ``signal`` and
      ``confidence`` are 0: a flat history (no volatility: all-zero, constant; the rule used to
      answer confidence 1.0 for any forecast of one), a non-finite move, or for a level a
      forecast end that is not positive. The server answers such rows but does not publish
      them on the signal feed.
    """
    target = x[:, :, 0].astype(np.float64)  # [n, L]
    f = forecasts.astype(np.float64)  # [n, H]
    horizon = f.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "return":
            expected = f.sum(axis=1)
            sigma = target.std(axis=1, ddof=1) if target.shape[1] > 1 else np.zeros(len(f))
        else:
            last = target[:, -1]
            scale = np.where(last != 0, np.abs(last), 1.0)
            expected = (f[:, -1] - last) / scale
            prev = target[:, :-1]
            moves = np.diff(target, axis=1) / np.where(prev != 0, np.abs(prev), 1.0)
            sigma = moves.std(axis=1, ddof=1) if moves.shape[1] > 1 else np.zeros(len(f))
        z = np.abs(expected) / (sigma * math.sqrt(horizon))
        usable = (sigma > 0) & np.isfinite(sigma) & np.isfinite(expected)
        if kind != "return":
            usable &= f[:, -1] > 0
    z = np.where(usable, z, 0.0)
    confidence = np.array([math.erf(v / math.sqrt(2.0)) for v in z.tolist()], dtype=np.float64)
    signal = np.where(expected > threshold, 1, np.where(expected < -threshold, -1, 0))
    signal = np.where(usable, signal, 0)
    return signal.astype(np.int8), confidence, expected, usable


# -- the application ------------------------------------------------------------------------


def create_app(
    manager: ModelManager,
    *,
    publisher: Any = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    outcomes: Any = None,
) -> FastAPI:
    """Return the FastAPI application serving ``manager``'s models (see the module docstring).

    Parameters
    ----------
    manager
        What the application serves: the :class:`~celeris.serving.manager.ModelManager`
        holding the engine (models loaded, swaps), the registry the admin routes act on, the
        settings (limits, tokens, shadow-validation thresholds, signal threshold) and the
        metrics (``/metrics`` renders them; 404 without). A manager around an engine that
        already holds models serves them after ``manager.adopt()``; call it again after adding
        models to the engine later, e.g. in ``lifespan``.
    publisher
        A :class:`~celeris.serving.feed.SignalPublisher`; ``/v1/forecast`` publishes each
        symbol's signal on it when given.
    lifespan
        Startup/shutdown context of the application (see :func:`celeris.serving.app.build`).
    outcomes
        A :class:`~celeris.serving.outcomes.ServedOutcomes`: every prediction served is recorded
        there under its request id, ``POST /v1/outcomes`` records realised values, and A/B tests
        are judged on them. None: no outcomes (``/v1/outcomes`` answers 404, A/B on latency).
    """
    metrics = manager.metrics
    api = _API(manager, publisher, outcomes)
    app = FastAPI(
        title="Celeris serving",
        summary="Batched forecasts, signals and model rollouts",
        lifespan=lifespan,
    )
    app.state.celeris = api
    # Hot routes first: Starlette matches in order.
    app.router.routes.insert(
        0, Route("/v1/models/{name}/predict", api.predict, methods=["POST"], name="predict")
    )
    app.router.routes.insert(
        1, Route("/v1/forecast", api.forecast, methods=["POST"], name="forecast")
    )
    app.router.routes.insert(
        2, Route("/v1/outcomes", api.post_outcomes, methods=["POST"], name="outcomes")
    )

    @app.get("/healthz", include_in_schema=True)
    async def healthz() -> Response:
        """Answer 200 while the process runs."""
        return encode({"status": "ok"}, "json")

    @app.get("/readyz")
    async def readyz() -> Response:
        """Answer 200 when every configured model is loaded and warm, else 503."""
        state = manager.readiness()
        return encode(state, "json", 200 if state["ready"] else 503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Return the Prometheus metrics (text exposition format)."""
        if metrics is None:
            return encode({"error": "not_found", "detail": "metrics are disabled"}, "json", 404)
        from celeris.serving.metrics import CONTENT_TYPE

        # In a worker thread: the drift series read the outcome store (SQLite, which may wait
        # on the writer's transaction) and must not hold up the event loop.
        return Response(await asyncio.to_thread(metrics.render), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        """List the served models: versions, shapes, A/B state and registry records (503
        while the registry cannot be read)."""
        fmt = reply_format(request)
        try:
            return encode({"models": await manager.describe()}, fmt)
        except CelerisError as exc:
            return problem_response(problem_of(exc), fmt)

    @app.get("/v1/symbols")
    async def list_symbols(request: Request) -> Response:
        """Return the signal feed's symbol ids ({symbol: id})."""
        return encode({"symbols": manager.symbols.mapping()}, reply_format(request))

    @app.post("/v1/admin/models", status_code=201)
    async def admin_register(request: Request) -> Response:
        """Register a checkpoint directory (a path on the server) as a new staging version.

        Body: ``{"name": NAME, "checkpoint": PATH, "metrics": {...}}``.
        """
        return await api.admin(request, api.register)

    @app.post("/v1/admin/models/{name}/promote")
    async def admin_promote(name: str, request: Request) -> Response:
        """Shadow-validate a version, then make it production and hot-swap it in.

        Body (optional): ``{"version": N}`` (default: the newest staging version). 409 with the
        report when validation fails.
        """
        return await api.admin(request, api.promote, name)

    @app.post("/v1/admin/models/{name}/ab")
    async def admin_ab_start(name: str, request: Request) -> Response:
        """Start an A/B test: ``{"version": N, "split": 0.1, "salt": ""}`` (shadow-validated)."""
        return await api.admin(request, api.ab_start, name)

    @app.get("/v1/admin/models/{name}/ab")
    async def admin_ab_status(name: str, request: Request) -> Response:
        """Return the running A/B test's per-arm statistics."""
        return await api.admin(request, api.ab_status, name)

    @app.delete("/v1/admin/models/{name}/ab")
    async def admin_ab_stop(name: str, request: Request) -> Response:
        """Stop the A/B test; return the evaluation (``?metric=latency|value``)."""
        return await api.admin(request, api.ab_stop, name)

    @app.post("/v1/admin/models/{name}/rollback")
    async def admin_rollback(name: str, request: Request) -> Response:
        """Return production to the previous version and hot-swap it in."""
        return await api.admin(request, api.rollback, name)

    return app


class _API:
    """The route handlers, sharing the engine, manager, settings and metrics."""

    def __init__(self, manager: ModelManager, publisher: Any, outcomes: Any = None) -> None:
        self.engine = manager.engine
        # celeris.serving.outcomes.ServedOutcomes (duck-typed: this module imports no domain
        # module): every served prediction is queued there under its request id.
        self.outcomes = outcomes
        self.registry = manager.registry
        self.settings = settings = manager.settings
        self.metrics: PrometheusMetrics | None = manager.metrics
        self.publisher = publisher
        self.manager = manager
        self.max_items = min(settings.max_items, settings.max_queue)
        settings.check_startup()
        self._token = (
            settings.admin_token.get_secret_value().encode() if settings.admin_token else None
        )
        self._publish_token = (
            settings.publish_token.get_secret_value().encode() if settings.publish_token else None
        )
        # Large or chunked bodies: at most _LARGE_BODIES read into memory at once, and one
        # parsed at a time, in a worker thread (see _parsed).
        self._large_bodies = asyncio.Semaphore(_LARGE_BODIES)
        self._parse_slot = asyncio.Semaphore(1)

    # -- hot routes ---------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """``POST /v1/models/{name}/predict``."""
        name = request.path_params["name"]
        fmt = reply_format(request)
        t0 = time.perf_counter()
        label = "normal"
        try:
            try:
                spec = self.manager.spec(name)
            except ServingError as exc:  # not served (404) or still loading (503)
                raise problem_of(exc) from None
            label, timeout, key, x = await self._parsed(request, self._predict_input, spec)
            rid = self._request_id(request)
            result = await self._run(name, x, label, timeout, key)
        except Problem as problem:
            self._count_problem(name, label, problem, t0)
            return problem_response(problem, fmt)
        self.manager.record_input(name, x)
        if rid is not None:
            self.outcomes.record_request(
                rid,
                model=result.model,
                version=result.version,
                names=None,
                inputs=x,
                forecasts=result.values,
                target_kind=spec.target_kind,
            )
        return encode(
            {
                "model": result.model,
                "version": _v(result.version),
                "arm": result.arm,
                "outputs": result.values,
                "cached": result.cached,
                "request_id": rid,
            },
            fmt,
        )

    def _request_id(self, request: Request) -> str | None:
        """The request's ``X-Request-Id`` (422 when malformed) or a new id; None when this
        server records no outcomes."""
        if self.outcomes is None:
            return None
        try:
            rid: str = self.outcomes.request_id(request.headers.get("x-request-id"))
        except CelerisError as exc:
            raise problem_of(exc) from None
        return rid

    async def _parsed(self, request: Request, parse: Callable[..., _T], *args: Any) -> _T:
        """Read the body and return ``parse(body, media, *args)`` (``media``: :func:`_media_type`).

        JSON bodies are limited to ``max_json_bytes``: orjson parses one in a single call that
        holds the GIL, ~25 ms a MB on a 2-vCPU VM, and the event loop (``/healthz`` included)
        waits for it wherever it runs. A body declared small (the hot path: one header lookup
        more) is read and parsed on the event loop. A larger or chunked one waits for one of ``_LARGE_BODIES`` slots before it
        is read, so a flood of 16 MB bodies holds at most that many in memory (the others stay
        in the kernel: uvicorn stops reading a connection whose app is not receiving), and is
        parsed in a worker thread, one at a time.
        """
        media = _media_type(request.headers.get("content-type"))  # 415 before reading a body
        limit, setting = self.settings.max_body_bytes, "CELERIS_SERVE_MAX_BODY_BYTES"
        if media == "json" and self.settings.max_json_bytes < limit:
            limit, setting = self.settings.max_json_bytes, "CELERIS_SERVE_MAX_JSON_BYTES"
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) <= _INLINE_BODY_BYTES:
            return parse(await read_body(request, limit, setting), media, *args)
        async with self._large_bodies:
            body = await read_body(request, limit, setting)
            if len(body) <= _INLINE_BODY_BYTES:
                return parse(body, media, *args)
            async with self._parse_slot:
                return await asyncio.to_thread(parse, body, media, *args)

    def _predict_input(
        self, body: bytes, media: str, spec: ModelSpec
    ) -> tuple[str, float | None, str | None, np.ndarray]:
        """Parse and validate a predict body (on the loop, or in a thread when large)."""
        doc, numbers_checked = _decode(body, media)
        if "inputs" not in doc:
            raise Problem(422, "invalid", f'the body needs "inputs"; {_expect(spec)}')
        label, timeout, key = parse_options(doc, self.settings)
        x = histories(
            doc["inputs"],
            spec,
            max_abs=self.settings.max_abs_value,
            numbers_checked=numbers_checked,
        )
        self._check_items(len(x))
        return label, timeout, key, x

    async def forecast(self, request: Request) -> Response:
        """``POST /v1/forecast``: many symbols in one request, batched with everyone else's."""
        fmt = reply_format(request)
        t0 = time.perf_counter()
        name = ""
        label = "normal"
        try:
            if self._publish_token is not None:
                _check_bearer(request, self._publish_token, "CELERIS_PUBLISH_TOKEN")
            parsed = await self._parsed(request, self._forecast_input)
            name, spec, label, timeout, key, symbols, x = parsed
            rid = self._request_id(request)
            # Ids before the model runs: a refused symbol costs no compute. On the loop, so
            # concurrent requests never race for the table's last ids.
            try:
                ids = self.manager.symbols.ids(symbols)
            except SymbolLimitReached as exc:
                raise Problem(422, "symbol_limit", str(exc)) from None
            except DataError as exc:  # a new symbol's name is not a symbol
                raise Problem(422, "invalid", f"histories: {exc}") from None
            result = await self._run(name, x, label, timeout, key)
        except Problem as problem:
            self._count_problem(name, label, problem, t0)
            return problem_response(problem, fmt)
        self.manager.record_input(name, x)
        signal, confidence, expected, usable = forecast_signals(
            x, result.values, kind=spec.target_kind, threshold=self.settings.signal_threshold
        )
        seqs = self._publish(ids, signal, confidence, result.values, result.version, usable)
        if rid is not None:
            self.outcomes.record_request(
                rid,
                model=result.model,
                version=result.version,
                names=symbols,
                inputs=x,
                forecasts=result.values,
                signals=signal,
                usable=usable,
                target_kind=spec.target_kind,
            )
        cached = np.asarray(result.cached, dtype=bool).tolist()
        values = result.values
        out: dict[str, Any] = {}
        for i, symbol in enumerate(symbols):
            entry: dict[str, Any] = {
                "forecast": values[i],
                "signal": int(signal[i]),
                "confidence": float(confidence[i]),
                "expected_return": float(expected[i]),
                "symbol_id": ids[i],
                "cached": cached[i],
            }
            if not usable[i]:
                entry["warning"] = _UNUSABLE
            elif seqs is not None:
                entry["seq"] = seqs[i]
            out[symbol] = entry
        return encode(
            {
                "model": result.model,
                "version": _v(result.version),
                "arm": result.arm,
                "horizon": int(values.shape[1]),
                "forecasts": out,
                "request_id": rid,
            },
            fmt,
        )

    def _forecast_input(self, body: bytes, media: str) -> tuple[Any, ...]:
        """Parse and validate a forecast body (on the loop, or in a thread when large)."""
        doc, numbers_checked = _decode(body, media)
        given = doc.get("model")
        if not isinstance(given, str) or not given:
            raise Problem(422, "invalid", 'the body needs "model": the name of a served model')
        try:
            spec = self.manager.spec(given)
        except ServingError as exc:  # not served (404) or still loading (503)
            raise problem_of(exc) from None
        label, timeout, key = parse_options(doc, self.settings)
        if "bars" in doc:
            if "histories" in doc:
                raise Problem(
                    422,
                    "invalid",
                    'send either "histories" (finished input windows) or "bars" (raw OHLCV '
                    "bars the server computes the model's inputs from), not both",
                )
            symbols, x = symbol_bars(
                doc["bars"],
                spec,
                self.max_items,
                max_abs=self.settings.max_abs_value,
                numbers_checked=numbers_checked,
            )
        elif "histories" not in doc:
            raise Problem(
                422,
                "invalid",
                'the body needs "histories" (finished input windows per symbol) or "bars" (raw '
                f"OHLCV bars per symbol, at least {spec.bars_needed} each, from which the server "
                "computes the model's inputs)"
                if spec.bars_needed is not None
                else f'the body needs "histories" (input windows per symbol); {_expect(spec)}',
            )
        else:
            symbols, x = symbol_histories(
                doc.get("histories"),
                spec,
                self.max_items,
                max_abs=self.settings.max_abs_value,
                numbers_checked=numbers_checked,
            )
        return given, spec, label, timeout, key, symbols, x

    def _check_items(self, n: int) -> None:
        if n > self.max_items:
            raise Problem(
                413,
                "too_large",
                f"{n} histories exceed the limit of {self.max_items} per request "
                "(CELERIS_SERVE_MAX_ITEMS, at most CELERIS_SERVE_MAX_QUEUE); split the request",
            )

    async def _run(
        self, name: str, x: np.ndarray, priority: str, timeout: float | None, key: str | None
    ) -> Any:
        """Run the engine; map its errors to HTTP problems."""
        try:
            return await self.engine.predict(
                name, x, priority=priority, timeout_ms=timeout, key=key
            )
        except CelerisError as exc:
            problem = problem_of(exc)
            if problem.error == "model_failed":
                log.error("model %s failed on a request: %s", name, exc)
            raise problem from None
        except Exception as exc:  # a bug must answer this request, not break the connection
            log.exception("predict %s failed unexpectedly", name)
            if self.metrics is not None:
                self.metrics.error(name, "internal")
            raise Problem(500, "internal", f"{type(exc).__name__}: {exc}") from None

    def _publish(
        self,
        ids: list[int],
        signal: np.ndarray,
        confidence: np.ndarray,
        values: np.ndarray,
        version: str,
        usable: np.ndarray,
    ) -> list[int | None] | None:
        """Publish one record per usable symbol; return the sequence numbers (None for a row
        not published; None without a feed).

        The wire format carries at most 16 horizon steps (``feed.MAX_HORIZON``): longer
        forecasts are sent truncated there (the HTTP answer has them all).
        """
        if self.publisher is None:
            return None
        from celeris.serving.feed import MAX_HORIZON

        ts = time.time_ns()
        model_version = int(version) if version.isdigit() else 0
        head = values[:, :MAX_HORIZON]
        publish = self.publisher.publish
        try:
            return [
                publish(
                    ids[i],
                    int(signal[i]),
                    float(confidence[i]),
                    head[i],
                    ts_ns=ts,
                    model_version=model_version,
                )
                if ok
                else None
                for i, ok in enumerate(usable.tolist())
            ]
        except Exception as exc:  # the feed must never fail a forecast that succeeded
            log.warning("signal feed: publishing failed: %s", exc)
            if self.metrics is not None:
                self.metrics.error("", "publish")
            return None

    def _count_problem(self, name: str, priority: str, problem: Problem, t0: float) -> None:
        # Requests the engine never saw (it counts the ones it did: overloaded, timeout, ...).
        if self.metrics is None or problem.status in (429, 504) or problem.status >= 500:
            return
        if problem.status == 499:  # the client left mid-body: counted, never logged as an error
            self.metrics.error("", "client_disconnect")
            return
        if problem.status == 404:
            self.metrics.error("", "not_found")  # no per-name series: names are client input
            return
        model = name if isinstance(name, str) and self.manager.serves(name) else ""
        self.metrics.error(model, problem.error)
        self.metrics.observe_request(model, "", priority, time.perf_counter() - t0, problem.error)

    async def post_outcomes(self, request: Request) -> Response:
        """``POST /v1/outcomes``: realised values of served predictions (see
        :meth:`celeris.serving.outcomes.ServedOutcomes.post`); the publish token guards it like
        ``/v1/forecast``, since outcomes decide A/B tests."""
        fmt = reply_format(request)
        try:
            if self.outcomes is None:
                raise Problem(
                    404,
                    "not_found",
                    "this server records no outcomes (CELERIS_SERVE_OUTCOMES=false)",
                )
            if self._publish_token is not None:
                _check_bearer(request, self._publish_token, "CELERIS_PUBLISH_TOKEN")
            media = _media_type(request.headers.get("content-type"))
            doc = _decode(await read_body(request, self.settings.max_body_bytes), media)[0]
            # the store waits for queued predictions and writes: off the event loop
            out = await asyncio.to_thread(self.outcomes.post, doc)
        except Problem as problem:
            return problem_response(problem, fmt)
        except CelerisError as exc:
            return problem_response(problem_of(exc), fmt)
        return encode(out, fmt)

    # -- admin --------------------------------------------------------------------------------

    async def admin(self, request: Request, handler: Callable[..., Any], *args: Any) -> Response:
        """Authorise, parse the body, run ``handler``; map errors to answers."""
        fmt = reply_format(request)
        try:
            self._authorise(request)
            doc: dict[str, Any] = {}
            if request.method in ("POST", "PUT"):
                body = await read_body(request, self.settings.max_body_bytes)
                if body:
                    doc = _decode(body, _media_type(request.headers.get("content-type")))[0]
            status, out = await handler(*args, doc, request)
        except Problem as problem:
            return problem_response(problem, fmt)
        except CelerisError as exc:
            return problem_response(problem_of(exc), fmt)
        except Exception as exc:  # e.g. an OSError copying an artifact
            log.exception("admin %s %s failed", request.method, request.url.path)
            return problem_response(Problem(500, "internal", f"{type(exc).__name__}: {exc}"), fmt)
        return encode(out, fmt, status)

    def _authorise(self, request: Request) -> None:
        if self._token is None:
            raise Problem(403, "forbidden", "admin API disabled: set CELERIS_ADMIN_TOKEN")
        _check_bearer(request, self._token, "CELERIS_ADMIN_TOKEN")

    async def register(self, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        name = doc.get("name")
        checkpoint = doc.get("checkpoint")
        metrics = doc.get("metrics")
        if not isinstance(name, str) or not isinstance(checkpoint, str):
            raise Problem(
                422,
                "invalid",
                'the body needs "name" and "checkpoint" (a checkpoint directory on the server)',
            )
        if metrics is not None and not isinstance(metrics, dict):
            raise Problem(422, "invalid", '"metrics" must be an object')
        record = await self.manager.register(name, checkpoint, metrics=metrics)
        return 201, {
            "record": record.to_dict(),
            "next": f'POST /v1/admin/models/{name}/promote with {{"version": {record.version}}}',
        }

    async def promote(self, name: str, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        version = _version(doc.get("version"))
        return 200, await self.manager.promote(name, version)

    async def ab_start(self, name: str, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        version = _version(doc.get("version"))
        if version is None:
            raise Problem(422, "invalid", 'the body needs "version": the challenger version')
        split = doc.get("split", 0.1)
        salt = doc.get("salt", "")
        if isinstance(split, bool) or not isinstance(split, int | float) or not 0 < split < 1:
            raise Problem(422, "invalid", f"split must be a number in (0, 1), got {split!r}")
        if not isinstance(salt, str):
            raise Problem(422, "invalid", "salt must be a string")
        return 200, await self.manager.start_ab(name, version, float(split), salt)

    async def ab_status(self, name: str, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        out = self.manager.ab_status(name)
        if self.outcomes is not None:
            out["realised"] = await self._realised(name, out["ab"])
        return 200, out

    async def ab_stop(self, name: str, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        default = "latency" if self.outcomes is None else "error"
        metric = request.query_params.get("metric", default)
        if metric == "value":
            raise Problem(
                422,
                "invalid",
                "metric 'value' (the mean forecast) is not compared: a higher or lower forecast "
                "says nothing about whether it was right; use error or pnl (realised outcomes) "
                "or latency",
            )
        if metric not in ("error", "pnl", "latency"):
            raise Problem(422, "invalid", f"metric must be error, pnl or latency, got {metric!r}")
        if metric != "latency" and self.outcomes is None:
            raise Problem(
                422,
                "invalid",
                f"metric {metric} compares realised outcomes, which this server does not record "
                "(CELERIS_SERVE_OUTCOMES=false); use latency",
            )
        out = await self.manager.stop_ab(name, "latency")
        if self.outcomes is not None:
            out["realised"] = await self._realised(name, out["ab"])
            if metric != "latency":
                out["report"] = out["realised"][metric]
        return 200, out

    async def _realised(self, name: str, ab: dict[str, Any]) -> Any:
        """The A/B test's comparison on realised error and P&L since it started."""
        return await asyncio.to_thread(
            self.outcomes.evaluate,
            name,
            int(ab["champion"]),
            int(ab["challenger"]),
            since_s=ab["started_at"],
        )

    async def rollback(self, name: str, doc: dict[str, Any], request: Request) -> tuple[int, Any]:
        return 200, await self.manager.rollback(name)


_UNUSABLE = (
    "not published: the history is flat (no volatility to size a confidence) or the "
    "forecast implies no usable move; signal and confidence are 0"
)


def _check_bearer(request: Request, token: bytes, variable: str) -> None:
    """Raise 401 unless the request carries ``Authorization: Bearer <token>``."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(errors="replace"), token
    ):
        what = "admin" if variable == "CELERIS_ADMIN_TOKEN" else "publish"
        raise Problem(
            401,
            "unauthorized",
            f"missing or wrong {what} token: send Authorization: Bearer ${variable}",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _v(version: str) -> int | str:
    # Registry versions are integers; the engine labels them as strings.
    return int(version) if version.isdigit() else version


def _version(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise Problem(422, "invalid", f"version must be a positive integer, got {value!r}")
    return int(value)


def problem_of(exc: CelerisError) -> Problem:
    """The HTTP answer to a Celeris error raised while serving a request.

    One mapping for every front end (``celeris serve`` and the Ray Serve deployment), read
    from the error itself: a :class:`~celeris.serving.errors.ServingError` carries its status,
    kind, body fields and headers. Other Celeris errors map by base class: ``ModelNotFound``
    404, a bad argument (:data:`~celeris.serving.errors.INPUT_ERRORS`: ``DataError``,
    ``ConfigError``, ``CelerisTypeError``; see :mod:`celeris.checks`) 422, anything else 500.
    """
    if isinstance(exc, ServingError):
        fields = exc.http_body()
        detail = fields.pop("detail")
        return Problem(exc.http_status, exc.http_error, detail, headers=exc.http_headers, **fields)
    if isinstance(exc, ModelNotFound):
        return Problem(404, "not_found", str(exc))
    if isinstance(exc, INPUT_ERRORS):
        return Problem(422, "invalid", str(exc))
    return Problem(500, "internal", str(exc))
