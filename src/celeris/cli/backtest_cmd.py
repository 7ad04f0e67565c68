"""``celeris backtest``, ``celeris sweep``, ``celeris walk-forward`` and ``celeris strategies``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import (
    FILLED,
    Options,
    cli_errors,
    console,
    date_range_options,
    load_bars,
    print_json,
)
from celeris.cli.options import (
    DataOpt,
    JsonOpt,
    ModelStrategyOpt,
    ParamOpt,
    StrategyOpt,
    backtest_options,
    portfolio_options,
)
from celeris.cli.perp_opts import check_spot, perp_keywords, perp_options
from celeris.errors import ConfigError

DatasOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        "-d",
        help="Market data: sample:sp500, sample:nasdaq, a CSV/Parquet path, or "
        "store:EXCHANGE/SYMBOL/TIMEFRAME (default sample:sp500). Repeat it, or give a quoted store "
        "glob ('store:binance/*/USDT/1h'), with --cash-sharing to trade several assets as one book.",
    ),
]
CashSharingOpt = Annotated[
    bool,
    typer.Option(
        "--cash-sharing",
        help="Trade every --data asset from one account (the strategy's signals per asset; "
        "vectorbt's cash_sharing=True).",
    ),
]
CallSeqOpt = Annotated[
    str | None,
    typer.Option(
        "--call-seq",
        help="With --cash-sharing, the order of a bar's orders on the shared account: auto "
        "(default; sells before buys, so exits free cash for entries) | default (the --data "
        "order) | reversed.",
    ),
]
NanPolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--nan-policy",
        help="With --cash-sharing, a bar one asset lacks inside its listed span (another "
        "calendar): error (default) | ffill (carry its last bar forward) | drop (no bar there; "
        "its signals come from its own bars).",
    ),
]
SizeOpt = Annotated[
    float | None,
    typer.Option(
        help="Order size of each entry in --size-type units (default: all available cash)."
    ),
]
SizeTypeOpt = Annotated[
    str | None,
    typer.Option(
        "--size-type",
        help="amount (units) | value (cash) | percent (of available cash, 0 < size <= 1).",
    ),
]
MaxVariantsOpt = Annotated[
    int,
    typer.Option(
        "--max-variants",
        help="Refuse a grid with more admissible variants than this (checked before any work).",
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        help="Run the work as tasks on a Ray cluster: auto (the cluster `ray start --head` "
        "started here, or $RAY_ADDRESS), HOST:PORT of its head, ray://HOST:10001, or local (a "
        "Ray on this machine only). Results equal the local run's. See docs/ray.md.",
        show_default=False,
    ),
]
TaskSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--task-size",
        help="With --ray: units of work per task (variants of a sweep, windows of a "
        "walk-forward); default about four tasks per CPU of the cluster.",
        show_default=False,
    ),
]


def ray_executor(address: str | None, task_size: int | None) -> Any:
    """``--ray``/``--task-size`` as an executor: ``"local"`` without ``--ray``."""
    if address is None:
        if task_size is not None:
            raise ConfigError("--task-size sizes Ray tasks: give --ray too")
        return "local"
    from celeris.compute.ray_exec import RayExecutor

    return RayExecutor(address=None if address == "auto" else address, task_size=task_size)


def _connect_ray(executor: Any, quiet: bool) -> None:
    """Connect to the cluster before the timing starts, and say what it holds."""
    if isinstance(executor, str):
        return
    from celeris.compute.ray_exec import cluster_cpus, connect

    ray = connect(executor.address)
    if not quiet:
        nodes = sum(1 for n in ray.nodes() if n["Alive"])
        console.print(f"Ray: {nodes} node(s), {cluster_cpus(ray):g} CPUs", highlight=False)


def _strategy_and_grid(strategy: str, items: list[str]) -> tuple[Any, dict[str, list[Any]]]:
    """The strategy and its ``--grid`` items: parameters and option axes (``sl_stop=0.02,0.05``)."""
    from celeris.backtest.strategies import get_strategy
    from celeris.backtest.sweep import parse_grid

    strat = get_strategy(strategy)
    return strat, parse_grid(items, strat)


def _data_specs(
    data: list[str] | None,
    cash_sharing: bool,
    call_seq: str | None,
    command: str,
    nan_policy: str | None = None,
) -> list[str]:
    """The --data sources (default sample:sp500; store globs expanded with --cash-sharing)."""
    from celeris.cli.book_cmd import check_book_flags
    from celeris.cli.sources import expand_sources

    specs = list(data or ["sample:sp500"])
    if cash_sharing:
        specs = expand_sources(specs, command=command, minimum=1)
    check_book_flags(
        specs, cash_sharing=cash_sharing, call_seq=call_seq, nan_policy=nan_policy,
        command=command,
    )  # fmt: skip
    return specs


def _with_size(opts: Options, size: float | None, size_type: str | None) -> Options:
    """The shared options plus ``--size``/``--size-type`` where given."""
    extra = {k: v for k, v in (("size", size), ("size_type", size_type)) if v is not None}
    return {**opts, **extra}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _options_beside_grid(
    opts: dict[str, Any], grid: Mapping[str, Any], strat: Any
) -> dict[str, Any]:
    """The shared options without those the grid sweeps as axes; an option given both as its
    flag (a value other than its default) and in ``--grid`` is refused."""
    from celeris.backtest.sweep import option_axes

    table = option_axes()
    out = dict(opts)
    for name in grid:
        if name in strat.param_names or name not in table or name not in out:
            continue
        value, default = out.pop(name), table[name].default
        if not (value is None and default is None) and value != default:
            raise ConfigError(
                f"{_flag(name)} {value} and --grid {name}=... both set {name}: give it once"
            )
    return out


def _option_items(items: list[str], strat: Any) -> list[tuple[str, str]]:
    """``(item, name)`` of the ``NAME=VALUE`` items that name a backtest option rather than a
    parameter of ``strat`` (None: there are no parameters)."""
    from celeris.backtest.sweep import option_axes

    table = option_axes()
    out = []
    for item in items:
        name = item.split("=", 1)[0].strip()
        if name in table and (strat is None or name not in strat.param_names):
            out.append((item, name))
    return out


def _one_value_hint(item: str, name: str, opts: Mapping[str, Any]) -> str:
    if name in opts:
        value = item.split("=", 1)[1].strip() if "=" in item else ""
        return f"use {_flag(name)} {value or 'VALUE'}"
    return f"this command has no {_flag(name)}; set it in Python ({name}=...)"


# ---- celeris strategies ---------------------------------------------------------------------
@cli_errors
def strategies_cmd(json_out: JsonOpt = False) -> None:
    """List the strategies (built-in and installed), their parameters, bounds and constraints."""
    from celeris.backtest.strategies import available_strategies

    strategies = available_strategies()
    if json_out:
        print_json(_strategies_json(strategies))
        return
    console.print(_strategies_table(strategies))


def _strategies_json(strategies: Mapping[str, Any]) -> dict[str, Any]:
    return {
        s.name: {
            "description": s.description,
            "constraint": s.constraint_text,
            "params": {
                p.name: {"default": p.default, "low": p.low, "high": p.high} for p in s.params
            },
        }
        for s in strategies.values()
    }


def _strategies_table(strategies: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="Strategies", header_style="bold")
    for col in ("strategy", "parameters (default, bounds)", "rule"):
        table.add_column(col)
    for s in strategies.values():
        params = "\n".join(f"{p.name}={p.default:g}  [{p.low:g}, {p.high:g}]" for p in s.params)
        rule = s.description + (f"\nconstraint: {s.constraint_text}" if s.constraint_text else "")
        table.add_row(s.name, params, rule)
    return table


# ---- celeris backtest -----------------------------------------------------------------------
@cli_errors
@portfolio_options
@perp_options
@date_range_options
def backtest_cmd(
    data: DatasOpt = None,
    strategy: ModelStrategyOpt = "sma_cross",
    param: ParamOpt = None,
    cash_sharing: CashSharingOpt = False,
    call_seq: CallSeqOpt = None,
    nan_policy: NanPolicyOpt = None,
    size: SizeOpt = None,
    size_type: SizeTypeOpt = None,
    html: Annotated[
        Path | None, typer.Option(help="Write an interactive HTML report here.")
    ] = None,
    png: Annotated[Path | None, typer.Option(help="Write a PNG chart here.")] = None,
    trades: Annotated[int, typer.Option(help="How many of the last trades to list.")] = 10,
    threshold: Annotated[
        float,
        typer.Option(help="model:PATH strategies: trade when the expected return exceeds this."),
    ] = 0.0,
    step: Annotated[
        int, typer.Option(help="model:PATH strategies: forecast step to trade on.")
    ] = 1,
    include_train: Annotated[
        bool,
        typer.Option(
            "--include-train",
            "--in-sample",
            help="model:PATH strategies: also trade the bars the model was trained on "
            "(recognised by dates and prices, not by file name; excluded by default).",
        ),
    ] = False,
    opts: Options = FILLED,
    perp_opts: Options = FILLED,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Backtest one strategy with one parameter set and print its metrics and trades.

    Example: celeris backtest --data sample:sp500 --strategy sma_cross --param fast=10
    --param slow=50 --fees 0.001 --year-days 252 --start 2010-01-01 --html report.html

    Several assets on one account: celeris backtest --data sample:sp500 --data sample:nasdaq
    --cash-sharing --strategy sma_cross --param fast=10 --param slow=50 --fees 0.001

    Perpetual futures (docs/books.md): celeris backtest --data store:binance/BTC/USDT:USDT/1h
    --perp --leverage 3 --funding store:binance/BTC/USDT:USDT/funding --fees 0.0005
    """
    from celeris.cli.format import run_caption

    specs = _data_specs(data, cash_sharing, call_seq, "backtest", nan_policy)
    opts = _with_size(opts, size, size_type)
    if cash_sharing or perp_opts["perp"]:
        return _book_backtest(
            specs, strategy, param or [], (call_seq or "auto", nan_policy or "error"), opts, span,
            {"html": html, "png": png, "trades": trades, "json_out": json_out}, perp_opts,
        )  # fmt: skip
    check_spot(perp_opts)  # a perpetual flag without --perp
    source = specs[0]
    bars = load_bars(source, span)
    opts, device = backtest_options(opts, bars)
    if strategy.startswith("model:"):
        from celeris.cli.model_strategy import model_portfolio

        if param:
            raise ConfigError(
                "--param does not apply to model:PATH strategies (see --threshold, --step)"
            )
        pf = model_portfolio(
            bars, strategy, step=step, threshold=threshold, include_train=include_train,
            device=device, opts=opts, quiet=json_out,
        )  # fmt: skip
        name, full = strategy, {"threshold": threshold, "step": step}
    else:
        pf, name, full = _rule_portfolio(bars, strategy, param or [], device, opts)
    stats = pf.stats().iloc[0]
    caption = run_caption(name, full, source, pf.index, pf.execution, pf.annualisation)
    if json_out:
        print_json(_backtest_json(pf, stats, name, full, source))
    else:
        _print_backtest(pf, stats, caption, trades)
    for path, writer in ((html, pf.to_html), (png, pf.plot_png)):
        if path is not None:
            written = writer(path, title=caption)
            if not json_out:
                console.print(f"wrote {written}")


def _book_backtest(
    specs: list[str],
    strategy: str,
    items: list[str],
    account: tuple[str, str],
    opts: Options,
    span: Options,
    output: dict[str, Any],
    perp_opts: Options,
) -> None:
    """``backtest --cash-sharing`` (or ``--perp``): the strategy on every asset, one account.
    ``account``: the call sequence and the NaN policy of the panel."""
    from celeris.cli.book_cmd import book_backtest_output, refuse_model, simulate_book
    from celeris.cli.format import run_caption
    from celeris.cli.sources import load_panel

    refuse_model(strategy)
    call_seq, nan_policy = account
    panel = load_panel(specs, span, nan_policy)
    resolved, device = backtest_options(opts, panel)
    resolved.update(perp_keywords(perp_opts, panel.index, list(panel.symbols)))
    strat, params, full = _rule_params(strategy, items, resolved)
    combos = strat.grid({k: [v] for k, v in params.items()})
    book = simulate_book(panel, strat, combos, resolved, device, call_seq)
    caption = run_caption(
        strat.name, full, " + ".join(specs) + f" on one account (call_seq {call_seq})",
        book.index, book.execution, book.annualisation,
    )  # fmt: skip
    book_backtest_output(
        book, panel, name=strat.name, params=full, specs=specs, call_seq=call_seq,
        caption=caption, **output,
    )  # fmt: skip


def _rule_portfolio(
    bars: Any, strategy: str, items: list[str], device: str, opts: dict[str, Any]
) -> tuple[Any, str, dict[str, Any]]:
    """The portfolio of a rule strategy at one parameter set, its name and all its parameters."""
    from celeris.backtest import from_signals

    strat, params, full = _rule_params(strategy, items, opts)
    entries, exits = strat.signals(bars, params)
    pf = from_signals(bars, entries, exits, device=device, **opts)
    return pf, strat.name, full


def _rule_params(
    strategy: str, items: list[str], opts: Mapping[str, Any]
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """A rule strategy, its ``--param`` values (one each) and all its parameters."""
    from celeris.backtest.strategies import get_strategy, parse_assignments

    strat = get_strategy(strategy)
    # One backtest, one value: an option goes to its own flag (a sweep takes it as an axis).
    for item, name in _option_items(items, strat):
        raise ConfigError(
            f"--param {item!r}: {name} is a backtest option, not a parameter of {strat.name}; "
            f"{_one_value_hint(item, name, opts)} (`celeris sweep --grid {name}=...` sweeps it)"
        )
    grid = parse_assignments(items, strat)
    for pname, values in grid.items():
        if len(values) != 1:
            raise ConfigError(
                f"--param {pname} takes one value in a backtest; use `celeris sweep --grid` for many"
            )
    params = {k: v[0] for k, v in grid.items()}
    return strat, params, {p.name: p.default for p in strat.params} | params


def _backtest_json(pf: Any, stats: Any, name: str, full: dict[str, Any], data: str) -> Any:
    from celeris.cli.format import jsonable, setup_json

    return {
        "strategy": name,
        "params": full,
        "data": data,
        **setup_json(pf.execution, pf.annualisation, pf.index),
        "stats": {k: jsonable(v) for k, v in stats.items()},
        "trades": [
            {k: jsonable(v) for k, v in row.items()} for row in pf.trades.to_dict("records")
        ],
    }


def _print_backtest(pf: Any, stats: Any, caption: str, trades: int) -> None:
    """The metrics table and the last ``trades`` trades."""
    from celeris.cli.format import frame_table, stats_table

    console.print(stats_table(stats, caption))
    tr = pf.trades
    if len(tr) and trades > 0:
        shown = tr.tail(trades).set_index("entry_time")[
            ["direction", "entry_price", "exit_time", "exit_price", "pnl", "return"]
        ]
        console.print(frame_table(shown, f"last {min(trades, len(tr))} of {len(tr)} trades"))


# ---- celeris sweep --------------------------------------------------------------------------
@cli_errors
@portfolio_options
@perp_options
@date_range_options
def sweep_cmd(
    data: DatasOpt = None,
    strategy: StrategyOpt = "sma_cross",
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid",
            "-g",
            help="NAME=SPEC with SPEC a value, a list 5,10,20 or a range start:stop:step (stop included).",
        ),
    ] = None,
    metric: Annotated[
        str, typer.Option(help="Rank by this metric (sharpe, total_return, calmar...).")
    ] = "sharpe",
    top: Annotated[int, typer.Option(help="How many best variants to show.")] = 10,
    html: Annotated[
        Path | None, typer.Option(help="HTML report of the best variant and the heat-map.")
    ] = None,
    csv: Annotated[
        Path | None, typer.Option(help="Write every variant's metrics to this CSV.")
    ] = None,
    max_variants: MaxVariantsOpt = 1_000_000,
    ray: RayOpt = None,
    task_size: TaskSizeOpt = None,
    cash_sharing: CashSharingOpt = False,
    call_seq: CallSeqOpt = None,
    nan_policy: NanPolicyOpt = None,
    size: SizeOpt = None,
    size_type: SizeTypeOpt = None,
    opts: Options = FILLED,
    perp_opts: Options = FILLED,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Backtest every combination of a parameter grid and rank the variants.

    Example: celeris sweep --data sample:sp500 --strategy sma_cross --grid fast=10:80:2
    --grid slow=50:500:10 --fees 0.001 --top 10

    --grid also sweeps backtest options as axes: --grid sl_stop=0.02,0.05 --grid fees=0,0.001
    (any per-column option of from_signals; sl_stop=none,0.05 includes "no stop").

    With several --data and --cash-sharing every parameter set is a book trading all the assets
    from one account, ranked by the book's metric: celeris sweep --data sample:sp500
    --data sample:nasdaq --cash-sharing --grid fast=5:50:5 --grid slow=60:200:20

    Perpetual futures, leverage as an axis: celeris sweep --data store:binance/BTC/USDT:USDT/1h
    --perp --funding store:binance/BTC/USDT:USDT/funding --grid leverage=1,3,10

    On a Ray cluster (docs/ray.md): celeris sweep --data sample:sp500 --grid fast=5:100
    --grid slow=50:400:5 --ray auto
    """
    from celeris.backtest import estimate_sweep, sweep
    from celeris.cli.format import run_caption

    _check_ranking(metric, top)
    specs = _data_specs(data, cash_sharing, call_seq, "sweep", nan_policy)
    opts = _with_size(opts, size, size_type)
    executor = ray_executor(ray, task_size)
    if cash_sharing:
        if ray is not None:
            raise ConfigError(
                "--ray runs single-asset sweeps; a --cash-sharing book sweep runs locally: "
                "leave out --ray or --cash-sharing"
            )
        return _book_sweep(
            specs, strategy, grid or [], (call_seq or "auto", nan_policy or "error"), opts, span,
            {"metric": metric, "top": top, "html": html, "csv": csv, "json_out": json_out},
            max_variants, perp_opts,
        )  # fmt: skip
    data_spec = specs[0]
    bars = load_bars(data_spec, span)
    strat, values = _strategy_and_grid(strategy, grid or [])
    opts, device = backtest_options(opts, bars)
    perp = perp_keywords(perp_opts, bars.index, specs)
    opts.update({k: v for k, v in perp.items() if k not in values})  # a grid axis wins
    opts = _options_beside_grid(opts, values, strat)
    estimate = estimate_sweep(bars, strat, values, device=device)
    if not json_out:
        console.print(f"plan: {estimate.describe()}", highlight=False, markup=False)
    _connect_ray(executor, json_out)
    started = time.perf_counter()
    result = sweep(
        bars, strat, values, max_variants=max_variants, device=device,
        progress=not json_out, executor=executor, **opts,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    best = result.best(metric, top)
    caption = run_caption(
        strat.name, _grid_summary(result.combos), data_spec, bars.index, opts["execution"],
        opts["year_days"],
    )  # fmt: skip
    if csv is not None:
        _write_csv(result.stats(), csv)
    if json_out:
        print_json(_sweep_json(result, best, estimate, metric, elapsed, data_spec, bars, opts))
    else:
        _print_sweep(result, best, caption, metric, elapsed, bars)
    if html is not None:
        written = result.to_html(html, metric=metric, title=caption)
        if not json_out:
            console.print(f"wrote {written}")
    if csv is not None and not json_out:
        console.print(f"wrote {csv}")


def _book_sweep(
    specs: list[str],
    strategy: str,
    items: list[str],
    account: tuple[str, str],
    opts: Options,
    span: Options,
    output: dict[str, Any],
    max_variants: int,
    perp_opts: Options,
) -> None:
    """``sweep --cash-sharing``: one book (one account, every asset) per parameter set.
    ``account``: the call sequence and the NaN policy of the panel."""
    from celeris.cli.book_cmd import book_sweep_output, refuse_model, simulate_book
    from celeris.cli.format import run_caption
    from celeris.cli.sources import load_panel

    refuse_model(strategy)
    call_seq, nan_policy = account
    panel = load_panel(specs, span, nan_policy)
    strat, values = _strategy_and_grid(strategy, items)
    options = [n for n in values if n not in strat.param_names]
    if options:
        raise ConfigError(
            f"--grid {options[0]}=...: option axes are not swept with --cash-sharing yet; give "
            f"the option one value ({_flag(options[0])} VALUE) or leave out --cash-sharing"
        )
    resolved, device = backtest_options(opts, panel)
    resolved.update(perp_keywords(perp_opts, panel.index, list(panel.symbols)))
    combos = strat.grid(values, max_variants=max_variants)
    started = time.perf_counter()
    book = simulate_book(panel, strat, combos, resolved, device, call_seq)
    book.stats()  # the simulation runs here; the timing covers it
    elapsed = time.perf_counter() - started
    caption = run_caption(
        strat.name, _grid_summary(combos), " + ".join(specs) + f" on one account each "
        f"(call_seq {call_seq})", book.index, book.execution, book.annualisation,
    )  # fmt: skip
    book_sweep_output(
        book, panel, strategy=strat, combos=combos, specs=specs, call_seq=call_seq,
        caption=caption, elapsed=elapsed, write_csv=_write_csv, **output,
    )  # fmt: skip


def _check_ranking(metric: str, top: int) -> None:
    """Refuse an unknown ``--metric`` or a ``--top`` below 1 before any data is loaded."""
    from celeris.backtest import METRICS
    from celeris.errors import did_you_mean

    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}{did_you_mean(metric, METRICS)}")
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")


def _write_csv(stats: Any, csv: Path) -> None:
    from celeris.data.atomic import atomic_path

    csv.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(csv) as tmp:
        stats.to_csv(tmp)


def _sweep_json(
    result: Any,
    best: Any,
    estimate: Any,
    metric: str,
    elapsed: float,
    data: str,
    bars: Any,
    opts: dict[str, Any],
) -> Any:
    from celeris.cli.format import jsonable, setup_json

    names = result.combos.columns
    return {
        "strategy": result.strategy.name,
        "data": data,
        **setup_json(opts["execution"], opts["year_days"], bars.index),
        "variants": len(result.combos),
        "bars": len(bars),
        "seconds": elapsed,
        "estimate": {
            "variants": estimate.variants,
            "seconds": estimate.seconds,
            "memory_bytes": estimate.memory_bytes,
        },
        "metric": metric,
        "edge": result.on_edge(metric),
        "top": [
            {
                **{
                    str(k): jsonable(v)
                    for k, v in zip(names, idx if isinstance(idx, tuple) else (idx,), strict=True)
                },
                **{k: jsonable(v) for k, v in row.items()},
            }
            for idx, row in best.iterrows()
        ],
    }


def _print_sweep(
    result: Any, best: Any, caption: str, metric: str, elapsed: float, bars: Any
) -> None:
    """The run's size and speed, the best variants, and a warning when the best is on an edge."""
    from celeris.cli.format import SUMMARY_COLUMNS, frame_table

    rate = len(result.combos) * len(bars) / max(elapsed, 1e-9)
    console.print(caption, highlight=False, markup=False)
    console.print(
        f"[bold]{len(result.combos):,}[/] variants x [bold]{len(bars):,}[/] bars in {elapsed:.2f} s "
        f"({rate / 1e6:,.0f} M bar-variants/s, device {result.device})"
    )
    console.print(
        frame_table(
            best,
            f"top {len(best)} by {metric}",
            [metric, *[c for c in SUMMARY_COLUMNS if c != metric]],
        )
    )
    if note := result.edge_note(metric):
        console.print(f"[bold yellow]warning:[/] {note}", highlight=False)


# ---- celeris walk-forward -------------------------------------------------------------------
@cli_errors
@portfolio_options
@date_range_options
def walk_forward_cmd(
    data: DataOpt = "sample:sp500",
    strategy: ModelStrategyOpt = "sma_cross",
    grid: Annotated[
        list[str] | None, typer.Option("--grid", "-g", help="NAME=SPEC, as in `celeris sweep`.")
    ] = None,
    train: Annotated[
        str, typer.Option(help="Training window: bars (500) or a duration (730D).")
    ] = "730D",
    test: Annotated[
        str, typer.Option(help="Test window after each training window: bars or a duration.")
    ] = "180D",
    metric: Annotated[str, typer.Option(help="Metric that picks the in-sample best.")] = "sharpe",
    anchored: Annotated[
        bool, typer.Option(help="Keep the training start fixed (expanding window).")
    ] = False,
    partial: Annotated[
        bool,
        typer.Option(help="Also test the last, shorter window that runs to the end of the data."),
    ] = True,
    max_variants: MaxVariantsOpt = 1_000_000,
    ray: RayOpt = None,
    task_size: TaskSizeOpt = None,
    opts: Options = FILLED,
    span: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Choose parameters on each training window, judge them on the next unseen window.

    Example: celeris walk-forward --data sample:sp500 --strategy sma_cross --grid fast=5:50:5
    --grid slow=20:200:20 --train 730D --test 180D --year-days 252

    --grid also sweeps backtest options as axes (--grid sl_stop=0.02,0.05), chosen per window.

    With --strategy model:PATH a fresh model is trained on every training window from the
    checkpoint's training settings (--grid max_steps=N, threshold=X, step=K) and judged on
    the next window: no window is scored by a model that saw it.
    """
    from celeris.backtest import walk_forward
    from celeris.backtest.sweep import sweep_grid
    from celeris.cli.format import run_caption

    executor = ray_executor(ray, task_size)
    bars = load_bars(data, span)
    if strategy.startswith("model:"):
        if ray is not None:
            raise ConfigError(
                "--ray runs the windows of rule strategies; a model:PATH walk-forward trains "
                "locally: leave out --ray"
            )
        from celeris.cli.model_strategy import walk_forward_model

        for item, name in _option_items(grid or [], None):
            raise ConfigError(
                f"--grid {item!r}: a model:PATH walk-forward chooses nothing in sample (it refits "
                "one model per window and trades it as it is), so a backtest option is not a "
                f"grid axis there but one value for every window: {_one_value_hint(item, name, opts)}"
            )
        return walk_forward_model(
            bars, strategy, grid or [], train=_window(train), test=_window(test),
            metric=metric, anchored=anchored, opts=opts, json_out=json_out, data=data,
            partial=partial,
        )  # fmt: skip
    strat, values = _strategy_and_grid(strategy, grid or [])
    opts, device = backtest_options(opts, bars)
    opts = _options_beside_grid(opts, values, strat)
    _connect_ray(executor, json_out)
    result = walk_forward(
        bars, strat, values, train=_window(train), test=_window(test), metric=metric,
        anchored=anchored, partial=partial, max_variants=max_variants, device=device,
        progress=not json_out, executor=executor, **opts,
    )  # fmt: skip
    if json_out:
        print_json(_walk_forward_json(result, strat.name, data, bars, opts))
        return
    caption = run_caption(
        strat.name, _grid_summary(sweep_grid(strat, values, max_variants=None).combos), data,
        bars.index, opts["execution"], opts["year_days"],
    )  # fmt: skip
    _print_walk_forward(result, caption, metric)


def _walk_forward_json(
    result: Any, name: str, data: str, bars: Any, opts: dict[str, Any]
) -> dict[str, Any]:
    from celeris.cli.format import jsonable, setup_json

    return {
        "strategy": name,
        "data": data,
        **setup_json(opts["execution"], opts["year_days"], bars.index),
        "windows": [
            {k: jsonable(v) for k, v in row.items()}
            for row in result.windows.reset_index().to_dict("records")
        ],
        "out_of_sample": {k: jsonable(v) for k, v in result.summary.items()},
    }


def _print_walk_forward(result: Any, caption: str, metric: str) -> None:
    """The windows table and the out-of-sample summary line."""
    from celeris.cli.format import fmt, frame_table

    console.print(
        frame_table(result.windows, f"walk-forward windows, best by {metric} in sample: {caption}")
    )
    summary = ", ".join(f"{k} {fmt(str(k), v)}" for k, v in result.summary.items())
    console.print(f"[bold]out of sample[/] ({len(result.oos_returns):,} bars): {summary}")


def register(app: typer.Typer) -> None:
    """Add the backtest commands to the top-level app."""
    app.command("strategies")(strategies_cmd)
    app.command("backtest")(backtest_cmd)
    app.command("sweep")(sweep_cmd)
    app.command("walk-forward")(walk_forward_cmd)


def _grid_summary(combos: Any) -> dict[str, str]:
    """``{"fast": "5..50 (10 values)"}``: each parameter's (and option axis') range over a grid,
    for captions; names and flags are listed (``"longonly, both"``), an "off" stop is ``none``."""
    out = {}
    for name in combos.columns:
        column = combos[name]
        if column.dtype.kind not in "iuf":
            values = list(dict.fromkeys(str(v) for v in column))
            out[str(name)] = ", ".join(values)
            continue
        values = sorted(set(column.dropna().tolist()))
        off = "none" if column.isna().any() else ""
        if not values:
            out[str(name)] = off
        elif len(values) == 1:
            out[str(name)] = ", ".join(filter(None, (off, f"{values[0]:g}")))
        else:
            span = f"{values[0]:g}..{values[-1]:g} ({len(values)} values)"
            out[str(name)] = f"{off}, {span}" if off else span
    return out


def _window(spec: str) -> int | str:
    return int(spec) if spec.isdigit() else spec
