"""The ``model:DIR`` strategy of ``celeris backtest`` and ``celeris walk-forward``.

``backtest_cmd`` hands model strategies here; the work is :mod:`celeris.research`'s.
"""

from __future__ import annotations

from typing import Any

from celeris.cli._common import Options, console, err_console, print_json
from celeris.errors import ConfigError, did_you_mean


def checkpoint_of(strategy: str) -> str:
    """The checkpoint directory of a ``model:DIR`` strategy."""
    directory = strategy.split(":", 1)[1]
    if not directory:
        raise ConfigError("--strategy model: needs a checkpoint directory, e.g. model:models/spx")
    return directory


def model_portfolio(
    bars: Any,
    strategy: str,
    *,
    step: int,
    threshold: float,
    include_train: bool,
    device: str,
    opts: dict[str, Any],
    quiet: bool,
) -> Any:
    """Backtest a ``model:DIR`` strategy on ``bars``, saying which bars were left out and why
    (on stderr with ``--json``, so that stdout stays JSON)."""
    from celeris.research import backtest_model

    result = backtest_model(
        bars, checkpoint_of(strategy), step=step, threshold=threshold,
        include_train=include_train, device=device, warn=False, include_flag="--include-train",
        **opts,
    )  # fmt: skip
    if result.note is not None:
        loud = include_train and result.overlap is not None and result.overlap.n_in_sample > 0
        style = "bold red" if loud else "yellow"
        (err_console if quiet else console).print(
            f"[{style}]{result.note}[/]", highlight=False, soft_wrap=True
        )
    return result.portfolio


def _settings(items: list[str]) -> dict[str, float]:
    from celeris.research import MODEL_SETTINGS

    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in MODEL_SETTINGS:
            raise ConfigError(
                f"--grid {item!r}: a model:DIR walk-forward takes NAME=VALUE with NAME one of "
                f"{', '.join(MODEL_SETTINGS)}{did_you_mean(name, MODEL_SETTINGS)}"
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise ConfigError(f"--grid {item!r}: {value!r} is not a number") from None
        if name != "threshold" and out[name] != int(out[name]):
            raise ConfigError(f"--grid {item!r}: {name} must be a whole number")
    return out


def walk_forward_model(
    bars: Any,
    strategy: str,
    grid: list[str],
    *,
    train: int | str,
    test: int | str,
    metric: str,
    anchored: bool,
    opts: Options,
    json_out: bool,
    data: str = "",
    partial: bool = True,
) -> None:
    """``celeris walk-forward --strategy model:DIR``: refit per window, judge the next window."""
    from celeris.cli.format import fmt, frame_table, jsonable, run_caption, setup_json
    from celeris.cli.options import backtest_options
    from celeris.research import model_walk_forward, model_walk_forward_cost

    directory = checkpoint_of(strategy)
    settings = _settings(grid)
    options, device = backtest_options(opts, bars)
    max_steps = int(settings["max_steps"]) if "max_steps" in settings else None
    if not json_out:
        cost = model_walk_forward_cost(
            bars, directory, train=train, test=test, partial=partial, max_steps=max_steps
        )
        console.print(
            f"walk-forward of {cost['model']} from {directory}: a fresh model per window, trained "
            f"with its training config; {cost['windows']} windows x up to "
            f"{cost['max_steps_per_model']:,} optimiser steps = at most {cost['max_steps']:,} steps",
            soft_wrap=True,
        )
    step = int(settings.get("step", 1))
    threshold = settings.get("threshold", 0.0)
    result = model_walk_forward(
        bars, directory, train=train, test=test, anchored=anchored, partial=partial,
        metric=metric, step=step, threshold=threshold, max_steps=max_steps,
        progress=not json_out, device=device, **options,
    )  # fmt: skip
    spent = {
        "models": result.models,
        "steps": result.steps,
        "max_steps_per_model": result.max_steps,
        "seconds": result.seconds,
    }
    if json_out:
        print_json(
            {
                "strategy": strategy,
                "data": data,
                **setup_json(options["execution"], options["year_days"], bars.index),
                "windows": [
                    {k: jsonable(v) for k, v in row.items()}
                    for row in result.windows.reset_index().to_dict("records")
                ],
                "out_of_sample": {k: jsonable(v) for k, v in result.summary.items()},
                "cost": spent,
            }
        )
        return
    caption = run_caption(
        strategy, {"step": step, "threshold": threshold}, data or "the data", bars.index,
        options["execution"], options["year_days"],
    )  # fmt: skip
    console.print(frame_table(result.windows, f"walk-forward, refitted per window: {caption}"))
    summary = ", ".join(f"{k} {fmt(str(k), v)}" for k, v in result.summary.items())
    console.print(f"[bold]out of sample[/] ({len(result.oos_returns):,} bars): {summary}")
    rate = result.steps / result.seconds if result.seconds > 0 else float("nan")
    console.print(
        f"cost: {result.models} models trained, {result.steps:,} optimiser steps "
        f"(at most {result.models * result.max_steps:,}) in {result.seconds:.1f} s "
        f"({rate:,.0f} steps/s)"
    )
