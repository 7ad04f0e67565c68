"""What ``celeris serve`` reaches: the model registry, Redis, PostgreSQL, its port and the
signal feed's socket, all read from the ``CELERIS_SERVE_*`` settings it would use."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from celeris.doctor.base import Context, Finding, fail, ok, redact, skip, warn
from celeris.errors import CelerisError, ConfigError

_UNLOADED = "the CELERIS_SERVE_* settings do not load (see the config check)"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


# ------------------------------------------------------------------------------------ registry


def _database_file(root: Path, url: str | None) -> Path | None:
    """The SQLite file of a registry, or None for PostgreSQL."""
    if url is None:
        return root / "registry.db"
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).expanduser()
    return None


def check_registry(ctx: Context) -> Finding:
    """The model registry opens, every artifact hashes to its recorded sha256, and the models
    ``CELERIS_SERVE_MODELS`` names exist."""
    if ctx.serve is None:
        return skip(_UNLOADED)
    from celeris.serving.errors import ArtifactTampered, RegistryError
    from celeris.serving.registry import ModelRegistry

    root, url, models = ctx.serve.registry.expanduser(), ctx.serve.registry_url, ctx.serve.models
    where = redact(url) if url else str(root)
    details: dict[str, Any] = {"root": str(root), "url": redact(url) if url else None}
    db_file = _database_file(root, url)
    if db_file is not None and not db_file.is_file():
        if models:
            return fail(
                f"no registry at {db_file}, but CELERIS_SERVE_MODELS names {', '.join(models)}",
                "point CELERIS_SERVE_REGISTRY (or _REGISTRY_URL) at the registry that holds "
                "them, or register them: celeris models register NAME CHECKPOINT",
                **details,
            )
        return skip(f"no registry at {db_file} yet (celeris models register creates it)", **details)
    t0 = time.perf_counter()
    try:
        registry = ModelRegistry(root, url, busy_timeout_s=ctx.options.timeout_s)
        records = registry.list()
    except (RegistryError, ConfigError) as exc:
        return fail(
            f"the registry at {where} does not open: {exc}",
            "check CELERIS_SERVE_REGISTRY_URL (server up, credentials, database exists) and "
            "that CELERIS_SERVE_REGISTRY is readable",
            **details,
        )
    tampered: list[str] = []
    hashed = 0
    for record in records:
        try:
            registry.verify(record)
            hashed += sum(p.stat().st_size for p in record.path.rglob("*") if p.is_file())
        except ArtifactTampered as exc:
            tampered.append(f"{record.ref}: {exc}")
    unknown = []
    for ref in models:
        try:
            registry.get(ref)
        except CelerisError as exc:
            unknown.append(f"{ref}: {exc}")
    details.update(
        versions=len(records),
        verified=len(records) - len(tampered),
        bytes_hashed=hashed,
        seconds=round(time.perf_counter() - t0, 3),
        tampered=tampered,
        missing_models=unknown,
    )
    if tampered:
        return fail(
            f"{len(tampered)} of {len(records)} artifacts in {where} do not match their "
            f"sha256: {tampered[0]}",
            "re-register the version from its checkpoint (celeris models register), archive "
            "the tampered one, and find out who wrote into the artifacts directory",
            **details,
        )
    if unknown:
        return fail(
            f"CELERIS_SERVE_MODELS names what the registry lacks: {unknown[0]}",
            "register or promote the model, or correct CELERIS_SERVE_MODELS",
            **details,
        )
    if not records:
        return ok(f"{where}: opens; no model registered yet", **details)
    production = sum(1 for r in records if r.stage == "production")
    return ok(
        f"{where}: {len(records)} versions ({production} in production), every artifact's "
        f"sha256 verified ({hashed / 2**20:.1f} MiB)",
        **details,
    )


# ------------------------------------------------------------------------------------- redis


def check_redis(ctx: Context) -> Finding:
    """The shared cache tier (``CELERIS_SERVE_REDIS``): answers, accepts writes, evicts."""
    if ctx.serve is None:
        return skip(_UNLOADED)
    url = ctx.serve.redis
    if not url:
        return skip("no Redis configured (CELERIS_SERVE_REDIS): the in-process cache only")
    import redis

    shown = redact(url)
    timeout = ctx.options.timeout_s
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        return fail(
            f"CELERIS_SERVE_REDIS={shown} is not a Redis URL: {exc}",
            "use redis://[:PASSWORD@]HOST:PORT/DB (or rediss:// for TLS)",
        )
    try:
        t0 = time.perf_counter()
        client.ping()
        ping = time.perf_counter() - t0
        info = client.info()
        key = f"celeris:doctor:{os.getpid()}"
        client.set(key, b"1", px=10_000)
        round_trip = client.get(key) == b"1"
        client.delete(key)
    except redis.RedisError as exc:
        return fail(
            f"Redis at {shown} does not answer: {type(exc).__name__}: {exc}",
            f"start Redis or correct CELERIS_SERVE_REDIS (redis-cli -u {shown} ping must answer "
            "PONG); the server serves without it, from the in-process cache",
        )
    finally:
        client.close()
    policy = str(info.get("maxmemory_policy", "?"))
    maxmemory = int(info.get("maxmemory", 0) or 0)
    details = {
        "url": shown,
        "version": info.get("redis_version"),
        "ping_ms": _ms(ping),
        "maxmemory_bytes": maxmemory,
        "maxmemory_policy": policy,
        "write_read": round_trip,
    }
    summary = f"Redis {details['version']} at {shown}: PING {details['ping_ms']} ms"
    if not round_trip:
        return fail(
            summary + ", but a written key did not read back",
            "point CELERIS_SERVE_REDIS at a writable primary (not a replica)",
            **details,
        )
    if maxmemory and policy == "noeviction":
        return warn(
            summary + f"; maxmemory {maxmemory} with noeviction: writes fail once it is full",
            "set maxmemory-policy allkeys-lru (or volatile-ttl): cache entries carry TTLs",
            **details,
        )
    return ok(summary + f", write/read ok, eviction {policy}", **details)


# --------------------------------------------------------------------------------- postgresql


def check_postgres(ctx: Context) -> Finding:
    """PostgreSQL behind a ``postgresql://`` registry URL: connects, answers, its version."""
    if ctx.serve is None:
        return skip(_UNLOADED)
    url = ctx.serve.registry_url
    if not url or not url.startswith(("postgresql://", "postgres://")):
        return skip("no PostgreSQL configured (CELERIS_SERVE_REGISTRY_URL is SQLite or unset)")
    shown = redact(url)
    try:
        import psycopg
    except ImportError:
        return fail(
            f"CELERIS_SERVE_REGISTRY_URL={shown} needs psycopg 3, which is not installed",
            "pip install -c constraints.txt 'celeris[serve]' (psycopg[binary])",
        )
    try:
        t0 = time.perf_counter()
        with psycopg.connect(url, connect_timeout=max(1, round(ctx.options.timeout_s))) as conn:
            connect = time.perf_counter() - t0
            t1 = time.perf_counter()
            row = conn.execute("SHOW server_version").fetchone()
            query = time.perf_counter() - t1
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name IN "
                "('models', 'stage_changes')"
            ).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return fail(
            f"PostgreSQL at {shown} does not answer: {first}",
            "start PostgreSQL or correct CELERIS_SERVE_REGISTRY_URL (psql URL must connect: "
            "host, port, user, password, database)",
        )
    version = row[0] if row else "?"
    details = {
        "url": shown,
        "version": version,
        "connect_ms": _ms(connect),
        "query_ms": _ms(query),
        "registry_tables": int(tables[0]) if tables else 0,
    }
    return ok(
        f"PostgreSQL {version} at {shown}: connect {details['connect_ms']} ms, query "
        f"{details['query_ms']} ms, registry tables {details['registry_tables']}/2",
        **details,
    )


# -------------------------------------------------------------------------------------- ports


def _celeris_answers(host: str, port: int, timeout: float) -> bool:
    """Whether something on ``host:port`` answers ``GET /healthz`` like ``celeris serve``."""
    target = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    target = f"[{target}]" if ":" in target else target
    try:
        with urllib.request.urlopen(f"http://{target}:{port}/healthz", timeout=timeout) as r:
            return bool(json.load(r).get("status") == "ok")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False


def port_state(host: str, port: int, timeout: float) -> tuple[str, str | None]:
    """Return ``("free" | "celeris" | "busy" | "denied" | "no-address", detail)`` for a TCP
    port: whether ``celeris serve`` could listen on it now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
            return "free", None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return ("celeris" if _celeris_answers(host, port, timeout) else "busy"), None
            if exc.errno == errno.EACCES:
                return "denied", str(exc)
            if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                return "no-address", str(exc)
            raise


def check_ports(ctx: Context) -> Finding:
    """The serving port (``CELERIS_SERVE_HOST``/``_PORT``) and any ``--port`` given are free, or
    held by a Celeris server that answers ``/healthz``."""
    if ctx.serve is None:
        return skip(_UNLOADED)
    host = ctx.serve.host
    wanted = [p for p in (ctx.serve.port, *ctx.options.ports) if p != 0]
    if not wanted:
        return skip("CELERIS_SERVE_PORT=0: the server takes any free port")
    states: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for port in dict.fromkeys(wanted):
        state, detail = port_state(host, port, min(ctx.options.timeout_s, 2.0))
        states[str(port)] = state
        if state == "busy":
            problems.append(
                (
                    f"{host}:{port} is in use by something that is not a Celeris server",
                    f"stop what listens there (ss -ltnp 'sport = :{port}') or choose another "
                    "port (CELERIS_SERVE_PORT / --port)",
                )
            )
        elif state == "denied":
            problems.append(
                (
                    f"{host}:{port} needs privileges: {detail}",
                    "use a port above 1023 (or grant CAP_NET_BIND_SERVICE)",
                )
            )
        elif state == "no-address":
            problems.append(
                (
                    f"{host} is not an address of this machine: {detail}",
                    "set CELERIS_SERVE_HOST to 127.0.0.1, 0.0.0.0 (all interfaces) or one of "
                    "this machine's addresses",
                )
            )
    summary = ", ".join(f"{host}:{p} {s}" for p, s in states.items())
    if problems:
        return fail(
            "; ".join(p for p, _ in problems), "; ".join(f for _, f in problems), ports=states
        )
    return ok(summary.replace(" celeris", " held by a Celeris server (/healthz ok)"), ports=states)


# ------------------------------------------------------------------------------------- socket


def check_socket(ctx: Context) -> Finding:
    """The signal feed's Unix socket path (``CELERIS_SERVE_SOCKET``): short enough, in a
    writable directory, and not taken by another publisher or a file."""
    if ctx.serve is None:
        return skip(_UNLOADED)
    path = ctx.serve.socket
    if path is None:
        return skip("no signal feed configured (CELERIS_SERVE_SOCKET)")
    from celeris.serving.feed.wire import _check_socket_path

    try:
        _check_socket_path(path)
    except ConfigError as exc:
        return fail(str(exc), "set CELERIS_SERVE_SOCKET to a shorter path (e.g. /run/celeris/"
                    "feed.sock)")  # fmt: skip
    details: dict[str, Any] = {"path": str(path), "bytes": len(os.fsencode(str(path)))}
    parent = path.parent
    if not parent.is_dir():
        return fail(
            f"the socket's directory {parent} does not exist",
            f"create it (mkdir -p {parent}) for the user that runs celeris serve",
            **details,
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        return fail(
            f"{parent} is not writable by this user: the feed cannot create {path.name}",
            f"make {parent} writable for this user, or choose a directory that is",
            **details,
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ok(f"{path} is free; {parent} is writable", **details)
    if not stat.S_ISSOCK(st.st_mode):
        return fail(
            f"{path} exists and is not a socket: the feed refuses to replace it",
            f"remove or move {path}, or choose another CELERIS_SERVE_SOCKET",
            **details,
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        details["listening"] = True
        return ok(f"{path}: a publisher is listening (a running server's feed)", **details)
    except (ConnectionRefusedError, FileNotFoundError):
        details["listening"] = False
        return ok(f"{path}: a stale socket file (the server replaces it at start)", **details)
    except OSError as exc:
        return fail(
            f"cannot probe {path}: {exc}",
            f"check the permissions of {path} and its directory",
            **details,
        )
    finally:
        probe.close()
