"""Windows, time splits, scalers and features: alignment, no look-ahead, training-only fits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models.data import (
    IdentityScaler,
    RobustScaler,
    Scaler,
    StandardScaler,
    WindowScaler,
    feature_frame,
    make_panel_windows,
    make_scaler,
    make_windows,
    split_by_time,
    training_bars,
)
from tests.data.conftest import make_bars
from tests.helpers import assert_values_close


def _panel(n: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c)).cumsum(axis=0)


# ------------------------------------------------------------------------------ windows


def test_make_windows_1d_shapes_and_alignment():
    values = np.arange(20, dtype=np.float64) * 1.5
    w = make_windows(values, input_size=5, horizon=3)
    assert w.x.shape == (13, 5, 1) and w.y.shape == (13, 3) and w.end.shape == (13,)
    assert (w.x.dtype, w.y.dtype, w.end.dtype) == (np.float32, np.float32, np.int64)
    assert w.end[0] == 4 and w.end[-1] == 20 - 3 - 1
    for k in range(len(w)):
        e = w.end[k]
        assert_values_close(w.x[k, :, 0], values[e - 4 : e + 1], label=f"x[{k}]")
        assert_values_close(w.y[k], values[e + 1 : e + 4], label=f"y[{k}]")


def test_make_windows_2d_target_channel_and_step_align_to_end():
    values = _panel(40)
    w = make_windows(values, input_size=6, horizon=2, step=5, target=2)
    assert w.x.shape == (7, 6, 3)
    assert w.end[-1] == 40 - 2 - 1  # the newest window is always kept
    assert np.all(np.diff(w.end) == 5)
    for k in range(len(w)):
        e = w.end[k]
        assert_values_close(w.x[k], values[e - 5 : e + 1].astype(np.float32), label="x")
        assert_values_close(w.y[k], values[e + 1 : e + 3, 2].astype(np.float32), label="y")


def test_make_windows_dataframe_keeps_columns_time_and_named_target():
    bars = make_bars(30)
    w = make_windows(bars[["close", "volume"]], 5, 2, target="volume")
    assert w.columns == ("close", "volume") and w.target == 1
    assert w.time is not None and w.time[0] == bars.index[w.end[0]]
    assert_values_close(
        w.y[3], bars["volume"].to_numpy()[w.end[3] + 1 : w.end[3] + 3].astype(np.float32)
    )


def test_make_windows_arrays_are_read_only_views():
    w = make_windows(np.arange(1000.0), 50, 10)
    assert not w.x.flags.writeable
    assert w.x.base is not None  # a view: memory O(T), not O(N * L)
    batch = w.x[[0, 5]]  # indexing copies
    assert batch.flags.writeable and batch.flags.c_contiguous


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(8, 60),
    input_size=st.integers(1, 6),
    horizon=st.integers(1, 4),
    step=st.integers(1, 3),
    t=st.integers(0, 59),
)
def test_make_windows_property_no_window_sees_its_future(n, input_size, horizon, step, t):
    if n < input_size + horizon:
        return
    t = min(t, n - 1)
    values = _panel(n, c=2, seed=n)
    w = make_windows(values, input_size, horizon, step=step)
    # x of window k ends exactly at end[k]: equal to the values up to end, nothing after.
    for k in range(len(w)):
        assert_values_close(
            w.x[k], values[w.end[k] - input_size + 1 : w.end[k] + 1].astype(np.float32)
        )
    # Changing every bar after t leaves x and y of windows whose end + H <= t untouched, and x of
    # windows whose end <= t.
    changed = values.copy()
    changed[t + 1 :] += 1000.0
    w2 = make_windows(changed, input_size, horizon, step=step)
    assert np.array_equal(w.end, w2.end)
    done = w.end + horizon <= t
    seen = w.end <= t
    assert np.array_equal(w.x[done], w2.x[done]) and np.array_equal(w.y[done], w2.y[done])
    assert np.array_equal(w.x[seen], w2.x[seen])
    assert not np.array_equal(w.y[~done], w2.y[~done]) or not (~done).any()


@pytest.mark.parametrize(
    ("values", "kwargs", "error", "match"),
    [
        (np.r_[1.0, 2.0, np.nan, 4.0, 5.0, 6.0], {}, DataError, "NaN at row 2, column 0"),
        (
            np.c_[np.ones(8), np.r_[np.ones(5), np.inf, 1, 1]],
            {},
            DataError,
            "inf at row 5, column 1",
        ),
        (np.ones(5), {"input_size": 4, "horizon": 2}, DataError, "need at least 6"),
        (np.ones((3, 4, 2)), {}, DataError, "1-D .* or 2-D"),
        (np.ones((10, 0)), {}, DataError, "no columns"),
        (np.array(["a"] * 10), {}, DataError, "numeric"),
        (np.ones(10), {"input_size": 0}, ConfigError, "input_size must be >= 1"),
        (np.ones(10), {"horizon": 0}, ConfigError, "horizon must be >= 1"),
        (np.ones(10), {"step": 0}, ConfigError, "step must be >= 1"),
        (np.ones(10), {"horizon": 1.5}, CelerisTypeError, "horizon must be an int"),
        (np.ones((10, 2)), {"target": 2}, ConfigError, "target channel 2 out of range"),
    ],
)
def test_make_windows_bad_input_raises_clear_error(values, kwargs, error, match):
    args = {"input_size": 2, "horizon": 1, **kwargs}
    with pytest.raises(error, match=match):
        make_windows(values, **args)


def test_make_windows_nan_in_frame_names_timestamp_and_column():
    bars = make_bars(12)
    bars.iloc[7, bars.columns.get_loc("volume")] = np.nan
    with pytest.raises(DataError, match=r"row 7 \(2024-01-01 00:07:00\+00:00\), column 'volume'"):
        make_windows(bars, 3, 1)


def test_make_windows_unknown_target_column_suggests_name():
    with pytest.raises(ConfigError, match="did you mean 'close'"):
        make_windows(make_bars(12), 3, 1, target="clse")


def test_make_panel_windows_interleaves_assets_by_time():
    a, b = _panel(30, c=2, seed=1), _panel(30, c=2, seed=2)
    w = make_panel_windows({"BTC": a, "ETH": b}, input_size=5, horizon=2, step=3)
    single = make_windows(b, 5, 2, step=3)
    assert w.assets == ("BTC", "ETH")
    assert len(w) == 2 * len(single)
    assert np.array_equal(w.end, np.repeat(single.end, 2))
    assert np.array_equal(w.series, np.tile([0, 1], len(single)))
    assert np.array_equal(w.x[1::2], single.x) and np.array_equal(w.y[1::2], single.y)


def test_make_panel_windows_multiindex_frame_and_errors():
    bars = make_bars(40)
    frame = pd.concat({"A": bars, "B": bars * 2}, axis=1)
    w = make_panel_windows(frame, 4, 1, target="close")
    assert w.assets == ("A", "B") and w.columns == tuple(bars.columns)
    assert_values_close(w.y[1::2], 2 * w.y[::2], rtol=1e-6)
    with pytest.raises(DataError, match="asset 'B': too short"):
        make_panel_windows({"A": np.ones(20), "B": np.ones(4)}, 3, 2)
    with pytest.raises(DataError, match="differ in length"):
        make_panel_windows({"A": np.ones(20), "B": np.ones(21)}, 3, 2)
    with pytest.raises(DataError, match="asset 'B': NaN at row 3"):
        make_panel_windows({"A": np.ones(20), "B": np.r_[np.ones(3), np.nan, np.ones(16)]}, 3, 2)


def test_split_by_time_panel_splits_every_asset_at_the_same_bar():
    panel = {name: _panel(200, c=1, seed=k) for k, name in enumerate("ABC")}
    w = make_panel_windows(panel, 8, 3)
    train, val, test = split_by_time(w, val=0.1, test=0.2)
    for part in (train, val, test):
        counts = np.unique(part.end, return_counts=True)[1]
        assert (counts == 3).all()  # never part of a bar's assets in one set, part in another
    assert train.end.max() + 3 < val.end.min() - 8 + 1
    assert val.end.max() + 3 < test.end.min() - 8 + 1
    bars = training_bars(train)
    assert bars.shape == (3 * (train.end.max() + 1), 1)


# ------------------------------------------------------------------------------ splits


@pytest.mark.parametrize(("input_size", "horizon", "step"), [(5, 3, 1), (8, 1, 2), (2, 6, 3)])
def test_split_by_time_no_target_overlaps_a_later_input(input_size, horizon, step):
    w = make_windows(np.arange(400.0), input_size, horizon, step=step)
    train, val, test = split_by_time(w, val=0.15, test=0.2)
    assert len(train) and len(val) and len(test)
    assert len(train) + len(val) + len(test) < len(w)  # some windows were purged
    for early, late in ((train, val), (val, test), (train, test)):
        last_target_bar = early.end.max() + horizon
        first_input_bar = late.end.min() - input_size + 1
        assert last_target_bar < first_input_bar
        assert early.end.max() < late.end.min()
    # the purge is tight: one window more in train would overlap
    assert train.end.max() + step + horizon >= val.end.min() - input_size + 1
    # the test set is exactly the newest windows
    assert np.array_equal(test.end, w.end[-len(test) :])


def test_split_by_time_without_validation_purges_before_test():
    w = make_windows(np.arange(100.0), 10, 5)
    train, val, test = split_by_time(w, val=0.0, test=0.3)
    assert len(val) == 0
    assert train.end.max() + 5 < test.end.min() - 10 + 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"val": 0.5, "test": 0.5}, ConfigError, "val \\+ test must be < 1"),
        ({"val": -0.1}, ConfigError, r"val must be in \[0, 1\), got -0.1"),
        ({"test": 1.0}, ConfigError, r"test must be in \[0, 1\), got 1.0"),
        ({"val": "0.1"}, CelerisTypeError, "val must be a real number in"),
    ],
)
def test_split_by_time_bad_fractions_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        split_by_time(make_windows(np.arange(100.0), 5, 2), **kwargs)


def test_split_by_time_too_few_windows_raises_data_error():
    with pytest.raises(DataError, match="no train windows left after purging"):
        split_by_time(make_windows(np.arange(30.0), 8, 4), val=0.2, test=0.3)


# ------------------------------------------------------------------------------ scalers


def test_training_bars_are_distinct_input_bars_in_order():
    values = _panel(150)
    train, _, _ = split_by_time(make_windows(values, 7, 3), val=0.1, test=0.2)
    bars = training_bars(train)
    assert_values_close(bars, values[: train.end.max() + 1].astype(np.float32))


@pytest.mark.parametrize("cls", [StandardScaler, RobustScaler])
def test_scaler_fitted_on_train_slice_only(cls):
    values = _panel(300)
    values[200:] += 50.0  # a regime the training split must not see
    train, _, _ = split_by_time(make_windows(values, 10, 5), val=0.1, test=0.2)
    scaler = cls().fit(training_bars(train))
    part = values[: train.end.max() + 1].astype(np.float32).astype(np.float64)
    if cls is StandardScaler:
        center, scale = part.mean(axis=0), part.std(axis=0)
    else:
        q25, center, q75 = np.percentile(part, [25, 50, 75], axis=0)
        scale = q75 - q25
    assert_values_close(scaler.center, center, rtol=1e-12)
    assert_values_close(scaler.scale, scale, rtol=1e-12)
    full = cls().fit(values)
    assert not np.allclose(full.center, scaler.center)  # the test data would have moved it


@pytest.mark.parametrize("kind", ["standard", "robust", "identity"])
def test_scaler_inverse_transform_round_trips_target(kind):
    values = _panel(100) * 3.0 + 7.0
    scaler = make_scaler(kind, target=1).fit(values)
    w = make_windows(values, 5, 3, target=1)
    scaled_x = scaler.transform(w.x)
    assert scaled_x.shape == w.x.shape
    # the target channel of x and y scale the same way
    assert_values_close(
        scaled_x[:, :, 1], scaler.transform_target(w.x[:, :, 1]), rtol=1e-5, atol=1e-6
    )
    assert_values_close(
        scaler.inverse_transform(scaler.transform_target(w.y)), w.y, rtol=1e-5, atol=1e-5
    )
    t = torch.from_numpy(np.array(w.x))
    assert_values_close(scaler.transform(t).numpy(), scaled_x, rtol=1e-5, atol=1e-6)


def test_standard_scaler_standardises_training_data():
    values = _panel(500)
    scaled = StandardScaler().fit(values).transform(values)
    assert_values_close(scaled.mean(axis=0), np.zeros(3), atol=1e-10)
    assert_values_close(scaled.std(axis=0), np.ones(3), rtol=1e-10)


@pytest.mark.parametrize("kind", ["standard", "robust", "identity"])
def test_scaler_state_round_trip(kind):
    scaler = make_scaler(kind, target=2).fit(_panel(50))
    again = Scaler.from_state(scaler.state())
    assert type(again) is type(scaler) and again.target == 2
    assert_values_close(again.center, scaler.center)
    assert_values_close(again.scale, scaler.scale)


def test_scaler_constant_channel_is_left_unscaled():
    values = np.c_[np.arange(10.0), np.full(10, 4.0)]
    scaler = StandardScaler().fit(values)
    assert scaler.scale[1] == 1.0
    assert_values_close(scaler.transform(values)[:, 1], np.zeros(10))


def test_scaler_errors_are_clear():
    with pytest.raises(ConfigError, match="not fitted"):
        StandardScaler().transform(np.ones((3, 1)))
    with pytest.raises(DataError, match="NaN at row 1"):
        RobustScaler().fit(np.r_[1.0, np.nan])
    with pytest.raises(DataError, match="fitted on 3 channel"):
        StandardScaler().fit(_panel(10)).transform(np.ones((4, 2)))
    with pytest.raises(ConfigError, match="did you mean 'robust'"):
        make_scaler("robst")
    with pytest.raises(DataError, match="unknown scaler type"):
        Scaler.from_state({"type": "minmax"})
    assert isinstance(make_scaler("identity"), IdentityScaler)


@pytest.mark.parametrize("kind", ["standard", "robust"])
def test_window_scaler_normalises_each_window_by_its_own_inputs(kind):
    x = np.random.default_rng(0).normal(size=(4, 16, 2)).astype(np.float32) * 5 + 3
    scaler = WindowScaler(kind)
    xs, loc, scale = scaler.transform(x)
    assert loc.shape == scale.shape == (4, 1, 2)
    center = np.median(xs, axis=1) if kind == "robust" else xs.mean(axis=1)
    assert_values_close(center, np.zeros((4, 2)), atol=1e-5)
    # the statistics of window 0 do not depend on window 1
    x2 = x.copy()
    x2[1] *= 10
    assert_values_close(scaler.transform(x2)[1][0], loc[0])
    forecast = xs[:, -3:, 0]
    assert_values_close(
        scaler.inverse_transform(forecast, loc, scale), x[:, -3:, 0], rtol=1e-5, atol=1e-5
    )
    assert Scaler.from_state(scaler.state()).kind == kind


# ------------------------------------------------------------------------------ features


def test_feature_frame_default_features_are_past_only():
    bars = make_bars(120)
    full = feature_frame(bars)
    assert list(full.columns) == ["log_return", "rsi_14", "zscore_20", "atr_14"]
    assert np.isfinite(full.to_numpy()).all()
    cut = 80
    head = feature_frame(bars.iloc[:cut])
    # values computed on bars[:cut] equal those computed with the future present
    pd.testing.assert_frame_equal(head, full.loc[: bars.index[cut - 1]], rtol=1e-12)


def test_feature_frame_definitions_match_documented_formulas():
    from celeris import indicators

    bars = make_bars(60)
    f = feature_frame(bars, ("close", "log_return", "rsi_5", "atr_3", "sma_4"), drop_warmup=False)
    close = bars["close"]
    assert_values_close(f["close"], close)
    assert_values_close(f["log_return"], np.log(close / close.shift(1)), rtol=1e-12)
    assert_values_close(f["rsi_5"], (indicators.rsi(close, 5) - 50) / 50, rtol=1e-12)
    assert_values_close(f["atr_3"], indicators.atr(bars, window=3) / close, rtol=1e-12)
    assert_values_close(f["sma_4"], np.log(close / close.rolling(4).mean()), rtol=1e-9)


def test_feature_frame_drops_only_warmup_rows():
    bars = make_bars(60)
    f = feature_frame(bars, ("log_return", "zscore_20"))
    assert f.index[0] == bars.index[19]  # zscore_20 warms up over 19 bars
    assert len(feature_frame(bars, ("log_return",), drop_warmup=False)) == 60


@pytest.mark.parametrize(
    ("features", "error", "match"),
    [
        (("rsi_14", "rsx_14"), ConfigError, "unknown feature 'rsx_14'.*did you mean 'rsi_14'"),
        (("rsi",), ConfigError, "needs a window"),
        (("log_return", "log_return"), ConfigError, "repeated"),
        ((), ConfigError, "empty"),
    ],
)
def test_feature_frame_bad_names_raise(features, error, match):
    with pytest.raises(error, match=match):
        feature_frame(make_bars(40), features)


def test_feature_frame_missing_columns_raise():
    with pytest.raises(DataError, match="high, low"):
        feature_frame(make_bars(40)[["close"]], ("atr_14",))
