"""Drift measures: PSI against a training reference, realised error against validation error."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models.drift import (
    PSI_EPSILON,
    PSI_SIGNIFICANT,
    bin_fractions,
    error_drift,
    feature_reference,
    psi,
    psi_by_feature,
    validation_error,
)


def _decile_reference(train: np.ndarray) -> dict[str, list[float]]:
    """The feature spec's reference format, built here independently of the model code."""
    edges = np.quantile(train, np.linspace(0.1, 0.9, 9))
    counts = np.array(
        [np.sum(train <= edges[0])]
        + [np.sum((train > lo) & (train <= hi)) for lo, hi in itertools.pairwise(edges)]
        + [np.sum(train > edges[-1])]
    )
    return {"bins": edges.tolist(), "fractions": (counts / train.size).tolist()}


def test_psi_two_bins_equals_hand_computation():
    ref = {"bins": [0.0], "fractions": [0.5, 0.5]}
    # a = [0.75, 0.25]: 0.25 ln(0.75/0.5) + (-0.25) ln(0.25/0.5)
    hand = 0.25 * math.log(1.5) + 0.25 * math.log(2.0)
    assert psi(ref, [-1.0, -2.0, -3.0, 1.0]) == pytest.approx(hand, rel=1e-12)
    assert psi(ref, [-1.0, 1.0]) == 0.0


def test_psi_empty_bin_uses_epsilon_and_edges_are_right_closed():
    ref = {"bins": [0.0, 1.0], "fractions": [0.2, 0.3, 0.5]}
    # 0.0 and 1.0 sit on edges: (-inf, 0] and (0, 1]; nothing lands above 1
    values = [0.0, 0.0, 1.0, 1.0]
    assert bin_fractions(ref["bins"], values).tolist() == [0.5, 0.5, 0.0]
    hand = (
        (0.5 - 0.2) * math.log(0.5 / 0.2)
        + (0.5 - 0.3) * math.log(0.5 / 0.3)
        + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    )
    assert psi(ref, values) == pytest.approx(hand, rel=1e-12)


def test_psi_drifted_sample_exceeds_threshold_undrifted_does_not():
    rng = np.random.default_rng(7)
    ref = _decile_reference(rng.standard_normal(20_000))
    same = psi(ref, rng.standard_normal(5_000))
    shifted = psi(ref, rng.standard_normal(5_000) + 1.0)
    assert same < 0.01  # sampling noise only: ~ (bins - 1) / n
    assert shifted > PSI_SIGNIFICANT


def test_psi_by_feature_reads_the_spec_reference_by_name():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((4_000, 2))
    reference = {"bins": {}, "fractions": {}}
    for j, name in enumerate(("log_return", "rsi_14")):
        one = _decile_reference(train[:, j])
        reference["bins"][name] = one["bins"]
        reference["fractions"][name] = one["fractions"]
    now = np.column_stack([rng.standard_normal(2_000), rng.standard_normal(2_000) * 3])
    out = psi_by_feature(reference, now, ["log_return", "rsi_14"])
    assert out["log_return"] < 0.02 and out["rsi_14"] > PSI_SIGNIFICANT
    frame = pd.DataFrame(now[:, ::-1], columns=["rsi_14", "log_return"])
    assert psi_by_feature(reference, frame, ["log_return", "rsi_14"]) == out
    assert out["rsi_14"] == psi(feature_reference(reference, "rsi_14"), now[:, 1])
    with pytest.raises(DataError, match=r"'rsi_15'.*did you mean 'rsi_14'"):
        feature_reference(reference, "rsi_15")


@pytest.mark.parametrize(
    ("reference", "values", "error", "match"),
    [
        ({"bins": [0.0], "fractions": [0.5, 0.4]}, [1.0], DataError, "sum to 1"),
        ({"bins": [1.0, 0.0], "fractions": [0.3, 0.3, 0.4]}, [1.0], DataError, "non-decreasing"),
        ({"bins": [0.0], "fractions": [1.0]}, [1.0], DataError, "k \\+ 1 fractions"),
        ({"bins": [0.0], "fractions": [0.5, 0.5]}, [], DataError, "no values"),
        ({"bins": [0.0], "fractions": [0.5, 0.5]}, [1.0, np.nan], DataError, "value 1 is nan"),
        ([0.0], [1.0], CelerisTypeError, "mapping"),
    ],
)
def test_psi_bad_reference_or_values_raise_naming_the_feature(reference, values, error, match):
    with pytest.raises(error, match=match) as info:
        psi(reference, values, feature="rsi_14")
    assert "rsi_14" in str(info.value)


def test_validation_error_reads_fit_on_bars_meta_and_none_without():
    meta = {"test_metrics": {"model": {"mae": 2.5, "rmse": 3.0}, "naive": {"mae": 3.0}}}
    assert validation_error(meta) == 2.5 and validation_error(meta, "rmse") == 3.0
    assert validation_error({"test_metrics": {}}) is None
    assert validation_error({}) is None
    with pytest.raises(DataError, match="mape"):
        validation_error(meta, "mape")


def test_error_drift_exceeds_only_with_enough_samples_over_the_factor():
    worse = error_drift([1.0] * 10 + [4.0] * 40, 2.0, window=40, factor=1.5, min_samples=30)
    assert (worse.n, worse.realised, worse.ratio) == (40, 4.0, 2.0) and worse.exceeded
    fine = error_drift([2.5] * 40, 2.0, factor=1.5)
    assert fine.ratio == 1.25 and fine.enough_data and not fine.exceeded
    thin = error_drift([9.0] * 5, 2.0, min_samples=30)
    assert not thin.enough_data and not thin.exceeded
    unknown = error_drift([9.0] * 50, None)
    assert math.isnan(unknown.ratio) and not unknown.exceeded
    with pytest.raises(DataError, match="realised error 1"):
        error_drift([1.0, math.inf], 1.0)
    with pytest.raises(ConfigError, match="factor"):
        error_drift([1.0], 1.0, factor=0)


def test_psi_of_the_training_rows_against_their_own_spec_reference_is_zero():
    from celeris.models.features import reference_of

    rng = np.random.default_rng(3)
    train = np.column_stack([rng.standard_normal(1_000), rng.exponential(size=1_000)])
    reference = reference_of(train, ["log_return", "volume"])
    out = psi_by_feature(reference, train, ["log_return", "volume"])
    assert out == {
        "log_return": pytest.approx(0.0, abs=1e-12),
        "volume": pytest.approx(0.0, abs=1e-12),
    }
    assert (
        psi_by_feature(reference, train * 2, ["log_return", "volume"])["volume"] > PSI_SIGNIFICANT
    )
