"""``celeris serve`` (the inference server) and ``celeris models`` (the model registry)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    OptionSpec,
    cli_errors,
    command_group,
    console,
    err_console,
    fail,
    print_json,
    shared_options,
)
from celeris.errors import CelerisError, ConfigError

RegistryOpt = Annotated[
    Path | None,
    typer.Option(
        "--registry",
        help="Registry directory (default $CELERIS_SERVE_REGISTRY or $CELERIS_HOME/registry).",
        show_default=False,
    ),
]
RegistryUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        help="Registry database URL: sqlite:///PATH or postgresql://... (default: "
        "DIR/registry.db).",
        show_default=False,
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="A running server (http://127.0.0.1:8000): act through its admin API (needs "
        "CELERIS_ADMIN_TOKEN) so the change takes effect there at once.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NameArg = Annotated[str, typer.Argument(help="Model name.")]
AllowIncompatibleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-incompatible",
        help="Make a version production although its input shape, features, horizon or target "
        "differ from the current production version's: breaks every client of NAME@production "
        "until it sends the new inputs.",
    ),
]


def _setting(name: str, kind: Any, text: str, *flags: str) -> tuple[str, Any, None]:
    """The ``celeris serve`` option of setting ``name``; left unset, ``CELERIS_SERVE_*`` or the
    setting's default holds."""
    return name, Annotated[kind | None, typer.Option(*flags, help=text)], None


# Registry location: `celeris serve` and the `celeris models` commands, for `load_serve_settings`.
_REGISTRY: OptionSpec = (("registry", RegistryOpt, None), ("registry_url", RegistryUrlOpt, None))
registry_options = shared_options(_REGISTRY, into="where")
# `celeris serve` options, each a keyword of `load_serve_settings`.
_SETTINGS: OptionSpec = (
    *_REGISTRY,
    _setting("host", str, "Interface to listen on \\[default: 127.0.0.1]."),
    _setting("port", int, "TCP port, 0 for any free one \\[default: 8000]."),
    _setting("redis", str, "Redis URL of a shared cache tier, e.g. redis://127.0.0.1:6379/0."),
    _setting("socket", Path, "Unix socket path of the binary signal feed (docs/wire-format.md)."),
    _setting(
        "backend",
        str,
        "auto (the fastest backend the artifact verified) | onnx | torch | onnx-int8 "
        "\\[default: auto].",
    ),
    _setting("threads", int, "Intra-op threads per model \\[default: 1]."),
    _setting("max_batch_size", int, "Most rows per model call \\[default: 64]."),
    _setting(
        "max_wait_ms",
        str,
        "Longest wait for batch-mates per priority critical,high,normal,low \\[default: 1,2,5,20].",
    ),
    _setting("max_queue", int, "Queued rows per model before 429 \\[default: 2048]."),
    _setting("cache_items", int, "In-process cache entries, 0 = off \\[default: 100000]."),
    _setting(
        "registry_poll_s",
        float,
        "Seconds between registry checks for a new production version, 0 = off \\[default: 5].",
        "--poll",
    ),
    _setting("symbols", str, "Symbols in signal-id order, e.g. BTC-USD,ETH-USD (ids 0, 1...)."),
    _setting(
        "max_symbols",
        int,
        "Most symbol ids ever handed out, configured ones included; new symbols past it get "
        "422 (ids are never reused) \\[default: 10000].",
    ),
    _setting(
        "max_connections",
        int,
        "Open connections (or running requests) before 503 \\[default: 1024].",
    ),
    _setting("log_level", str, "critical | error | warning | info | debug."),
)

SERVE_HELP = """Serve models over HTTP: batched forecasts in milliseconds, hot swaps, A/B tests.

Loads each --model from the registry (sha256-verified), warms it, and answers on
http://HOST:PORT. One process; requests from all clients are batched together per model.

[bold]Examples[/]

  celeris models register btc ./runs/nhits --stage production

  celeris serve --model btc@production

  celeris serve --model btc@production --model eth@3 --port 9000 --redis redis://127.0.0.1:6379/0 --socket /tmp/celeris.sock

  curl -s localhost:8000/v1/models/btc/predict -H 'Content-Type: application/json' -d '{"inputs": [[101.2, 101.5, ...]]}'

  curl -s localhost:8000/v1/forecast -H 'Content-Type: application/json' -d '{"model": "btc", "histories": {"BTC-USD": [...], "ETH-USD": [...]}}'

Routes: POST /v1/models/NAME/predict, POST /v1/forecast, GET /v1/models, /healthz, /readyz,
/metrics; admin routes under /v1/admin need Authorization: Bearer $CELERIS_ADMIN_TOKEN (without
the variable they are disabled). Bodies need Content-Type application/json or application/msgpack
(415 otherwise). With CELERIS_PUBLISH_TOKEN set, POST /v1/forecast (it publishes signals) needs
Authorization: Bearer $CELERIS_PUBLISH_TOKEN; listening beyond loopback without it is warned
about. Tokens come from the environment only (at least 12 characters). NAME@production follows
the registry: a version promoted with `celeris models promote` is hot-swapped in within --poll
seconds. Every option also reads CELERIS_SERVE_<OPTION> (e.g. CELERIS_SERVE_PORT); the other
limits (header size, read timeouts, body size, input magnitude) are CELERIS_SERVE_* variables
only: see docs/serving.md.
"""

MODELS_HELP = """The model registry: versions, stages (staging / production / archived), sha256.

Works on the registry directory directly (no server needed); promote and rollback with --url
act through a running server instead, which hot-swaps at once.

[bold]Examples[/]

  celeris models register btc ./runs/nhits --metrics '{"mae": 0.81}'

  celeris models list

  celeris models promote btc 2          # shadow validation first; refused if it fails

  celeris models rollback btc

  celeris models ab btc --version 3 --split 0.1 --url http://127.0.0.1:8000

  celeris models ab btc --stop --url http://127.0.0.1:8000
"""


def _registry(where: Options) -> Any:
    from celeris.serving.config import load_serve_settings
    from celeris.serving.registry import ModelRegistry

    settings = load_serve_settings(**where)
    return ModelRegistry(settings.registry, settings.registry_url)


def _admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a server's admin API; return the decoded JSON answer (errors end the command)."""
    import urllib.error
    import urllib.request

    token = os.environ.get("CELERIS_ADMIN_TOKEN", "").strip()
    if not token:
        raise ConfigError("set CELERIS_ADMIN_TOKEN to the server's admin token to use --url")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {url!r}")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read())
        except ValueError:
            doc = {}
        if doc.get("report"):
            _print_shadow(doc["report"])
        fail(f"server answered {exc.code}: {doc.get('detail', exc.reason)}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"cannot reach {url}: {getattr(exc, 'reason', exc)}")


def _print_shadow(report: dict[str, Any]) -> None:
    for check in report.get("checks", []):
        mark = "[green]ok[/]" if check["passed"] else "[bold red]FAIL[/]"
        err_console.print(f"  {mark} {check['name']}: {check['detail']}", highlight=False)


def _print_swap(url: str, out: dict[str, Any], json_out: bool, *, shadow: bool = False) -> None:
    """Print a server's answer to a promote or rollback: what it serves now, and before."""
    if json_out:
        print_json(out)
        return
    note = f"; shadow validation passed on {out['shadow']['validated_on']}" if shadow else ""
    console.print(
        f"{url} now serves [bold]{out['serving']['ref']}[/] (was {out['previous']['ref']}){note}",
        highlight=False,
    )


def _records_table(records: list[Any], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for col, justify in (
        ("name", "left"),
        ("version", "right"),
        ("stage", "left"),
        ("sha256", "left"),
        ("created (UTC)", "left"),
        ("metrics", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"production": "bold green", "staging": "yellow", "archived": "dim"}
    for r in records:
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items()
        )
        table.add_row(
            r.name,
            str(r.version),
            f"[{style.get(r.stage, '')}]{r.stage}[/]",
            r.sha256[:12],
            r.created_at.replace("T", " ")[:19],
            metrics,
        )
    return table


# ---- celeris serve --------------------------------------------------------------------------
@cli_errors
@shared_options(_SETTINGS, into="settings_opts")
def serve_cmd(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="NAME@production (follows the registry), NAME@VERSION or NAME@staging; "
            "repeat for several models.",
            show_default=False,
        ),
    ] = None,
    settings_opts: Options = FILLED,
    access_log: Annotated[bool, typer.Option(help="Log every request (costs latency).")] = False,
) -> None:
    import logging

    from celeris.serving.app import bind
    from celeris.serving.config import exposure_warning, load_serve_settings

    settings = load_serve_settings(models=model or None, **settings_opts)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    exposed = exposure_warning(settings)
    if exposed is not None:  # build() logs it too; this line is for the person at the console
        err_console.print(f"[bold red]WARNING[/]: {exposed}", highlight=False)
    sock = bind(settings.host, settings.port)
    bound = sock.getsockname()[1]
    shown_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"http://{shown_host}:{bound}"
    try:  # a model that fails to load must not leak the listening socket
        failure = _run_server(settings, sock, url, access_log)
    finally:
        sock.close()
    if failure is not None:
        fail(
            str(failure)
            if isinstance(failure, CelerisError)
            else f"{type(failure).__name__}: {failure}"
        )


def _run_server(settings: Any, sock: Any, url: str, access_log: bool) -> BaseException | None:
    """Serve on ``sock`` until stopped; return what made the server give up, if anything."""
    from celeris.serving.app import build, uvicorn_server

    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    def on_failure(exc: BaseException) -> None:
        failure.append(exc)
        holder["uvicorn"].should_exit = True

    on_ready = functools.partial(_print_ready, settings=settings, url=url)
    server = build(settings, on_failure=on_failure, on_ready=on_ready, freeze_heap=True)
    uv = uvicorn_server(server, access_log=access_log)
    holder["uvicorn"] = uv
    console.print(
        f"celeris serve: loading {', '.join(settings.models)} from {settings.registry} "
        f"({settings.backend}); listening on {url}",
        highlight=False,
    )
    # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a normal stop.
    with contextlib.suppress(KeyboardInterrupt):
        uv.run(sockets=[sock])
    return failure[0] if failure else None


def _print_ready(manager: Any, *, settings: Any, url: str) -> None:
    """The lines printed once every model answers: what is served where, and how it is guarded."""
    served = ", ".join(f"{name}@{rec.version}" for name, rec in sorted(manager.serving.items()))
    console.print(
        f"[bold green]ready[/] in {manager.ready_after_s:.2f} s (process start to "
        f"/readyz): serving {served} at [bold]{url}[/]",
        highlight=False,
    )
    notes = [
        f"admin API {'enabled' if settings.admin_enabled else 'disabled (set CELERIS_ADMIN_TOKEN)'}",
        "POST /v1/forecast "
        + ("needs the publish token" if settings.publish_protected else "open"),
        f"metrics at {url}/metrics",
        f"{manager.frozen_objects:,} start-up objects frozen out of the GC",
    ]
    if settings.socket is not None:
        notes.append(f"signal feed at {settings.socket}")
    console.print("; ".join(notes), highlight=False)


# ---- celeris models list | register | promote | rollback | ab -------------------------------
@cli_errors
@registry_options
def list_cmd(
    name: Annotated[str | None, typer.Argument(help="Only this model.")] = None,
    where: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """List registered versions with stage, sha256, creation time and metrics."""
    reg = _registry(where)
    records = reg.list(name)
    if json_out:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print(f"the registry at {reg.root} is empty; add a model with "
                      "`celeris models register NAME CHECKPOINT`", highlight=False)  # fmt: skip
        return
    console.print(_records_table(records, f"models in {reg.root}"))


@cli_errors
@registry_options
def register_cmd(
    name: Annotated[str, typer.Argument(help="Model name (letters, digits, _ . -).")],
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory from `celeris train`.")],
    metrics: Annotated[
        str | None,
        typer.Option(help="Metrics as JSON, e.g. '{\"mae\": 0.81}', or @FILE.json."),
    ] = None,
    stage: Annotated[
        str, typer.Option(help="staging | production (production archives the current one).")
    ] = "staging",
    export: Annotated[
        str,
        typer.Option(
            help="ONNX exports stored with the artifact so serving needs none: onnx, "
            "onnx-int8, both (onnx,onnx-int8) or none."
        ),
    ] = "onnx",
    allow_incompatible: AllowIncompatibleOpt = False,
    where: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Copy a checkpoint into the registry as the next version (hashed, with ONNX exports)."""
    parsed = _parse_metrics(metrics)
    exports = () if export.strip() in ("", "none") else tuple(
        e.strip() for e in export.split(",") if e.strip()
    )  # fmt: skip
    reg = _registry(where)
    t0 = time.perf_counter()
    record = reg.register(
        name,
        checkpoint,
        metrics=parsed,
        stage=stage,
        exports=exports,
        allow_incompatible=allow_incompatible,
    )
    if json_out:
        print_json(record.to_dict())
        return
    console.print(
        f"registered [bold]{record.ref}[/] ({record.stage}) sha256 {record.sha256[:12]} in "
        f"{time.perf_counter() - t0:.2f} s",
        highlight=False,
    )
    if record.stage != "production":
        console.print(f"next: celeris models promote {name} {record.version}", highlight=False)


def _parse_metrics(metrics: str | None) -> Any:
    """The ``--metrics`` JSON, given inline or as ``@FILE.json``; None when not given."""
    if metrics is None:
        return None
    text = metrics
    if metrics.startswith("@"):
        from celeris.data.sources import check_regular_file

        text = check_regular_file(metrics[1:], "a JSON file").read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--metrics is not valid JSON: {exc}") from None


@cli_errors
@registry_options
def promote_cmd(
    name: NameArg,
    version: Annotated[
        int | None, typer.Argument(help="Version (default: the newest staging one).")
    ] = None,
    skip_validation: Annotated[
        bool, typer.Option(help="Promote without shadow validation (not recommended).")
    ] = False,
    validation: Annotated[
        Path | None,
        typer.Option(help="Histories [n, L, C] as .npy for validation (default: synthetic)."),
    ] = None,
    max_latency_ms: Annotated[
        float, typer.Option(help="p95 latency the candidate must meet on the batch.")
    ] = 50.0,
    max_rel_diff: Annotated[
        float | None,
        typer.Option(help="Largest relative difference from the production version."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="Backend to validate with: auto (the one celeris serve runs: the fastest "
            "the artifact verified) | onnx | torch | onnx-int8."
        ),
    ] = "auto",
    allow_incompatible: AllowIncompatibleOpt = False,
    url: UrlOpt = None,
    where: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Shadow-validate a version, then make it production (the old one is archived).

    A version whose inputs or outputs differ from the production version's is refused
    (its clients would break) unless --allow-incompatible.
    """
    if url is not None and allow_incompatible:
        raise ConfigError(
            "--allow-incompatible works on the registry, not through --url: a server "
            "keeps serving inputs of the shape its clients send"
        )
    if url is not None:
        body = {} if version is None else {"version": version}
        out = _admin(url, "POST", f"/v1/admin/models/{name}/promote", body)
        _print_swap(url, out, json_out, shadow=True)
        return
    reg = _registry(where)
    record = reg.get(f"{name}@{version}" if version is not None else f"{name}@staging")
    if not allow_incompatible:
        # before the slow validation; promote() checks again under the writer lock
        reg.check_compatible(record)
    report = None
    if not skip_validation:
        report = _validate_locally(reg, record, validation, backend, max_latency_ms, max_rel_diff)
    promoted = reg.promote(name, record.version, allow_incompatible=allow_incompatible)
    if json_out:
        print_json({"record": promoted.to_dict(), "shadow": report.to_dict() if report else None})
        return
    console.print(
        f"[bold]{promoted.ref}[/] is production"
        + ("" if report else " (shadow validation skipped)")
        + "; servers following "
        f"{name}@production swap it in at their next registry check",
        highlight=False,
    )


@cli_errors
@registry_options
def rollback_cmd(
    name: NameArg,
    allow_incompatible: AllowIncompatibleOpt = False,
    url: UrlOpt = None,
    where: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Return production to the version that was production before the current one."""
    if url is not None and allow_incompatible:
        raise ConfigError("--allow-incompatible works on the registry, not through --url")
    if url is not None:
        out = _admin(url, "POST", f"/v1/admin/models/{name}/rollback")
        _print_swap(url, out, json_out)
        return
    reg = _registry(where)
    record = reg.rollback(name, allow_incompatible=allow_incompatible)
    if json_out:
        print_json(record.to_dict())
        return
    console.print(f"[bold]{record.ref}[/] is production again", highlight=False)


@cli_errors
def ab_cmd(
    name: NameArg,
    url: Annotated[
        str,
        typer.Option(
            "--url",
            help="The server running the test (A/B routing lives in a server); needs "
            "CELERIS_ADMIN_TOKEN.",
        ),
    ],
    version: Annotated[int | None, typer.Option(help="Challenger version: starts a test.")] = None,
    split: Annotated[float, typer.Option(help="Share of request keys sent to it.")] = 0.1,
    salt: Annotated[str, typer.Option(help="Salt of the key hash (new test, new salt).")] = "",
    stop: Annotated[bool, typer.Option("--stop", help="Stop the test and evaluate it.")] = False,
    metric: Annotated[
        str | None,
        typer.Option(
            help="What --stop compares: error (realised error, the server's default) | pnl "
            "(paper P&L of the signals) | latency."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Start (--version), inspect (no option) or stop (--stop) an A/B test on a server.

    Requests are routed by a hash of their "key", so one key always sees the same arm.
    Stopping reports a Welch t-test and Hedges' g on the versions' realised outcomes (posted to
    /v1/outcomes), and says when the data is too thin.
    """
    if stop and version is not None:
        raise ConfigError("give --version to start a test or --stop to end one, not both")
    if version is not None:
        out = _admin(
            url,
            "POST",
            f"/v1/admin/models/{name}/ab",
            {"version": version, "split": split, "salt": salt},
        )
    elif stop:
        query = "" if metric is None else f"?metric={metric}"
        out = _admin(url, "DELETE", f"/v1/admin/models/{name}/ab{query}")
    else:
        out = _admin(url, "GET", f"/v1/admin/models/{name}/ab")
    if json_out:
        print_json(out)
        return
    _print_ab(name, out, stopped=stop)


def _print_ab(name: str, out: dict[str, Any], *, stopped: bool) -> None:
    """A server's answer about an A/B test: the arms, their figures, and the verdict if any."""
    ab = out["ab"]
    console.print(
        f"A/B test of {name}: champion v{ab['champion']} vs challenger v{ab['challenger']} "
        f"({ab['split']:.0%} of keys)" + (" [stopped]" if stopped else ""),
        highlight=False,
    )
    if out.get("arms"):
        from rich.table import Table

        from celeris.formatting import format_number  # numpy: not at import (celeris --help)

        table = Table(header_style="bold")
        for col in ("arm", "requests", "errors", "p50 ms", "p95 ms", "value mean"):
            table.add_column(col, justify="left" if col == "arm" else "right")
        for arm, s in out["arms"].items():
            table.add_row(
                arm,
                str(s["requests"]),
                str(s["errors"]),
                format_number(s["latency_p50_ms"], "general", missing="-"),
                format_number(s["latency_p95_ms"], "general", missing="-"),
                format_number(s["value_mean"], "general", missing="-"),
            )
        console.print(table)
    realised = out.get("realised") or {}
    if not stopped:
        for metric, report in realised.items():
            console.print(f"realised {metric}: {report['verdict']}", highlight=False)
    if out.get("report"):
        console.print(out["report"]["verdict"], highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``celeris serve`` and the ``celeris models`` group to the top-level app."""
    app.command("serve", help=SERVE_HELP)(serve_cmd)
    models_app = command_group(app, "models", MODELS_HELP)
    models_app.command("list")(list_cmd)
    models_app.command("register")(register_cmd)
    models_app.command("promote")(promote_cmd)
    models_app.command("rollback")(rollback_cmd)
    models_app.command("ab")(ab_cmd)


def _validate_locally(
    reg: Any,
    record: Any,
    validation: Path | None,
    backend: str,
    max_latency_ms: float,
    max_rel_diff: float | None,
) -> Any:
    """Shadow-validate ``record`` on this machine; end the command when it fails."""
    import numpy as np

    from celeris.serving.manager import synthetic_histories
    from celeris.serving.registry import ModelNotFound
    from celeris.serving.rollout import shadow_validate

    _, candidate = reg.load(record.ref, backend=backend, threads=1)
    if validation is not None:
        from celeris.data.sources import check_regular_file

        batch = np.load(check_regular_file(validation, "a .npy file"), allow_pickle=False)
        source = str(validation)
    else:
        batch = synthetic_histories(candidate, 64)
        source = "64 synthetic histories"
    serving = None
    if max_rel_diff is not None:
        try:
            _, serving = reg.load(f"{record.name}@production", backend=backend, threads=1)
        except ModelNotFound:
            serving = None  # the first production version has nothing to agree with
    report = shadow_validate(
        candidate, batch, serving=serving, max_latency_ms=max_latency_ms, max_rel_diff=max_rel_diff
    )
    if not report.passed:
        _print_shadow(report.to_dict())
        fail(
            f"{record.ref} failed shadow validation on {source} ({', '.join(report.failed)}); "
            "not promoted"
        )
    return report
