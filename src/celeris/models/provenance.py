"""Which bars a model was fitted on, identified by content, and where other data overlaps them.

A checkpoint written by :func:`~celeris.models.pipeline.train_on_bars` records its *training
bars* under ``meta["train_bars"]`` (see :func:`fingerprint_bars`): the bars from the first input
bar of the first training window to the last target bar of the last window that influenced the
weights (validation windows included: they chose the early-stopping step). It holds their time
range, count and spacing, a sha256 of their timestamps and OHLCV values, and the closes at up to
64 evenly spaced bars ("probes").

:func:`training_overlap` compares any bars with that record. The file name or path the data came
from plays no part: ``./syn.parquet``, ``syn.parquet`` and a CSV copy of the same bars are the
same data. Verdicts:

* ``none`` — no bar falls inside the training range;
* ``same`` — the bars inside the range are the training bars (equal sha256), or a part or a
  re-rounded copy of them (at least half of the probes they contain match to 1e-6);
* ``dates`` — they fall inside the range but their content could not be checked (no bars given,
  bars of another spacing, e.g. the training asset resampled, or too short an overlap to contain
  a probe); treated as in-sample, to be safe;
* ``different`` — same dates, different prices (another asset): out of sample for the model,
  reported so that the overlap in time is not a surprise;
* ``unknown`` — the checkpoint has no record of its training bars (written before they were
  recorded, or by :func:`~celeris.models.train.train` without one).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pandas as pd

from celeris.errors import CelerisTypeError, DataError

__all__ = [
    "OHLCV",
    "TRAIN_BARS_KEY",
    "TrainingOverlap",
    "fingerprint_bars",
    "no_record_message",
    "training_overlap",
]

TRAIN_BARS_KEY = "train_bars"
OHLCV = ("open", "high", "low", "close", "volume")
_VERSION = 1
_PROBES = 64
_PROBE_RTOL = 1e-6  # a CSV round trip keeps ~15 significant digits; another asset differs by %
IN_SAMPLE = frozenset({"same", "dates"})


def _columns(bars: pd.DataFrame) -> list[Any]:
    by_name = {str(c).lower(): c for c in bars.columns}
    present = [by_name[c] for c in OHLCV if c in by_name]
    if not any(str(c).lower() == "close" for c in present):
        raise DataError("bars have no 'close' column; cannot identify them")
    return present


def _time_ns(index: pd.Index, what: str) -> np.ndarray:
    if not isinstance(index, pd.DatetimeIndex):
        raise CelerisTypeError(
            f"{what} needs a DatetimeIndex to be matched with a model's training bars, "
            f"got {type(index).__name__}"
        )
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def _sha256(bars: pd.DataFrame, columns: list[Any]) -> str:
    h = hashlib.sha256(f"celeris-bars-v{_VERSION}:".encode())
    h.update(",".join(str(c).lower() for c in columns).encode())
    h.update(_time_ns(bars.index, "bars").tobytes())
    h.update(np.ascontiguousarray(bars[columns].to_numpy(dtype=np.float64)).tobytes())
    return h.hexdigest()


def fingerprint_bars(bars: pd.DataFrame) -> dict[str, Any]:
    """Return the ``meta["train_bars"]`` record of exactly ``bars`` (the bars a model fits on).

    Save it in the checkpoint's metadata (``train(..., checkpoint_meta={"train_bars":
    fingerprint_bars(used)})`` when training by hand); :func:`train_on_bars` does it for you.

    Raises
    ------
    DataError
        No bars, or no ``close`` column.
    CelerisTypeError
        ``bars`` is not a DataFrame with a DatetimeIndex.
    """
    if not isinstance(bars, pd.DataFrame):
        raise CelerisTypeError(f"bars must be a DataFrame, got {type(bars).__name__}")
    if len(bars) == 0:
        raise DataError("no bars to fingerprint")
    columns = _columns(bars)
    ns = _time_ns(bars.index, "bars")
    close = next(c for c in columns if str(c).lower() == "close")
    positions = np.unique(np.linspace(0, len(bars) - 1, min(len(bars), _PROBES)).round())
    positions = positions.astype(np.int64)
    spacing = pd.Series(bars.index).diff().median() if len(bars) > 1 else pd.NaT
    return {
        "version": _VERSION,
        "first": str(bars.index[0]),
        "last": str(bars.index[-1]),
        "first_ns": int(ns[0]),
        "last_ns": int(ns[-1]),
        "count": len(bars),
        "spacing": None if pd.isna(spacing) else str(spacing),
        "columns": [str(c).lower() for c in columns],
        "sha256": _sha256(bars, columns),
        "probe_ns": [int(v) for v in ns[positions]],
        "probe_close": [float(v) for v in bars[close].to_numpy(dtype=np.float64)[positions]],
    }


@dataclasses.dataclass(frozen=True)
class TrainingOverlap:
    """How some bars relate to the bars a model was fitted on.

    Attributes
    ----------
    verdict : str
        ``none``, ``same``, ``dates``, ``different`` or ``unknown`` (see the module docstring).
    in_range : np.ndarray
        ``[T]`` bool over the given index: the bar's time lies in the training range.
    first, last : pd.Timestamp or None
        The training range (None when ``unknown``).
    count : int
        Bars the model was fitted on (0 when ``unknown``).
    """

    verdict: str
    in_range: np.ndarray
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    count: int = 0

    @property
    def in_sample(self) -> np.ndarray:
        """``[T]`` bool: bars the model was fitted on (the ``in_range`` ones, unless the content
        differs; all False for ``unknown``, which cannot say)."""
        if self.verdict in IN_SAMPLE:
            return self.in_range
        return np.zeros_like(self.in_range)

    @property
    def n_in_sample(self) -> int:
        return int(self.in_sample.sum())

    @property
    def span(self) -> str:
        """The training range in words (``1999-01-04 .. 2014-11-21``)."""
        return f"{_when(self.first)} .. {_when(self.last)}"

    @property
    def reason(self) -> str:
        """Why the overlapping bars count as trained on (or do not), in a few words."""
        return {
            "same": "same dates and prices",
            "dates": "same dates; prices not compared, so counted as trained on",
            "different": "same dates, different prices: out of sample",
            "none": "no overlap",
        }.get(self.verdict, "no record of the training bars")

    def describe(self, what: str = "bars") -> str:
        """One sentence for a person: how many ``what`` (bars, forecasts, windows) overlap the
        training bars, and whether they count as in-sample."""
        n = int(self.in_range.sum())
        if self.verdict == "unknown":
            return "the checkpoint has no record of the bars it was trained on"
        if self.verdict == "none":
            return f"no {what} fall in the model's training range ({self.span})"
        if self.verdict == "same":
            return (
                f"{n:,} {what} are on the model's training bars ({self.span}, same dates and "
                "prices)"
            )
        if self.verdict == "dates":
            return (
                f"{n:,} {what} are on the model's training dates ({self.span}); prices could "
                "not be compared, so they count as trained on"
            )
        return (
            f"{n:,} {what} are on the model's training dates ({self.span}) but their prices "
            "differ from the training bars (another asset?): out of sample for this model"
        )


def _when(t: pd.Timestamp | None) -> str:
    if t is None:
        return "?"
    if t == t.normalize():
        return str(t.date())
    return t.strftime("%Y-%m-%d %H:%M") + ("" if t.tzinfo is None else f" {t.tzname()}")


def _other_spacing(record: dict[str, Any], bars: pd.DataFrame) -> bool:
    spacing = record.get("spacing")
    if spacing is None or len(bars) < 2:
        return False
    return bool(pd.Series(bars.index).diff().median() != pd.Timedelta(spacing))


def _probe_verdict(record: dict[str, Any], bars: pd.DataFrame) -> str:
    ns = _time_ns(bars.index, "bars")
    probe_ns = np.asarray(record.get("probe_ns", []), dtype=np.int64)
    probe_close = np.asarray(record.get("probe_close", []), dtype=np.float64)
    pos = np.searchsorted(ns, probe_ns)
    found = (pos < len(ns)) & (ns[np.minimum(pos, len(ns) - 1)] == probe_ns)
    if not found.any():
        return "dates"
    close = next(c for c in _columns(bars) if str(c).lower() == "close")
    got = bars[close].to_numpy(dtype=np.float64)[pos[found]]
    same = np.isclose(got, probe_close[found], rtol=_PROBE_RTOL, atol=0.0)
    return "same" if same.mean() >= 0.5 else "different"


def training_overlap(
    meta: dict[str, Any], index: pd.Index, bars: pd.DataFrame | None = None
) -> TrainingOverlap:
    """Compare bars at ``index`` with the training bars recorded in a checkpoint's ``meta``.

    Parameters
    ----------
    meta : dict
        The checkpoint's metadata (``Predictor.meta``, ``LoadedCheckpoint.meta``).
    index : pd.DatetimeIndex
        Timestamps of the bars in question (e.g. where forecasts are stamped).
    bars : pd.DataFrame, optional
        The bars themselves (OHLCV), so that their content can be compared; without them an
        overlap in time counts as in-sample (verdict ``dates``).

    Raises
    ------
    CelerisTypeError
        ``index`` is not a DatetimeIndex.
    DataError
        A corrupt ``train_bars`` record.
    """
    ns = _time_ns(index, "the data")
    record = meta.get(TRAIN_BARS_KEY)
    if record is None:
        return TrainingOverlap("unknown", np.zeros(len(ns), dtype=bool))
    try:
        first_ns, last_ns = int(record["first_ns"]), int(record["last_ns"])
        first, last = pd.Timestamp(record["first"]), pd.Timestamp(record["last"])
        count = int(record["count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"corrupt training-bars record in the checkpoint: {exc!r}") from None
    in_range = (ns >= first_ns) & (ns <= last_ns)
    if not in_range.any():
        verdict = "none"
    elif bars is None:
        verdict = "dates"
    else:
        bar_ns = _time_ns(bars.index, "bars")
        inside = bars[(bar_ns >= first_ns) & (bar_ns <= last_ns)]
        if len(inside) == 0:
            verdict = "dates"
        elif len(inside) == count and _sha256(inside, _columns(inside)) == record.get("sha256"):
            verdict = "same"
        elif _other_spacing(record, inside):
            # Bars of another length (the same asset resampled?) cannot be compared bar for
            # bar with the training bars, and the model may have seen their price path.
            verdict = "dates"
        else:
            verdict = _probe_verdict(record, inside)
    return TrainingOverlap(verdict, in_range, first, last, count)


def no_record_message(what: str, flag: str) -> str:
    """Why a checkpoint without ``train_bars`` is refused, and how to proceed anyway."""
    return (
        f"{what} has no record of the bars it was trained on (written before Celeris recorded "
        "training bars, or saved by train() without one), so its in-sample bars cannot be "
        f"excluded; retrain it with `celeris train` / train_on_bars, or pass {flag} to use every "
        "bar knowingly"
    )
