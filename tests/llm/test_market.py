"""Market summaries for prompts: numbers pinned against pandas/TA-Lib and hand computations."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from celeris.backtest import STRATEGIES, from_signals
from celeris.data import load
from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.llm import market as m


@pytest.fixture(scope="module")
def sp500() -> pd.DataFrame:
    return load("sample:sp500")


@pytest.fixture(scope="module")
def nasdaq() -> pd.DataFrame:
    return load("sample:nasdaq")


def pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def mag(x: float) -> str:
    return f"{x * 100:.2f}%"


def hourly(n: int = 400, *, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")  # pandas 3: unit "us"
    return pd.DataFrame(
        {
            "open": close,
            "high": close * 1.01,
            "low": close * 0.99,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        },
        index=index.rename("time"),
    )


# ---- bars_per_year --------------------------------------------------------------------------
def test_bars_per_year_daily_equities_252(sp500):
    assert m.bars_per_year(sp500.index) == 252.0


def test_bars_per_year_hourly_microsecond_index_8760():
    # A pandas-3 "us" index: the spacing must be read in the index's own unit.
    assert m.bars_per_year(hourly().index) == 8760.0


def test_bars_per_year_eight_hour_bars_1095():
    index = pd.date_range("2024-01-01", periods=30, freq="8h", tz="UTC")
    assert m.bars_per_year(index) == 1095.0


def test_bars_per_year_single_timestamp_raises():
    with pytest.raises(DataError, match="at least 2 timestamps"):
        m.bars_per_year(pd.DatetimeIndex([pd.Timestamp("2024-01-01", tz="UTC")]))


# ---- price action ---------------------------------------------------------------------------
def test_price_action_summary_sp500_numbers_match_pandas(sp500):
    text = m.price_action_summary(sp500)
    close = sp500["close"]
    for h in (1, 5, 20, 60, 250):
        assert (
            f"{h} bar{'s' if h > 1 else ''} {pct(close.iloc[-1] / close.iloc[-1 - h] - 1)}" in text
        )
    for w in (20, 50, 200):
        sma = close.rolling(w).mean()
        assert f"SMA{w} {sma.iloc[-1]:,.2f} ({pct(close.iloc[-1] / sma.iloc[-1] - 1)})" in text
        assert f"SMA{w} {pct(sma.iloc[-1] / sma.iloc[-21] - 1)}" in text
    drawdown = close / close.cummax() - 1
    assert f"Max drawdown of the close: {pct(drawdown.min())}" in text
    # golden values of the real series
    assert "-56.78% (2007-10-09 to 2009-03-09)" in text
    assert "now -14.46% from the peak of 2018-09-20" in text
    assert "Period: 1999-01-04 to 2018-12-31, 5,031 bars of 1 day (252 bars per year)." in text
    assert "ADX(14) 34.90 (+DI 18.36, -DI 32.04)" in text


def test_price_action_summary_window_table_matches_pandas(sp500):
    text = m.price_action_summary(sp500, detail=0)
    close = sp500["close"]
    rets = close.pct_change()
    last = (
        f"2018-11-30 to 2018-12-31 | {pct(close.iloc[-1] / close.iloc[-21] - 1)} | "
        f"{mag(rets.iloc[-20:].std(ddof=1) * math.sqrt(252))} | "
        f"{mag((sp500['high'].iloc[-20:].max() - sp500['low'].iloc[-20:].min()) / close.iloc[-21])}"
    )
    assert text.splitlines()[-1] == last
    assert last == "2018-11-30 to 2018-12-31 | -8.44% | 29.36% | 16.57%"


@pytest.mark.parametrize(("detail", "rows"), [(0, 12), (1, 6), (2, 3), (3, 0), (9, 0)])
def test_price_action_summary_detail_levels_shrink_window_table(sp500, detail, rows):
    text = m.price_action_summary(sp500, detail=detail)
    table = [line for line in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d to \d{4}", line)]
    assert len(table) == rows


def test_price_action_summary_higher_detail_levels_shorter_until_max(sp500):
    lengths = [len(m.price_action_summary(sp500, detail=d)) for d in range(m.MAX_DETAIL + 2)]
    assert lengths[0] > lengths[1] > lengths[2] > lengths[3], lengths
    assert lengths[m.MAX_DETAIL] == lengths[m.MAX_DETAIL + 1]


def test_wilder_adx_matches_talib(sp500):
    import talib

    h, lo, c = (sp500[k].to_numpy() for k in ("high", "low", "close"))
    for n in (28, 29, 300, len(c)):
        got = m.wilder_adx(h[:n], lo[:n], c[:n], 14)
        want = (
            talib.ADX(h[:n], lo[:n], c[:n], 14)[-1],
            talib.PLUS_DI(h[:n], lo[:n], c[:n], 14)[-1],
            talib.MINUS_DI(h[:n], lo[:n], c[:n], 14)[-1],
        )
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_wilder_adx_too_short_is_nan(sp500):
    h, lo, c = (sp500[k].to_numpy()[:27] for k in ("high", "low", "close"))
    assert all(math.isnan(v) for v in m.wilder_adx(h, lo, c, 14))


def test_price_action_summary_two_bars_gives_one_return_and_no_trend():
    bars = hourly(2)
    text = m.price_action_summary(bars)
    assert f"Returns: 1 bar {pct(bars['close'].iloc[1] / bars['close'].iloc[0] - 1)}." in text
    assert "ADX" not in text and "SMA" not in text


# ---- volatility -----------------------------------------------------------------------------
def test_volatility_summary_sp500_numbers_match_pandas(sp500):
    text = m.volatility_summary(sp500)
    rets = sp500["close"].pct_change().dropna()
    root = math.sqrt(252)
    for h in (20, 60, 250):
        assert f"last {h} bars {mag(rets.iloc[-h:].std(ddof=1) * root)}" in text
    assert f"whole history {mag(rets.std(ddof=1) * root)}" in text
    rolling = (rets.rolling(20).std(ddof=1) * root).dropna()
    rank = (rolling <= rolling.iloc[-1]).mean()
    assert f"at percentile {rank * 100:.0f} of its {len(rolling):,} readings" in text
    assert "at percentile 92 of its 5,011 readings" in text
    assert "high volatility regime" in text
    hl = np.log(sp500["high"].iloc[-20:] / sp500["low"].iloc[-20:])
    parkinson = math.sqrt((hl**2).mean() / (4 * math.log(2))) * root
    assert f"Parkinson high-low volatility, last 20 bars: {mag(parkinson)}" in text


def test_volatility_summary_atr_matches_talib(sp500):
    import talib

    atr = talib.ATR(sp500["high"], sp500["low"], sp500["close"], 14).iloc[-1]
    text = m.volatility_summary(sp500, detail=3)
    assert f"ATR(14): {atr:,.2f} = {mag(atr / sp500['close'].iloc[-1])} of the last close" in text


def test_volatility_summary_crypto_hours_annualise_with_365_days():
    bars = hourly(300)
    text = m.volatility_summary(bars, detail=3)
    rets = bars["close"].pct_change().dropna()
    assert "8,760 bars per year (365 days per year)" in text
    assert f"last 20 bars {mag(rets.iloc[-20:].std(ddof=1) * math.sqrt(8760))}" in text


def test_volatility_summary_two_bars_raises():
    with pytest.raises(DataError, match="volatility_summary needs at least 3 bars, got 2"):
        m.volatility_summary(hourly(2))


# ---- volume profile -------------------------------------------------------------------------
def profile_bars() -> pd.DataFrame:
    # Price range 100..124 -> 24 bins of width 1. Bar 0 spans the range with typical price 112
    # (bin 12); the others sit on one price each: volume by bin {10: 15, 11: 20, 12: 10,
    # 13: 30, 14: 5}, total 80.
    rows = [
        (124.0, 100.0, 112.0, 10.0),
        (113.5, 113.5, 113.5, 30.0),
        (111.5, 111.5, 111.5, 20.0),
        (114.5, 114.5, 114.5, 5.0),
        (110.5, 110.5, 110.5, 15.0),
    ]
    frame = pd.DataFrame(rows, columns=["high", "low", "close", "volume"])
    frame.insert(0, "open", frame["close"])
    frame.index = pd.date_range("2024-01-01", periods=len(rows), freq="1D", tz="UTC", name="time")
    return frame


def test_volume_profile_summary_hand_example_poc_and_value_area():
    text = m.volume_profile_summary(profile_bars())
    # POC bin 13 (30/80 = 37.50%); value area: 13, then 12 (10 > 5), then 11 (20 > 5) -> 60/80.
    assert "24 bins of 1.000: point of control 113.000-114.000 (37.50% of volume)" in text
    assert "value area (70% of volume) 111.000-114.000" in text
    assert "the last close 110.500 is below the value area" in text
    assert "113.000-114.000 | 37.50% (POC)" in text
    # closes 112 -> 113.5 (up, 30) -> 111.5 (down, 20) -> 114.5 (up, 5) -> 110.5 (down, 15)
    assert "up-volume 50.00%, down-volume 50.00% (2 up bars, 2 down bars)" in text


def test_volume_profile_summary_sp500_poc_matches_numpy_histogram(sp500):
    last = sp500.iloc[-250:]
    typical = (last["high"] + last["low"] + last["close"]) / 3
    hist, edges = np.histogram(
        typical,
        bins=24,
        range=(last["low"].min(), last["high"].max()),
        weights=last["volume"],
    )
    poc = int(np.argmax(hist))
    text = m.volume_profile_summary(sp500, detail=2)
    assert (
        f"point of control {edges[poc]:,.2f}-{edges[poc + 1]:,.2f} ({mag(hist[poc] / hist.sum())} of volume)"
        in text
    )
    ratio = sp500["volume"].iloc[-20:].mean() / sp500["volume"].iloc[-250:].mean()
    assert f"ratio 20-bar / 250-bar mean {ratio:.2f}" in text


@pytest.mark.parametrize(("detail", "bins"), [(0, 24), (1, 3), (2, 0)])
def test_volume_profile_summary_detail_levels_list_fewer_bins(detail, bins):
    text = m.volume_profile_summary(profile_bars(), detail=detail)
    assert len(re.findall(r"^\d+\.\d+-\d+\.\d+ \| ", text, flags=re.M)) == bins


def test_volume_profile_summary_no_volume_column_says_so():
    bars = profile_bars().drop(columns="volume")
    assert m.volume_profile_summary(bars) == (
        "No volume column in the data: volume analysis is unavailable."
    )


def test_volume_profile_summary_all_zero_volume_says_so():
    bars = profile_bars().assign(volume=0.0)
    assert m.volume_profile_summary(bars) == (
        "Volume is zero on all 5 bars: volume analysis is unavailable."
    )


def test_volume_profile_summary_negative_volume_raises_naming_timestamp():
    bars = profile_bars()
    bars.iloc[2, bars.columns.get_loc("volume")] = -1.0
    with pytest.raises(
        DataError, match=r"'volume >= 0' broken: column 'volume' is -1.0 at 2024-01-03"
    ):
        m.volume_profile_summary(bars)


# ---- bad bar inputs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "func", [m.price_action_summary, m.volatility_summary, m.volume_profile_summary]
)
def test_summaries_nan_close_raise_naming_column_and_timestamp(sp500, func):
    bars = sp500.copy()
    bars.iloc[100, bars.columns.get_loc("close")] = np.nan
    with pytest.raises(
        DataError, match=r"'bars have no NaN' broken: column 'close' is NaN at 1999-05-27"
    ):
        func(bars)


@pytest.mark.parametrize(
    "func", [m.price_action_summary, m.volatility_summary, m.volume_profile_summary]
)
def test_summaries_empty_frame_raise(sp500, func):
    with pytest.raises(DataError, match="empty"):
        func(sp500.iloc[:0])


def test_price_action_summary_unsorted_index_raises(sp500):
    bars = sp500.iloc[[0, 2, 1, 3]]
    with pytest.raises(DataError, match="not sorted by time"):
        m.price_action_summary(bars)


def test_price_action_summary_missing_high_raises(sp500):
    with pytest.raises(DataError, match=r"price_action_summary: .* missing column\(s\) 'high'"):
        m.price_action_summary(sp500.drop(columns="high"))


def test_summaries_high_below_low_raise_the_bar_schema_rule(sp500):
    bars = sp500.copy()
    bars.iloc[100, bars.columns.get_loc("high")] = bars["low"].iloc[100] * 0.9
    with pytest.raises(DataError, match=r"volatility_summary: bar rule 'high >= low' broken"):
        m.volatility_summary(bars)


def test_summaries_tz_naive_or_local_bars_summarised_as_given(sp500):
    # The summaries only read bars: a tz-naive or local index is accepted as before the bar
    # schema became their validator (validate(utc=False)); the dates are printed as given.
    utc = m.price_action_summary(sp500)
    naive = m.price_action_summary(sp500.tz_localize(None))
    assert naive.replace(" UTC", "") == utc.replace(" UTC", "")
    figures = re.compile(r"-?\d+\.\d+")  # the numbers, not the dates
    naive_vol = m.volatility_summary(sp500.tz_localize(None))
    assert figures.findall(naive_vol) == figures.findall(m.volatility_summary(sp500))
    assert "2018" in m.price_action_summary(sp500.tz_convert("America/New_York"))  # accepted


def test_summaries_without_volume_validate_high_low_close_only(sp500):
    bars = sp500.drop(columns="volume").assign(open=np.nan)
    assert m.price_action_summary(bars) == m.price_action_summary(sp500)


def test_price_action_summary_series_input_raises_type_error(sp500):
    with pytest.raises(CelerisTypeError, match="needs a bar frame"):
        m.price_action_summary(sp500["close"])


def test_price_action_summary_negative_detail_raises(sp500):
    with pytest.raises(ConfigError, match="detail must be >= 0"):
        m.price_action_summary(sp500, detail=-1)


def test_price_action_summary_float_detail_raises_type_error_with_the_range(sp500):
    with pytest.raises(CelerisTypeError, match=r"detail must be an int >= 0, got float 1\.0"):
        m.price_action_summary(sp500, detail=1.0)


# ---- funding --------------------------------------------------------------------------------
def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


FUNDING = """timestamp,rate
2024-01-01T00:00:00Z,0.0001
2024-01-01T08:00:00Z,0.00008
2024-01-01T16:00:00Z,-0.00002
2024-01-02T00:00:00Z,0.00004
"""


def test_funding_summary_hand_example():
    series = pd.Series(
        [1e-4, 8e-5, -2e-5, 4e-5],
        index=pd.date_range("2024-01-01", periods=4, freq="8h", tz="UTC"),
    )
    text = m.funding_summary(series)
    # Last 24h = the last 3 readings (00:00 is exactly 24h before and excluded): mean 3.3333e-5.
    assert "last +0.0040% (funding interval 8 hours)" in text
    assert f"24h mean +0.0033% (annualised {pct((8e-5 - 2e-5 + 4e-5) / 3 * 1095)})" in text
    assert f"7d mean +0.0050% (annualised {pct(5e-5 * 1095)})" in text
    assert "75.00% of readings positive, sum +0.02%, sign changes 2" in text
    z = (4e-5 - 5e-5) / np.std([1e-4, 8e-5, -2e-5, 4e-5], ddof=1)
    assert f"z-score of the last rate {z:.2f}" in text
    assert "highest +0.0100% (2024-01-01 00:00), lowest -0.0020% (2024-01-01 16:00)" in text
    assert "Daily sums, last 2 days: 2024-01-01 +0.0160%, 2024-01-02 +0.0040%." in text


def test_funding_summary_nan_rate_raises_naming_timestamp():
    series = pd.Series(
        [1e-4, np.nan], index=pd.date_range("2024-01-01", periods=2, freq="8h", tz="UTC")
    )
    with pytest.raises(DataError, match="NaN at 2024-01-01 08:00"):
        m.funding_summary(series)


# ---- order book -----------------------------------------------------------------------------
BOOK = {
    "symbol": "BTC/USDT",
    "timestamp": "2024-01-01T00:00:00Z",
    "bids": [[100.0, 2.0], ["99.95", "1"], [99.0, 10.0]],
    "asks": [[100.1, 1.0], [100.5, 4.0], [101.5, 3.0]],
}


def test_orderbook_summary_hand_example(tmp_path):
    book = m.load_orderbook(write(tmp_path, "book.json", json.dumps(BOOK)))
    text = m.orderbook_summary(book)
    spread_bp = (100.1 - 100.0) / 100.05 * 1e4
    assert (
        "best bid 100.000 (size 2), best ask 100.100 (size 1); mid 100.050, "
        f"spread 0.100 = {spread_bp:.2f} bp" in text
    )
    # 0.1% band: bids >= 99.94995 (100, 99.95), asks <= 100.15005 (100.1)
    bid_not, ask_not = 100.0 * 2 + 99.95 * 1, 100.1 * 1
    assert (
        f"Within 0.1% of mid: bids 3 ({bid_not:,.2f} notional, 2 levels), asks 1 (100.10 notional, "
        f"1 level); imbalance {pct((bid_not - ask_not) / (bid_not + ask_not))}." in text
    )
    # 1% band: bids >= 99.04995 (99 is out), asks <= 101.0505 (100.1 and 100.5)
    assert "Within 1% of mid: bids 3 (299.95 notional, 2 levels), asks 5 (502.10 notional" in text
    assert f"Largest bids: 10 at 99.000 ({(99 / 100.05 - 1) * 1e4:+.1f} bp from mid)" in text
    assert "Best 5 bids (price x size): 100.000 x 2, 99.950 x 1, 99.000 x 10." in text
    assert "Order book BTC/USDT at 2024-01-01 00:00:00 UTC" in text


def test_orderbook_summary_accepts_mapping_and_detail_three_is_short():
    text = m.orderbook_summary(BOOK, detail=3)
    assert len(text.splitlines()) == 2
    assert text.splitlines()[1].startswith("Within 1% of mid")


# ---- risk -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sma_portfolio(sp500):
    entries, exits = STRATEGIES["sma_cross"].signals(sp500, {"fast": 10, "slow": 50})
    return from_signals(sp500, entries, exits, year_days=252, execution="close")


def test_risk_summary_var_cvar_drawdown_match_numpy(sp500, sma_portfolio):
    text = m.risk_summary(sma_portfolio, sp500)
    r = sma_portfolio.returns.iloc[:, 0].to_numpy()
    for level in (0.95, 0.99):
        q = np.quantile(r, 1 - level)
        var, cvar = -q, -r[r <= q].mean()
        assert f"{level:.0%} {mag(var)} / {mag(cvar)}" in text
    assert "strategy: 95% 1.08% / 1.80%, 99% 2.21% / 3.01%" in text
    dd = sma_portfolio.drawdown.iloc[:, 0]
    assert f"max {pct(dd.min())}" in text
    assert f"now {pct(dd.iloc[-1])}" in text
    assert f"strategy {mag(r.std(ddof=1) * math.sqrt(252))}, asset" in text
    assert "Current position: flat (all cash); equity 130,865.84." in text


def test_risk_summary_correlations_match_pandas(sp500, nasdaq, sma_portfolio):
    text = m.risk_summary(sma_portfolio, sp500, {"nasdaq": nasdaq["close"]})
    strat = sma_portfolio.returns.iloc[:, 0]
    asset = sp500["close"].pct_change()
    other = nasdaq["close"].pct_change()
    both = pd.concat([strat, asset], axis=1).iloc[1:]
    beta = both.cov().iloc[0, 1] / both.iloc[:, 1].var()
    assert (
        f"correlation {strat.iloc[1:].corr(asset.iloc[1:]):.2f} over 5,030 bars, beta {beta:.2f}"
        in text
    )
    assert (
        f"Correlation with nasdaq: strategy {strat.iloc[1:].corr(other.iloc[1:]):.2f}, "
        f"asset {asset.corr(other):.2f} over 5,030 common bars" in text
    )


def test_risk_summary_open_long_position_reported(sp500):
    entries = pd.Series(False, index=sp500.index)
    entries.iloc[-30] = True
    pf = from_signals(
        sp500, entries, pd.Series(False, index=sp500.index), year_days=252, execution="close"
    )
    text = m.risk_summary(pf, sp500, detail=3)
    trade = pf.trades.iloc[-1]
    value = trade["size"] * sp500["close"].iloc[-1]
    equity = pf.equity.iloc[-1, 0]
    assert (
        f"Current position: long {trade['size']:,.2f} units since {sp500.index[-30]:%Y-%m-%d}"
        in text
    )
    assert f"= {mag(value / equity)} of equity" in text


def test_risk_summary_returns_series_equals_portfolio_numbers(sp500, sma_portfolio):
    returns = sma_portfolio.returns.iloc[:, 0]
    from_series = m.risk_summary(returns, sp500).splitlines()
    from_pf = m.risk_summary(sma_portfolio, sp500).splitlines()
    assert from_series[0].startswith("Strategy returns supplied directly")
    # everything after the position lines is computed from the same returns
    assert from_series[1:] == from_pf[2:]


def test_risk_summary_other_asset_without_overlap_says_not_computed(sp500, sma_portfolio):
    other = pd.Series(
        np.linspace(1, 2, 30), index=pd.date_range("2030-01-01", periods=30, freq="D", tz="UTC")
    )
    text = m.risk_summary(sma_portfolio, sp500, {"far": other}, detail=3)
    assert "Correlation with far: strategy n/a, asset n/a over 0 common bars" in text
    assert "not computed" in text


def test_risk_summary_multi_column_portfolio_raises(sp500):
    result = STRATEGIES["sma_cross"].grid({"fast": [5, 10], "slow": [50]})
    entries, exits = STRATEGIES["sma_cross"].prepare(sp500, result)(slice(0, 2))
    pf = from_signals(sp500, entries, exits)
    with pytest.raises(ConfigError, match="one column, got 2"):
        m.risk_summary(pf, sp500)


def test_risk_summary_nan_return_raises_naming_timestamp(sp500):
    returns = sp500["close"].pct_change()
    with pytest.raises(DataError, match="NaN at 1999-01-04"):
        m.risk_summary(returns, sp500)


def test_risk_summary_returns_outside_bars_raise(sp500):
    returns = pd.Series(0.0, index=sp500.index + pd.Timedelta(hours=1))
    with pytest.raises(DataError, match="has no bar"):
        m.risk_summary(returns, sp500)


def test_risk_summary_other_asset_with_zero_price_raises(sp500, sma_portfolio):
    other = sp500["close"].copy()
    other.iloc[5] = 0.0
    with pytest.raises(DataError, match="other asset 'x' has a price <= 0 at 1999-01-11"):
        m.risk_summary(sma_portfolio, sp500, {"x": other})
