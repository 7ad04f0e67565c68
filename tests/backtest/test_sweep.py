"""Sweeps and walk-forward: equal to single runs, chunk-invariant, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris import CelerisTypeError, ConfigError
from celeris.backtest import STRATEGIES, from_signals, sweep, walk_forward
from tests.helpers import assert_values_close

GRID = {"fast": [5, 10, 20, 40], "slow": [30, 50, 100, 200]}
OPTS = dict(fees=0.001, slippage=0.0005, year_days=252)


def test_sweep_metrics_equal_single_backtests(sp500):
    result = sweep(sp500, "sma_cross", GRID, progress=False, **OPTS)
    stats = result.stats()
    assert len(stats) == 15  # 16 pairs minus (40, 30)
    for fast, slow in [(5, 30), (10, 50), (40, 200)]:
        e, x = STRATEGIES["sma_cross"].signals(sp500, {"fast": fast, "slow": slow})
        single = from_signals(sp500, e, x, **OPTS).stats().iloc[0]
        row = stats.loc[(fast, slow)]
        for name in ("end_value", "sharpe", "max_drawdown", "trades", "win_rate", "expectancy"):
            assert_values_close(row[name], single[name], rtol=0, label=name)


def test_sweep_chunk_size_does_not_change_results(sp500):
    a = sweep(
        sp500,
        "rsi_reversion",
        {"window": [7, 14], "lower": [20, 30], "upper": [60, 70, 80]},
        progress=False,
    )
    b = sweep(
        sp500,
        "rsi_reversion",
        {"window": [7, 14], "lower": [20, 30], "upper": [60, 70, 80]},
        progress=False,
        chunk_size=5,
    )
    assert np.array_equal(a.metrics, b.metrics, equal_nan=True)


def test_sweep_best_orders_by_metric(sp500):
    result = sweep(sp500, "sma_cross", GRID, progress=False, **OPTS)
    best = result.best("sharpe", 3)
    assert list(best["sharpe"]) == sorted(result.stats()["sharpe"].dropna(), reverse=True)[:3]
    assert (
        result.best("max_drawdown", 1)["max_drawdown"].iloc[0]
        == result.stats()["max_drawdown"].min()
    )
    params = result.best_params("sharpe")
    assert (params["fast"], params["slow"]) == best.index[0]
    pf = result.portfolio()
    assert_values_close(pf.stats()["sharpe"].iloc[0], best["sharpe"].iloc[0], rtol=0)
    heat = result.heatmap("sharpe")
    assert heat.shape == (4, 4) and heat.index.name == "slow"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(fees=[0.001, 0.002]), "single value"),
        (dict(fess=0.001), "did you mean 'fees'"),
        (dict(chunk_size=0), "chunk_size"),
    ],
)
def test_sweep_bad_options_raise(sp500, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sweep(sp500, "sma_cross", GRID, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("chunk_size", "error", "message"),
    [
        (2.0, CelerisTypeError, r"^chunk_size must be an int >= 1, got float 2\.0$"),
        (True, CelerisTypeError, r"^chunk_size must be an int >= 1, got bool True$"),
        (0, ConfigError, r"^chunk_size must be >= 1, got 0$"),
    ],
)
def test_sweep_bad_chunk_size_raises_one_type_per_mistake(sp500, chunk_size, error, message):
    # A float chunk_size failed deep inside range() with a bare TypeError; a bool ran as 1.
    with pytest.raises(error, match=message):
        sweep(sp500, "sma_cross", GRID, progress=False, chunk_size=chunk_size)


@pytest.mark.parametrize(
    ("n", "error", "message"),
    [
        (2.5, CelerisTypeError, r"^n must be an int >= 1, got float 2\.5$"),
        (True, CelerisTypeError, r"^n must be an int >= 1, got bool True$"),
        (0, ConfigError, r"^n must be >= 1, got 0$"),
    ],
)
def test_sweep_and_portfolio_best_bad_n_raises_one_type_per_mistake(sp500, n, error, message):
    result = sweep(sp500, "sma_cross", {"fast": [5, 10], "slow": [50]}, progress=False)
    for owner in (result, result.portfolio()):
        with pytest.raises(error, match=message):
            owner.best("sharpe", n)


def test_walk_forward_windows_follow_each_other_and_pick_insample_best(sp500):
    grid = {"fast": [5, 10, 20], "slow": [50, 100]}
    wf = walk_forward(sp500, "sma_cross", grid, train=750, test=250, progress=False, **OPTS)
    w = wf.windows
    # Every bar after the first training window is tested: the last window is partial.
    assert len(w) == -(-(len(sp500) - 750) // 250)
    idx = sp500.index
    for k, row in w.iterrows():
        start = k * 250
        end = min(start + 1000, len(sp500))
        assert row["train_start"] == idx[start] and row["train_end"] == idx[start + 749]
        assert row["test_start"] == idx[start + 750] and row["test_end"] == idx[end - 1]
        assert row["test_bars"] == end - start - 750
        insample = sweep(sp500.iloc[start : start + 750], "sma_cross", grid, progress=False, **OPTS)
        assert insample.best_params("sharpe") == {"fast": row["fast"], "slow": row["slow"]}
    assert len(wf.oos_returns) == len(sp500) - 750
    assert wf.oos_returns.index.is_monotonic_increasing and not wf.oos_returns.index.has_duplicates
    assert_values_close(
        wf.summary["total_return"], wf.oos_equity.iloc[-1] / 100_000.0 - 1, rtol=1e-12
    )


def test_walk_forward_window_ignores_data_after_its_test_end(sp500):
    grid = {"fast": [5, 10, 20], "slow": [50, 100]}
    bars = sp500.iloc[:2000]
    base = walk_forward(bars, "sma_cross", grid, train=500, test=250, progress=False, **OPTS)
    shocked = bars.copy()
    shocked.iloc[1000:, :4] *= np.linspace(1.0, 2.0, 1000)[:, None]
    moved = walk_forward(shocked, "sma_cross", grid, train=500, test=250, progress=False, **OPTS)
    # Windows 0 and 1 end at bar 999: identical; later ones see the change.
    pd.testing.assert_frame_equal(base.windows.iloc[:2], moved.windows.iloc[:2])
    assert not base.windows.iloc[2:].equals(moved.windows.iloc[2:])


def test_walk_forward_durations_and_errors(sp500):
    wf = walk_forward(
        sp500, "sma_cross", {"fast": [10], "slow": [50]}, train="1095D", test="365D", progress=False
    )
    assert 700 < (wf.windows.iloc[0]["test_start"] - wf.windows.iloc[0]["train_start"]).days < 1200
    with pytest.raises(ConfigError, match="exceed the data"):
        walk_forward(sp500.iloc[:100], "sma_cross", None, train=80, test=40, progress=False)
    with pytest.raises(ConfigError, match="unknown metric"):
        walk_forward(sp500, "sma_cross", None, train=500, test=100, metric="sharp", progress=False)


# ---- size limits and estimates (issue A7) -------------------------------------------------------
def test_sweep_grid_beyond_default_limit_is_refused_before_it_runs(sp500):
    grid = {"fast": range(1, 1601), "slow": range(2, 1601)}  # 1,279,200 admissible variants
    with pytest.raises(ConfigError, match=r"1,2\d\d,\d\d\d admissible .*max_variants=1,000,000"):
        sweep(sp500.iloc[:60], "sma_cross", grid, progress=False)


def test_sweep_fifty_million_variant_grid_refused_without_building_it(sp500):
    """The issue's grid (~50M variants) reached 11 GB; now it is refused from the value lists."""
    import tracemalloc

    grid = {"fast": range(1, 10_001), "slow": range(2, 10_001)}
    tracemalloc.start()
    try:
        with pytest.raises(
            ConfigError, match=r"~4\d,\d{3},\d{3} admissible variants .* --max-variants"
        ):
            sweep(sp500, "sma_cross", grid, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20  # the 100M-row product was never built


def test_sweep_max_variants_can_be_raised_or_lifted(sp500):
    grid = {"fast": [5, 10, 20], "slow": [50, 100]}
    with pytest.raises(ConfigError, match="6 variants, more than max_variants=5"):
        sweep(sp500, "sma_cross", grid, max_variants=5, progress=False)
    assert len(sweep(sp500, "sma_cross", grid, max_variants=6, progress=False).combos) == 6
    assert len(sweep(sp500, "sma_cross", grid, max_variants=None, progress=False).combos) == 6
    with pytest.raises(ConfigError, match="max_variants must be >= 1, got 0"):
        sweep(sp500, "sma_cross", grid, max_variants=0, progress=False)


def test_estimate_sweep_counts_variants_before_building():
    from celeris.backtest import estimate_sweep

    bars = pd.DataFrame(
        {"close": np.linspace(100, 200, 500)},
        index=pd.date_range("2024-01-01", periods=500, freq="D", tz="UTC"),
    )
    small = {"fast": range(10, 101, 2), "slow": range(50, 501, 10)}
    est = estimate_sweep(bars, "sma_cross", small, device="cpu")
    assert est.variants == len(STRATEGIES["sma_cross"].grid(small)) == 2_035
    assert est.combinations == 46 * 46 and est.bars == 500
    assert est.memory_bytes > est.variants * 22 * 8 and est.seconds > 0
    assert "2,035 variants x 500 bars" in est.describe()
    big = estimate_sweep(bars, "sma_cross", {"fast": range(1, 10_001), "slow": range(2, 10_001)})
    exact = 9_999 * 10_000 // 2  # pairs fast < slow with fast in 1..10,000 and slow in 2..10,000
    assert abs(big.variants - exact) / exact < 0.02


def test_sweep_best_on_the_edge_of_the_grid_is_flagged(sp500):
    grid = {"fast": [5, 10, 20], "slow": [30, 40, 50, 60]}
    result = sweep(sp500, "sma_cross", grid, progress=False)
    metrics = ("sharpe", "total_return", "max_drawdown")
    assert any(result.on_edge(m) for m in metrics)  # the flagged branch is exercised
    for metric in metrics:
        best = result.best_params(metric)
        expected = {}
        for name, values in grid.items():
            if best[name] == min(values):
                expected[name] = "smallest"
            elif best[name] == max(values):
                expected[name] = "largest"
        assert result.on_edge(metric) == expected
        note = result.edge_note(metric)
        assert ("edge of the grid" in note) == bool(expected)
    two = sweep(sp500, "sma_cross", {"fast": [5, 10], "slow": [50]}, progress=False)
    assert two.on_edge("sharpe") == {}  # two values are not a range to judge
