"""Risk controls of the live loop: caps, the daily loss limit, the kill switch and its endpoint."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from celeris.data import load
from celeris.errors import CelerisTypeError, ConfigError
from celeris.live.journal import Journal
from celeris.live.loop import LiveLoop
from celeris.live.metrics import LiveMetrics, admin_app
from celeris.live.replay import ReplaySource
from celeris.live.risk import ENTRY, EXIT, SHORT_ENTRY, SHORT_EXIT, RiskGuard, RiskLimits
from celeris.live.signals import RuleSignals


@pytest.fixture(scope="module")
def spx() -> pd.DataFrame:
    return load("sample:sp500").iloc[:600]


def _loop(tmp_path, limits=None, opts=None, name="j", metrics=None) -> LiveLoop:
    opts = {"fees": 0.001, **(opts or {})}
    journal = Journal(tmp_path / f"{name}.sqlite", ["SPX"], {"options": opts})
    loop = LiveLoop(["SPX"], RuleSignals("sma_cross", {"fast": 5, "slow": 20}), journal,
                    options=opts, limits=limits, metrics=metrics)  # fmt: skip
    loop.resume()
    return loop


def _run(loop, bars, block=1000):
    return asyncio.run(loop.run(ReplaySource({"SPX": bars}, block=block), until_exhausted=True))


def test_guard_kill_switch_drops_entries_and_flattens_held_positions():
    guard = RiskGuard(RiskLimits(), 3)
    bits = np.array([ENTRY, ENTRY, 0])
    assert (guard.gate(bits, np.zeros(3), np.ones(3)) == bits).all()
    guard.kill("test")
    out = guard.gate(bits, np.array([0.0, 2.0, -1.0]), np.ones(3))
    assert out.tolist() == [0, EXIT, EXIT]
    assert guard.blocked["kill_switch"] == 2
    guard.resume()
    assert guard.killed is None


def test_guard_long_short_flattens_each_side_with_its_own_exit():
    guard = RiskGuard(RiskLimits(), 2, long_short=True)
    guard.kill("test")
    out = guard.gate(np.array([SHORT_ENTRY, ENTRY]), np.array([3.0, -2.0]), np.ones(2))
    assert out.tolist() == [EXIT, SHORT_EXIT]


def test_guard_caps_count_the_order_an_entry_would_add_and_those_pending():
    guard = RiskGuard(RiskLimits(max_position=100.0, max_exposure=150.0), 3)
    prices = np.array([10.0, 10.0, 10.0])
    add = np.array([30.0, 30.0, 30.0])  # what each entry's order can buy
    # symbol 0 holds 80: 80 + 30 passes its cap, the entry goes; symbol 1 holds 20: it stays
    out = guard.gate(np.array([ENTRY, ENTRY, 0]), np.array([8.0, 2.0, 0.0]), prices, entry=add)
    assert out.tolist() == [0, ENTRY, 0]
    # 20 + 40 waiting for the next open + 30 fits; with 60 waiting it would not
    for waiting, kept in ((40.0, ENTRY), (60.0, 0)):
        out = guard.gate(np.array([0, ENTRY, 0]), np.array([0.0, 2.0, 0.0]), prices, entry=add,
                         pending=np.array([0.0, waiting, 0.0]))  # fmt: skip
        assert out[1] == kept
    # exposure: 100 held, room for one more order of 30 (symbol order), not two
    out = guard.gate(np.array([0, ENTRY, ENTRY]), np.array([6.0, 4.0, 0.0]), prices, entry=add)
    assert out.tolist() == [0, ENTRY, 0]
    # an entry whose order adds nothing (a position held, no accumulation) is let through
    out = guard.gate(np.array([ENTRY, 0, 0]), np.array([12.0, 0.0, 0.0]), prices,
                     entry=np.array([0.0, 30.0, 30.0]))  # fmt: skip
    assert out.tolist() == [ENTRY, 0, 0]
    assert guard.blocked == {"max_position": 2, "max_exposure": 1}


def test_guard_daily_loss_engages_once_the_days_value_fell_that_far():
    guard = RiskGuard(RiskLimits(max_daily_loss=0.05), 1)
    day = 86_400 * 10**9
    assert not guard.check_loss(day, 100.0)
    assert not guard.check_loss(day + 1, 96.0)
    assert guard.check_loss(day + 2, 94.9)  # 5.1% below the day's start
    assert "daily loss" in (guard.killed or "")
    assert not guard.check_loss(2 * day, 50.0)  # already engaged: no second event
    other = RiskGuard(RiskLimits(max_daily_loss=0.05), 1)
    assert not other.check_loss(day, 100.0)
    assert not other.check_loss(2 * day, 96.0)  # the new day starts at 100, the last value
    assert other.check_loss(2 * day + 1, 94.0)


def test_limits_are_validated_naming_the_limit():
    with pytest.raises(ConfigError, match="max_daily_loss"):
        RiskLimits(max_daily_loss=1.5)
    with pytest.raises(ConfigError, match="max_position"):
        RiskLimits(max_position=-1.0)
    with pytest.raises(CelerisTypeError, match="max_exposure"):
        RiskLimits(max_exposure="lots")  # type: ignore[arg-type]


def test_kill_switch_flattens_the_account_and_survives_a_restart(tmp_path, spx):
    loop = _loop(tmp_path, name="kill")
    _run(loop, spx.iloc[:300])
    held = loop.account.positions.iloc[0]
    loop.kill("operator")
    _run(loop, spx.iloc[:330])
    assert loop.account.positions.iloc[0] == 0.0
    if held:
        assert loop.journal.fills()["side"].iloc[-1] == "sell"
    loop.journal.close()
    again = _loop(tmp_path, name="kill")
    assert again.risk.killed == "operator"
    _run(again, spx)
    assert again.account.positions.iloc[0] == 0.0
    # no fill after the switch was engaged but the flattening one
    fills = again.journal.fills()
    assert (fills["time"] > spx.index[301]).sum() == 0
    again.release()
    assert again.journal.events()["kind"].tolist() == ["kill", "resume"]


def test_daily_loss_limit_stops_the_run_and_is_journaled(tmp_path, spx):
    loop = _loop(tmp_path, RiskLimits(max_daily_loss=0.01), name="loss")
    _run(loop, spx)
    assert loop.risk.killed is not None and "daily loss" in loop.risk.killed
    events = loop.journal.events()
    assert events["kind"].tolist()[0] == "kill"
    assert loop.account.positions.iloc[0] == 0.0


class _AlwaysEnter:
    """A signal source that asks to buy on every bar (to reach the caps)."""

    warmup = 0

    def __init__(self) -> None:
        self.describe = {"source": "always-enter"}

    def compute(self, times, ohlcv, k, tz="UTC"):
        from celeris.live.signals import SignalBatch

        n_sym = ohlcv.shape[2]
        return SignalBatch(np.full((k, n_sym), ENTRY), np.ones((k, n_sym)))


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (RiskLimits(max_position=5_000.0), "max_position"),
        (RiskLimits(max_exposure=5_000.0), "max_exposure"),
    ],
)
def test_caps_keep_an_accumulating_account_under_the_limit(tmp_path, spx, limits, reason):
    opts = {"size": 1.0, "accumulate": True}
    journal = Journal(tmp_path / "cap.sqlite", ["SPX"], {"options": opts})
    loop = LiveLoop(["SPX"], _AlwaysEnter(), journal, options=opts, limits=limits)
    bars = spx.iloc[:100]
    _run(loop, bars)
    fills = journal.fills()
    held = fills["size"].cumsum().to_numpy()
    assert held[-1] == len(fills) < 99
    # each fill was decided at the close of the bar before (next-open execution): there, the
    # position with that order and the one still waiting for the open was within the cap
    decided = bars.index.get_indexer(fills["time"]) - 1
    closes = bars["close"].to_numpy()
    assert (held * closes[decided] <= 5_000.0).all()
    # and the next bar's entry was dropped because one more unit would have passed it
    assert (held[-1] + 1) * closes[decided[-1] + 1] > 5_000.0
    assert loop.risk.blocked[reason] == 100 - len(fills)


def test_admin_endpoint_kills_and_resumes_with_the_token(tmp_path, spx, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.setenv("CELERIS_ADMIN_TOKEN", "s3cret")
    metrics = LiveMetrics(["SPX"], timeframe_ns=86_400 * 10**9)
    loop = _loop(tmp_path, name="admin", metrics=metrics)
    _run(loop, spx.iloc[:100])
    metrics.ready_reason = None

    async def scenario() -> None:
        app = admin_app(metrics, loop.kill, loop.release)
        async with TestClient(TestServer(app)) as client:
            assert (await client.get("/healthz")).status == 200
            assert (await client.get("/readyz")).status == 200
            assert (await client.post("/admin/kill")).status == 401
            auth = {"Authorization": "Bearer s3cret"}
            r = await client.post("/admin/kill", json={"reason": "drill"}, headers=auth)
            assert r.status == 200
            assert loop.risk.killed == "drill"
            ready = await client.get("/readyz")
            assert ready.status == 503 and "kill switch" in (await ready.json())["reason"]
            text = await (await client.get("/metrics")).text()
            assert "celeris_live_kill_switch 1.0" in text
            assert "celeris_live_bars_total 100.0" in text
            assert 'celeris_live_position{symbol="SPX"}' in text
            assert (await client.post("/admin/resume", headers=auth)).status == 200
            assert loop.risk.killed is None

    asyncio.run(scenario())


def test_admin_endpoint_without_a_configured_token_is_forbidden(tmp_path, monkeypatch):
    from aiohttp.test_utils import TestClient, TestServer

    monkeypatch.delenv("CELERIS_ADMIN_TOKEN", raising=False)
    metrics = LiveMetrics(["SPX"], timeframe_ns=60 * 10**9)
    loop = _loop(tmp_path, name="notoken")

    async def scenario() -> None:
        async with TestClient(TestServer(admin_app(metrics, loop.kill, loop.release))) as client:
            r = await client.post("/admin/kill", headers={"Authorization": "Bearer x"})
            assert r.status == 403
            assert "CELERIS_ADMIN_TOKEN" in (await r.json())["error"]
            assert loop.risk.killed is None

    asyncio.run(scenario())
