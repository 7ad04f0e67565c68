"""NHITS: Neural Hierarchical Interpolation for Time Series.

Challu, Olivares, Oreshkin, Garza, Mergenthaler-Canseco, Dubrawski (2023), "NHITS: Neural
Hierarchical Interpolation for Time Series Forecasting", AAAI (arXiv:2201.12886), built to match
NeuralForecast's ``NHITS`` (same defaults, same layer layout) in plain PyTorch:

* stacks of MLP blocks; each block max-pools its input with its stack's kernel size
  (``MaxPool1d(k, stride=k, ceil_mode=True)``: a last partial window is kept);
* the block MLP is ``Linear(in, units[0][0])`` with *no* activation after it, then
  ``Linear + activation (+ dropout)`` for each ``[in, out]`` pair of ``mlp_units``, then a
  ``Linear`` to ``n_theta = input_size + max(horizon // n_freq_downsample, 1)`` coefficients;
* the first ``input_size`` coefficients are the backcast, the rest forecast knots interpolated
  back to the horizon (``F.interpolate``, ``"linear"``, ``"nearest"`` or ``"cubic"``);
* hierarchical residual links: each block sees the input minus the previous blocks' backcasts
  (the input is time-reversed first, as in NeuralForecast), and the forecasts add up;
* the forecast starts from the last input value repeated over the horizon (NeuralForecast's
  ``forecast = insample_y[:, -1:]``), so the blocks learn the change from the last value.

Exogenous features (channels ``1..`` of ``x``) are pooled like the series and concatenated to
the block input, as NeuralForecast's ``hist_exog``. Deliberate differences: no insample mask
(Celeris windows have no padding), and each MLP layer gets its own activation module
(NeuralForecast shares one per block, which ties a PReLU's weight across layers and would make
tensors shared in the state dict).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from celeris.checks import check_fraction, check_int
from celeris.errors import CelerisTypeError, ConfigError, check_choice
from celeris.models.catalogue import ForecastModel, register_model

__all__ = ["NHITS", "NHITSBlock"]

ACTIVATIONS = ("ReLU", "Softplus", "Tanh", "SELU", "LeakyReLU", "PReLU", "Sigmoid")
POOLING_MODES = ("MaxPool1d", "AvgPool1d")
INTERPOLATION_MODES = ("linear", "nearest", "cubic")


def _pooled_size(length: int, kernel: int) -> int:
    return -(-length // kernel)  # ceil: ceil_mode=True keeps the last partial window


class NHITSBlock(nn.Module):
    """One NHITS block: pool the input, MLP to coefficients, backcast and interpolated forecast."""

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_exog: int,
        n_theta: int,
        mlp_units: list[list[int]],
        pool_kernel_size: int,
        pooling_mode: str,
        interpolation_mode: str,
        dropout_prob: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.horizon = horizon
        self.n_exog = n_exog
        self.interpolation_mode = interpolation_mode
        self.pooling = getattr(nn, pooling_mode)(
            kernel_size=pool_kernel_size, stride=pool_kernel_size, ceil_mode=True
        )
        pooled = _pooled_size(input_size, pool_kernel_size)
        # No activation after the first Linear (as NeuralForecast's NHITSBlock).
        layers: list[nn.Module] = [nn.Linear(pooled * (1 + n_exog), mlp_units[0][0])]
        for n_in, n_out in mlp_units:
            layers += [nn.Linear(n_in, n_out), getattr(nn, activation)()]
            if dropout_prob > 0:
                layers.append(nn.Dropout(p=dropout_prob))
        layers.append(nn.Linear(mlp_units[-1][1], n_theta))
        self.layers = nn.Sequential(*layers)

    def forward(
        self, residuals: torch.Tensor, hist_exog: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # [B, L] -> [B, 1, L] -> [B, 1, ceil(L / k)] -> [B, ceil(L / k)]
        inputs = self.pooling(residuals.unsqueeze(1)).squeeze(1)
        if hist_exog is not None:
            exog = hist_exog.permute(0, 2, 1)  # [B, L, X] -> [B, X, L]
            exog = self.pooling(exog).permute(0, 2, 1)  # [B, X, L'] -> [B, L', X]
            # [B, L'] ++ [B, L' * X] -> [B, L' * (1 + X)]
            inputs = torch.cat((inputs, exog.reshape(len(inputs), -1)), dim=1)
        theta = self.layers(inputs)  # [B, n_theta]
        backcast = theta[:, : self.input_size]  # [B, L]
        knots = theta[:, self.input_size :]  # [B, K], K = max(H // freq_downsample, 1)
        return backcast, self._interpolate(knots)

    def _interpolate(self, knots: torch.Tensor) -> torch.Tensor:
        if self.interpolation_mode == "cubic":
            # [B, K] -> [B, 1, 1, K] -> bicubic -> [B, 1, 1, H] -> [B, H]
            out = F.interpolate(knots[:, None, None, :], size=(1, self.horizon), mode="bicubic")
            return out[:, 0, 0, :]
        # [B, K] -> [B, 1, K] -> [B, 1, H] -> [B, H]
        out = F.interpolate(knots.unsqueeze(1), size=self.horizon, mode=self.interpolation_mode)
        return out.squeeze(1)


def _int_list(name: str, value: Any, n: int, minimum: int) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise CelerisTypeError(f"{name} must be a list of {n} ints, got {value!r}")
    out = list(value)
    if len(out) != n:
        raise ConfigError(f"{name} must have one entry per stack ({n}), got {len(out)}: {out}")
    return [check_int(f"{name} entries", v, minimum=minimum, reason=f"in {out}") for v in out]


@register_model("nhits")
class NHITS(ForecastModel):
    """NHITS forecaster (defaults as NeuralForecast's ``NHITS``).

    Parameters
    ----------
    input_size : int
        Bars of history per window (``L``).
    horizon : int
        Bars to forecast (``H``; NeuralForecast's ``h``).
    n_exog : int
        Historical exogenous features per bar, channels ``1..n_exog`` of ``x`` (the target
        series is channel 0), so ``x`` is ``[B, L, 1 + n_exog]``.
    n_stacks : int
        Number of stacks; ``n_blocks``, ``n_pool_kernel_size`` and ``n_freq_downsample`` have
        one entry per stack.
    n_blocks : list of int
        Blocks in each stack.
    mlp_units : list of [int, int]
        Hidden layers of every block MLP, ``[in, out]`` pairs that chain (``out`` of one is
        ``in`` of the next).
    n_pool_kernel_size : list of int
        Input max-pooling kernel (and stride) per stack.
    n_freq_downsample : list of int
        Forecast coefficients per stack are ``max(horizon // n, 1)``, interpolated to
        ``horizon``.
    pooling_mode : {"MaxPool1d", "AvgPool1d"}
    interpolation_mode : {"linear", "nearest", "cubic"}
    dropout_prob_theta : float
        Dropout after each hidden activation, in ``[0, 1)``.
    activation : {"ReLU", "Softplus", "Tanh", "SELU", "LeakyReLU", "PReLU", "Sigmoid"}
    """

    def __init__(
        self,
        input_size: int,
        horizon: int,
        n_exog: int = 0,
        n_stacks: int = 3,
        n_blocks: Sequence[int] = (1, 1, 1),
        mlp_units: Sequence[Sequence[int]] = ((512, 512), (512, 512), (512, 512)),
        n_pool_kernel_size: Sequence[int] = (2, 2, 1),
        n_freq_downsample: Sequence[int] = (4, 2, 1),
        pooling_mode: str = "MaxPool1d",
        interpolation_mode: str = "linear",
        dropout_prob_theta: float = 0.0,
        activation: str = "ReLU",
    ) -> None:
        super().__init__()
        self.input_size = check_int("input_size", input_size, minimum=1)
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.n_exog = check_int("n_exog", n_exog, minimum=0)
        self.n_features = 1 + self.n_exog
        n_stacks = check_int("n_stacks", n_stacks, minimum=1)
        blocks = _int_list("n_blocks", n_blocks, n_stacks, 1)
        kernels = _int_list("n_pool_kernel_size", n_pool_kernel_size, n_stacks, 1)
        downsample = _int_list("n_freq_downsample", n_freq_downsample, n_stacks, 1)
        units = self._check_units(mlp_units)
        check_choice("pooling_mode", pooling_mode, POOLING_MODES)
        check_choice("interpolation_mode", interpolation_mode, INTERPOLATION_MODES)
        check_choice("activation", activation, ACTIVATIONS)
        dropout_prob_theta = check_fraction(
            "dropout_prob_theta", dropout_prob_theta, open_high=True
        )
        self._config: dict[str, Any] = {
            "input_size": self.input_size,
            "horizon": self.horizon,
            "n_exog": self.n_exog,
            "n_stacks": n_stacks,
            "n_blocks": blocks,
            "mlp_units": units,
            "n_pool_kernel_size": kernels,
            "n_freq_downsample": downsample,
            "pooling_mode": pooling_mode,
            "interpolation_mode": interpolation_mode,
            "dropout_prob_theta": float(dropout_prob_theta),
            "activation": activation,
        }
        self.blocks = nn.ModuleList(
            NHITSBlock(
                input_size=self.input_size,
                horizon=self.horizon,
                n_exog=self.n_exog,
                n_theta=self.input_size + max(self.horizon // downsample[i], 1),
                mlp_units=units,
                pool_kernel_size=kernels[i],
                pooling_mode=pooling_mode,
                interpolation_mode=interpolation_mode,
                dropout_prob=float(dropout_prob_theta),
                activation=activation,
            )
            for i in range(n_stacks)
            for _ in range(blocks[i])
        )

    @staticmethod
    def _check_units(mlp_units: Any) -> list[list[int]]:
        if isinstance(mlp_units, (str, bytes)) or not isinstance(mlp_units, Sequence):
            raise CelerisTypeError(
                f"mlp_units must be a list of [in, out] pairs, got {mlp_units!r}"
            )
        units = [list(u) if isinstance(u, Sequence) else u for u in mlp_units]
        if not units:
            raise ConfigError("mlp_units needs at least one [in, out] layer")
        for i, u in enumerate(units):
            if not isinstance(u, list) or len(u) != 2:
                raise ConfigError(
                    f"mlp_units entries must be [in, out] pairs of ints >= 1, got {u!r}"
                )
            units[i] = [check_int("mlp_units entries", v, minimum=1, reason=f"in {u}") for v in u]
        for prev, nxt in itertools.pairwise(units):
            if prev[1] != nxt[0]:
                raise ConfigError(f"mlp_units do not chain: {prev} is followed by {nxt}")
        return units

    def config(self) -> dict[str, Any]:
        return copy.deepcopy(self._config)

    @classmethod
    def tiny_config(cls, input_size: int, horizon: int, n_features: int) -> dict[str, Any]:
        return {
            "input_size": input_size,
            "horizon": horizon,
            "n_exog": n_features - 1,
            "mlp_units": [[16, 16], [16, 16]],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``[B, H]`` forecasts of channel 0 from windows ``x`` ``[B, L, C]``."""
        self.check_input(x)
        insample_y = x[:, :, 0]  # [B, L, C] -> [B, L]
        hist_exog = x[:, :, 1:] if self.n_exog else None  # [B, L, C] -> [B, L, X]
        residuals = insample_y.flip(dims=(-1,))  # time-reversed, as NeuralForecast
        forecast = insample_y[:, -1:]  # [B, 1] level: the last value, broadcast over H
        for block in self.blocks:
            backcast, block_forecast = block(residuals, hist_exog)  # [B, L], [B, H]
            residuals = residuals - backcast
            forecast = forecast + block_forecast  # [B, 1] + [B, H] -> [B, H]
        return forecast
