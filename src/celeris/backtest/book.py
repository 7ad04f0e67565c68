"""The :class:`Book`: the result of a grouped simulation (many columns on shared cash).

Metrics are per *group* (one account); curves and records are recomputed on first use, as for
:class:`~celeris.backtest.Portfolio`. Positions, asset values, weights, exposure, turnover and
per-asset contributions are derived from the order records and the closes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celeris.backtest import group_kernel as GK
from celeris.backtest import kernel as K
from celeris.backtest.annualisation import YearDays
from celeris.backtest.group_engine import GroupInputs, GroupOutputs, simulate_groups
from celeris.backtest.metrics import metrics_frame, rank_order
from celeris.backtest.returns import bar_returns
from celeris.errors import CelerisWarning

#: Order kinds as :attr:`Book.orders` names them.
ORDER_KINDS = {
    GK.KIND_ORDER: "order",
    GK.KIND_STOP: "stop",
    GK.KIND_DELIST: "delisting",
    GK.KIND_LIQUIDATION: "liquidation",
    GK.KIND_LIMIT: "limit",
}
_KIND_NAMES = np.array([ORDER_KINDS[k] for k in range(len(ORDER_KINDS))])


@dataclass(frozen=True)
class BookLayout:
    """A grouped simulation before it runs: the kernel's inputs and the labels of its results
    (what :func:`~celeris.backtest.signals.book_layout` returns)."""

    inputs: GroupInputs
    index: pd.Index
    columns: pd.Index
    assets: pd.Index
    groups: pd.Index
    freq: pd.Timedelta | None
    year_days: YearDays
    execution: str


class Book:
    """Grouped, cash-sharing backtest: one account per group, several columns (assets) each.

    ``columns`` label the simulated columns in kernel order (each group's columns together);
    ``assets`` names the asset each column trades and ``groups`` the groups.
    """

    def __init__(
        self,
        inputs: GroupInputs,
        index: pd.Index,
        columns: pd.Index,
        assets: pd.Index,
        groups: pd.Index,
        *,
        freq: pd.Timedelta | None,
        year_days: YearDays,
        execution: str,
        device: str = "auto",
        outputs: GroupOutputs | None = None,
    ) -> None:
        self._inputs = inputs
        self.index = index
        self.columns = columns
        self.assets = assets
        self.groups = groups
        self.freq = freq
        self.annualisation = year_days
        self.execution = execution
        self.device = device
        self.name: str | None = None
        if outputs is None:
            self._outputs = simulate_groups(inputs, device=device)
        else:  # a run made elsewhere (bar by bar by a paper account): curves and records too
            if outputs.equity is None or outputs.orders is None or outputs.trades is None:
                raise ValueError("a Book's given outputs need equity, orders and trades")
            self._outputs = outputs
            self.__dict__["_full"] = outputs

    @classmethod
    def from_layout(
        cls, layout: BookLayout, *, device: str = "auto", outputs: GroupOutputs | None = None
    ) -> Book:
        """The Book of a layout: simulated now, or of ``outputs`` when a run was made elsewhere."""
        return cls(
            layout.inputs,
            layout.index,
            layout.columns,
            layout.assets,
            layout.groups,
            freq=layout.freq,
            year_days=layout.year_days,
            execution=layout.execution,
            device=device,
            outputs=outputs,
        )

    def __len__(self) -> int:
        return len(self.groups)

    def __repr__(self) -> str:
        return (
            f"Book({len(self.index)} bars x {len(self.columns)} columns in "
            f"{len(self.groups)} group(s))"
        )

    # ---- layout ----
    @property
    def group_of(self) -> np.ndarray:
        """Group position of every column."""
        return np.repeat(np.arange(len(self.groups)), np.diff(self._inputs.groups))

    @property
    def asset_of(self) -> np.ndarray:
        """Asset position (in the price arrays) of every column."""
        return self._inputs.col_params[:, GK.C_ASSET].astype(np.int64)

    @property
    def ann_factor(self) -> float:
        return self._inputs.ann_factor

    @property
    def init_cash(self) -> pd.Series:
        return pd.Series(
            self._inputs.group_params[:, GK.G_INIT_CASH], index=self.groups, name="init_cash"
        )

    # ---- metrics ----
    @property
    def metric_values(self) -> np.ndarray:
        """The kernel's metrics, one row per group (read-only)."""
        view = self._outputs.metrics.view()
        view.flags.writeable = False
        return view

    def stats(self) -> pd.DataFrame:
        """One row per group: every metric of :data:`~celeris.backtest.METRICS` on the group's value.

        Trade metrics count the trades of all the group's columns; ``exposure`` is the share of
        bars with any open position. Added: mean gross and net exposure (over all bars; a bar
        where the account is worth 0 or less counts 0) and turnover, and for perpetual books the
        columns of :meth:`perp_stats`. All come from the kernel's accumulators: no curves or
        records are built.
        """
        if np.isnan(self.ann_factor):
            warnings.warn(
                "bar spacing unknown (no datetime index and no freq=...): annualised metrics are NaN",
                CelerisWarning,
                stacklevel=2,
            )
        frame = metrics_frame(self._outputs.metrics, self.groups, self.freq)
        frame.insert(0, "start_value", self.init_cash.to_numpy())
        frame.insert(0, "end", self.index[-1])
        frame.insert(0, "start", self.index[0])
        book = self._outputs.book
        n = len(self.index)
        frame["mean_gross_exposure"] = book[:, GK.A_GROSS_SUM] / n
        frame["mean_net_exposure"] = book[:, GK.A_NET_SUM] / n
        frame["turnover"] = self.turnover.to_numpy()
        if self.is_perp.any():
            for name, values in self.perp_stats().items():
                frame[name] = values.to_numpy()
        frame["execution"] = self.execution
        frame["year_days"] = self.annualisation.days
        return frame

    def best(self, metric: str = "sharpe", n: int = 10) -> pd.DataFrame:
        """The ``n`` best groups by ``metric``."""
        stats = self.stats()
        return stats.iloc[rank_order(stats[metric].to_numpy(dtype=float), metric)[:n]]

    @property
    def is_perp(self) -> pd.Series:
        """Whether each group is a perpetual-futures book."""
        flags = self._inputs.group_params[:, GK.G_PERP] != 0
        return pd.Series(flags, index=self.groups, name="perp")

    def perp_stats(self) -> pd.DataFrame:
        """Funding paid and received, liquidations, margin usage and leverage of every group.

        Margin usage is margin held / account value and leverage gross notional / value, each
        averaged over all bars (flat bars count as 0) and at their maximum; 0 for spot books.
        """
        book = self._outputs.book
        n = len(self.index)
        return pd.DataFrame(
            {
                "funding_paid": book[:, GK.A_FUNDING_PAID],
                "funding_received": book[:, GK.A_FUNDING_RECEIVED],
                "liquidations": book[:, GK.A_LIQUIDATIONS].astype(np.int64),
                "mean_margin_usage": book[:, GK.A_MARGIN_USAGE_SUM] / n,
                "max_margin_usage": book[:, GK.A_MARGIN_USAGE_MAX],
                "mean_leverage": book[:, GK.A_GROSS_SUM] / n,
                "max_leverage": book[:, GK.A_GROSS_MAX],
            },
            index=self.groups,
        )

    @property
    def funding(self) -> pd.Series:
        """Funding paid (+) or received (-) by every column over the run."""
        return pd.Series(self._outputs.funding, index=self.columns, name="funding")

    # ---- curves and records ----
    @cached_property
    def _full(self) -> GroupOutputs:
        return simulate_groups(
            self._inputs, device=self.device, keep_equity=True, keep_records=True
        )

    @property
    def equity(self) -> pd.DataFrame:
        """Value of every group's account at each bar's close."""
        assert self._full.equity is not None
        return pd.DataFrame(self._full.equity, index=self.index, columns=self.groups)

    @property
    def returns(self) -> pd.DataFrame:
        """Bar returns of every account; the first bar is measured against its starting cash."""
        return bar_returns(self.equity, self.init_cash.to_numpy())

    @property
    def drawdown(self) -> pd.DataFrame:
        equity = self.equity
        return equity / equity.cummax() - 1.0

    @property
    def orders(self) -> pd.DataFrame:
        """Filled orders in time order: group, column, asset, side, size, price, fees, kind."""
        rec = self._full.orders
        assert rec is not None
        cols = rec[:, K.O_COL].astype(np.int64)
        idx = rec[:, K.O_IDX].astype(np.int64)
        frame = pd.DataFrame(
            {
                "group": self.groups[self.group_of[cols]],
                "column": self.columns[cols].to_flat_index(),
                "asset": self.assets[self.asset_of[cols]],
                "time": self.index[idx],
                "bar": idx,
                "side": np.where(rec[:, K.O_SIDE] == K.BUY, "buy", "sell"),
                "size": rec[:, K.O_SIZE],
                "price": rec[:, K.O_PRICE],
                "fees": rec[:, K.O_FEES],
                "kind": _KIND_NAMES[rec[:, K.O_STOP].astype(np.int64)],
            }
        )
        return frame.sort_values(["bar"], kind="stable", ignore_index=True)

    @property
    def trades(self) -> pd.DataFrame:
        """Exit trades of every column (vectorbt's); an open trade is valued at its last close."""
        rec = self._full.trades
        assert rec is not None
        cols = rec[:, K.T_COL].astype(np.int64)
        entry = rec[:, K.T_ENTRY_IDX].astype(np.int64)
        exit_ = rec[:, K.T_EXIT_IDX].astype(np.int64)
        return pd.DataFrame(
            {
                "group": self.groups[self.group_of[cols]],
                "column": self.columns[cols].to_flat_index(),
                "asset": self.assets[self.asset_of[cols]],
                "direction": np.where(rec[:, K.T_DIRECTION] == K.TRADE_LONG, "long", "short"),
                "status": np.where(rec[:, K.T_STATUS] == K.TRADE_CLOSED, "closed", "open"),
                "size": rec[:, K.T_SIZE],
                "entry_time": self.index[entry],
                "entry_price": rec[:, K.T_ENTRY_PRICE],
                "entry_fees": rec[:, K.T_ENTRY_FEES],
                "exit_time": self.index[exit_],
                "exit_price": rec[:, K.T_EXIT_PRICE],
                "exit_fees": rec[:, K.T_EXIT_FEES],
                "pnl": rec[:, K.T_PNL],
                "return": rec[:, K.T_RETURN],
            }
        )

    @cached_property
    def _positions(self) -> np.ndarray:
        """(n_bars, n_cols) position after each bar's orders."""
        rec = self._full.orders
        assert rec is not None
        flow = np.zeros((len(self.index), len(self.columns)))
        signed = np.where(rec[:, K.O_SIDE] == K.BUY, rec[:, K.O_SIZE], -rec[:, K.O_SIZE])
        np.add.at(
            flow, (rec[:, K.O_IDX].astype(np.int64), rec[:, K.O_COL].astype(np.int64)), signed
        )
        pos = np.cumsum(flow, axis=0)
        pos[np.abs(pos) < K.MIN_SIZE * 1e-3] = 0.0  # a closed position is exactly flat
        return pos

    @property
    def positions(self) -> pd.DataFrame:
        """Units held by every column after each bar (negative: short)."""
        return pd.DataFrame(self._positions, index=self.index, columns=self.columns)

    @cached_property
    def _asset_value(self) -> np.ndarray:
        close = self._inputs.close[:, self.asset_of]
        pos = self._positions
        return np.where(pos != 0, pos * np.nan_to_num(close), 0.0)

    @property
    def asset_value(self) -> pd.DataFrame:
        """Position x close of every column (0 when flat)."""
        return pd.DataFrame(self._asset_value, index=self.index, columns=self.columns)

    def _per_group(self, per_col: np.ndarray) -> np.ndarray:
        out = np.zeros((per_col.shape[0], len(self.groups)))
        for g, (lo, hi) in enumerate(
            zip(self._inputs.groups[:-1], self._inputs.groups[1:], strict=True)
        ):
            out[:, g] = per_col[:, lo:hi].sum(axis=1)
        return out

    @property
    def cash(self) -> pd.DataFrame:
        """Cash of every group's account (value minus positions; negative shorts' debt included)."""
        assert self._full.equity is not None
        cash = self._full.equity - self._per_group(self._asset_value)
        return pd.DataFrame(cash, index=self.index, columns=self.groups)

    @property
    def weights(self) -> pd.DataFrame:
        """Share of its group's value in every column (asset value / group value)."""
        assert self._full.equity is not None
        value = self._full.equity[:, self.group_of]
        with np.errstate(divide="ignore", invalid="ignore"):  # an account worth 0: NaN
            weights = self._asset_value / value
        return pd.DataFrame(weights, index=self.index, columns=self.columns)

    @property
    def gross_exposure(self) -> pd.DataFrame:
        """Sum of |asset value| over the group's columns / group value, per bar."""
        assert self._full.equity is not None
        with np.errstate(divide="ignore", invalid="ignore"):  # an account worth 0: NaN
            gross = self._per_group(np.abs(self._asset_value)) / self._full.equity
        return pd.DataFrame(gross, index=self.index, columns=self.groups)

    @property
    def net_exposure(self) -> pd.DataFrame:
        """Sum of asset values (shorts negative) / group value, per bar."""
        assert self._full.equity is not None
        with np.errstate(divide="ignore", invalid="ignore"):
            net = self._per_group(self._asset_value) / self._full.equity
        return pd.DataFrame(net, index=self.index, columns=self.groups)

    @property
    def traded_value(self) -> pd.DataFrame:
        """Value traded (size x fill price) by every group at each bar."""
        rec = self._full.orders
        assert rec is not None
        out = np.zeros((len(self.index), len(self.groups)))
        groups = self.group_of[rec[:, K.O_COL].astype(np.int64)]
        np.add.at(
            out, (rec[:, K.O_IDX].astype(np.int64), groups), rec[:, K.O_SIZE] * rec[:, K.O_PRICE]
        )
        return pd.DataFrame(out, index=self.index, columns=self.groups)

    @property
    def turnover(self) -> pd.Series:
        """Total value traded / mean account value (1.0: the book was traded once over)."""
        book = self._outputs.book
        with np.errstate(divide="ignore", invalid="ignore"):
            turnover = book[:, GK.A_TRADED] / (book[:, GK.A_VALUE_SUM] / len(self.index))
        return pd.Series(turnover, index=self.groups, name="turnover")

    @property
    def contribution(self) -> pd.DataFrame:
        """P&L of every column after fees and funding (cash flows plus the final position's value).

        For a perpetual column the cash flows are notional (the same sum as its realised and
        unrealised PnL); a liquidation beyond the margin counts in full here, while the account
        lost at most the margin (the insurance fund's part is the difference).

        Columns: ``pnl`` in cash and ``share`` of the group's start value. The pnl of a
        group's columns sum to its end value minus its start value.
        """
        rec = self._full.orders
        assert rec is not None
        cols = rec[:, K.O_COL].astype(np.int64)
        notional = rec[:, K.O_SIZE] * rec[:, K.O_PRICE]
        flow = np.where(rec[:, K.O_SIDE] == K.BUY, -notional, notional) - rec[:, K.O_FEES]
        pnl = np.bincount(cols, weights=flow, minlength=len(self.columns)) + self._asset_value[-1]
        pnl -= self._outputs.funding
        start = self._inputs.group_params[self.group_of, GK.G_INIT_CASH]
        return pd.DataFrame(
            {
                "group": self.groups[self.group_of],
                "asset": self.assets[self.asset_of],
                "pnl": pnl,
                "share": pnl / start,
            },
            index=self.columns,
        )

    def to_html(self, path: str | Path, *, group: Any = None, title: str | None = None) -> Path:
        """Write the HTML report of one group (default: the first)."""
        from celeris.backtest.book_report import write_book_report

        return write_book_report(self, path, group=group, title=title)
