"""The HTML report of a grouped, cash-sharing Book (celeris.backtest.book_report)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import celeris.backtest as bt
from celeris.backtest import book_report
from celeris.backtest.book import ORDER_KINDS
from celeris.backtest.metrics import format_metric
from celeris.data.panel import to_panel
from celeris.errors import ConfigError
from celeris.formatting import format_number

#: What the report must hold, written out here (not read from the module, so that a section
#: dropped from both the module's list and the page still fails): (anchor, heading, plot div).
EXPECTED_SECTIONS = (
    ("metrics", "Key metrics", None),
    ("equity", "Equity and drawdown", "celeris-equity"),
    ("weights", "Weights over time", "celeris-weights"),
    ("contribution", "P&amp;L contribution by asset", "celeris-contribution"),
    ("exposure", "Gross and net exposure", "celeris-exposure"),
    ("orders", "Prices and orders", "celeris-orders"),
)
ASSETS = ("AAA", "BBB", "CCC")


# ---- helpers: read back what plotly wrote ------------------------------------------------------
def plotly_data(html: str, div_id: str) -> list[dict[str, Any]]:
    """The trace list passed to ``Plotly.newPlot`` for the div ``div_id``."""
    match = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', html)
    assert match is not None, f"no plot {div_id!r} in the report"
    data, _ = json.JSONDecoder().raw_decode(html, match.end())
    assert isinstance(data, list)
    return data


def values(encoded: Any) -> np.ndarray:
    """Decode a plotly array: a JSON list, or a typed array ``{"dtype", "bdata", "shape"}``."""
    if isinstance(encoded, dict):
        arr = np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=np.dtype(encoded["dtype"]))
        if "shape" in encoded:
            arr = arr.reshape([int(s) for s in str(encoded["shape"]).split(",")])
        return arr
    return np.asarray(encoded)


def traces(data: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    found = [t for t in data if t.get("name") == name]
    assert found, f"no trace named {name!r}, got {[t.get('name') for t in data]}"
    return found


def assert_sections(html: str) -> None:
    """Every expected section is there, in order, each with its heading and its chart."""
    at = []
    for anchor, heading, div in EXPECTED_SECTIONS:
        tag = f'<h2 id="{anchor}">{heading}</h2>'
        assert html.count(tag) == 1, f"section {anchor!r} missing (or twice)"
        at.append(html.index(tag))
        if div is not None:
            plotly_data(html, div)
    assert at == sorted(at), "sections out of order"


# ---- fixtures: a staggered panel (BBB listed late, CCC delisted early) -------------------------
def _bars(index: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.03, len(index))))
    open_ = close * np.exp(rng.normal(0.0, 0.005, len(index)))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1_000.0,
        },
        index=index,
    )


@pytest.fixture(scope="module")
def panel() -> Any:
    index = pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC", name="time")
    return to_panel(
        {"AAA": _bars(index, 1), "BBB": _bars(index[10:], 2), "CCC": _bars(index[:40], 3)}
    )


def _signals(panel: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    entries = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    exits = entries.copy()
    entries.iloc[[0, 12, 20, 30, 45], :] = True
    exits.iloc[[8, 25, 50], :] = True
    return entries, exits


@pytest.fixture(scope="module")
def book(panel: Any) -> bt.Book:
    """Long and short (exits open shorts), a 4% stop, CCC still held when it delists."""
    entries, exits = _signals(panel)
    return bt.from_signals(
        panel,
        entries,
        exits,
        cash_sharing=True,
        direction="both",
        size=20_000.0,
        size_type="value",
        sl_stop=0.04,
        fees=0.001,
    )


@pytest.fixture(scope="module")
def two_groups(panel: Any) -> bt.Book:
    """The same signals twice, a tight and a loose stop, each set its own account."""
    entries, exits = _signals(panel)
    keys = {"keys": ["tight", "loose"], "names": ["stops", "symbol"], "axis": 1}
    return bt.from_signals(
        panel,
        pd.concat([entries, entries], **keys),
        pd.concat([exits, exits], **keys),
        cash_sharing=True,
        size=0.3,
        size_type="percent",
        sl_stop=[0.03] * 3 + [0.08] * 3,
    )


@pytest.fixture(scope="module")
def html_path(book: bt.Book, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return book.to_html(tmp_path_factory.mktemp("book") / "book.html", title="Three coins & cash")


@pytest.fixture(scope="module")
def html(html_path: Path) -> str:
    return html_path.read_text(encoding="utf-8")


def test_book_fixture_has_every_order_kind_and_both_sides(book: bt.Book) -> None:
    orders = book.orders
    assert set(orders["kind"]) == {"order", "stop", "delisting"}
    assert (book.weights.to_numpy() < 0).any() and (book.weights.to_numpy() > 0).any()
    assert orders.loc[orders["kind"] == "delisting", "asset"].tolist() == ["CCC"]


# ---- sections ----------------------------------------------------------------------------------
def test_write_book_report_default_group_has_every_section_in_order(html: str) -> None:
    assert_sections(html)


def test_assert_sections_page_without_a_section_fails(html: str) -> None:
    for anchor, heading, _ in EXPECTED_SECTIONS:
        broken = html.replace(f'<h2 id="{anchor}">{heading}</h2>', "")
        with pytest.raises(AssertionError, match=anchor):
            assert_sections(broken)
    without_chart = html.replace('"celeris-weights"', '"celeris-other"')
    with pytest.raises(AssertionError, match="celeris-weights"):
        assert_sections(without_chart)


def test_write_book_report_is_self_contained(html_path: Path, html: str) -> None:
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count(bundle) == 1  # plotly.js inlined once, so the file opens offline
    rest = html.replace(bundle, "")
    assert "cdn.plot.ly" not in rest
    assert not re.search(r"<script[^>]*\bsrc=", rest)
    assert [p.name for p in html_path.parent.iterdir()] == ["book.html"]  # no temp file left


def test_write_book_report_header_names_setup_and_listings(html: str) -> None:
    assert "<h1>Three coins &amp; cash</h1>" in html  # title escaped
    assert "2024-01-01 → 2024-02-29 · 60 bars of 1 day · 3 assets" in html
    assert "start value 100,000.00" in html
    assert "Fills: next_open (fills at the next bar&#x27;s open)" in html
    assert "Listings: BBB listed 2024-01-11 · CCC delisted after 2024-02-09" in html


# ---- numbers -----------------------------------------------------------------------------------
def test_write_book_report_metrics_equal_book_stats_formatted(book: bt.Book, html: str) -> None:
    stats = book.stats().iloc[0]
    shown = {
        "Start": format_metric("start", stats["start"]),
        "Start value": "100,000.00",
        "End value": f"{stats['end_value']:,.2f}",
        "Total return": f"{stats['total_return']:.2%}",
        "Sharpe ratio": f"{stats['sharpe']:.3f}",
        "Max drawdown": f"{stats['max_drawdown']:.2%}",
        "Trades": f"{stats['trades']}",
        "Orders": f"{stats['orders']}",
        "Total fees": f"{stats['total_fees']:,.2f}",
        "Exposure": f"{stats['exposure']:.2%}",
        "Max drawdown duration": format_metric(
            "max_drawdown_duration", stats["max_drawdown_duration"]
        ),
        "Mean gross exposure": f"{stats['mean_gross_exposure']:.2%}",
        "Mean net exposure": f"{stats['mean_net_exposure']:.2%}",
        "Turnover": f"{stats['turnover']:.3f}",
    }
    assert stats["orders"] == len(book.orders) > 0
    for label, text in shown.items():
        assert f'<td class="k">{label}</td><td>{text}</td>' in html, label


def test_write_book_report_equity_drawdown_exposure_equal_book_curves(
    book: bt.Book, html: str
) -> None:
    equity = plotly_data(html, "celeris-equity")
    np.testing.assert_array_equal(
        values(traces(equity, "Equity")[0]["y"]), book.equity.iloc[:, 0].to_numpy()
    )
    np.testing.assert_array_equal(
        values(traces(equity, "Drawdown")[0]["y"]), book.drawdown.iloc[:, 0].to_numpy()
    )
    exposure = plotly_data(html, "celeris-exposure")
    np.testing.assert_array_equal(
        values(traces(exposure, "Gross exposure")[0]["y"]), book.gross_exposure.iloc[:, 0]
    )
    np.testing.assert_array_equal(
        values(traces(exposure, "Net exposure")[0]["y"]), book.net_exposure.iloc[:, 0]
    )


def test_write_book_report_weights_band_per_asset_and_cash_sum_to_one(
    book: bt.Book, html: str
) -> None:
    data = plotly_data(html, "celeris-weights")
    assert sorted({t["name"] for t in data}) == sorted([*ASSETS, "Cash"])
    assert {t["stackgroup"] for t in data} == {"long", "short"}  # shorts stack below zero
    for name in ASSETS:
        drawn = sum(values(t["y"]) for t in traces(data, name))
        np.testing.assert_allclose(drawn, book.weights[name].to_numpy(), rtol=0, atol=1e-15)
    total = sum(values(t["y"]) for t in data)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-12)


def test_write_book_report_contribution_equals_book_contribution(book: bt.Book, html: str) -> None:
    contribution = book.contribution
    bars = traces(plotly_data(html, "celeris-contribution"), "P&L")[0]
    assert list(bars["x"]) == list(ASSETS)
    np.testing.assert_array_equal(values(bars["y"]), contribution["pnl"].to_numpy())
    for asset in ASSETS:
        pnl, share = contribution.loc[asset, ["pnl", "share"]]
        row = (
            f'<td class="k">{asset}</td><td>{format_metric("pnl", pnl)}</td>'
            f"<td>{format_number(share, 'percent')}</td>"
        )
        assert row in html, asset
    change = book.stats()["end_value"].iloc[0] - 100_000.0
    assert contribution["pnl"].sum() == pytest.approx(change, rel=1e-12)
    assert f"<th>{format_metric('pnl', contribution['pnl'].sum())}</th>" in html
    assert f"End value − start value: {format_metric('pnl', change)}" in html


# ---- orders ------------------------------------------------------------------------------------
def test_write_book_report_marks_each_order_kind_apart(
    book: bt.Book, panel: Any, html: str
) -> None:
    orders = book.orders
    data = plotly_data(html, "celeris-orders")
    assert [t["name"] for t in data if t.get("mode") == "lines"] == list(ASSETS)
    markers = {t["name"]: t for t in data if t.get("mode") == "markers"}
    assert list(markers) == ["Order", "Stop", "Delisting"]
    symbols = {}
    for kind, name in (("order", "Order"), ("stop", "Stop"), ("delisting", "Delisting")):
        sel = orders[orders["kind"] == kind]
        trace = markers[name]
        assert len(values(trace["y"])) == len(sel), kind
        hover = trace["customdata"]
        assert [row[0] for row in hover] == sel["asset"].tolist()
        assert [row[1] for row in hover] == sel["side"].tolist()
        assert [row[2] for row in hover] == sel["size"].tolist()  # numbers, not strings
        style = book_report.ORDER_MARKERS[kind]
        expected = np.where(sel["side"] == "buy", style.buy_symbol, style.sell_symbol)
        assert list(trace["marker"]["symbol"]) == expected.tolist()
        symbols[kind] = (style.buy_symbol, style.sell_symbol, trace["marker"]["color"])
    assert len(set(symbols.values())) == 3  # each kind looks different
    # A delisting marker sits on the asset's rebased line at the fill (its last close).
    delist = orders[orders["kind"] == "delisting"].iloc[0]
    listed_at = panel.field("close")["CCC"].dropna().iloc[0]
    assert values(markers["Delisting"]["y"])[0] == pytest.approx(
        delist["price"] / listed_at * 100.0, rel=1e-12
    )


def test_write_book_report_orders_table_counts_each_asset_and_kind(
    book: bt.Book, html: str
) -> None:
    counts = pd.crosstab(book.orders["asset"], book.orders["kind"])
    head = '<th class="k">Asset</th><th>Order</th><th>Stop</th><th>Delisting</th>'
    assert head in html
    for asset in ASSETS:
        cells = "".join(
            f"<td>{counts.at[asset, k] if k in counts else 0}</td>"
            for k in ("order", "stop", "delisting")
        )
        assert f'<tr><td class="k">{asset}</td>{cells}</tr>' in html, asset


def test_order_markers_cover_every_book_order_kind() -> None:
    # A new kind in Book.orders (funding, liquidation) needs its entry in ORDER_MARKERS.
    assert set(ORDER_KINDS.values()) <= set(book_report.ORDER_MARKERS)


def test_write_book_report_kind_without_marker_drawn_named_by_kind(
    book: bt.Book, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = {k: v for k, v in book_report.ORDER_MARKERS.items() if k != "stop"}
    monkeypatch.setattr(book_report, "ORDER_MARKERS", markers)
    html = book.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    data = plotly_data(html, "celeris-orders")
    stop = traces(data, "stop")[0]
    assert len(values(stop["y"])) == (book.orders["kind"] == "stop").sum()
    assert stop["marker"]["symbol"][0] == "circle"
    assert "<th>stop</th>" in html


def test_write_book_report_too_many_orders_counted_not_marked(
    book: bt.Book, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(book_report, "MAX_MARKERS", 5)
    html = book.to_html(tmp_path / "r.html").read_text(encoding="utf-8")
    names = [t["name"] for t in plotly_data(html, "celeris-orders")]
    n_orders = int((book.orders["kind"] == "order").sum())
    n_stops = int((book.orders["kind"] == "stop").sum())
    assert n_orders > 5 and n_stops > 5
    assert "Order" not in names and "Stop" not in names and "Delisting" in names
    assert f"{n_orders:,} order orders are more than 5: counted here, not marked" in html


def test_write_book_report_book_without_orders_has_every_section_and_zero_counts(
    panel: Any, tmp_path: Path
) -> None:
    entries = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    book = bt.from_signals(panel, entries, entries, cash_sharing=True)
    assert book.orders.empty
    html = book.to_html(tmp_path / "flat.html").read_text(encoding="utf-8")
    assert_sections(html)
    assert '<th class="k">Asset</th><th>Order</th></tr>' in html
    for asset in ASSETS:
        assert f'<tr><td class="k">{asset}</td><td>0</td></tr>' in html
    assert not [t for t in plotly_data(html, "celeris-orders") if t.get("mode") == "markers"]
    cash = traces(plotly_data(html, "celeris-weights"), "Cash")[0]
    np.testing.assert_array_equal(values(cash["y"]), 1.0)


def test_write_book_report_perp_book_marks_liquidations_and_shows_funding(
    tmp_path: Path,
) -> None:
    # docs/perpetuals.md's worked example: a long and a short liquidated on the bar of a funding
    # payment (the long pays 20, the short receives 20), then a quiet bar.
    index = pd.date_range("2024-01-01", periods=3, freq="8h", tz="UTC", name="time")
    rows = [(20_000.0,) * 4, (20_000.0, 22_000.0, 18_000.0, 20_000.0), (20_000.0,) * 4]
    bars = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)
    panel = to_panel({"LONG": bars.assign(volume=1.0), "SHORT": bars.assign(volume=1.0)})
    size = pd.DataFrame({"LONG": [1.0, np.nan, np.nan], "SHORT": [-1.0, np.nan, np.nan]}, index)
    book = bt.from_orders(
        panel,
        size,
        instrument="perp",
        leverage=10,
        fees=0.0005,
        maintenance_margin=0.005,
        liquidation_fee=0.002,
        funding_rate=pd.DataFrame({"LONG": [0.0, 0.001, 0.0], "SHORT": [0.0, 0.001, 0.0]}, index),
        cash_sharing=True,
        init_cash=10_000.0,
        execution="close",
    )
    html = book.to_html(tmp_path / "perp.html").read_text(encoding="utf-8")
    assert_sections(html)
    assert "2 assets (perpetual futures)" in html
    liquidations = traces(plotly_data(html, "celeris-orders"), "Liquidation")[0]
    assert [row[0] for row in liquidations["customdata"]] == ["LONG", "SHORT"]
    assert liquidations["marker"]["symbol"] == ["star", "star"]
    stats = book.stats().iloc[0]
    shown = {
        "Funding paid": "20.00",
        "Funding received": "20.00",
        "Liquidations": "2",
        "Max margin usage": f"{stats['max_margin_usage']:.2%}",
        "Max leverage": f"{stats['max_leverage']:.3f}",
    }
    for label, text in shown.items():
        assert f'<td class="k">{label}</td><td>{text}</td>' in html, label
    assert "<th>Funding paid (+) / received (−)</th>" in html
    for asset, funding in zip(["LONG", "SHORT"], book.funding, strict=True):
        pnl = book.contribution.loc[asset, "pnl"]
        assert f'<td class="k">{asset}</td><td>{format_metric("pnl", pnl)}</td>' in html
        assert f"<td>{format_number(funding, 'cash')}</td></tr>" in html
    assert book.funding.tolist() == [20.0, -20.0]


# ---- groups ------------------------------------------------------------------------------------
def test_write_book_report_group_label_reports_that_group(
    two_groups: bt.Book, tmp_path: Path
) -> None:
    html = two_groups.to_html(tmp_path / "loose.html", group="loose").read_text(encoding="utf-8")
    assert_sections(html)
    assert "<h1>Book: group loose</h1>" in html
    assert "· group loose of 2" in html
    equity = traces(plotly_data(html, "celeris-equity"), "Equity")[0]
    np.testing.assert_array_equal(values(equity["y"]), two_groups.equity["loose"].to_numpy())
    loose = two_groups.stats().loc["loose"]
    assert f'<td class="k">End value</td><td>{loose["end_value"]:,.2f}</td>' in html
    # Columns are named by what varies inside the group: the symbol, not ('loose', 'AAA').
    names = {t["name"] for t in plotly_data(html, "celeris-weights")}
    assert names == {*ASSETS, "Cash"}


def test_write_book_report_default_group_is_the_first(two_groups: bt.Book, tmp_path: Path) -> None:
    html = two_groups.to_html(tmp_path / "first.html").read_text(encoding="utf-8")
    assert "<h1>Book: group tight</h1>" in html
    equity = traces(plotly_data(html, "celeris-equity"), "Equity")[0]
    np.testing.assert_array_equal(values(equity["y"]), two_groups.equity["tight"].to_numpy())


def test_write_book_report_unknown_group_raises_config_error_naming_groups(
    two_groups: bt.Book, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"no group 'lose'.*did you mean 'loose'.*tight, loose"):
        two_groups.to_html(tmp_path / "r.html", group="lose")
    with pytest.raises(ConfigError, match=r"no group \['tight'\]"):
        two_groups.to_html(tmp_path / "r.html", group=["tight"])
    assert list(tmp_path.iterdir()) == []


# ---- long books --------------------------------------------------------------------------------
def test_write_book_report_long_book_downsamples_and_says_so(tmp_path: Path) -> None:
    n = 30_000
    index = pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC", name="time")
    panel = to_panel({"AAA": _bars(index, 4), "BBB": _bars(index[100:], 5)})
    entries = pd.DataFrame(
        np.tile(np.arange(n)[:, None] % 2_000 == 0, 2), index=panel.index, columns=panel.symbols
    )
    exits = pd.DataFrame(
        np.tile(np.arange(n)[:, None] % 2_000 == 1_000, 2), index=panel.index, columns=panel.symbols
    )
    book = bt.from_signals(panel, entries, exits, cash_sharing=True, size=0.4, size_type="percent")
    html = book.to_html(tmp_path / "long.html").read_text(encoding="utf-8")
    assert_sections(html)
    y = values(traces(plotly_data(html, "celeris-equity"), "Equity")[0]["y"])
    assert len(y) < n
    equity = book.equity.iloc[:, 0].to_numpy()
    assert y.max() == equity.max() and y.min() == equity.min()  # extremes survive
    assert f"the charts draw {len(y):,} of {n:,} bars" in html
