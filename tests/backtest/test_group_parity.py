"""Trade-for-trade parity of the grouped, cash-sharing kernel with vectorbt 1.2.

``from_orders`` with every size type and ``from_signals(cash_sharing=True)`` with the options of
the single-column parity suite, under each call sequence, on the two real ``arch`` samples as one
book and on a synthetic panel whose assets list late and delist early. vectorbt has no delisting:
its side of a staggered case gets, at each delisted asset's last bar, the order Celeris's
settlement is (close the position at the close, no fee, no slippage).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from celeris.backtest import from_orders, from_signals
from celeris.backtest.book import Book
from celeris.data.panel import to_panel
from tests.helpers import assert_values_close

CALL_SEQS = ("default", "reversed", "auto")
SIZE_TYPES = ("amount", "value", "percent", "targetamount", "targetvalue", "targetpercent")
VBT_SIZE_TYPE = {name: code for code, name in enumerate(SIZE_TYPES)}  # vectorbt's SizeType order


def _arch_bars(module) -> pd.DataFrame:
    raw = module.load()
    bars = raw[["Open", "High", "Low", "Close", "Volume"]].astype("float64")
    bars.columns = ["open", "high", "low", "close", "volume"]
    bars.index = pd.DatetimeIndex(raw.index, name="time").tz_localize("UTC")
    return bars


@pytest.fixture(scope="module")
def real_panel():
    from arch.data import nasdaq, sp500

    return to_panel({"SPX": _arch_bars(sp500), "NDX": _arch_bars(nasdaq)})


def _synthetic_bars(seed: int, n: int, start: int, stop: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2022-01-01", periods=n, freq="D", tz="UTC", name="time")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = close * np.exp(rng.normal(0, 0.005, n))
    frame = pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.01,
            "low": np.minimum(open_, close) * 0.99,
            "close": close,
            "volume": 1.0,
        },
        index=idx,
    )
    return frame.iloc[start:stop]


@pytest.fixture(scope="module")
def staggered_panel():
    """Five assets over 600 days: one listed at day 50, one delisted at 400, one both."""
    spans = {"A": (0, 600), "B": (50, 600), "C": (0, 400), "D": (100, 500), "E": (0, 600)}
    return to_panel(
        {s: _synthetic_bars(k, 600, *span) for k, (s, span) in enumerate(spans.items())}
    )


def _delisted(panel) -> dict[int, int]:
    """Asset position -> last listed bar, for assets delisted before the data's end."""
    last = panel.listed.to_numpy()[::-1].argmax(axis=0)
    n = len(panel.index)
    return {a: n - 1 - int(k) for a, k in enumerate(last) if k > 0}


def _random_sizes(panel, size_type: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shape = (len(panel.index), len(panel.symbols))
    raw = rng.uniform(0.0, 1.0, shape)
    scale = {
        "amount": lambda x: (x - 0.47) * 6,
        "value": lambda x: (x - 0.47) * 6_000,
        "percent": lambda x: (x - 0.5) * 2,
        "targetamount": lambda x: (x - 0.2) * 40,
        "targetvalue": lambda x: (x - 0.2) * 40_000,
        "targetpercent": lambda x: (x - 0.2) * 0.6,
    }[size_type]
    sizes = np.where(rng.random(shape) < 0.08, scale(raw), np.nan)
    sizes[~panel.listed.to_numpy()] = np.nan
    return pd.DataFrame(sizes, index=panel.index, columns=panel.symbols)


def _vbt_settlement(panel, size, size_type, **costs):
    """vectorbt's inputs with each delisting as an explicit close at the last close, no costs."""
    settle = np.zeros(size.shape, dtype=bool)
    for a, last in _delisted(panel).items():
        settle[last, a] = True
    sizes = np.where(settle, 0.0, size.to_numpy())
    codes = np.where(settle, VBT_SIZE_TYPE["targetamount"], VBT_SIZE_TYPE[size_type])
    kw = {name: np.where(settle, 0.0, value) for name, value in costs.items()}
    return pd.DataFrame(sizes, index=size.index, columns=size.columns), codes, kw


def _compare_orders(book: Book, vpf) -> None:
    ours = book.orders
    theirs = vpf.orders.records_readable
    assert len(ours) == len(theirs), f"order count {len(ours)} vs vectorbt {len(theirs)}"
    assert len(theirs) > 10, "a parity case with few orders proves little"
    theirs = theirs.sort_values(["Timestamp", "Order Id"], kind="stable").reset_index(drop=True)
    # Both in execution order within a bar: ours sorted by bar (stable), theirs by order id.
    assert (ours["time"].to_numpy() == pd.DatetimeIndex(theirs["Timestamp"]).to_numpy()).all()
    assert (ours["asset"].astype(str).to_numpy() == theirs["Column"].astype(str).to_numpy()).all()
    assert (ours["side"].str.capitalize().to_numpy() == theirs["Side"].to_numpy()).all()
    assert_values_close(ours["size"], theirs["Size"], rtol=1e-9, label="size")
    assert_values_close(ours["price"], theirs["Price"], rtol=1e-12, label="price")
    assert_values_close(ours["fees"], theirs["Fees"], rtol=1e-9, atol=1e-9, label="fees")


def _compare_value(book: Book, vpf) -> None:
    theirs = vpf.value().to_numpy()
    ours = book.equity.to_numpy()[:, 0]
    assert_values_close(ours, theirs, rtol=1e-9, atol=1e-6, label="equity")
    stats = book.stats()
    assert_values_close(stats["end_value"], [vpf.final_value()], rtol=1e-9, label="end value")
    assert_values_close(
        stats["max_drawdown"], [-vpf.max_drawdown()], rtol=1e-9, atol=1e-12, label="drawdown"
    )


def _compare_trades(book: Book, vpf) -> None:
    ours = book.trades.sort_values(["asset", "entry_time", "exit_time"], kind="stable")
    theirs = vpf.trades.records_readable
    assert len(ours) == len(theirs), f"trade count {len(ours)} vs vectorbt {len(theirs)}"
    theirs = theirs.sort_values(["Column", "Entry Timestamp", "Exit Timestamp"], kind="stable")
    assert_values_close(ours["pnl"], theirs["PnL"], rtol=1e-8, atol=1e-6, label="trade pnl")
    assert_values_close(ours["size"], theirs["Size"], rtol=1e-9, label="trade size")
    stats = book.stats()
    assert int(stats["trades"].iloc[0]) == len(theirs)
    closed = vpf.trades.closed
    assert_values_close(stats["win_rate"], [closed.win_rate()], rtol=1e-12, label="win rate")


@pytest.mark.parametrize("call_seq", CALL_SEQS)
@pytest.mark.parametrize("size_type", SIZE_TYPES)
@pytest.mark.parametrize("panel_name", ["real_panel", "staggered_panel"])
def test_from_orders_cash_sharing_matches_vectorbt(request, panel_name, size_type, call_seq):
    panel = request.getfixturevalue(panel_name)
    size = _random_sizes(panel, size_type, seed=len(size_type) + len(call_seq))
    fees, slippage = 0.001, 0.0005
    book = from_orders(
        panel,
        size,
        size_type=size_type,
        fees=fees,
        fixed_fees=1.0,
        slippage=slippage,
        cash_sharing=True,
        call_seq=call_seq,
        execution="close",
    )
    v_size, codes, costs = _vbt_settlement(
        panel, size, size_type, fees=fees, fixed_fees=1.0, slippage=slippage
    )
    vpf = vbt.Portfolio.from_orders(
        panel.close,
        v_size,
        size_type=codes,
        **costs,
        init_cash=100_000.0,
        group_by=True,
        cash_sharing=True,
        call_seq=call_seq,
        freq="1D",
    )
    _compare_orders(book, vpf)
    _compare_value(book, vpf)


SIGNAL_CASES = [
    dict(fees=0.001, slippage=0.0005),
    dict(size=0.3, size_type="percent", fees=0.001),
    dict(size=20_000.0, size_type="value", fees=0.001, slippage=0.001),
    dict(size=10.0, direction="both", fees=0.001),
    dict(size=0.25, size_type="percent", sl_stop=0.04, tp_stop=0.06, fees=0.001),
    dict(size=15_000.0, size_type="value", tsl_stop=0.05, fees=0.001),
    dict(accumulate=True, size=5_000.0, size_type="value", fees=0.001, fixed_fees=1.0),
]


def _signals(panel, seed: int, p: float = 0.04):
    rng = np.random.default_rng(seed)
    shape = (len(panel.index), len(panel.symbols))
    make = lambda: pd.DataFrame(rng.random(shape) < p, index=panel.index, columns=panel.symbols)  # noqa: E731
    return make(), make()


def _vbt_signals(panel, entries, exits, execution, case):
    kw = dict(case)
    tsl = kw.pop("tsl_stop", None)
    if tsl is not None:
        kw["sl_stop"] = tsl
        kw["sl_trail"] = True
    if execution == "next_open":
        entries = entries.shift(1, fill_value=False)
        exits = exits.shift(1, fill_value=False)
        kw["price"] = panel.open
        kw["stop_entry_price"] = "price"
    return entries, exits, kw


@pytest.mark.parametrize("execution", ["close", "next_open"])
@pytest.mark.parametrize("call_seq", CALL_SEQS)
@pytest.mark.parametrize("case", range(len(SIGNAL_CASES)))
def test_from_signals_cash_sharing_matches_vectorbt(real_panel, case, call_seq, execution):
    panel = real_panel
    entries, exits = _signals(panel, seed=case)
    book = from_signals(
        panel, entries, exits, cash_sharing=True, call_seq=call_seq, execution=execution,
        **SIGNAL_CASES[case],
    )  # fmt: skip
    v_entries, v_exits, kw = _vbt_signals(panel, entries, exits, execution, SIGNAL_CASES[case])
    vpf = vbt.Portfolio.from_signals(
        panel.close, v_entries, v_exits, open=panel.open, high=panel.high, low=panel.low,
        init_cash=100_000.0, group_by=True, cash_sharing=True, call_seq=call_seq, freq="1D", **kw,
    )  # fmt: skip
    _compare_orders(book, vpf)
    _compare_value(book, vpf)
    _compare_trades(book, vpf)


@pytest.mark.parametrize("call_seq", CALL_SEQS)
def test_from_signals_staggered_listings_match_vectorbt_with_explicit_settlement(
    staggered_panel, call_seq
):
    panel = staggered_panel
    entries, exits = _signals(panel, seed=7, p=0.05)
    listed = panel.listed.to_numpy()
    entries = entries & listed
    exits = exits & listed
    for a, last in _delisted(panel).items():  # hold each delisted asset into its delisting
        entries.iloc[last - 5 : last + 1, a] = [True, False, False, False, False, False]
        exits.iloc[last - 5 : last + 1, a] = False
    book = from_signals(
        panel, entries, exits, size=0.3, size_type="percent", fees=0.001, slippage=0.001,
        cash_sharing=True, call_seq=call_seq, execution="close",
    )  # fmt: skip
    v_entries, v_exits = entries.copy(), exits.copy()
    fees = np.full(entries.shape, 0.001)
    slippage = np.full(entries.shape, 0.001)
    for a, last in _delisted(panel).items():
        v_entries.iloc[last, a] = False
        v_exits.iloc[last, a] = True
        fees[last, a] = 0.0
        slippage[last, a] = 0.0
    vpf = vbt.Portfolio.from_signals(
        panel.close, v_entries, v_exits, open=panel.open, high=panel.high, low=panel.low,
        size=0.3, size_type="percent", fees=fees, slippage=slippage, init_cash=100_000.0,
        group_by=True, cash_sharing=True, call_seq=call_seq, freq="1D",
    )  # fmt: skip
    assert (book.orders["kind"] == "delisting").any(), "the case must settle a delisting"
    _compare_orders(book, vpf)
    _compare_value(book, vpf)
