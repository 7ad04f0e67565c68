"""``celeris backtest|sweep --cash-sharing``: a rule strategy on several assets, one account."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.backtest import from_signals
from celeris.backtest.strategies import get_strategy
from celeris.cli.main import app
from celeris.data import Store, load, synthetic
from celeris.data.panel import to_panel
from tests.helpers import assert_values_close

runner = CliRunner()
SPECS = ("sample:sp500", "sample:nasdaq")
TWO = ("--data", SPECS[0], "--data", SPECS[1])
PARAMS = ("--param", "fast=10", "--param", "slow=50")


def invoke(*args: str):
    return runner.invoke(app, list(args))


def _api_book(bars: dict[str, pd.DataFrame], params: dict[str, int], call_seq: str = "auto", **kw):
    """The book built by hand: each asset's signals from its own bars, one account."""
    strat = get_strategy("sma_cross")
    panel = to_panel(bars)
    entries = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
    exits = entries.copy()
    for spec, frame in bars.items():
        e, x = strat.signals(frame, params)
        entries.loc[e.index, spec] = e.to_numpy()
        exits.loc[x.index, spec] = x.to_numpy()
    return from_signals(panel, entries, exits, cash_sharing=True, call_seq=call_seq, **kw)


@pytest.mark.parametrize("call_seq", ["auto", "default", "reversed"])
def test_backtest_cash_sharing_json_equals_from_signals_on_the_panel(call_seq: str):
    result = invoke(
        "backtest", *TWO, *PARAMS, "--cash-sharing", "--call-seq", call_seq, "--fees", "0.001",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    book = _api_book({s: load(s) for s in SPECS}, {"fast": 10, "slow": 50}, call_seq, fees=0.001)
    stats = book.stats().iloc[0]
    assert out["call_seq"] == call_seq and out["data"] == list(SPECS)
    assert_values_close(out["stats"]["end_value"], stats["end_value"], rtol=1e-12)
    assert out["stats"]["trades"] == stats["trades"] and len(out["trades"]) == len(book.trades)
    pnl = sum(a["pnl"] for a in out["assets"].values())
    assert_values_close(pnl, stats["end_value"] - 100_000.0, rtol=1e-9)
    assert {t["asset"] for t in out["trades"]} == set(SPECS)  # both assets traded


def test_backtest_cash_sharing_size_options_reach_the_book():
    args = ("backtest", *TWO, *PARAMS, "--cash-sharing", "--size", "40000", "--size-type", "value")
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    book = _api_book(
        {s: load(s) for s in SPECS}, {"fast": 10, "slow": 50}, size=40_000.0, size_type="value"
    )
    assert_values_close(out["stats"]["end_value"], book.stats().iloc[0]["end_value"], rtol=1e-12)
    entries = [t for t in out["trades"] if t["entry_time"]]
    assert_values_close(
        [t["size"] * t["entry_price"] for t in entries[:5]], [40_000.0] * 5, rtol=1e-9
    )


def test_backtest_size_flag_also_applies_to_one_asset():
    result = invoke("backtest", *PARAMS, "--size", "0.5", "--size-type", "percent", "--json")
    assert result.exit_code == 0, result.output
    bars = load("sample:sp500")
    e, x = get_strategy("sma_cross").signals(bars, {"fast": 10, "slow": 50})
    pf = from_signals(bars, e, x, size=0.5, size_type="percent")
    out = json.loads(result.stdout)
    assert_values_close(out["stats"]["end_value"], pf.stats().iloc[0]["end_value"], rtol=1e-12)


def test_backtest_cash_sharing_table_shows_book_assets_and_trades(tmp_path: Path):
    html = tmp_path / "book.html"
    result = invoke("backtest", *TWO, *PARAMS, "--cash-sharing", "--html", str(html))
    assert result.exit_code == 0, result.output
    for text in ("assets on the shared account", "P&L", "weight at end %", "last 10 of",
                 "on one account (call_seq auto)", "sample:nasdaq"):  # fmt: skip
        assert text in result.stdout, text
    assert html.read_text().count("sample:nasdaq") > 0


def test_backtest_cash_sharing_staggered_listing_signals_from_each_assets_own_bars(
    tmp_path: Path,
):
    part = tmp_path / "late.csv"
    sp500 = load("sample:sp500")
    sp500.iloc[2000:4000].to_csv(part)
    result = invoke("backtest", "--data", "sample:nasdaq", "--data", str(part), *PARAMS,
                    "--cash-sharing", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    book = _api_book(
        {"sample:nasdaq": load("sample:nasdaq"), str(part): load(str(part))},
        {"fast": 10, "slow": 50},
    )
    assert_values_close(out["stats"]["end_value"], book.stats().iloc[0]["end_value"], rtol=1e-12)
    assert out["listed"][str(part)] == [str(sp500.index[2000]), str(sp500.index[3999])]
    late = [t for t in out["trades"] if t["asset"] == str(part)]
    assert late and min(t["entry_time"] for t in late) > str(sp500.index[2000 + 50])


def test_sweep_cash_sharing_ranks_one_book_per_parameter_set():
    result = invoke(
        "sweep", *TWO, "--cash-sharing", "--grid", "fast=10,20", "--grid", "slow=50,100",
        "--top", "4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["variants"] == 4 and len(out["top"]) == 4
    bars = {s: load(s) for s in SPECS}
    sharpe = {
        (f, s): _api_book(bars, {"fast": f, "slow": s}).stats().iloc[0]["sharpe"]
        for f in (10, 20)
        for s in (50, 100)
    }
    got = {(row["fast"], row["slow"]): row["sharpe"] for row in out["top"]}
    assert got.keys() == sharpe.keys()
    assert_values_close(list(got.values()), [sharpe[k] for k in got], rtol=1e-12)
    ranked = [(row["fast"], row["slow"]) for row in out["top"]]
    assert ranked == sorted(sharpe, key=lambda k: -sharpe[k])


def test_sweep_cash_sharing_table_and_csv(tmp_path: Path):
    csv = tmp_path / "books.csv"
    result = invoke("sweep", *TWO, "--cash-sharing", "--grid", "fast=10,20", "--grid",
                    "slow=50", "--csv", str(csv))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 books (one account each) x 2 assets" in result.stdout
    assert "top 2 by sharpe" in result.stdout
    assert len(pd.read_csv(csv)) == 2


@pytest.fixture
def store_home(tmp_path: Path, monkeypatch) -> Store:
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    store = Store()
    for i, symbol in enumerate(("AAA/USDT", "BBB/USDT")):
        store.save(synthetic(600, freq="1h", seed=i + 3), "test", symbol, "1h")
    return store


def test_backtest_cash_sharing_store_glob(store_home: Store):
    result = invoke("backtest", "--data", "store:test/*/1h", "--cash-sharing", *PARAMS, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["data"] == ["store:test/AAA/USDT/1h", "store:test/BBB/USDT/1h"]
    assert np.isfinite(out["stats"]["end_value"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("backtest", *TWO, *PARAMS), "add --cash-sharing to trade them from one account"),
        (("sweep", *TWO, "--grid", "fast=10"), "add --cash-sharing"),
        (("backtest", "--call-seq", "auto"), "--call-seq orders the orders of a shared account"),
        (("backtest", *TWO, "--cash-sharing", "--call-seq", "autoo"), "did you mean 'auto'"),
        (
            ("backtest", *TWO, "--cash-sharing", "--strategy", "model:x.safetensors"),
            "model:PATH strategy trades one asset",
        ),
        (("backtest", *TWO, "--cash-sharing", "--png", "x.png"), "--png draws one asset"),
        (
            ("sweep", *TWO, "--cash-sharing", "--grid", "sl_stop=0.02,0.05"),
            "option axes are not swept with --cash-sharing yet",
        ),
        (("backtest", "--data", "store:nowhere/*/1h", "--cash-sharing"), "matches no stored bars"),
        (("backtest", *TWO, "--cash-sharing", "--size", "-1"), "size"),
        (("backtest", *TWO, "--cash-sharing", "--size-type", "shares"), "size_type"),
    ],
)
def test_book_bad_input_exits_2_with_one_line(
    args: tuple[str, ...], message: str, tmp_path, monkeypatch
):
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("error:") == 1


def _crypto_calendar(tmp_path: Path) -> Path:
    """Daily bars every day of the week, overlapping the S&P 500's weekday bars."""
    bars = synthetic(1500, freq="1D", seed=5)
    bars.index = pd.date_range("2012-01-01", periods=1500, freq="D", tz="UTC", name="time")
    path = tmp_path / "coin.csv"
    bars.to_csv(path)
    return path


def test_backtest_cash_sharing_other_calendar_refused_then_nan_policy(tmp_path: Path):
    coin = _crypto_calendar(tmp_path)
    args = ("backtest", "--data", "sample:sp500", "--data", str(coin), "--cash-sharing", *PARAMS)
    refused = invoke(*args)
    assert refused.exit_code == 2
    assert "'sample:sp500' has no bar at 2012-01-01" in refused.output
    strat = get_strategy("sma_cross")
    frames = {"sample:sp500": load("sample:sp500"), str(coin): load(str(coin))}
    for policy in ("ffill", "drop"):
        result = invoke(*args, "--nan-policy", policy, "--json")
        assert result.exit_code == 0, result.output
        panel = to_panel(frames, nan_policy=policy)
        entries = pd.DataFrame(False, index=panel.index, columns=panel.symbols)
        exits = entries.copy()
        for s in frames:  # drop: signals from each asset's own bars; ffill: from the filled bars
            bars = frames[s] if policy == "drop" else _filled(panel, s)
            e, x = strat.signals(bars, {"fast": 10, "slow": 50})
            entries.loc[e.index, s], exits.loc[x.index, s] = e.to_numpy(), x.to_numpy()
        book = from_signals(panel, entries, exits, cash_sharing=True, call_seq="auto")
        out = json.loads(result.stdout)
        assert_values_close(
            out["stats"]["end_value"], book.stats().iloc[0]["end_value"], rtol=1e-12
        )


def _filled(panel, symbol: str) -> pd.DataFrame:
    frame = pd.DataFrame({f: panel.field(f)[symbol] for f in panel.fields})
    return frame.loc[panel.first_valid[symbol] : panel.last_valid[symbol]]


def test_nan_policy_without_cash_sharing_exits_2():
    result = invoke("backtest", "--nan-policy", "ffill")
    assert result.exit_code == 2 and "add --cash-sharing" in result.output
    result = invoke("backtest", *TWO, "--cash-sharing", "--nan-policy", "fill")
    assert result.exit_code == 2 and "did you mean 'ffill'" in result.output
