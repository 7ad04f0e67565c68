"""Command-line options declared once for several commands, and what they turn into.

The data and strategy options, the portfolio options (fees, stops, execution, annualisation,
device: :func:`portfolio_options`, resolved by :func:`backtest_options`) and the LLM server
options (:func:`llm_options`, turned into a client by :func:`make_client`). Options of one
command group stay in its module; ``--start``/``--end`` live in :mod:`celeris.cli._common`
beside the loader that applies them.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from celeris.cli._common import Options, shared_options
from celeris.errors import ConfigError

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        "-d",
        help="Market data: sample:sp500, sample:nasdaq, a CSV/Parquet path, or store:EXCHANGE/SYMBOL/TIMEFRAME.",
    ),
]
StrategyOpt = Annotated[
    str,
    typer.Option(
        "--strategy",
        "-s",
        help="Strategy: a name (see `celeris strategies`; installed packages add theirs through "
        "the celeris.strategies entry-point group), MODULE:ATTR or path/to/file.py:ATTR.",
    ),
]
ModelStrategyOpt = Annotated[
    str,
    typer.Option(
        "--strategy",
        "-s",
        help="Strategy: a name (see `celeris strategies`; installed packages add theirs through "
        "the celeris.strategies entry-point group), MODULE:ATTR, path/to/file.py:ATTR, or "
        "model:PATH (a checkpoint from `celeris train`: trades its forecasts).",
    ),
]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="Strategy parameter NAME=VALUE (repeatable)."),
]
FeesOpt = Annotated[float, typer.Option(help="Fees as a fraction of traded value (0.001 = 10 bp).")]
SlippageOpt = Annotated[
    float, typer.Option(help="Slippage as a fraction of price, against the trader.")
]
CashOpt = Annotated[float, typer.Option("--init-cash", help="Starting cash.")]
DirectionOpt = Annotated[str, typer.Option(help="longonly | shortonly | both.")]
StopOpt = Annotated[
    float | None, typer.Option(help="Stop as a fraction, e.g. 0.05 (off by default).")
]
ExecutionOpt = Annotated[
    str,
    typer.Option(
        help="next_open (fill at the next bar's open, what a live system gets; the default for "
        "every strategy) | close (fill at the signal bar's close, vectorbt's convention)."
    ),
]
YearDaysOpt = Annotated[
    float | None,
    typer.Option(
        help="Days per year for annualising: 365 for 24/7 crypto, 252 for equities "
        "(default: 252 when the data has no weekend bars, else 365; every report says which)."
    ),
]
FreqOpt = Annotated[
    str | None, typer.Option(help="Bar spacing, e.g. 1h, 1D (inferred from the data if omitted).")
]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda.")]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")
]


# The portfolio options of `backtest`, `sweep`, `walk-forward`, `optimize` and `analyze`: declared
# once, added to each command's signature by `portfolio_options`, and handed to the command as one
# `opts` dict.
_PORTFOLIO: tuple[tuple[str, Any, Any], ...] = (
    ("fees", FeesOpt, 0.0),
    ("slippage", SlippageOpt, 0.0),
    ("init_cash", CashOpt, 100_000.0),
    ("direction", DirectionOpt, "longonly"),
    ("sl_stop", StopOpt, None),
    ("tp_stop", StopOpt, None),
    ("tsl_stop", StopOpt, None),
    ("execution", ExecutionOpt, "next_open"),
    ("year_days", YearDaysOpt, None),
    ("freq", FreqOpt, None),
    ("device", DeviceOpt, "auto"),
)


#: Gives a command the shared backtest options; it receives them as ``opts``.
portfolio_options = shared_options(_PORTFOLIO, into="opts")


def backtest_options(opts: Options, bars: Any) -> tuple[dict[str, Any], str]:
    """``from_signals`` keywords from the shared options (defaults resolved for ``bars``), and
    the device.

    The defaults are fixed by :func:`~celeris.backtest.sweep.check_portfolio_options`, as for
    the library calls: ``year_days`` becomes a :class:`~celeris.backtest.annualisation.YearDays`
    (given, else inferred from ``bars``), so reports can say where it came from. Every
    strategy, rule or model, fills at the next open unless ``--execution close``.
    """
    from celeris.backtest.sweep import check_portfolio_options

    out = dict(opts)
    device = out.pop("device")
    return check_portfolio_options(out, bars), device


def single_param_values(items: list[str], strat: Any) -> dict[str, float]:
    """``--param NAME=VALUE`` items of ``strat``, one value each (a list or range is an error)."""
    from celeris.backtest.strategies import parse_assignments

    out = {}
    for name, values in parse_assignments(items, strat).items():
        if len(values) != 1:
            raise ConfigError(f"--param {name} takes one value, got {len(values)}")
        out[name] = values[0]
    return out


LLMUrlOpt = Annotated[
    str | None,
    typer.Option("--llm-url", help="OpenAI-compatible base URL (default: CELERIS_LLM_BASE_URL)."),
]
LLMModelOpt = Annotated[
    str | None, typer.Option("--llm-model", help="Model name (default: CELERIS_LLM_MODEL).")
]
ResponseFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--response-format",
        help="json_schema (vLLM, OpenAI) | json_object (llama.cpp, Ollama) | prompt.",
    ),
]


# The LLM server options of `optimize`, `analyze` and `llm check`: declared once, handed to the
# command as one `llm_opts` dict.
_LLM: tuple[tuple[str, Any, Any], ...] = (
    ("llm_url", LLMUrlOpt, None),
    ("llm_model", LLMModelOpt, None),
    ("response_format", ResponseFormatOpt, None),
)
#: Gives a command the LLM server options; it receives them as ``llm_opts`` (for `make_client`).
llm_options = shared_options(_LLM, into="llm_opts")


def make_client(llm: Options) -> Any:
    """An :class:`LLMClient` from the ``llm_options`` over the environment and config file."""
    from celeris.llm.client import LLMClient
    from celeris.llm.settings import load_llm_settings

    return LLMClient(
        load_llm_settings(
            base_url=llm["llm_url"], model=llm["llm_model"], response_format=llm["response_format"]
        )
    )
