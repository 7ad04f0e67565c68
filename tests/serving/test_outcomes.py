"""The outcome store: predictions joined with realised outcomes, idempotent keys, bounded rows."""

from __future__ import annotations

import math
import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from celeris.errors import CelerisTypeError, DataError
from celeris.serving.outcomes import (
    OutcomeConflict,
    OutcomeStore,
    Prediction,
    PredictionWriter,
    ServedOutcomes,
    UnknownPrediction,
)

T0 = pd.Timestamp("2026-12-01 00:00", tz="UTC")


@pytest.fixture
def store(tmp_path):
    with OutcomeStore(tmp_path / "outcomes.sqlite") as s:
        yield s


def _predict(store, key, *, version=1, ts=T0, forecast=(101.0, 102.0), signal=1, **kw):
    store.record_prediction(
        key,
        model="btc",
        version=version,
        symbol=kw.pop("symbol", "BTC-USD"),
        ts=ts,
        horizon=len(forecast),
        forecast=forecast,
        signal=signal,
        **kw,
    )


def test_outcome_store_joined_level_target_equals_hand_computation(store):
    window = np.array([[99.0, 1.0], [100.0, 2.0]])  # the target is feature 0; last = 100
    _predict(store, "a", forecast=(101.0, 102.0), signal=1, inputs=window)
    _predict(store, "b", forecast=(99.0, 98.0), signal=-1, last=100.0, ts=T0 + pd.Timedelta("1min"))
    _predict(store, "c", forecast=(100.0, 100.0), signal=None, last=100.0)
    assert store.record_outcome("a", [100.0, 104.0]) is True
    store.record_outcome("b", [101.0, 103.0])
    store.record_outcome("c", [100.0, 100.0])
    j = store.joined("btc").set_index("key")
    # a: errors (-1, 2): mae 1.5, rmse sqrt(2.5); return 104/100 - 1 = 0.04, long
    assert j.loc["a", "mae"] == 1.5 and j.loc["a", "rmse"] == pytest.approx(math.sqrt(2.5))
    assert j.loc["a", "realised_return"] == pytest.approx(0.04)
    assert j.loc["a", "pnl"] == pytest.approx(0.04)
    # b: short into a 3% rise loses 3%
    assert j.loc["b", "mae"] == 3.5 and j.loc["b", "pnl"] == pytest.approx(-0.03)
    assert math.isnan(j.loc["c", "pnl"]) and j.loc["c", "mae"] == 0.0  # no signal, no P&L
    assert j.loc["b", "ts"] == T0 + pd.Timedelta("1min")
    assert list(j.index) == ["a", "b", "c"]
    assert store.joined("btc", since=T0 + pd.Timedelta("30s")).key.tolist() == ["b"]


def test_outcome_store_joined_return_target_sums_the_horizon(store):
    _predict(store, "r", forecast=(0.01, 0.0, 0.02), signal=-1, target_kind="return")
    _predict(store, "pending", forecast=(0.0, 0.0, 0.0), target_kind="return")
    store.record_outcome("r", [0.02, -0.01, 0.03])
    j = store.joined("btc")
    assert j.key.tolist() == ["r"]  # only predictions with an outcome
    assert j.realised_return.iloc[0] == pytest.approx(0.04)
    assert j.pnl.iloc[0] == pytest.approx(-0.04)
    assert j.mae.iloc[0] == pytest.approx(0.01)


def test_outcome_store_same_outcome_is_idempotent_different_one_is_refused(store):
    _predict(store, "k1")
    assert store.record_outcome("k1", [1.0, 2.0]) is True
    assert store.record_outcome("k1", [1.0, 2.0]) is False
    with pytest.raises(OutcomeConflict, match="'k1'"):
        store.record_outcome("k1", [1.0, 2.5])
    with pytest.raises(UnknownPrediction, match="'nope'"):
        store.record_outcome("nope", [1.0, 2.0])
    with pytest.raises(DataError, match=r"'k1' has 3 values.*horizon is 2"):
        store.record_outcome("k1", [1.0, 2.0, 3.0])
    # a batch is all or nothing
    _predict(store, "k2")
    with pytest.raises(UnknownPrediction):
        store.record_outcomes({"k2": [1.0, 1.0], "missing": [1.0, 1.0]})
    assert store.stats()["outcomes"] == 1


def test_outcome_store_repeated_prediction_is_a_noop_a_different_one_conflicts(store):
    _predict(store, "p", forecast=(1.0, 2.0))
    _predict(store, "p", forecast=(1.0, 2.0))
    assert store.stats()["predictions"] == 1
    with pytest.raises(OutcomeConflict, match="'p'"):
        _predict(store, "p", forecast=(1.0, 3.0))


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"forecast": (1.0, math.nan)}, DataError, r"forecast\[1\] is nan"),
        ({"signal": 2}, DataError, "signal must be -1, 0 or 1"),
        ({"ts": 1_700_000_000_000}, DataError, "milliseconds"),
        ({"ts": pd.Timestamp("2026-01-01")}, DataError, "timezone-aware"),
        ({"target_kind": "price"}, DataError, "target_kind"),
        ({"version": "1"}, CelerisTypeError, "version"),
    ],
)
def test_outcome_store_bad_prediction_raises_naming_the_key(store, kw, error, match):
    with pytest.raises(error, match=match) as info:
        _predict(store, "bad-key", **kw)
    assert "bad-key" in str(info.value)


def test_outcome_store_prunes_oldest_beyond_max_rows_and_counts_across_reopen(tmp_path):
    path = tmp_path / "o.sqlite"
    with OutcomeStore(path, max_rows=3) as store:
        for i in range(5):
            _predict(store, f"k{i}")
        assert store.stats() == {"predictions": 3, "outcomes": 0, "pruned": 2, "max_rows": 3}
        with pytest.raises(UnknownPrediction, match="pruned"):
            store.record_outcome("k0", [1.0, 1.0])
        store.record_outcome("k4", [1.0, 1.0])
    with OutcomeStore(path, max_rows=3) as again:
        _predict(again, "k5")
        assert again.stats()["pruned"] == 3
        assert again.joined("btc").key.tolist() == ["k4"]
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_outcome_store_concurrent_writers_lose_nothing(store):
    def write(t: int) -> None:
        for i in range(50):
            _predict(store, f"t{t}-{i}")
            store.record_outcome(f"t{t}-{i}", [float(t), float(i)])

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert store.stats()["outcomes"] == 200 and len(store.joined("btc")) == 200


def test_outcome_store_recent_inputs_replays_windows_of_one_shape(store):
    windows = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2) + 1
    for i, w in enumerate(windows):
        _predict(store, f"w{i}", inputs=w)
    _predict(store, "other", inputs=np.ones((5, 2)), version=2)
    _predict(store, "none")
    got = store.recent_inputs("btc", version=1, limit=2)
    assert np.array_equal(got, windows[1:])
    assert store.recent_inputs("btc").shape == (1, 5, 2)  # the newest window's shape
    assert store.recent_inputs("btc", shape=(4, 2)).shape == (3, 4, 2)
    assert store.recent_inputs("eth").shape[0] == 0


def test_prediction_writer_writes_in_background_and_counts_conflicts(store):
    writer = PredictionWriter(store, batch=4)
    rows = [
        Prediction.make(f"q{i}", model="btc", version=1, symbol=None, ts=T0, horizon=1,
                        forecast=[float(i)])
        for i in range(10)
    ]  # fmt: skip
    clash = Prediction.make("q3", model="btc", version=1, symbol=None, ts=T0, horizon=1,
                            forecast=[99.0])  # fmt: skip
    writer.submit(rows)
    assert writer.flush()
    writer.submit([clash])
    writer.close()
    assert writer.stats() == {
        "submitted": 11, "written": 10, "dropped": 0, "failed": 1, "pending": 0,
    }  # fmt: skip
    assert store.stats()["predictions"] == 10


def test_served_outcomes_records_requests_and_joins_posted_outcomes(store):
    served = ServedOutcomes(store)
    x = np.full((2, 3, 2), 100.0, dtype=np.float32)  # level target: last = 100
    served.record_request(
        "req-1",
        model="btc",
        version="2",
        names=["BTC/USDT", "ETH/USDT"],
        inputs=x,
        forecasts=np.array([[101.0], [99.0]], dtype=np.float32),
        signals=np.array([1, -1], dtype=np.int8),
        usable=np.array([True, False]),
    )
    out = served.post({"request_id": "req-1", "actual": {"BTC/USDT": [102.0], "ETH/USDT": [98.0]}})
    assert out == {"recorded": 2, "repeated": 0, "keys": ["req-1/BTC/USDT", "req-1/ETH/USDT"]}
    assert served.post({"outcomes": {"req-1/BTC/USDT": [102.0]}})["repeated"] == 1
    j = store.joined("btc", version=2).set_index("symbol")
    assert j.loc["BTC/USDT", "pnl"] == pytest.approx(0.02)
    assert pd.isna(j.loc["ETH/USDT", "signal"])  # unusable row: no signal, no P&L
    assert np.array_equal(store.recent_inputs("btc")[0], x[1])
    served.record_request(
        "req-2", model="btc", version=2, names=None, inputs=x[:1],
        forecasts=np.array([[1.0]]), target_kind="return",
    )  # fmt: skip
    assert served.post({"request_id": "req-2", "actual": [[1.5]]})["keys"] == ["req-2/0"]
    with pytest.raises(DataError, match="request_id"):
        served.request_id("a/b")
    ids = {served.request_id(None) for _ in range(3)}
    assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    with pytest.raises(DataError, match='"outcomes"'):
        served.post({"actual": [1.0]})
    served.writer.close()


def test_served_outcomes_non_finite_forecast_fails_the_request_counted(store):
    served = ServedOutcomes(store)
    served.record_request(
        "bad", model="btc", version=1, names=None, inputs=np.ones((2, 3, 1)),
        forecasts=np.array([[1.0], [np.nan]]),
    )  # fmt: skip
    assert served.writer.flush()
    assert served.writer.stats()["failed"] == 2 and store.stats()["predictions"] == 0
    served.writer.close()


def test_prediction_writer_full_queue_drops_and_counts_never_blocks():
    release = threading.Event()

    class Blocked:
        def record_predictions(self, rows):
            release.wait(10)

    writer = PredictionWriter(Blocked(), max_pending=2, batch=1)  # type: ignore[arg-type]
    row = Prediction.make("k", model="m", version=1, symbol=None, ts=T0, horizon=1, forecast=[1.0])
    writer.submit([row] * 6)  # one taken by the blocked thread, two queued, the rest dropped
    assert writer.stats()["dropped"] >= 3
    release.set()
    writer.close()
    s = writer.stats()
    assert s["written"] + s["dropped"] == 6 and s["pending"] == 0
