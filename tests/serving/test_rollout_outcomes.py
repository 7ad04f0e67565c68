"""A/B evaluation on realised outcomes, and shadow replays of recorded live inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris.errors import ConfigError
from celeris.serving.outcomes import OutcomeStore
from celeris.serving.rollout import evaluate_ab, evaluate_outcomes, replay_batch, shadow_validate

T0 = pd.Timestamp("2026-12-01", tz="UTC")


def _fill(store: OutcomeStore, version: int, n: int, noise: float, seed: int, start: int = 0):
    """n level predictions of btc@version whose forecasts miss by about ``noise``; the signal
    is right when the miss is small."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        actual = 100.0 + rng.standard_normal(2).cumsum()
        forecast = actual + rng.normal(0.0, noise, 2)
        key = f"v{version}-{start + i}"
        store.record_prediction(
            key,
            model="btc",
            version=version,
            symbol="BTC-USD",
            ts=T0 + pd.Timedelta(minutes=start + i),
            horizon=2,
            forecast=forecast,
            signal=1 if forecast[-1] > 100.0 else -1,
            last=100.0,
        )
        store.record_outcome(key, actual)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with OutcomeStore(tmp_path_factory.mktemp("ab") / "o.sqlite") as s:
        _fill(s, 1, 60, noise=2.0, seed=1)  # champion: larger misses
        _fill(s, 2, 50, noise=0.2, seed=2)  # challenger: small misses, mostly right signals
        yield s


def test_evaluate_outcomes_error_equals_welch_on_the_joined_maes(store):
    r = evaluate_outcomes(store, "btc", 1, 2, metric="error")
    joined = store.joined("btc")
    by_hand = evaluate_ab(
        {
            "champion": joined[joined.version == 1].mae,
            "challenger": joined[joined.version == 2].mae,
        },
        metric="error",
    )
    assert r == by_hand
    assert r.n == {"champion": 60, "challenger": 50}
    assert r.significant and "significantly lower (better)" in r.verdict
    # the same from the frame itself
    assert evaluate_outcomes(joined, "btc", 1, 2) == r


def test_evaluate_outcomes_pnl_compares_signal_times_realised_return(store):
    r = evaluate_outcomes(store, "btc", 1, 2, metric="pnl", min_samples=10)
    joined = store.joined("btc")
    champion = joined[joined.version == 1]
    assert r.mean["champion"] == pytest.approx(champion.pnl.mean(), rel=1e-12)
    expected = champion.signal.astype(float) * (
        np.stack(champion.actual.to_list())[:, -1] / 100 - 1
    )
    assert np.allclose(champion.pnl, expected)
    assert r.mean["challenger"] > r.mean["champion"]


def test_evaluate_outcomes_too_few_joined_outcomes_is_not_a_verdict(store):
    since = T0 + pd.Timedelta(minutes=45)
    r = evaluate_outcomes(store, "btc", 1, 2, since=since)
    assert r.n == {"champion": 15, "challenger": 5}
    joined = store.joined("btc")
    assert evaluate_outcomes(joined, "btc", 1, 2, since=since) == r
    assert evaluate_outcomes(joined, "btc", 1, 2, since=since.value) == r  # ns since the epoch
    assert not r.enough_data and not r.significant
    assert r.verdict.startswith("too thin to judge") and "joined outcomes" in r.verdict
    with pytest.raises(ConfigError, match="both version 1"):
        evaluate_outcomes(store, "btc", 1, 1)
    with pytest.raises(ConfigError, match="did you mean 'pnl'"):
        evaluate_outcomes(store, "btc", 1, 2, metric="pln")


class _Mean:
    """A stand-in model: forecasts each window's mean for 2 steps."""

    input_size, n_features, horizon = 4, 1, 2

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.repeat(x.mean(axis=(1, 2))[:, None], 2, axis=1)


def test_replay_batch_feeds_recorded_live_inputs_to_shadow_validation(tmp_path):
    with OutcomeStore(tmp_path / "o.sqlite") as store:
        windows = 100 + np.arange(5 * 4, dtype=np.float32).reshape(5, 4, 1)
        for i, w in enumerate(windows):
            store.record_prediction(
                f"k{i}", model="btc", version=1, symbol=None, ts=T0, horizon=2,
                forecast=[1.0, 1.0], inputs=w,
            )  # fmt: skip
        batch = replay_batch(store, "btc", _Mean(), rows=3)
        assert np.array_equal(batch, windows[2:])
        report = shadow_validate(_Mean(), batch, repeats=1, max_latency_ms=float("inf"))
        assert report.passed
        assert replay_batch(store, "eth", _Mean()).shape[0] == 0
