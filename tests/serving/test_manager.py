"""celeris.serving.manager pieces that need no server: the symbol table and a model's spec."""

from __future__ import annotations

import types

import pytest

from celeris.errors import CelerisTypeError, ConfigError
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
        meta={"target_kind": "log_return", "features": ["close", "volume"]},
    )
    assert model_spec("btc", 7, predictor) == ModelSpec(
        "btc", 7, 16, 2, 4, "log_return", ("close", "volume"), "onnx"
    )
    assert model_spec("btc", "production", predictor).version == 0  # a stage is no number
