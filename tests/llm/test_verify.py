"""The optimiser's guard is a frozen, strict configuration."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from celeris.errors import CelerisTypeError, ConfigError
from celeris.llm.verify import Guard


def test_guard_unknown_field_wrong_type_and_frozen() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown guard setting 'holdot' \(did you mean 'holdout'\?\)"
    ):
        Guard(holdot=0.2)  # type: ignore[call-arg]
    with pytest.raises(CelerisTypeError, match="windows"):
        Guard(windows=True)
    with pytest.raises(CelerisTypeError, match="windows"):
        Guard(windows=2.0)
    with pytest.raises(ConfigError, match="min_improvement"):
        Guard(min_improvement=math.inf)
    guard = Guard(holdout=0.25, windows=np.int64(4))
    assert guard.windows == 4 and guard == Guard(0.25, 4)
    assert guard.__dict__ == {  # what the optimiser's audit log records and replays
        "holdout": 0.25,
        "windows": 4,
        "dsr_threshold": 0.95,
        "min_improvement": 0.0,
        "min_trades": 5,
    }
    assert Guard(**guard.__dict__) == guard
    with pytest.raises(dataclasses.FrozenInstanceError):
        guard.windows = 5  # type: ignore[misc]
