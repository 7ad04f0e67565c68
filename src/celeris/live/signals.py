"""Where the live loop's signals come from: a rule strategy or a model, on the bars so far.

A signal source turns the loop's bar history into signal bits (``risk.ENTRY``/``risk.EXIT``)
for the newest ``k`` bars of every symbol. Both sources run the code the backtest runs:

* :class:`RuleSignals`: a registered strategy's ``prepare``/``signals`` (what ``celeris
  backtest --strategy`` runs), on each symbol's history. With the whole history (a replay) the
  bits equal the backtest's; with a bounded history (``--history``) recursive indicators (EMA,
  Wilder's RSI) start later than in a backtest over all bars and may differ in the last digits;
* :class:`ModelSignals`: a checkpoint's own :class:`~celeris.models.features.FeatureSpec` (the
  function its training inputs came from) on the bars, its predictor, and the threshold rule of
  :func:`celeris.models.signals.signals_from_forecast` on the expected return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from celeris.errors import ConfigError
from celeris.live.risk import ENTRY, EXIT

__all__ = ["ModelSignals", "RuleSignals", "SignalBatch", "SignalSource"]

_FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class SignalBatch:
    """Signals of the newest ``k`` bars: bits ``(k, n_symbols)`` and, from a model, the
    confidence ``(k, n_symbols)`` and forecasts ``(k, n_symbols, horizon)``."""

    bits: np.ndarray
    confidence: np.ndarray
    forecasts: np.ndarray | None = None
    model_version: int = 0


class SignalSource(Protocol):
    #: bars of history the source needs before its first signal
    warmup: int
    #: a short description for logs and the journal
    describe: dict[str, Any]

    def compute(
        self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC"
    ) -> SignalBatch: ...


def _frame(times: np.ndarray, ohlcv: np.ndarray, a: int, tz: Any) -> pd.DataFrame:
    index = pd.DatetimeIndex(times, tz="UTC", name="time").tz_convert(tz)
    return pd.DataFrame(ohlcv[:, :, a], index=index, columns=list(_FIELDS))


class RuleSignals:
    """Entries and exits of a registered strategy with one parameter set."""

    def __init__(self, strategy: str, params: Mapping[str, Any] | None = None) -> None:
        from celeris.backtest.strategies import get_strategy

        self.strategy = get_strategy(strategy)
        self.combos = self.strategy.grid({k: [v] for k, v in (params or {}).items()})
        if len(self.combos) != 1:
            raise ConfigError("a live strategy takes exactly one value per parameter")
        self.params = {k: self.combos[k].iloc[0].item() for k in self.combos.columns}
        self.warmup = int(self.strategy.max_warmup(self.combos)) + 1
        self.describe = {"strategy": self.strategy.name, "params": self.params}

    def compute(self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC") -> SignalBatch:
        n_sym = ohlcv.shape[2]
        bits = np.zeros((k, n_sym), dtype=np.int64)
        for a in range(n_sym):
            entries, exits = self.strategy.prepare(_frame(times, ohlcv, a, tz), self.combos)(
                slice(0, 1)
            )
            bits[:, a] = np.where(entries[-k:, 0], ENTRY, 0) | np.where(exits[-k:, 0], EXIT, 0)
        return SignalBatch(bits, np.ones((k, n_sym)))


class ModelSignals:
    """A checkpoint's forecast turned into entries and exits (see the module docstring).

    ``threshold`` is on the expected return over the horizon (as
    :func:`celeris.models.signals.signals_from_forecast` takes it): entry above it, exit below
    its negative. The confidence is ``|expected| / threshold`` (``|expected|`` with a zero
    threshold) clipped to [0, 1].
    """

    def __init__(self, predictor: Any, *, threshold: float = 0.0, model_version: int = 0) -> None:
        from celeris.models.features import spec_of

        self.predictor = predictor
        self.spec = spec_of(predictor.meta)
        self.input_size = int(predictor.input_size)
        self.threshold = float(threshold)
        self.model_version = int(model_version)
        self.target_kind = str(predictor.meta.get("target_kind", "return"))
        self.warmup = int(self.spec.lookback) + self.input_size
        self.describe = {
            "model": str(predictor.meta.get("source", "")),
            "features": list(self.spec.features),
            "threshold": self.threshold,
        }

    def compute(self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC") -> SignalBatch:
        n_sym = ohlcv.shape[2]
        bits = np.zeros((k, n_sym), dtype=np.int64)
        confidence = np.zeros((k, n_sym))
        horizon = int(self.predictor.horizon)
        forecasts = np.zeros((k, n_sym, horizon))
        n = times.shape[0]
        for j in range(k):  # bar n - k + j, from the bars up to it
            end = n - k + j + 1
            if end < self.warmup:
                continue
            # [n_symbols, T, 5] in BAR_FIELDS order (open, high, low, close, volume)
            windows = self.spec.last_windows(ohlcv[:end].transpose(2, 0, 1), self.input_size)
            fc = np.asarray(self.predictor.predict(windows), dtype=np.float64).reshape(n_sym, -1)
            forecasts[j] = fc[:, :horizon]
            last = ohlcv[end - 1, 3]
            level = self.target_kind == "level"
            expected = fc[:, -1] / last - 1.0 if level else fc.sum(axis=1)
            bits[j] = np.where(expected > self.threshold, ENTRY, 0) | np.where(
                expected < -self.threshold, EXIT, 0
            )
            scale = self.threshold if self.threshold > 0 else 1.0
            confidence[j] = np.clip(np.abs(expected) / scale, 0.0, 1.0)
        return SignalBatch(bits, confidence, forecasts, self.model_version)
