"""Assertion helpers shared by the test suite (themselves tested in tests/test_helpers.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def assert_values_close(
    actual: Any, expected: Any, *, rtol: float = 1e-9, atol: float = 0.0, label: str = ""
) -> None:
    """Assert two array-likes have equal shape, NaN in the same places, and close values.

    Infinities must match exactly (same sign). Raises AssertionError naming the first mismatch.
    """
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    prefix = f"{label}: " if label else ""
    if a.shape != b.shape:
        raise AssertionError(f"{prefix}shape {a.shape} != {b.shape}")
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        pos = np.argwhere(nan_a != nan_b)[0]
        raise AssertionError(
            f"{prefix}NaN mismatch at {tuple(pos)}: {a[tuple(pos)]} vs {b[tuple(pos)]}"
        )
    inf_a, inf_b = np.isinf(a), np.isinf(b)
    if (inf_a != inf_b).any() or (a[inf_a] != b[inf_b]).any():
        raise AssertionError(f"{prefix}infinity mismatch")
    special = nan_a | inf_a
    diff = np.abs(np.where(special, 0.0, a) - np.where(special, 0.0, b))
    ok = special | (diff <= atol + rtol * np.abs(np.where(special, 0.0, b)))
    if not ok.all():
        pos = tuple(np.argwhere(~ok)[0])
        raise AssertionError(
            f"{prefix}mismatch at {pos}: {a[pos]!r} vs {b[pos]!r} (|diff|={abs(a[pos] - b[pos]):.3g}, "
            f"{int((~ok).sum())} of {ok.size} differ)"
        )


def assert_frame_close(actual: pd.DataFrame, expected: pd.DataFrame, **kw: Any) -> None:
    """Compare two frames by values (shape, NaN placement, tolerance) and by index."""
    if not actual.index.equals(expected.index):
        raise AssertionError("index differs")
    assert_values_close(actual.to_numpy(), expected.to_numpy(), **kw)
