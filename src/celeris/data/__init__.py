"""Market data: the bar schema, sources, a local store, exchange downloads and resampling,
multi-asset panels (:func:`to_panel`), plus funding-rate files (:func:`load_funding`) and
order-book snapshots (:func:`load_orderbook`).

A bar frame is a pandas DataFrame with a UTC ``DatetimeIndex`` named ``time`` (sorted, unique)
and float64 columns ``open, high, low, close, volume``; :func:`validate` enforces it and every
function here returns validated frames.

>>> import celeris.data as cd
>>> bars = cd.load("sample:sp500")               # real daily S&P 500 bars, no download
>>> bars.columns.tolist()
['open', 'high', 'low', 'close', 'volume']
>>> weekly = cd.resample(bars, "W")               # weeks starting on Sunday, labelled by start
>>> syn = cd.synthetic(1_000, freq="1min", seed=7)  # GARCH + jumps, deterministic per seed
>>> len(syn)
1000

Importing this package loads only pandas and numpy; numba, DuckDB, pyarrow and ccxt load on
first use.
"""

from __future__ import annotations

from celeris.data.exchange import RetryPolicy, download
from celeris.data.funding import align_funding, load_funding
from celeris.data.funding_download import download_funding
from celeris.data.orderbook import OrderBook, load_orderbook
from celeris.data.panel import Panel, to_panel
from celeris.data.resample import bars_from_ticks, resample
from celeris.data.schema import BAR_COLUMNS, NAN_POLICIES, validate
from celeris.data.sources import SAMPLES, load
from celeris.data.store import Store, celeris_home
from celeris.data.synthetic import synthetic, synthetic_funding
from celeris.data.timeframes import Gap, find_gaps, gaps_frame, timeframe_to_timedelta

__all__ = [
    "BAR_COLUMNS",
    "NAN_POLICIES",
    "SAMPLES",
    "Gap",
    "OrderBook",
    "Panel",
    "RetryPolicy",
    "Store",
    "align_funding",
    "bars_from_ticks",
    "celeris_home",
    "download",
    "download_funding",
    "find_gaps",
    "gaps_frame",
    "load",
    "load_funding",
    "load_orderbook",
    "resample",
    "synthetic",
    "synthetic_funding",
    "timeframe_to_timedelta",
    "to_panel",
    "validate",
]
