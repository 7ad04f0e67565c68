"""``celeris bench latency|load|stress|compare``: bounded load tests of a loopback server."""

from __future__ import annotations

import json
import sys
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
    shared_options,
)
from celeris.errors import ConfigError

BENCH_HELP = """Load-test a server on this machine: latency percentiles, throughput, errors, SLA.

Targets must be loopback (127.0.0.0/8, ::1, localhost). Every run is bounded by --requests and --duration. Bodies are random-walk histories for a served model (--model; its shape is read from GET /v1/models) or a file (--body-file); with neither, plain GETs. Exit code 0 when the SLA holds, 1 when it does not, 2 on bad input.

[bold]Examples[/]

  celeris serve --model btc@production &

  celeris bench latency --url http://127.0.0.1:8000 --model btc

  celeris bench load --url http://127.0.0.1:8000 --model btc --concurrency 32 --duration 10 --server-pid $(pgrep -f 'celeris serve')

  celeris bench load --url http://127.0.0.1:8000 --model btc --rate 500 --duration 10

  celeris bench stress --url http://127.0.0.1:8000 --model btc --sla-p99 50

  celeris bench compare --url http://127.0.0.1:8000 --url http://127.0.0.1:8001 --model btc --concurrency 32

  celeris bench load --url http://127.0.0.1:8000/v1/models/btc/predict --body-file req.json --json --png latency.png

Open loop (--rate R): requests fall due at a fixed R per second whatever the server does, and a request sent late (every connection busy) is timed from when it was due, so a stalled server's queueing shows in the latency (a closed loop stops sending while the server stalls and hides it: coordinated omission). The report says how many sends fell behind schedule; requests due but never sent by the end count as "unsent" errors.

SLA defaults: p50 <= 50 ms, p95 <= 80 ms, p99 <= 100 ms, >= 200 req/s, <= 1% errors (0 turns a target off).

With --model every request is unique by default (a request counter is written into the last values of each history), so the server's response cache never answers and the numbers measure the model; --distinct N cycles through N fixed bodies instead, which measures the cache. Every result shows the server's cache-hit ratio over the measured requests, read from its /metrics before and after ("off": the server's cache is off; "n/a": no Celeris /metrics there).
"""

UrlOpt = Annotated[
    str,
    typer.Option(
        "--url",
        help="Server (http://127.0.0.1:8000) or full URL (.../v1/models/btc/predict); loopback "
        "only.",
        show_default=False,
    ),
]
RequestsOpt = Annotated[int, typer.Option("--requests", "-n", help="Measured requests at most.")]
DurationOpt = Annotated[float, typer.Option("--duration", "-d", help="Seconds of sending at most.")]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", "-c", help="Connections, one request in flight each.")
]
BodyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--body-file",
        help="Send this file as the body (.msgpack: application/msgpack, else JSON).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="Served model: POST /v1/models/NAME/predict.", show_default=False
    ),
]
InputSizeOpt = Annotated[
    int | None,
    typer.Option(help="Bars per history (default: asked from GET /v1/models).", show_default=False),
]
FeaturesOpt = Annotated[
    int | None,
    typer.Option(help="Features per bar (default: asked from GET /v1/models).", show_default=False),
]
RowsOpt = Annotated[int, typer.Option(help="Histories per request (assets in one call).")]
DistinctOpt = Annotated[
    int | None,
    typer.Option(
        help="Cycle through N fixed bodies (a server's cache then answers all but the first N: "
        "measures the cache). Default: every request's body unique (measures the model).",
        show_default=False,
    ),
]
FormatOpt = Annotated[
    str, typer.Option("--format", help="Body format: json | msgpack (binary float32 array).")
]
PriorityOpt = Annotated[
    str | None,
    typer.Option(help="Request priority: critical | high | normal | low.", show_default=False),
]
WarmupOpt = Annotated[
    int | None,
    typer.Option(
        help="Unmeasured requests first (default: one per connection).", show_default=False
    ),
]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for one answer.")]
PidOpt = Annotated[
    int | None,
    typer.Option(
        "--server-pid",
        help="Server process id: report requests per server CPU-second (its whole process tree).",
        show_default=False,
    ),
]
P50Opt = Annotated[float, typer.Option("--sla-p50", help="SLA: p50 latency at most (ms).")]
P95Opt = Annotated[float, typer.Option("--sla-p95", help="SLA: p95 latency at most (ms).")]
P99Opt = Annotated[float, typer.Option("--sla-p99", help="SLA: p99 latency at most (ms).")]
RpsOpt = Annotated[float, typer.Option("--sla-rps", help="SLA: successful requests/s at least.")]
ErrOpt = Annotated[float, typer.Option("--sla-errors", help="SLA: error rate at most (0.01 = 1%).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON report instead of tables.")]
PngOpt = Annotated[
    Path | None,
    typer.Option("--png", help="Write a latency histogram + CDF plot here.", show_default=False),
]
PriceOpt = Annotated[
    float | None,
    typer.Option(
        "--price-per-hour",
        help="Price of one CPU core-hour (an instance's price / its vCPUs): report the cost per "
        "million predictions from the server's CPU seconds (needs --server-pid; each request "
        "counts --rows predictions). Default $CELERIS_PRICE_PER_HOUR.",
        show_default=False,
    ),
]
LatenciesOpt = Annotated[
    bool, typer.Option("--latencies", help="Include every latency sample in --json output.")
]

# Options shared by the bench commands: declared once, added to each command's signature by
# `shared_options`, and handed to the command as one dict per group. What to send: the keywords
# of `_target`.
_BODY: OptionSpec = (
    ("body_file", BodyFileOpt, None),
    ("model", ModelOpt, None),
    ("input_size", InputSizeOpt, None),
    ("n_features", FeaturesOpt, None),
    ("rows", RowsOpt, 1),
    ("distinct", DistinctOpt, None),
    ("fmt", FormatOpt, "json"),
    ("priority", PriorityOpt, None),
)
# How the run is judged and reported: read by `_sla` and `_emit`.
_REPORT: OptionSpec = (
    ("sla_p50", P50Opt, 50.0),
    ("sla_p95", P95Opt, 80.0),
    ("sla_p99", P99Opt, 100.0),
    ("sla_rps", RpsOpt, 200.0),
    ("sla_errors", ErrOpt, 0.01),
    ("json_out", JsonOpt, False),
    ("png", PngOpt, None),
    ("latencies", LatenciesOpt, False),
    ("price_per_hour", PriceOpt, None),
)
body_options = shared_options(_BODY, into="body")
# `compare` takes --model twice (one per target), so it declares its own.
body_options_but_model = shared_options([o for o in _BODY if o[0] != "model"], into="body")
report_options = shared_options(_REPORT, into="report")


def _sla(report: Options) -> Any:
    """The SLA of the ``--sla-*`` options (0 turns a target off)."""
    from celeris.bench import SLA

    def off(v: float) -> float | None:
        if v < 0:
            raise ConfigError(f"SLA targets must be >= 0 (0 turns one off), got {v:g}")
        return None if v == 0 else v

    p50, p95, p99, rps = (off(report[f"sla_{k}"]) for k in ("p50", "p95", "p99", "rps"))
    errors = report["sla_errors"]
    return SLA(p50, p95, p99, rps, errors if errors < 1 else 1.0)


def _target(
    url: str,
    *,
    body_file: Path | None,
    model: str | None,
    input_size: int | None,
    n_features: int | None,
    rows: int,
    distinct: int | None,
    fmt: str,
    priority: str | None,
    label: str = "",
    seed: int | None = None,
) -> Any:
    """Build the request target of the options (loopback check included).

    Every target reads the server's cache counters from ``/metrics`` of its host and port.
    """
    import urllib.parse

    from celeris.bench import Target, check_loopback, model_shape, predict_target

    check_loopback(url)
    parts = urllib.parse.urlsplit(url)
    metrics_url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))
    if body_file is not None:
        if model is not None:
            raise ConfigError("give --body-file or --model, not both")
        if distinct is not None:
            raise ConfigError("--distinct makes bodies for --model; --body-file sends one body")
        try:
            body = body_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read --body-file {body_file}: {exc.strerror}") from None
        if not body:
            raise ConfigError(f"--body-file {body_file} is empty")
        is_msgpack = body_file.suffix.lower() in (".msgpack", ".mpk", ".msgp")
        ctype = "application/msgpack" if is_msgpack else "application/json"
        return Target(url, (body,), ctype, label, metrics_url=metrics_url)
    if model is None:
        return Target(url, (), label=label, metrics_url=metrics_url)
    if (input_size is None) != (n_features is None):
        raise ConfigError(
            "give both --input-size and --n-features, or neither (asked from the server)"
        )
    if input_size is None or n_features is None:
        input_size, n_features = model_shape(url, model)
    if parts.path in ("", "/"):
        url = urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, f"/v1/models/{model}/predict", "", "")
        )
    return predict_target(
        url,
        input_size,
        n_features,
        rows=rows,
        distinct=distinct,
        fmt=fmt,
        priority=priority,
        seed=seed,
        label=label or model,
        metrics_url=metrics_url,
    )


def _costs(result: Any, report: Options, rows: int) -> dict[str, Any]:
    """The cost per million predictions of each run of ``result`` that measured its server's
    CPU, by run label (empty without a price)."""
    from celeris.bench import RunResult, StressResult
    from celeris.bench.cost import prediction_cost, price_per_hour

    price = price_per_hour(report["price_per_hour"])
    if price is None:
        return {}
    if isinstance(result, RunResult):
        runs = {result.label or "run": result}
    elif isinstance(result, StressResult):
        runs = {f"{r.label or 'run'} c={r.concurrency}": r for r, _ in result.steps}
    else:
        runs = {"a": result.a, "b": result.b}
    out = {key: prediction_cost(price, r.server_cpu_s, r.ok, rows) for key, r in runs.items()}
    if report["price_per_hour"] is not None and all(cost is None for cost in out.values()):
        raise ConfigError("--price-per-hour prices the server's CPU seconds: give --server-pid")
    return out


def _emit(result: Any, sla: Any, report: Options, rows: int = 1) -> None:
    """Write the JSON report or the tables, and the PNG (as the report options ask)."""
    from celeris.bench import (
        CompareResult,
        RunResult,
        StressResult,
        plot_latency,
        render_compare,
        render_stress,
        render_table,
        report_dict,
    )

    costs = _costs(result, report, rows)
    if report["json_out"]:
        doc = report_dict(result, sla=sla, latencies=report["latencies"])
        if costs:
            doc["cost"] = {k: None if c is None else c.to_dict() for k, c in costs.items()}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    elif isinstance(result, RunResult):
        console.print(render_table([result], sla=sla, title=f"{result.mode}: {result.url}"))
        verdict = sla.check(result)
        if verdict.passed:
            console.print("[green]SLA met[/]", highlight=False)
        else:
            console.print(f"[bold red]SLA missed:[/] {'; '.join(verdict.reasons)}", highlight=False)
    elif isinstance(result, StressResult):
        console.print(render_stress(result))
    elif isinstance(result, CompareResult):
        console.print(render_compare(result, sla=sla))
        console.print(
            "ratios are a / b: above 1 means a is higher (better for req/s and req/server "
            "CPU-s, worse for latencies)",
            highlight=False,
        )
    if costs and not report["json_out"]:
        for key, cost in costs.items():
            text = "n/a (no --server-pid for it)" if cost is None else cost.text()
            console.print(f"cost {key}: {text}", highlight=False, markup=False)
    if report["png"] is not None:
        if isinstance(result, RunResult):
            runs = [result]
        elif isinstance(result, StressResult):
            runs = [r for r, _ in result.steps]
        else:
            runs = [result.a, result.b]
        path = plot_latency(runs, report["png"])
        err_console.print(f"wrote {path}", highlight=False)


def _run(run: Any, url: str, body: Options, report: Options, **limits: Any) -> None:
    """Run one load test (``bench.latency`` or ``bench.load``), report it, exit 1 on a
    missed SLA."""
    sla = _sla(report)
    result = run(_target(url, **body), **limits)
    _emit(result, sla, report, body["rows"])
    _exit_for(sla.check(result).passed)


def _exit_for(passed: bool) -> None:
    if not passed:
        raise typer.Exit(1)


@cli_errors
@body_options
@report_options
def latency_cmd(
    url: UrlOpt,
    requests: RequestsOpt = 1000,
    duration: DurationOpt = 10.0,
    body: Options = FILLED,
    warmup: WarmupOpt = 20,
    timeout: TimeoutOpt = 10.0,
    server_pid: PidOpt = None,
    report: Options = FILLED,
) -> None:
    """One request at a time on one connection: what a single client waits.

    Example: celeris bench latency --url http://127.0.0.1:8000 --model btc --requests 2000
    """
    from celeris import bench

    _run(
        bench.latency, url, body, report, max_requests=requests, duration_s=duration,
        warmup_requests=warmup, timeout_s=timeout, server_pid=server_pid,
    )  # fmt: skip


@cli_errors
@body_options
@report_options
def load_cmd(
    url: UrlOpt,
    concurrency: ConcurrencyOpt = 32,
    requests: RequestsOpt = 100_000,
    duration: DurationOpt = 10.0,
    body: Options = FILLED,
    warmup: WarmupOpt = None,
    timeout: TimeoutOpt = 10.0,
    server_pid: PidOpt = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Open loop: requests per second on a fixed schedule (--concurrency is then "
            "the most in flight); latency counts from each request's due time. Default: "
            "closed loop.",
            show_default=False,
        ),
    ] = None,
    report: Options = FILLED,
) -> None:
    """A fixed number of connections, each sending again as soon as it is answered; or,
    with --rate, a fixed arrival rate (open loop, free of coordinated omission).

    Example: celeris bench load --url http://127.0.0.1:8000 --model btc -c 32 -d 10
    """
    from celeris import bench

    _run(
        bench.load, url, body, report, concurrency=concurrency, max_requests=requests,
        duration_s=duration, warmup_requests=warmup, timeout_s=timeout, server_pid=server_pid,
        rate=rate,
    )  # fmt: skip


@cli_errors
@body_options
@report_options
def stress_cmd(
    url: UrlOpt,
    steps: Annotated[
        str, typer.Option(help="Concurrency steps, increasing, comma-separated.")
    ] = "1,2,4,8,16,32,64,128,256",
    requests: Annotated[
        int, typer.Option("--requests", "-n", help="Measured requests per step at most.")
    ] = 100_000,
    duration: Annotated[
        float, typer.Option("--duration", "-d", help="Seconds per step at most.")
    ] = 5.0,
    body: Options = FILLED,
    timeout: TimeoutOpt = 10.0,
    server_pid: PidOpt = None,
    report: Options = FILLED,
) -> None:
    """Raise the concurrency step by step until the SLA breaks; report the last good step.

    Exit code 1 when no step met the SLA.

    Example: celeris bench stress --url http://127.0.0.1:8000 --model btc --steps 1,8,32,128
    """
    from celeris import bench

    try:
        parsed = tuple(int(s) for s in steps.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--steps must be integers like 1,2,4,8, got {steps!r}") from None
    sla = _sla(report)
    target = _target(url, **body)
    result = bench.stress(
        target,
        steps=parsed,
        sla=sla,
        max_requests=requests,
        duration_s=duration,
        timeout_s=timeout,
        server_pid=server_pid,
        on_step=None if report["json_out"] else _print_step,
    )
    _emit(result, sla, report, body["rows"])
    _exit_for(result.last_passing is not None)


def _print_step(result: Any, verdict: Any) -> None:
    """One line per finished stress step (to stderr, so tables and JSON stay clean)."""
    mark = "[green]pass[/]" if verdict.passed else "[bold red]FAIL[/]"
    p = result.percentiles_ms()
    cache = "-" if result.cache is None else result.cache.text()
    err_console.print(
        f"  concurrency {result.concurrency:>4}: {result.throughput:,.0f} req/s, p99 "
        f"{p['p99']:.2f} ms, {result.failed} errors, cache hits {cache} - {mark}",
        highlight=False,
    )


@cli_errors
@body_options_but_model
@report_options
def compare_cmd(
    url: Annotated[
        list[str],
        typer.Option(
            "--url",
            help="Two servers (give --url twice), or one server with --model twice; loopback only.",
            show_default=False,
        ),
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Model for both servers, or two models on one server.",
            show_default=False,
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="Names of a and b in the report.", show_default=False),
    ] = None,
    server_pid: Annotated[
        list[int] | None,
        typer.Option(
            "--server-pid",
            help="Process id of a's server, then b's: requests per server CPU-second.",
            show_default=False,
        ),
    ] = None,
    concurrency: ConcurrencyOpt = 32,
    requests: RequestsOpt = 100_000,
    duration: DurationOpt = 10.0,
    body: Options = FILLED,
    warmup: WarmupOpt = None,
    timeout: TimeoutOpt = 10.0,
    report: Options = FILLED,
) -> None:
    """The same load against a and b, one after the other; ratios a / b.

    Two model versions: serve each (e.g. `celeris serve --model btc@3 --port 8001` and
    `--model btc@4 --port 8002`) and give both URLs. Exit code 1 when either misses the SLA.

    Example: celeris bench compare --url http://127.0.0.1:8001 --url http://127.0.0.1:8002 --model btc
    """
    from celeris import bench

    pairs = _compare_pairs(url, list(model or []))
    labels = list(label or [])
    if labels and len(labels) != 2:
        raise ConfigError(f"give --label twice (a, then b), got {len(labels)}")
    pid_pair = _compare_pids(list(server_pid or []), one_server=len(url) == 1)
    sla = _sla(report)
    targets = [
        _target(u, model=m, label=labels[i] if labels else (u if len(url) == 2 else ""), **body)
        for i, (u, m) in enumerate(pairs)
    ]
    config = bench.LoadConfig(concurrency, requests, duration, warmup, timeout)
    result = bench.compare(targets[0], targets[1], config, server_pids=pid_pair)
    _emit(result, sla, report, body["rows"])
    _exit_for(sla.check(result.a).passed and sla.check(result.b).passed)


def _compare_pairs(urls: list[str], models: list[str]) -> list[tuple[str, str | None]]:
    """``(url, model)`` of a and b: two servers (one model or none), or one server, two models."""
    if len(urls) == 2 and len(models) <= 1:
        return [(u, models[0] if models else None) for u in urls]
    if len(urls) == 1 and len(models) == 2:
        return [(urls[0], m) for m in models]
    raise ConfigError(
        "compare needs two targets: --url twice (with at most one --model), or one "
        f"--url and --model twice; got {len(urls)} URL(s) and {len(models)} model(s)"
    )


def _compare_pids(pids: list[int], *, one_server: bool) -> tuple[int | None, int | None]:
    """The server process ids of a and b; one id with one server is both's."""
    if len(pids) not in (0, 1, 2):
        raise ConfigError(f"give --server-pid at most twice (a, then b), got {len(pids)}")
    return (
        pids[0] if pids else None,
        pids[1] if len(pids) == 2 else (pids[0] if len(pids) == 1 and one_server else None),
    )


def register(app: typer.Typer) -> None:
    """Add the ``celeris bench`` group to the top-level app."""
    bench_app = command_group(app, "bench", BENCH_HELP)
    bench_app.command("latency")(latency_cmd)
    bench_app.command("load")(load_cmd)
    bench_app.command("stress")(stress_cmd)
    bench_app.command("compare")(compare_cmd)
