"""Features travel with the model: the one function that turns raw bars into model inputs.

A :class:`FeatureSpec` names a model's input features (:data:`celeris.models.data.FEATURES`,
target first) and *is* the code that computes them: :meth:`FeatureSpec.inputs` is what
training (:func:`~celeris.models.pipeline.fit_on_bars`), evaluation, ``celeris forecast``, the
server's raw-bars requests and the live loop call, and :meth:`FeatureSpec.last_windows` is its
fast path for many symbols at once, equal to it bit for bit. Training saves the spec in the
checkpoint (``meta["feature_spec"]``, :meth:`FeatureSpec.to_dict`), beside the scaler fitted on
the training bars; :func:`spec_of` reads it back (also from older checkpoints, which recorded
only ``meta["features"]``). The spec plus the checkpoint's scaler (applied by
:class:`~celeris.models.predictor.Predictor`) is everything a consumer needs.

Warm-up. The first :attr:`FeatureSpec.lookback` bars of any history give no input row (an
indicator is still warming up). Recursive indicators (EMA, RSI, ATR: Wilder's smoothing) keep
every bar since the history's first in their value, and the rolling windows of ``zscore`` and
``volatility`` re-anchor their sums at the first valid bar: the same bar's feature computed
from a history starting elsewhere differs (in the last digits for the rolling ones, visibly
for the recursive ones until they forget the start). Inputs are equal bit for bit to the
training inputs when the bars given start at the same bar the training bars did.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from celeris.checks import check_int
from celeris.errors import CelerisTypeError, ConfigError, DataError, did_you_mean
from celeris.models.data import _parse_feature, feature_frame

__all__ = [
    "BAR_FIELDS",
    "FEATURE_SPEC_VERSION",
    "FeatureSpec",
    "feature_lookback",
    "feature_settle",
    "recorded_spec",
    "reference_of",
    "spec_of",
]

#: The version of the feature definitions this Celeris computes (bumped whenever a feature's
#: formula changes, so that a checkpoint is never fed inputs computed another way).
FEATURE_SPEC_VERSION = 1
#: Fields of a bar, in the order of the ``[n_symbols, T, 5]`` array form of bars.
BAR_FIELDS = ("open", "high", "low", "close", "volume")
#: Decile bins of the training distribution (:func:`reference_of`).
REFERENCE_BINS = 10

_SPEC_KEYS = frozenset({"version", "features", "lookback", "reference"})
# Warm-up of each feature (bars without a value before the first one), window ``w``.
_WARMUP = {
    "close": lambda w: 0,
    "log_close": lambda w: 0,
    "log_volume": lambda w: 0,
    "log_return": lambda w: 1,  # needs the previous close
    "rsi": lambda w: w,  # w changes, each needing a previous close
    "zscore": lambda w: w - 1,
    "atr": lambda w: w,  # true ranges need a previous close
    "sma": lambda w: w - 1,
    "ema": lambda w: w - 1,
    "volatility": lambda w: w,  # w log returns, the first needing a previous close
}
# Fields of the bars each feature reads (close always).
_FIELDS = {"atr": ("high", "low"), "log_volume": ("volume",)}
#: Bits of float64's significand: a recursive feature has settled once its initial
#: condition's weight is below ``2 ** -SETTLE_BITS`` (:func:`feature_settle`).
SETTLE_BITS = 53
# The factor each bar multiplies a recursive feature's past by, window ``w``: Wilder's
# smoothing ``avg = (avg * (w - 1) + x) / w`` (RSI, ATR; TA-Lib's definition) and the EMA
# ``prev = (x - prev) * k + prev`` with ``k = 2 / (w + 1)``.
_DECAY = {
    "rsi": lambda w: (w - 1) / w,
    "atr": lambda w: (w - 1) / w,
    "ema": lambda w: (w - 1) / (w + 1),
}


def feature_lookback(feature: str) -> int:
    """Return the warm-up of one feature name: the bars before its first value."""
    base, window = _parse_feature(feature)
    return int(_WARMUP[base](window or 0))


def feature_settle(feature: str) -> int:
    """Return the bars after its warm-up that a feature needs to forget where its history began.

    A recursive feature (``rsi``, ``atr``: Wilder's smoothing; ``ema``) keeps its first value,
    seeded at the end of the warm-up, with a weight ``d ** n`` after ``n`` more bars (``d``
    the decay per bar: ``(w - 1) / w`` for Wilder's, ``(w - 1) / (w + 1)`` for the EMA). Its
    settle is the least ``n`` with ``d ** n < 2 ** -53`` (float64's resolution): 496 bars for
    ``rsi_14``, 918 for ``ema_50``; 0 for a window of 1, which keeps no past. Every other
    feature reads a fixed number of bars (its warm-up) and settles at once: 0.
    """
    base, window = _parse_feature(feature)
    decay = _DECAY.get(base)
    if decay is None:
        return 0
    d = decay(int(window or 0))
    if d <= 0.0:
        return 0
    return math.ceil(SETTLE_BITS * math.log(2.0) / -math.log(d))


def _check_features(features: Any) -> tuple[str, ...]:
    if isinstance(features, str) or not isinstance(features, Sequence):
        raise ConfigError(f"feature spec: features must be a list of names, got {features!r:.80}")
    names = tuple(features)
    if not names:
        raise ConfigError("feature spec: features is empty")
    for name in names:
        if not isinstance(name, str):
            raise ConfigError(f"feature spec: feature names are strings, got {name!r:.40}")
        try:
            base, window = _parse_feature(name)
        except ConfigError as exc:
            raise ConfigError(f"feature spec: {exc}; this Celeris cannot compute it") from None
        if base == "zscore" and window == 1:
            raise ConfigError(
                "feature spec: feature 'zscore_1' is NaN on every bar (the spread of one bar "
                "is 0); use a window of at least 2"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"feature spec: repeated feature names in {list(names)}")
    return names


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise ConfigError(f"feature spec: version must be an integer, got {version!r:.40}")
    if version != FEATURE_SPEC_VERSION:
        import celeris

        newer = "a newer" if version > FEATURE_SPEC_VERSION else "an older"
        raise ConfigError(
            f"feature spec version {version} is not one this Celeris ({celeris.__version__}) "
            f"computes (it computes version {FEATURE_SPEC_VERSION}): the model was trained "
            f"with {newer} definition of its features; serve it with the Celeris that trained it"
        )
    return version


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The input features of a model and the code that computes them from bars.

    Attributes
    ----------
    features : tuple of str
        Names :func:`~celeris.models.data.feature_frame` knows (``log_return``, ``rsi_14``,
        ...), the forecast target first.
    version : int
        The version of the feature definitions (:data:`FEATURE_SPEC_VERSION`).
    reference : dict or None
        The training distribution of each feature for drift monitoring, from
        :func:`reference_of`: ``{"bins": {name: [e1, ..., e9]}, "fractions": {name: [f0, ...,
        f9]}}``, the inner decile edges of the training rows (before scaling) and the fraction
        of those rows in each bin ``(-inf, e1], (e1, e2], ..., (e9, inf)``. Not compared by
        ``==`` (two specs are equal when they compute the same inputs).

    Raises
    ------
    ConfigError
        An unknown feature name (naming it, with a hint), a repeated or empty list, a version
        this Celeris does not compute, or a malformed reference.
    """

    features: tuple[str, ...]
    version: int = FEATURE_SPEC_VERSION
    reference: dict[str, Any] | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        _check_version(self.version)
        names = _check_features(self.features)
        object.__setattr__(self, "features", names)
        if self.reference is not None:
            _check_reference(self.reference, names)

    def __hash__(self) -> int:
        return hash((self.features, self.version))

    # -- what it computes -----------------------------------------------------------------

    @functools.cached_property
    def _parsed(self) -> tuple[tuple[str, int | None], ...]:
        return tuple(_parse_feature(f) for f in self.features)

    @functools.cached_property
    def lookback(self) -> int:
        """Bars before the first input row (the longest warm-up among the features).

        A history of ``n`` clean bars gives ``n - lookback`` input rows, so one input window
        of ``input_size`` rows needs at least ``lookback + input_size`` bars.
        """
        return max(int(_WARMUP[base](window or 0)) for base, window in self._parsed)

    @property
    def target(self) -> str:
        """The forecast target: the first feature."""
        return self.features[0]

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """The bar fields the features read (``close`` always), in :data:`BAR_FIELDS` order."""
        needed = {"close"}
        for base, _ in self._parsed:
            needed.update(_FIELDS.get(base, ()))
        return tuple(f for f in BAR_FIELDS if f in needed)

    @functools.cached_property
    def _kernel_plan(self) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """Indicator codes and windows for :mod:`celeris.models.features_nb`, and the feature
        position of each."""
        slots = tuple(j for j, (base, _) in enumerate(self._parsed) if base in _KERNEL_CODES)
        kinds = np.array([_KERNEL_CODES[self._parsed[j][0]] for j in slots], dtype=np.int64)
        windows = np.array([int(self._parsed[j][1] or 0) for j in slots], dtype=np.int64)
        return kinds, windows, slots

    def bars_needed(self, input_size: int) -> int:
        """Return the fewest bars that give one input window: ``lookback + input_size``."""
        return self.lookback + check_int("input_size", input_size, minimum=1)

    @functools.cached_property
    def _settled(self) -> tuple[int, ...]:
        """Per feature: its warm-up plus its settle (:func:`feature_settle`)."""
        return tuple(feature_lookback(f) + feature_settle(f) for f in self.features)

    def bars_settled(self, input_size: int) -> int:
        """Return the bars a bounded window reads (``last_windows(..., bounded=True)``).

        The most, over the features, of warm-up + settle (:func:`feature_settle`) +
        ``input_size``: 542 for the default cnn_lstm features (``rsi_14``, ``atr_14``) and
        ``input_size=32``. A live loop that keeps this many bars of history loses nothing.
        """
        return max(self._settled) + check_int("input_size", input_size, minimum=1)

    def inputs(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Return the model inputs ``[T - lookback, C]`` of a bar frame: THE function.

        Same as ``feature_frame(bars, features, drop_warmup=True)``: one column per feature,
        past-only (row ``t`` uses bars ``<= t``), the leading warm-up rows dropped. Training
        windows are cut from this frame (:func:`~celeris.models.data.make_windows`) and every
        consumer of a model computes its inputs here, unscaled: the checkpoint's scaler is
        applied by the predictor.

        Raises
        ------
        DataError
            A column the features need is missing.
        CelerisTypeError
            ``bars`` is not a DataFrame.
        """
        return feature_frame(bars, self.features, drop_warmup=True)

    def last_windows(
        self, bars: Mapping[str, Any] | np.ndarray, input_size: int, *, bounded: bool = False
    ) -> np.ndarray:
        """Return the last input window of each symbol, ``[n_symbols, input_size, C]`` float64.

        The fast path of :meth:`inputs` for many symbols at once (the live loop calls it every
        bar): row ``a`` equals ``inputs(bars_of_symbol_a).to_numpy()[-input_size:]`` bit for
        bit. The indicators of all symbols are computed in one compiled call by the kernels of
        :mod:`celeris.indicators` (see :mod:`celeris.models.features_nb`), the elementwise
        parts by the same numpy operations :meth:`inputs` runs.

        With ``bounded=True`` each feature is computed over only the last bars its window
        needs, ``n_c = feature_lookback(f) + feature_settle(f) + input_size`` (all bars when
        fewer): column ``c`` then equals ``FeatureSpec((f,)).inputs(bars_of_symbol_a[-n_c:])
        .to_numpy()[-input_size:, 0]`` bit for bit. Over a longer history the same values
        differ only in the last digits: a fixed-window feature reads the same bars (its
        running sums restart elsewhere: rounding), a recursive one forgets its start with a
        weight below ``2 ** -53`` (:func:`feature_settle`). What the live loop computes each
        bar (``ModelSignals(bounded=True)``); training and replays compute every bar.

        Parameters
        ----------
        bars
            ``{symbol: bars}`` with each a bar frame or a mapping ``{field: 1-D array}``
            (fields as :attr:`fields`; histories may differ in length), or a float array
            ``[n_symbols, T, 5]`` of the fields :data:`BAR_FIELDS` in that order. Oldest bar
            first; give each symbol the same history its training saw for bit-equal inputs
            (see the module docstring).
        input_size : int
            Input rows per window.

        Raises
        ------
        DataError
            A symbol with fewer than ``lookback + input_size`` bars, a missing field, or a
            window holding a non-finite input (NaN or inf bars, a zero volume under
            ``log_volume``...), naming the symbol, feature and bar.
        CelerisTypeError
            ``bars`` is neither a mapping nor an array.
        """
        input_size = check_int("input_size", input_size, minimum=1)
        keep = self.bars_settled(input_size) if bounded else None
        names, block, positions, lengths = self._field_matrices(bars, keep)
        return self._windows(names, block, positions, lengths, input_size, bounded)

    # -- the fast path --------------------------------------------------------------------

    def _field_matrices(
        self, bars: Mapping[str, Any] | np.ndarray, keep: int | None = None
    ) -> tuple[list[str], np.ndarray, dict[str, int], np.ndarray]:
        """Time-major bars ``[T, K, A]`` float64 in C order holding the needed fields (a symbol
        with fewer bars NaN-padded at the top; only the last ``keep`` bars when given), each
        field's position on the second axis, the symbols' names and their lengths (all their
        bars, kept or not)."""
        needed = self.fields
        if isinstance(bars, np.ndarray):
            if bars.ndim != 3 or bars.shape[2] != len(BAR_FIELDS):
                raise DataError(
                    f"bars as an array must be [n_symbols, T, {len(BAR_FIELDS)}] (fields "
                    f"{', '.join(BAR_FIELDS)}), got shape {list(bars.shape)}"
                )
            if bars.dtype.kind not in "iuf":
                raise DataError(f"bars must be numeric, got dtype {bars.dtype}")
            n, length = bars.shape[0], bars.shape[1]
            kept = bars if keep is None or keep >= length else bars[:, length - keep :]
            time_major = kept.transpose(1, 2, 0)  # [T, 5, A]
            if time_major.dtype == np.float64 and time_major.flags.c_contiguous:
                # the live loop's [T, 5, A] history, transposed: read as it is, no copy
                positions = {f: BAR_FIELDS.index(f) for f in needed}
                block = time_major
            else:
                positions = {f: i for i, f in enumerate(needed)}
                block = np.empty((kept.shape[1], len(needed), n))
                for f, i in positions.items():
                    block[:, i, :] = kept[:, :, BAR_FIELDS.index(f)].T
            names = [str(i) for i in range(n)]
            return names, block, positions, np.full(n, length, dtype=np.int64)
        if not isinstance(bars, Mapping):
            raise CelerisTypeError(
                "bars must be a mapping {symbol: bar frame or {field: array}} or an array "
                f"[n_symbols, T, 5], got {type(bars).__name__}"
            )
        if not bars:
            raise DataError("bars holds no symbols")
        names = [str(s) for s in bars]
        columns: dict[str, list[np.ndarray]] = {f: [] for f in needed}
        for symbol, one in zip(names, bars.values(), strict=True):
            for f, values in zip(needed, _symbol_fields(symbol, one, needed), strict=True):
                columns[f].append(values)
        lengths = np.array([len(v) for v in columns["close"]], dtype=np.int64)
        if keep is not None:
            columns = {f: [v[-keep:] for v in rows] for f, rows in columns.items()}
        width = max(len(v) for v in columns["close"])
        positions = {f: i for i, f in enumerate(needed)}
        block = np.full((width, len(needed), len(names)), np.nan)  # [T, K, A]
        for f, rows in columns.items():
            for a, row in enumerate(rows):
                block[width - len(row) :, positions[f], a] = row
        return names, block, positions, lengths

    def _windows(
        self,
        names: list[str],
        block: np.ndarray,
        positions: dict[str, int],
        lengths: np.ndarray,
        input_size: int,
        bounded: bool = False,
    ) -> np.ndarray:
        need = self.lookback + input_size
        short = np.flatnonzero(lengths < need)
        if len(short):
            i = int(short[0])
            raise DataError(
                f"symbol {names[i]!r} has {int(lengths[i])} bar(s); its features need at least "
                f"{need} (lookback {self.lookback} + input_size {input_size})"
                + (f"; {len(short) - 1} more symbol(s) too short" if len(short) > 1 else "")
            )
        width, n_assets = block.shape[0], block.shape[2]
        close = block[:, positions["close"], :]  # [T, A]
        lo = width - input_size
        parsed = self._parsed
        # the first bar (of the matrices) each feature is computed from: 0, or in a bounded
        # window the first of the bars the feature needs
        if bounded:
            starts = [max(0, width - n - input_size) for n in self._settled]
        else:
            starts = [0] * len(parsed)
        out = np.empty((len(parsed), input_size, n_assets))  # [C, L, A]
        with np.errstate(all="ignore"):  # non-finite inputs are reported below, by name
            log_return = None
            reads = [s for s, (b, _) in zip(starts, parsed, strict=True) if b == "volatility"]
            if any(b == "log_return" for b, _ in parsed):
                reads.append(lo - 1)  # the window's first log return reads the bar before
            if reads:
                # from the first bar a feature reads on (a bounded volatility's rolling window
                # reads the log returns after its first bar; an unbounded one, every one)
                first = min(reads)
                log_return = np.empty(close.shape)
                log_return[first] = np.nan
                np.log(close[first + 1 :] / close[first:-1], out=log_return[first + 1 :])
            kinds, windows, slots = self._kernel_plan
            raw: dict[int, np.ndarray] = {}
            if slots:
                from celeris.models import features_nb

                empty = _EMPTY.get(n_assets)
                if empty is None:
                    empty = _EMPTY.setdefault(n_assets, np.empty((0, n_assets)))
                c = positions["close"]  # high and low only where ATR reads them
                indicators = features_nb.last_indicators_nb(
                    kinds,
                    windows,
                    np.array([starts[j] for j in slots], dtype=np.int64),
                    block,
                    np.array(
                        [positions.get("high", c), positions.get("low", c), c], dtype=np.int64
                    ),
                    empty if log_return is None else log_return,
                    np.empty((len(slots), input_size, n_assets)),
                )
                raw = dict(zip(slots, indicators, strict=True))
            # The elementwise parts: the operations of celeris.models.data's feature builders.
            last_close = close[lo:]  # [L, A]
            for j, (base, _) in enumerate(parsed):
                if base == "close":
                    out[j] = last_close
                elif base == "log_close":
                    np.log(last_close, out=out[j])
                elif base == "log_volume":
                    np.log(block[lo:, positions["volume"], :], out=out[j])
                elif base == "log_return":
                    assert log_return is not None
                    out[j] = log_return[lo:]
                elif base == "rsi":
                    np.divide(raw[j] - 50.0, 50.0, out=out[j])
                elif base == "atr":
                    np.divide(raw[j], last_close, out=out[j])
                elif base in ("sma", "ema"):
                    np.log(last_close / raw[j], out=out[j])
                else:  # zscore, volatility: the indicator itself
                    out[j] = raw[j]
        windows_out = out.transpose(2, 1, 0)  # [C, L, A] -> [A, L, C]
        bad = ~np.isfinite(windows_out)
        if bad.any():
            a, t, c = (int(v) for v in np.argwhere(bad)[0])
            value = windows_out[a, t, c]
            raise DataError(
                f"symbol {names[a]!r}: feature {self.features[c]!r} is {value} at bar "
                f"{int(lengths[a]) - input_size + t} of {int(lengths[a])} (in its last "
                f"{input_size}); the bars hold a NaN, inf or a value its formula cannot take "
                "(a non-positive price or volume under a log)"
            )
        return np.ascontiguousarray(windows_out)

    # -- storage --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable form saved in a checkpoint (``meta["feature_spec"]``).

        ``lookback`` is recorded for readers (and checked by :meth:`from_dict`: a Celeris whose
        warm-up for these names differs computes other inputs).
        """
        out: dict[str, Any] = {
            "version": self.version,
            "features": list(self.features),
            "lookback": self.lookback,
        }
        if self.reference is not None:
            out["reference"] = self.reference
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Rebuild a spec from :meth:`to_dict`, refusing anything this Celeris cannot compute.

        Raises
        ------
        ConfigError
            Not a mapping, an unknown key, a version other than :data:`FEATURE_SPEC_VERSION`,
            an unknown feature name (named), a recorded ``lookback`` other than this Celeris
            computes for the names, or a malformed reference.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"a feature spec is an object, got {type(d).__name__}")
        if "version" not in d:
            raise ConfigError("feature spec: no version recorded")
        _check_version(d["version"])  # first: a newer spec may have keys this one lacks
        unknown = sorted(set(d) - _SPEC_KEYS)
        if unknown:
            raise ConfigError(
                f"feature spec: unknown key {unknown[0]!r}"
                f"{did_you_mean(str(unknown[0]), _SPEC_KEYS)}; known: {', '.join(sorted(_SPEC_KEYS))}"
            )
        if "features" not in d:
            raise ConfigError("feature spec: no features recorded")
        spec = cls(
            features=_check_features(d["features"]),
            version=d["version"],
            reference=d.get("reference"),
        )
        recorded = d.get("lookback")
        if recorded is not None and recorded != spec.lookback:
            raise ConfigError(
                f"feature spec: it records a lookback of {recorded!r} bars but this Celeris "
                f"computes {spec.lookback} for {list(spec.features)}: the features were defined "
                "differently when the model was trained"
            )
        return spec

    def with_reference(self, values: Any) -> FeatureSpec:
        """Return a copy holding the training distribution of ``values`` (:func:`reference_of`)."""
        return dataclasses.replace(self, reference=reference_of(values, self.features))


# [0, A] placeholders for the kernel's unused inputs, one per symbol count (tiny, reused).
_EMPTY: dict[int, np.ndarray] = {}


def _rows(view: np.ndarray) -> np.ndarray:
    """A field ``[A, T]`` of the array form as C-order float64 rows."""
    return np.ascontiguousarray(view, dtype=np.float64)


_KERNEL_CODES = {"rsi": 0, "zscore": 1, "atr": 2, "sma": 3, "ema": 4, "volatility": 5}
"""Indicator codes of :mod:`celeris.models.features_nb` (checked equal there by a test)."""


# {id(columns): (columns, {lower-case name: position})}: reading a pandas 3 (Arrow string)
# Index's names costs ~60 us, more than the features of a symbol; frames sliced from one
# another share their columns object, so the live loop's frames hit this cache.
_COLUMNS: dict[int, tuple[pd.Index, dict[str, int]]] = {}


def _column_positions(columns: pd.Index) -> dict[str, int]:
    hit = _COLUMNS.get(id(columns))
    if hit is not None and hit[0] is columns:
        return hit[1]
    positions = {str(c).lower(): i for i, c in enumerate(columns.tolist())}
    if len(_COLUMNS) >= 256:
        _COLUMNS.clear()
    _COLUMNS[id(columns)] = (columns, positions)
    return positions


def _symbol_fields(symbol: str, bars: Any, needed: tuple[str, ...]) -> list[np.ndarray]:
    """The needed fields of one symbol's bars as 1-D float64 arrays (names matched without case,
    as :func:`~celeris.models.data.feature_frame` does)."""
    if isinstance(bars, pd.DataFrame):
        cols = _column_positions(bars.columns)
    elif isinstance(bars, Mapping):
        cols = {str(c).lower(): c for c in bars}
    else:
        raise CelerisTypeError(
            f"bars of symbol {symbol!r} must be a bar frame or a mapping {{field: array}}, got "
            f"{type(bars).__name__}"
        )
    missing = [f for f in needed if f not in cols]
    if missing:
        raise DataError(
            f"bars of symbol {symbol!r} lack the field(s) {', '.join(missing)} that the "
            "features need"
        )
    if isinstance(bars, pd.DataFrame):
        # one conversion per frame (a column lookup each costs more than the features)
        try:
            matrix = bars.to_numpy(dtype=np.float64)
        except (TypeError, ValueError):  # another, non-numeric column: read the needed ones
            out = []
            for f in needed:
                try:
                    out.append(bars.iloc[:, cols[f]].to_numpy(dtype=np.float64))
                except (TypeError, ValueError):
                    raise DataError(f"bars of symbol {symbol!r}: {f} must be numeric") from None
            return out
        return [matrix[:, cols[f]] for f in needed]
    out = []
    for f in needed:
        arr = np.asarray(bars[cols[f]])
        if arr.dtype.kind not in "iuf":
            raise DataError(f"bars of symbol {symbol!r}: {f} must be numeric")
        arr = arr.astype(np.float64, copy=False)
        if arr.ndim != 1:
            raise DataError(f"bars of symbol {symbol!r}: {f} must be 1-D, got shape {arr.shape}")
        out.append(arr)
    lengths = {len(a) for a in out}
    if len(lengths) > 1:
        sizes = ", ".join(f"{f} {len(a)}" for f, a in zip(needed, out, strict=True))
        raise DataError(f"bars of symbol {symbol!r}: fields differ in length ({sizes})")
    if not out[0].size:
        raise DataError(f"bars of symbol {symbol!r} are empty")
    return out


# -- the training distribution (drift) ------------------------------------------------------


def reference_of(values: Any, features: Sequence[str]) -> dict[str, Any]:
    """Return the training distribution of each feature for drift monitoring (PSI).

    ``values`` are the training rows of the inputs ``[M, C]`` before scaling (columns in the
    order of ``features``). Per feature: the 9 inner decile edges ``e1 <= ... <= e9``
    (``np.quantile`` at 0.1 ... 0.9) and the fraction of the rows in each of the 10 bins
    ``(-inf, e1], (e1, e2], ..., (e9, inf)`` (summing to 1; ties can leave a bin empty).

    Raises
    ------
    DataError
        No rows, a column count other than ``len(features)``, or a non-finite value.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != len(features):
        raise DataError(
            f"reference: values must be [rows, {len(features)}], got shape {list(arr.shape)}"
        )
    if arr.shape[0] == 0:
        raise DataError("reference: no training rows")
    if not np.isfinite(arr).all():
        raise DataError("reference: the training rows hold a non-finite value")
    qs = np.arange(1, REFERENCE_BINS) / REFERENCE_BINS
    edges = np.quantile(arr, qs, axis=0)  # [9, C]
    bins: dict[str, list[float]] = {}
    fractions: dict[str, list[float]] = {}
    for c, name in enumerate(features):
        e = edges[:, c]
        counts = np.bincount(np.searchsorted(e, arr[:, c], side="left"), minlength=REFERENCE_BINS)
        bins[str(name)] = [float(v) for v in e]
        fractions[str(name)] = [float(v) for v in counts / arr.shape[0]]
    return {"bins": bins, "fractions": fractions}


def _check_reference(reference: Any, features: tuple[str, ...]) -> None:
    if not isinstance(reference, Mapping) or set(reference) != {"bins", "fractions"}:
        raise ConfigError('feature spec: reference must be {"bins": {...}, "fractions": {...}}')
    for key, size in (("bins", REFERENCE_BINS - 1), ("fractions", REFERENCE_BINS)):
        part = reference[key]
        if not isinstance(part, Mapping) or set(part) != set(features):
            raise ConfigError(f"feature spec: reference {key} must name exactly the features")
        for name, row in part.items():
            ok = (
                isinstance(row, list | tuple)
                and len(row) == size
                and all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in row
                )
            )
            if not ok:
                raise ConfigError(
                    f"feature spec: reference {key} of {name!r} must be {size} finite numbers"
                )
            if key == "bins" and any(b < a for a, b in itertools.pairwise(row)):
                raise ConfigError(f"feature spec: reference bins of {name!r} must not decrease")
            if key == "fractions" and (
                any(v < 0 for v in row) or not math.isclose(sum(row), 1.0, abs_tol=1e-9)
            ):
                raise ConfigError(
                    f"feature spec: reference fractions of {name!r} must be >= 0 and sum to 1"
                )


# -- checkpoints ----------------------------------------------------------------------------


def spec_of(meta: Mapping[str, Any]) -> FeatureSpec:
    """Return the feature spec of a checkpoint from its ``meta``.

    ``meta["feature_spec"]`` when recorded (checked against ``meta["features"]`` when both
    are); older checkpoints recorded only ``meta["features"]``, read as a version-1 spec.

    Raises
    ------
    DataError
        ``meta`` records no features, or two different feature lists.
    ConfigError
        A spec this Celeris cannot compute (unknown version or feature, named).
    """
    if not isinstance(meta, Mapping):
        raise DataError(f"checkpoint meta must be an object, got {type(meta).__name__}")
    listed = meta.get("features")
    recorded = meta.get("feature_spec")
    if recorded is not None:
        spec = FeatureSpec.from_dict(recorded)
        if listed is not None and [str(f) for f in listed] != list(spec.features):
            raise DataError(
                f"checkpoint meta is inconsistent: feature_spec lists {list(spec.features)} "
                f"but features lists {list(listed)}"
            )
        return spec
    if listed is None:
        raise DataError(
            "the checkpoint records no input features (meta has neither feature_spec nor "
            "features): its inputs cannot be computed from bars; send finished windows"
        )
    return FeatureSpec(tuple(str(f) for f in listed) if isinstance(listed, list) else listed)


def recorded_spec(meta: Any, n_features: int | None = None) -> FeatureSpec | None:
    """Return the feature spec a checkpoint's ``meta`` records, or None when it records no
    features at all (such a model takes finished input windows only).

    What the registry checks at registration and the server at load: a spec this Celeris cannot
    compute is refused there, with the reason.

    Raises
    ------
    ConfigError
        A spec this Celeris cannot compute: an unknown spec version or feature name (named).
    DataError
        Inconsistent records: two different feature lists, or a feature count other than the
        model's ``n_features``.
    """
    if not isinstance(meta, Mapping) or (
        meta.get("feature_spec") is None and not meta.get("features")
    ):
        return None
    spec = spec_of(meta)
    if n_features is not None and len(spec.features) != n_features:
        raise DataError(
            f"the checkpoint lists {len(spec.features)} feature(s) {list(spec.features)} but its "
            f"model takes {n_features}"
        )
    return spec
