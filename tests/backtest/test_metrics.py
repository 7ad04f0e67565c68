"""celeris.backtest.metrics: the one home of metric metadata, and no private cross-imports."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import celeris.backtest as bt
from celeris.backtest import kernel as K
from celeris.backtest import metrics as M
from celeris.errors import ConfigError

_PACKAGE = Path(bt.__file__).parent


def _celeris_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from celeris... import ...`` in a source file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("celeris"):
            out.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("celeris")]
    return out


def test_metrics_module_imports_only_kernel_and_errors_is_leaf() -> None:
    imported = {
        f"{module}.{name}" if module == "celeris.backtest" else module
        for module, names in _celeris_imports(_PACKAGE / "metrics.py")
        for name in (names or [""])
    }
    # celeris.formatting (how a value is shown) is itself a leaf: it imports nothing from celeris.
    assert imported == {"celeris.backtest.kernel", "celeris.errors", "celeris.formatting"}
    assert not list(_celeris_imports(_PACKAGE.parent / "formatting.py"))


def test_metrics_slots_are_the_kernel_slots_in_order() -> None:
    slots = [slot for slot, _ in M.METRICS.values()]
    assert slots == list(range(K.N_METRICS))
    assert M.METRICS["sharpe"][0] == K.M_SHARPE
    assert M.METRICS["open_trade_pnl"][0] == K.M_OPEN_PNL


def test_metric_groups_name_only_known_metrics() -> None:
    known = set(M.METRICS) | set(M.BENCHMARK_METRICS) | {"start_value"}
    for group in (M.PERCENT_METRICS, M.CASH_METRICS, M.RATIO_METRICS, M.HIGHER_IS_WORSE):
        assert set(group) <= known
    assert set(M.COUNT_METRICS) <= set(M.METRICS)


def test_metric_slot_unknown_name_raises_with_hint() -> None:
    assert M.metric_slot("sharpe") == K.M_SHARPE
    with pytest.raises(ConfigError, match=r"unknown metric 'sharp'.*sharpe"):
        M.metric_slot("sharp")


def test_rank_order_drawdown_ascending_and_nan_dropped() -> None:
    values = np.array([0.3, np.nan, 0.1, 0.2])
    assert M.rank_order(values, "max_drawdown").tolist() == [2, 3, 0]
    assert M.rank_order(values, "sharpe").tolist() == [0, 3, 2]


def test_metrics_frame_counts_are_ints_and_duration_is_timedelta() -> None:
    rows = np.zeros((1, K.N_METRICS))
    rows[0, K.M_TRADES] = 3.0
    rows[0, K.M_MAX_DD_DURATION] = 2.0
    frame = M.metrics_frame(rows, pd.Index(["a"]), pd.Timedelta(hours=1))
    assert list(frame.columns) == list(M.METRICS)
    assert frame["trades"].dtype == np.int64
    assert frame.loc["a", "max_drawdown_duration"] == pd.Timedelta(hours=2)


def test_portfolio_metric_values_match_stats_and_are_read_only() -> None:
    close = pd.Series(
        [10.0, 11.0, 12.0, 11.0, 13.0],
        index=pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC"),
    )
    pf = bt.from_signals(close, close.index.day == 1, close.index.day == 3, execution="close")
    values = pf.metric_values
    assert values.shape == (1, len(M.METRICS))
    assert values[0, M.metric_slot("end_value")] == pf.stats()["end_value"].iloc[0]
    with pytest.raises(ValueError, match="read-only"):
        values[0, 0] = 1.0


def test_old_metric_names_stay_importable_from_portfolio() -> None:
    from celeris.backtest.portfolio import CASH_METRICS, METRICS, PERCENT_METRICS

    assert METRICS is M.METRICS
    assert CASH_METRICS is M.CASH_METRICS
    assert PERCENT_METRICS is M.PERCENT_METRICS


def test_format_metric_kind_signed_and_missing_marker() -> None:
    from celeris.backtest.metrics import format_metric, metric_kind

    assert [metric_kind(n) for n in ("cagr", "pnl", "sortino", "orders", "fast")] == [
        "percent",
        "cash",
        "ratio",
        "count",
        "number",
    ]
    assert metric_kind("oos_total_return") == metric_kind("benchmark_return") == "percent"
    assert format_metric("return", 0.0125, signed=True) == "+1.25%"
    assert format_metric("sharpe", float("nan"), missing="-") == "-"
    assert format_metric("max_drawdown_duration", float("nan")) == "n/a"
