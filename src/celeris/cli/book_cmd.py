"""``celeris backtest|sweep --cash-sharing``: a rule strategy on several assets, one account.

Each asset's signals are the strategy's on that asset's own bars
(:func:`celeris.cli.sources.asset_signals`); every parameter set trades all the assets from one
balance (``from_signals(panel, ..., cash_sharing=True)``), so a sweep is a set of books, one
per parameter set, ranked like single-asset variants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celeris.cli._common import console, print_json
from celeris.errors import ConfigError


def check_book_flags(
    specs: list[str],
    *,
    cash_sharing: bool,
    call_seq: str | None,
    nan_policy: str | None,
    command: str,
) -> None:
    """Several ``--data`` need ``--cash-sharing``; ``--call-seq`` and ``--nan-policy`` mean
    nothing without it."""
    if len(specs) > 1 and not cash_sharing:
        raise ConfigError(
            f"{command} got {len(specs)} --data sources ({', '.join(specs)}); several assets are "
            "backtested as one book: add --cash-sharing to trade them from one account"
        )
    if call_seq is not None and not cash_sharing:
        raise ConfigError("--call-seq orders the orders of a shared account; add --cash-sharing")
    if nan_policy is not None and not cash_sharing:
        raise ConfigError(
            "--nan-policy aligns several assets' bars on one book; add --cash-sharing"
        )


def refuse_model(strategy: str) -> None:
    if strategy.startswith("model:"):
        raise ConfigError(
            "--cash-sharing trades rule strategies on several assets; a model:PATH strategy "
            "trades one asset (leave out --cash-sharing)"
        )


def simulate_book(
    panel: Any, strategy: Any, combos: Any, opts: dict[str, Any], device: str, call_seq: str
) -> Any:
    """The :class:`~celeris.backtest.Book` of every parameter set of ``combos`` (one account
    each) trading every asset of ``panel``."""
    from celeris.backtest import from_signals
    from celeris.cli.sources import asset_signals

    entries, exits = asset_signals(strategy, panel, combos)
    return from_signals(
        panel, entries, exits, cash_sharing=True, call_seq=call_seq, device=device, **opts
    )


def book_setup(book: Any, panel: Any, specs: list[str], call_seq: str) -> dict[str, Any]:
    """The run's setup for ``--json``: sources, call sequence, fill rule, each asset's listing."""
    from celeris.cli.format import setup_json

    return {
        "data": specs,
        "cash_sharing": True,
        "call_seq": call_seq,
        **setup_json(book.execution, book.annualisation, book.index),
        "listed": {
            str(s): [str(panel.first_valid[s]), str(panel.last_valid[s])] for s in panel.symbols
        },
    }


# ---- celeris backtest --cash-sharing ----------------------------------------------------------
def book_backtest_output(
    book: Any,
    panel: Any,
    *,
    name: str,
    params: dict[str, Any],
    specs: list[str],
    call_seq: str,
    caption: str,
    trades: int,
    html: Path | None,
    png: Path | None,
    json_out: bool,
) -> None:
    """Print (or ``--json``) one book's stats, per-asset P&L and last trades; write ``--html``."""
    if png is not None:
        raise ConfigError(
            "--png draws one asset's portfolio; a --cash-sharing book has its chart in --html"
        )
    stats = book.stats().iloc[0]
    if json_out:
        from celeris.cli.format import jsonable

        print_json(
            {
                "strategy": name,
                "params": params,
                **book_setup(book, panel, specs, call_seq),
                "stats": {k: jsonable(v) for k, v in stats.items()},
                "assets": _asset_rows(book),
                "trades": [
                    {k: jsonable(v) for k, v in row.items()}
                    for row in book.trades.to_dict("records")
                ],
            }
        )
    else:
        _print_book(book, stats, caption, trades)
    if html is not None:
        written = book.to_html(html, title=caption)
        if not json_out:
            console.print(f"wrote {written}")


def _asset_rows(book: Any, group: Any = None) -> dict[str, dict[str, float]]:
    """P&L, share of the start value, final weight and orders of every asset of a group."""
    contribution = book.contribution
    weights = book.weights.iloc[-1]
    orders = book.orders
    label = book.groups[0] if group is None else group
    rows = contribution[contribution["group"] == label]
    out = {}
    for column, row in rows.iterrows():
        asset = str(row["asset"])
        out[asset] = {
            "pnl": float(row["pnl"]),
            "share": float(row["share"]),
            "final_weight": float(weights[column]),
            "orders": int(((orders["group"] == label) & (orders["asset"] == row["asset"])).sum()),
        }
    return out


def _print_book(book: Any, stats: Any, caption: str, trades: int) -> None:
    from rich.table import Table

    from celeris.cli.format import frame_table, stats_table
    from celeris.formatting import format_number

    console.print(caption, highlight=False, markup=False)
    console.print(stats_table(stats, "the book (one account)"))
    table = Table(title="assets on the shared account", header_style="bold")
    for col in ("asset", "P&L", "share of start %", "weight at end %", "orders"):
        table.add_column(col, justify="left" if col == "asset" else "right")
    for asset, row in _asset_rows(book).items():
        table.add_row(
            asset,
            format_number(row["pnl"], "cash"),
            f"{100 * row['share']:.2f}",
            f"{100 * row['final_weight']:.2f}",
            f"{row['orders']:,}",
        )
    console.print(table)
    tr = book.trades
    if len(tr) and trades > 0:
        shown = (
            tr.sort_values("entry_time", kind="stable")
            .tail(trades)
            .set_index("entry_time")[
                ["asset", "direction", "entry_price", "exit_time", "exit_price", "pnl", "return"]
            ]
        )
        console.print(frame_table(shown, f"last {min(trades, len(tr))} of {len(tr)} trades"))


# ---- celeris sweep --cash-sharing -------------------------------------------------------------
def book_sweep_output(
    book: Any,
    panel: Any,
    *,
    strategy: Any,
    combos: Any,
    specs: list[str],
    call_seq: str,
    caption: str,
    metric: str,
    top: int,
    elapsed: float,
    html: Path | None,
    csv: Path | None,
    json_out: bool,
    write_csv: Any,
) -> None:
    """Rank the books of a sweep by ``metric``; print (or ``--json``) the best ``top``."""
    from celeris.cli.format import SUMMARY_COLUMNS, frame_table, jsonable

    stats = book.stats()
    best = book.best(metric, top)
    if csv is not None:
        write_csv(stats, csv)
    if json_out:
        names = list(combos.columns)
        print_json(
            {
                "strategy": strategy.name,
                **book_setup(book, panel, specs, call_seq),
                "variants": len(combos),
                "seconds": elapsed,
                "metric": metric,
                "top": [
                    {
                        **{
                            n: jsonable(v)
                            for n, v in zip(
                                names, idx if isinstance(idx, tuple) else (idx,), strict=True
                            )
                        },
                        **{k: jsonable(v) for k, v in row.items()},
                    }
                    for idx, row in best.iterrows()
                ],
            }
        )
    else:
        rate = len(combos) * len(book.index) * len(book.assets) / max(elapsed, 1e-9)
        console.print(caption, highlight=False, markup=False)
        console.print(
            f"[bold]{len(combos):,}[/] books (one account each) x [bold]{len(book.assets)}[/] "
            f"assets x [bold]{len(book.index):,}[/] bars in {elapsed:.2f} s "
            f"({rate / 1e6:,.1f} M bar-columns/s)"
        )
        console.print(
            frame_table(
                best,
                f"top {len(best)} by {metric}",
                [metric, *[c for c in SUMMARY_COLUMNS if c != metric]],
            )
        )
    if html is not None:
        written = book.to_html(html, group=best.index[0], title=caption)
        if not json_out:
            console.print(f"wrote {written}")
    if csv is not None and not json_out:
        console.print(f"wrote {csv}")
