"""Covariance estimators: parity with numpy / sklearn / pandas, RiskMetrics by hand, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.covariance import LedoitWolf as SkLedoitWolf

from celeris.analytics.covariance import EWMA, LedoitWolf, SampleCovariance, covariance
from celeris.errors import CelerisTypeError, ConfigError, DataError
from tests.analytics.conftest import factor_returns


def test_sample_covariance_factor_returns_matches_numpy_cov() -> None:
    r = factor_returns(8, 120, seed=3)
    got = covariance(r, "sample").to_numpy()
    np.testing.assert_allclose(got, np.cov(r.to_numpy().T, ddof=1), rtol=1e-12, atol=0)
    got0 = covariance(r, SampleCovariance(ddof=0)).to_numpy()
    np.testing.assert_allclose(got0, np.cov(r.to_numpy().T, ddof=0), rtol=1e-12, atol=0)


@pytest.mark.parametrize(("n_assets", "n_rows", "seed"), [(5, 300, 0), (20, 60, 1), (40, 25, 2)])
def test_ledoit_wolf_random_panels_matches_sklearn(n_assets: int, n_rows: int, seed: int) -> None:
    r = factor_returns(n_assets, n_rows, seed=seed)
    peer = SkLedoitWolf().fit(r.to_numpy())
    got = covariance(r, "ledoit_wolf").to_numpy()
    np.testing.assert_allclose(got, peer.covariance_, rtol=1e-10, atol=1e-18)
    assert LedoitWolf().shrinkage(r.to_numpy()) == pytest.approx(peer.shrinkage_, rel=1e-10)


def test_ledoit_wolf_real_index_returns_matches_sklearn(index_returns: pd.DataFrame) -> None:
    got = covariance(index_returns, "ledoit_wolf").to_numpy()
    np.testing.assert_allclose(
        got, SkLedoitWolf().fit(index_returns.to_numpy()).covariance_, rtol=1e-10
    )


def test_ewma_halflife_matches_pandas_ewm_of_products() -> None:
    r = factor_returns(4, 200, seed=4)
    est = EWMA(halflife=20)
    got = covariance(r, est).to_numpy()
    x = r.to_numpy()
    for i in range(4):
        for j in range(4):
            prod = pd.Series(x[:, i] * x[:, j])
            assert got[i, j] == pytest.approx(prod.ewm(halflife=20).mean().iloc[-1], rel=1e-12)


def test_ewma_default_hand_computed_riskmetrics_recursion() -> None:
    # RiskMetrics: S_t = lam S_{t-1} + (1 - lam) r_t r_t'; with a finite window the weights
    # lam^k are normalised to sum to 1. Three rows by hand, lam = 0.94.
    r = pd.DataFrame({"a": [0.01, -0.02, 0.03], "b": [0.02, 0.01, -0.01]})
    lam = 0.94
    w = np.array([lam**2, lam, 1.0]) / (1 + lam + lam**2)
    x = r.to_numpy()
    expected = sum(w[t] * np.outer(x[t], x[t]) for t in range(3))
    np.testing.assert_allclose(covariance(r, "ewma").to_numpy(), expected, rtol=1e-14)
    assert EWMA().lam == 0.94


def test_ewma_span_and_halflife_give_documented_decay() -> None:
    assert EWMA(span=32.0).lam == pytest.approx(1 - 2 / 33)
    assert EWMA(halflife=10.0).lam ** 10 == pytest.approx(0.5)
    assert EWMA(decay=0.97).lam == 0.97


def test_ewma_two_parameters_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"one of decay, halflife or span"):
        EWMA(halflife=10, span=20)


def test_covariance_nan_raises_data_error_naming_asset_and_row() -> None:
    r = factor_returns(3, 50, seed=0)
    r.iloc[7, 1] = np.nan
    with pytest.raises(
        DataError, match=r"NaN in asset 'A01' at row .*2020-01-08.*position 7.*dropna=True"
    ):
        covariance(r)


def test_covariance_nan_with_dropna_drops_the_rows() -> None:
    r = factor_returns(3, 50, seed=0)
    r.iloc[7, 1] = np.nan
    got = covariance(r, dropna=True).to_numpy()
    np.testing.assert_allclose(got, np.cov(r.drop(index=r.index[7]).to_numpy().T), rtol=1e-12)


def test_covariance_infinite_value_raises_data_error() -> None:
    r = factor_returns(3, 50, seed=0)
    r.iloc[3, 2] = np.inf
    with pytest.raises(DataError, match=r"infinite value in asset 'A02'"):
        covariance(r)


def test_covariance_fewer_rows_than_assets_raises_data_error() -> None:
    r = factor_returns(30, 20, seed=0)
    with pytest.raises(DataError, match=r"20 rows of returns for 30 assets.*ledoit_wolf"):
        covariance(r, "sample")
    assert covariance(r, "ledoit_wolf").shape == (30, 30)  # shrinkage is defined here


def test_covariance_unknown_estimator_raises_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'ledoit_wolf'"):
        covariance(factor_returns(3, 50), "ledoit-wolf")
    with pytest.raises(CelerisTypeError, match=r"estimator must be"):
        covariance(factor_returns(3, 50), 3)  # type: ignore[arg-type]


def test_covariance_not_a_frame_raises_type_error() -> None:
    with pytest.raises(CelerisTypeError, match=r"pandas DataFrame"):
        covariance(np.zeros((10, 2)))  # type: ignore[arg-type]
