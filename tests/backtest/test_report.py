"""HTML and PNG reports (celeris.backtest.report) on real S&P 500 bars."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import celeris.backtest as bt
from celeris.backtest import report
from celeris.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def trace(data: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in data if t.get("name") == name]
    assert len(found) == 1, (
        f"expected one trace named {name!r}, got {[t.get('name') for t in data]}"
    )
    return found[0]


def test_values_typed_and_plain_arrays_round_trip() -> None:
    import plotly.graph_objects as go

    fig = go.Figure(
        [
            go.Scatter(x=np.array(["a", "b"], dtype=object), y=np.array([1.5, -2.25]), name="s"),
            go.Heatmap(z=np.arange(6, dtype=np.float64).reshape(2, 3), name="h"),
        ]
    )
    data = plotly_data(fig.to_html(div_id="t", include_plotlyjs=False, full_html=False), "t")
    assert values(trace(data, "s")["y"]).tolist() == [1.5, -2.25]
    assert values(trace(data, "s")["x"]).tolist() == ["a", "b"]
    np.testing.assert_array_equal(values(trace(data, "h")["z"]), np.arange(6.0).reshape(2, 3))
    with pytest.raises(AssertionError):
        trace(data, "missing")


# ---- fixtures -----------------------------------------------------------------------------------
def sma_signals(bars: pd.DataFrame, fast: int, slow: int) -> tuple[pd.Series, pd.Series]:
    return bt.STRATEGIES["sma_cross"].signals(bars, {"fast": fast, "slow": slow})


@pytest.fixture(scope="module")
def pf(sp500: pd.DataFrame) -> bt.Portfolio:
    entries, exits = sma_signals(sp500, 10, 50)
    return bt.from_signals(sp500, entries, exits, execution="close")


@pytest.fixture(scope="module")
def grid_pf(sp500: pd.DataFrame) -> bt.Portfolio:
    """Six SMA crosses as one portfolio with (fast, slow) column levels."""
    pairs = [(f, s) for f in (5, 10, 20) for s in (50, 100)]
    signals = {pair: sma_signals(sp500, *pair) for pair in pairs}
    columns = pd.MultiIndex.from_tuples(pairs, names=["fast", "slow"])
    entries = pd.DataFrame({p: signals[p][0] for p in pairs}).set_axis(columns, axis=1)
    exits = pd.DataFrame({p: signals[p][1] for p in pairs}).set_axis(columns, axis=1)
    return bt.from_signals(sp500, entries, exits, execution="close")


@pytest.fixture(scope="module")
def html_path(pf: bt.Portfolio, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pf.to_html(tmp_path_factory.mktemp("report") / "sma.html", title="SMA 10/50 on S&P 500")


@pytest.fixture(scope="module")
def html(html_path: Path) -> str:
    return html_path.read_text(encoding="utf-8")


# ---- HTML ---------------------------------------------------------------------------------------
def test_write_html_single_column_is_self_contained(html_path: Path, html: str) -> None:
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert html_path.is_file()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count(bundle) == 1  # plotly.js inlined once, so the file opens offline
    rest = html.replace(bundle, "")
    # The bundle itself names cdn.plot.ly as the default topojson URL (used by geo maps only);
    # the report must reference no CDN or external script of its own.
    assert "cdn.plot.ly" not in rest
    assert not re.search(r"<script[^>]*\bsrc=", rest)
    assert len(rest) < 1_000_000  # 5,031 bars of data plus tables stay well under 1 MB


def test_write_html_single_column_shows_formatted_metrics(pf: bt.Portfolio, html: str) -> None:
    stats = pf.stats().iloc[0]
    # Golden values on the real data (sma_cross 10/50, all-in, no fees).
    assert stats["total_return"] == pytest.approx(0.3086584, rel=1e-6)
    assert stats["trades"] == 67
    expected = {
        "Total return": "30.87%",
        "Sharpe ratio": f"{stats['sharpe']:.3f}",
        "Max drawdown": f"{stats['max_drawdown']:.2%}",
        "Win rate": f"{stats['win_rate']:.2%}",
        "Trades": "67",
        "End value": f"{stats['end_value']:,.2f}",
        "Max drawdown duration": f"{stats['max_drawdown_duration'].days:,} days",
        "Start": "1999-01-04",
        "End": "2018-12-31",
    }
    for label, text in expected.items():
        assert f'<td class="k">{label}</td><td>{text}</td>' in html, label
    assert "SMA 10/50 on S&amp;P 500" in html  # title escaped
    assert "5,031 bars of 1 day" in html


def test_write_html_long_only_draws_entry_and_exit_markers(pf: bt.Portfolio, html: str) -> None:
    data = plotly_data(html, "celeris-main")
    trades = pf.trades
    assert [t["name"] for t in data] == ["Close", "Long entry", "Exit", "Equity", "Drawdown"]
    entry = trace(data, "Long entry")
    assert entry["marker"]["symbol"] == "triangle-up"
    assert entry["marker"]["color"] == report._LONG_COLOR
    np.testing.assert_allclose(values(entry["y"]), trades["entry_price"].to_numpy())
    assert list(values(entry["x"])) == list(trades["entry_time"].dt.strftime("%Y-%m-%d"))
    closed = trades[trades["status"] == "closed"]
    np.testing.assert_allclose(values(trace(data, "Exit")["y"]), closed["exit_price"].to_numpy())
    # Not downsampled: every bar drawn, equity and drawdown as the portfolio reports them.
    np.testing.assert_allclose(values(trace(data, "Close")["y"]), pf.close.iloc[:, 0].to_numpy())
    np.testing.assert_allclose(values(trace(data, "Equity")["y"]), pf.equity.iloc[:, 0].to_numpy())
    dd = trace(data, "Drawdown")
    assert dd["fill"] == "tozeroy"
    np.testing.assert_allclose(values(dd["y"]), pf.drawdown.iloc[:, 0].to_numpy(), atol=1e-12)
    assert "downsampled" not in html.lower()


def test_write_html_both_directions_draws_short_entries_red_down(
    sp500: pd.DataFrame, tmp_path: Path
) -> None:
    entries, exits = sma_signals(sp500, 10, 50)
    pf = bt.from_signals(sp500, entries, exits, direction="both", execution="close")
    data = plotly_data(
        pf.to_html(tmp_path / "both.html").read_text(encoding="utf-8"), "celeris-main"
    )
    trades = pf.trades
    short = trace(data, "Short entry")
    assert short["marker"]["symbol"] == "triangle-down"
    assert short["marker"]["color"] == report._SHORT_COLOR
    n_short = int((trades["direction"] == "short").sum())
    assert n_short > 0
    assert len(values(short["y"])) == n_short
    assert len(values(trace(data, "Long entry")["y"])) == len(trades) - n_short


def test_write_html_is_deterministic_and_leaves_no_temp_file(
    pf: bt.Portfolio, tmp_path: Path
) -> None:
    first = pf.to_html(tmp_path / "a" / "b" / "r.html").read_bytes()
    second = pf.to_html(tmp_path / "a" / "b" / "r.html").read_bytes()
    assert first == second
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["r.html"]


def test_write_html_grid_portfolio_defaults_to_best_with_top_table_and_heatmap(
    grid_pf: bt.Portfolio, tmp_path: Path
) -> None:
    html = grid_pf.to_html(tmp_path / "grid.html").read_text(encoding="utf-8")
    best = grid_pf.best("sharpe", 10)
    assert best.index[0] == (10, 100)
    assert "Shown: <b>fast=10, slow=100</b> (best of 6 by sharpe)" in html
    assert "Top 6 of 6 columns by sharpe" in html
    assert html.count('<tr class="chosen">') == 1
    top_returns = re.findall(r"<tr(?: class=\"chosen\")?><td class=\"k\">\d+</td>.*?</tr>", html)
    assert len(top_returns) == 6
    assert f"<td>{best['total_return'].iloc[0]:.2%}</td>" in top_returns[0]
    heat = trace(plotly_data(html, "celeris-heatmap"), "sharpe heat-map")
    assert heat["type"] == "heatmap"
    assert heat["x"] == ["5", "10", "20"] and heat["y"] == ["50", "100"]
    expected = grid_pf.stats()["sharpe"].unstack("fast").to_numpy()
    np.testing.assert_allclose(values(heat["z"]), expected)


def test_write_html_column_label_draws_that_column(grid_pf: bt.Portfolio, tmp_path: Path) -> None:
    html = report.write_html(grid_pf, tmp_path / "c.html", column=(5, 50)).read_text(
        encoding="utf-8"
    )
    stats = grid_pf[(5, 50)].stats().iloc[0]
    assert "Shown: <b>fast=5, slow=50</b></p>" in html
    assert f'<td class="k">Total return</td><td>{stats["total_return"]:.2%}</td>' in html


def test_sweep_to_html_two_params_has_heatmap_and_top_table(
    sp500: pd.DataFrame, tmp_path: Path
) -> None:
    result = bt.sweep(sp500, "sma_cross", {"fast": [5, 10, 20], "slow": [50, 100]}, progress=False)
    path = result.to_html(tmp_path / "sweep" / "report.html")
    html = path.read_text(encoding="utf-8")
    best_params = result.best_params("sharpe")
    label = ", ".join(f"{k}={v}" for k, v in best_params.items())
    # The title names the strategy and its parameters, the header the fill and annualisation.
    assert f"<title>sma_cross ({label}): best by sharpe</title>" in html
    assert f"Shown: <b>{label}</b> (best of 6 combinations by sharpe)" in html
    assert "Fills: next_open (fills at the next bar&#x27;s open)" in html
    assert "annualisation: 252 days/year (inferred from the data: no weekend bars)" in html
    heat = trace(plotly_data(html, "celeris-heatmap"), "sharpe heat-map")
    assert heat["type"] == "heatmap"
    pivot = result.heatmap("sharpe")
    assert heat["x"] == ["5", "10", "20"] and heat["y"] == ["50", "100"]
    np.testing.assert_allclose(values(heat["z"]), pivot.to_numpy())
    assert f"{pivot.loc[100, 10]:.3f}" in heat["text"][1]
    assert "Top 6 of 6 combinations by sharpe" in html
    best = result.best("sharpe", 1).iloc[0]
    assert f'<td class="k">Sharpe ratio</td><td>{best["sharpe"]:.3f}</td>' in html


def test_write_html_long_series_downsamples_keeping_extrema_and_says_so(tmp_path: Path) -> None:
    n = 60_000
    rng = np.random.default_rng(7)
    index = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC", name="time")
    close = pd.Series(100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n))), index=index)
    entries = pd.Series(np.arange(n) % 5_000 == 100, index=index)
    exits = pd.Series(np.arange(n) % 5_000 == 2_600, index=index)
    pf = bt.from_signals(close, entries, exits, execution="close")
    path = pf.to_html(tmp_path / "long.html")
    html = path.read_text(encoding="utf-8")
    assert "the charts draw" in html and "of 60,000 bars" in html
    data = plotly_data(html, "celeris-main")
    drawn = values(trace(data, "Close")["y"])
    assert 1_000 < len(drawn) <= report.MAX_PLOT_BARS + len(pf.trades) * 2
    assert drawn.max() == close.max() and drawn.min() == close.min()
    dd = values(trace(data, "Drawdown")["y"])
    assert dd.min() == pytest.approx(-pf.stats()["max_drawdown"].iloc[0], rel=1e-12)
    x = list(values(trace(data, "Close")["x"]))
    assert x[0] == "2024-01-01T00:00" and x == sorted(x)
    # Every trade bar is on the drawn line.
    for t in pf.trades["entry_time"]:
        assert t.strftime("%Y-%m-%dT%H:%M") in x
    assert path.stat().st_size < 5_000_000 + 2_000_000


def test_write_html_unknown_column_raises_config_error(
    grid_pf: bt.Portfolio, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"no column \(7, 50\).*did you mean '\(5, 50\)'"):
        grid_pf.to_html(tmp_path / "x.html", column=(7, 50))
    with pytest.raises(ConfigError, match="no column 'fast'"):
        grid_pf.to_html(tmp_path / "x.html", column="fast")
    assert not (tmp_path / "x.html").exists()


def test_write_html_unknown_metric_raises_config_error(pf: bt.Portfolio, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'sharpe'"):
        report.write_html(pf, tmp_path / "x.html", metric="sharp")


# ---- PNG ----------------------------------------------------------------------------------------
def test_write_png_single_column_writes_readable_png(pf: bt.Portfolio, tmp_path: Path) -> None:
    import matplotlib.image

    path = pf.plot_png(tmp_path / "png" / "sma.png")
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC
    assert 30_000 < len(raw) < 2_000_000
    image = matplotlib.image.imread(path)
    assert image.shape == (round(8.5 * 110), 11 * 110, 4)  # 11 x 8.5 in at 110 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == ["sma.png"]


def test_write_png_unknown_column_raises_config_error(
    grid_pf: bt.Portfolio, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no column"):
        grid_pf.plot_png(tmp_path / "x.png", column=(1, 2))
    assert not (tmp_path / "x.png").exists()


def test_write_png_grid_column_label_titles_that_column(
    grid_pf: bt.Portfolio, tmp_path: Path
) -> None:
    path = report.write_png(grid_pf, tmp_path / "c.png", column=(20, 100))
    assert path.read_bytes()[:8] == PNG_MAGIC


# ---- pieces -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "text"),
    [
        ("total_return", 0.308658, "30.87%"),
        ("max_drawdown", 0.5, "50.00%"),
        ("win_rate", 1.0, "100.00%"),
        ("sharpe", 0.21598, "0.216"),
        ("profit_factor", np.inf, "inf"),
        ("sortino", np.nan, "n/a"),
        ("end_value", 130865.842517, "130,865.84"),
        ("trades", np.int64(1234), "1,234"),
        ("max_drawdown_duration", pd.Timedelta(days=2907), "2,907 days"),
        ("max_drawdown_duration", pd.Timedelta(days=1, hours=3), "1 day 3 h"),
        ("max_drawdown_duration", pd.Timedelta(minutes=95), "1 h 35 min"),
        ("max_drawdown_duration", pd.Timedelta(seconds=30), "30 s"),
        ("max_drawdown_duration", 42.0, "42 bars"),
        ("start", pd.Timestamp("2024-01-02", tz="UTC"), "2024-01-02"),
        ("end", pd.Timestamp("2024-01-02 13:05", tz="UTC"), "2024-01-02 13:05"),
    ],
)
def test_format_metric_each_kind_expected_text(name: str, value: Any, text: str) -> None:
    assert report.format_metric(name, value) == text


def test_plot_positions_long_series_keeps_bucket_extrema_and_trade_bars() -> None:
    rng = np.random.default_rng(3)
    series = np.cumsum(rng.normal(size=100_003))
    keep = np.array([17, 50_001, 99_999])
    pos = report._plot_positions([series], keep, budget=3_000)
    assert len(pos) <= 3_000 + len(keep) + 1
    assert np.all(np.diff(pos) > 0)
    assert pos[0] == 0 and pos[-1] == len(series) - 1
    assert set(keep) <= set(pos.tolist())
    assert series.argmax() in pos and series.argmin() in pos
    short = report._plot_positions([series[:500]], keep[:1], budget=3_000)
    np.testing.assert_array_equal(short, np.arange(500))


def test_atomic_write_failure_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    target.write_text("previous")

    def broken(fh: Any) -> None:
        fh.write(b"half a rep")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        report._atomic_write(target, broken)
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_import_backtest_does_not_import_plotting_libraries() -> None:
    code = (
        "import sys, celeris.backtest; "
        "print(sorted(m for m in ('plotly', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- notebook figure and titles (issue A11) -----------------------------------------------------
def test_portfolio_plot_returns_a_figure_and_writes_nothing(
    grid_pf: bt.Portfolio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import plotly.graph_objects as go

    monkeypatch.chdir(tmp_path)
    fig = grid_pf.plot(column=(10, 50))
    assert isinstance(fig, go.Figure)
    assert list(tmp_path.iterdir()) == []
    names = [t.name for t in fig.data]
    assert names[0] == "Close" and "Equity" in names and "Drawdown" in names
    one = grid_pf[(10, 50)]
    equity = next(t for t in fig.data if t.name == "Equity")
    np.testing.assert_allclose(np.asarray(equity.y), one.equity.iloc[:, 0].to_numpy())
    title = fig.layout.title.text
    assert "fast=10, slow=50" in title and "1999-01-04 to 2018-12-31" in title
    assert "close (fills at the signal bar" in title and "annualisation: 252 days/year" in title


def test_sweep_portfolio_is_named_for_report_titles(sp500: pd.DataFrame) -> None:
    result = bt.sweep(sp500, "sma_cross", {"fast": [10], "slow": [50]}, progress=False)
    pf = result.portfolio()
    assert pf.name == "sma_cross (fast=10, slow=50)"
    assert pf.plot().layout.title.text.startswith("sma_cross (fast=10, slow=50)<br>")
