"""Several ``--data`` sources for one book: store globs expanded, bars loaded and aligned.

Shared by ``celeris portfolio optimize|rebalance`` and the cash-sharing ``celeris backtest`` and
``celeris sweep``.
"""

from __future__ import annotations

import fnmatch
import glob
from typing import TYPE_CHECKING, Any

from celeris.cli._common import FILLED, Options, load_bars
from celeris.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def expand_sources(specs: list[str], *, command: str, minimum: int = 2) -> list[str]:
    """The ``--data`` sources with each store glob replaced by the stored keys it matches.

    A glob is a ``store:`` source with ``*``, ``?`` or ``[...]`` in it, matched against the
    store's ``EXCHANGE/SYMBOL/TIMEFRAME`` keys (``store:binance/*/USDT/1h``; ``*`` also matches
    ``/``), in sorted order. A glob that matches nothing, fewer than ``minimum`` sources in all,
    or a source given twice is a :class:`~celeris.errors.ConfigError`.
    """
    out: list[str] = []
    for spec in specs:
        if spec.startswith("store:") and glob.has_magic(spec):
            out.extend(_store_matches(spec))
        else:
            out.append(spec)
    if len(out) < minimum:
        shown = f" ({', '.join(out)})" if out else ""
        raise ConfigError(
            f"{command} needs at least {minimum} --data sources, got {len(out)}{shown}"
        )
    seen: set[str] = set()
    for spec in out:
        if spec in seen:
            raise ConfigError(f"--data {spec} is given more than once")
        seen.add(spec)
    return out


def _store_matches(pattern: str) -> list[str]:
    from celeris.data.store import Store

    store = Store()
    listing = store.list()
    keys = [
        f"store:{ex}/{sym}/{tf}"
        for ex, sym, tf in zip(
            listing["exchange"], listing["symbol"], listing["timeframe"], strict=True
        )
    ]
    found = sorted(k for k in keys if fnmatch.fnmatchcase(k, pattern))
    if not found:
        stored = ", ".join(sorted(keys)[:8]) + (" ..." if len(keys) > 8 else "") or "nothing"
        raise ConfigError(
            f"--data {pattern} matches no stored bars (the store at {store.root} has {stored})"
        )
    return found


def load_sources(specs: list[str], span: Options = FILLED) -> dict[str, pd.DataFrame]:
    """Each source's bars (``--start``/``--end`` applied), by source."""
    return {spec: load_bars(spec, span) for spec in specs}


def common_bars(
    bars: dict[str, pd.DataFrame], *, command: str
) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """The bars of every source on the timestamps all of them have, and how many each loses.

    The bars a source has that another lacks are counted (to be reported), never dropped
    silently. Fewer than 3 common timestamps is a :class:`~celeris.errors.ConfigError`.
    """
    common: Any = None
    for frame in bars.values():
        common = frame.index if common is None else common.intersection(frame.index)
    assert common is not None
    dropped = {spec: int(len(f) - f.index.isin(common).sum()) for spec, f in bars.items()}
    if len(common) < 3:
        raise ConfigError(
            f"the --data sources share only {len(common)} timestamps "
            f"({', '.join(f'{s}: {len(f)} bars' for s, f in bars.items())}); "
            f"{command} needs returns on common dates"
        )
    return {spec: f.loc[common] for spec, f in bars.items()}, dropped


def load_panel(specs: list[str], span: Options = FILLED, nan_policy: str = "error") -> Any:
    """The sources' bars as one :class:`~celeris.data.panel.Panel` on the union of their
    timestamps (an asset without a bar before its first or after its last is not listed
    there). A bar missing inside an asset's span is ``nan_policy``'s
    (:func:`~celeris.data.panel.to_panel`): an error naming it, carried forward (``ffill``) or
    left without a bar (``drop``)."""
    from typing import cast

    from celeris.data.panel import to_panel
    from celeris.data.schema import NanPolicy, check_nan_policy

    policy = cast(NanPolicy, check_nan_policy(nan_policy))
    return to_panel(load_sources(specs, span), nan_policy=policy)


def _own_bars(panel: Any, symbol: str) -> tuple[pd.DataFrame, Any]:
    """One asset's own bars (its listed span, without the bars a ``drop`` NaN policy left
    empty) and their positions in the panel."""
    import numpy as np
    import pandas as pd

    close = panel.field("close")[symbol].to_numpy()
    rows = np.flatnonzero(~np.isnan(close))  # [T_own]
    frame = pd.DataFrame({f: panel.field(f)[symbol].to_numpy()[rows] for f in panel.fields})
    frame.index = panel.index[rows]
    return frame, rows


def asset_signals(strategy: Any, panel: Any, combos: pd.DataFrame) -> tuple[Any, Any]:
    """Entries and exits of every parameter set of ``combos`` on every asset of ``panel``.

    Each asset's signals are the strategy's on that asset's own bars (its listed span: an
    indicator never sees another asset's prices, the NaN before a listing or a bar left empty
    by ``nan_policy="drop"``); False where the asset has no bar. Columns are parameter sets x assets, set-major (set 0's assets, then
    set 1's...), labelled by the parameters and ``symbol``: the layout in which
    ``from_signals(panel, ..., cash_sharing=True)`` puts each parameter set on its own account.
    """
    import numpy as np
    import pandas as pd

    n_sets, n_assets = len(combos), len(panel.symbols)
    shape = (len(panel.index), n_sets * n_assets)  # [T, sets x assets], set-major
    entries = np.zeros(shape, dtype=np.bool_)
    exits = np.zeros(shape, dtype=np.bool_)
    for a, symbol in enumerate(panel.symbols):
        bars, rows = _own_bars(panel, symbol)
        e, x = strategy.prepare(bars, combos)(slice(0, n_sets))  # [T_own, sets]
        entries[rows, a::n_assets] = e
        exits[rows, a::n_assets] = x
    sets = pd.MultiIndex.from_frame(combos) if combos.shape[1] else pd.RangeIndex(n_sets)
    rows = np.repeat(np.arange(n_sets), n_assets)
    columns = pd.MultiIndex.from_arrays(
        [sets.get_level_values(n)[rows] for n in combos.columns]
        + [np.tile(panel.symbols.to_numpy(), n_sets)],
        names=[*combos.columns, "symbol"],
    )
    return (
        pd.DataFrame(entries, index=panel.index, columns=columns),
        pd.DataFrame(exits, index=panel.index, columns=columns),
    )
