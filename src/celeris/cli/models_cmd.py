"""``celeris train``, ``celeris evaluate``, ``celeris forecast`` and ``celeris export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    console,
    date_range_options,
    err_console,
    load_bars,
    print_json,
)
from celeris.errors import ConfigError, DataError


def _features(spec: str | None) -> tuple[str, ...] | None:
    return tuple(f.strip() for f in spec.split(",") if f.strip()) if spec else None


def _table(frame: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    table.add_column("")
    for col in frame.columns:
        table.add_column(str(col), justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *(_cell(str(c), v) for c, v in row.items()))
    return table


def _cell(col: str, value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:
        return "-"
    if "accuracy" in col or col in ("mape", "skill"):
        return f"{v:.2%}"
    return f"{v:.4g}"


@cli_errors
@date_range_options
def train_cmd(
    model: Annotated[str, typer.Argument(help="nhits | cnn_lstm | reservoir")],
    data: Annotated[
        str,
        typer.Option("--data", "-d", help="Bars: sample:sp500, a CSV/Parquet path, store:..."),
    ] = "sample:sp500",
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")] = Path("models/run"),
    horizon: Annotated[int, typer.Option(help="Bars to forecast.")] = 24,
    input_size: Annotated[int, typer.Option(help="Bars of history per forecast.")] = 96,
    features: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated inputs, the target first (e.g. close or log_return,rsi_14,zscore_20)."
        ),
    ] = None,
    scaler: Annotated[
        str,
        typer.Option(
            help="auto | standard | robust | identity (global, fitted on training bars) | "
            "window-standard | window-robust (per window). auto: window-robust for prices, standard otherwise."
        ),
    ] = "auto",
    steps: Annotated[int, typer.Option(help="Maximum optimizer steps.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Windows per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW).")] = 1e-3,
    loss: Annotated[str, typer.Option(help="auto | mae | mse | huber | sharpe.")] = "auto",
    val: Annotated[float, typer.Option(help="Validation fraction (by time).")] = 0.1,
    test: Annotated[float, typer.Option(help="Held-out test fraction (by time, last).")] = 0.2,
    precision: Annotated[str, typer.Option(help="auto | fp32 | bf16 | fp16.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    export: Annotated[
        bool,
        typer.Option(
            "--export/--no-export",
            help="Write the ONNX fp32/int8 exports, checked against the model on the held-out "
            "windows (exports.json), that Predictor.load runs by default.",
        ),
    ] = True,
    span: Options = FILLED,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Train a forecaster on market data and judge it against naive baselines out of sample.

    Example: celeris train nhits --data sample:sp500 --horizon 5 --input-size 60 --steps 300
    --out models/spx_nhits
    """
    from celeris.models.pipeline import train_on_bars
    from celeris.models.predictor import choose_backend, export_summary

    bars = load_bars(data, span)
    trained = train_on_bars(
        model, bars, out, input_size=input_size, horizon=horizon, features=_features(features),
        scaler=scaler, val=val, test=test, source=data, max_steps=steps, batch_size=batch_size,
        lr=lr, loss=loss, precision=precision, seed=seed, progress=not json_out, export=export,
    )  # fmt: skip
    default = choose_backend(trained.exports)
    table = trained.report.table()
    if json_out:
        print_json(
            {
                "checkpoint": str(trained.directory),
                "meta": trained.meta,
                "exports": trained.exports,
                "default_backend": default.backend,
            }
        )
        return
    r = trained.result
    console.print(
        f"trained [bold]{model}[/] for {trained.meta['trained_steps']} steps in {r.seconds:.1f} s "
        f"({r.steps_per_second:.1f} steps/s, {r.precision}, best step {r.best_step}"
        f"{', stopped early' if r.stopped_early else ''})"
    )
    console.print(
        _table(table, f"held-out test windows ({trained.meta['test_windows']}) vs naive baselines")
    )
    skill = table.loc["model", "skill"] if "skill" in table.columns else float("nan")
    if skill == skill and skill <= 0:
        naive = "last value" if trained.meta["target_kind"] == "level" else "no-move forecast"
        console.print(f"[yellow]the model does not beat the naive {naive} on held-out data[/]")
    for line in export_summary(trained.exports):
        console.print(f"export {line}", highlight=False)
    console.print(f"checkpoint: {trained.directory} (Predictor.load default: {default.backend})")


@cli_errors
@date_range_options
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory from `celeris train`.")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Bars to evaluate on.")
    ] = "sample:sp500",
    last: Annotated[
        float, typer.Option(help="Fraction of the data's windows to evaluate (the latest).")
    ] = 0.2,
    include_train: Annotated[
        bool,
        typer.Option(
            "--include-train",
            help="Also score windows whose forecast origin is a bar the model was trained "
            "on (recognised by dates and prices; left out by default).",
        ),
    ] = False,
    span: Options = FILLED,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rolling-origin evaluation of a checkpoint on the latest windows of the data.

    Windows that start from a bar the model was trained on are left out (and counted), so
    the scores are out of sample whatever the data file is called.
    """
    from celeris.models.pipeline import evaluate_checkpoint_checked
    from celeris.models.signals import in_sample_note

    if not 0 < last <= 1:
        raise ConfigError(f"--last must be in (0, 1], got {last}")
    report, overlap = evaluate_checkpoint_checked(
        checkpoint,
        load_bars(data, span),
        last=last,
        include_train=include_train,
        flag="--include-train",
    )
    note = in_sample_note(overlap, include_train, "windows", "--include-train")
    if note is not None:
        (err_console if json_out else console).print(
            f"[yellow]{note}[/]", highlight=False, soft_wrap=True
        )
    table = report.table()
    if json_out:
        print_json({str(k): {c: _num(v) for c, v in row.items()} for k, row in table.iterrows()})
        return
    console.print(_table(table, f"{report.n_windows} windows of {data}"))


@cli_errors
@date_range_options
def forecast_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Bars whose latest window is forecast.")
    ] = "sample:sp500",
    backend: Annotated[
        str,
        typer.Option(help="auto | torch | onnx | onnx-int8 (auto: the fastest verified one)."),
    ] = "auto",
    span: Options = FILLED,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Forecast the next bars from the latest window of the data."""
    import pandas as pd

    from celeris.models.features import spec_of
    from celeris.models.pipeline import forecast_index
    from celeris.models.predictor import Predictor

    bars = load_bars(data, span)
    pred = Predictor.load(checkpoint, backend=backend)
    spec = spec_of(pred.meta)  # the features the model was trained on, computed the same way
    values = spec.inputs(bars)
    if len(values) < pred.input_size:
        raise DataError(
            f"{data} has {len(values)} usable bars, the model needs {pred.input_size} "
            f"(at least {spec.bars_needed(pred.input_size)} bars: the features' warm-up of "
            f"{spec.lookback} + input_size {pred.input_size})"
        )
    forecast = pred.predict(values.to_numpy()[-pred.input_size :][None])[0]
    last = values.index[-1]
    # The data's own calendar: business days after daily equity bars, not weekends.
    times = (
        [str(t) for t in forecast_index(bars.index[bars.index <= last], len(forecast))]
        if isinstance(bars.index, pd.DatetimeIndex) and len(bars) > 1
        else [f"t+{k + 1}" for k in range(len(forecast))]
    )
    target = spec.target
    if json_out:
        print_json(
            {
                "as_of": str(last),
                "target": target,
                "forecast": dict(zip(times, map(float, forecast), strict=True)),
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"{target} forecast as of {last} ({pred.backend})", header_style="bold")
    table.add_column("bar")
    table.add_column(target, justify="right")
    for t, v in zip(times, forecast, strict=True):
        table.add_row(t, f"{v:.6g}")
    console.print(table)


@cli_errors
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory.")],
    format: Annotated[str, typer.Option("--format", help="onnx | torchscript.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Also write dynamic-int8 ONNX.")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export a checkpoint, verify it against the eager model and time its predictions."""
    from celeris.models.checkpoint_file import read_exports
    from celeris.models.export import INT8_BUDGET, export_checkpoint
    from celeris.models.predictor import Predictor, choose_backend, export_summary

    result = export_checkpoint(checkpoint, format, int8=int8)
    record = read_exports(checkpoint)
    default = choose_backend(record)
    backend = {"onnx": "onnx", "onnx-int8": "onnx-int8"}.get(result.format)
    timing = {}
    if backend is not None:
        pred = Predictor.load(checkpoint, backend=backend, threads=1)
        timing = {
            "batch_1": pred.latency(1),
            "batch_1000": pred.latency(1000, repeats=20, warmup=3),
        }
    info = {
        "path": str(result.path),
        "format": result.format,
        "max_abs_diff": result.max_abs_diff,
        "relative_diff": result.rel_diff,
        "tolerance": result.tolerance,
        "latency_ms": timing,
        "int8_budget": INT8_BUDGET,
        "default_backend": default.backend,
        "default_reason": default.reason,
    }
    if json_out:
        print_json(info)
        return
    console.print(
        f"wrote {result.path} ({result.format}); vs eager: max |diff| {result.max_abs_diff:.3g} "
        f"= {result.rel_diff:.3%} of the output scale (tolerance {result.tolerance:.2%})"
    )
    for name, t in timing.items():
        console.print(
            f"predict {name.replace('_', ' ')}: p50 {t['p50_ms']:.3f} ms, p95 {t['p95_ms']:.3f} ms"
        )
    if record is not None:
        for line in export_summary(record):
            console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the model commands to the top-level app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("forecast")(forecast_cmd)
    app.command("export")(export_cmd)


def _num(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if f != f else f
