"""Returns panels for the portfolio tests: a seeded factor model, celeris's synthetic bars,
and the real daily S&P 500 / NASDAQ closes the ``arch`` package ships."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def factor_returns(n_assets: int = 20, n_rows: int = 500, seed: int = 0) -> pd.DataFrame:
    """Daily returns from a 3-factor model: ``r = F B + e + mu`` (fixed seed, documented in
    docs/portfolio.md): factor vol 1%, loadings N(0.5, 0.5), idiosyncratic vol 0.5-2%,
    means N(5e-4, 5e-4)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(0.0, 0.01, size=(n_rows, 3))
    loadings = rng.normal(0.5, 0.5, size=(3, n_assets))
    noise = rng.normal(0.0, 0.01, size=(n_rows, n_assets)) * rng.uniform(0.5, 2.0, n_assets)
    mu = rng.normal(5e-4, 5e-4, n_assets)
    index = pd.date_range("2020-01-01", periods=n_rows, freq="D", tz="UTC", name="time")
    columns = [f"A{i:02d}" for i in range(n_assets)]
    return pd.DataFrame(factors @ loadings + noise + mu, index=index, columns=columns)


@pytest.fixture
def factor_panel() -> pd.DataFrame:
    return factor_returns()


@pytest.fixture(scope="session")
def index_returns() -> pd.DataFrame:
    """Real daily returns of the S&P 500 and the NASDAQ Composite, 1999-2018 (arch's samples)."""
    from celeris.data import load

    closes = {name: load(f"sample:{name}")["close"] for name in ("sp500", "nasdaq")}
    return pd.DataFrame(closes).pct_change().iloc[1:]


@pytest.fixture(scope="session")
def synthetic_panel() -> pd.DataFrame:
    """Eight assets of celeris.data.synthetic (GARCH + jumps, independent seeds 0-7), daily."""
    from celeris.data.synthetic import synthetic

    closes = {f"S{seed}": synthetic(400, freq="1D", seed=seed)["close"] for seed in range(8)}
    return pd.DataFrame(closes).pct_change().iloc[1:]
