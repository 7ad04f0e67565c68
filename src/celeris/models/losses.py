"""Training losses: MAE, MSE, Huber, a Sharpe-aware loss for signal models, and BCE for direction.

Every loss is called as ``loss(forecast, y, last)``:

* ``forecast`` ``[B, H]`` — the model output (values, or direction logits for ``bce``);
* ``y`` ``[B, H]`` — the realised targets;
* ``last`` ``[B]`` — the last *input* value of the target channel (the value at the bar the
  forecast is made), which the Sharpe and direction losses measure changes from.

Losses are computed in **scaled space** — on the model's own inputs and outputs, after the
scaler — as NeuralForecast does; :func:`celeris.models.train.train` applies the scaler before
calling them, and :func:`celeris.models.evaluate.evaluate` reports metrics in original units.

A loss with ``sequential = True`` (the Sharpe loss) reads the batch rows as consecutive bars in
time order; the trainer then samples contiguous blocks of windows instead of random ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from celeris.errors import ConfigError, did_you_mean

__all__ = ["BCE", "LOSSES", "MAE", "MSE", "Huber", "Loss", "SharpeLoss", "get_loss"]


class Loss(nn.Module):
    """Base class of Celeris losses: ``forward(forecast [B, H], y [B, H], last [B]) -> scalar``."""

    name: ClassVar[str] = ""
    sequential: ClassVar[bool] = False
    """True when the loss needs batch rows that are consecutive bars in time order."""
    task: ClassVar[str] = "regression"
    """The model task the loss fits: ``"regression"`` (values) or ``"classification"`` (logits)."""

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MAE(Loss):
    """Mean absolute error ``mean(|y - forecast|)`` (NeuralForecast's NHITS default)."""

    name = "mae"

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return (y - forecast).abs().mean()


class MSE(Loss):
    """Mean squared error ``mean((y - forecast)^2)``."""

    name = "mse"

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        return (y - forecast).square().mean()


class Huber(Loss):
    """Huber loss with threshold ``delta``: quadratic within ``delta``, linear beyond.

    ``0.5 e^2`` if ``|e| <= delta`` else ``delta (|e| - 0.5 delta)``, averaged — the same as
    ``torch.nn.functional.huber_loss(forecast, y, delta=delta)`` (Huber, 1964).
    """

    name = "huber"

    def __init__(self, delta: float = 1.0) -> None:
        super().__init__()
        if not delta > 0:
            raise ConfigError(f"huber delta must be > 0, got {delta!r}")
        self.delta = float(delta)

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        err = (y - forecast).abs()
        quadratic = 0.5 * err.square()
        linear = self.delta * (err - 0.5 * self.delta)
        return torch.where(err <= self.delta, quadratic, linear).mean()


class SharpeLoss(Loss):
    """Negative Sharpe ratio of the strategy that trades the forecast (a differentiable proxy).

    Per window (one bar), with ``r`` the realised next-step return:

    * ``target="level"`` (the series is a price or log price): ``r = y[:, 0] - last`` and the
      forecast return is ``forecast[:, 0] - last``;
    * ``target="return"`` (the series is already a return): ``r = y[:, 0]`` and the forecast
      return is ``forecast[:, 0]``.

    The position is ``tanh(k * forecast return)`` with ``position="tanh"`` (default), or the
    model output ``forecast[:, 0]`` itself with ``position="direct"`` (the model then outputs a
    position and should bound it, e.g. end in ``tanh``). Strategy returns are
    ``position * r - cost * |position_t - position_{t-1}|`` (no cost on the first row), and the
    loss is ``-mean / (std + eps)`` (population std; no annualisation — it does not change the
    optimum). The rows must be consecutive bars in time order (``sequential``); windows cut
    with ``step=1`` are. ``cost`` is in the units of ``r``, i.e. in scaled space when the
    trainer scales the data.

    Related: Moody & Saffell (2001), "Learning to trade via direct reinforcement"; Zhang, Zohren
    & Roberts (2020), "Deep learning for portfolio optimisation" (Sharpe as a training loss).
    """

    name = "sharpe"
    sequential = True
    TARGETS: ClassVar[tuple[str, ...]] = ("level", "return")
    POSITIONS: ClassVar[tuple[str, ...]] = ("tanh", "direct")

    def __init__(
        self,
        k: float = 1.0,
        cost: float = 0.0,
        target: str = "level",
        position: str = "tanh",
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        for what, value, choices in (
            ("sharpe target", target, self.TARGETS),
            ("sharpe position", position, self.POSITIONS),
        ):
            if value not in choices:
                raise ConfigError(
                    f"unknown {what} {value!r}{did_you_mean(str(value), choices)}; "
                    f"choose one of {', '.join(map(repr, choices))}"
                )
        if not k > 0:
            raise ConfigError(f"sharpe k must be > 0, got {k!r}")
        if not cost >= 0:
            raise ConfigError(f"sharpe cost must be >= 0, got {cost!r}")
        if not eps > 0:
            raise ConfigError(f"sharpe eps must be > 0, got {eps!r}")
        self.k, self.cost, self.eps = float(k), float(cost), float(eps)
        self.target, self.position = target, position

    def strategy_returns(
        self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        """Return the per-row strategy returns ``[B]`` (before the Sharpe ratio)."""
        base = last if self.target == "level" else torch.zeros_like(last)
        realised = y[:, 0] - base  # [B, H] -> [B]
        if self.position == "direct":
            position = forecast[:, 0]
        else:
            position = torch.tanh(self.k * (forecast[:, 0] - base))
        pnl = position * realised
        if self.cost > 0 and position.shape[0] > 1:
            turnover = torch.cat([position.new_zeros(1), (position[1:] - position[:-1]).abs()])
            pnl = pnl - self.cost * turnover
        return pnl

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        pnl = self.strategy_returns(forecast, y, last)
        # Population std; eps keeps a flat strategy (std 0) finite: -0 / eps = 0.
        std = pnl.std(correction=0) if pnl.numel() > 1 else pnl.new_zeros(())
        return -pnl.mean() / (std + self.eps)


class BCE(Loss):
    """Binary cross-entropy on direction logits: label ``1`` where ``y[:, h] > last``.

    For models with ``task == "classification"`` (e.g. ``cnn_lstm`` with ``task="direction"``):
    output ``h`` is the logit of P(the value ``h + 1`` steps ahead is above the last input
    value). Same as ``torch.nn.functional.binary_cross_entropy_with_logits``.
    """

    name = "bce"
    task = "classification"

    def forward(self, forecast: torch.Tensor, y: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        up = (y > last[:, None]).to(forecast.dtype)  # [B, H] vs [B] -> [B, H]
        return nn.functional.binary_cross_entropy_with_logits(forecast, up)


LOSSES: dict[str, Callable[..., Loss]] = {
    cls.name: cls for cls in (MAE, MSE, Huber, SharpeLoss, BCE)
}
"""Loss classes by name: ``mae``, ``mse``, ``huber``, ``sharpe``, ``bce``."""


def get_loss(name: str, **params: Any) -> Loss:
    """Return the loss named ``name`` built with ``params`` (e.g. ``get_loss("huber", delta=0.5)``).

    Raises
    ------
    ConfigError
        An unknown loss name or parameter (with a "did you mean" hint), or a bad value.
    """
    if name not in LOSSES:
        raise ConfigError(
            f"unknown loss {name!r}{did_you_mean(str(name), LOSSES)}; "
            f"choose one of {', '.join(map(repr, LOSSES))}"
        )
    import inspect

    cls = LOSSES[name]
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    for key in params:
        if key not in accepted:
            options = ", ".join(accepted) or "none"
            raise ConfigError(
                f"loss {name!r} has no parameter {key!r}{did_you_mean(key, accepted)}; "
                f"its parameters: {options}"
            )
    return cls(**params)
