"""A small OpenAI-compatible HTTP server over any chat model, on the standard library only.

It speaks enough of the OpenAI chat-completions protocol for the ``openai`` SDK (plain and
streamed answers, ``response_format``, ``seed``, ``usage``, OpenAI-style error bodies), so the
LLM client is tested end to end against a real socket without a network or a GPU::

    from celeris.testing.tiny_llm import LocalChatModel
    from celeris.testing.llm_server import OpenAICompatibleServer

    with OpenAICompatibleServer(LocalChatModel(model_dir)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /tokenize``, ``GET /health``. One model per server; requests run one at a time if the
model says so (a lock).

A client has to fit its prompt and the answer into the model's context window, so the server
says what the window is and counts tokens as the model does, the way vLLM does: each model card
of ``/v1/models`` carries ``max_model_len``, and ``POST /tokenize`` takes ``{"prompt": TEXT}``
or ``{"messages": [...]}`` (the chat template applied, as a completion would) and answers
``{"count", "max_model_len", "tokens"}``. Both appear when the model has a ``context_length``
and ``prompt_tokens`` / ``text_tokens`` (as :class:`~celeris.testing.tiny_llm.LocalChatModel` has).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from celeris.checks import check_int
from celeris.errors import CelerisError, ConfigError

__all__ = ["ChatModel", "OpenAICompatibleServer"]

logger = logging.getLogger(__name__)

_ROLES = ("system", "developer", "user", "assistant", "tool")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_MAX_BODY_BYTES = 16 * 1024 * 1024
# HTTP status of a model's refusal, by the ``code`` attribute of the ConfigError it raised: a
# well-formed request the model cannot process (a schema it cannot compile) is unprocessable.
_STATUS_BY_CODE = {"invalid_json_schema": HTTPStatus.UNPROCESSABLE_ENTITY}


class ChatModel(Protocol):
    """What the server needs of a model (see :class:`celeris.testing.tiny_llm.LocalChatModel`).

    ``complete`` returns an object with ``text``, ``prompt_tokens``, ``completion_tokens`` and
    ``finish_reason``, calls ``on_text`` with each new piece of text when it is given, and raises
    :class:`~celeris.errors.ConfigError` on a request it cannot serve.
    """

    @property
    def name(self) -> str: ...

    def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float = 0.7,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Any: ...


class _RequestError(Exception):
    """A request the server answers with an OpenAI error body instead of a completion."""

    def __init__(
        self,
        status: HTTPStatus,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


def _bad(message: str, param: str | None = None, code: str | None = None) -> _RequestError:
    return _RequestError(HTTPStatus.BAD_REQUEST, message, param=param, code=code)


class OpenAICompatibleServer:
    """Serve one chat model over the OpenAI chat-completions HTTP API.

    The socket is bound at construction, so :attr:`base_url` is known at once; use the server
    as a context manager (or :meth:`start` / :meth:`close`) to serve from a background thread,
    or :meth:`serve_forever` to serve from the calling thread (a CLI).

    Parameters
    ----------
    model
        The model to serve; requests must name it by ``model.name``.
    host
        Interface to bind; the default serves only this machine.
    port
        TCP port; 0 picks a free one.
    api_key
        When given, every ``/v1`` request must carry ``Authorization: Bearer <api_key>`` (401
        otherwise); ``/health`` stays open.
    record_requests
        Keep every received request body in :attr:`requests` (for tests; unbounded).

    Attributes
    ----------
    requests : list
        Bodies of the chat-completion requests received, in arrival order, as parsed JSON (or
        the raw text when the body was not JSON), when ``record_requests`` is true.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        record_requests: bool = True,
    ) -> None:
        port = check_int("port", port, minimum=0, maximum=65535)
        if api_key is not None and not api_key:
            raise ConfigError("api_key must be a non-empty string or None")
        self.model = model
        self.api_key = api_key
        self.record_requests = record_requests
        self.requests: list[Any] = []
        self._created = int(time.time())
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """The bound interface address."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound TCP port (the one picked when constructed with ``port=0``)."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server, ``http://HOST:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> OpenAICompatibleServer:
        """Serve from a background daemon thread and return the server."""
        if self._thread is not None:
            raise CelerisError("the server is already running")
        # A short poll interval makes close() return within 0.1 s instead of the default 0.5 s.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"openai-server:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve from the calling thread until interrupted (Ctrl-C), then release the socket."""
        try:
            self._httpd.serve_forever(poll_interval=poll_interval)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a foreground server is meant to stop
        finally:
            self._httpd.server_close()

    def __enter__(self) -> OpenAICompatibleServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------
    # Request handling, called from the handler threads

    def _models_body(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_card()]}

    def _model_body(self, model_id: str) -> dict[str, Any]:
        if model_id != self.model.name:
            raise self._unknown_model(model_id)
        return self._model_card()

    def _model_card(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": self.model.name,
            "object": "model",
            "created": self._created,
            "owned_by": "celeris",
        }
        window = getattr(self.model, "context_length", None)
        if isinstance(window, int):
            card["max_model_len"] = window  # vLLM's name for the context window
        return card

    def _tokenize_body(self, body: Any) -> dict[str, Any]:
        """Count tokens as the model does (vLLM's ``/tokenize``): a prompt or a chat."""
        model = self.model
        prompt_tokens = getattr(model, "prompt_tokens", None)
        text_tokens = getattr(model, "text_tokens", None)
        if prompt_tokens is None or text_tokens is None:
            raise _RequestError(
                HTTPStatus.NOT_FOUND, "This model cannot count tokens", code="unknown_url"
            )
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object")
        model_id = body.get("model")
        if model_id is not None and model_id != model.name:
            raise self._unknown_model(str(model_id))
        if "messages" in body:
            try:
                tokens = prompt_tokens(_parse_messages(body["messages"]))
            except ConfigError as exc:
                raise _bad(str(exc), "messages") from None
        elif isinstance(body.get("prompt"), str):
            tokens = text_tokens(body["prompt"])
        else:
            raise _bad("Give 'prompt' (a string) or 'messages' (a chat)", "prompt")
        return {
            "count": len(tokens),
            "max_model_len": getattr(model, "context_length", None),
            "tokens": list(tokens),
        }

    def _unknown_model(self, model_id: str) -> _RequestError:
        return _RequestError(
            HTTPStatus.NOT_FOUND,
            f"The model {model_id!r} does not exist; this server serves {self.model.name!r}",
            param="model",
            code="model_not_found",
        )

    def _check_auth(self, header: str | None) -> None:
        if self.api_key is None:
            return
        token = header[len("Bearer ") :] if header and header.startswith("Bearer ") else ""
        # Constant-time comparison: the key must not leak through response timing.
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise _RequestError(
                HTTPStatus.UNAUTHORIZED,
                "Incorrect API key provided",
                code="invalid_api_key",
            )

    def _parse_chat_request(self, body: Any) -> dict[str, Any]:
        """Validate a chat-completions body and return the model's keyword arguments."""
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise _bad("'model' is required and must be a string", "model")
        if model_id != self.model.name:
            raise self._unknown_model(model_id)
        n = body.get("n")
        if n not in (None, 1):
            raise _bad("Only n=1 is supported", "n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise _bad("'max_tokens' must be a positive integer", "max_tokens")
        temperature = body.get("temperature", 1.0)
        if temperature is None:
            temperature = 1.0
        if not _is_number(temperature) or not 0 <= temperature <= 2:
            raise _bad("'temperature' must be a number between 0 and 2", "temperature")
        seed = body.get("seed")
        if seed is not None and not _is_int(seed):
            raise _bad("'seed' must be an integer", "seed")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise _bad("'stream' must be a boolean", "stream")
        stream_options = body.get("stream_options")
        if stream_options is not None and not isinstance(stream_options, dict):
            raise _bad("'stream_options' must be an object", "stream_options")
        return {
            "messages": _parse_messages(body.get("messages")),
            "response_format": _parse_response_format(body.get("response_format")),
            "max_tokens": max_tokens,
            "temperature": float(temperature),
            "seed": seed,
        }

    def _run_model(
        self, request: dict[str, Any], on_text: Callable[[str], None] | None = None
    ) -> Any:
        try:
            return self.model.complete(**request, on_text=on_text)
        except ConfigError as exc:
            code = getattr(exc, "code", None)
            status = _STATUS_BY_CODE.get(code or "", HTTPStatus.BAD_REQUEST)
            raise _RequestError(status, str(exc), code=code) from exc

    def _completion_body(self, completion: Any) -> dict[str, Any]:
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": _usage(completion),
        }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def _usage(completion: Any) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


def _parse_messages(messages: Any) -> list[dict[str, Any]]:
    if messages is None:
        raise _bad("'messages' is required", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    parsed = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object", where)
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(_ROLES)}; got {role!r}", where)
        parsed.append({"role": role, "content": _text_content(message.get("content"), where)})
    return parsed


def _text_content(content: Any, where: str) -> str:
    # OpenAI accepts a string or an array of typed parts; only text parts mean anything here.
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise _bad(f"{where}.content: only text parts are supported", where)
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content: a text part needs a string 'text'", where)
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"{where}.content must be a string or an array of text parts", where)


def _parse_response_format(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    param = "response_format"
    if not isinstance(response_format, dict):
        raise _bad("'response_format' must be an object", param)
    kind = response_format.get("type")
    if kind not in _RESPONSE_FORMATS:
        raise _bad(
            f"Invalid response_format type {kind!r}; "
            f"supported: {', '.join(map(repr, _RESPONSE_FORMATS))}",
            f"{param}.type",
        )
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise _bad(
                "response_format json_schema needs a 'schema' object", f"{param}.json_schema"
            )
    if kind == "json_object" and not isinstance(response_format.get("schema", {}), dict):
        raise _bad("response_format 'schema' must be an object", f"{param}.schema")
    return response_format


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads must not keep the process alive, nor block close() on a hung client.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: OpenAICompatibleServer) -> None:
        super().__init__(address, _Handler)
        self.app = app


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the SDK's connections alive between requests; every response therefore
    # carries a Content-Length, except the event stream, which closes its connection.
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections free their thread after this many seconds.
    timeout = 60
    server_version = "CelerisOpenAI/1.0"

    @property
    def app(self) -> OpenAICompatibleServer:
        return cast(_HTTPServer, self.server).app

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _dispatch(self, route: Callable[[str], None]) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path.startswith("/v1/"):
                self.app._check_auth(self.headers.get("Authorization"))
            route(path)
        except _RequestError as exc:
            self._send_json(exc.status, exc.body())
        except Exception:
            logger.exception("the chat model failed on %s", path)
            error = _RequestError(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "The model failed on this request; see the server log",
                kind="server_error",
            )
            self._send_json(error.status, error.body())

    def _get(self, path: str) -> None:
        if path == "/health":
            self._send_json(HTTPStatus.OK, {"status": "ok", "model": self.app.model.name})
        elif path == "/v1/models":
            self._send_json(HTTPStatus.OK, self.app._models_body())
        elif path.startswith("/v1/models/"):
            self._send_json(HTTPStatus.OK, self.app._model_body(path[len("/v1/models/") :]))
        else:
            raise self._not_found(path)

    def _post(self, path: str) -> None:
        if path == "/tokenize":
            self.app._check_auth(self.headers.get("Authorization"))
            body = self._read_body(record=False)  # token counts are not chat requests
            self._send_json(HTTPStatus.OK, self.app._tokenize_body(body))
            return
        if path != "/v1/chat/completions":
            raise self._not_found(path)
        body = self._read_body()
        request = self.app._parse_chat_request(body)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(request, include_usage)
        else:
            completion = self.app._run_model(request)
            self._send_json(HTTPStatus.OK, self.app._completion_body(completion))

    def _read_body(self, *, record: bool = True) -> Any:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise _bad("Invalid Content-Length header") from None
        if not 0 < length <= _MAX_BODY_BYTES:
            raise _bad(f"The request needs a JSON body of at most {_MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if record and self.app.record_requests:
                self.app.requests.append(raw.decode("utf-8", "replace"))
            raise _bad(f"The request body is not valid JSON: {exc}") from None
        if record and self.app.record_requests:
            self.app.requests.append(body)
        return body

    def _not_found(self, path: str) -> _RequestError:
        return _RequestError(
            HTTPStatus.NOT_FOUND, f"Unknown path {self.command} {path}", code="unknown_url"
        )

    def _stream(self, request: dict[str, Any], include_usage: bool) -> None:
        stream_id, created, model = _completion_id(), int(time.time()), self.app.model.name

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {
                "id": stream_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }

        started = False

        def start() -> None:
            # Headers go out with the first piece of text, so that a request the model rejects
            # before generating still gets a plain JSON error with its 4xx status.
            nonlocal started
            if started:
                return
            started = True
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self._send_event(chunk({"role": "assistant", "content": ""}, None))

        def on_text(piece: str) -> None:
            start()
            self._send_event(chunk({"content": piece}, None))

        try:
            completion = self.app._run_model(request, on_text=on_text)
        except (BrokenPipeError, ConnectionResetError):
            # The client hung up mid-stream: nobody is left to tell.
            logger.info("the client closed the stream of %s", stream_id)
            self.close_connection = True
            return
        except Exception as exc:
            if not started:
                raise  # nothing sent yet: answered as a plain JSON error
            # Mid-stream the status line is gone; OpenAI reports the failure as an error event,
            # which the SDK raises as an APIError.
            logger.exception("the chat model failed while streaming")
            message = exc.message if isinstance(exc, _RequestError) else "The model failed"
            self._send_event({"error": {"message": message, "type": "server_error"}})
            return
        start()
        self._send_event(chunk({}, completion.finish_reason))
        if include_usage:
            usage = chunk({}, None) | {"choices": [], "usage": _usage(completion)}
            self._send_event(usage)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _send_event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _send_json(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status >= HTTPStatus.BAD_REQUEST:
            # A refused request may leave its body unread on the socket, which would be parsed
            # as the next request: close the connection instead (the SDK reconnects).
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)
