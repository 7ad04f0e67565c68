"""Many assets as one :class:`Panel`: bars of several symbols on the union of their timestamps.

:func:`to_panel` takes the multi-asset layouts Celeris accepts (a frame with ``(symbol, field)``
MultiIndex columns, the same with ``(field, symbol)`` as yfinance downloads it, a dict
``{symbol: bar frame}``, or one bar frame) and returns one time x assets float64 frame per bar
field, aligned on the union of the assets' timestamps.

An asset may be listed late or delisted early: its rows before its first valid bar and after its
last are NaN and mean "not tradable" (:attr:`Panel.listed` is False there). A NaN inside the
listed span — a NaN value, or a timestamp another asset has and this one lacks — is a
:class:`~celeris.errors.DataError` unless ``nan_policy`` says otherwise, as for one bar frame.

This module is also the one place that decides which level of two-level MultiIndex columns
holds the bar fields (:func:`field_level`); the indicators use it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pandas as pd

from celeris.data.schema import (
    BAR_COLUMNS,
    NanPolicy,
    check_nan_policy,
    check_time_index,
    validate,
)
from celeris.errors import CelerisTypeError, ConfigError, DataError, did_you_mean

__all__ = ["Panel", "field_level", "to_panel"]

Layout = Literal["(symbol, field)", "(field, symbol)", "dict", "bar frame"]

_FIELDS_LOWER = frozenset(BAR_COLUMNS)


def _is_field(label: Any) -> bool:
    return str(label).lower() in _FIELDS_LOWER


def field_level(columns: pd.Index, what: str = "bars") -> int:
    """Return the level of two-level columns that holds the bar fields.

    ``1`` for ``(symbol, field)`` columns (the Celeris convention), ``0`` for
    ``(field, symbol)`` (what yfinance downloads). A level holds the fields when its labels
    are bar field names (``open, high, low, close, volume``, any case); a level where only some
    labels are field names (a stray ``"adj close"``) counts when the other level has none.

    Parameters
    ----------
    columns : pandas.Index
        The frame's columns, a two-level ``MultiIndex``.
    what : str
        How to name the frame in error messages.

    Raises
    ------
    ConfigError
        ``columns`` is not a two-level MultiIndex, no level holds bar fields, or both do.
    """
    expect = (
        f"{what}: a frame with MultiIndex columns must have two levels, (symbol, field) or "
        "(field, symbol), with the bar fields (open, high, low, close, volume) in one of them"
    )
    if not isinstance(columns, pd.MultiIndex) or columns.nlevels != 2:
        levels = list(columns.names) if isinstance(columns, pd.MultiIndex) else [columns.name]
        raise ConfigError(f"{expect}; got {len(levels)} level(s) {levels}")
    labels = [columns.get_level_values(k).unique() for k in (0, 1)]
    share = [float(np.mean([_is_field(v) for v in level])) for level in labels]
    all_fields = [k for k in (0, 1) if share[k] == 1.0]
    some_fields = [k for k in (0, 1) if share[k] > 0.0]
    if len(all_fields) == 1:
        return all_fields[0]
    if not all_fields and len(some_fields) == 1:
        return some_fields[0]
    shown = [list(map(str, level[:6])) for level in labels]
    if not some_fields:
        raise ConfigError(f"{expect}; neither level names a bar field: {shown[0]}, {shown[1]}")
    raise ConfigError(
        f"{expect}; both levels name bar fields ({shown[0]} and {shown[1]}), so which one holds "
        "the symbols is ambiguous; rename the symbols or pass a dict {symbol: bar frame}"
    )


@dataclass(frozen=True, eq=False, repr=False)
class Panel:
    """Bars of several assets aligned on one time index; built by :func:`to_panel`.

    Every field is a time x assets float64 frame (:attr:`close`, :meth:`field`), a view of a
    read-only array: a panel cannot change after it is built (``.copy()`` a frame to edit it in
    place). Rows outside an asset's listed span (:attr:`listed`) are NaN.
    """

    index: pd.DatetimeIndex
    """The union of the assets' timestamps (UTC, named ``time``)."""
    symbols: pd.Index
    """The assets, in input order (named ``symbol``)."""
    fields: tuple[str, ...]
    """The bar fields present, in the schema's order."""
    layout: Layout
    """The input layout :func:`to_panel` detected."""
    _values: Mapping[str, np.ndarray]  # field -> [T, A], read-only, columns contiguous
    _first: np.ndarray  # [A] position of each asset's first valid bar, read-only
    _last: np.ndarray  # [A] position of each asset's last valid bar, read-only

    def field(self, name: str) -> pd.DataFrame:
        """Return the time x assets frame of bar field ``name``.

        Raises
        ------
        ConfigError
            The panel has no such field.
        """
        values = self._values.get(name)
        if values is None:
            raise ConfigError(
                f"the panel has no {name!r} field{did_you_mean(str(name), self.fields)}; "
                f"it has {', '.join(self.fields)}"
            )
        return pd.DataFrame(values, index=self.index, columns=self.symbols, copy=False)

    @property
    def open(self) -> pd.DataFrame:
        """Opens, time x assets."""
        return self.field("open")

    @property
    def high(self) -> pd.DataFrame:
        """Highs, time x assets."""
        return self.field("high")

    @property
    def low(self) -> pd.DataFrame:
        """Lows, time x assets."""
        return self.field("low")

    @property
    def close(self) -> pd.DataFrame:
        """Closes, time x assets."""
        return self.field("close")

    @property
    def volume(self) -> pd.DataFrame:
        """Volumes, time x assets."""
        return self.field("volume")

    @property
    def listed(self) -> pd.DataFrame:
        """Bool time x assets: True from each asset's first valid bar to its last, inclusive."""
        rows = np.arange(len(self.index))[:, None]  # [T, 1] against [A]
        mask = (rows >= self._first) & (rows <= self._last)
        return pd.DataFrame(mask, index=self.index, columns=self.symbols, copy=False)

    @property
    def first_valid(self) -> pd.Series:
        """Timestamp of each asset's first valid bar (its listing), by symbol."""
        return pd.Series(self.index[self._first], index=self.symbols, name="first_valid")

    @property
    def last_valid(self) -> pd.Series:
        """Timestamp of each asset's last valid bar (its delisting, or the data's end)."""
        return pd.Series(self.index[self._last], index=self.symbols, name="last_valid")

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        span = f"{self.index[0]} to {self.index[-1]}" if len(self.index) else "empty"
        return (
            f"Panel({len(self.symbols)} symbols x {len(self.index)} bars, "
            f"fields {', '.join(self.fields)}, {span})"
        )


def to_panel(
    bars: pd.DataFrame | Mapping[str, pd.DataFrame] | Panel,
    *,
    nan_policy: NanPolicy = "error",
    fields: Sequence[str] | None = None,
    symbol: str = "asset",
) -> Panel:
    """Align the bars of several assets on the union of their timestamps.

    Parameters
    ----------
    bars : pandas.DataFrame, dict of str to pandas.DataFrame, or Panel
        One of: a frame with two-level MultiIndex columns ``(symbol, field)``; the same with
        ``(field, symbol)`` (detected by :func:`field_level`); a dict ``{symbol: bar frame}``
        whose frames may cover different times; one bar frame (one asset, named ``symbol``); or
        a :class:`Panel`, returned as it is (with only ``fields``, when given).
        Each asset's timestamps must pass :func:`celeris.data.schema.check_time_index` (UTC,
        sorted, unique).
    nan_policy : {"error", "ffill", "drop"}
        What to do with a NaN inside an asset's listed span (between its first and last valid
        bar; a bar is valid when any of its fields has a value), including a timestamp of the
        union the asset has no bar at: ``"error"`` raises naming the symbol, the field and the
        first timestamp; ``"ffill"`` carries the asset's previous bar forward; ``"drop"`` leaves
        the bar out, so the asset has NaN there (no bar: not tradable) while :attr:`Panel.listed`
        stays True. NaN outside the listed span always means "not listed".
    fields : sequence of str, optional
        The bar fields to keep; every asset must have them, and other columns are left out.
        Default: the bar fields the input has; any other column is then an error.
    symbol : str
        The symbol of a single bar frame.

    Returns
    -------
    Panel

    Raises
    ------
    CelerisTypeError
        ``bars`` is not a DataFrame or a dict of DataFrames, or a symbol is not a string.
    ConfigError
        The layout cannot be told, a field is unknown, or ``nan_policy`` is unknown.
    DataError
        An asset's bars break the bar schema (:func:`celeris.data.schema.validate`, whose
        message is prefixed with the symbol), an asset has no valid bar, a symbol appears twice,
        or an asset lacks a field.
    """
    check_nan_policy(nan_policy)
    wanted = _check_fields_arg(fields)
    if isinstance(bars, Panel):  # already aligned and validated
        return bars if wanted is None else _select(bars, wanted)
    frames, layout = _split(bars, symbol)
    names = _panel_fields(frames, wanted)
    index = _union_index([f.index for f in frames.values()])
    stamps = index.asi8
    n_bars, n_assets = len(index), len(frames)
    values = {name: np.full((n_bars, n_assets), np.nan, order="F") for name in names}
    first = np.empty(n_assets, dtype=np.int64)
    last = np.empty(n_assets, dtype=np.int64)
    for a, (sym, frame) in enumerate(frames.items()):
        span = _listed_span(sym, frame, names, nan_policy)
        lo, hi = np.searchsorted(stamps, pd.DatetimeIndex(span.index).asi8[[0, -1]])
        aligned = _onto_union(sym, span, index[lo : hi + 1], nan_policy).to_numpy()  # [n, F]
        for j, name in enumerate(names):
            values[name][lo : hi + 1, a] = aligned[:, j]
        first[a], last[a] = lo, hi
    for array in values.values():
        array.flags.writeable = False
    first.flags.writeable = last.flags.writeable = False
    return Panel(
        index=index,
        symbols=pd.Index(list(frames), dtype=object, name="symbol"),
        fields=names,
        layout=layout,
        _values=MappingProxyType(values),
        _first=first,
        _last=last,
    )


def _select(panel: Panel, wanted: tuple[str, ...]) -> Panel:
    """``panel`` with only the ``wanted`` fields (the arrays are shared, not copied)."""
    for name in wanted:
        panel.field(name)  # raises, naming the fields it has
    values = MappingProxyType({name: panel._values[name] for name in wanted})
    return dataclasses.replace(panel, fields=wanted, _values=values)


def _check_fields_arg(fields: Sequence[str] | None) -> tuple[str, ...] | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        fields = (fields,)
    if not fields:
        raise ConfigError(f"fields is empty; name bar fields from {', '.join(BAR_COLUMNS)}")
    for name in fields:
        if name not in BAR_COLUMNS:
            raise ConfigError(
                f"fields: {name!r} is not a bar field{did_you_mean(str(name), BAR_COLUMNS)}; "
                f"choose from {', '.join(BAR_COLUMNS)}"
            )
    if len(set(fields)) != len(fields):
        raise ConfigError(f"fields repeats a field: {list(fields)}")
    return tuple(c for c in BAR_COLUMNS if c in fields)


def _check_symbol(sym: Any, where: str) -> str:
    if not isinstance(sym, str):
        raise CelerisTypeError(
            f"symbols must be strings; {where} has the symbol {sym!r} "
            f"({type(sym).__name__}); rename it, e.g. str({sym!r})"
        )
    if not sym:
        raise CelerisTypeError(f"symbols must be non-empty strings; {where} has ''")
    return sym


def _split(bars: Any, symbol: str) -> tuple[dict[str, pd.DataFrame], Layout]:
    """``bars`` as ``{symbol: frame with field columns}`` plus the layout it came in."""
    if isinstance(bars, Mapping):
        if not bars:
            raise ConfigError("bars is an empty dict; give at least one {symbol: bar frame}")
        frames: dict[str, pd.DataFrame] = {}
        for sym, frame in bars.items():
            _check_symbol(sym, "the dict")
            if not isinstance(frame, pd.DataFrame):
                raise CelerisTypeError(
                    f"bars[{sym!r}] is a {type(frame).__name__}; give a bar frame (a DataFrame "
                    "with columns open, high, low, close, volume)"
                )
            frames[sym] = _with_checked_index(frame, f"bars[{sym!r}] index")
        return frames, "dict"
    if not isinstance(bars, pd.DataFrame):
        raise CelerisTypeError(
            f"bars is a {type(bars).__name__}; give a DataFrame with (symbol, field) MultiIndex "
            "columns, a dict {symbol: bar frame}, or one bar frame"
        )
    if not isinstance(bars.columns, pd.MultiIndex):
        frame = _with_checked_index(bars, "bars index")
        return {_check_symbol(symbol, "symbol="): frame}, "bar frame"
    level = field_level(bars.columns)
    bars = _with_checked_index(bars, "bars index")
    # fields are matched in any case ('Close' as yfinance writes it): name them in lower case
    fields = [str(f).lower() for f in bars.columns.get_level_values(level)]
    labels = [bars.columns.get_level_values(i) for i in range(2)]
    labels[level] = pd.Index(fields)
    bars = bars.set_axis(pd.MultiIndex.from_arrays(labels, names=bars.columns.names), axis=1)
    dup = bars.columns.duplicated()
    if dup.any():
        raise DataError(
            f"bars has the column {bars.columns[int(np.flatnonzero(dup)[0])]!r} more than once; "
            "each (symbol, field) pair must appear once"
        )
    sym_level = 1 - level
    frames = {}
    for sym in bars.columns.get_level_values(sym_level).unique():
        frames[_check_symbol(sym, "the symbol level of the columns")] = bars.xs(
            sym, axis=1, level=sym_level
        )
    return frames, ("(symbol, field)" if level == 1 else "(field, symbol)")


def _panel_fields(
    frames: Mapping[str, pd.DataFrame], wanted: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The fields of the panel; every asset must have them all."""
    if wanted is None:
        for sym, frame in frames.items():
            for col in frame.columns:
                if col not in BAR_COLUMNS:
                    raise ConfigError(
                        f"bars[{sym!r}] has the column {col!r}, not a bar field"
                        f"{did_you_mean(str(col), BAR_COLUMNS)}; fields are "
                        f"{', '.join(BAR_COLUMNS)} (pass fields=(...) to keep only some)"
                        + _closes_hint(frame)
                    )
        present = {c for frame in frames.values() for c in frame.columns}
        if not present:
            raise ConfigError(
                "bars has no columns; give bar frames with columns " + ", ".join(BAR_COLUMNS)
            )
        wanted = tuple(c for c in BAR_COLUMNS if c in present)
    for sym, frame in frames.items():
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise DataError(
                f"bars[{sym!r}] has no {missing[0]!r} field; every symbol needs the same fields "
                f"({', '.join(wanted)}): add it, or pass fields=(...) naming the ones all have"
            )
    return wanted


def _closes_hint(frame: pd.DataFrame) -> str:
    if any(_is_field(c) for c in frame.columns):
        return ""
    return (
        "; for a frame of closes with one column per asset, write "
        "pd.concat({'close': closes}, axis=1)"
    )


def _with_checked_index(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    index = check_time_index(frame.index, what)
    if len(index) == 0:
        raise DataError(f"{what} is empty; give at least one bar per symbol")
    return frame if index is frame.index else frame.set_axis(index, axis=0)


def _union_index(indexes: Iterable[pd.Index]) -> pd.DatetimeIndex:
    stamps = np.unique(
        np.concatenate([pd.DatetimeIndex(ix).asi8 for ix in indexes])
    )  # sorted, each once
    return pd.DatetimeIndex(pd.to_datetime(stamps, utc=True), name="time").as_unit("ns")


def _listed_span(
    sym: str, frame: pd.DataFrame, names: tuple[str, ...], nan_policy: NanPolicy
) -> pd.DataFrame:
    """The asset's bars from its first valid bar to its last, validated by the bar schema."""
    if list(frame.columns) != list(names):
        frame = frame[list(names)]  # validate then returns exactly these columns, in order
    has_value = frame.notna().to_numpy().any(axis=1)
    rows = np.flatnonzero(has_value)
    if rows.size == 0:
        raise DataError(
            f"symbol {sym!r} has no valid bar: every {'/'.join(names)} value is NaN; "
            "drop the symbol or give its bars"
        )
    span = frame.iloc[rows[0] : rows[-1] + 1]
    try:
        checked = validate(span, nan_policy=nan_policy, columns=names)
    except DataError as exc:
        raise DataError(f"symbol {sym!r}: {exc}") from exc
    return checked


def _onto_union(
    sym: str, span: pd.DataFrame, union: pd.DatetimeIndex, nan_policy: NanPolicy
) -> pd.DataFrame:
    """The validated span on the union's timestamps over the same period."""
    if len(span) == len(union):
        return span  # no timestamp missing (drop removes rows, so not a drop that removed some)
    aligned = span.reindex(union)
    missing = ~union.isin(span.index)
    if nan_policy == "error":
        at = union[int(np.flatnonzero(missing)[0])]
        raise DataError(
            f"symbol {sym!r} has no bar at {at}, a timestamp of another symbol inside its listed "
            f"span {span.index[0]} to {span.index[-1]} ({int(missing.sum())} such timestamp(s)); "
            "pass nan_policy='ffill' to carry its last bar forward or 'drop' to leave it without "
            "a bar there"
        )
    if nan_policy == "ffill":
        return aligned.ffill()
    return aligned
