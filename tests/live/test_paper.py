"""The paper account steps the backtest kernel: replayed history equals ``from_signals``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.backtest import from_signals
from celeris.data import load
from celeris.errors import ConfigError, DataError
from celeris.live.paper import PaperAccount
from tests.backtest.test_parity_vectorbt import OPTION_CASES


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load("sample:sp500").iloc[:1500]


@pytest.fixture(scope="module")
def two() -> dict[str, pd.DataFrame]:
    a = load("sample:sp500")
    b = load("sample:nasdaq")
    common = a.index.intersection(b.index)[:1200]
    return {"SPX": a.loc[common], "NDX": b.loc[common]}


def _signals(n: int, width: int, seed: int, p: float = 0.05) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.random((n, width)) < p for name in ("entries", "exits")}


def _replay(account: PaperAccount, bars: pd.DataFrame, sig: dict, steps: list[int], **kw) -> None:
    """Feed ``bars`` to the account in consecutive steps of the given sizes (cycled)."""
    i, j = 0, 0
    if bars.columns.nlevels == 1:
        bars = pd.concat({account.symbols[0]: bars}, axis=1)
    fields = ("open", "high", "low", "close")
    ohlc = np.stack(
        [bars.xs(f, axis=1, level=1)[list(account.symbols)].to_numpy() for f in fields], axis=1
    )
    times = bars.index.as_unit("ns").asi8
    while i < len(bars):
        k = steps[j % len(steps)]
        part = slice(i, i + k)
        extra = {name: v[part] for name, v in kw.items()}
        account.step(times[part], ohlc[part], {n: a[part] for n, a in sig.items()},
                     tz=bars.index.tz, index_name=bars.index.name, **extra)  # fmt: skip
        i += k
        j += 1
    # the frame entry point gives the same records for the last bar (fresh account, one step)
    if len(bars) > 1:
        other = PaperAccount(account.symbols, account.options, long_short=account.long_short)
        frame = other.step_frame(bars, {n: a for n, a in sig.items()}, **kw)
        assert len(frame) == len(account.book().orders)


def _assert_same(book, ref) -> None:
    """Orders, trades, equity and every metric identical (not close: the same arithmetic)."""
    pd.testing.assert_frame_equal(
        book.equity.set_axis(ref.equity.columns, axis=1), ref.equity, check_exact=True
    )
    mine, theirs = book.orders, ref.orders
    for col in ("time", "side", "size", "price", "fees"):
        assert (mine[col].to_numpy() == theirs[col].to_numpy()).all(), col
    cols = ["size", "entry_price", "exit_price", "pnl", "return", "status", "direction"]
    pd.testing.assert_frame_equal(
        book.trades[cols].reset_index(drop=True),
        ref.trades[cols].reset_index(drop=True),
        check_exact=True,
    )
    a, b = book.stats(), ref.stats()
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True
    )


@pytest.mark.parametrize("execution", ["next_open", "close"])
@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
def test_paper_replay_every_parity_option_set_equals_from_signals(sp500, case, execution):
    opts = {**OPTION_CASES[case], "execution": execution}
    sig = _signals(len(sp500), 1, seed=case)
    account = PaperAccount(["SPX"], opts)
    _replay(account, sp500, sig, [1, 7, 64, 3, 250])
    ref = from_signals(sp500, sig["entries"][:, 0], sig["exits"][:, 0], **opts)
    book = account.book()
    assert len(book.orders) > 0, "a replay without orders proves nothing"
    pd.testing.assert_series_equal(
        book.equity.iloc[:, 0], ref.equity.iloc[:, 0], check_names=False, check_exact=True
    )
    mine, theirs = book.orders, ref.orders
    for col in ("time", "side", "size", "price", "fees"):
        assert (mine[col].to_numpy() == theirs[col].to_numpy()).all(), col
    cols = ["size", "entry_price", "exit_price", "pnl", "return"]
    for col in cols:
        assert (book.trades[col].to_numpy() == ref.trades[col].to_numpy()).all(), col
    for metric in ("end_value", "total_return", "sharpe", "max_drawdown", "win_rate", "trades"):
        x, y = book.stats()[metric].to_numpy(float), ref.stats()[metric].to_numpy(float)
        assert np.array_equal(x, y, equal_nan=True), metric


def test_paper_replay_long_short_arrays_equals_from_signals(sp500):
    rng = np.random.default_rng(5)
    n = len(sp500)
    sig = {
        k: rng.random((n, 1)) < 0.04 for k in ("entries", "exits", "short_entries", "short_exits")
    }
    opts = {"fees": 0.001, "sl_stop": 0.05}
    account = PaperAccount(["SPX"], opts, long_short=True)
    _replay(account, sp500, sig, [5, 1, 100])
    ref = from_signals(sp500, **{k: v[:, 0] for k, v in sig.items()}, **opts)
    book = account.book()
    assert (book.orders["size"].to_numpy() == ref.orders["size"].to_numpy()).all()
    assert (book.equity.iloc[:, 0].to_numpy() == ref.equity.iloc[:, 0].to_numpy()).all()


@pytest.mark.parametrize(
    "opts",
    [
        {"cash_sharing": True, "fees": 0.001, "size": 0.4, "size_type": "percent"},
        {"cash_sharing": True, "call_seq": "auto", "direction": "both", "size": 50.0},
        {"instrument": "perp", "leverage": 5.0, "fees": 0.0005, "direction": "both", "size": 30.0},
        {
            "instrument": "perp",
            "leverage": 10.0,
            "margin_mode": "cross",
            "cash_sharing": True,
            "fees": 0.0005,
            "direction": "both",
            "size": 40.0,
            "sl_stop": 0.03,
        },
    ],
    ids=["shared", "shared-auto-both", "perp-isolated", "perp-cross-shared"],
)
def test_paper_replay_book_options_equal_from_signals(two, opts):
    panel = pd.concat(two, axis=1)
    n = len(panel)
    sig = _signals(n, 2, seed=11, p=0.06)
    rng = np.random.default_rng(3)
    funding = np.where(rng.random((n, 2)) < 0.3, rng.normal(0, 3e-4, (n, 2)), 0.0)
    perp = opts.get("instrument") == "perp"
    account = PaperAccount(list(two), opts)
    kw = {"funding": funding} if perp else {}
    _replay(account, panel, sig, [1, 13, 200], **kw)
    extra = {}
    if perp:
        extra["funding_rate"] = pd.DataFrame(funding, index=panel.index, columns=list(two))
    ref = from_signals(panel, sig["entries"], sig["exits"], **opts, **extra)
    _assert_same(account.book(), ref)


def test_paper_step_refuses_a_bar_not_after_the_last(sp500):
    account = PaperAccount(["SPX"])
    sig = _signals(10, 1, 0)
    account.step_frame(sp500.iloc[:10], sig)
    with pytest.raises(DataError, match="not after the last processed bar"):
        account.step_frame(sp500.iloc[5:10], {k: v[:5] for k, v in sig.items()})


def test_paper_refuses_per_bar_options():
    with pytest.raises(ConfigError, match="limit orders"):
        PaperAccount(["BTC/USDT"], {"order_type": "limit"})
    with pytest.raises(ConfigError, match="non-empty"):
        PaperAccount([])


def test_paper_refuses_a_bad_option_before_any_bar():
    with pytest.raises(ConfigError, match="feez"):
        PaperAccount(["BTC/USDT"], {"feez": 0.001})
    with pytest.raises(ConfigError, match="leverage"):
        PaperAccount(["BTC/USDT"], {"leverage": 3.0})  # leverage on spot


def test_paper_step_refuses_a_missing_price(sp500):
    bars = sp500.iloc[:5].copy()
    bars.iloc[2, bars.columns.get_loc("close")] = np.nan
    with pytest.raises(DataError, match="missing or non-positive price"):
        PaperAccount(["SPX"]).step_frame(bars, _signals(5, 1, 0))


def test_paper_long_step_of_many_accounts_runs_them_on_threads_with_the_same_result():
    from celeris.data.synthetic import synthetic
    from celeris.live import paper

    frames = {f"S{i}": synthetic(n_bars=20_000, seed=i, freq="1min") for i in range(3)}
    panel = pd.concat(frames, axis=1)
    sig = _signals(len(panel), 3, seed=2, p=0.01)
    opts = {"fees": 0.001, "sl_stop": 0.02, "direction": "both", "size": 1.0}
    assert len(panel) * 3 >= paper._PARALLEL_WORK  # the threaded entry runs
    account = PaperAccount(list(frames), opts)
    _replay(account, panel, sig, [len(panel)])
    ref = PaperAccount(list(frames), opts)
    _replay(ref, panel, sig, [997])  # short steps: one thread (equal to from_signals above)
    _assert_same(account.book(), ref.book())


@pytest.mark.parametrize(
    ("opts", "want"),
    [
        ({"size": 2.0}, 2 * 50.0),  # amount: units x price
        ({"size": 300.0, "size_type": "value"}, 300.0),
        ({"size": 0.25, "size_type": "percent"}, 0.25 * 1000.0),
        ({}, 1000.0),  # an infinite size: all the cash
        ({"size": 1e6, "size_type": "value"}, 1000.0),  # cut to what the cash buys
        ({"instrument": "perp", "leverage": 3.0}, 3000.0),
    ],
)
def test_paper_entry_value_is_what_the_order_can_add(opts, want):
    account = PaperAccount(["A", "B"], {"init_cash": 1000.0, **opts})
    assert account.entry_value(np.array([50.0, 50.0])).tolist() == [want, want]
    assert account.entry_value(np.array([50.0, 50.0]), pending=True).tolist() == [0.0, 0.0]


def test_paper_entry_value_of_a_held_position_and_of_a_pending_entry(sp500):
    account = PaperAccount(["SPX"], {"init_cash": 10_000.0, "size": 1.0})
    ohlc = sp500[["open", "high", "low", "close"]].to_numpy()[:3, :, None]
    times = sp500.index[:3].as_unit("ns").asi8
    step = {"entries": np.array([[True]]), "exits": np.array([[False]])}
    account.step(times[:1], ohlc[:1], step)  # an entry at the close: waits for the next open
    price = np.array([100.0])
    assert account.entry_value(price, pending=True).tolist() == [100.0]
    account.step(times[1:2], ohlc[1:2], {k: ~v if k == "entries" else v for k, v in step.items()})
    assert account.position_array()[0] == 1.0
    assert account.entry_value(price).tolist() == [0.0]  # held, no accumulation: ignored
    assert account.entry_value(price, pending=True).tolist() == [0.0]
