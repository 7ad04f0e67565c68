"""``--perp`` and its options: `celeris backtest` and `celeris sweep` on perpetual futures.

Declared once (:func:`perp_options`, handed to a command as ``perp_opts``) and turned into the
``from_signals`` keywords of docs/books.md by :func:`perp_keywords`, which loads the funding
rates (a CSV file or ``store:EXCHANGE/SYMBOL/funding``) and puts them on the bars.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from celeris.cli._common import Options, shared_options
from celeris.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

PerpOpt = Annotated[
    bool,
    typer.Option(
        "--perp",
        help="Trade perpetual futures: margin, leverage, funding and liquidations "
        "(docs/books.md); --fees is then the taker fee.",
    ),
]
LeverageOpt = Annotated[
    float, typer.Option("--leverage", help="Leverage of a perpetual position (>= 1).")
]
MarginModeOpt = Annotated[
    str,
    typer.Option(
        "--margin-mode", help="isolated (each position's own margin) | cross (the account's)."
    ),
]
MaintenanceOpt = Annotated[
    float,
    typer.Option(
        "--maintenance-margin", help="Maintenance margin rate, e.g. 0.005 (Binance tier 1: 0.4%)."
    ),
]
LiquidationFeeOpt = Annotated[
    float,
    typer.Option(
        "--liquidation-fee", help="Liquidation fee as a fraction of the notional at the fill."
    ),
]
FundingOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--funding",
        help="Funding rates: a CSV file (timestamp,rate) or store:EXCHANGE/SYMBOL/funding "
        "(celeris data download --funding); one per --data source, in order.",
    ),
]

_PERP: tuple[tuple[str, Any, Any], ...] = (
    ("perp", PerpOpt, False),
    ("leverage", LeverageOpt, 1.0),
    ("margin_mode", MarginModeOpt, "isolated"),
    ("maintenance_margin", MaintenanceOpt, 0.005),
    ("liquidation_fee", LiquidationFeeOpt, 0.0),
    ("funding", FundingOpt, None),
)

#: Gives a command the perpetual-futures options; it receives them as ``perp_opts``.
perp_options = shared_options(_PERP, into="perp_opts")


def check_spot(perp_opts: Options) -> None:
    """Without ``--perp`` the run is spot: a perpetual option is an error that says so."""
    defaults = {name: default for name, _, default in _PERP}
    changed = [k for k, v in perp_opts.items() if k != "perp" and v != defaults[k]]
    if not perp_opts["perp"] and changed:
        flag = "--" + changed[0].replace("_", "-")
        raise ConfigError(f"{flag} applies to perpetual futures: add --perp")


def perp_keywords(perp_opts: Options, index: pd.Index, symbols: list[str]) -> dict[str, Any]:
    """The ``from_signals`` keywords of ``perp_opts`` for bars on ``index`` (assets ``symbols``);
    none for a spot run (:func:`check_spot`)."""
    check_spot(perp_opts)
    if not perp_opts["perp"]:
        return {}
    out: dict[str, Any] = {
        "instrument": "perp",
        "leverage": perp_opts["leverage"],
        "margin_mode": perp_opts["margin_mode"],
        "maintenance_margin": perp_opts["maintenance_margin"],
        "liquidation_fee": perp_opts["liquidation_fee"],
    }
    specs = perp_opts["funding"] or []
    if specs:
        out["funding_rate"] = _funding(specs, index, symbols)
    return out


def _funding(specs: list[str], index: pd.Index, symbols: list[str]) -> Any:
    """Funding rates on the bar index: a Series for one asset, a frame by symbol for several."""
    import pandas as pd

    from celeris.data.funding import align_funding, load_funding

    if len(specs) != len(symbols):
        raise ConfigError(
            f"--funding was given {len(specs)} time(s) for {len(symbols)} --data source(s): give "
            "one per source, in the same order"
        )
    inside = [load_funding(spec) for spec in specs]
    sliced = [rates[(rates.index >= index[0]) & (rates.index <= index[-1])] for rates in inside]
    bars = pd.DatetimeIndex(index)
    aligned = [align_funding(rates, bars) for rates in sliced]
    if len(aligned) == 1:
        return aligned[0]
    return pd.DataFrame(
        {sym: rate for sym, rate in zip(symbols, aligned, strict=True)}, index=index
    )
