"""Perpetual futures in the live loop: funding rates replayed from a series or fetched from the
exchange (through ccxt, against the fake Binance) are charged on the bar that opens at the
funding time, exactly as ``from_signals(..., instrument="perp", funding_rate=...)`` charges them."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from celeris.backtest import from_signals
from celeris.backtest.strategies import get_strategy
from celeris.cli.main import app
from celeris.data import align_funding, load, synthetic_funding
from celeris.errors import ConfigError, DataError, ExchangeError
from celeris.live.funding import ExchangeFunding, ReplayFunding
from celeris.live.journal import Journal, JournalReader
from celeris.live.loop import LiveLoop
from celeris.live.market import MarketStream
from celeris.live.metrics import LiveMetrics
from celeris.live.replay import ReplaySource
from celeris.live.signals import RuleSignals
from celeris.testing.fake_exchange import FakeExchange
from tests.live.conftest import run, wait_until

PARAMS = {"fast": 5, "slow": 20}
PERP = {"instrument": "perp", "leverage": 3.0, "fees": 0.0005, "direction": "both"}
runner = CliRunner()


# ---- replay -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spx_perp(tmp_path_factory: pytest.TempPathFactory):
    """600 real daily bars, daily synthetic funding on them (as CSV files too)."""
    tmp = tmp_path_factory.mktemp("spx_perp")
    bars = load("sample:sp500").iloc[:600]
    funding = synthetic_funding(bars, interval="1D", vol=0.002, seed=3)
    funding = funding[funding.index.isin(bars.index)]  # no funding on days without a bar
    bars_csv, funding_csv = tmp / "spx.csv", tmp / "funding.csv"
    bars.rename_axis("timestamp").to_csv(bars_csv)
    funding.rename("rate").rename_axis("timestamp").to_csv(funding_csv)
    return bars, funding, bars_csv, funding_csv


def _reference(bars: pd.DataFrame, opts: dict, rate: pd.Series):
    e, x = get_strategy("sma_cross").signals(bars, PARAMS)
    return from_signals(bars, e, x, funding_rate=rate, **opts)


def _same_run(book, ref, a: int = 0) -> None:
    assert np.array_equal(book.equity.iloc[:, a].to_numpy(), ref.equity.iloc[:, 0].to_numpy())
    mine = book.orders[book.orders["asset"] == book.equity.columns[a]]
    assert len(mine) == len(ref.orders) > 0
    for col in ("time", "side", "size", "price", "fees"):
        assert (mine[col].to_numpy() == ref.orders[col].to_numpy()).all(), col


def test_replay_funding_perp_replay_equals_from_signals_bit_for_bit(tmp_path, spx_perp):
    bars, funding, _, _ = spx_perp
    journal = Journal(tmp_path / "j.sqlite", ["SPX"], {"options": PERP})
    loop = LiveLoop(["SPX"], RuleSignals("sma_cross", PARAMS), journal, options=PERP)
    loop.resume()
    rates = ReplayFunding.from_series(["SPX"], {"SPX": funding}, {"SPX": bars})
    replay = ReplaySource({"SPX": bars}, block=97)  # funding times fall inside and across blocks
    assert asyncio.run(loop.run(replay, until_exhausted=True, funding=rates)) == len(bars)
    rate = align_funding(funding, bars)
    ref = _reference(bars, PERP, rate)
    book = loop.account.book()
    _same_run(book, ref)
    paid = float(ref.stats()["funding_paid"].iloc[0])
    assert float(book.stats()["funding_paid"].iloc[0]) == paid != 0.0
    # the journal holds each bar's rate: what a resume charges again
    assert np.array_equal(journal.history().funding[:, 0], rate.to_numpy())


def test_replay_funding_resumed_midway_charges_the_journaled_rates_again(tmp_path, spx_perp):
    bars, funding, _, _ = spx_perp
    rates = ReplayFunding.from_series(["SPX"], {"SPX": funding}, {"SPX": bars})

    def resumed() -> LiveLoop:
        journal = Journal(tmp_path / "r.sqlite", ["SPX"], {"options": PERP})
        loop = LiveLoop(["SPX"], RuleSignals("sma_cross", PARAMS), journal, options=PERP)
        loop.resume()
        return loop

    first = resumed()
    asyncio.run(first.run(ReplaySource({"SPX": bars.iloc[:350]}, block=64), until_exhausted=True,
                          funding=rates))  # fmt: skip
    first.journal.close()
    again = resumed()  # the account rebuilt from the journaled bars, signals and funding
    after = again.journal.last_ts()
    asyncio.run(again.run(ReplaySource({"SPX": bars}, block=64, after=after), until_exhausted=True,
                          funding=rates))  # fmt: skip
    _same_run(again.account.book(), _reference(bars, PERP, align_funding(funding, bars)))


def test_cli_live_replay_perp_with_funding_equals_celeris_backtest_perp(tmp_path, spx_perp):
    _, _, bars_csv, funding_csv = spx_perp
    perp = ["--perp", "--leverage", "3", "--margin-mode", "cross", "--liquidation-fee", "0.005",
            "--funding", str(funding_csv), "--fees", "0.0005", "--param", "fast=5",
            "--param", "slow=20", "--json"]  # fmt: skip
    live = runner.invoke(app, ["live", "--replay", str(bars_csv), "--symbols", "SPX",
                               "--strategy", "sma_cross", "--state", str(tmp_path / "s"), *perp])  # fmt: skip
    assert live.exit_code == 0, live.output
    backtest = runner.invoke(app, ["backtest", "--data", str(bars_csv), *perp])
    assert backtest.exit_code == 0, backtest.output
    mine, ref = json.loads(live.stdout)["stats"][0], json.loads(backtest.stdout)["stats"]
    for key in ("end_value", "funding_paid", "total_fees", "trades", "max_leverage"):
        assert mine[key] == ref[key], key
    assert ref["funding_paid"] != 0


def test_replay_funding_for_a_symbol_not_replayed_names_it(spx_perp):
    bars, funding, _, _ = spx_perp
    with pytest.raises(ConfigError, match=r"funding given for 'NDX'.*replayed symbols"):
        ReplayFunding.from_series(["SPX"], {"SPX": funding, "NDX": funding}, {"SPX": bars})
    with pytest.raises(ConfigError, match="no funding given for 'SPX'"):
        ReplayFunding.from_series(["SPX"], {}, {"SPX": bars})


def test_replay_funding_on_naive_times_is_refused_naming_the_symbol(spx_perp):
    bars, funding, _, _ = spx_perp
    with pytest.raises(DataError, match="funding of SPX: rates need a UTC DatetimeIndex"):
        ReplayFunding.from_series(["SPX"], {"SPX": funding.tz_localize(None)}, {"SPX": bars})


def test_replay_funding_time_between_bars_names_symbol_and_time(spx_perp):
    bars, funding, _, _ = spx_perp
    noon = bars.index[10] + pd.Timedelta(hours=12)
    odd = pd.concat([funding, pd.Series([1e-4], index=[noon])]).sort_index()
    with pytest.raises(DataError, match=rf"funding of SPX: .*{noon.date()} 12:00.*falls between"):
        ReplayFunding.from_series(["SPX"], {"SPX": odd}, {"SPX": bars})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--funding", "f.csv"], "--funding applies to perpetual futures: add --perp"),
        (["--leverage", "3"], "--leverage applies to perpetual futures: add --perp"),
        (
            ["--perp", "--funding", "f.csv", "--funding", "f.csv"],
            "--funding was given 2 time(s) for 1 replayed symbol(s) (SPX)",
        ),
    ],
)
def test_cli_live_perp_options_bad_use_is_a_one_line_error(tmp_path, spx_perp, args, message):
    bars_csv = spx_perp[2]
    result = runner.invoke(app, ["live", "--replay", str(bars_csv), "--symbols", "SPX",
                                 "--strategy", "sma_cross", "--state", str(tmp_path), *args])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_cli_live_exchange_run_given_funding_files_is_refused(tmp_path):
    result = runner.invoke(app, ["live", "--symbols", "BTC/USDT:USDT", "--strategy", "sma_cross",
                                 "--perp", "--funding", "f.csv", "--state", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "--funding is for a --replay" in result.output


def test_loop_run_given_funding_for_a_spot_account_is_refused(tmp_path, spx_perp):
    bars, funding, _, _ = spx_perp
    journal = Journal(tmp_path / "spot.sqlite", ["SPX"], {"options": {}})
    loop = LiveLoop(["SPX"], RuleSignals("sma_cross", PARAMS), journal)
    rates = ReplayFunding.from_series(["SPX"], {"SPX": funding}, {"SPX": bars})
    with pytest.raises(ConfigError, match="spot account"):
        asyncio.run(loop.run(ReplaySource({"SPX": bars}), until_exhausted=True, funding=rates))


# ---- the exchange, through ccxt -----------------------------------------------------------
PERPS = ("BTC/USDT:USDT", "ETH/USDT:USDT")
WARMUP = 30
LIVE = 40
START = pd.Timestamp("2024-01-01 07:40", tz="UTC")  # 30 warm-up bars: the clock at 08:10


def _funding_times() -> pd.DatetimeIndex:
    # 08:00 is settled before the run starts (a warm-up bar), 08:20 and 08:35 while it runs;
    # not the 8-hour grid: the schedule is the exchange's
    return pd.DatetimeIndex(["2024-01-01 08:00", "2024-01-01 08:20", "2024-01-01 08:35"], tz="UTC")


def _exchange_funding() -> dict[str, pd.Series]:
    times = _funding_times()
    return {
        "BTC/USDT": pd.Series([0.0003, 0.0021, -0.0017], index=times),
        "ETH/USDT": pd.Series([-0.0002, -0.0031, 0.0012], index=times),
    }


def test_live_loop_through_ccxt_charges_the_exchange_funding_on_its_bar(tmp_path):
    opts = dict(PERP, sl_stop=0.05)
    params = {"fast": 3, "slow": 8}
    funding = _exchange_funding()
    with FakeExchange(("BTC/USDT", "ETH/USDT"), "1m", history=WARMUP, n_bars=WARMUP + LIVE + 5,
                      start=START, funding=funding) as fake:  # fmt: skip
        journal = Journal(tmp_path / "j.sqlite", list(PERPS), {"options": opts})
        loop = LiveLoop(list(PERPS), RuleSignals("sma_cross", params), journal, options=opts,
                        history=200)  # fmt: skip
        loop.resume()
        source = ExchangeFunding("binance", PERPS, exchange_url=fake.url)

        async def scenario() -> None:
            stream = MarketStream("binance", list(PERPS), "1m", exchange_url=fake.url,
                                  history=WARMUP)  # fmt: skip
            stop = asyncio.Event()
            task = asyncio.create_task(
                loop.run(stream, stop=stop, idle_timeout_s=0.05, funding=source)
            )
            await wait_until("the subscriptions", lambda: all(fake.subscribers(s) for s in PERPS))
            for _ in range(LIVE // 10):
                await fake.advance_async(10)
                await asyncio.sleep(0.01)
            last = int(fake.bars(PERPS[0]).index[-1].value)
            await wait_until("the last bar journaled",
                             lambda: journal.last_ts() == last or task.done(), timeout_s=60)  # fmt: skip
            if task.done():  # the loop stopped by itself: its error is the test's
                task.result()
                pytest.fail("the live loop returned before the last bar")
            stop.set()
            await task
            await stream.close()
            await source.close()

        run(scenario(), timeout_s=150)
    stats = source.stats()
    assert stats["rates"] == 4 and stats["missed"] == 0  # 08:20 and 08:35, two symbols
    metrics = LiveMetrics(list(PERPS), timeframe_ns=60 * 10**9)
    metrics.loop, metrics.funding = loop, source
    assert "celeris_live_funding_rates_total 4.0" in metrics.text().decode()
    hist = journal.history()
    traded = hist.flags[:, 0] >= 0
    strat = get_strategy("sma_cross")
    book = loop.account.book()
    for a, (sym, spot) in enumerate(zip(PERPS, funding, strict=True)):
        bars = fake.bars(sym)
        live = bars.iloc[WARMUP:]
        e, x = strat.signals(bars, params)
        given = funding[spot]
        rate = align_funding(given[given.index >= live.index[0]], live)
        # the journal charged the exchange's rate on the bar opening at the funding time
        assert np.array_equal(hist.funding[traded, a], rate.to_numpy())
        assert (rate != 0).sum() == 2
        ref = from_signals(live, e.iloc[WARMUP:], x.iloc[WARMUP:], funding_rate=rate, **opts)
        _same_run(book, ref, a)
        assert float(ref.stats()["funding_paid"].iloc[0]) != 0.0


def test_cli_live_perp_charges_the_exchange_funding_on_its_bars(tmp_path):
    times = pd.date_range("2024-01-01 08:00", periods=200, freq="5min", tz="UTC")
    # (rates with 8 decimals, as the exchange sends them)
    rates = pd.Series([float(f"{(i % 3 - 1) * 1e-3 + 2e-4:.8f}") for i in range(200)], index=times)
    with FakeExchange(("BTC/USDT",), "1m", history=WARMUP, n_bars=1000, start=START,
                      funding={"BTC/USDT": rates}) as fake:  # fmt: skip
        fake.pace(40.0)
        result = runner.invoke(app, [
            "live", "--symbols", "BTC/USDT:USDT", "--strategy", "sma_cross", "--param", "fast=3",
            "--param", "slow=8", "--perp", "--leverage", "3", "--direction", "both",
            "--fees", "0.0005", "--exchange-url", fake.url, "--state", str(tmp_path),
            "--duration", "2", "--json",
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    hist = JournalReader.open(tmp_path / "journal.sqlite").history()
    traded = hist.flags[:, 0] >= 0
    bars = pd.DatetimeIndex(hist.times[traded], tz="UTC")
    expected = rates.reindex(bars, fill_value=0.0).to_numpy()
    assert (expected != 0).sum() >= 2  # the run crossed funding times
    assert np.array_equal(hist.funding[traded, 0], expected)
    assert json.loads(result.stdout)["stats"][0]["funding_paid"] != 0


def _step_times(fake: FakeExchange, first: pd.Timestamp, n: int) -> np.ndarray:
    index = pd.date_range(first, periods=n, freq=f"{fake.tf_ms}ms", tz="UTC")
    return index.as_unit("ns").asi8


def test_exchange_funding_waits_for_a_rate_listed_late_then_charges_it():
    funding = _exchange_funding()
    with FakeExchange(("BTC/USDT", "ETH/USDT"), "1m", history=WARMUP, n_bars=WARMUP + 20,
                      start=START, funding=funding) as fake:  # fmt: skip
        fake.delay_funding(2)  # a settlement is listed two bars after it

        async def scenario() -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
            source = ExchangeFunding("binance", PERPS, exchange_url=fake.url, poll_s=0.02)
            await source.start()
            try:
                # the next funding time is the exchange's; the first step asks for what was
                # listed since its first bar, a later step before the funding for nothing
                at_0820 = int(_funding_times()[1].value // 1_000_000)
                assert source.due() == {PERPS[0]: [at_0820], PERPS[1]: [at_0820]}
                first = fake.bars(PERPS[0]).index[-1] + pd.Timedelta(minutes=1)
                assert not (await source.rates(_step_times(fake, first, 3))).any()
                fetched = source.stats()["fetches"]
                later = first + pd.Timedelta(minutes=3)
                assert not (await source.rates(_step_times(fake, later, 3))).any()
                assert source.stats()["fetches"] == fetched == 2
                await fake.advance_async(10)  # to 08:20: bar 08:20 is forming
                await fake.advance_async(1)  # 08:20 closed; its rate is listed at 08:22
                times = _step_times(fake, pd.Timestamp("2024-01-01 08:16", tz="UTC"), 5)
                waiting = asyncio.create_task(source.rates(times))
                await wait_until("a wait for the late rate", lambda: source.stats()["waits"] > 0)
                assert not waiting.done()
                await fake.advance_async(1)  # now listed
                got = await asyncio.wait_for(waiting, 10)
                return times, got, source.stats()
            finally:
                await source.close()

        times, got, stats = run(scenario())
    at = int(np.flatnonzero(times == _funding_times()[1].value)[0])
    expected = np.zeros_like(got)
    expected[at] = [0.0021, -0.0031]
    assert np.array_equal(got, expected)
    assert stats["rates"] == 2 and stats["waits"] >= 1 and stats["missed"] == 0


def test_exchange_funding_not_listed_in_time_fails_naming_symbol_and_time():
    btc = {"BTC/USDT": _exchange_funding()["BTC/USDT"]}
    with FakeExchange(("BTC/USDT",), "1m", history=WARMUP, n_bars=WARMUP + 20, start=START,
                      funding=btc) as fake:  # fmt: skip
        fake.delay_funding(10)

        async def scenario() -> None:
            source = ExchangeFunding("binance", PERPS[:1], exchange_url=fake.url, wait_s=0.1,
                                     poll_s=0.02)  # fmt: skip
            await source.start()
            try:
                await fake.advance_async(11)
                await source.rates(_step_times(fake, pd.Timestamp("2024-01-01 08:20", tz="UTC"), 1))
            finally:
                await source.close()

        with pytest.raises(ExchangeError, match=r"BTC/USDT:USDT: the funding rate settled at "
                           r"2024-01-01 08:20:00\+00:00 is not listed after 0.1 s"):  # fmt: skip
            run(scenario())


def test_exchange_funding_of_a_spot_symbol_names_the_perpetual():
    with FakeExchange(("BTC/USDT",), "1m", history=WARMUP, n_bars=WARMUP + 5) as fake:
        source = ExchangeFunding("binance", ["BTC/USDT"], exchange_url=fake.url)
        with pytest.raises(ConfigError, match=r"spot market and pays no funding.*'BTC/USDT:USDT'"):
            run(source.start())
