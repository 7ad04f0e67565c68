"""Built-in strategies against independent pandas/TA-Lib references, grids and parsing."""

from __future__ import annotations

import re
import runpy
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from celeris import ConfigError, DataError
from celeris.backtest import STRATEGIES, estimate_sweep, get_strategy
from celeris.backtest.strategies import check_bars, parse_assignments, parse_values


def _cross(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    up = (a > b) & (a.shift(1) <= b.shift(1))
    down = (a < b) & (a.shift(1) >= b.shift(1))
    return up, down


def _check(bars, name, params, ref_entries, ref_exits):
    entries, exits = STRATEGIES[name].signals(bars, params)
    assert entries.sum() > 0 and exits.sum() > 0, "reference case must have signals"
    assert (entries.to_numpy() == ref_entries.to_numpy()).all(), f"{name} entries differ"
    assert (exits.to_numpy() == ref_exits.to_numpy()).all(), f"{name} exits differ"


def test_sma_cross_signals_match_talib_crosses(sp500):
    c = sp500["close"]
    up, down = _cross(pd.Series(talib.SMA(c, 10), c.index), pd.Series(talib.SMA(c, 50), c.index))
    _check(sp500, "sma_cross", {"fast": 10, "slow": 50}, up, down)


def test_ema_cross_signals_match_talib_crosses(sp500):
    c = sp500["close"]
    up, down = _cross(pd.Series(talib.EMA(c, 12), c.index), pd.Series(talib.EMA(c, 26), c.index))
    _check(sp500, "ema_cross", {"fast": 12, "slow": 26}, up, down)


def test_macd_cross_signals_match_talib(sp500):
    c = sp500["close"]
    macd, signal, _ = talib.MACD(c, 12, 26, 9)
    up, down = _cross(pd.Series(macd, c.index), pd.Series(signal, c.index))
    _check(sp500, "macd_cross", {"fast": 12, "slow": 26, "signal": 9}, up, down)


def test_rsi_reversion_signals_match_talib(sp500):
    c = sp500["close"]
    rsi = pd.Series(talib.RSI(c, 14), c.index)
    entries = (rsi < 30) & (rsi.shift(1) >= 30)
    exits = (rsi > 70) & (rsi.shift(1) <= 70)
    _check(sp500, "rsi_reversion", {"window": 14, "lower": 30, "upper": 70}, entries, exits)


def test_bbands_breakout_signals_match_talib(sp500):
    c = sp500["close"]
    upper, middle, _ = talib.BBANDS(c, 20, 2.0, 2.0)
    entries, _ = _cross(c, pd.Series(upper, c.index))
    _, exits = _cross(c, pd.Series(middle, c.index))
    _check(sp500, "bbands_breakout", {"window": 20, "nbdev": 2.0}, entries, exits)


def test_donchian_breakout_signals_match_pandas(sp500):
    c = sp500["close"]
    upper = sp500["high"].rolling(20).max().shift(1)
    lower = sp500["low"].rolling(10).min().shift(1)
    entries, _ = _cross(c, upper)
    _, exits = _cross(c, lower)
    _check(sp500, "donchian_breakout", {"window": 20, "exit_window": 10}, entries, exits)


def test_strategy_signals_use_only_past_data(sp500):
    """Signals up to t are unchanged when bars after t are rewritten (every built-in)."""
    bars = sp500.iloc[:800]
    t = 600
    shocked = bars.copy()
    shocked.iloc[t + 1 :, :4] *= 1.3
    for strat in STRATEGIES.values():
        e1, x1 = strat.signals(bars)
        e2, x2 = strat.signals(shocked)
        assert (e1.iloc[: t + 1] == e2.iloc[: t + 1]).all(), strat.name
        assert (x1.iloc[: t + 1] == x2.iloc[: t + 1]).all(), strat.name


def test_grid_applies_constraint_and_defaults():
    combos = get_strategy("sma_cross").grid({"fast": [10, 50, 60], "slow": [50]})
    assert combos.to_dict("records") == [{"fast": 10, "slow": 50}]
    combos = get_strategy("macd_cross").grid({"signal": [5, 9]})
    assert combos.to_dict("records") == [
        {"fast": 12, "slow": 26, "signal": 5},
        {"fast": 12, "slow": 26, "signal": 9},
    ]


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"fats": [10]}, "did you mean 'fast'"),
        ({"fast": [100], "slow": [50]}, "no admissible"),
        ({"fast": [0]}, "outside"),
        ({"fast": [2.5]}, "integer"),
        ({"fast": []}, "empty"),
    ],
)
def test_grid_bad_input_raises_config_error(grid, message):
    with pytest.raises(ConfigError, match=message):
        get_strategy("sma_cross").grid(grid)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda idx: idx[::-1], "'index is sorted' broken: close index is not sorted"),
        (lambda idx: idx.insert(1, idx[0])[:-1], "'timestamps are unique' broken: close index"),
    ],
)
def test_check_bars_bad_datetime_index_raises_before_any_indicator(sp500, edit, message):
    # check_bars applies the bar schema's index rules (celeris.data.schema.check_time_index,
    # as from_signals does), so a sweep estimate or a sweep stops before computing indicators;
    # estimate_sweep accepted such an index silently.
    bars = sp500.iloc[:300].set_axis(edit(sp500.index[:300]))
    with pytest.raises(DataError, match=re.escape(message)):
        check_bars(bars)
    with pytest.raises(DataError, match=re.escape(message)):
        estimate_sweep(bars, "sma_cross", {"fast": [5], "slow": [20]})


def test_check_bars_keeps_close_series_without_datetime_index():
    close = pd.Series(100.0 + np.arange(50.0))
    naive = close.set_axis(pd.date_range("2024-01-01", periods=50, freq="D"))
    for series in (close, naive):
        bars = check_bars(series)
        assert list(bars.columns) == ["close"] and bars.index.equals(series.index)


def test_get_strategy_unknown_name_hints():
    with pytest.raises(ConfigError, match="did you mean 'sma_cross'"):
        get_strategy("sma_cros")


def test_get_strategy_model_checkpoint_says_where_model_strategies_run():
    with pytest.raises(ConfigError, match=r"model checkpoint.*celeris backtest.*walk-forward"):
        get_strategy("model:models/spx")


def test_strategy_param_named_like_a_backtest_option_points_to_the_option():
    sma = get_strategy("sma_cross")
    with pytest.raises(
        ConfigError,
        match=r"no parameter 'sl_stop'; its parameters are fast, slow \(sl_stop is a backtest "
        r"option: pass it as sl_stop=\.\.\. .*--sl-stop .*--grid sl_stop=",
    ):
        sma.param("sl_stop")
    with pytest.raises(ConfigError, match=r"its parameters are fast, slow$"):
        sma.param("nope")


def test_parse_values_ranges_lists_and_errors():
    p = get_strategy("sma_cross").param("fast")
    assert parse_values("10:20:5", p) == [10, 15, 20]
    assert parse_values("5,7", p) == [5, 7]
    assert parse_values("10:12", p) == [10, 11, 12]
    with pytest.raises(ConfigError, match="start <= stop"):
        parse_values("20:10", p)
    with pytest.raises(ConfigError, match="cannot read"):
        parse_values("ten", p)
    assert parse_assignments(["fast=5", "slow=50:60:10"], get_strategy("sma_cross")) == {
        "fast": [5],
        "slow": [50, 60],
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        parse_assignments(["fast"], get_strategy("sma_cross"))
    assert np.isclose(
        parse_values("0.5:1.5:0.5", get_strategy("bbands_breakout").param("nbdev")), [0.5, 1.0, 1.5]
    ).all()


# ---- custom strategies: one resolver for the API and every command (issue A8) -------------------
DOCS = Path(__file__).resolve().parents[2] / "docs" / "strategies.md"


@pytest.fixture
def registry():
    """Restore the strategy registry after a test that adds to it."""
    from celeris.backtest.strategies import STRATEGIES as registered

    saved = dict(registered)
    yield registered
    registered.clear()
    registered.update(saved)


def _doc_section() -> str:
    text = DOCS.read_text()
    return text[text.index("## Adding your own") :]


def _write_doc_strategy(folder: Path) -> Path:
    code = re.search(r"```python\n(.*?)```", _doc_section(), re.S).group(1)
    path = folder / "zscore.py"
    path.write_text(code)
    return path


def _doc_commands() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", _doc_section(), re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith("celeris ")]


def test_docs_strategy_runs_as_a_script_and_by_path_in_python(
    tmp_path, monkeypatch, registry, capsys
):
    path = _write_doc_strategy(tmp_path)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")  # `python zscore.py`, as the doc says
    assert "window z" in capsys.readouterr().out  # the best (window, z) rows were printed
    strat = get_strategy("zscore.py:zscore_reversion")
    assert strat.name == "zscore_reversion" and get_strategy("zscore_reversion") is strat
    assert get_strategy(f"{path}:zscore_reversion") is strat  # the same file is imported once


def test_docs_strategy_works_in_every_cli_command_as_written(tmp_path, monkeypatch, registry):
    """Issue A8: `celeris backtest --strategy zscore_reversion` failed for the doc's strategy."""
    from typer.testing import CliRunner

    from celeris.cli.main import app

    _write_doc_strategy(tmp_path)
    monkeypatch.chdir(tmp_path)
    commands = _doc_commands()
    assert {c[0] for c in commands} == {"backtest", "sweep", "walk-forward"}
    for args in commands:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "zscore_reversion" in result.stdout


def test_get_strategy_module_attr_and_registered_by_import(tmp_path, monkeypatch, registry):
    (tmp_path / "my_strats.py").write_text(
        "from celeris.backtest.strategies import STRATEGIES, register\n"
        "import dataclasses\n"
        "fast_sma = dataclasses.replace(STRATEGIES['sma_cross'], name='fast_sma')\n"
        "register(dataclasses.replace(STRATEGIES['ema_cross'], name='registered_ema'))\n"
        "not_a_strategy = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert get_strategy("my_strats:fast_sma").name == "fast_sma"
    assert get_strategy("my_strats:registered_ema").name == "registered_ema"
    with pytest.raises(ConfigError, match="no 'fast_smaa' \\(did you mean 'fast_sma'\\?\\)"):
        get_strategy("my_strats:fast_smaa")
    with pytest.raises(ConfigError, match="'not_a_strategy' is a int, not a"):
        get_strategy("my_strats:not_a_strategy")
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        get_strategy("no_such_module_xyz:thing")
    with pytest.raises(ConfigError, match=r"no file 'missing/zscore\.py'"):
        get_strategy("missing/zscore.py:zscore_reversion")
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match=r"importing .*broken\.py.* failed: RuntimeError: boom"):
        get_strategy(f"{tmp_path}/broken.py:x")


def test_get_strategy_does_not_replace_a_builtin_of_the_same_name(tmp_path, registry):
    (tmp_path / "shadow.py").write_text(
        "import dataclasses\n"
        "from celeris.backtest.strategies import STRATEGIES\n"
        "sma = dataclasses.replace(STRATEGIES['ema_cross'], name='sma_cross')\n"
    )
    builtin = get_strategy("sma_cross")
    shadow = get_strategy(f"{tmp_path}/shadow.py:sma")
    assert shadow is not builtin and get_strategy("sma_cross") is builtin


def test_get_strategy_entry_point_group(tmp_path, monkeypatch, registry):
    """An installed package offers a strategy by name through the celeris.strategies group."""
    (tmp_path / "acme_strats.py").write_text(
        "import dataclasses\n"
        "from celeris.backtest.strategies import STRATEGIES\n"
        "trend = dataclasses.replace(STRATEGIES['sma_cross'], name='acme_trend')\n"
    )
    dist = tmp_path / "acme_strats-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-strats\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[celeris.strategies]\nacme_trend = acme_strats:trend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="did you mean 'acme_trend'"):
        get_strategy("acme_trnd")
    assert get_strategy("acme_trend").name == "acme_trend"
    from celeris.backtest.strategies import available_strategies

    assert "acme_trend" in available_strategies()


def _symbol_major(n: int, nan_lead: int = 37):
    """Three symbols' bars as the live loop stores them ([n_symbols, 5, capacity], spare
    capacity past the last bar), the second symbol's closes starting ``nan_lead`` bars late;
    and each symbol's bar frame."""
    from celeris.data.synthetic import synthetic

    frames = [synthetic(n_bars=n, seed=s, freq="1min") for s in range(3)]
    store = np.full((3, 5, n + 40), np.nan)
    for a, f in enumerate(frames):
        store[a, :, :n] = f[["open", "high", "low", "close", "volume"]].to_numpy().T
    store[1, 3, :nan_lead] = np.nan
    frames[1].loc[frames[1].index[:nan_lead], "close"] = np.nan
    times = frames[0].index.as_unit("ns").asi8
    return store, frames, times


@pytest.mark.parametrize("name", ["sma_cross", "ema_cross"])
@pytest.mark.parametrize(("fast", "slow"), [(3, 8), (40, 600)])
@pytest.mark.parametrize("k", [1, 2, 513])
def test_panel_of_the_newest_bars_on_a_symbol_major_view_equals_the_strategy(name, fast, slow, k):
    # The panel reads the closes as a view with contiguous rows. Histories past the SMA's
    # 512-bar recompute blocks (and a NaN lead) check that computing only the block the newest
    # bars need is exact. A fresh panel per history: no state carried.
    n = 1700
    store, frames, times = _symbol_major(n)
    strategy = get_strategy(name)
    params = {"fast": fast, "slow": slow}
    for end in (n - 300, n):
        close = store[:, 3, :end]
        assert not close.flags.c_contiguous and close.strides[1] == 8
        entries, exits = strategy.panel(params)(times[:end], close, k)
        for a, f in enumerate(frames):
            e, x = strategy.signals(f.iloc[:end], params)
            assert entries[:, a].tolist() == e.to_numpy()[-k:].tolist(), (a, end)
            assert exits[:, a].tolist() == x.to_numpy()[-k:].tolist(), (a, end)


@pytest.mark.parametrize("name", ["sma_cross", "ema_cross"])
@pytest.mark.parametrize(("fast", "slow", "keep"), [(3, 8, None), (40, 600, None), (10, 50, 700)])
def test_panel_stepped_bar_by_bar_keeps_the_strategys_signals(name, fast, slow, keep):
    # The live loop's use: first the warm-up history, then a bar or a few per call, the history
    # bounded to `keep` bars (a moving view) or growing. The running state carries every bar
    # since the first call: the signals are the strategy's on all bars since then, bit for bit.
    n = 1800
    store, frames, times = _symbol_major(n)
    strategy = get_strategy(name)
    params = {"fast": fast, "slow": slow}
    want = [tuple(s.to_numpy() for s in strategy.signals(f, params)) for f in frames]
    panel = strategy.panel(params)
    end, steps = 650, [1, 1, 3, 1, 512, 1, 2, 1, 40]
    entries, exits = panel(times[:end], store[:, 3, :end], 50)
    got_e, got_x = [entries], [exits]
    while end < n:
        k = min(steps[len(got_e) % len(steps)], n - end)
        start = 0 if keep is None else max(0, end + k - keep)
        entries, exits = panel(times[start : end + k], store[:, 3, start : end + k], k)
        got_e.append(entries)
        got_x.append(exits)
        end += k
    got_entries, got_exits = np.concatenate(got_e), np.concatenate(got_x)
    for a in range(3):
        assert got_entries[:, a].tolist() == want[a][0][600:].tolist(), a
        assert got_exits[:, a].tolist() == want[a][1][600:].tolist(), a
    assert panel._ready.all()  # it advanced rather than restarting


def test_panel_restarts_from_the_history_when_it_jumps():
    # A call whose bar before the new ones is not the last one seen (a gap, a replayed range)
    # starts again from the history it gets: the strategy's signals on that history.
    store, _, times = _symbol_major(1200, nan_lead=0)
    strategy = get_strategy("sma_cross")
    params = {"fast": 5, "slow": 20}
    panel = strategy.panel(params)
    panel(times[:600], store[:, 3, :600], 1)
    entries, _ = panel(times[100:900], store[:, 3, 100:900], 1)  # jumped 299 bars
    restarted = strategy.panel(params)
    fresh, _ = restarted(times[100:900], store[:, 3, 100:900], 1)
    assert entries.tolist() == fresh.tolist()
    np.testing.assert_array_equal(panel._state, restarted._state)
    with pytest.raises(DataError, match="1 <= k <= 300"):
        panel(times[:300], store[:, 3, :300], 0)
