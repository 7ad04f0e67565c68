"""Validated per-column instrument and order-type options of a grouped backtest.

Spot or perpetual futures, and market or limit orders.

:func:`instrument_options` reads the perpetual-futures keywords of ``from_signals`` and
``from_orders`` (``instrument``, ``leverage``, ``margin_mode``, ``maintenance_margin``,
``liquidation_fee``, ``funding_rate``, ``mark_price``) into the arrays the grouped kernel takes;
:func:`column_params` lays out every column's kernel parameters, spot or perp, in one place.
The formulas these feed are in :mod:`celeris.backtest.perp` and docs/perpetuals.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import _inputs as I
from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest.group import Prices
from celeris.backtest.perp import maintenance_tiers
from celeris.data.funding_schema import MAX_ABS_RATE, first_bad_rate
from celeris.errors import CelerisTypeError, ConfigError, DataError

INSTRUMENTS = {"spot": 0, "perp": 1}
ORDER_TYPES = {"market": 0, "limit": 1}
MARGIN_MODES = {"isolated": 0, "cross": 1}
#: Defaults: Binance USDⓈ-M's first-tier maintenance rate for the majors is 0.4-0.5%; the
#: liquidation (clearance) fee differs by exchange and contract: set yours.
DEFAULT_MAINTENANCE_MARGIN = 0.005
DEFAULT_LIQUIDATION_FEE = 0.0


@dataclass(frozen=True)
class InstrumentOptions:
    """Per-column instrument arrays (length n_cols) and the book-wide perp inputs."""

    perp: np.ndarray
    leverage: np.ndarray
    cross: np.ndarray
    liquidation_fee: np.ndarray
    tier_index: np.ndarray
    tiers: np.ndarray  # (n_tables, n_tiers, 3)
    funding: np.ndarray  # (n_bars, n_assets) or (1, 1) zeros
    mark: np.ndarray  # (n_bars, n_assets) or (1, 1): the bar's open
    limit: np.ndarray  # 1: signals rest as limit orders
    maker_fee: np.ndarray
    expiry: np.ndarray  # bars a limit order rests (inf: until filled or replaced)

    @property
    def any_perp(self) -> bool:
        return bool(self.perp.any())

    def kernel_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.funding, self.mark, self.tiers)


def instrument_options(
    prices: Prices,
    width: int,
    assets: np.ndarray,
    *,
    instrument: Any = "spot",
    leverage: Any = 1.0,
    margin_mode: Any = "isolated",
    maintenance_margin: Any = DEFAULT_MAINTENANCE_MARGIN,
    liquidation_fee: Any = DEFAULT_LIQUIDATION_FEE,
    funding_rate: Any = None,
    mark_price: Any = None,
    order_type: Any = "market",
    maker_fee: Any = None,
    limit_expiry: Any = None,
    fees: np.ndarray | None = None,
) -> InstrumentOptions:
    """Validate the instrument and order-type keywords for ``width`` columns trading ``assets``.

    ``maker_fee=None`` charges limit fills the taker ``fees``; ``limit_expiry=None`` lets a
    limit order rest until it fills or the next signal replaces it.
    """
    perp = _per_column("instrument", I.choice_codes("instrument", instrument, INSTRUMENTS), width)
    lev = _per_column("leverage", I.param_values("leverage", leverage), width)
    if not np.isfinite(lev).all() or (lev < 1).any():
        raise ConfigError(f"leverage must be a finite number >= 1, got {leverage!r}")
    if (lev[perp == 0] != 1).any():
        raise ConfigError("leverage applies to perpetual futures: pass instrument='perp' with it")
    cross = _per_column(
        "margin_mode", I.choice_codes("margin_mode", margin_mode, MARGIN_MODES), width
    )
    fee = _per_column("liquidation_fee", I.param_values("liquidation_fee", liquidation_fee), width)
    I.check_range("liquidation_fee", fee, low=0, high=1)
    tiers, tier_index = _tier_tables(maintenance_margin, prices.symbols, assets)
    any_perp = bool(perp.any())
    if not any_perp and (funding_rate is not None or mark_price is not None):
        raise ConfigError("funding_rate and mark_price apply to instrument='perp'")
    funding = _per_asset("funding_rate", funding_rate, prices) if any_perp else None
    if funding is not None:
        found = first_bad_rate(np.nan_to_num(funding.ravel(), nan=0.0))
        if found is not None:
            row, col = divmod(found[0], funding.shape[1])
            raise DataError(
                f"funding_rate at {prices.index[row]} ({prices.symbols[col]!r}) is "
                f"{funding[row, col]!r}: rates must be finite and within +/-{MAX_ABS_RATE}"
            )
        funding = np.nan_to_num(funding, nan=0.0)
    mark = _per_asset("mark_price", mark_price, prices) if any_perp else None
    if mark is not None and (mark[~np.isnan(mark)] <= 0).any():
        raise DataError("mark_price must be > 0")
    limit = _per_column("order_type", I.choice_codes("order_type", order_type, ORDER_TYPES), width)
    taker = np.zeros(width) if fees is None else np.broadcast_to(fees, (width,))
    maker = (
        taker
        if maker_fee is None
        else _per_column("maker_fee", I.param_values("maker_fee", maker_fee), width)
    )
    I.check_range("maker_fee", maker, low=0, high=1)
    expiry = np.full(width, np.inf)
    if limit_expiry is not None:
        expiry = _per_column("limit_expiry", I.param_values("limit_expiry", limit_expiry), width)
        if (expiry < 1).any() or (expiry != np.floor(expiry)).any():
            raise ConfigError(
                f"limit_expiry must be a whole number of bars >= 1, got {limit_expiry!r}"
            )
    return InstrumentOptions(
        perp=perp,
        leverage=lev,
        cross=cross,
        liquidation_fee=fee,
        tier_index=tier_index,
        tiers=tiers,
        funding=np.zeros((1, 1)) if funding is None else np.ascontiguousarray(funding),
        mark=np.zeros((1, 1)) if mark is None else np.ascontiguousarray(mark),
        limit=limit,
        maker_fee=np.asarray(maker, dtype=np.float64),
        expiry=expiry,
    )


def _per_column(name: str, values: np.ndarray, width: int) -> np.ndarray:
    if values.size not in (1, width):
        raise ConfigError(
            f"{name} has {values.size} values for {width} columns (give 1 or one per column)"
        )
    return np.broadcast_to(values, (width,)).astype(np.float64)


def _tier_tables(spec: Any, symbols: pd.Index, assets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One tier table per asset (a rate, a table, or a mapping symbol -> rate or table)."""
    if isinstance(spec, Mapping) and not _looks_like_tier_row(spec):
        unknown = [s for s in spec if s not in set(symbols)]
        if unknown:
            raise ConfigError(
                f"maintenance_margin names unknown symbols {unknown}; the assets are {list(symbols)}"
            )
        missing = [s for s in symbols if s not in spec]
        if missing:
            raise ConfigError(f"maintenance_margin has no table for {missing}: give one per symbol")
        tables = [maintenance_tiers(spec[s]) for s in symbols]
        index = assets
    else:
        tables = [maintenance_tiers(spec)]
        index = np.zeros(len(assets), dtype=np.int64)
    depth = max(t.shape[0] for t in tables)
    out = np.zeros((len(tables), depth, 3))
    for k, table in enumerate(tables):
        out[k, : table.shape[0]] = table
        out[k, table.shape[0] :] = table[-1]  # padding repeats the last tier (same bracket)
        out[k, table.shape[0] - 1 :, 0] = np.inf
    return out, index.astype(np.float64)


def _looks_like_tier_row(spec: Mapping[Any, Any]) -> bool:
    keys = {"notional_cap", "rate", "cum", "notionalCap", "maintMarginRatio"}
    return any(k in keys for k in spec)


def _per_asset(name: str, data: Any, prices: Prices) -> np.ndarray | None:
    """A (n_bars, n_assets) array from a frame with symbol columns, a series or an array."""
    if data is None:
        return None
    shape = (prices.n_bars, prices.n_assets)
    if isinstance(data, pd.DataFrame | pd.Series):
        if not data.index.equals(prices.index):
            missing = prices.index.difference(data.index)
            where = f"; first bar without a value: {missing[0]}" if len(missing) else ""
            raise DataError(
                f"{name} is not aligned to the bars ({len(data.index)} rows vs {len(prices.index)} "
                f"bars{where}); put it on the bar index first (celeris.data.align_funding)"
            )
        if isinstance(data, pd.DataFrame):
            unknown = [c for c in data.columns if c not in set(prices.symbols)]
            missing_cols = [s for s in prices.symbols if s not in set(data.columns)]
            if unknown or missing_cols:
                raise DataError(
                    f"{name} columns must be the symbols {list(prices.symbols)}; "
                    f"unknown {unknown}, missing {missing_cols}"
                )
            data = data[list(prices.symbols)]
        raw = data.to_numpy()
    else:
        raw = np.asarray(data)
    if raw.dtype == object or not np.issubdtype(raw.dtype, np.number):
        raise CelerisTypeError(f"{name} must be numeric, got dtype {raw.dtype}")
    arr = np.asarray(raw, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape[0] != prices.n_bars or arr.shape[1] not in (1, prices.n_assets):
        raise DataError(f"{name} has shape {np.shape(raw)}; expected {shape} or ({prices.n_bars},)")
    return np.array(np.broadcast_to(arr, shape))


def column_params(
    params: np.ndarray, assets: np.ndarray, prices: Prices, inst: InstrumentOptions
) -> np.ndarray:
    """Every column's kernel parameters: ``params`` (kernel.P_*) and the grouped kernel's C_*."""
    width = params.shape[0]
    out = np.empty((width, GK.N_COL_PARAMS))
    out[:, : K.N_PARAMS] = params
    out[:, GK.C_ASSET] = assets
    out[:, GK.C_FIRST] = prices.first[assets]
    out[:, GK.C_LAST] = prices.last[assets]
    out[:, GK.C_PERP] = inst.perp
    out[:, GK.C_LEVERAGE] = inst.leverage
    out[:, GK.C_CROSS] = inst.cross
    out[:, GK.C_LIQ_FEE] = inst.liquidation_fee
    out[:, GK.C_TIERS] = inst.tier_index
    out[:, GK.C_LIMIT] = inst.limit
    out[:, GK.C_MAKER_FEE] = inst.maker_fee
    out[:, GK.C_EXPIRY] = inst.expiry
    return out


def limit_prices(data: Any, n_bars: int, width: int, index: pd.Index, execution: str) -> np.ndarray:
    """Limit prices per bar and column, (n_bars, width or 1); NaN bars place market orders.

    Under next-open execution they are shifted a bar with the signals they price.
    """
    if isinstance(data, pd.DataFrame | pd.Series) and not data.index.equals(index):
        raise DataError(
            f"limit_price is not aligned to the bars ({len(data.index)} rows vs {n_bars} bars)"
        )
    raw = data.to_numpy() if isinstance(data, pd.DataFrame | pd.Series) else np.asarray(data)
    if raw.dtype == object or not np.issubdtype(raw.dtype, np.number):
        raise CelerisTypeError(f"limit_price must be numeric, got dtype {raw.dtype}")
    arr = np.array(raw, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] != n_bars or arr.shape[1] not in (1, width):
        raise DataError(
            f"limit_price has shape {np.shape(raw)}; expected ({n_bars},) or ({n_bars}, {width})"
        )
    if (arr[~np.isnan(arr)] <= 0).any() or np.isinf(arr).any():
        raise DataError("limit_price must be > 0 and finite (NaN: a market order)")
    if execution == "next_open":
        shifted = np.full_like(arr, np.nan)
        shifted[1:] = arr[:-1]
        arr = shifted
    return np.ascontiguousarray(arr)


def group_kinds(perp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Whether each group (columns ``offsets[g]:offsets[g+1]``, kernel order) is a perp book.

    A group trades spot or perpetuals, not both: a perp book's cash is a margin wallet.
    """
    kinds = np.zeros(len(offsets) - 1, dtype=bool)
    for g in range(len(offsets) - 1):
        members = perp[offsets[g] : offsets[g + 1]]
        if members.any() and not members.all():
            raise ConfigError(
                f"group {g} mixes spot and perpetual columns; a cash-sharing group trades one "
                "kind (a perpetual book's cash is its margin wallet)"
            )
        kinds[g] = bool(members.any())
    return kinds
