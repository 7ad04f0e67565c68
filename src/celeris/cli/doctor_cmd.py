"""``celeris doctor``: the environment checks of :mod:`celeris.doctor` as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from celeris.checks import check_real
from celeris.cli._common import cli_errors, console, print_json
from celeris.cli.options import JsonOpt
from celeris.errors import ConfigError

if TYPE_CHECKING:
    from celeris.doctor import Report

DOCTOR_HELP = """Check that this machine can run Celeris, and say how to fix what cannot.

The hardware verification checklist (docs/doctor.md): Python and packages against the lock, numba's threading layer and kernel cache (warm or cold), CPU features, OMP_WAIT_POLICY, onnxruntime providers, the torch build, NVIDIA GPUs (memory, temperature, power, ECC), which device device="auto" picks and whether the CUDA kernel compiles, the model registry (every artifact's sha256), Redis and PostgreSQL from the CELERIS_SERVE_* settings, the serving port and the signal socket. `--llm` adds the LLM endpoint and its JSON-schema support.

Exit code 0 when no check fails (warnings do not count), 1 when one does, 2 on a bad option.

[bold]Examples[/]

  celeris doctor

  celeris doctor --quick --json

  celeris doctor --llm --expect-gpu --lock /app/constraints.txt
"""

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def register(app: typer.Typer) -> None:
    """Add ``celeris doctor`` to the top-level app."""

    @app.command("doctor", help=DOCTOR_HELP)
    @cli_errors
    def doctor_cmd(
        quick: Annotated[
            bool,
            typer.Option(
                "--quick",
                help="Only the fast local checks (no torch/onnxruntime, network, compiles or "
                "hashing).",
            ),
        ] = False,
        llm: Annotated[
            bool,
            typer.Option(
                "--llm", help="Also check the CELERIS_LLM_* endpoint and its JSON-schema support."
            ),
        ] = False,
        lock: Annotated[
            Path | None,
            typer.Option(
                help="Lock file to compare packages with (default ./constraints.txt, else the "
                "source tree's).",
                show_default=False,
            ),
        ] = None,
        port: Annotated[
            list[int] | None,
            typer.Option(
                "--port",
                min=1,
                max=65_535,
                help="Another TCP port that must be free (repeat), besides CELERIS_SERVE_PORT.",
                show_default=False,
            ),
        ] = None,
        expect_gpu: Annotated[
            bool,
            typer.Option("--expect-gpu", help="No usable NVIDIA GPU is a failure (GPU nodes)."),
        ] = False,
        timeout: Annotated[
            float, typer.Option(help="Seconds each network check waits to connect.")
        ] = 3.0,
        json_out: JsonOpt = False,
    ) -> None:
        from celeris.doctor import DoctorOptions, run_doctor

        if lock is not None and not lock.is_file():
            raise ConfigError(f"--lock {lock}: no such file")
        options = DoctorOptions(
            quick=quick,
            llm=llm,
            lock=lock,
            ports=tuple(port or ()),
            expect_gpu=expect_gpu,
            timeout_s=check_real("--timeout", timeout, minimum=0, open_low=True, maximum=600),
        )
        if json_out:
            report = run_doctor(options)
            print_json(report.to_json())
        else:
            with console.status("celeris doctor: checking..."):
                report = run_doctor(options)
            _print_table(report)
        if report.exit_code:
            raise typer.Exit(report.exit_code)


def _print_table(report: Report) -> None:
    table = Table(title="celeris doctor", title_justify="left", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding", ratio=3)
    table.add_column("fix", ratio=2)
    for c in report.checks:
        style = _STYLE[c.status.value]
        table.add_row(
            f"[{style}]{c.status.value}[/]",
            escape(c.title),
            escape(c.summary),
            escape(c.fix or ""),
        )
    console.print(table)
    counts = report.counts()
    verdict = "[bold red]FAILED[/]" if not report.ok else "[green]passed[/]"
    console.print(
        f"{verdict}: {len(report.checks)} checks, {counts['ok']} ok, {counts['warn']} warn, "
        f"{counts['fail']} fail, {counts['skip']} skip ({report.seconds:.1f} s)"
        + ("; --quick: the slower checks were not run" if report.quick else "")
    )
