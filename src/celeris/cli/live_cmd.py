"""``celeris live``: bars from an exchange (or a replay) to signals on the feed and a paper account.

The work is :class:`celeris.live.loop.LiveLoop`'s; this module builds it from the options: the
bar source (ccxt's stream of ``--exchange``, or ``--replay`` of stored bars), the signal source
(``--strategy`` or ``--model``), the paper account's options, the journal in ``--state``, the
feed on ``--socket`` and the metrics and admin endpoints on ``--metrics-port``. SIGTERM and
Ctrl-C stop it cleanly; SIGUSR1 engages the kill switch.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from celeris.cli._common import FILLED, Options, cli_errors, console, err_console, print_json
from celeris.cli.options import (
    CashOpt,
    ExecutionOpt,
    FeesOpt,
    JsonOpt,
    ParamOpt,
    SlippageOpt,
    StopOpt,
)
from celeris.cli.perp_opts import check_spot, perp_keywords, perp_options
from celeris.errors import ConfigError

ExchangeOpt = Annotated[str, typer.Option(help="ccxt exchange id (live data), e.g. binance.")]
SymbolsOpt = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated symbols, e.g. BTC/USDT,ETH/USDT (their feed ids are 0, 1, ... in "
        "this order). With --replay: names for the replayed sources (default: from the data)."
    ),
]
TimeframeOpt = Annotated[str, typer.Option(help="Bar interval, e.g. 1m, 1h (live data).")]
StrategyOpt = Annotated[
    str | None, typer.Option(help="A rule strategy (celeris strategies lists them): sma_cross...")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="A model: a checkpoint directory or a registry ref NAME@STAGE|VERSION (--registry). "
        "Its own feature spec turns the bars into its inputs."
    ),
]
ThresholdOpt = Annotated[
    float, typer.Option(help="Model signals: entry when the expected return is above this.")
]
RegistryOpt = Annotated[str, typer.Option(help="Model registry directory for NAME@STAGE refs.")]
PaperOpt = Annotated[
    bool,
    typer.Option(
        "--paper/--no-paper",
        help="Track the signals in a paper account with the backtest's accounting (Celeris "
        "never sends orders: the trading engine on --socket does).",
    ),
]
StateOpt = Annotated[
    Path,
    typer.Option(
        help="Directory of the run's journal (SQLite, WAL). Restarting with the same --state "
        "resumes from the last closed bar without losing or repeating a signal or fill."
    ),
]
SocketOpt = Annotated[
    Path | None, typer.Option(help="Unix socket of the signal feed (docs/wire-format.md).")
]
ExchangeUrlOpt = Annotated[
    str | None,
    typer.Option(
        help="Base URL of a server speaking the exchange's protocol (a testnet, or `celeris "
        "exchange fake`), for REST and websocket."
    ),
]
ReplayOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Drive the loop from stored bars at full speed instead of the exchange: a file, "
        "sample:sp500 or store:EXCHANGE/SYMBOL/TIMEFRAME (repeat, one per symbol)."
    ),
]
HistoryOpt = Annotated[
    int | None,
    typer.Option(
        help="Bars of history the signal source sees (live default: 1000, or what the source "
        "needs if more; a replay sees all)."
    ),
]
PublishOpt = Annotated[
    str, typer.Option(help="changes (a symbol's signal when its direction changes) | every-bar.")
]
MetricsPortOpt = Annotated[
    int | None,
    typer.Option(help="Port of /metrics, /healthz, /readyz and /admin/* (0: a free one)."),
]
MetricsHostOpt = Annotated[
    str,
    typer.Option(
        help="Address the metrics port listens on: 127.0.0.1 (this machine), 0.0.0.0 (a "
        "Prometheus in another container or pod; /admin/* still needs CELERIS_ADMIN_TOKEN)."
    ),
]
SizeOpt = Annotated[
    float | None, typer.Option(help="Order size (default: all available cash).", show_default=False)
]
SizeTypeOpt = Annotated[str, typer.Option(help="amount | value | percent.")]
DirectionOpt = Annotated[str, typer.Option(help="longonly | shortonly.")]
DurationOpt = Annotated[
    float | None, typer.Option(help="Stop after this many seconds (default: until stopped).")
]
BlockOpt = Annotated[int, typer.Option(help="Bars per replay step.")]
PaceOpt = Annotated[
    float, typer.Option(help="Seconds between replay steps (0: full speed; > 0 looks live).")
]


def register(app: typer.Typer) -> None:
    app.command("live")(live_cmd)


@cli_errors
@perp_options
def live_cmd(
    exchange: ExchangeOpt = "binance",
    symbols: SymbolsOpt = None,
    timeframe: TimeframeOpt = "1m",
    strategy: StrategyOpt = None,
    param: ParamOpt = None,
    model: ModelOpt = None,
    threshold: ThresholdOpt = 0.0,
    registry: RegistryOpt = "~/.celeris/registry",
    paper: PaperOpt = True,
    fees: FeesOpt = 0.0,
    slippage: SlippageOpt = 0.0,
    init_cash: CashOpt = 100_000.0,
    size: SizeOpt = None,
    size_type: SizeTypeOpt = "amount",
    direction: DirectionOpt = "longonly",
    sl_stop: StopOpt = None,
    tp_stop: StopOpt = None,
    tsl_stop: StopOpt = None,
    execution: ExecutionOpt = "next_open",
    cash_sharing: Annotated[
        bool, typer.Option("--cash-sharing", help="One account for all symbols.")
    ] = False,
    state: StateOpt = Path("runs/live"),
    socket: SocketOpt = None,
    exchange_url: ExchangeUrlOpt = None,
    replay: ReplayOpt = None,
    history: HistoryOpt = None,
    publish: PublishOpt = "changes",
    metrics_port: MetricsPortOpt = None,
    metrics_host: MetricsHostOpt = "127.0.0.1",
    max_position: Annotated[
        float | None, typer.Option(help="Most value held in one symbol (quote currency).")
    ] = None,
    max_exposure: Annotated[
        float | None, typer.Option(help="Most gross value held over all symbols.")
    ] = None,
    max_daily_loss: Annotated[
        float | None,
        typer.Option(help="Kill switch when the day's loss reaches this fraction, e.g. 0.05."),
    ] = None,
    transport: Annotated[str, typer.Option(help="auto | ws | rest (live data).")] = "auto",
    stale_after: Annotated[
        int, typer.Option(help="Bars without a closed bar before a symbol is stale.")
    ] = 3,
    duration: DurationOpt = None,
    block: BlockOpt = 65_536,
    replay_pace: PaceOpt = 0.0,
    wait_subscribers: Annotated[
        int,
        typer.Option(
            help="With --socket: wait for this many feed subscribers (the trading engine) "
            "before resuming, so that signals republished after a restart reach them."
        ),
    ] = 0,
    wait_timeout: Annotated[
        float, typer.Option(help="Seconds --wait-subscribers waits before giving up.")
    ] = 30.0,
    feed_retain: Annotated[
        int,
        typer.Option(
            min=0,
            help="With --socket: signals published while no subscriber is connected are kept, "
            "up to this many, for the next subscriber (the trading engine back after a "
            "restart); a signal is journaled as published once a subscriber got it. 0: none.",
        ),
    ] = 65_536,
    perp_opts: Options = FILLED,
    json_out: JsonOpt = False,
) -> None:
    """Run a strategy or model live: closed bars -> signals -> feed + paper account.

    \b
    Examples:
      celeris live --replay sample:sp500 --strategy sma_cross --param fast=10 --param slow=50 \\
          --fees 0.001 --state runs/replay-spx
      celeris live --exchange binance --symbols BTC/USDT,ETH/USDT --timeframe 1m \\
          --strategy sma_cross --param fast=10 --param slow=50 --paper --fees 0.001 \\
          --state runs/live-btc --socket run/celeris.sock --metrics-port 9108
      celeris live ... --exchange-url http://127.0.0.1:9000   # a local fake or a testnet
      celeris live --exchange binance --symbols BTC/USDT:USDT --timeframe 1m \\
          --strategy sma_cross --perp --leverage 3 --fees 0.0005 --state runs/live-perp
      celeris live --replay store:binance/BTC/USDT:USDT/1h --symbols BTC/USDT:USDT \\
          --strategy sma_cross --perp --leverage 3 \\
          --funding store:binance/BTC/USDT:USDT/funding --state runs/replay-perp

    Perpetual futures (--perp, the options of celeris backtest --perp): live, the funding
    rates come from the exchange as they settle; a replay takes --funding, one per symbol.

    Bars are acted on once closed; a restart with the same --state resumes where the journal
    ends. See docs/live.md.
    """
    from celeris.live.journal import Journal
    from celeris.live.loop import LiveLoop
    from celeris.live.risk import RiskLimits

    if not paper:
        raise ConfigError(
            "celeris live tracks its signals in a paper account; it sends no orders (the "
            "trading engine on --socket does): drop --no-paper"
        )
    if (strategy is None) == (model is None):
        raise ConfigError("give one of --strategy NAME or --model DIR|NAME@STAGE")
    options: dict[str, Any] = {
        "fees": fees, "slippage": slippage, "init_cash": init_cash, "size_type": size_type,
        "direction": direction, "execution": execution, "cash_sharing": cash_sharing,
        **_given(size=size, sl_stop=sl_stop, tp_stop=tp_stop, tsl_stop=tsl_stop),
    }  # fmt: skip
    check_spot(perp_opts)  # a perpetual option without --perp
    frames = _replay_frames(replay, symbols) if replay else None
    names = list(frames) if frames is not None else _symbols(symbols)
    # the paper account's perpetual options (the funding rates come with each step)
    options.update(perp_keywords({**perp_opts, "funding": None}, _no_bars(), names))
    funding = _funding(perp_opts, frames, names, exchange, exchange_url)
    source = _signal_source(strategy, param, model, threshold, registry, state, names,
                            live=frames is None)  # fmt: skip
    limits = RiskLimits(max_position, max_exposure, max_daily_loss)
    config = {
        "source": source.describe,
        "options": options,
        "mode": "replay" if replay else exchange,
    }
    journal = Journal(Path(state) / "journal.sqlite", names, config)
    publisher = _publisher(socket, journal, feed_retain)
    from celeris.data.timeframes import timeframe_to_timedelta

    metrics = _metrics(metrics_port, names, timeframe_to_timedelta(timeframe).value)
    loop = LiveLoop(
        names, source, journal, options=options, publisher=publisher, limits=limits,
        history=None if replay else (history or _default_history(source)), publish=publish,
        metrics=metrics,
    )  # fmt: skip
    try:
        # Records go to the subscribers connected when they are published (or, with nobody
        # there, are kept for the next one: --feed-retain); waiting for the trading engine
        # first hands it a restart's republished records at once.
        waiting = publisher is not None and wait_subscribers > 0
        if waiting and not publisher.wait_for_subscribers(wait_subscribers, wait_timeout):
            raise ConfigError(
                f"--wait-subscribers {wait_subscribers}: {publisher.subscribers} subscriber(s) "
                f"connected to {socket} after {wait_timeout:g} s"
            )
        resumed = loop.resume()
        if resumed:
            err_console.print(f"resumed {state}: {resumed:,} journaled bars", highlight=False)
        if frames is not None:
            from celeris.live.replay import ReplaySource

            bars: Any = ReplaySource(
                frames, block=block, pace_s=replay_pace, after=journal.last_ts()
            )
        else:
            bars = _stream(exchange, names, timeframe, exchange_url, loop, stale_after, transport)
        total = asyncio.run(
            _drive(
                loop,
                bars,
                metrics,
                (metrics_host, metrics_port),
                duration,
                replay is not None,
                funding,
            )
        )
        _report(loop, total, json_out)
    finally:
        if publisher is not None:
            publisher.close()
        journal.close()


def _given(**values: Any) -> dict[str, Any]:
    """The options given (not None)."""
    return {name: value for name, value in values.items() if value is not None}


def _stream(
    exchange: str,
    names: list[str],
    timeframe: str,
    exchange_url: str | None,
    loop: Any,
    stale_after: int,
    transport: str,
) -> Any:
    """The exchange's bars through ccxt, back-filling the loop's history."""
    from celeris.live.market import MarketStream

    return MarketStream(
        exchange, names, timeframe, exchange_url=exchange_url,
        history=loop.history.keep or 1000, stale_after=stale_after, transport=transport,
    )  # fmt: skip


def _symbols(text: str | None) -> list[str]:
    names = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not names:
        raise ConfigError("--symbols is empty: name at least one, e.g. --symbols BTC/USDT")
    return names


def _no_bars() -> Any:
    import pandas as pd

    return pd.DatetimeIndex([], tz="UTC")


def _funding(
    perp_opts: Options,
    frames: dict[str, Any] | None,
    names: list[str],
    exchange: str,
    exchange_url: str | None,
) -> Any:
    """The funding source of a perpetual run: ``--funding`` on a replay's bars, the exchange's
    settled rates live; None for a spot run (or a replay without ``--funding``: no funding is
    charged, as in ``celeris backtest --perp`` without it)."""
    if not perp_opts["perp"]:
        return None
    specs = perp_opts["funding"] or []
    if frames is None:
        if specs:
            raise ConfigError(
                "--funding is for a --replay: a live run is charged the exchange's funding "
                "rates as they settle"
            )
        from celeris.live.funding import ExchangeFunding

        return ExchangeFunding(exchange, names, exchange_url=exchange_url)
    if not specs:
        return None
    if len(specs) != len(names):
        raise ConfigError(
            f"--funding was given {len(specs)} time(s) for {len(names)} replayed symbol(s) "
            f"({', '.join(names)}): give one per symbol, in the same order"
        )
    from celeris.data.funding import load_funding
    from celeris.live.funding import ReplayFunding

    rates = {name: load_funding(spec) for name, spec in zip(names, specs, strict=True)}
    return ReplayFunding.from_series(names, rates, frames)


def _replay_frames(sources: list[str], symbols: str | None) -> dict[str, Any]:
    from celeris.cli._common import load_bars

    names = _symbols(symbols) if symbols else [s.split(":", 1)[-1] for s in sources]
    if len(names) != len(sources):
        raise ConfigError(
            f"--symbols names {len(names)} symbols for {len(sources)} --replay sources"
        )
    return {name: load_bars(src) for name, src in zip(names, sources, strict=True)}


def _signal_source(
    strategy: str | None,
    param: list[str] | None,
    model: str | None,
    threshold: float,
    registry: str,
    state: Path,
    names: list[str],
    *,
    live: bool,
) -> Any:
    """The rule strategy, or the model (its predictions and outcomes go to
    ``STATE/outcomes.sqlite``). Live, a model's features are computed over the bars each needs
    to float64 resolution (``bounded``: 542 bars for the default cnn_lstm features, not the
    whole history); a replay computes them over all bars, as the model backtest does."""
    from celeris.live.signals import ModelSignals, RuleSignals

    if strategy is not None:
        from celeris.backtest.strategies import get_strategy
        from celeris.cli.options import single_param_values

        return RuleSignals(strategy, single_param_values(param or [], get_strategy(strategy)))
    assert model is not None
    from celeris.serving.outcomes import OutcomeStore

    store = OutcomeStore(Path(state) / "outcomes.sqlite")
    common: dict[str, Any] = {
        "threshold": threshold,
        "outcomes": store,
        "run": Path(state).name,
        "symbols": tuple(names),
        "bounded": live,
    }
    if Path(model).is_dir():
        from celeris.models.predictor import Predictor

        return ModelSignals(Predictor.load(model), model_name=Path(model).name, **common)
    from celeris.serving.registry import ModelRegistry

    record, predictor = ModelRegistry(registry).load(model)
    return ModelSignals(
        predictor, model_version=int(record.version), model_name=model.split("@")[0], **common
    )


def _default_history(source: Any) -> int:
    """Live history: 1000 bars, or more where the source needs them (its warm-up and the new
    bar; a model's bounded features: ``FeatureSpec.bars_settled``, e.g. 1,193 for ``ema_60``)."""
    need = source.warmup + 1
    spec = getattr(source, "spec", None)
    if spec is not None:
        need = max(need, spec.bars_settled(source.input_size))
    return max(1000, need)


def _publisher(socket: Path | None, journal: Any, retain: int) -> Any:
    if socket is None:
        return None
    from celeris.serving.feed import SignalPublisher

    Path(socket).parent.mkdir(parents=True, exist_ok=True)
    return SignalPublisher(socket, first_sequence=journal.first_unpublished(), retain=retain)


def _metrics(port: int | None, names: list[str], timeframe_ns: int) -> Any:
    from celeris.live.metrics import LiveMetrics

    return LiveMetrics(names, timeframe_ns=timeframe_ns) if port is not None else None


async def _drive(
    loop: Any,
    bars: Any,
    metrics: Any,
    address: tuple[str, int | None],
    duration: float | None,
    replay: bool,
    funding: Any = None,
) -> int:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    running.add_signal_handler(signal.SIGUSR1, loop.kill, "SIGUSR1")
    runner = None
    if metrics is not None:
        from aiohttp import web

        from celeris.live.metrics import admin_app

        metrics.loop = loop
        metrics.stream = None if replay else bars
        metrics.funding = funding
        runner = web.AppRunner(admin_app(metrics, loop.kill, loop.release))
        await runner.setup()
        host, port = address
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"--metrics-host {host} --metrics-port {port}: {exc}") from None
        bound = runner.addresses[0][1] if runner.addresses else port
        err_console.print(f"metrics and admin on http://{host}:{bound}", highlight=False)
        metrics.ready_reason = None
    if duration is not None:
        running.call_later(duration, stop.set)
    try:
        return await loop.run(
            bars, stop=stop, stale=None if replay else bars.stale, until_exhausted=replay,
            funding=funding,
        )  # fmt: skip
    finally:
        if not replay:
            with contextlib.suppress(Exception):
                await bars.close()
        if funding is not None and hasattr(funding, "close"):
            with contextlib.suppress(Exception):
                await funding.close()
        if runner is not None:
            await runner.cleanup()


def _report(loop: Any, total: int, json_out: bool) -> None:
    account = loop.account
    summary: dict[str, Any] = {
        "bars": total,
        "signals": int(loop.journal.next_signal_id - 1),
        "fills": loop.journal.fill_count,
        "kill_switch": loop.risk.killed,
        "risk_blocked": dict(loop.risk.blocked),
    }
    stats = account.book().stats() if account.n else None
    if stats is not None:
        summary["stats"] = stats.to_dict(orient="records")
        summary["positions"] = account.positions.to_dict()
    if json_out:
        print_json(summary)
        return
    console.print(
        f"{total:,} bars processed, {summary['signals']:,} signals, {summary['fills']:,} fills",
        highlight=False,
    )
    if stats is not None:
        from celeris.backtest.metrics import format_metric

        for metric in ("end_value", "total_return", "sharpe", "max_drawdown", "trades"):
            if metric in stats:
                value = format_metric(metric, stats[metric].iloc[0])
                console.print(f"  {metric}: {value}", highlight=False)
