"""What work costs: a price per hour of compute turned into a price per unit of work.

``cost = price_per_hour x busy_seconds / 3600 / units x per``, from *measured* busy seconds:
the CPU seconds (user + system) the work used, or the seconds a GPU ran it. The price is that
of one CPU core (vCPU) hour, or of one GPU hour for GPU work: for a cloud instance of N vCPUs
billed P per hour, pass P / N. Charging CPU seconds rather than wall time prices the work as if
the machine were kept busy with it (an idle core costs the same but buys nothing); the wall
time and the cores used are reported beside it, so either reading can be made.

``celeris bench`` prices predictions (per million, from the server's CPU seconds) and
``benchmarks/bench_sweep.py`` backtests (per billion bar-variants, from the sweep's CPU seconds).
The price comes from ``--price-per-hour``, else ``$CELERIS_PRICE_PER_HOUR``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from celeris._settings import load_settings
from celeris.checks import check_real
from celeris.errors import ConfigError

#: Units the reports price work in.
PER_MILLION = 1e6
PER_BILLION = 1e9


class CostSettings(BaseSettings):
    """The price of compute (``CELERIS_PRICE_PER_HOUR``): one CPU core-hour, or one GPU-hour."""

    model_config = SettingsConfigDict(env_prefix="CELERIS_", frozen=True, extra="ignore")

    price_per_hour: float | None = Field(None, ge=0, allow_inf_nan=False)


def price_per_hour(given: float | None = None) -> float | None:
    """``given``, else ``$CELERIS_PRICE_PER_HOUR``, else ``None`` (no cost reported).

    Raises
    ------
    ConfigError
        A negative, NaN or infinite price (naming the option or the variable).
    """
    if given is not None:
        return check_real("--price-per-hour", given, minimum=0)
    settings = load_settings(
        CostSettings, {}, label="cost", env_var=lambda field: f"CELERIS_{field.upper()}"
    )
    return settings.price_per_hour


@dataclasses.dataclass(frozen=True)
class Cost:
    """The price of ``units`` of work that kept compute busy ``busy_s`` seconds.

    Attributes
    ----------
    price_per_hour
        Price of one CPU core-hour (or GPU-hour).
    busy_s
        Measured CPU seconds (or GPU seconds) of the work.
    units
        Work done: predictions, bar-variants.
    per
        The block of units priced: :data:`PER_MILLION`, :data:`PER_BILLION`.
    unit
        What a unit is, for reports: ``"predictions"``, ``"bar-variants"``.
    """

    price_per_hour: float
    busy_s: float
    units: float
    per: float
    unit: str

    def __post_init__(self) -> None:
        check_real("price_per_hour", self.price_per_hour, minimum=0)
        check_real("busy_s", self.busy_s, minimum=0)
        check_real("units", self.units, minimum=0)
        check_real("per", self.per, minimum=0, open_low=True)

    @property
    def value(self) -> float:
        """Price of ``per`` units (NaN when no unit was done)."""
        if self.units <= 0:
            return math.nan
        return self.price_per_hour * self.busy_s / 3600.0 / self.units * self.per

    @property
    def units_per_busy_s(self) -> float:
        """Units per busy second (the throughput the price is paid for)."""
        return self.units / self.busy_s if self.busy_s > 0 else math.inf

    def label(self) -> str:
        """``"per million predictions"``, ``"per billion bar-variants"``."""
        block = {PER_MILLION: "million", PER_BILLION: "billion"}.get(self.per, f"{self.per:g}")
        return f"per {block} {self.unit}"

    def text(self) -> str:
        """``"0.0123 per million predictions (at 0.05 per core-hour: 885.60 busy s for ...)"``."""
        value = self.value
        shown = "-" if math.isnan(value) else _money(value)
        return (
            f"{shown} {self.label()} (at {self.price_per_hour:g} per core-hour: "
            f"{self.busy_s:,.2f} busy s for {self.units:,.0f} {self.unit})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the price, the inputs and the result (``None`` for NaN)."""
        value = self.value
        return {
            "price_per_hour": self.price_per_hour,
            "busy_s": self.busy_s,
            "units": self.units,
            "unit": self.unit,
            "per": self.per,
            "cost": None if math.isnan(value) else value,
        }


def _money(value: float) -> str:
    """Three significant digits for a small price, never an exponent: 0.0000401, 0.0123, 12.30."""
    if value == 0 or value >= 1:
        return f"{value:,.2f}"
    return np.format_float_positional(value, precision=3, fractional=False, trim="-")


def prediction_cost(
    price: float, server_cpu_s: float | None, requests: int, rows: int
) -> Cost | None:
    """Price per million predictions of a load run: ``requests x rows`` predictions for the
    server's CPU seconds (``None`` when the server's CPU was not measured)."""
    if server_cpu_s is None:
        return None
    if rows < 1:
        raise ConfigError(f"rows must be >= 1, got {rows}")
    return Cost(price, server_cpu_s, float(requests) * rows, PER_MILLION, "predictions")


def sweep_cost(price: float, cpu_s: float, bar_variants: float) -> Cost:
    """Price per billion bar-variants of a sweep that used ``cpu_s`` CPU seconds."""
    return Cost(price, cpu_s, bar_variants, PER_BILLION, "bar-variants")
