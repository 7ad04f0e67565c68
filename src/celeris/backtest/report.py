"""Backtest reports: one self-contained interactive HTML file, or a static PNG.

``write_html`` draws price with trade markers, equity and drawdown for one column, its key
metrics, the top columns by a metric and, for a sweep, a heat-map over two parameters. The
plotly.js bundle is inlined so the file opens offline. ``write_png`` draws the same three panels
with matplotlib (Agg, no pyplot state). plotly and matplotlib are imported inside the functions
so that ``import celeris.backtest`` stays light.

Values are shown by the one metric formatter, :func:`celeris.backtest.metrics.format_metric`
(also importable from here):

>>> format_metric("max_drawdown", 0.5), format_metric("sortino", float("nan"))
('50.00%', 'n/a')
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from celeris.backtest.metrics import HIGHER_IS_WORSE, METRICS, format_metric, metric_slot
from celeris.data.atomic import atomic_path
from celeris.errors import ConfigError, did_you_mean
from celeris.formatting import format_duration, format_timestamp
from celeris.jsonsafe import to_python

if TYPE_CHECKING:
    from celeris.backtest.portfolio import Portfolio  # Portfolio imports this module back
    from celeris.backtest.sweep import SweepResult

__all__ = ["figure", "format_metric", "write_html", "write_png"]
# Also public, for celeris.backtest.book_report (modules of the package import no private names):
# MAX_PLOT_BARS, PLOTLY_CONFIG, REPORT_CSS, EQUITY_COLOR, DRAWDOWN_COLOR, plot_x, plotly_x,
# plot_positions, atomic_write, html_document, metrics_table_html, add_equity_drawdown,
# celeris_version.

#: Series longer than this many bars are downsampled for plotting (metrics use every bar).
MAX_PLOT_BARS = 20_000
#: Rows of the top-columns tables.
_TOP_N = 10

_LABELS = {
    "start": "Start",
    "end": "End",
    "start_value": "Start value",
    "end_value": "End value",
    "total_return": "Total return",
    "cagr": "CAGR",
    "volatility": "Volatility (ann.)",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "calmar": "Calmar ratio",
    "max_drawdown": "Max drawdown",
    "max_drawdown_duration": "Max drawdown duration",
    "trades": "Trades",
    "closed_trades": "Closed trades",
    "win_rate": "Win rate",
    "profit_factor": "Profit factor",
    "expectancy": "Expectancy",
    "best_trade": "Best trade",
    "worst_trade": "Worst trade",
    "avg_winning_trade": "Avg winning trade",
    "avg_losing_trade": "Avg losing trade",
    "exposure": "Exposure",
    "total_fees": "Total fees",
    "orders": "Orders",
    "open_trade_pnl": "Open trade pnl",
    "benchmark_return": "Buy & hold return",
    "benchmark_sharpe": "Buy & hold Sharpe",
    "benchmark_max_drawdown": "Buy & hold max drawdown",
}
#: Metrics shown in the top-N tables, after the parameters.
_TABLE_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "trades")

#: plotly's options for every chart of a report (no logo, resizes with the window).
PLOTLY_CONFIG: Mapping[str, Any] = MappingProxyType({"displaylogo": False, "responsive": True})

_LONG_COLOR = "#1a9850"
_SHORT_COLOR = "#d73027"
_EXIT_COLOR = "#333333"
_LINE_COLOR = "#1f77b4"
EQUITY_COLOR = "#6a3d9a"
DRAWDOWN_COLOR = "#d73027"


def _label_text(names: Sequence[Any], label: Any) -> str:
    """``fast=10, slow=50`` for a parameter tuple, ``sl_stop=0.05`` for a single level."""
    values = label if isinstance(label, tuple) else (label,)
    pairs = zip(list(names) + [None] * (len(values) - len(names)), values, strict=False)
    return ", ".join(
        f"{n}={to_python(v)}" if n is not None else str(to_python(v)) for n, v in pairs
    )


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


# ---------------------------------------------------------------------------------------------
# selection and plot data
# ---------------------------------------------------------------------------------------------
def _resolve_column(pf: Portfolio, column: Any, metric: str) -> tuple[int, str]:
    """Position of the column to draw and a note on how it was chosen."""
    if len(pf) == 0:
        raise ConfigError("the portfolio has no columns to report")
    if column is not None:
        try:
            key: Any = [column]
            loc = pf.columns.get_indexer_for(key)
        except (TypeError, ValueError, KeyError):
            loc = np.array([-1])
        if len(loc) != 1 or loc[0] < 0:
            examples = [str(to_python(c)) for c in pf.columns[:5]]
            hint = did_you_mean(str(column), [str(to_python(c)) for c in pf.columns[:10_000]])
            raise ConfigError(
                f"no column {column!r} in this portfolio{hint}; columns are named "
                f"{list(pf.columns.names)}, e.g. {', '.join(examples)}"
            )
        return int(loc[0]), "chosen"
    if len(pf) == 1:
        return 0, ""
    top = pf.best(metric, 1)
    if top.empty:
        return 0, f"no column has a finite {metric}; showing the first of {len(pf):,}"
    best: Any = [top.index[0]]
    return int(pf.columns.get_indexer_for(best)[0]), f"best of {len(pf):,} by {metric}"


@dataclass(frozen=True)
class _Curves:
    """Everything drawn for one column, already downsampled."""

    x: np.ndarray  # [n_plot] datetime64 (wall time) or bar numbers
    close: np.ndarray  # [n_plot]
    equity: np.ndarray  # [n_plot]
    drawdown: np.ndarray  # [n_plot], fraction <= 0
    x_label: str
    n_bars: int
    init_cash: float
    trades: pd.DataFrame  # trades of this column, with x_entry / x_exit added

    @property
    def downsampled(self) -> bool:
        return len(self.x) < self.n_bars


def plot_x(index: pd.Index) -> tuple[np.ndarray, str]:
    if isinstance(index, pd.DatetimeIndex):
        if index.tz is not None:
            # plotly.js has no time zones: draw the wall time and name the zone on the axis.
            return index.tz_localize(None).to_numpy(), f"time ({index.tz})"
        return index.to_numpy(), "time"
    return np.asarray(index), str(index.name or "bar")


def plotly_x(x: np.ndarray) -> np.ndarray:
    """Dates as short ISO strings (``2024-01-31`` for daily bars): a third of plotly's default."""
    if not np.issubdtype(x.dtype, np.datetime64) or len(x) == 0:
        return x
    seconds = x.astype("datetime64[s]")
    if (seconds != x).any():
        return np.datetime_as_string(x, unit="ms")
    if (x.astype("datetime64[D]") == x).all():
        return np.datetime_as_string(x, unit="D")
    return np.datetime_as_string(
        seconds, unit="m" if (x.astype("datetime64[m]") == x).all() else "s"
    )


def plot_positions(series: Sequence[np.ndarray], keep: np.ndarray, budget: int) -> np.ndarray:
    """Bars to draw: all of them up to ``budget``; beyond, each bucket's first bar plus the
    minimum and maximum of every series (so peaks, troughs and the deepest drawdown survive),
    the last bar and the ``keep`` bars (trade entries and exits)."""
    n = len(series[0])
    if n <= budget:
        return np.arange(n)
    n_buckets = max(1, budget // (1 + 2 * len(series)))
    k = -(-n // n_buckets)  # bars per bucket
    starts = np.arange(0, n, k)
    picks = [starts, np.array([n - 1]), keep]
    pad = len(starts) * k - n
    offsets = starts[:, None]
    for s in series:
        grid = np.pad(s, (0, pad), mode="edge").reshape(len(starts), k)  # [n_buckets, k]
        picks.append(np.minimum(offsets[:, 0] + grid.argmin(axis=1), n - 1))
        picks.append(np.minimum(offsets[:, 0] + grid.argmax(axis=1), n - 1))
    return np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in picks]))


def _curves(one: Portfolio, budget: int = MAX_PLOT_BARS) -> _Curves:
    close = one.close.iloc[:, 0].to_numpy(dtype=np.float64)
    equity = one.equity.iloc[:, 0].to_numpy(dtype=np.float64)
    drawdown = equity / np.maximum.accumulate(equity) - 1.0
    trades = one.trades
    x_all, x_label = plot_x(one.index)
    marker_bars = np.concatenate(
        [trades["entry_bar"].to_numpy(), trades.loc[trades["status"] == "closed", "exit_bar"]]
    ).astype(np.int64)
    # Trade bars join the line only while they are few; the markers are drawn in any case.
    keep = marker_bars if len(marker_bars) <= budget // 4 else np.empty(0, dtype=np.int64)
    pos = plot_positions([close, equity, drawdown], keep, budget)
    trades = trades.assign(
        x_entry=x_all[trades["entry_bar"].to_numpy()], x_exit=x_all[trades["exit_bar"].to_numpy()]
    )
    return _Curves(
        x=x_all[pos],
        close=close[pos],
        equity=equity[pos],
        drawdown=drawdown[pos],
        x_label=x_label,
        n_bars=len(close),
        init_cash=float(one.init_cash.iloc[0]),
        trades=trades,
    )


# ---------------------------------------------------------------------------------------------
# atomic write
# ---------------------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a temporary file in the same folder, then rename: readers never see half a
    report, and a failure leaves any previous report in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
    return path


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------
REPORT_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1200px;padding:16px 24px;color:#222;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.15em;margin:1.4em 0 .4em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta{color:#555;margin:.2em 0}.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;
 border-radius:4px;margin:.5em 0}
.metrics{display:flex;gap:32px;flex-wrap:wrap}
table{border-collapse:collapse;font-size:.9em}
td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:right}
th{background:#f6f6f6;font-weight:600}td.k,th.k{text-align:left}
tr.chosen td{background:#eef5ff;font-weight:600}
footer{color:#888;font-size:.8em;margin-top:2em}
"""


def write_html(
    pf: Portfolio,
    path: str | Path,
    *,
    column: Any = None,
    title: str | None = None,
    sweep: SweepResult | None = None,
    metric: str = "sharpe",
) -> Path:
    """Write a self-contained interactive HTML report of one column of ``pf`` and return its path.

    The report holds a header (period, bars, columns), the column's key metrics, price with
    trade entries and exits, equity and drawdown on a shared time axis, the top 10 columns by
    ``metric`` when ``pf`` has several, and a heat-map of ``metric`` over two parameters (from
    ``sweep`` or from ``pf``'s two column levels) with the sweep's top 10. plotly.js is inlined,
    so the file opens offline. Series longer than :data:`MAX_PLOT_BARS` are downsampled for
    drawing (the report says so); metrics always use every bar.

    Parameters
    ----------
    pf : Portfolio
        The backtest.
    path : str or Path
        Output file; parent folders are created, the file is replaced atomically.
    column : label, optional
        Column to draw (a parameter tuple such as ``(10, 50)``). Default: the only column, else
        the best by ``metric``.
    title : str, optional
        Report title.
    sweep : SweepResult, optional
        Sweep that ``pf`` is the best combination of; adds its heat-map and top-10 table.
    metric : str
        Metric of :data:`celeris.backtest.METRICS` that ranks columns and colours the heat-map.

    Raises
    ------
    ConfigError
        ``column`` is not a label of ``pf``, or ``metric`` is unknown.
    """
    import plotly.graph_objects as go

    metric_slot(metric)  # refuse an unknown metric before drawing anything
    pos, how = _resolve_column(pf, column, metric)
    one = pf.iloc(pos)
    stats = one.stats().iloc[0]
    curves = _curves(one)

    shown = _label_text(pf.columns.names, pf.columns[pos]) if len(pf) > 1 or how else ""
    if sweep is not None and len(pf) == 1 and column is None:
        shown, how = _sweep_choice(sweep, stats, metric)
    if title is None:
        title = (
            f"{one.name or sweep.strategy.name}: best by {metric}"
            if sweep is not None
            else _default_title(pf, pos, how)
        )

    config = dict(PLOTLY_CONFIG)
    parts = [
        _header_html(pf, curves, title, shown, how),
        "<h2>Key metrics</h2>",
        metrics_table_html(stats),
        "<h2>Price, equity and drawdown</h2>",
        _main_figure(go, curves, stats).to_html(
            full_html=False, include_plotlyjs=True, config=config, div_id="celeris-main"
        ),
    ]
    if len(pf) > 1:
        top = pf.best(metric, _TOP_N)
        parts += [
            f"<h2>Top {min(_TOP_N, len(top))} of {len(pf):,} columns by {_esc(metric)}</h2>",
            _top_table_html(top, metric, chosen=pf.columns[pos]),
        ]
    heat = _heatmap_source(pf, sweep, metric)
    if heat is not None:
        pivot, caption = heat
        parts += [
            f"<h2>{_esc(metric)} over {_esc(pivot.columns.name)} × {_esc(pivot.index.name)}</h2>",
            f'<p class="meta">{_esc(caption)}</p>',
            _heatmap_figure(go, pivot, metric).to_html(
                full_html=False, include_plotlyjs=False, config=config, div_id="celeris-heatmap"
            ),
        ]
    if sweep is not None:
        top = sweep.best(metric, _TOP_N)
        parts += [
            f"<h2>Top {min(_TOP_N, len(top))} of {len(sweep.combos):,} combinations by "
            f"{_esc(metric)}</h2>",
            _top_table_html(top, metric, chosen=None),
        ]
    data = html_document(title, parts, "Celeris backtest report").encode("utf-8")

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    return atomic_write(Path(path), write)


def html_document(title: str, body: Sequence[str], footer: str) -> str:
    """A whole HTML page: the report's head and style, the ``body`` parts one per line, and a
    footer of ``footer`` and the Celeris version (shared with the book report)."""
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title><style>{REPORT_CSS}</style></head><body>",
            *body,
            f"<footer>{_esc(footer)} · {_esc(celeris_version())}</footer></body></html>",
        ]
    )


def celeris_version() -> str:
    try:
        from importlib.metadata import version

        return f"celeris {version('celeris')}"
    except Exception:  # pragma: no cover - not installed as a distribution
        return "celeris"


def _sweep_choice(sweep: SweepResult, stats: pd.Series, metric: str) -> tuple[str, str]:
    """Name the sweep's best parameters, but only if ``pf`` really is that combination."""
    top = sweep.best(metric, 1)
    if top.empty:
        return "", ""
    mine, best = stats[metric], top[metric].iloc[0]
    if isinstance(mine, pd.Timedelta):
        mine, best = mine.total_seconds(), pd.Timedelta(best).total_seconds()
    if not np.isclose(float(mine), float(best), rtol=1e-9, atol=0.0, equal_nan=True):
        return "", ""
    params = ", ".join(f"{k}={v}" for k, v in sweep.best_params(metric).items())
    return params, f"best of {len(sweep.combos):,} combinations by {metric}"


def _default_title(pf: Portfolio, pos: int, how: str) -> str:
    """What was backtested: the portfolio's name, else "Backtest", and the column shown."""
    title = pf.name or "Backtest"
    if len(pf) > 1 or how:
        title += f": {_label_text(pf.columns.names, pf.columns[pos])}"
    return title


def _subtitle(one: Portfolio) -> str:
    """Period, fill rule and annualisation, in one line."""
    period = f"{format_timestamp(one.index[0])} to {format_timestamp(one.index[-1])}"
    return f"{period} · {len(one.index):,} bars · {one.describe()}"


def figure(pf: Portfolio, *, column: Any = None, title: str | None = None) -> Any:
    """A plotly Figure of price with trades, equity and drawdown for one column (nothing written).

    The default column is the only one, else the best by Sharpe ratio; the title names what was
    backtested, and a second line gives the period, the fill rule and the annualisation.
    """
    import plotly.graph_objects as go

    pos, how = _resolve_column(pf, column, "sharpe")
    one = pf.iloc(pos)
    fig = _main_figure(go, _curves(one), one.stats().iloc[0])
    text = title if title is not None else _default_title(pf, pos, how)
    fig.update_layout(
        title={"text": f"{_esc(text)}<br><sup>{_esc(_subtitle(one))}</sup>", "x": 0.01},
        margin={"t": 110},
    )
    return fig


def _header_html(pf: Portfolio, curves: _Curves, title: str, shown: str, how: str) -> str:
    period = f"{format_timestamp(pf.index[0])} → {format_timestamp(pf.index[-1])}"
    spacing = f" of {format_duration(pf.freq)}" if pf.freq is not None else ""
    lines = [
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="meta">{_esc(period)} · {len(pf.index):,} bars{_esc(spacing)} · '
        f"{len(pf):,} column{'s' if len(pf) != 1 else ''}</p>",
        f'<p class="meta">Fills: {_esc(pf.execution)} ({_esc(pf.fill_rule)}) · '
        f"{_esc(pf.annualisation.describe())}</p>",
    ]
    if shown or how:
        detail = f" ({_esc(how)})" if how and how != "chosen" else ""
        lines.append(f'<p class="meta">Shown: <b>{_esc(shown)}</b>{detail}</p>')
    if curves.downsampled:
        lines.append(
            f'<p class="note">Long series: the charts draw {len(curves.x):,} of '
            f"{curves.n_bars:,} bars (each bucket's first bar, its highs and lows, and every "
            "trade bar); metrics use every bar.</p>"
        )
    lines.append("</header>")
    return "\n".join(lines)


def metrics_table_html(
    stats: pd.Series,
    *,
    labels: Mapping[str, str] | None = None,
    formatter: Callable[[str, Any], str] = format_metric,
) -> str:
    """The key-metrics tables (two columns of label and value) of the entries of ``stats`` that
    have a label: the report's own labels plus ``labels``; values shown by ``formatter``."""
    shown = {**_LABELS, **(labels or {})}
    names = [n for n in stats.index if n in shown]
    half = -(-len(names) // 2)
    tables = []
    for chunk in (names[:half], names[half:]):
        rows = []
        for name in chunk:
            meaning = METRICS[name][1] if name in METRICS else ""
            tip = f' title="{_esc(meaning)}"' if meaning else ""
            rows.append(
                f'<tr{tip}><td class="k">{_esc(shown[name])}</td>'
                f"<td>{_esc(formatter(name, stats[name]))}</td></tr>"
            )
        tables.append("<table>" + "".join(rows) + "</table>")
    return '<div class="metrics">' + "".join(tables) + "</div>"


def _top_table_html(top: pd.DataFrame, metric: str, chosen: Any) -> str:
    columns = list(_TABLE_METRICS) + ([metric] if metric not in _TABLE_METRICS else [])
    levels = [str(n) if n is not None else "column" for n in top.index.names]
    head = "".join(f'<th class="k">{_esc(n)}</th>' for n in ["#", *levels])
    head += "".join(f"<th>{_esc(_LABELS.get(c, c))}</th>" for c in columns)
    rows = []
    for rank, (label, row) in enumerate(top.iterrows(), start=1):
        values = label if isinstance(label, tuple) else (label,)
        cls = ' class="chosen"' if chosen is not None and label == chosen else ""
        cells = "".join(f'<td class="k">{_esc(to_python(v))}</td>' for v in (rank, *values))
        cells += "".join(f"<td>{_esc(format_metric(c, row[c]))}</td>" for c in columns)
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _heatmap_source(
    pf: Portfolio, sweep: SweepResult | None, metric: str
) -> tuple[pd.DataFrame, str] | None:
    """The metric pivoted over two parameters: from the sweep, else from ``pf``'s column levels."""
    if sweep is not None:
        params = [str(n) for n in sweep.combos.columns]
        if len(params) < 2:
            return None
        note = f"{len(sweep.combos):,} combinations of {sweep.strategy.name}"
        if len(params) > 2:
            note += f"; each cell is the highest {metric} over {', '.join(params[2:])}"
        return sweep.heatmap(metric), note
    if pf.columns.nlevels >= 2 and len(pf) > 1:
        names: list[Any] = list(pf.columns.names)
        values = pf.stats()[metric]
        if values.dtype.kind == "m":  # max_drawdown_duration: draw days
            values = values.dt.total_seconds() / 86_400
        frame = pf.columns.to_frame(index=False).assign(_value=values.to_numpy(dtype=np.float64))
        agg: Literal["min", "max"] = "min" if metric in HIGHER_IS_WORSE else "max"
        pivot = frame.pivot_table(index=names[1], columns=names[0], values="_value", aggfunc=agg)
        note = f"{len(pf):,} columns"
        if len(names) > 2:
            best = "lowest" if agg == "min" else "highest"
            note += f"; each cell is the {best} {metric} over {', '.join(map(str, names[2:]))}"
        return pivot, note
    return None


def _heatmap_figure(go: Any, pivot: pd.DataFrame, metric: str) -> Any:
    z = pivot.to_numpy(dtype=np.float64)
    text = [[format_metric(metric, v) if np.isfinite(v) else "" for v in row] for row in z]
    x_name, y_name = str(pivot.columns.name), str(pivot.index.name)
    reverse = metric in HIGHER_IS_WORSE
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(to_python(c)) for c in pivot.columns],
            y=[str(to_python(i)) for i in pivot.index],
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            reversescale=reverse,
            colorbar={"title": {"text": metric}},
            hovertemplate=f"{x_name}=%{{x}}<br>{y_name}=%{{y}}<br>{metric}=%{{text}}<extra></extra>",
            name=f"{metric} heat-map",
        )
    )
    fig.update_layout(
        height=max(320, 60 + 40 * len(pivot.index)),
        margin={"l": 60, "r": 20, "t": 20, "b": 50},
        xaxis={"title": {"text": x_name}, "type": "category"},
        yaxis={"title": {"text": y_name}, "type": "category"},
        template="plotly_white",
    )
    return fig


def _main_figure(go: Any, c: _Curves, stats: pd.Series) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.04,
        row_heights=[0.5, 0.3, 0.2],
        subplot_titles=("Price", "Equity", "Drawdown"),
    )
    fig.add_trace(
        go.Scatter(
            x=plotly_x(c.x),
            y=c.close,
            mode="lines",
            name="Close",
            line={"color": _LINE_COLOR, "width": 1.2},
        ),
        row=1,
        col=1,
    )
    for trace in _marker_traces(go, c.trades):
        fig.add_trace(trace, row=1, col=1)
    add_equity_drawdown(go, fig, c.x, c.equity, c.drawdown, c.init_cash, rows=(2, 3))
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="value", tickformat=",.0f", row=2, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".0%", row=3, col=1)
    fig.update_xaxes(title_text=c.x_label, row=3, col=1)
    fig.update_layout(
        height=820,
        template="plotly_white",
        hovermode="x unified",
        margin={"l": 70, "r": 20, "t": 40, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.03, "x": 0},
    )
    return fig


def add_equity_drawdown(
    go: Any,
    fig: Any,
    x: np.ndarray,
    equity: np.ndarray,
    drawdown: np.ndarray,
    init_cash: float,
    rows: tuple[int, int],
) -> None:
    """Draw the equity line (with a dashed start-value line) and the filled drawdown into the
    subplot rows ``rows`` of ``fig`` (shared with the book report)."""
    fig.add_trace(
        go.Scatter(
            x=plotly_x(x),
            y=equity,
            mode="lines",
            name="Equity",
            line={"color": EQUITY_COLOR, "width": 1.2},
            hovertemplate="%{y:,.2f}",
        ),
        row=rows[0],
        col=1,
    )
    fig.add_hline(
        y=init_cash, row=rows[0], col=1, line={"color": "#999", "dash": "dash", "width": 1}
    )
    fig.add_trace(
        go.Scatter(
            x=plotly_x(x),
            y=drawdown,
            mode="lines",
            name="Drawdown",
            fill="tozeroy",
            line={"color": DRAWDOWN_COLOR, "width": 1},
            fillcolor="rgba(215,48,39,0.3)",
            hovertemplate="%{y:.2%}",
        ),
        row=rows[1],
        col=1,
    )


def _marker_traces(go: Any, trades: pd.DataFrame) -> list[Any]:
    """Entries (long: green triangle up, short: red triangle down) and closed-trade exits."""
    traces = []
    for direction, name, symbol, color in (
        ("long", "Long entry", "triangle-up", _LONG_COLOR),
        ("short", "Short entry", "triangle-down", _SHORT_COLOR),
    ):
        sel = trades[trades["direction"] == direction]
        if sel.empty:
            continue
        traces.append(
            go.Scatter(
                x=plotly_x(sel["x_entry"].to_numpy()),
                y=sel["entry_price"].to_numpy(),
                mode="markers",
                name=name,
                marker={
                    "symbol": symbol,
                    "color": color,
                    "size": 10,
                    "line": {"width": 0.5, "color": "#222"},
                },
                customdata=sel[["size"]].to_numpy(),
                hovertemplate=f"{name} %{{y:,.2f}}, size %{{customdata[0]:,.4g}}<extra></extra>",
            )
        )
    closed = trades[trades["status"] == "closed"]
    if not closed.empty:
        traces.append(
            go.Scatter(
                x=plotly_x(closed["x_exit"].to_numpy()),
                y=closed["exit_price"].to_numpy(),
                mode="markers",
                name="Exit",
                marker={"symbol": "x", "color": _EXIT_COLOR, "size": 8},
                customdata=closed[["pnl", "return"]].to_numpy(),
                hovertemplate="Exit %{y:,.2f}, pnl %{customdata[0]:,.2f} "
                "(%{customdata[1]:.2%})<extra></extra>",
            )
        )
    return traces


# ---------------------------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------------------------
def write_png(
    pf: Portfolio, path: str | Path, *, column: Any = None, title: str | None = None
) -> Path:
    """Write a PNG of price with trades, equity and drawdown for one column; return its path.

    Three panels share the time axis; the default column is the only one, else the best by
    Sharpe ratio. Drawn with matplotlib's Agg renderer on a standalone ``Figure`` (no pyplot
    state), at 110 dpi; the file is replaced atomically.

    Raises
    ------
    ConfigError
        ``column`` is not a label of ``pf``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter, StrMethodFormatter

    pos, how = _resolve_column(pf, column, "sharpe")
    one = pf.iloc(pos)
    stats = one.stats().iloc[0]
    c = _curves(one)
    if title is None:
        title = _default_title(pf, pos, how)

    fig = Figure(figsize=(11, 8.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax_price, ax_equity, ax_dd = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.3]}
    )
    ax_price.plot(c.x, c.close, color=_LINE_COLOR, lw=0.9, label="Close")
    trades = c.trades
    for direction, name, marker, color in (
        ("long", "Long entry", "^", _LONG_COLOR),
        ("short", "Short entry", "v", _SHORT_COLOR),
    ):
        sel = trades[trades["direction"] == direction]
        if not sel.empty:
            ax_price.scatter(
                sel["x_entry"].to_numpy(),
                sel["entry_price"].to_numpy(),
                marker=marker,
                s=42,
                color=color,
                edgecolors="#222",
                linewidths=0.4,
                zorder=3,
                label=name,
            )
    closed = trades[trades["status"] == "closed"]
    if not closed.empty:
        ax_price.scatter(
            closed["x_exit"].to_numpy(),
            closed["exit_price"].to_numpy(),
            marker="x",
            s=26,
            color=_EXIT_COLOR,
            linewidths=0.9,
            zorder=3,
            label="Exit",
        )
    ax_price.set_ylabel("Price")
    ax_price.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
    ax_price.set_title(
        "  ·  ".join(
            f"{_LABELS[n]} {format_metric(n, stats[n])}"
            for n in ("total_return", "cagr", "sharpe", "max_drawdown", "trades", "win_rate")
        ),
        loc="left",
        fontsize=9,
        color="#444",
    )

    ax_equity.plot(c.x, c.equity, color=EQUITY_COLOR, lw=1.0)
    ax_equity.axhline(c.init_cash, color="#999", lw=0.8, ls="--")
    ax_equity.set_ylabel("Equity")
    ax_equity.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))

    ax_dd.fill_between(c.x, c.drawdown, 0.0, color=DRAWDOWN_COLOR, alpha=0.3, lw=0)
    ax_dd.plot(c.x, c.drawdown, color=DRAWDOWN_COLOR, lw=0.7)
    ax_dd.set_ylabel("Drawdown")
    ax_dd.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax_dd.set_xlabel(c.x_label)

    for ax in (ax_price, ax_equity, ax_dd):
        ax.grid(alpha=0.3, lw=0.5)
        ax.margins(x=0.005)
    if np.issubdtype(c.x.dtype, np.datetime64):
        locator = AutoDateLocator()
        ax_dd.xaxis.set_major_locator(locator)
        ax_dd.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    note = " (downsampled for drawing)" if c.downsampled else ""
    fig.suptitle(f"{title}{note}\n{_subtitle(one)}", fontsize=11, x=0.01, ha="left")

    return atomic_write(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=110))


# The names tests/backtest/test_report.py reads (from before these helpers were public).
_plot_positions = plot_positions
_atomic_write = atomic_write
