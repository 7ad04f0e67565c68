"""FeatureSpec: the one function from bars to model inputs, its fast path, its storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models.data import FEATURES, feature_frame
from celeris.models.features import (
    BAR_FIELDS,
    FEATURE_SPEC_VERSION,
    FeatureSpec,
    feature_lookback,
    recorded_spec,
    reference_of,
    spec_of,
)

#: A window for each windowed feature (all different, so a mix-up shows).
_WINDOWS = {"rsi": 5, "zscore": 7, "atr": 6, "sma": 4, "ema": 9, "volatility": 8}
#: Every feature name of celeris.models.data.FEATURES, the windowed ones with a window.
EVERY_OPTION = tuple(
    f"{name}_{_WINDOWS[name]}" if takes_window else name
    for name, (takes_window, _, _) in FEATURES.items()
)
#: Window edge cases: 1 (where defined), above the exact-variance limit, long recursions.
EDGE_OPTIONS = (
    "rsi_1",
    "atr_1",
    "sma_1",
    "ema_1",
    "volatility_1",
    "zscore_2",
    "zscore_40",
    "volatility_30",
    "rsi_50",
    "ema_60",
)


def make_bars(n: int, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """A random-walk bar frame of ``n`` one-minute bars (positive prices and volumes)."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    spread = np.abs(rng.normal(0.0, 0.004, n))
    index = pd.date_range(start, periods=n, freq="1min", tz="UTC", name="time")
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + spread),
            "low": np.minimum(open_, close) * (1 - spread),
            "close": close,
            "volume": rng.uniform(1.0, 100.0, n),
        },
        index=index,
    )


@pytest.fixture(scope="module")
def ragged() -> dict[str, pd.DataFrame]:
    """Eight symbols with histories of different lengths (the fast path pads them)."""
    return {f"S{i}": make_bars(130 + 17 * i, seed=i) for i in range(8)}


def test_every_option_covers_every_feature_name():
    from celeris.models.data import _parse_feature

    assert [_parse_feature(f)[0] for f in EVERY_OPTION] == list(FEATURES)
    for option in EVERY_OPTION:
        FeatureSpec((option,))  # every one is computable


@pytest.mark.parametrize("option", EVERY_OPTION + EDGE_OPTIONS)
def test_last_windows_every_feature_option_equals_inputs_bit_for_bit(option, ragged):
    spec = FeatureSpec(("close", option) if option != "close" else ("close",))
    length = 40
    fast = spec.last_windows(ragged, length)
    assert fast.shape == (len(ragged), length, len(spec.features)) and fast.dtype == np.float64
    for row, bars in zip(fast, ragged.values(), strict=True):
        slow = spec.inputs(bars).to_numpy()[-length:]
        np.testing.assert_array_equal(row, slow)  # exact: NaN-free, so equality is bitwise
        assert row.tobytes() == slow.tobytes()
    # the same from columns {field: array} and from the [n, T, 5] array form (equal lengths)
    columns = {s: {f: b[f].to_numpy() for f in BAR_FIELDS} for s, b in ragged.items()}
    assert spec.last_windows(columns, length).tobytes() == fast.tobytes()
    cut = min(len(b) for b in ragged.values())
    same = np.stack([b[list(BAR_FIELDS)].to_numpy()[-cut:] for b in ragged.values()])
    by_array = spec.last_windows(same, length)
    for row, bars in zip(by_array, ragged.values(), strict=True):
        assert row.tobytes() == spec.inputs(bars.iloc[-cut:]).to_numpy()[-length:].tobytes()
    # the live loop's [T, 5, A] history (C order), transposed: read in place, the same windows
    live = np.ascontiguousarray(same.transpose(1, 2, 0)).transpose(2, 0, 1)
    assert spec.last_windows(live, length).tobytes() == by_array.tobytes()


def test_last_windows_default_cnn_lstm_features_with_all_at_once(ragged):
    from celeris.models.pipeline import DEFAULT_FEATURES

    spec = FeatureSpec(EVERY_OPTION[3:] + DEFAULT_FEATURES["cnn_lstm"][1:])
    fast = spec.last_windows(ragged, 64)
    for row, bars in zip(fast, ragged.values(), strict=True):
        assert row.tobytes() == spec.inputs(bars).to_numpy()[-64:].tobytes()


@pytest.mark.parametrize("option", EVERY_OPTION + EDGE_OPTIONS)
def test_lookback_is_the_warmup_inputs_drop(option):
    bars = make_bars(150, seed=3)
    spec = FeatureSpec((option,))
    assert len(bars) - len(spec.inputs(bars)) == spec.lookback == feature_lookback(option)
    assert spec.bars_needed(10) == spec.lookback + 10
    # exactly lookback + input_size bars give one full window, one fewer is refused
    got = spec.last_windows({"X": bars.iloc[-(spec.lookback + 10) :]}, 10)
    assert np.isfinite(got).all()
    with pytest.raises(DataError, match=rf"'X' has {spec.lookback + 9} bar.*need at least"):
        spec.last_windows({"X": bars.iloc[-(spec.lookback + 9) :]}, 10)


def test_inputs_is_feature_frame_with_warmup_dropped():
    bars = make_bars(100, seed=1)
    spec = FeatureSpec(("log_return", "rsi_14", "zscore_20", "atr_14", "volatility_20"))
    pd.testing.assert_frame_equal(spec.inputs(bars), feature_frame(bars, spec.features))
    assert spec.fields == ("high", "low", "close") and spec.target == "log_return"


def test_last_windows_recursive_indicator_depends_on_where_history_starts():
    # Why docs/models.md says: send the history the training saw, not just `lookback` bars.
    bars = make_bars(300, seed=2)
    spec = FeatureSpec(("ema_10",))
    full = spec.last_windows({"X": bars}, 5)
    short = spec.last_windows({"X": bars.iloc[-spec.bars_needed(5) :]}, 5)
    assert np.abs(full - short).max() > 1e-3  # seeded 14 bars back: visibly different
    longer = spec.last_windows({"X": bars.iloc[-150:]}, 5)
    assert 0 < np.abs(full - longer).max() < 1e-9  # 150 bars back: forgotten, not bit-equal


@pytest.fixture(scope="module")
def long_bars() -> dict[str, pd.DataFrame]:
    """Three symbols of 1,300 bars: longer than every option's settled history."""
    return {f"L{i}": make_bars(1_300, seed=20 + i) for i in range(3)}


def test_feature_settle_is_where_the_start_weighs_below_float64_resolution():
    from celeris.models.features import SETTLE_BITS, feature_settle

    decays = {"rsi_14": 13 / 14, "atr_14": 13 / 14, "ema_50": 49 / 51, "rsi_5": 4 / 5}
    for name, d in decays.items():
        n = feature_settle(name)
        assert d**n < 2.0**-SETTLE_BITS <= d ** (n - 1), name
    assert feature_settle("rsi_14") == 496
    for name in ("rsi_1", "atr_1", "ema_1", "sma_50", "zscore_20", "volatility_20", "close"):
        assert feature_settle(name) == 0, name
    spec = FeatureSpec(("log_return", "rsi_14", "zscore_20", "atr_14", "volatility_20"))
    assert spec.bars_settled(32) == 14 + 496 + 32


@pytest.mark.parametrize("option", EVERY_OPTION + EDGE_OPTIONS)
def test_last_windows_bounded_each_feature_equals_inputs_of_its_own_bars(option, long_bars):
    from celeris.models.features import feature_settle

    spec = FeatureSpec(("log_return", option) if option != "log_return" else (option,))
    length = 20
    bounded = spec.last_windows(long_bars, length, bounded=True)
    full = spec.last_windows(long_bars, length)
    layout = np.stack([b[list(BAR_FIELDS)].to_numpy() for b in long_bars.values()], axis=2)
    # the live loop's [T, 5, A] history, transposed (read in place, or copied when not in
    # C order): the same windows
    for history in (layout, np.ascontiguousarray(layout)):
        got = spec.last_windows(history.transpose(2, 0, 1), length, bounded=True)
        assert got.tobytes() == bounded.tobytes()
    for c, name in enumerate(spec.features):
        n_c = feature_lookback(name) + feature_settle(name) + length
        assert spec.bars_settled(length) >= n_c
        for a, bars in enumerate(long_bars.values()):
            alone = FeatureSpec((name,)).inputs(bars.iloc[-n_c:]).to_numpy()[-length:, 0]
            assert bounded[a, :, c].tobytes() == alone.tobytes(), (name, a)
    # over every bar: the same values but for the last digits
    scale = np.abs(full).max(axis=(0, 1))
    assert (np.abs(bounded - full) <= 1e-12 * scale).all()


def test_last_windows_bounded_with_fewer_bars_than_settled_reads_them_all(ragged):
    spec = FeatureSpec(("log_return", "rsi_14", "atr_14", "ema_20"))  # all recursive
    assert all(len(b) < spec.bars_settled(16) for b in ragged.values())
    assert spec.last_windows(ragged, 16, bounded=True).tobytes() == (
        spec.last_windows(ragged, 16).tobytes()
    )


def test_recursive_kernels_across_symbols_equal_the_column_kernels_bit_for_bit():
    # a block without NaN runs RSI/ATR/EMA across the symbols; one NaN anywhere in the block
    # sends every symbol through the column kernels of celeris.indicators.nb
    from celeris.indicators.nb import atr_nb, ema_nb, rsi_nb
    from celeris.models import features_nb

    bars = [make_bars(400, seed=30 + i) for i in range(5)]
    close, high, low = (np.stack([b[f].to_numpy() for b in bars], axis=1) for f in
                        ("close", "high", "low"))  # fmt: skip
    kinds = np.array([features_nb.RSI, features_nb.ATR, features_nb.EMA] * 2, dtype=np.int64)
    windows = np.array([14, 14, 30, 3, 1, 7], dtype=np.int64)
    length = 50
    empty = np.empty((0, 5))
    fields = np.array([0, 1, 2], dtype=np.int64)  # high, low, close in the [T, 3, A] bars
    for s0 in (0, 37):
        starts = np.full(6, s0, dtype=np.int64)
        across = features_nb.last_indicators_nb(
            kinds, windows, starts, np.stack([high, low, close], axis=1), fields, empty,
            np.empty((6, length, 5)),
        )  # fmt: skip
        for nan_at in (slice(0, s0 + 1), slice(200, 201), slice(399, 400)):
            padded = close.copy()
            padded[nan_at, 4] = np.nan  # a NaN in symbol 4: the column kernels for all
            by_column = features_nb.last_indicators_nb(
                kinds, windows, starts, np.stack([high, low, padded], axis=1), fields, empty,
                np.empty((6, length, 5)),
            )  # fmt: skip
            assert across[:, :, :4].tobytes() == by_column[:, :, :4].tobytes()
            for j, w in enumerate(windows):  # and symbol 4's is what the indicators give it
                c = padded[s0:, 4]
                one = np.array([w])
                if kinds[j] == features_nb.RSI:
                    ref = rsi_nb(c, one)[:, 0]
                elif kinds[j] == features_nb.ATR:
                    ref = atr_nb(high[s0:, 4], low[s0:, 4], c, one)[:, 0]
                else:
                    ref = ema_nb(c, one)[:, 0]
                assert by_column[j, :, 4].tobytes() == ref[-length:].tobytes()
        for a in range(4):
            c, h, lw = close[s0:, a], high[s0:, a], low[s0:, a]
            for j, (kind, w) in enumerate(zip(kinds, windows, strict=True)):
                one = np.array([w])
                if kind == features_nb.RSI:
                    ref = rsi_nb(c, one)[:, 0]
                elif kind == features_nb.ATR:
                    ref = atr_nb(h, lw, c, one)[:, 0]
                else:
                    ref = ema_nb(c, one)[:, 0]
                assert across[j, :, a].tobytes() == ref[-length:].tobytes(), (kind, w, s0)


def test_last_windows_non_finite_window_names_symbol_feature_and_bar():
    bars = make_bars(60, seed=4)
    bars.iloc[-3, bars.columns.get_loc("volume")] = 0.0  # log(0) = -inf
    spec = FeatureSpec(("close", "log_volume"))
    with pytest.raises(DataError, match=r"symbol 'B': feature 'log_volume' is -inf at bar 57"):
        spec.last_windows({"A": make_bars(60, seed=5), "B": bars}, 10)
    bars.iloc[-30, bars.columns.get_loc("close")] = np.nan  # a gap poisons what follows
    with pytest.raises(DataError, match=r"symbol 'B': feature 'close' is nan"):
        spec.last_windows({"B": bars}, 40)


def test_last_windows_bad_arguments_raise_named_errors():
    spec = FeatureSpec(("atr_3",))
    with pytest.raises(CelerisTypeError, match="mapping"):
        spec.last_windows([1, 2, 3], 5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"\[n_symbols, T, 5\]"):
        spec.last_windows(np.ones((2, 10, 4)), 5)
    with pytest.raises(DataError, match=r"lack the field.*high, low"):
        spec.last_windows({"A": {"close": np.ones(10)}}, 5)
    with pytest.raises(DataError, match="differ in length"):
        spec.last_windows({"A": {"close": np.ones(10), "high": np.ones(9), "low": np.ones(10)}}, 5)
    with pytest.raises(DataError, match="no symbols"):
        spec.last_windows({}, 5)
    with pytest.raises(ConfigError, match="input_size"):
        spec.last_windows({"A": make_bars(20, 0)}, 0)
    labelled = make_bars(20, 0).assign(symbol="A")  # a text column beside the bars: ignored
    assert (
        spec.last_windows({"A": labelled}, 5).tobytes()
        == spec.last_windows({"A": make_bars(20, 0)}, 5).tobytes()
    )
    with pytest.raises(DataError, match="'A': close must be numeric"):
        spec.last_windows({"A": labelled.assign(close="x")}, 5)


# -- the spec itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "match"),
    [
        (("close", "rsi"), "needs a window"),
        (("close", "rsii_14"), r"unknown feature 'rsii_14'.*did you mean.*cannot compute"),
        (("close", "close"), "repeated"),
        ((), "empty"),
        ("close", "list of names"),
        (("zscore_1",), "zscore_1.*NaN on every bar"),
    ],
)
def test_feature_spec_refuses_what_it_cannot_compute(features, match):
    with pytest.raises(ConfigError, match=match):
        FeatureSpec(features)


def test_to_dict_from_dict_round_trip_keeps_reference_through_json():
    values = make_bars(200, 0)
    spec = FeatureSpec(("log_return", "rsi_14"))
    spec = spec.with_reference(spec.inputs(values).to_numpy())
    d = json.loads(json.dumps(spec.to_dict(), allow_nan=False))
    assert d["version"] == FEATURE_SPEC_VERSION and d["lookback"] == 14
    back = FeatureSpec.from_dict(d)
    assert back == spec and back.reference == spec.reference and hash(back) == hash(spec)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"version": 2, "features": ["close"]}, r"feature spec version 2 is not one this Celeris"),
        ({"version": 0, "features": ["close"]}, r"version 0 .*older"),
        ({"version": "1", "features": ["close"]}, "version must be an integer"),
        ({"features": ["close"]}, "no version"),
        ({"version": 1, "features": ["close", "macd_12"]}, r"unknown feature 'macd_12'"),
        ({"version": 1, "features": ["close"], "scaling": "x"}, r"unknown key 'scaling'"),
        ({"version": 1}, "no features"),
        ({"version": 1, "features": ["rsi_14"], "lookback": 13}, "lookback of 13.*computes 14"),
        ({"version": 1, "features": ["close"], "reference": {"bins": {}}}, "reference"),
        ([1], "is an object"),
    ],
)
def test_from_dict_refuses_unknown_version_feature_or_shape_naming_it(doc, match):
    with pytest.raises(ConfigError, match=match):
        FeatureSpec.from_dict(doc)  # type: ignore[arg-type]


def test_reference_of_inner_decile_edges_and_bin_fractions():
    values = np.arange(1000, dtype=np.float64)[:, None]
    ref = reference_of(values, ("x",))
    np.testing.assert_allclose(ref["bins"]["x"], np.quantile(values, np.arange(1, 10) / 10))
    np.testing.assert_allclose(ref["fractions"]["x"], [0.1] * 10)
    # bins are (-inf, e1], (e1, e2], ..., (e9, inf): a value equal to an edge falls below it
    discrete = reference_of(np.array([0.0] * 50 + [1.0] * 50), ("d",))
    assert discrete["fractions"]["d"][0] == 0.5 and sum(discrete["fractions"]["d"]) == 1.0
    unnormalised = {"bins": {"close": ref["bins"]["x"]}, "fractions": {"close": [0.5] * 10}}
    with pytest.raises(ConfigError, match="sum to 1"):
        FeatureSpec(("close",), reference=unnormalised)
    with pytest.raises(DataError, match="non-finite"):
        reference_of(np.array([[1.0], [np.nan]]), ("x",))


def test_spec_of_reads_new_and_old_checkpoint_meta():
    spec = FeatureSpec(("log_return", "atr_14"))
    assert spec_of({"feature_spec": spec.to_dict(), "features": list(spec.features)}) == spec
    assert spec_of({"features": ["log_return", "atr_14"]}) == spec  # written before specs
    with pytest.raises(DataError, match="inconsistent"):
        spec_of({"feature_spec": spec.to_dict(), "features": ["close"]})
    with pytest.raises(DataError, match="records no input features"):
        spec_of({"input_size": 3})
    assert recorded_spec({"input_size": 3}) is None  # windows-only models stay servable
    with pytest.raises(DataError, match=r"lists 2 feature.*takes 3"):
        recorded_spec({"features": ["log_return", "atr_14"]}, n_features=3)
    with pytest.raises(ConfigError, match="'volume'"):
        recorded_spec({"features": ["close", "volume"]})


def test_kernel_codes_match_the_kernel_module():
    from celeris.models import features_nb
    from celeris.models.features import _KERNEL_CODES

    assert _KERNEL_CODES == {
        "rsi": features_nb.RSI,
        "zscore": features_nb.ZSCORE,
        "atr": features_nb.ATR,
        "sma": features_nb.SMA,
        "ema": features_nb.EMA,
        "volatility": features_nb.VOLATILITY,
    }


# -- one code path: training, evaluation, forecasts ---------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """A tiny CNN+LSTM trained (2 steps) on every feature option; its checkpoint."""
    from celeris.models.catalogue import get_model
    from celeris.models.checkpoint import save_checkpoint
    from celeris.models.pipeline import fit_on_bars
    from celeris.models.train import TrainConfig

    bars = make_bars(400, seed=11)
    tiny = get_model("cnn_lstm").tiny_config(12, 2, len(EVERY_OPTION))
    fit = fit_on_bars(
        "cnn_lstm",
        bars,
        input_size=12,
        horizon=2,
        features=EVERY_OPTION,
        model_options=tiny,
        config=TrainConfig(max_steps=2, precision="fp32", progress=False),
    )
    path = save_checkpoint(
        fit.model, tmp_path_factory.mktemp("feat") / "ckpt", scaler=fit.scaler, meta=fit.meta
    )
    return bars, fit, path


def test_fit_on_bars_saves_the_spec_with_the_training_reference(fitted):
    from celeris.models.data import make_windows, split_by_time

    bars, fit, _ = fitted
    spec = spec_of(fit.meta)
    assert fit.meta["feature_spec"]["features"] == list(EVERY_OPTION) == fit.meta["features"]
    assert spec.lookback == fit.meta["feature_spec"]["lookback"] == 8  # ema_9, volatility_8
    # the reference is the distribution of the training windows' distinct input rows
    values = spec.inputs(bars)
    train, _, _ = split_by_time(make_windows(values, 12, 2), val=0.1, test=0.2)
    rows = values.to_numpy()[train.end[0] - 11 : train.end[-1] + 1]
    assert spec.reference == reference_of(rows, EVERY_OPTION)
    assert len(rows) == fit.meta["train_windows"] + 11


def test_every_consumer_computes_inputs_through_feature_spec(fitted, monkeypatch):
    import warnings

    from celeris.errors import CelerisWarning
    from celeris.models.pipeline import evaluate_checkpoint, expected_step_returns
    from celeris.models.predictor import Predictor

    _, _, path = fitted
    calls: list[int] = []
    inputs = FeatureSpec.inputs

    def counted(self, frame):
        calls.append(len(frame))
        return inputs(self, frame)

    monkeypatch.setattr(FeatureSpec, "inputs", counted)
    later = make_bars(300, seed=12, start="2025-01-01")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CelerisWarning)
        evaluate_checkpoint(path, later)
        assert calls == [300]
        pred = Predictor.load(path, backend="torch")
        expected_step_returns(pred, later, include_train=True)
        assert calls == [300, 300]
    from typer.testing import CliRunner

    from celeris.cli.main import app

    csv = Path(path).parent / "later.csv"
    later.to_csv(csv)
    result = CliRunner().invoke(
        app, ["forecast", str(path), "--data", str(csv), "--json", "--backend", "torch"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [300, 300, 300]
    # the forecast is the model on the spec's last window, scaled by the checkpoint's scaler
    window = pred.feature_spec.last_windows({"X": later}, 12)
    got = list(json.loads(result.stdout)["forecast"].values())
    np.testing.assert_allclose(got, pred.predict(window)[0], rtol=1e-6)


def test_checkpoint_with_only_a_feature_spec_evaluates(fitted, tmp_path):
    # A checkpoint whose meta holds the spec and no "features" list is read through spec_of
    # (evaluate_checkpoint read meta["features"] and raised KeyError).
    from celeris.models.checkpoint import load_checkpoint, save_checkpoint
    from celeris.models.pipeline import evaluate_checkpoint

    _, _, path = fitted
    ckpt = load_checkpoint(path)
    meta = {k: v for k, v in ckpt.meta.items() if k != "features"}
    other = save_checkpoint(ckpt.model, tmp_path / "spec-only", scaler=ckpt.scaler, meta=meta)
    report = evaluate_checkpoint(other, make_bars(300, seed=13, start="2025-01-01"))
    assert report.n_windows > 0
