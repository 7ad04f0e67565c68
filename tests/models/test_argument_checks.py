"""Every forecasting model answers the same argument mistake with the same exception type.

The rule is celeris.checks': a wrong type (a float or bool where an int is wanted) is a
CelerisTypeError, a right-typed value out of range a ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from celeris.errors import CelerisTypeError, ConfigError
from celeris.models.cnn_lstm import CNNLSTM
from celeris.models.nhits import NHITS
from celeris.models.reservoir import EchoStateNetwork

# Each model built small, with its "hidden size" parameter named.
MODELS: dict[str, tuple[Callable[..., Any], str]] = {
    "nhits": (lambda **kw: NHITS(**{"input_size": 8, "horizon": 2, **kw}), "n_stacks"),
    "cnn_lstm": (
        lambda **kw: CNNLSTM(**{"n_features": 1, "input_size": 8, "horizon": 2, **kw}),
        "lstm_hidden",
    ),
    "reservoir": (
        lambda **kw: EchoStateNetwork(
            **{"n_features": 1, "input_size": 8, "horizon": 2, "washout": 1, **kw}
        ),
        "reservoir_size",
    ),
}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("value", [2.5, 2.0, True, "4", None])
def test_models_hidden_size_of_wrong_type_raise_celeris_type_error(model: str, value: Any) -> None:
    build, hidden = MODELS[model]
    with pytest.raises(CelerisTypeError, match=rf"^{hidden} must be an int >= 1, got "):
        build(**{hidden: value})
    with pytest.raises(CelerisTypeError, match=r"^horizon must be an int >= 1, got "):
        build(horizon=value)


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("value", [0, -3])
def test_models_hidden_size_out_of_range_raise_config_error(model: str, value: int) -> None:
    build, hidden = MODELS[model]
    with pytest.raises(ConfigError, match=rf"^{hidden} must be >= 1, got {value}$"):
        build(**{hidden: value})
    with pytest.raises(ConfigError, match=rf"^horizon must be >= 1, got {value}$"):
        build(horizon=value)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_models_numpy_integer_sizes_are_accepted_as_python_ints(model: str) -> None:
    build, hidden = MODELS[model]
    # 3 stacks is NHITS' default (its per-stack lists have 3 entries); 20 keeps W non-degenerate.
    net = build(horizon=np.int64(2), **{hidden: np.int32(3 if model == "nhits" else 20)})
    assert type(net.horizon) is int and net.horizon == 2
    assert type(net.config()["horizon"]) is int
