"""ModelSignals: a step's windows computed once, bounded live windows, the warm-up edge."""

from __future__ import annotations

import numpy as np
import pytest

from celeris.data.synthetic import synthetic
from celeris.live.risk import ENTRY
from celeris.live.signals import ModelSignals
from celeris.models.features import BAR_FIELDS, FeatureSpec

FEATURES = ("log_return", "rsi_14", "zscore_20", "atr_14", "volatility_20")
L, H = 12, 3


class RecordingPredictor:
    """A stand-in model: its forecast is a fixed function of the window, and it keeps every
    window it was given (copied) in call order."""

    def __init__(self) -> None:
        self.meta = {"features": list(FEATURES), "target_kind": "return"}
        self.input_size = L
        self.horizon = H
        self.seen: list[np.ndarray] = []

    def predict(self, windows: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(windows, dtype=np.float64, copy=True))
        w = np.asarray(windows, dtype=np.float64)
        # [A, L, C] -> [A, H]: the last return and the window's mean return, scaled
        return np.stack([w[:, -1, 0], w[:, :, 0].mean(axis=1), w[:, -1, 1] * 1e-3], axis=1)


@pytest.fixture(scope="module")
def history() -> tuple[np.ndarray, np.ndarray]:
    """Times and the live loop's [T, 5, A] bars of four symbols, 700 one-minute bars."""
    frames = [synthetic(n_bars=700, seed=s, freq="1min") for s in range(4)]
    ohlcv = np.stack([f[list(BAR_FIELDS)].to_numpy() for f in frames], axis=2)
    return frames[0].index.as_unit("ns").asi8, ohlcv


def _calls(spec: FeatureSpec, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the feature computations (``last_windows`` calls) of ``spec``'s class."""
    calls: list[int] = []
    original = FeatureSpec.last_windows

    def counted(self, bars, input_size, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(input_size)
        return original(self, bars, input_size, **kwargs)

    monkeypatch.setattr(FeatureSpec, "last_windows", counted)
    return calls


@pytest.mark.parametrize("bounded", [False, True])
def test_model_signals_block_windows_equal_per_bar_windows_bit_for_bit(
    history, monkeypatch, bounded
):
    times, ohlcv = history
    n, k = 600, 150  # a block after the warm-up (the warm-up edge: the next test)
    block_model, bar_model = RecordingPredictor(), RecordingPredictor()
    block_source = ModelSignals(block_model, threshold=1e-4, bounded=bounded)
    calls = _calls(block_source.spec, monkeypatch)
    block = block_source.compute(times[:n], ohlcv[:n], k)
    assert len(calls) == 1  # one feature computation for the whole step, not one per bar
    monkeypatch.undo()
    bar_source = ModelSignals(bar_model, threshold=1e-4, bounded=bounded)
    per_bar = [bar_source.compute(times[:end], ohlcv[:end], 1) for end in range(n - k + 1, n + 1)]
    assert len(block_model.seen) == len(bar_model.seen) == k
    if not bounded:  # the same bars from the same first one: the same windows, bit for bit
        for got, want in zip(block_model.seen, bar_model.seen, strict=True):
            assert got.tobytes() == want.tobytes()
        assert block.bits.tobytes() == np.concatenate([b.bits for b in per_bar]).tobytes()
        assert block.forecasts is not None
        assert block.forecasts.tobytes() == (
            np.concatenate([b.forecasts for b in per_bar if b.forecasts is not None]).tobytes()
        )
    else:  # each bar's bounded window reads its settled bars; the block's read more: close
        for got, want in zip(block_model.seen, bar_model.seen, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert (block.bits & ENTRY).any()  # the threshold is crossed: the bits say something


def test_model_signals_block_through_the_warmup_signals_only_full_windows(history):
    times, ohlcv = history
    model = RecordingPredictor()
    source = ModelSignals(model)
    assert source.warmup == 20 + L
    batch = source.compute(times[:100], ohlcv[:100], 100)  # a replay's first block
    assert len(model.seen) == 100 - source.warmup + 1
    assert (
        not batch.bits[: source.warmup - 1].any()
        and not batch.confidence[: source.warmup - 1].any()
    )
    # the first window is the one of the first bar that has one
    first = source.spec.last_windows(ohlcv[: source.warmup].transpose(2, 0, 1), L)
    assert model.seen[0].tobytes() == first.tobytes()
    assert source.compute(times[:10], ohlcv[:10], 10).bits.sum() == 0  # no window yet: nothing


def test_model_signals_bounded_live_step_reads_the_settled_bars_only(history):
    times, ohlcv = history
    model = RecordingPredictor()
    source = ModelSignals(model, bounded=True)
    source.compute(times, ohlcv, 1)
    settled = source.spec.bars_settled(L)
    assert settled < len(times)
    alone = source.spec.last_windows(ohlcv[-settled:].transpose(2, 0, 1), L, bounded=True)
    assert model.seen[0].tobytes() == alone.tobytes()
    # and within the last digits of the unbounded window over all 700 bars
    full = source.spec.last_windows(ohlcv.transpose(2, 0, 1), L)
    np.testing.assert_allclose(model.seen[0], full, rtol=0, atol=1e-12)
    assert source.describe["model"] == "model"
