"""``celeris serve-ray``: a registry model on a local Ray Serve, until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import cli_errors

SERVE_RAY_HELP = """Serve a registry model on Ray Serve: the same HTTP predict API as `celeris serve`.

`--deployment batched` puts the predictor behind Ray Serve's own batcher (the baseline of benchmarks/bench_serving.py); `--deployment engine` runs the Celeris engine (priorities, deadlines, 429 back-pressure, caches) in each of `--replicas` replicas. Starts a local Ray on 127.0.0.1 (no dashboard, usage statistics off) unless Ray is already initialised. Needs `pip install "ray\\[serve]"`.

[bold]Example[/]

  celeris serve-ray --model btc@production --deployment engine --replicas 2 --port 8001
"""


def registry_dir(registry: Path | None) -> str:
    """The registry directory: ``registry``, else ``celeris serve``'s
    (:func:`celeris.serving.config.serve_registry`: ``$CELERIS_SERVE_REGISTRY``, else
    ``$CELERIS_HOME/registry``)."""
    from celeris.serving.config import serve_registry

    return str(serve_registry(registry))


def register(app: typer.Typer) -> None:
    """Add ``celeris serve-ray`` to the top-level app."""

    @app.command("serve-ray", help=SERVE_RAY_HELP)
    @cli_errors
    def serve_ray_cmd(
        model: Annotated[
            str,
            typer.Option("--model", help="NAME@production, NAME@VERSION...", show_default=False),
        ],
        registry: Annotated[
            Path | None,
            typer.Option(
                help="Registry directory (default $CELERIS_SERVE_REGISTRY or "
                "$CELERIS_HOME/registry, as for celeris serve).",
                show_default=False,
            ),
        ] = None,
        deployment: Annotated[str, typer.Option(help="batched | engine.")] = "batched",
        host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="HTTP port of Ray Serve's proxy.")] = 8000,
        replicas: Annotated[int, typer.Option(help="Replicas of the deployment.")] = 1,
        backend: Annotated[
            str,
            typer.Option(
                help="Predictor backend: auto (the fastest the artifact verified, as celeris "
                "serve) | onnx | torch | onnx-int8."
            ),
        ] = "auto",
        threads: Annotated[int, typer.Option(help="Model threads per replica.")] = 1,
        num_cpus: Annotated[
            int | None,
            typer.Option(help="CPUs of the local Ray (default: all).", show_default=False),
        ] = None,
    ) -> None:
        """Serve a registry model on Ray Serve until Ctrl-C or SIGTERM."""
        serve_until_stopped(
            registry_dir(registry),
            model,
            deployment=deployment,
            host=host,
            port=port,
            num_replicas=replicas,
            backend=backend,
            threads=threads,
            num_cpus=num_cpus,
        )


def serve_until_stopped(registry: str, model: str, **options: Any) -> None:
    """Deploy (see :func:`celeris.serving.ray_serve.deploy`), say where, and wait for SIGINT or
    SIGTERM; Ray Serve and the local Ray are stopped on the way out."""
    import signal
    import threading

    from celeris.serving import ray_serve

    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        app = ray_serve.deploy(registry, model, **options)
        # one unwrapped, flushed line: scripts (benchmarks/bench_serving.py) wait for "ready"
        typer.echo(
            f"ready in {app.ready_s:.2f} s: {options.get('deployment', 'batched')} deployment "
            f"of {model} at {app.predict_url()}"
        )
        for sig in (signal.SIGINT, signal.SIGTERM):  # ray.init installs handlers of its own
            signal.signal(sig, on_signal)
        stop.wait()
    finally:
        ray_serve.shutdown()
