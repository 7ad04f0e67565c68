"""celeris.backtest.signals: from_signals and its one table of per-column options."""

import inspect

import numpy as np
import pandas as pd
import pytest

import celeris.backtest as bt
from celeris.backtest import kernel as K
from celeris.backtest import portfolio, signals
from celeris.backtest.sweep import PORTFOLIO_OPTIONS
from celeris.errors import ConfigError


def _close() -> pd.Series:
    return pd.Series(
        [10.0, 11.0, 12.0, 11.0, 13.0, 12.5],
        index=pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC"),
    )


def test_from_signals_same_function_from_package_portfolio_and_signals() -> None:
    assert bt.from_signals is signals.from_signals
    assert portfolio.from_signals is signals.from_signals


def test_option_table_defaults_match_the_signature() -> None:
    params = inspect.signature(signals.from_signals).parameters
    for option in signals.OPTIONS:
        assert option.name in params, option.name
        default = params[option.name].default
        assert default is option.default or default == option.default, option.name


def test_option_table_fills_every_kernel_param_slot_once() -> None:
    slots = [o.slot for o in signals.OPTIONS] + [K.P_STOP_EXIT, K.P_STOP_REF]
    assert sorted(slots) == list(range(K.N_PARAMS))


def test_sweep_passes_on_every_option_of_the_table() -> None:
    names = {o.name for o in signals.OPTIONS}
    assert names <= set(PORTFOLIO_OPTIONS)
    keywords = set(inspect.signature(signals.from_signals).parameters)
    assert set(PORTFOLIO_OPTIONS) <= keywords


@pytest.mark.parametrize("option", signals.OPTIONS, ids=lambda o: o.name)
def test_option_sequence_reaches_its_kernel_slot(option: signals.Option) -> None:
    if option.choices is not None:
        values: list = ["amount", "value"] if option.name == "size_type" else ["longonly", "both"]
        expected = [option.choices[v] for v in values]
    elif option.flag:
        values = expected = [False, True]
    else:
        values = expected = [0.01, 0.02]
    close = _close()
    kwargs = {option.name: values}
    if option.name == "init_cash":
        values = expected = [1000.0, 2000.0]
        kwargs = {option.name: values}
    pf = bt.from_signals(close, close.index.day == 1, close.index.day == 3, execution="close",
                         **kwargs)  # fmt: skip
    assert pf._inputs.params[:, option.slot].tolist() == [float(x) for x in expected]
    if option.axis:
        assert pf.columns.name == option.name
    else:
        assert pf.columns.name == "column"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(tsl_stop=1.0), "tsl_stop must be < 1"),
        (dict(tsl_stop=1.5), r"^tsl_stop must be in \(0, 1\], got 1.5$"),
        (dict(fees=2.0), r"^fees must be in \[0, 1\], got 2.0$"),
        (dict(init_cash=0.0), r"^init_cash must be in \(0, inf\], got 0.0$"),
        (dict(accumulate=2), "accumulate must be True or False, got 2"),
        (dict(size_granularity=0.0), r"size_granularity must be in \(0"),
        (dict(direction="shrt"), "did you mean 'short"),
    ],
)
def test_option_table_bad_value_raises_named_config_error(kwargs: dict, message: str) -> None:
    close = _close()
    with pytest.raises(ConfigError, match=message):
        bt.from_signals(close, close.index.day == 1, close.index.day == 3, execution="close",
                        **kwargs)  # fmt: skip


def test_option_parse_none_is_nan_for_stops() -> None:
    (sl,) = [o for o in signals.OPTIONS if o.name == "sl_stop"]
    assert np.isnan(sl.parse(None)).all()
