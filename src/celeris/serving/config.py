"""Settings of ``celeris serve``: ``CELERIS_SERVE_*`` variables, CLI options, or arguments.

Precedence, highest first: keyword arguments to :func:`load_serve_settings` (the CLI passes its
options here), environment variables, defaults. Every setting has a variable named after it,
``CELERIS_SERVE_<NAME>`` (``CELERIS_SERVE_PORT=9000``, ``CELERIS_SERVE_MODELS=a@production,b@3``,
``CELERIS_SERVE_MAX_WAIT_MS=1,2,5,20``), except the two tokens, read from
``CELERIS_ADMIN_TOKEN`` and ``CELERIS_PUBLISH_TOKEN`` (never command-line options: those show in
``ps``). Without an admin token the admin API is disabled (403), never open; without a publish
token ``POST /v1/forecast`` is open to whoever can reach the port, which is why binding beyond
loopback without one is warned about at start (:func:`exposure_warning`).

Tokens are stripped of surrounding whitespace (a secret file's trailing newline) and must then
be at least :data:`MIN_TOKEN_LENGTH` characters; :func:`load_serve_settings` refuses a shorter
one without echoing it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from celeris._settings import load_settings

if TYPE_CHECKING:  # pragma: no cover
    from celeris.serving.batcher import BatcherConfig

Backend = Literal["auto", "onnx", "torch", "onnx-int8"]

MIN_TOKEN_LENGTH = 12
"""Shortest admin or publish token accepted: rules out words, names and PINs (generate one:
``python -c "import secrets; print(secrets.token_urlsafe(32))"``)."""

SYMBOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,63}")
"""What a signal-feed symbol may be: 1-64 characters, letters and digits then ``. _ : / @ + -``
(``BTC-USD``, ``BTC/USDT:USDT``, ``ES.c.0``); no spaces, quotes, control characters."""
SYMBOL_RULE = "1-64 characters: a letter or digit, then letters, digits and . _ : / @ + -"


def default_registry() -> Path:
    """Return the default registry directory, ``$CELERIS_HOME/registry`` (``~/.celeris``)."""
    home = os.environ.get("CELERIS_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".celeris") / "registry"


def _split(value: Any) -> Any:
    # "a,b" from an environment variable or a CLI option; lists pass through.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class ServeSettings(BaseSettings):
    """Everything a serving process needs: models, registry, network, batching, caches, limits.

    Batching: ``max_wait_ms`` holds the longest a request of each priority (critical, high,
    normal, low) may wait for batch-mates; an idle batcher does not wait at all. Limits:
    ``max_body_bytes`` (``max_json_bytes`` for JSON, whose parse holds the GIL) and
    ``max_items`` bound one request (413 beyond), ``max_timeout_ms``
    bounds the deadline a client may ask for, ``max_abs_value`` the magnitude of an input value
    (422 beyond), ``max_symbols`` the symbol ids the signal feed ever hands out (422 beyond).
    Connections: ``max_header_bytes`` (431 beyond), ``header_timeout_s`` and ``body_timeout_s``
    (a client slower than that is answered 408 or disconnected), ``keepalive_s``,
    ``max_connections`` (503 beyond). Shadow validation (before a promotion or an A/B
    test) runs the candidate on ``shadow_rows`` recent inputs of the model and requires finite
    outputs, a p95 latency under ``shadow_max_latency_ms`` and, when ``shadow_max_rel_diff`` is
    set, agreement with the serving version.
    """

    model_config = SettingsConfigDict(
        env_prefix="CELERIS_SERVE_", frozen=True, extra="forbid", populate_by_name=True
    )

    models: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="models to serve, NAME@production / NAME@VERSION / NAME"
    )
    registry: Path = Field(default_factory=default_registry, description="registry directory")
    registry_url: str | None = Field(
        None, description="registry database URL (sqlite:///..., postgresql://...)"
    )
    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port)")
    redis: str | None = Field(None, description="Redis URL of the shared cache tier")
    redis_read_budget_ms: float = Field(
        5.0,
        gt=0,
        le=10_000,
        description="longest wait for a Redis look-up; slower ones are misses, three in a row "
        "bypass Redis like an outage",
    )
    socket: Path | None = Field(None, description="Unix socket path of the signal feed")
    feed_max_subscribers: int = Field(
        64, ge=1, le=65_536, description="most signal-feed subscribers at once (more are refused)"
    )
    symbols: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="symbols in signal-id order (id = position); others get the next ids"
    )
    max_symbols: int = Field(
        10_000,
        ge=1,
        le=2**32,
        description="most symbol ids ever handed out, configured ones included (422 past it)",
    )
    backend: Backend = Field(
        "auto",
        description="auto (the fastest backend the artifact's exports.json verified) | onnx | "
        "torch | onnx-int8",
    )
    threads: int = Field(1, ge=1, le=256, description="intra-op threads per loaded model")
    max_batch_size: int = Field(64, ge=1, le=65_536, description="rows per batch")
    max_wait_ms: Annotated[tuple[float, float, float, float], NoDecode] = Field(
        (1.0, 2.0, 5.0, 20.0), description="longest wait for batch-mates: critical,high,normal,low"
    )
    max_queue: int = Field(2048, ge=1, description="queued rows per model before 429")
    ageing_ms: float = Field(10.0, gt=0, description="waiting this long lifts a request a level")
    default_timeout_ms: float = Field(1000.0, gt=0, description="deadline when none is given")
    max_timeout_ms: float = Field(60_000.0, gt=0, description="largest deadline accepted")
    cache_items: int = Field(100_000, ge=0, description="in-process cache entries (0: off)")
    cache_ttl_s: float = Field(60.0, gt=0, description="cache entry lifetime, both tiers")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="largest request body")
    max_json_bytes: int = Field(
        4 << 20, ge=1024, description="largest JSON request body (msgpack: max_body_bytes)"
    )
    max_items: int = Field(4096, ge=1, description="most histories in one request")
    max_abs_value: float = Field(
        1e15, gt=0, description="largest magnitude of an input value (422 beyond)"
    )
    max_header_bytes: int = Field(
        32 << 10, ge=1024, description="largest request line plus headers (431 beyond)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="longest a client may take to send a request's line and headers"
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="longest a client may take to send a body once its headers came"
    )
    keepalive_s: int = Field(
        5, ge=1, description="seconds before an idle keep-alive connection closes"
    )
    max_connections: int = Field(
        1024, ge=1, description="open connections (or running requests) before 503"
    )
    shadow_rows: int = Field(64, ge=1, le=65_536, description="validation rows for shadowing")
    shadow_max_latency_ms: float = Field(50.0, gt=0, description="p95 latency a candidate needs")
    shadow_max_rel_diff: float | None = Field(
        None, gt=0, description="largest relative difference from the serving version"
    )
    registry_poll_s: float = Field(
        5.0, ge=0, description="seconds between registry checks for a new production (0: off)"
    )
    signal_threshold: float = Field(
        0.0, ge=0, description="expected move below which the published signal is flat"
    )
    outcomes: bool = Field(
        True, description="record every served prediction for outcomes, A/B and drift"
    )
    outcomes_path: Path | None = Field(
        None, description="outcome store (SQLite) file; default outcomes.sqlite in the registry"
    )
    outcomes_max_rows: int = Field(
        1_000_000, ge=1, description="predictions kept in the outcome store (oldest pruned)"
    )
    drift_error_factor: float = Field(
        1.5, gt=0, description="warn when realised error exceeds validation error this many times"
    )
    drift_window: int = Field(
        500, ge=1, description="newest joined outcomes in the rolling realised error"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    admin_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("CELERIS_ADMIN_TOKEN", "admin_token"),
        description="bearer token of the admin API (unset: admin API disabled)",
    )
    publish_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("CELERIS_PUBLISH_TOKEN", "publish_token"),
        description="bearer token POST /v1/forecast requires when set (it publishes signals)",
    )

    @field_validator("models", "symbols", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("max_wait_ms", mode="before")
    @classmethod
    def _split_waits(cls, value: Any) -> Any:
        parts = _split(value)
        if isinstance(parts, tuple) and len(parts) != 4:
            raise ValueError(
                f"give 4 waits in ms (critical,high,normal,low), got {len(parts)}: {value!r}"
            )
        return parts

    @field_validator("models")
    @classmethod
    def _check_refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ref in value:
            name, _, version = ref.partition("@")
            if not name or (version and not (version.isdigit() or version.isidentifier())):
                raise ValueError(f"model reference {ref!r} is not NAME, NAME@VERSION or NAME@STAGE")
        return value

    @field_validator("max_wait_ms")
    @classmethod
    def _check_waits(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < w <= 10_000 for w in value):
            raise ValueError(f"waits must be in (0, 10000] ms, got {value}")
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in value:
            if not SYMBOL_RE.fullmatch(symbol):
                raise ValueError(f"symbol {symbol!r} is not {SYMBOL_RULE}")
        return value

    @field_validator("admin_token", "publish_token", mode="before")
    @classmethod
    def _strip_token(cls, value: Any) -> Any:
        # Surrounding whitespace (a secret file's newline) could never match a client's token,
        # which is stripped too; an empty variable means "not configured", not "no password".
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    def check_startup(self) -> None:
        """Refuse a token shorter than :data:`MIN_TOKEN_LENGTH` (without echoing it: pydantic's
        own error would print the value) and more configured symbols than ``max_symbols``.

        Raises
        ------
        ConfigError
            Naming the variable to fix.
        """
        from celeris.errors import ConfigError

        for variable, token in (
            ("CELERIS_ADMIN_TOKEN", self.admin_token),
            ("CELERIS_PUBLISH_TOKEN", self.publish_token),
        ):
            if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
                raise ConfigError(
                    f"{variable} is {len(token.get_secret_value())} characters long; use at "
                    f"least {MIN_TOKEN_LENGTH} (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
        if self.symbols and len(set(self.symbols)) > self.max_symbols:
            raise ConfigError(
                f"{len(set(self.symbols))} configured symbols exceed CELERIS_SERVE_MAX_SYMBOLS="
                f"{self.max_symbols}; raise it"
            )

    @property
    def publish_protected(self) -> bool:
        """Whether ``POST /v1/forecast`` requires the publish token."""
        return self.publish_token is not None

    @property
    def admin_enabled(self) -> bool:
        """Whether admin endpoints are enabled (a token is configured)."""
        return self.admin_token is not None

    def batcher_config(self) -> BatcherConfig:
        """Return the batching engine's configuration built from these settings."""
        from celeris.serving.batcher import BatcherConfig

        return BatcherConfig(
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_ms,
            max_queue=self.max_queue,
            ageing_ms=self.ageing_ms,
            default_timeout_ms=self.default_timeout_ms,
        )


def load_serve_settings(**overrides: Any) -> ServeSettings:
    """Return serving settings from arguments and ``CELERIS_SERVE_*`` variables.

    Arguments that are ``None`` are ignored, so CLI options left unset fall through to the
    environment and the defaults.

    Raises
    ------
    ConfigError
        An unknown setting or a value out of range, naming the environment variable.
    """
    settings = load_settings(ServeSettings, overrides, label="serving", env_var=_env_var)
    settings.check_startup()
    return settings


def serve_registry(registry: str | os.PathLike[str] | None = None) -> Path:
    """Return the registry directory ``celeris serve`` would use: ``registry`` when given, else
    :class:`ServeSettings`'s (``CELERIS_SERVE_REGISTRY``, else :func:`default_registry`).

    Read through :class:`ServeSettings` itself, so every command that shares the serving
    registry (``celeris serve-ray``) resolves it by the one rule.

    Raises
    ------
    ConfigError
        A ``CELERIS_SERVE_*`` variable has a bad value (named), as ``celeris serve`` would say.
    """
    if registry is not None:
        return Path(registry)
    return load_settings(ServeSettings, {}, label="serving", env_var=_env_var).registry


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is a loopback interface (``127.0.0.0/8``, ``::1``, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable from outside


def exposure_warning(settings: ServeSettings) -> str | None:
    """Return a warning when the server listens beyond loopback without a publish token."""
    if is_loopback(settings.host) or settings.publish_protected:
        return None
    return (
        f"listening on {settings.host}, beyond loopback, without CELERIS_PUBLISH_TOKEN: anyone "
        "who can reach this port can post forecasts that are published on the signal feed. "
        "Set CELERIS_PUBLISH_TOKEN (clients send Authorization: Bearer TOKEN) or listen on "
        "127.0.0.1"
    )


def _env_var(field: str) -> str:
    if field in ("admin_token", "CELERIS_ADMIN_TOKEN"):
        return "CELERIS_ADMIN_TOKEN"
    if field in ("publish_token", "CELERIS_PUBLISH_TOKEN"):
        return "CELERIS_PUBLISH_TOKEN"
    return f"CELERIS_SERVE_{field.upper()}"
