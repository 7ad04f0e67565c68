"""Built-in strategies: entries/exits over a parameter grid, and how to add your own.

A :class:`Strategy` names its parameters (with defaults, bounds and a constraint such as
``fast < slow``) and builds signals for many parameter combinations at once. Building happens
in two steps so that large sweeps stay in bounded memory: :meth:`Strategy.prepare` computes each
distinct indicator once for the whole grid, then :meth:`Prepared.signals` turns any slice of
the combinations into Fortran-ordered entry/exit matrices, chunk by chunk.

Adding a strategy::

    from celeris.backtest.strategies import Param, Strategy, register

    def my_prepare(bars, combos):
        ...  # indicator matrices, computed once per distinct window
        def signals(rows):   # rows: a slice of combos
            ...  # return (entries, exits), bool arrays (n_bars, len(rows))
        return signals

    register(Strategy("my_rule", (Param("window", 20, 2, 500),), my_prepare))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from celeris.backtest import signals_nb as S
from celeris.backtest._inputs import check_index
from celeris.checks import check_int
from celeris.errors import ConfigError, DataError, did_you_mean
from celeris.indicators.nb import MA_STATE

SignalFn = Callable[[slice], tuple[np.ndarray, np.ndarray]]


class Panel(Protocol):
    """A strategy's signals for many symbols and one parameter set, called every step with
    the history so far (``times`` ``[n_bars]``, ``close`` ``[n_symbols, n_bars]``) and the
    number ``k`` of new bars at its end; returns their ``(entries, exits)``, ``[k, n_symbols]``
    each. It may keep state between calls (see :attr:`Strategy.panel`)."""

    def __call__(
        self, times: np.ndarray, close: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Param:
    """A strategy parameter: name, default, inclusive bounds and whether it is an integer."""

    name: str
    default: float
    low: float
    high: float
    integer: bool = True
    help: str = ""

    def check(self, value: Any) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter {self.name} must be a number, got {value!r}") from None
        if not np.isfinite(v):
            raise ConfigError(f"parameter {self.name} must be finite, got {value!r}")
        if self.integer and v != int(v):
            raise ConfigError(f"parameter {self.name} must be an integer, got {value!r}")
        if not self.low <= v <= self.high:
            raise ConfigError(
                f"parameter {self.name}={value!r} is outside [{self.low:g}, {self.high:g}]"
            )
        return v


@dataclass(frozen=True)
class Strategy:
    """A named rule over a parameter grid.

    ``prepare(bars, combos)`` receives the validated bar frame and a frame of parameter
    combinations (one row per variant) and returns a function ``signals(rows: slice)`` giving
    ``(entries, exits)`` bool arrays of shape ``(n_bars, rows)`` for that slice of combinations.
    ``constraint(combos)`` returns a boolean mask of admissible rows (e.g. ``fast < slow``).
    """

    name: str
    params: tuple[Param, ...]
    prepare: Callable[[pd.DataFrame, pd.DataFrame], SignalFn]
    constraint: Callable[[pd.DataFrame], np.ndarray] | None = None
    constraint_text: str = ""
    description: str = ""
    max_warmup: Callable[[pd.DataFrame], int] = field(default=lambda combos: 0)
    needs: tuple[str, ...] = ("close",)
    #: Optional fast path for many symbols and one parameter set (the live loop):
    #: ``panel(params)`` makes a :class:`Panel`, called with each step's history; its signals
    #: are bit for bit :meth:`signals`'s on the history it started from and every bar since
    #: (the moving-average crosses keep their running sums between calls).
    panel: Callable[[Mapping[str, float]], Panel] | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ConfigError(
            f"strategy {self.name!r} has no parameter {name!r}{did_you_mean(name, self.param_names)}; "
            f"its parameters are {', '.join(self.param_names)}{_option_hint(name)}"
        )

    def axes(self, grid: Mapping[str, Any] | None = None) -> list[list[float]]:
        """Checked value lists of every parameter (defaults for those ``grid`` leaves out)."""
        grid = dict(grid or {})
        for name in grid:
            self.param(name)
        axes = []
        for p in self.params:
            values = grid.get(p.name, [p.default])
            values = [values] if np.isscalar(values) else list(values)
            if not values:
                raise ConfigError(f"parameter {p.name} has an empty list of values")
            axes.append(list(dict.fromkeys(p.check(v) for v in values)))
        return axes

    def count(self, grid: Mapping[str, Any] | None = None) -> tuple[int, int]:
        """``(combinations, admissible)`` of a grid without building it.

        The product of the value lists is exact; the admissible count is exact when the
        strategy has no constraint, else estimated from 20,000 combinations drawn at random
        (seeded, so the same grid gives the same estimate).
        """
        axes = self.axes(grid)
        total = math.prod(len(a) for a in axes)
        if self.constraint is None or total == 0:
            return total, total
        if total <= _SAMPLE:
            return total, len(self._constrained(axes, np.arange(total)))
        rng = np.random.default_rng(0)
        picks = rng.integers(0, total, _SAMPLE)
        share = len(self._constrained(axes, picks)) / _SAMPLE
        return total, round(share * total)

    def _constrained(self, axes: list[list[float]], flat: np.ndarray) -> pd.DataFrame:
        """Rows ``flat`` (positions in the product of ``axes``) that pass the constraint."""
        shape = tuple(len(a) for a in axes)
        positions = np.unravel_index(flat, shape)
        combos = pd.DataFrame(
            {
                p.name: np.asarray(axis, dtype=np.float64)[pos]
                for p, axis, pos in zip(self.params, axes, positions, strict=True)
            }
        )
        if self.constraint is not None:
            combos = combos[self.constraint(combos)]
        return combos

    def grid(
        self,
        grid: Mapping[str, Any] | pd.DataFrame | None = None,
        *,
        max_variants: int | None = None,
    ) -> pd.DataFrame:
        """Return the admissible combinations of a grid (product of value lists) as a frame.

        Missing parameters take their default; every value is checked against its bounds; the
        strategy's constraint removes inadmissible rows. Raises ConfigError when none remain, and
        when more than ``max_variants`` would remain; that is checked from the value lists
        before anything is built, and the product is built in chunks, so an oversized grid is
        refused in milliseconds instead of exhausting memory.
        """
        if isinstance(grid, pd.DataFrame):
            combos = grid.copy()
            for name in combos.columns:
                self.param(name)
            check_limit(len(combos), len(combos), max_variants, self)
        else:
            axes = self.axes(grid)
            total, admissible = self.count(grid)
            check_limit(total, admissible, max_variants, self)
            chunks = [
                self._constrained(axes, np.arange(lo, min(lo + _BUILD_CHUNK, total)))
                for lo in range(0, total, _BUILD_CHUNK)
            ]
            combos = pd.concat(chunks, ignore_index=True)
        from_frame = isinstance(grid, pd.DataFrame)
        for p in self.params:
            if p.name not in combos:
                combos[p.name] = p.default
            if from_frame:  # value lists were checked once per distinct value above
                combos[p.name] = [p.check(v) for v in combos[p.name]]
            if p.integer:
                combos[p.name] = combos[p.name].astype(np.int64)
        combos = combos[list(self.param_names)].drop_duplicates(ignore_index=True)
        if self.constraint is not None:
            combos = combos[self.constraint(combos)].reset_index(drop=True)
        if combos.empty:
            raise ConfigError(
                f"no admissible parameter combination for {self.name}"
                + (f" (constraint: {self.constraint_text})" if self.constraint_text else "")
            )
        check_limit(len(combos), len(combos), max_variants, self)
        return combos

    def signals(
        self, bars: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> tuple[pd.Series, pd.Series]:
        """Entries and exits of one parameter set, as boolean Series on the bars' index."""
        combos = self.grid({k: [v] for k, v in (params or {}).items()})
        if len(combos) != 1:  # pragma: no cover - grid of singletons has one row
            raise ConfigError("signals() takes exactly one value per parameter")
        entries, exits = self.prepare(bars, combos)(slice(0, 1))
        return (
            pd.Series(entries[:, 0].copy(), index=bars.index, name="entries"),
            pd.Series(exits[:, 0].copy(), index=bars.index, name="exits"),
        )


def _option_hint(name: str) -> str:
    """A pointer to where a backtest option goes when it was given as a strategy parameter."""
    from celeris.backtest import signals  # the table of from_signals' per-column options

    if name not in {o.name for o in signals.OPTIONS}:
        return ""
    return (
        f" ({name} is a backtest option: pass it as {name}=... to from_signals or sweep, "
        f"--{name.replace('_', '-')} on the command line where the command has it, or sweep it "
        f"as a grid axis: {{{name!r}: [...]}} in sweep/walk_forward, --grid {name}=...)"
    )


#: Combinations drawn to estimate how many of a large grid pass its constraint.
_SAMPLE = 20_000
#: Rows of the product built at a time (before the constraint) when a grid is materialised.
_BUILD_CHUNK = 1_000_000


def check_limit(
    total: int, admissible: int, limit: int | None, strategy: Strategy, detail: str = ""
) -> None:
    """Refuse ``admissible`` variants (of ``total`` combinations) beyond ``limit``
    (``max_variants``); ``detail`` says how the count is made up, e.g. ``" (... x 4 option
    values)"``."""
    if limit is None:
        return
    limit = check_int("max_variants", limit, minimum=1)
    if admissible > limit:
        about = (
            f"{admissible:,} variants"
            if admissible == total
            else f"~{admissible:,} admissible variants (of {total:,} combinations)"
        )
        raise ConfigError(
            f"the grid of {strategy.name} has {about}{detail}, more than "
            f"max_variants={limit:,}; narrow the grid (fewer values, a larger step) or raise the "
            "limit (max_variants=... in Python, --max-variants on the command line)"
        )


def _close(bars: pd.DataFrame) -> np.ndarray:
    return np.ascontiguousarray(bars["close"].to_numpy(dtype=np.float64))


def _unique_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq.astype(np.int64), inverse.astype(np.int64)


def _ma_cross(kind: str) -> Callable[[pd.DataFrame, pd.DataFrame], SignalFn]:
    def prepare(bars: pd.DataFrame, combos: pd.DataFrame) -> SignalFn:
        from celeris.indicators import nb as ind

        ma_nb = ind.sma_nb if kind == "sma" else ind.ema_nb
        close = _close(bars)
        windows, inverse = _unique_index(np.concatenate([combos["fast"], combos["slow"]]))
        ma = ma_nb(close, windows)
        n = len(combos)
        fast_idx, slow_idx = inverse[:n], inverse[n:]
        buffers = S.SignalBuffers(close.shape[0])

        def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
            fi, si = fast_idx[rows], slow_idx[rows]
            entries, exits = buffers.take(fi.shape[0])
            S.cross_signals_nb(ma, fi, ma, si, entries, exits)
            return entries, exits

        return signals

    return prepare


class _MACrossPanel:
    """``sma_cross``/``ema_cross`` of one parameter set over many symbols, step by step: the
    moving averages' running state is kept between calls, so a call whose bar before the new
    ones is the last bar of the previous call advances over the new bars alone; any other
    (the first call, a history that jumped) starts again from the history it is given."""

    def __init__(self, kind: str, params: Mapping[str, float]) -> None:
        self.ema = kind == "ema"
        self.fast = np.int64(params["fast"])
        self.slow = np.int64(params["slow"])
        self._state = np.zeros((0, 2, MA_STATE))
        self._ready = np.zeros(0, dtype=np.bool_)
        self._last: int | None = None  # open time of the bar the state is after

    def __call__(
        self, times: np.ndarray, close: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n_sym, n = close.shape
        if times.shape != (n,) or not 1 <= k <= n:
            raise DataError(f"panel: {n} bars need {n} times and 1 <= k <= {n}, got "
                            f"{times.shape[0]} times and k={k}")  # fmt: skip
        if close.dtype != np.float64 or close.strides[-1] != close.itemsize:
            close = np.ascontiguousarray(close, dtype=np.float64)  # rows contiguous is enough
        if self._state.shape[0] != n_sym:
            self._state = np.zeros((n_sym, 2, MA_STATE))
            self._ready = np.zeros(n_sym, dtype=np.bool_)
        if n == k or self._last is None or int(times[n - k - 1]) != self._last:
            self._ready[:] = False
        entries = np.empty((k, n_sym), dtype=np.bool_)
        exits = np.empty((k, n_sym), dtype=np.bool_)
        self._last = None  # (until the kernel has run: an error leaves no half state)
        S.ma_cross_panel_nb(close, self.fast, self.slow, self.ema, np.int64(k), self._state,
                            self._ready, entries, exits)  # fmt: skip
        self._last = int(times[-1])
        return entries, exits


def _ma_cross_panel(kind: str) -> Callable[[Mapping[str, float]], Panel]:
    return lambda params: _MACrossPanel(kind, params)


def _rsi_reversion(bars: pd.DataFrame, combos: pd.DataFrame) -> SignalFn:
    from celeris.indicators import nb as ind

    close = _close(bars)
    windows, inverse = _unique_index(combos["window"].to_numpy())
    rsi = ind.rsi_nb(close, windows)
    lower = combos["lower"].to_numpy(dtype=np.float64)
    upper = combos["upper"].to_numpy(dtype=np.float64)
    buffers = S.SignalBuffers(close.shape[0])

    def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        idx = inverse[rows]
        entries, exits = buffers.take(idx.shape[0])
        S.band_signals_nb(rsi, idx, lower[rows], upper[rows], entries, exits)
        return entries, exits

    return signals


def _bbands_breakout(bars: pd.DataFrame, combos: pd.DataFrame) -> SignalFn:
    from celeris.indicators import nb as ind

    close = _close(bars)
    pairs = combos[["window", "nbdev"]].to_numpy(dtype=np.float64)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.ravel().astype(np.int64)
    upper = np.empty((close.shape[0], len(uniq)), order="F")
    middle = np.empty_like(upper)
    for j, (w, k) in enumerate(uniq):
        u, m, _ = ind.bbands_nb(close, np.array([int(w)], dtype=np.int64), k, k)
        upper[:, j] = u[:, 0]
        middle[:, j] = m[:, 0]
    close_2d = close.reshape(-1, 1)
    buffers = S.SignalBuffers(close.shape[0])

    def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        idx = inverse[rows]
        zero = np.zeros(idx.shape[0], dtype=np.int64)
        entries, exits, scratch_e, scratch_x = buffers.take(idx.shape[0], 4)
        S.cross_signals_nb(close_2d, zero, upper, idx, entries, scratch_x)  # close above upper band
        S.cross_signals_nb(close_2d, zero, middle, idx, scratch_e, exits)  # close below the middle
        return entries, exits

    return signals


def _donchian_breakout(bars: pd.DataFrame, combos: pd.DataFrame) -> SignalFn:
    from celeris.indicators import nb as ind

    close = _close(bars)
    high = np.ascontiguousarray(bars["high"].to_numpy(dtype=np.float64))
    low = np.ascontiguousarray(bars["low"].to_numpy(dtype=np.float64))
    windows, inverse = _unique_index(np.concatenate([combos["window"], combos["exit_window"]]))
    upper, _, lower = ind.donchian_nb(high, low, windows)
    # The channel of the bars *before* t: a breakout is a close beyond the previous extreme.
    upper = np.asfortranarray(np.vstack([np.full((1, upper.shape[1]), np.nan), upper[:-1]]))
    lower = np.asfortranarray(np.vstack([np.full((1, lower.shape[1]), np.nan), lower[:-1]]))
    n = len(combos)
    entry_idx, exit_idx = inverse[:n], inverse[n:]
    close_2d = close.reshape(-1, 1)
    buffers = S.SignalBuffers(close.shape[0])

    def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        ei, xi = entry_idx[rows], exit_idx[rows]
        zero = np.zeros(ei.shape[0], dtype=np.int64)
        entries, exits, scratch_e, scratch_x = buffers.take(ei.shape[0], 4)
        S.cross_signals_nb(close_2d, zero, upper, ei, entries, scratch_x)
        S.cross_signals_nb(close_2d, zero, lower, xi, scratch_e, exits)
        return entries, exits

    return signals


def _macd_cross(bars: pd.DataFrame, combos: pd.DataFrame) -> SignalFn:
    from celeris.indicators import nb as ind

    close = _close(bars)
    fast = combos["fast"].to_numpy(dtype=np.int64)
    slow = combos["slow"].to_numpy(dtype=np.int64)
    signal = combos["signal"].to_numpy(dtype=np.int64)
    buffers = S.SignalBuffers(close.shape[0])

    def signals(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        macd, sig, _ = ind.macd_nb(close, fast[rows], slow[rows], signal[rows])
        k = macd.shape[1]
        idx = np.arange(k, dtype=np.int64)
        entries, exits = buffers.take(k)
        S.cross_signals_nb(macd, idx, sig, idx, entries, exits)
        return entries, exits

    return signals


def _fast_lt_slow(combos: pd.DataFrame) -> np.ndarray:
    return (combos["fast"] < combos["slow"]).to_numpy()


def _lower_lt_upper(combos: pd.DataFrame) -> np.ndarray:
    return (combos["lower"] < combos["upper"]).to_numpy()


STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy to the registry used by sweeps, walk-forward and the CLI."""
    STRATEGIES[strategy.name] = strategy
    return strategy


register(
    Strategy(
        "sma_cross",
        (
            Param("fast", 10, 1, 10_000, help="fast SMA window"),
            Param("slow", 50, 2, 10_000, help="slow SMA window"),
        ),
        _ma_cross("sma"),
        _fast_lt_slow,
        "fast < slow",
        "long when the fast SMA crosses above the slow SMA, exit when it crosses below",
        lambda c: int(c["slow"].max()),
        panel=_ma_cross_panel("sma"),
    )
)
register(
    Strategy(
        "ema_cross",
        (
            Param("fast", 12, 1, 10_000, help="fast EMA span"),
            Param("slow", 26, 2, 10_000, help="slow EMA span"),
        ),
        _ma_cross("ema"),
        _fast_lt_slow,
        "fast < slow",
        "long when the fast EMA crosses above the slow EMA, exit when it crosses below",
        lambda c: int(c["slow"].max()),
        panel=_ma_cross_panel("ema"),
    )
)
register(
    Strategy(
        "rsi_reversion",
        (
            Param("window", 14, 2, 1_000, help="RSI window (Wilder)"),
            Param("lower", 30, 0, 100, integer=False, help="enter when RSI crosses below"),
            Param("upper", 70, 0, 100, integer=False, help="exit when RSI crosses above"),
        ),
        _rsi_reversion,
        _lower_lt_upper,
        "lower < upper",
        "long when RSI crosses below `lower` (oversold), exit when it crosses above `upper`",
        lambda c: int(c["window"].max()) + 1,
    )
)
register(
    Strategy(
        "bbands_breakout",
        (
            Param("window", 20, 2, 10_000, help="Bollinger window"),
            Param("nbdev", 2.0, 0.1, 10, integer=False, help="band width in standard deviations"),
        ),
        _bbands_breakout,
        None,
        "",
        "long when the close crosses above the upper band, exit when it crosses below the middle band",
        lambda c: int(c["window"].max()),
    )
)
register(
    Strategy(
        "donchian_breakout",
        (
            Param("window", 20, 2, 10_000, help="entry channel: highest high of the previous bars"),
            Param(
                "exit_window", 10, 2, 10_000, help="exit channel: lowest low of the previous bars"
            ),
        ),
        _donchian_breakout,
        None,
        "",
        "long when the close breaks the previous `window`-bar high, exit below the previous `exit_window`-bar low",
        lambda c: int(max(c["window"].max(), c["exit_window"].max())) + 1,
        needs=("high", "low", "close"),
    )
)
register(
    Strategy(
        "macd_cross",
        (
            Param("fast", 12, 2, 1_000, help="fast EMA"),
            Param("slow", 26, 3, 1_000, help="slow EMA"),
            Param("signal", 9, 1, 1_000, help="signal-line EMA"),
        ),
        _macd_cross,
        _fast_lt_slow,
        "fast < slow",
        "long when the MACD line crosses above its signal line, exit when it crosses below",
        lambda c: int((c["slow"] + c["signal"]).max()),
    )
)


#: Entry-point group through which installed packages offer strategies by name.
ENTRY_POINT_GROUP = "celeris.strategies"


def get_strategy(name: str | Strategy) -> Strategy:
    """Resolve a strategy: the one place every API function and CLI command looks one up.

    ``name`` is, in this order:

    * a :class:`Strategy` (returned as is);
    * a registered name: a built-in, or one added with :func:`register`;
    * ``package.module:attr`` or ``path/to/file.py:attr``: the module is imported (a file by
      its path) and ``attr`` is a :class:`Strategy` in it, or the name of one that importing
      the module registered;
    * the name of an entry point in the ``celeris.strategies`` group of an installed package
      (``zscore_reversion = "mypkg.strategies:zscore_reversion"``).

    A strategy found by a path or an entry point is registered under its name (unless that name
    is taken), so later look-ups by that name work in the same process.

    Raises
    ------
    ConfigError
        Nothing matches (with a did-you-mean hint over the registered and installed names), a
        file or module cannot be imported, or ``attr`` is missing or not a strategy.
    """
    if isinstance(name, Strategy):
        return name
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"a strategy is a name, MODULE:ATTR or FILE.py:ATTR, got {name!r}")
    if name in STRATEGIES:
        return STRATEGIES[name]
    if name.startswith("model:"):
        # A forecasting checkpoint, not a rule: it needs the models package, which sits beside
        # the backtest, not under it (celeris.research joins the two).
        raise ConfigError(
            f"{name!r} is a model checkpoint, not a rule strategy: model:PATH runs with "
            "`celeris backtest` and `celeris walk-forward` (celeris.research.backtest_model and "
            "model_walk_forward in Python)"
        )
    if ":" in name and not _is_drive_only(name):
        return _remember(_from_path(name))
    installed = _entry_points()
    if name in installed:
        return _remember(_from_entry_point(name, installed[name]))
    known = [*STRATEGIES, *installed]
    raise ConfigError(
        f"unknown strategy {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}; "
        "or give your own as MODULE:ATTR or path/to/file.py:ATTR (see docs/strategies.md)"
    )


def available_strategies() -> dict[str, Strategy]:
    """Every registered strategy plus those installed packages offer by entry point."""
    for ep_name, ep in _entry_points().items():
        if ep_name not in STRATEGIES:
            _remember(_from_entry_point(ep_name, ep))
    return dict(STRATEGIES)


def _remember(strategy: Strategy) -> Strategy:
    # Registered under its name for later look-ups, but never in place of another strategy.
    STRATEGIES.setdefault(strategy.name, strategy)
    return strategy


def _is_drive_only(spec: str) -> bool:
    # "C:\\strats\\z.py" has a colon but no ":attr" part.
    module, _, attr = spec.rpartition(":")
    return len(module) == 1 or not attr or "\\" in attr or "/" in attr


def _from_path(spec: str) -> Strategy:
    import importlib

    module_ref, _, attr = spec.rpartition(":")
    if not module_ref or not attr:
        raise ConfigError(f"strategy {spec!r}: expected MODULE:ATTR or path/to/file.py:ATTR")
    if module_ref.endswith(".py") or "/" in module_ref or "\\" in module_ref:
        module = _import_file(module_ref, spec)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise ConfigError(f"strategy {spec!r}: cannot import {module_ref!r}: {exc}") from None
    return _strategy_attr(module, attr, spec)


def _import_file(path_text: str, spec: str) -> Any:
    import hashlib
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"strategy {spec!r}: no file {path_text!r}")
    # One module per file (its name carries a hash of the path): importing twice reuses it.
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    mod_name = f"celeris_user_strategies.{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"strategy {spec!r}: {path_text!r} is not an importable Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[mod_name]
        raise ConfigError(
            f"strategy {spec!r}: importing {path_text!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    return module


def _strategy_attr(module: Any, attr: str, spec: str) -> Strategy:
    value = getattr(module, attr, None)
    if isinstance(value, Strategy):
        return value
    if value is None and attr in STRATEGIES:  # the module registered it under this name
        return STRATEGIES[attr]
    if value is None:
        found = [k for k, v in vars(module).items() if isinstance(v, Strategy)]
        raise ConfigError(
            f"strategy {spec!r}: the module has no {attr!r}{did_you_mean(attr, found)}"
            + (f"; its strategies: {', '.join(found)}" if found else "")
        )
    raise ConfigError(
        f"strategy {spec!r}: {attr!r} is a {type(value).__name__}, not a "
        "celeris.backtest.strategies.Strategy"
    )


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _from_entry_point(name: str, ep: Any) -> Strategy:
    try:
        value = ep.load()
    except Exception as exc:
        raise ConfigError(
            f"strategy {name!r} (entry point {ep.value!r} in {ENTRY_POINT_GROUP}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if isinstance(value, Strategy):
        return value
    if name in STRATEGIES:  # the entry point is a module that registers it
        return STRATEGIES[name]
    raise ConfigError(
        f"strategy {name!r}: entry point {ep.value!r} gave a {type(value).__name__}, not a Strategy"
    )


def parse_numbers(spec: str, name: str) -> list[float]:
    """Read a CLI grid value for ``name``: ``10``, ``10,20,30`` or ``start:stop[:step]`` (stop
    inclusive), as floats rounded to 10 decimals (``0.01:0.05:0.01`` gives 0.03, not
    0.030000000000000002); bounds are the caller's to check."""
    spec = spec.strip()
    try:
        parts = [float(x) for x in spec.split(":")] if ":" in spec else []
        listed = [] if ":" in spec else [float(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"cannot read {spec!r} for {name}: use a number, a list '10,20,30' or a range 'start:stop:step'"
        ) from None
    if ":" in spec:
        if len(parts) not in (2, 3):
            raise ConfigError(f"range {spec!r} for {name} must be start:stop or start:stop:step")
        start, stop = parts[0], parts[1]
        step = parts[2] if len(parts) == 3 else 1.0
        if step <= 0 or stop < start:
            raise ConfigError(f"range {spec!r} for {name} needs start <= stop and step > 0")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        values = [start + i * step for i in range(count)]
    else:
        values = listed
    if not values:
        raise ConfigError(f"no values for {name}")
    return [round(v, 10) for v in values]


def parse_values(spec: str, param: Param) -> list[float]:
    """Parse a CLI grid value: ``10``, ``10,20,30`` or ``start:stop[:step]`` (stop inclusive)."""
    return [param.check(v) for v in parse_numbers(spec, param.name)]


def parse_assignments(items: Iterable[str], strategy: Strategy) -> dict[str, list[float]]:
    """Parse ``name=spec`` items (CLI ``--param``/``--grid``) into a grid mapping."""
    grid: dict[str, list[float]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected NAME=VALUE, got {item!r}")
        name, spec = item.split("=", 1)
        param = strategy.param(name.strip())
        grid[param.name] = parse_values(spec, param)
    return grid


def check_bars(bars: Any, needs: Sequence[str] = ("close",)) -> pd.DataFrame:
    """Accept a bar frame (or a close Series) for strategies; refuse anything else clearly.

    Run once per sweep, walk-forward or optimisation, before any indicator is computed: the
    frame's type, the columns the strategy needs, at least one bar, and for a datetime index the
    bar schema's index rules as :func:`~celeris.backtest.from_signals` applies them
    (:func:`celeris.data.schema.check_time_index`, any time zone). Prices are checked by
    ``from_signals``. Not :func:`celeris.data.schema.validate`: backtests also take a naive or
    non-UTC datetime index, or none (a close Series on a ``RangeIndex``), and bars whose
    high/low/close relations a data vendor broke, which ``validate`` refuses.
    """
    if isinstance(bars, pd.Series):
        bars = bars.to_frame("close")
    if not isinstance(bars, pd.DataFrame):
        raise DataError(
            f"data must be a bar frame (DataFrame with OHLCV columns), got {type(bars).__name__}"
        )
    missing = [c for c in needs if c not in bars.columns]
    if missing:
        raise DataError(f"data lacks column(s) {', '.join(missing)} needed by this strategy")
    if bars.empty:
        raise DataError("data is empty")
    check_index(bars.index)
    return bars
