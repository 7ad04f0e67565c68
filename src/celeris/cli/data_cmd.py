"""``celeris data``: list, inspect, generate and download market data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
from celeris.errors import ConfigError, StoreError

data_app = typer.Typer(
    help=(
        "Market data: inspect files and samples, make synthetic bars, download from exchanges "
        "into the local store ($CELERIS_HOME/data, default ~/.celeris/data).\n\n"
        "Examples:\n\n"
        "  celeris data load sample:sp500 --head 5\n\n"
        "  celeris data synthetic --bars 100000 --freq 1min --seed 0 --out btc.parquet\n\n"
        "  celeris data download binance BTC/USDT --timeframe 1h --since 2024-01-01\n\n"
        "  celeris data download binance BTC/USDT:USDT --funding --since 2024-01-01\n\n"
        "  celeris data list"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)


def _fmt_ts(ts: Any) -> str:
    """Format a UTC timestamp compactly (tables say the zone once, in the header)."""
    from celeris.formatting import format_timestamp

    return format_timestamp(ts, precision="second", missing="")


def _freq_text(td: Any) -> str:
    import pandas as pd

    td = pd.Timedelta(td)
    if td >= pd.Timedelta(days=1) and td % pd.Timedelta(days=1) == pd.Timedelta(0):
        return f"{td.days}D"
    offset = pd.tseries.frequencies.to_offset(td)
    return f"{offset.n}{offset.name}"


def _summary(bars: Any, source: str) -> dict[str, Any]:
    import pandas as pd

    idx = bars.index
    spacing = pd.Series(idx).diff().dropna()
    median = spacing.median() if len(spacing) else None
    if median is None:
        frequency = None
    elif bool((spacing == median).all()):
        frequency = f"{_freq_text(median)} (regular)"
    else:
        frequency = (
            f"{_freq_text(median)} (median spacing; {int((spacing > median).sum()):,} longer)"
        )
    return {
        "source": source,
        "rows": len(bars),
        "first": idx[0].isoformat(),
        "last": idx[-1].isoformat(),
        "frequency": frequency,
        "price_min": float(bars["low"].min()),
        "price_max": float(bars["high"].max()),
        "last_close": float(bars["close"].iloc[-1]),
        "total_volume": float(bars["volume"].sum()),
        "columns": [str(c) for c in bars.columns],
    }


def _bars_table(bars: Any, title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("time (UTC)", no_wrap=True)
    for c in bars.columns:
        table.add_column(str(c), justify="right")
    for ts, row in bars.iterrows():
        table.add_row(_fmt_ts(ts), *(f"{v:,.6g}" if isinstance(v, float) else str(v) for v in row))
    return table


def _print_summary(info: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(show_header=False, title=info["source"], title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("rows", "first", "last", "frequency", "price_min", "price_max", "last_close"):
        value = info[key]
        table.add_row(key, f"{value:,.6g}" if isinstance(value, float) else f"{value}")
    console.print(table)


@data_app.command("list")
@cli_errors
def list_cmd(
    json_out: bool = typer.Option(False, "--json", help="Write JSON to stdout instead of a table."),
) -> None:
    """List the bars in the local store.

    Example: [bold]celeris data list --json[/]
    """
    from rich.table import Table

    from celeris.data import Store

    store = Store()
    listing = store.list()
    if json_out:
        print_json(listing.to_dict(orient="records"))
        return
    if listing.empty:
        console.print(
            f"nothing stored under {store.root}; try "
            "[bold]celeris data download binance BTC/USDT --timeframe 1h --since 2024-01-01[/]"
        )
        return
    from rich import box

    table = Table(
        title=f"store: {store.root}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for c in ("exchange", "symbol", "tf", "rows", "first (UTC)", "last (UTC)", "missing"):
        table.add_column(c, justify="right" if c in ("rows", "missing") else "left", no_wrap=True)
    for rec in listing.to_dict(orient="records"):
        table.add_row(
            rec["exchange"],
            rec["symbol"],
            rec["timeframe"],
            f"{rec['rows']:,}",
            _fmt_ts(rec["first"]),
            _fmt_ts(rec["last"]),
            ""
            if rec["missing"] is None or rec["missing"] != rec["missing"]
            else f"{rec['missing']:,}",
        )
    console.print(table)


@data_app.command("load")
@cli_errors
@date_range_options
def load_cmd(
    source: str = typer.Argument(
        ...,
        help="A .csv/.csv.gz/.parquet file, sample:sp500, sample:nasdaq or "
        "store:EXCHANGE/SYMBOL/TIMEFRAME.",
    ),
    head: int = typer.Option(5, "--head", "-n", min=0, help="Rows to show (0 for none)."),
    json_out: bool = typer.Option(False, "--json", help="Write the summary as JSON to stdout."),
    nan_policy: str = typer.Option("error", help="NaN handling: error, ffill or drop."),
    span: Options = FILLED,
) -> None:
    """Load and validate bars, then show a summary and the first rows.

    Examples:

      celeris data load sample:sp500 --head 3

      celeris data load prices.csv.gz --json

      celeris data load store:binance/BTC/USDT/1h
    """
    import pandas as pd

    bars = load_bars(source, span, nan_policy=nan_policy)
    info = _summary(bars, source)
    if json_out:
        head_rows = bars.head(head)
        info["head"] = [
            {"time": ts.isoformat(), **{k: float(v) for k, v in row.items()}}
            for ts, row in zip(
                pd.DatetimeIndex(head_rows.index), head_rows.to_dict("records"), strict=True
            )
        ]
        print_json(info)
        return
    _print_summary(info)
    if head:
        console.print(_bars_table(bars.head(head), f"first {min(head, len(bars))} rows"))


@data_app.command("synthetic")
@cli_errors
def synthetic_cmd(
    bars: int = typer.Option(100_000, "--bars", min=1, help="Number of bars."),
    freq: str = typer.Option("1min", "--freq", help="Bar length (pandas frequency)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; same seed, same bars."),
    start: str = typer.Option("2020-01-01", "--start", help="Time of the first bar (UTC)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write to a .parquet, .csv or .csv.gz file."
    ),
    json_out: bool = typer.Option(False, "--json", help="Write the summary as JSON to stdout."),
) -> None:
    """Generate crypto-like bars (GBM + GARCH(1,1) volatility clustering + jumps).

    Example: [bold]celeris data synthetic --bars 1000000 --freq 1min --seed 0 --out btc.parquet[/]
    """
    from celeris.data import synthetic

    name = out.name.lower() if out is not None else ""
    if out is not None and not name.endswith((".parquet", ".pq", ".csv", ".csv.gz")):
        raise ConfigError(f"--out {out}: use a .parquet, .pq, .csv or .csv.gz file name")
    if out is not None and not out.parent.is_dir():
        raise ConfigError(
            f"--out {out}: the directory {out.parent} does not exist; create it first"
        )
    frame = synthetic(bars, freq=freq, seed=seed, start=start)
    if out is not None:
        _write_frame(frame, out, name)
    info = _summary(frame, str(out) if out is not None else f"synthetic(seed={seed})")
    if json_out:
        print_json(info)
        return
    _print_summary(info)
    if out is not None:
        console.print(f"wrote {len(frame):,} bars to {out}")


def _write_frame(frame: Any, out: Path, name: str) -> None:
    """Write bars to ``out`` atomically: a kill mid-write leaves the previous file intact."""
    from celeris.data.atomic import atomic_path, sweep_temp_files

    sweep_temp_files(out)  # left by earlier runs that were killed
    try:
        with atomic_path(out) as tmp:
            if name.endswith((".parquet", ".pq")):
                frame.to_parquet(tmp)
            else:
                compression = "gzip" if name.endswith(".gz") else None
                frame.to_csv(
                    tmp,
                    index_label="time",
                    date_format="%Y-%m-%dT%H:%M:%S%z",
                    compression=compression,
                )
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}") from None


@data_app.command("download")
@cli_errors
def download_cmd(
    exchange: str = typer.Argument(..., help="ccxt exchange id, e.g. binance, kraken, okx."),
    symbol: str = typer.Argument(
        ..., help="Unified symbol, e.g. BTC/USDT; a perpetual swap is BTC/USDT:USDT."
    ),
    timeframe: str | None = typer.Option(
        None, "--timeframe", "-t", help="Bar length: 1m, 5m, 1h, 1d... (default 1h)."
    ),
    funding: bool = typer.Option(
        False,
        "--funding",
        help="Download the funding rates of a perpetual swap (stored beside its bars) "
        "instead of bars.",
    ),
    since: str = typer.Option(..., "--since", help="Start (UTC), e.g. 2024-01-01."),
    until: str | None = typer.Option(None, "--until", help="End, exclusive (UTC); default now."),
    store: bool = typer.Option(True, "--store/--no-store", help="Save to the local store."),
    limit: int = typer.Option(
        1000, "--limit", min=1, help="Bars (or funding records) per request."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Write the summary as JSON to stdout."),
) -> None:
    """Download bars, or a perpetual swap's funding rates, through ccxt into the local store.

    Downloads resume where they stopped: only what is missing before the first or after the
    last stored row is requested. Gaps (bars or funding times the exchange does not have) are
    listed after the download. Funding rates are stored beside the bars
    (store:EXCHANGE/SYMBOL/funding) and read back with load_funding.

    Examples:

      celeris data download binance BTC/USDT --timeframe 1h --since 2024-01-01

      celeris data download kraken ETH/USD -t 1d --since 2020-01-01 --until 2024-01-01

      celeris data download binance BTC/USDT:USDT --funding --since 2024-01-01
    """
    from celeris.data import download
    from celeris.data.exchange import make_exchange

    if funding:
        if timeframe is not None:
            raise ConfigError(
                f"--timeframe {timeframe} does not apply to --funding: funding rates come at the "
                "exchange's funding times"
            )
        _download_funding(
            make_exchange(exchange), symbol, since, until, store, limit, progress, json_out
        )
        return
    timeframe = timeframe or "1h"
    bars = download(
        make_exchange(exchange),
        symbol,
        timeframe,
        since,
        until,
        store=store,
        limit=limit,
        progress=progress and not json_out,
    )
    gaps = bars.attrs.get("gaps", [])
    info = _summary(bars, f"{exchange} {symbol} {timeframe}")
    info["fetched"] = int(bars.attrs.get("fetched", 0))
    info["gaps"] = [
        {"start": g.start.isoformat(), "end": g.end.isoformat(), "missing": g.missing} for g in gaps
    ]
    if json_out:
        print_json(info)
        return
    _print_summary(info)
    console.print(f"fetched {info['fetched']:,} new bars")
    _print_gaps(gaps)


def _print_gaps(gaps: list[Any]) -> None:
    if not gaps:
        return
    from rich.table import Table

    table = Table(title=f"{len(gaps)} gap(s)", title_justify="left")
    for c in ("start", "end", "missing"):
        table.add_column(c)
    for g in gaps[:20]:
        table.add_row(str(g.start), str(g.end), f"{g.missing:,}")
    console.print(table)
    if len(gaps) > 20:
        console.print(f"... and {len(gaps) - 20} more")


def _download_funding(
    ex: Any,
    symbol: str,
    since: str,
    until: str | None,
    store: bool,
    limit: int,
    progress: bool,
    json_out: bool,
) -> None:
    """``celeris data download --funding``: download, then a summary and the gaps."""
    import pandas as pd
    from rich.table import Table

    from celeris.data.funding_download import download_funding

    frame = download_funding(
        ex, symbol, since, until, store=store, limit=limit, progress=progress and not json_out
    )
    interval = frame.attrs.get("interval")
    rate = frame["rate"]
    per_year = pd.Timedelta(days=365) / interval if interval is not None else None
    info: dict[str, Any] = {
        "source": f"{ex.id} {symbol} funding",
        "rows": len(frame),
        "first": frame.index[0].isoformat(),
        "last": frame.index[-1].isoformat(),
        "interval": _freq_text(interval) if interval is not None else None,
        "rate_mean": float(rate.mean()),
        "rate_min": float(rate.min()),
        "rate_max": float(rate.max()),
        "last_rate": float(rate.iloc[-1]),
        "rate_mean_annualised": float(rate.mean() * per_year) if per_year is not None else None,
        "fetched": int(frame.attrs.get("fetched", 0)),
        "gaps": [
            {"start": g.start.isoformat(), "end": g.end.isoformat(), "missing": g.missing}
            for g in frame.attrs.get("gaps", [])
        ],
    }
    if json_out:
        print_json(info)
        return
    table = Table(show_header=False, title=info["source"], title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("rows", "first", "last", "interval"):
        table.add_row(key, f"{info[key]}")
    for key in ("rate_mean", "rate_min", "rate_max", "last_rate", "rate_mean_annualised"):
        value = info[key]
        table.add_row(key, "" if value is None else f"{value:.4%}")
    console.print(table)
    console.print(f"fetched {info['fetched']:,} new funding rates")
    _print_gaps(frame.attrs.get("gaps", []))
