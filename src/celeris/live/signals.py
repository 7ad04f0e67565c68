"""Where the live loop's signals come from: a rule strategy or a model, on the bars so far.

A signal source turns the loop's bar history into signal bits (``risk.ENTRY``/``risk.EXIT``)
for the newest ``k`` bars of every symbol. Both sources run the code the backtest runs:

* :class:`RuleSignals`: a registered strategy's ``prepare``/``signals`` (what ``celeris
  backtest --strategy`` runs), on each symbol's history. With the whole history (a replay) the
  bits equal the backtest's; with a bounded history (``--history``) recursive indicators (EMA,
  Wilder's RSI) start later than in a backtest over all bars and may differ in the last digits;
* :class:`ModelSignals`: a checkpoint's own :class:`~celeris.models.features.FeatureSpec` (the
  function its training inputs came from) on the bars, its predictor, and the threshold rule of
  :func:`celeris.models.signals.signals_from_forecast` on the expected return. The input rows
  of a step's ``k`` bars are computed once and each bar's window cut from them (a replay's
  block costs one pass over the history, not ``k``).
"""

from __future__ import annotations

from collections import deque
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
        make = self.strategy.panel  # every symbol in one compiled call, state kept per step
        self._panel = None if make is None else make(self.params)

    def compute(self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC") -> SignalBatch:
        n_sym = ohlcv.shape[2]
        if self._panel is not None:
            entries, exits = self._panel(times, ohlcv[:, 3, :].T, k)
            bits = np.where(entries, ENTRY, 0) | np.where(exits, EXIT, 0)
            return SignalBatch(bits.astype(np.int64), np.ones((k, n_sym)))
        bits = np.zeros((k, n_sym), dtype=np.int64)
        for a in range(n_sym):
            entries, exits = self.strategy.prepare(_frame(times, ohlcv, a, tz), self.combos)(
                slice(0, 1)
            )
            bits[:, a] = np.where(entries[-k:, 0], ENTRY, 0) | np.where(exits[-k:, 0], EXIT, 0)
        return SignalBatch(bits, np.ones((k, n_sym)))


class _Recorder:
    """Writes a model's predictions and outcomes to the outcome store on a thread of its own,
    in order, so that the bar-to-signal path never waits on SQLite. The queue is bounded: a
    store that falls far behind (a long replay) slows the loop down rather than losing rows."""

    def __init__(self, store: Any, max_pending: int = 4096) -> None:
        import queue
        import threading

        self.store = store
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="celeris-live-outcomes", daemon=True)
        self._thread.start()

    def put(self, kind: str, build: Any, *args: Any) -> None:
        self._queue.put((kind, build, args))

    def _run(self) -> None:
        import logging

        log = logging.getLogger("celeris.live")
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                kind, build, args = item
                if kind == "predictions":
                    self.store.record_predictions(build(*args))
                else:
                    self.store.record_outcomes(build(*args))
            except Exception as exc:  # counted and logged: the loop goes on
                self.failed += 1
                log.warning("outcome store: %s not recorded: %s", item[0], exc)
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until everything queued so far is written."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(10.0)


class ModelSignals:
    """A checkpoint's forecast turned into entries and exits (see the module docstring).

    ``threshold`` is on the expected return to ``step`` bars ahead (as ``celeris backtest
    --strategy model:DIR`` and :func:`celeris.models.signals.signals_from_forecast` take it):
    entry above it, exit below its negative. The confidence is ``|expected| / threshold``
    (``|expected|`` with a zero threshold) clipped to [0, 1].

    ``bounded=False`` (the default) computes the features over every bar the loop gives: a
    replay (the whole history) equals :func:`celeris.research.backtest_model` bit for bit.
    ``bounded=True`` is for live steps: each feature over only the bars its value needs to
    float64 resolution (``FeatureSpec.last_windows(..., bounded=True)``; 542 bars for the
    default cnn_lstm features with ``input_size=32`` instead of the live history's 1,000),
    equal to the unbounded values but for the last digits.

    With an ``outcomes`` store (:class:`celeris.serving.outcomes.OutcomeStore`) every
    prediction is recorded under the key ``"{run}:{symbol}:{bar time ns}"`` with its input
    window and its call (+1 above the threshold, -1 below its negative, else 0: what the A/B
    evaluation's paper P&L multiplies the realised return by), and once ``horizon`` more bars have closed its realised outcome: the target over
    those bars, computed by the model's own feature spec. :meth:`drift` compares the recent
    inputs with the training distribution (PSI per feature) and the realised error with the
    validation error.
    """

    def __init__(
        self,
        predictor: Any,
        *,
        threshold: float = 0.0,
        step: int = 1,
        model_version: int = 0,
        model_name: str = "model",
        outcomes: Any = None,
        run: str = "live",
        symbols: tuple[str, ...] = (),
        drift_window: int = 500,
        bounded: bool = False,
    ) -> None:
        from celeris.checks import check_int
        from celeris.models.features import spec_of

        self.predictor = predictor
        self.spec = spec_of(predictor.meta)
        self.input_size = int(predictor.input_size)
        self.horizon = int(predictor.horizon)
        self.step = check_int("step", step, minimum=1, maximum=self.horizon)
        self.threshold = float(threshold)
        self.model_version = int(model_version)
        self.model_name = model_name
        self.target_kind = str(predictor.meta.get("target_kind", "return"))
        self.warmup = int(self.spec.lookback) + self.input_size
        self.bounded = bool(bounded)
        self.outcomes = outcomes
        self.recorder = None if outcomes is None else _Recorder(outcomes)
        self.run = run
        self.symbols = tuple(symbols)
        self._predicted: set[int] = set()  # bar times with a recorded prediction
        self._recent: deque[np.ndarray] = deque(maxlen=drift_window)
        self.describe = {
            "model": model_name,
            "version": self.model_version,
            "features": list(self.spec.features),
            "threshold": self.threshold,
            "step": self.step,
        }

    def compute(self, times: np.ndarray, ohlcv: np.ndarray, k: int, tz: Any = "UTC") -> SignalBatch:
        from celeris.models.pipeline import step_return

        n_sym = ohlcv.shape[2]
        bits = np.zeros((k, n_sym), dtype=np.int64)
        confidence = np.zeros((k, n_sym))
        forecasts = np.zeros((k, n_sym, self.horizon))
        n = times.shape[0]
        bars = ohlcv.transpose(2, 0, 1)  # [n_symbols, T, 5] in BAR_FIELDS order
        size = self.input_size
        first = max(n - k, self.warmup - 1)  # the first of the k bars with a full window
        rows = None
        if first < n:
            # The input rows of every window of the step, computed once: [A, size + n-first-1, C].
            # A bar's indicators depend on the bars up to it only, so the window of bar b cut
            # from these rows is the one last_windows(bars[:, :b + 1]) gives, bit for bit
            # (unbounded: the same bars from the same first one).
            rows = self.spec.last_windows(bars, size + n - first - 1, bounded=self.bounded)
        for j in range(k):  # bar n - k + j, from the bars up to it
            end = n - k + j + 1
            windows = None
            if rows is not None and end > first:
                windows = rows[:, end - 1 - first : end - 1 - first + size]
            self._record_outcomes(times, bars, end, windows)
            if windows is None:
                continue
            fc = np.asarray(self.predictor.predict(windows), dtype=np.float64).reshape(n_sym, -1)
            forecasts[j] = fc
            expected = step_return(self.spec.target, fc, ohlcv[end - 1, 3], self.step)
            bits[j] = np.where(expected > self.threshold, ENTRY, 0) | np.where(
                expected < -self.threshold, EXIT, 0
            )
            scale = self.threshold if self.threshold > 0 else 1.0
            confidence[j] = np.clip(np.abs(expected) / scale, 0.0, 1.0)
            self._recent.append(windows[:, -1, :].copy())
            self._record_predictions(int(times[end - 1]), windows, fc, bits[j])
        return SignalBatch(bits, confidence, forecasts, self.model_version)

    def _key(self, symbol: int, ts: int) -> str:
        name = self.symbols[symbol] if symbol < len(self.symbols) else str(symbol)
        return f"{self.run}:{name}:{ts}"

    def _record_predictions(
        self, ts: int, windows: np.ndarray, fc: np.ndarray, bits: np.ndarray
    ) -> None:
        if self.recorder is None:
            return
        calls = np.where((bits & ENTRY) != 0, 1, np.where((bits & EXIT) != 0, -1, 0))
        self.recorder.put("predictions", self._predictions, ts, windows, fc, calls)
        self._predicted.add(ts)

    def _predictions(
        self, ts: int, windows: np.ndarray, fc: np.ndarray, calls: np.ndarray
    ) -> list[Any]:
        """The store's rows of one bar's predictions (built on the recorder's thread)."""
        from celeris.serving.outcomes import Prediction

        target_kind = "level" if self.spec.target in ("close", "log_close") else "return"
        return [
            Prediction.make(
                self._key(a, ts),
                model=self.model_name,
                version=self.model_version,
                symbol=self.symbols[a] if a < len(self.symbols) else str(a),
                ts=ts,
                horizon=self.horizon,
                forecast=fc[a].tolist(),
                signal=int(calls[a]),
                inputs=windows[a],
                target_kind=target_kind,
            )
            for a in range(fc.shape[0])
        ]

    def _record_outcomes(
        self, times: np.ndarray, bars: np.ndarray, end: int, windows: np.ndarray | None
    ) -> None:
        """The realised target of the prediction made ``horizon`` bars before bar ``end - 1``:
        the last ``horizon`` input rows' target column, by the model's own feature spec (the
        bar's input windows hold them when they are at least ``horizon`` rows long)."""
        if self.recorder is None or end - 1 - self.horizon < 0:
            return
        made = int(times[end - 1 - self.horizon])
        if made not in self._predicted:
            return
        self._predicted.discard(made)
        if windows is not None and self.input_size >= self.horizon:
            actual = windows[:, -self.horizon :, 0].copy()
        else:
            actual = self.spec.last_windows(bars[:, :end], self.horizon)[:, :, 0]
        self.recorder.put(
            "outcomes",
            lambda: {self._key(a, made): actual[a].tolist() for a in range(actual.shape[0])},
        )

    def flush(self) -> None:
        """Wait until the predictions and outcomes queued so far are in the store."""
        if self.recorder is not None:
            self.recorder.flush()

    def drift(self) -> dict[str, Any]:
        """PSI of each input feature over the recent bars against training, and the rolling
        realised error against the validation error (None where unknown)."""
        from celeris.models.drift import error_drift, psi_by_feature, validation_error

        out: dict[str, Any] = {"psi": {}, "error": None}
        if self.spec.reference is not None and self._recent:
            values = np.concatenate(list(self._recent), axis=0)
            out["psi"] = psi_by_feature(self.spec.reference, values, self.spec.features)
        if self.outcomes is not None:
            self.flush()
            joined = self.outcomes.joined(self.model_name, version=self.model_version)
            out["error"] = error_drift(
                joined["mae"].to_numpy(), validation_error(self.predictor.meta)
            )
        return out
