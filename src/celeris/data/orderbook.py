"""Order-book snapshots from a user's JSON file (or a mapping), validated.

A snapshot is a JSON object with ``bids`` and ``asks``, each a list of ``[price, size]``
levels (numbers or numeric strings, as exchanges send them), bids from the best (highest)
price down, asks from the best (lowest) price up; optional ``symbol`` and ``timestamp``::

    {"symbol": "BTC/USDT", "timestamp": "2024-01-01T00:00:00Z",
     "bids": [[42000.5, 1.2], [42000.0, 3.0]],
     "asks": [[42001.0, 0.8], [42002.5, 2.1]]}

Bad input raises :class:`~celeris.errors.DataError` naming the file, the level and the
problem (NaN, a negative size, a crossed book, unsorted or duplicate prices).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.data.sources import check_regular_file
from celeris.errors import DataError

__all__ = ["OrderBook", "load_orderbook"]


@dataclass(frozen=True)
class OrderBook:
    """An order-book snapshot: ``bids`` best (highest) first, ``asks`` best (lowest) first.

    Each side is a float64 array of shape ``(levels, 2)`` holding ``price, size``. Build one
    with :meth:`from_mapping` or :func:`load_orderbook`, which validate it.
    """

    bids: np.ndarray
    asks: np.ndarray
    symbol: str | None = None
    timestamp: pd.Timestamp | None = None

    @classmethod
    def from_mapping(cls, obj: Any, source: str = "order book") -> OrderBook:
        """Validate ``{"bids": [[price, size], ...], "asks": [...]}`` and return an OrderBook.

        ``source`` names the origin (a file path) in error messages.
        """
        if not isinstance(obj, Mapping):
            raise DataError(
                f"{source}: expected a JSON object with 'bids' and 'asks', got {type(obj).__name__}"
            )
        unknown = sorted(set(obj) - {"bids", "asks", "symbol", "timestamp"})
        if unknown:
            raise DataError(
                f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; expected bids, asks, symbol, timestamp"
            )
        sides = {}
        for side in ("bids", "asks"):
            if side not in obj:
                raise DataError(f"{source}: missing {side!r}")
            sides[side] = _levels(obj[side], side, source)
        bids, asks = sides["bids"], sides["asks"]
        if bids[0, 0] >= asks[0, 0]:
            raise DataError(
                f"{source}: crossed book, best bid {bids[0, 0]:g} >= best ask {asks[0, 0]:g}"
            )
        stamp = obj.get("timestamp")
        ts = None
        if stamp is not None:
            try:
                ts = pd.Timestamp(stamp)
            except (ValueError, TypeError):
                raise DataError(f"{source}: timestamp {stamp!r} is not ISO 8601") from None
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        symbol = obj.get("symbol")
        if symbol is not None and not isinstance(symbol, str):
            raise DataError(f"{source}: symbol must be a string, got {symbol!r}")
        return cls(bids=bids, asks=asks, symbol=symbol, timestamp=ts)


def _levels(raw: Any, side: str, source: str) -> np.ndarray:
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{source}: {side!r} must be a non-empty list of [price, size] levels")
    out = np.empty((len(raw), 2))
    for i, level in enumerate(raw):
        where = f"{source}: {side}[{i}]"
        if not isinstance(level, list | tuple) or len(level) != 2:
            raise DataError(f"{where}: expected [price, size], got {level!r}")
        for j, (name, value) in enumerate(zip(("price", "size"), level, strict=True)):
            if isinstance(value, bool):
                raise DataError(f"{where}: {name} {value!r} is not a number")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{where}: {name} {value!r} is not a number") from None
            if not math.isfinite(number):
                raise DataError(f"{where}: {name} is {value!r}, not a finite number")
            out[i, j] = number
        if out[i, 0] <= 0:
            raise DataError(f"{where}: price {out[i, 0]:g} must be > 0")
        if out[i, 1] < 0:
            raise DataError(f"{where}: negative size {out[i, 1]:g}")
        if i:
            prev = out[i - 1, 0]
            if out[i, 0] == prev:
                raise DataError(f"{where}: duplicate price {out[i, 0]:g} (also at {side}[{i - 1}])")
            if (side == "bids") != (out[i, 0] < prev):
                order = (
                    "descending (best bid first)"
                    if side == "bids"
                    else "ascending (best ask first)"
                )
                raise DataError(
                    f"{where}: price {out[i, 0]:g} out of order; {side} must be {order}"
                )
    return out


def load_orderbook(path: str | Path) -> OrderBook:
    """Read an order-book snapshot from a JSON file (format in :mod:`celeris.data.orderbook`).

    Parameters
    ----------
    path : str or Path
        JSON file ``{"bids": [[price, size], ...], "asks": [[price, size], ...]}``.

    Returns
    -------
    OrderBook
        The validated snapshot.

    Raises
    ------
    DataError
        Naming the file, the level (``bids[3]``) and the problem: a missing file or one that is
        not a regular file (a directory, a FIFO), invalid JSON, a NaN or
        non-numeric value, a negative size, a price <= 0, unsorted or duplicate prices, or a
        crossed book (best bid >= best ask).
    """
    path = check_regular_file(path, "an order-book JSON file")
    try:
        # parse_constant turns NaN/Infinity literals into strings so they fail as "not finite".
        obj = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda c: c)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}, line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    return OrderBook.from_mapping(obj, str(path))
