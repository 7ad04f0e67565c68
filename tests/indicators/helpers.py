"""Comparison helpers and synthetic data shared by the indicator tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

RTOL = 1e-9
ATOL = 1e-9


def assert_same_values(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Assert equal shapes, NaN in exactly the same places, and values within tolerance.

    Accepts arrays, Series or DataFrames (compared by value; index checks are separate).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected {e.shape}")
    a_nan, e_nan = np.isnan(a), np.isnan(e)
    if not np.array_equal(a_nan, e_nan):
        where = np.argwhere(a_nan != e_nan)[0]
        raise AssertionError(
            f"NaN positions differ, first at {tuple(where)}: actual {a[tuple(where)]!r}, "
            f"expected {e[tuple(where)]!r}; {int(a_nan.sum())} vs {int(e_nan.sum())} NaNs"
        )
    np.testing.assert_allclose(a[~a_nan], e[~e_nan], rtol=rtol, atol=atol)


def random_walk(seed: int, n: int, start: float = 100.0, vol: float = 0.01) -> np.ndarray:
    """Return a geometric random walk of ``n`` closes."""
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def random_bars(seed: int, n: int) -> pd.DataFrame:
    """Return a bar frame (UTC ``time`` index, float64 OHLCV) around a random walk."""
    rng = np.random.default_rng(seed)
    close = random_walk(seed, n)
    open_ = np.r_[close[0], close[:-1]]
    span = np.abs(rng.normal(0.0, 0.006, (2, n)))
    high = np.maximum(open_, close) * (1.0 + span[0])
    low = np.minimum(open_, close) * (1.0 - span[1])
    index = pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC", name="time")
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1, 9, n)},
        index=index,
    )


def exact_rolling_mean_std(x: np.ndarray, w: int, ddof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reference rolling mean and std by brute force: each window summed on its own (numpy's
    pairwise sum) and a two-pass variance, so no running sum can drift. NaN warm-up."""
    from numpy.lib.stride_tricks import sliding_window_view

    mean = np.full(x.shape[0], np.nan)
    std = np.full(x.shape[0], np.nan)
    windows = sliding_window_view(x, w)  # [n - w + 1, w], a view
    chunk = max(1, 4_000_000 // w)
    for a in range(0, windows.shape[0], chunk):
        block = windows[a : a + chunk]
        m = block.mean(axis=1)
        v = ((block - m[:, None]) ** 2).sum(axis=1) / (w - ddof) if w > ddof else np.nan
        mean[a + w - 1 : a + w - 1 + block.shape[0]] = m
        std[a + w - 1 : a + w - 1 + block.shape[0]] = np.sqrt(v)
    return mean, std
