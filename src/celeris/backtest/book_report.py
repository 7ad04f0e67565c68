"""The HTML report of a :class:`~celeris.backtest.Book`: one group's account on one page.

``write_book_report`` draws, for one group (one shared-cash account): a header with the setup,
the key metrics (the single-portfolio report's table and number formatting, plus the book's
exposure and turnover), equity and drawdown, the weights of its assets and of cash over time as
a stacked area, each asset's P&L contribution, gross and net exposure, and every asset's price
(rebased to 100 at its listing) with its orders marked by kind. The scaffolding (page, style,
time axis, downsampling, atomic write) is :mod:`celeris.backtest.report`'s; plotly.js is inlined
once, so the file opens offline.

How an order kind is drawn is one entry of :data:`ORDER_MARKERS` (a new kind, such as a
perpetual future's liquidation, is one more entry).

No PNG export: :func:`celeris.backtest.report.write_png` draws a single column's price, trades
and equity from a :class:`~celeris.backtest.Portfolio`; nothing of it but the atomic write
applies to a book.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from celeris.backtest.metrics import format_metric
from celeris.backtest.portfolio import FILL_RULES
from celeris.backtest.report import (
    MAX_PLOT_BARS,
    PLOTLY_CONFIG,
    add_equity_drawdown,
    atomic_write,
    html_document,
    metrics_table_html,
    plot_positions,
    plot_x,
    plotly_x,
)
from celeris.errors import ConfigError, did_you_mean
from celeris.formatting import NumberKind, format_duration, format_number, format_timestamp
from celeris.jsonsafe import to_python

if TYPE_CHECKING:
    from celeris.backtest.book import Book  # Book imports this module back

__all__ = ["ORDER_MARKERS", "SECTIONS", "OrderMarker", "write_book_report"]


@dataclass(frozen=True)
class OrderMarker:
    """How the orders of one kind are drawn on the price chart (plotly marker symbols)."""

    label: str  # legend entry
    buy_symbol: str
    sell_symbol: str
    color: str
    size: int = 9


#: One entry per order kind of :attr:`Book.orders` (its ``kind`` column). A kind missing here is
#: still drawn, as a grey circle named by the kind.
ORDER_MARKERS: dict[str, OrderMarker] = {
    "order": OrderMarker("Order", "triangle-up", "triangle-down", "#1f77b4"),
    "stop": OrderMarker("Stop", "x", "x", "#ff7f0e", size=10),
    "delisting": OrderMarker("Delisting", "square", "square", "#333333"),
    "liquidation": OrderMarker("Liquidation", "star", "star", "#d62728", size=13),
    "limit": OrderMarker("Limit fill", "triangle-up-open", "triangle-down-open", "#2ca02c"),
}

#: The report's sections, in order: (anchor id, heading).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("metrics", "Key metrics"),
    ("equity", "Equity and drawdown"),
    ("weights", "Weights over time"),
    ("contribution", "P&L contribution by asset"),
    ("exposure", "Gross and net exposure"),
    ("orders", "Prices and orders"),
)

#: Book metrics shown beside the portfolio report's, with their labels.
_BOOK_LABELS = {
    "mean_gross_exposure": "Mean gross exposure",
    "mean_net_exposure": "Mean net exposure",
    "turnover": "Turnover",
    # perpetual books only (Book.perp_stats)
    "funding_paid": "Funding paid",
    "funding_received": "Funding received",
    "liquidations": "Liquidations",
    "mean_margin_usage": "Mean margin usage",
    "max_margin_usage": "Max margin usage",
    "mean_leverage": "Mean leverage",
    "max_leverage": "Max leverage",
}
#: How the book's own metrics are shown (the others: by format_metric).
_STAT_KINDS: dict[str, NumberKind] = {
    "mean_gross_exposure": "percent",
    "mean_net_exposure": "percent",
    "funding_paid": "cash",
    "funding_received": "cash",
    "liquidations": "count",
    "mean_margin_usage": "percent",
    "max_margin_usage": "percent",
    "mean_leverage": "ratio",
    "max_leverage": "ratio",
}
#: Orders of one kind beyond this many are counted in the table but not marked on the chart.
MAX_MARKERS = 5_000
#: Points (bars x series) drawn in all; long books with many assets draw fewer bars.
_MAX_POINTS = 400_000
_MIN_PLOT_BARS = 2_000
_CASH_COLOR = "#b0b0b0"
_GROSS_COLOR = "#333333"
_NET_COLOR = "#1f77b4"
_GAIN_COLOR = "#1a9850"
_LOSS_COLOR = "#d73027"
_UNKNOWN_KIND_COLOR = "#7f7f7f"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _label(label: Any) -> str:
    values = label if isinstance(label, tuple) else (label,)
    return ", ".join(str(to_python(v)) for v in values)


def marker_for(kind: str) -> OrderMarker:
    """The marker of an order kind (a kind without an entry: a grey circle named by it)."""
    found = ORDER_MARKERS.get(kind)
    return (
        found if found is not None else OrderMarker(kind, "circle", "circle", _UNKNOWN_KIND_COLOR)
    )


# ---------------------------------------------------------------------------------------------
# the group's data
# ---------------------------------------------------------------------------------------------
def _resolve_group(book: Book, group: Any) -> int:
    """Position of the group to report: the first by default, else the one labelled ``group``."""
    if len(book.groups) == 0:
        raise ConfigError("the book has no groups to report")
    if group is None:
        return 0
    loc = np.array([-1])
    if isinstance(group, Hashable):  # a list or an array names no group
        try:
            key: Any = [group]
            loc = book.groups.get_indexer_for(key)
        except (TypeError, ValueError, KeyError):
            pass
    if len(loc) != 1 or loc[0] < 0:
        names = [_label(g) for g in book.groups]
        shown = ", ".join(names[:10])
        if len(names) > 10:
            shown += f", ... ({len(names):,} groups)"
        raise ConfigError(
            f"no group {group!r} in this book{did_you_mean(str(group), names[:10_000])}; "
            f"its groups are: {shown}"
        )
    return int(loc[0])


@dataclass(frozen=True)
class _Group:
    """Everything drawn for one group, already downsampled to the plotted bars ``pos``."""

    label: Any
    pos: np.ndarray  # [n_plot] bars drawn
    x_all: np.ndarray  # [n_bars] x value of every bar
    x_label: str
    n_bars: int
    init_cash: float
    equity: np.ndarray  # [n_bars]
    drawdown: np.ndarray  # [n_bars]
    gross: np.ndarray  # [n_bars]
    net: np.ndarray  # [n_bars]
    cash_weight: np.ndarray  # [n_bars]
    weights: np.ndarray  # [n_bars, n_cols] of the group's columns
    names: list[str]  # [n_cols] display name of each column
    assets: list[str]  # [n_assets] the assets the group trades, first-column order
    prices: np.ndarray  # [n_bars, n_assets] close rebased to 100 at each asset's listing
    base: np.ndarray  # [n_assets] close at each asset's first listed bar
    first: np.ndarray  # [n_assets] first listed bar
    last: np.ndarray  # [n_assets] last listed bar
    contribution: pd.DataFrame  # pnl and share of each column
    funding: np.ndarray | None  # [n_cols] funding paid (+) or received (-); None: a spot group
    orders: pd.DataFrame  # the group's orders, with x added

    @property
    def x(self) -> np.ndarray:
        return self.x_all[self.pos]

    @property
    def downsampled(self) -> bool:
        return len(self.pos) < self.n_bars


def _column_names(book: Book, cols: np.ndarray) -> list[str]:
    """``AAA`` for a column named by its asset; of multi-level labels, only the levels that vary
    within the group (``10, AAA`` for (fast, symbol) columns grouped by another level); the
    asset is added in brackets when the shown label does not name it."""
    labels = book.columns[cols]
    if isinstance(labels, pd.MultiIndex):
        varying = [
            lvl for lvl in range(labels.nlevels) if labels.get_level_values(lvl).nunique() > 1
        ]
        keep = varying or [labels.nlevels - 1]
        shown = [tuple(label[lvl] for lvl in keep) for label in labels]
    else:
        shown = [(label,) for label in labels]
    names = []
    for c, values in zip(cols, shown, strict=True):
        asset = book.assets[book.asset_of[c]]
        text = _label(values)
        if not any(v == asset for v in values):
            text += f" ({_label(asset)})"
        names.append(text)
    return names


def _group_data(book: Book, g: int) -> _Group:
    cols = np.flatnonzero(book.group_of == g)
    equity = book.equity.iloc[:, g].to_numpy(dtype=np.float64)
    drawdown = book.drawdown.iloc[:, g].to_numpy(dtype=np.float64)
    gross = book.gross_exposure.iloc[:, g].to_numpy(dtype=np.float64)
    net = book.net_exposure.iloc[:, g].to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # an account worth 0: NaN, no warning
        cash_weight = book.cash.iloc[:, g].to_numpy(dtype=np.float64) / equity
    weights = book.weights.to_numpy(dtype=np.float64)[:, cols]

    asset_pos = list(dict.fromkeys(int(a) for a in book.asset_of[cols]))  # first-seen order
    # Book has no public close; its inputs hold the (n_bars, n_assets) closes, NaN when unlisted.
    close = np.asarray(book._inputs.close, dtype=np.float64)[:, asset_pos]
    listed = ~np.isnan(close)
    first = listed.argmax(axis=0)
    last = len(close) - 1 - listed[::-1].argmax(axis=0)
    base = close[first, np.arange(close.shape[1])]
    prices = close / base * 100.0

    orders = book.orders
    in_group = book.groups.get_indexer_for(pd.Index(list(orders["group"]))) == g
    orders = orders.loc[in_group].reset_index(drop=True)
    x_all, x_label = plot_x(book.index)
    orders = orders.assign(x=x_all[orders["bar"].to_numpy(dtype=np.int64)])

    series = [equity, drawdown, gross, net, *np.nan_to_num(prices).T]
    n_series = len(series) + 2 * (weights.shape[1] + 1)  # weights and cash: up to two bands each
    budget = max(_MIN_PLOT_BARS, min(MAX_PLOT_BARS, _MAX_POINTS // n_series))
    bars = orders["bar"].to_numpy(dtype=np.int64)
    # Order bars join the lines only while they are few; the markers are drawn in any case.
    keep = np.unique(bars) if len(bars) <= budget // 4 else np.empty(0, dtype=np.int64)
    pos = plot_positions([np.nan_to_num(s) for s in series], keep, budget)
    return _Group(
        label=book.groups[g],
        pos=pos,
        x_all=x_all,
        x_label=x_label,
        n_bars=len(equity),
        init_cash=float(book.init_cash.iloc[g]),
        equity=equity,
        drawdown=drawdown,
        gross=gross,
        net=net,
        cash_weight=cash_weight,
        weights=weights,
        names=_column_names(book, cols),
        assets=[_label(book.assets[a]) for a in asset_pos],
        prices=prices,
        base=base,
        first=first,
        last=last,
        contribution=book.contribution.iloc[cols],
        funding=book.funding.to_numpy(dtype=np.float64)[cols] if book.is_perp.iloc[g] else None,
        orders=orders,
    )


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------
def write_book_report(
    book: Book, path: str | Path, *, group: Any = None, title: str | None = None
) -> Path:
    """Write a self-contained interactive HTML report of one group of ``book``; return its path.

    The report holds the setup (period, bars, assets and their listings, fill rule,
    annualisation), the group's key metrics as :meth:`Book.stats` gives them, equity and
    drawdown, the weight of every asset and of cash over time (a stacked area; shorts and
    borrowed cash stack below zero), each asset's P&L contribution (:attr:`Book.contribution`),
    gross and net exposure, and every asset's price rebased to 100 at its listing with its
    orders marked by kind (:data:`ORDER_MARKERS`). plotly.js is inlined, so the file opens
    offline. Long series are downsampled for drawing (the report says so); metrics use every
    bar.

    Parameters
    ----------
    book : Book
        The grouped backtest.
    path : str or Path
        Output file; parent folders are created, the file is replaced atomically.
    group : label, optional
        The group to report (a label of ``book.groups``). Default: the first.
    title : str, optional
        Report title. Default: the book's name (else "Book"), and the group when there are
        several.

    Raises
    ------
    ConfigError
        ``group`` is not a label of ``book.groups``.
    """
    import plotly.graph_objects as go

    g = _resolve_group(book, group)
    data = _group_data(book, g)
    stats = book.stats().iloc[g]
    if title is None:
        title = book.name or "Book"
        if len(book.groups) > 1:
            title += f": group {_label(data.label)}"

    config = dict(PLOTLY_CONFIG)

    def chart(fig: Any, name: str, first: bool = False) -> str:
        return str(
            fig.to_html(
                full_html=False, include_plotlyjs=first, config=config, div_id=f"celeris-{name}"
            )
        )

    heading = dict(SECTIONS)
    parts = [
        _header_html(book, data, title),
        _h2("metrics", heading),
        metrics_table_html(stats, labels=_BOOK_LABELS, formatter=_format_stat),
        _h2("equity", heading),
        chart(_equity_figure(go, data), "equity", first=True),
        _h2("weights", heading),
        chart(_weights_figure(go, data), "weights"),
        _h2("contribution", heading),
        chart(_contribution_figure(go, data), "contribution"),
        _contribution_table_html(data, stats),
        _h2("exposure", heading),
        chart(_exposure_figure(go, data), "exposure"),
        _h2("orders", heading),
        _orders_table_html(data),
        chart(_orders_figure(go, data), "orders"),
    ]
    text = html_document(title, parts, "Celeris book report").encode("utf-8")

    def write(fh: IO[bytes]) -> None:
        fh.write(text)

    return atomic_write(Path(path), write)


def _h2(section: str, heading: dict[str, str]) -> str:
    return f'<h2 id="{section}">{_esc(heading[section])}</h2>'


def _format_stat(name: str, value: Any) -> str:
    kind = _STAT_KINDS.get(name)
    return format_metric(name, value) if kind is None else format_number(value, kind)


def _header_html(book: Book, d: _Group, title: str) -> str:
    period = f"{format_timestamp(book.index[0])} → {format_timestamp(book.index[-1])}"
    spacing = f" of {format_duration(book.freq)}" if book.freq is not None else ""
    n_cols = len(d.names)
    setup = f"{len(d.assets):,} asset{'s' if len(d.assets) != 1 else ''}"
    if n_cols != len(d.assets):
        setup += f" in {n_cols:,} columns"
    if d.funding is not None:
        setup += " (perpetual futures)"
    if len(book.groups) > 1:
        setup += f" · group {_label(d.label)} of {len(book.groups):,}"
    lines = [
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="meta">{_esc(period)} · {len(book.index):,} bars{_esc(spacing)} · '
        f"{_esc(setup)} · one account, start value "
        f"{_esc(format_metric('start_value', d.init_cash))}</p>",
        f'<p class="meta">Fills: {_esc(book.execution)} '
        f"({_esc(FILL_RULES.get(book.execution, book.execution))}) · "
        f"{_esc(book.annualisation.describe())}</p>",
    ]
    listings = _listings_text(d)
    if listings:
        lines.append(f'<p class="meta">Listings: {_esc(listings)}</p>')
    if d.downsampled:
        lines.append(
            f'<p class="note">Long series: the charts draw {len(d.pos):,} of {d.n_bars:,} bars '
            "(each bucket's first bar, its highs and lows, and the order bars while they are "
            "few); metrics use every bar.</p>"
        )
    lines.append("</header>")
    return "\n".join(lines)


def _listings_text(d: _Group) -> str:
    """``BBB listed 2024-01-11 · CCC delisted after 2024-02-09`` for the staggered assets."""
    out = []
    for a, name in enumerate(d.assets):
        if d.first[a] > 0:
            out.append(f"{name} listed {format_timestamp(d.x_all[d.first[a]])}")
        if d.last[a] < d.n_bars - 1:
            out.append(f"{name} delisted after {format_timestamp(d.x_all[d.last[a]])}")
    return " · ".join(out)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _layout(fig: Any, d: _Group, height: int, y_title: str, tickformat: str) -> None:
    fig.update_layout(
        height=height,
        template="plotly_white",
        hovermode="x unified",
        margin={"l": 70, "r": 20, "t": 30, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis={"title": {"text": d.x_label}},
        yaxis={"title": {"text": y_title}, "tickformat": tickformat},
    )


def _equity_figure(go: Any, d: _Group) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        row_heights=[0.65, 0.35],
        subplot_titles=("Equity", "Drawdown"),
    )
    add_equity_drawdown(go, fig, d.x, d.equity[d.pos], d.drawdown[d.pos], d.init_cash, rows=(1, 2))
    fig.update_yaxes(title_text="value", tickformat=",.0f", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text=d.x_label, row=2, col=1)
    fig.update_layout(
        height=620,
        template="plotly_white",
        hovermode="x unified",
        margin={"l": 70, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "x": 0},
    )
    return fig


def _palette(n: int) -> list[str]:
    from plotly.colors import qualitative

    colors = list(qualitative.D3) if n <= len(qualitative.D3) else list(qualitative.Alphabet)
    return [colors[i % len(colors)] for i in range(n)]


def _weights_figure(go: Any, d: _Group) -> Any:
    """A stacked area per column and for cash; negative weights (shorts, borrowed cash) stack
    below zero in a second group, so the two sides never hide each other."""
    x = plotly_x(d.x)
    bands = [*zip(d.names, d.weights.T, _palette(len(d.names)), strict=True)]
    bands.append(("Cash", d.cash_weight, _CASH_COLOR))
    fig = go.Figure()
    for name, weight, color in bands:
        w = weight[d.pos]
        sides = [("long", np.where(w > 0, w, 0.0), True)]
        if (w < 0).any():
            sides.append(("short", np.where(w < 0, w, 0.0), not (w > 0).any()))
        for stack, values, legend in sides:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=values,
                    mode="lines",
                    name=name,
                    stackgroup=stack,
                    legendgroup=name,
                    showlegend=legend,
                    line={"width": 0.5, "color": color},
                    fillcolor=color,
                    hovertemplate="%{y:.2%}",
                )
            )
    _layout(fig, d, 420, "weight", ".0%")
    return fig


def _contribution_figure(go: Any, d: _Group) -> Any:
    pnl = d.contribution["pnl"].to_numpy(dtype=np.float64)
    share = d.contribution["share"].to_numpy(dtype=np.float64)
    fig = go.Figure(
        go.Bar(
            x=d.names,
            y=pnl,
            name="P&L",
            marker={"color": [_GAIN_COLOR if v >= 0 else _LOSS_COLOR for v in pnl]},
            text=[format_metric("pnl", v) for v in pnl],
            customdata=share,
            hovertemplate="%{x}: %{text} (%{customdata:.2%} of start value)<extra></extra>",
        )
    )
    fig.update_layout(
        height=360,
        template="plotly_white",
        margin={"l": 70, "r": 20, "t": 20, "b": 50},
        xaxis={"title": {"text": "asset"}, "type": "category"},
        yaxis={"title": {"text": "P&L after fees"}, "tickformat": ",.0f"},
    )
    return fig


def _exposure_figure(go: Any, d: _Group) -> Any:
    x = plotly_x(d.x)
    fig = go.Figure()
    for name, values, color in (("Gross", d.gross, _GROSS_COLOR), ("Net", d.net, _NET_COLOR)):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values[d.pos],
                mode="lines",
                name=f"{name} exposure",
                line={"color": color, "width": 1.2},
                hovertemplate="%{y:.2%}",
            )
        )
    fig.add_hline(y=1.0, line={"color": "#999", "dash": "dash", "width": 1})
    _layout(fig, d, 340, "share of value", ".0%")
    return fig


def _orders_figure(go: Any, d: _Group) -> Any:
    """Every asset's close rebased to 100 at its listing, its orders marked at their fill price
    on the same scale; one marker trace per order kind (hover: asset, side, size, price)."""
    x = plotly_x(d.x)
    fig = go.Figure()
    colors = _palette(len(d.assets))
    for a, name in enumerate(d.assets):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=d.prices[d.pos, a],
                mode="lines",
                name=name,
                line={"color": colors[a], "width": 1.1},
                hovertemplate="%{y:.2f}",
            )
        )
    for trace in _order_marker_traces(go, d):
        fig.add_trace(trace)
    fig.add_hline(y=100.0, line={"color": "#999", "dash": "dash", "width": 1})
    _layout(fig, d, 480, "close (100 at listing)", ",.0f")
    fig.update_layout(hovermode="closest")
    return fig


def _order_marker_traces(go: Any, d: _Group) -> list[Any]:
    """One marker trace per order kind present (at most :data:`MAX_MARKERS` orders each)."""
    orders = d.orders
    if orders.empty:
        return []
    asset_pos = {name: a for a, name in enumerate(d.assets)}
    traces = []
    for kind in _kinds(orders):
        sel = orders[orders["kind"] == kind]
        if len(sel) > MAX_MARKERS:
            continue  # counted in the table above the chart, which says they are not marked
        style = marker_for(kind)
        a = np.array([asset_pos[_label(v)] for v in sel["asset"]], dtype=np.int64)
        buy = (sel["side"] == "buy").to_numpy()
        traces.append(
            go.Scatter(
                x=plotly_x(sel["x"].to_numpy()),
                y=sel["price"].to_numpy(dtype=np.float64) / d.base[a] * 100.0,
                mode="markers",
                name=style.label,
                marker={
                    "symbol": np.where(buy, style.buy_symbol, style.sell_symbol).tolist(),
                    "color": style.color,
                    "size": style.size,
                    "line": {"width": 0.5, "color": "#222"},
                },
                customdata=_hover_rows(sel),
                hovertemplate=f"{_esc(style.label)}: %{{customdata[0]}} %{{customdata[1]}} "
                "%{customdata[2]:.4g} at %{customdata[3]:,.4f}<extra></extra>",
            )
        )
    return traces


def _hover_rows(orders: pd.DataFrame) -> np.ndarray:
    """[n_orders, 4] asset, side, size, price (numbers kept numbers, for plotly's formats)."""
    rows = np.empty((len(orders), 4), dtype=object)
    rows[:, 0] = [_label(v) for v in orders["asset"]]
    rows[:, 1] = orders["side"].to_numpy()
    rows[:, 2] = orders["size"].to_numpy(dtype=np.float64)
    rows[:, 3] = orders["price"].to_numpy(dtype=np.float64)
    return rows


def _kinds(orders: pd.DataFrame) -> list[str]:
    """The kinds present: the table's order first, then any other in order of appearance."""
    present = list(dict.fromkeys(orders["kind"]))
    return [k for k in ORDER_MARKERS if k in present] + [
        k for k in present if k not in ORDER_MARKERS
    ]


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _contribution_table_html(d: _Group, stats: pd.Series) -> str:
    """P&L per column (best first), its funding for a perpetual book, the total, and the
    group's end minus start value."""
    perp = d.funding is not None
    # [n_cols] name, pnl, share, funding (NaN for spot: not shown)
    table = d.contribution.assign(
        name=d.names, funding=d.funding if d.funding is not None else np.nan
    ).sort_values("pnl", ascending=False, kind="stable")

    def row(cell: str, name: str, pnl: float, share: float, funding: float) -> str:
        cells = [format_metric("pnl", pnl), format_number(share, "percent")]
        if perp:
            cells.append(format_number(funding, "cash"))
        return (
            f'<tr><{cell} class="k">{_esc(name)}</{cell}>'
            + "".join(f"<{cell}>{_esc(c)}</{cell}>" for c in cells)
            + "</tr>"
        )

    rows = [
        row("td", *values)
        for values in zip(
            table["name"], table["pnl"], table["share"], table["funding"], strict=True
        )
    ]
    total = float(table["pnl"].sum())
    rows.append(row("th", "Total", total, total / d.init_cash, float(table["funding"].sum())))
    change = float(stats["end_value"]) - d.init_cash
    pnl_head = "P&amp;L after fees and funding" if perp else "P&amp;L after fees"
    head = f'<tr><th class="k">Asset</th><th>{pnl_head}</th><th>Share of start value</th>'
    head += "<th>Funding paid (+) / received (−)</th></tr>" if perp else "</tr>"
    note = (
        " Funding is shown as totals per asset (the book keeps no per-bar funding record)."
        if perp
        else ""
    )
    return (
        f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"
        f'<p class="meta">End value − start value: {_esc(format_metric("pnl", change))}.'
        f"{_esc(note)}</p>"
    )


def _orders_table_html(d: _Group) -> str:
    """Orders per asset and kind, with a note for kinds too many to mark."""
    orders = d.orders
    kinds = _kinds(orders) if not orders.empty else ["order"]
    counts = Counter(zip((_label(v) for v in orders["asset"]), orders["kind"], strict=True))
    head = '<th class="k">Asset</th>' + "".join(
        f"<th>{_esc(marker_for(k).label)}</th>" for k in kinds
    )
    rows = [
        f'<tr><td class="k">{_esc(name)}</td>'
        + "".join(f"<td>{_esc(format_number(counts[name, k], 'count'))}</td>" for k in kinds)
        + "</tr>"
        for name in d.assets
    ]
    totals = [sum(n for (_, kind), n in counts.items() if kind == k) for k in kinds]
    rows.append(
        '<tr><th class="k">All</th>'
        + "".join(f"<th>{_esc(format_number(c, 'count'))}</th>" for c in totals)
        + "</tr>"
    )
    notes = [
        f'<p class="note">{n:,} {_esc(marker_for(k).label.lower())} orders are more than '
        f"{MAX_MARKERS:,}: counted here, not marked on the chart.</p>"
        for k, n in zip(kinds, totals, strict=True)
        if n > MAX_MARKERS
    ]
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return table + "".join(notes)
