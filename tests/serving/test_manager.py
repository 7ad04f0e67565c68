"""celeris.serving.manager pieces that need no server: the symbol table and a model's spec."""

from __future__ import annotations

import types

import pytest

from celeris.errors import CelerisTypeError, ConfigError
from celeris.models.features import FeatureSpec
from celeris.serving.manager import ModelSpec, SymbolTable, model_spec


@pytest.mark.parametrize(("limit", "error"), [(2.5, CelerisTypeError), (True, CelerisTypeError)])
def test_symbol_table_limit_not_an_int_raises(limit: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="limit"):
        SymbolTable(["BTC-USD"], limit=limit)  # type: ignore[arg-type]  # was int(2.5) == 2


def test_symbol_table_limit_below_one_raises() -> None:
    with pytest.raises(ConfigError, match="limit"):
        SymbolTable(limit=0)


def test_model_spec_reads_shapes_and_checkpoint_features() -> None:
    predictor = types.SimpleNamespace(
        input_size=16,
        n_features=2,
        horizon=4,
        backend="onnx",
        meta={"target_kind": "log_return", "features": ["close", "log_volume"]},
    )
    spec = model_spec("btc", 7, predictor)
    assert spec == ModelSpec(
        "btc", 7, 16, 2, 4, "log_return", ("close", "log_volume"), "onnx",
        FeatureSpec(("close", "log_volume")),
    )  # fmt: skip
    assert spec.bars_needed == 16 and spec.to_dict()["feature_spec"] == {
        "version": 1, "features": ["close", "log_volume"], "lookback": 0
    }  # fmt: skip
    assert model_spec("btc", "production", predictor).version == 0  # a stage is no number


def test_model_spec_refuses_features_this_celeris_cannot_compute() -> None:
    # "volume" is no feature name (log_volume is): such a model's inputs cannot be computed.
    predictor = types.SimpleNamespace(
        input_size=16, n_features=2, horizon=4, meta={"features": ["close", "volume"]}
    )
    with pytest.raises(ConfigError, match="unknown feature 'volume'"):
        model_spec("btc", 7, predictor)
    windows_only = types.SimpleNamespace(input_size=16, n_features=2, horizon=4, meta={})
    assert model_spec("btc", 7, windows_only).feature_spec is None
