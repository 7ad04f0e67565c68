"""Sweeps and walk-forward: equal to single runs, chunk-invariant, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celeris import CelerisTypeError, ConfigError
from celeris.backtest import STRATEGIES, from_signals, sweep, walk_forward
from celeris.backtest.signals import OPTIONS
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


# ---- portfolio options as grid axes (issue 12) ----------------------------------------------------
AXES_GRID = {
    "fast": [10, 20],
    "slow": [50, 100],
    "sl_stop": [None, 0.02, 0.05],
    "fees": [0.0, 0.001],
}


@pytest.fixture(scope="module")
def sample_bars() -> pd.DataFrame:
    from celeris.data import load

    return load("sample:sp500")


@pytest.mark.parametrize("chunk_size", [None, 5])  # 5: a strategy combination spans two chunks
def test_sweep_option_axes_equal_separate_from_signals_runs(sample_bars, chunk_size):
    result = sweep(
        sample_bars, "sma_cross", AXES_GRID, chunk_size=chunk_size, progress=False, slippage=0.0005
    )
    assert list(result.combos.columns) == ["fast", "slow", "sl_stop", "fees"]
    assert len(result.combos) == 2 * 2 * 3 * 2 and result.axes == ("sl_stop", "fees")
    stats = result.stats()
    for i, row in enumerate(result.combos.itertuples(index=False)):
        e, x = STRATEGIES["sma_cross"].signals(sample_bars, {"fast": row.fast, "slow": row.slow})
        sl_stop = None if np.isnan(row.sl_stop) else row.sl_stop
        single = from_signals(sample_bars, e, x, sl_stop=sl_stop, fees=row.fees, slippage=0.0005)
        assert np.array_equal(result.metrics[i], single.metric_values[0], equal_nan=True), row
        expected = single.stats().iloc[0]
        for name in ("end_value", "sharpe", "max_drawdown", "trades"):
            assert_values_close(stats[name].iloc[i], expected[name], rtol=0, label=name)
    # The stops and fees make a difference, so the comparison above can fail.
    assert len(np.unique(result.metrics[:, 0])) == len(result.combos)


def test_sweep_option_axes_build_signals_once_per_strategy_combination(sample_bars, monkeypatch):
    import sys

    from celeris.backtest.strategies import Strategy

    base = STRATEGIES["sma_cross"]
    asked: list[int] = []
    widths: list[int] = []

    def prepare(bars, combos):
        signals = base.prepare(bars, combos)

        def counted(rows):
            asked.append(rows.stop - rows.start)
            return signals(rows)

        return counted

    def recording(bars, entries, exits, **kwargs):
        widths.append(entries.shape[1])
        return from_signals(bars, entries, exits, **kwargs)

    # celeris.backtest.sweep is the function; the module is in sys.modules.
    monkeypatch.setattr(sys.modules["celeris.backtest.sweep"], "from_signals", recording)
    counted = Strategy("sma_counted", base.params, prepare, base.constraint)
    grid = {"fast": [5, 10, 20], "slow": [50, 100], "sl_stop": [0.02, 0.05], "tp_stop": [0.1, 0.2]}
    result = sweep(sample_bars, counted, grid, chunk_size=9, progress=False)
    assert len(result.combos) == 6 * 4
    # Whole groups of 4 option values per chunk (9 -> 8): 6 combinations, each built once.
    assert sum(asked) == 6 and max(asked) <= 2
    assert widths == [8, 8, 8]  # bounded by the chunk size
    asked.clear()
    widths.clear()
    sweep(
        sample_bars, counted, {"fast": [5, 10, 20], "slow": [50, 100]}, chunk_size=4, progress=False
    )
    assert asked == [4, 2] and widths == [4, 2]  # without option axes: as before


def test_sweep_option_axes_memory_does_not_grow_with_option_values(sample_bars):
    import tracemalloc

    grid = {"fast": [5, 10, 20, 40], "slow": [50, 100]}
    runs = {n_stops: list(np.linspace(0.01, 0.2, n_stops)) for n_stops in (4, 64)}
    # Warm caches with the very runs measured: on a cold numba cache a kernel specialisation
    # first met inside the traced run is compiled there, and the compiler's allocations
    # (several MB) would count as the sweep's.
    for stops in runs.values():
        sweep(sample_bars, "sma_cross", grid | {"sl_stop": stops}, chunk_size=32, progress=False)
    peaks = []
    for stops in runs.values():  # 32 and 512 variants
        tracemalloc.start()
        try:
            sweep(
                sample_bars, "sma_cross", grid | {"sl_stop": stops}, chunk_size=32, progress=False
            )
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # Signals of all 512 variants would take 2 x 512 x 5,031 bytes (~5 MB); one chunk is 32 wide.
    assert peaks[1] - peaks[0] < 1 * 2**20, peaks


def test_sweep_result_api_with_option_axes(sample_bars, tmp_path):
    grid = {"fast": [10, 20], "slow": [50], "sl_stop": [0.01, 0.02, 0.05], "init_cash": [1e4, 1e5]}
    result = sweep(sample_bars, "sma_cross", grid, progress=False, fees=0.001)
    params = result.best_params("sharpe")
    assert set(params) == {"fast", "slow", "sl_stop", "init_cash"}
    assert type(params["fast"]) is int and type(params["sl_stop"]) is float
    best = result.best("sharpe", 1)
    assert best.index[0] == tuple(params.values())
    pf = result.portfolio()
    assert pf.name == (
        f"sma_cross (fast={params['fast']}, slow=50, sl_stop={params['sl_stop']:g}, "
        f"init_cash={params['init_cash']:g})"
    )
    assert_values_close(pf.stats()["sharpe"].iloc[0], best["sharpe"].iloc[0], rtol=0)
    assert pf.stats()["start_value"].iloc[0] == params["init_cash"]
    # start_value follows the init_cash axis
    assert list(result.stats()["start_value"].iloc[:2]) == [1e4, 1e5]
    other = result.portfolio({"fast": 10, "slow": 50, "sl_stop": 0.05, "init_cash": 1e4})
    row = result.stats().loc[(10, 50, 0.05, 1e4)]
    assert_values_close(other.stats()["total_return"].iloc[0], row["total_return"], rtol=0)
    heat = result.heatmap("sharpe", x="fast", y="sl_stop")
    assert heat.shape == (3, 2) and heat.index.name == "sl_stop" and heat.columns.name == "fast"
    assert_values_close(
        heat.loc[0.05, 10], result.stats().loc[(10, 50, 0.05), "sharpe"].max(), rtol=0
    )
    edge = result.on_edge("sharpe")
    assert set(edge) <= {"sl_stop"}  # fast, slow, init_cash have fewer than three values
    assert ("sl_stop" in edge) == (params["sl_stop"] in (0.01, 0.05))
    path = result.to_html(tmp_path / "sweep.html")
    assert "sl_stop" in path.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=r"no parameter or option axis 'sl_stp' .*'sl_stop'"):
        result.heatmap(x="sl_stp")


def test_sweep_option_axis_of_choices_and_off_values(sample_bars):
    grid = {"fast": [10], "slow": [50], "direction": ["longonly", "both"], "tp_stop": [None, 0.1]}
    result = sweep(sample_bars, "sma_cross", grid, progress=False)
    assert result.combos["direction"].tolist() == ["longonly", "longonly", "both", "both"]
    e, x = STRATEGIES["sma_cross"].signals(sample_bars, {"fast": 10, "slow": 50})
    single = from_signals(sample_bars, e, x, direction="both", tp_stop=0.1)
    assert np.array_equal(result.metrics[3], single.metric_values[0], equal_nan=True)
    heat = result.heatmap("sharpe", x="direction", y="tp_stop")
    assert heat.shape == (2, 2)  # the "off" row (NaN) is kept
    assert result.portfolio({"fast": 10, "slow": 50, "direction": "both", "tp_stop": 0.1}).name == (
        "sma_cross (fast=10, slow=50, direction=both, tp_stop=0.1)"
    )


@pytest.mark.parametrize("option", [o.name for o in OPTIONS])
def test_sweep_every_per_column_option_is_an_axis(sample_bars, option):
    """Read from the table, not a list: an option added to OPTIONS is an axis as it is."""
    default = next(o.default for o in OPTIONS if o.name == option)
    grid = {"fast": [10], "slow": [50]}
    with_axis = sweep(sample_bars, "sma_cross", grid | {option: [default]}, progress=False)
    plain = sweep(sample_bars, "sma_cross", grid, progress=False)
    assert with_axis.axes == (option,)
    assert np.array_equal(with_axis.metrics, plain.metrics, equal_nan=True)


def test_sweep_grid_takes_an_option_added_to_the_table(monkeypatch):
    from celeris.backtest import kernel as K
    from celeris.backtest import signals
    from celeris.backtest.sweep import sweep_grid

    cap = signals.Option("position_cap", 1.0, K.P_SIZE, low=1.0)
    monkeypatch.setattr(signals, "OPTIONS", (*signals.OPTIONS, cap))
    plan = sweep_grid("sma_cross", {"fast": [10, 20], "slow": [50], "position_cap": [1, 3]})
    assert plan.combos.to_dict("list") == {
        "fast": [10, 10, 20, 20],
        "slow": [50, 50, 50, 50],
        "position_cap": [1.0, 3.0, 1.0, 3.0],
    }
    assert plan.param_row.tolist() == [0, 0, 1, 1] and len(plan.params) == 2
    with pytest.raises(ConfigError, match=r"position_cap must be in \[1\.0, inf\], got 0\.5"):
        sweep_grid("sma_cross", {"position_cap": [0.5]})


def test_sweep_constraint_applies_to_strategy_parameters_only(sample_bars):
    grid = {"fast": [10, 60], "slow": [50], "fees": [0.0, 0.001]}
    result = sweep(sample_bars, "sma_cross", grid, progress=False)
    assert result.combos.to_dict("list") == {
        "fast": [10, 10],
        "slow": [50, 50],
        "fees": [0.0, 0.001],
    }


def test_sweep_frame_of_variants_with_option_columns(sample_bars):
    frame = pd.DataFrame(
        {"fast": [20, 10, 60, 20], "slow": [50, 50, 50, 50], "sl_stop": [0.05, 0.02, 0.02, 0.02]}
    )
    result = sweep(sample_bars, "sma_cross", frame, progress=False)
    # Row order kept; (60, 50) fails fast < slow and is dropped.
    assert result.combos.to_dict("list") == {
        "fast": [20, 10, 20],
        "slow": [50, 50, 50],
        "sl_stop": [0.05, 0.02, 0.02],
    }
    mapped = sweep(
        sample_bars, "sma_cross", {"fast": [10, 20], "slow": [50], "sl_stop": [0.02, 0.05]},
        progress=False,
    )  # fmt: skip
    for i, key in enumerate(result.index):
        assert np.array_equal(
            result.metrics[i], mapped.metrics[mapped.index.get_loc(key)], equal_nan=True
        )


@pytest.mark.parametrize(
    ("grid", "options", "message"),
    [
        ({"sl_stp": [0.02]}, {}, r"'sl_stp' is neither a parameter of sma_cross nor a backtest option \(did you mean 'sl_stop'\?\)"),
        ({"fsat": [10]}, {}, r"did you mean 'fast'\?.*its parameters: fast, slow; options that sweep as axes: init_cash, fees"),
        ({"sl_stop": [0.02, 0.05]}, {"sl_stop": 0.03}, r"^sl_stop is both a grid axis and an option \(sl_stop=0\.03\): give it in one place$"),
        ({"execution": ["close"]}, {}, "execution is a run-wide backtest option"),
        ({"call_seq": ["auto"]}, {}, r"^call_seq is a from_signals option of multi-asset books"),
        ({}, {"cash_sharing": True}, r"^cash_sharing is a from_signals option of multi-asset books"),
        ({"leverage": [0.5]}, {}, r"leverage must be in \[1, inf\], got 0\.5"),
        ({"sl_stop": [1.5]}, {}, "sl_stop must be in"),
        ({"sl_stop": []}, {}, "grid axis sl_stop has an empty list of values"),
        ({"direction": ["long"]}, {}, r"unknown direction 'long' \(did you mean 'longonly'\?\)"),
        ({"fees": 0.001}, {"fees": [0.0, 0.001]}, "put the values to explore in the grid as an axis"),
    ],
)  # fmt: skip
def test_sweep_bad_option_axes_raise(sample_bars, grid, options, message):
    with pytest.raises(ConfigError, match=message):
        sweep(
            sample_bars, "sma_cross", {"fast": [10], "slow": [50]} | grid, progress=False, **options
        )


def test_check_portfolio_options_list_hint_depends_on_the_caller():
    from celeris.backtest.sweep import check_portfolio_options

    with pytest.raises(
        ConfigError, match=r"sweep and walk_forward take a list of values as a grid axis$"
    ):
        check_portfolio_options({"fees": [0.0, 0.001]})
    with pytest.raises(
        ConfigError, match=r"grid as an axis \(\{'fees': \[\.\.\.\]\}, --grid fees=\.\.\.\)$"
    ):
        check_portfolio_options({"fees": [0.0, 0.001]}, grid=True)
    with pytest.raises(
        ConfigError, match=r"execution must be a single value here .* it holds for the whole run"
    ):
        check_portfolio_options({"execution": ["close"]}, grid=True)


def test_sweep_max_variants_counts_option_axes(sample_bars):
    from celeris.backtest import estimate_sweep

    grid = {"fast": [5, 10, 20], "slow": [50, 100], "sl_stop": [0.02, 0.05], "fees": [0, 0.001]}
    with pytest.raises(
        ConfigError,
        match=r"24 variants \(6 parameter combinations x 4 option values\), more than "
        r"max_variants=23",
    ):
        sweep(sample_bars, "sma_cross", grid, max_variants=23, progress=False)
    assert len(sweep(sample_bars, "sma_cross", grid, max_variants=24, progress=False).combos) == 24
    est = estimate_sweep(sample_bars, "sma_cross", grid)
    assert est.variants == est.combinations == 24


def test_walk_forward_chooses_option_axes_per_window(sp500):
    from celeris.backtest.walk_forward import backtest_window

    grid = {"fast": [5, 20], "slow": [50, 100], "sl_stop": [None, 0.03]}
    wf = walk_forward(sp500, "sma_cross", grid, train=1000, test=1000, progress=False, **OPTS)
    assert "sl_stop" in wf.windows.columns
    pieces = []
    for k, row in wf.windows.iterrows():
        start = k * 1000
        insample = sweep(
            sp500.iloc[start : start + 1000], "sma_cross", grid, progress=False, **OPTS
        )
        chosen = insample.best_params("sharpe")
        assert chosen["fast"] == row["fast"] and chosen["slow"] == row["slow"]
        assert chosen["sl_stop"] == row["sl_stop"] or (
            np.isnan(chosen["sl_stop"]) and np.isnan(row["sl_stop"])
        )
        sl = None if np.isnan(row["sl_stop"]) else row["sl_stop"]
        end = min(start + 2000, len(sp500))
        pf = backtest_window(
            sp500, STRATEGIES["sma_cross"], {"fast": row["fast"], "slow": row["slow"]},
            start + 1000, end, sl_stop=sl, **OPTS,
        )  # fmt: skip
        pieces.append(pf.returns.iloc[:, 0])
    assert_values_close(wf.oos_returns, pd.concat(pieces), rtol=0)


def test_parse_grid_reads_parameters_and_option_axes():
    from celeris.backtest.strategies import get_strategy
    from celeris.backtest.sweep import parse_grid

    sma = get_strategy("sma_cross")
    grid = parse_grid(
        ["fast=10:30:10", "slow=50", "sl_stop=0.01:0.03:0.01", "tp_stop=none,0.1",
         "direction=longonly,both", "accumulate=true,false"],
        sma,
    )  # fmt: skip
    assert grid["fast"] == [10, 20, 30] and grid["slow"] == [50]
    assert grid["sl_stop"] == [0.01, 0.02, 0.03]
    assert np.isnan(grid["tp_stop"][0]) and grid["tp_stop"][1:] == [0.1]
    assert grid["direction"] == ["longonly", "both"] and grid["accumulate"] == [True, False]
    with pytest.raises(ConfigError, match="sl_stop must be in"):
        parse_grid(["sl_stop=0:0.02:0.01"], sma)
    with pytest.raises(ConfigError, match="use true, false or both"):
        parse_grid(["accumulate=maybe"], sma)
    with pytest.raises(ConfigError, match="did you mean 'slippage'"):
        parse_grid(["slipage=0.001"], sma)
