"""CNN+LSTM hybrid for windows of many features (for example 50 steps x 60 indicator columns).

Layout, in order::

    x [B, L, C] -> Conv1d blocks (conv -> norm -> activation -> dropout) -> [B, L, C_conv]
                -> optional self-attention over time (residual + LayerNorm) -> [B, L, C_conv]
                -> LSTM -> last step [B, lstm_hidden] -> dropout -> Linear -> [B, horizon]

``task="regression"`` returns the forecast itself; ``task="direction"`` returns one logit of
P(up) per horizon step, to be trained with :class:`torch.nn.BCEWithLogitsLoss` against
``(y_future > y_last).float()`` and turned into probabilities with :func:`torch.sigmoid`.

Padding of the convolutions keeps the sequence length:

- ``"causal"`` (default) pads ``kernel_size - 1`` zeros on the left, so the conv output at step
  ``t`` sees only steps ``<= t``; with ``attention=True`` the attention is causally masked too.
  No step's representation depends on later steps in the window until the LSTM reads them in
  order.
- ``"symmetric"`` pads ``(kernel_size - 1) // 2`` on the left and the rest on the right ("same"
  padding, any kernel size), so each step also sees a little of what follows it in the window.

Both are free of look-ahead across the forecast origin: the window itself ends at the origin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from celeris.checks import check_bool, check_fraction, check_int
from celeris.errors import CelerisTypeError, ConfigError, check_choice
from celeris.models.catalogue import ForecastModel, register_model

TASKS = ("regression", "direction")
PADDINGS = ("causal", "symmetric")
NORMS = ("batch", "layer", "none")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}

# Feature detection: fused attention (flash / memory-efficient kernels) where torch has it.
_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class _ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a ``[B, C, L]`` tensor (each time step on its own)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # [B, C, L] -> [B, L, C] -> LayerNorm over C -> [B, C, L]
        return self.norm(h.transpose(1, 2)).transpose(1, 2)


class _SelfAttention(nn.Module):
    """One multi-head self-attention layer over time, post-norm residual (Vaswani et al., 2017)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, causal: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.causal = causal
        self.attn_dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.attn_dropout if self.training else 0.0
        if _HAS_SDPA:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        # Fallback, same definition: softmax(q k^T / sqrt(d) + mask) v.
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # [B, nh, L, L]
        if self.causal:
            length = q.shape[-2]
            future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = F.dropout(scores.softmax(dim=-1), p=p, training=self.training)
        return weights @ v  # [B, nh, L, L] @ [B, nh, L, hd] -> [B, nh, L, hd]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        batch, length, d_model = h.shape
        # [B, L, D] -> [B, L, 3D] -> [B, L, 3, nh, hd] -> [3, B, nh, L, hd]
        qkv = self.qkv(h).view(batch, length, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = self._attend(qkv[0], qkv[1], qkv[2])  # [B, nh, L, hd]
        out = out.transpose(1, 2).reshape(batch, length, d_model)  # [B, nh, L, hd] -> [B, L, D]
        return self.norm(h + self.dropout(self.proj(out)))


@register_model("cnn_lstm")
class CNNLSTM(ForecastModel):
    """Conv1d feature extractor, optional self-attention, LSTM and a linear head.

    Parameters
    ----------
    n_features
        Number of input columns ``C`` of each window ``[B, L, C]``.
    input_size
        Window length ``L``; ``forward`` rejects any other length.
    horizon
        Number of outputs ``H`` per window.
    conv_channels
        Output channels of each Conv1d block, in order; empty for no convolutions.
    kernel_size
        Kernel size of every Conv1d.
    lstm_hidden, lstm_layers
        Hidden size and number of stacked LSTM layers.
    attention
        Add one self-attention layer over time between the convolutions and the LSTM.
    n_heads
        Attention heads; must divide the last conv channel count (or ``n_features`` without
        convolutions).
    dropout
        Dropout after each conv block, in attention, between LSTM layers and before the head.
    task
        ``"regression"`` (forecast values) or ``"direction"`` (logits of P(up), train with
        ``BCEWithLogitsLoss``). The instance attribute ``task`` then reads ``"regression"`` or
        ``"classification"``, the registry's words for values and logits.
    padding
        ``"causal"`` or ``"symmetric"``; see the module docstring.
    norm
        ``"layer"`` (default: independent of batch size, no train/eval skew at batch 1),
        ``"batch"`` or ``"none"``, applied after each convolution.
    activation
        ``"relu"``, ``"gelu"``, ``"silu"`` or ``"tanh"``.
    """

    def __init__(
        self,
        n_features: int,
        input_size: int,
        horizon: int,
        conv_channels: Sequence[int] = (64, 64),
        kernel_size: int = 3,
        lstm_hidden: int = 64,
        lstm_layers: int = 1,
        attention: bool = False,
        n_heads: int = 4,
        dropout: float = 0.1,
        task: str = "regression",
        padding: str = "causal",
        norm: str = "layer",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        n_features = check_int("n_features", n_features, minimum=1)
        input_size = check_int("input_size", input_size, minimum=1)
        horizon = check_int("horizon", horizon, minimum=1)
        if isinstance(conv_channels, str | bytes) or not isinstance(conv_channels, Sequence):
            raise CelerisTypeError(
                f"conv_channels must be a sequence of positive integers, got {conv_channels!r}"
            )
        channels = [
            check_int(f"conv_channels[{i}]", c, minimum=1) for i, c in enumerate(conv_channels)
        ]
        kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        lstm_hidden = check_int("lstm_hidden", lstm_hidden, minimum=1)
        lstm_layers = check_int("lstm_layers", lstm_layers, minimum=1)
        attention = check_bool("attention", attention)
        n_heads = check_int("n_heads", n_heads, minimum=1)
        dropout = check_fraction("dropout", dropout, open_high=True)
        check_choice("task", task, TASKS)
        check_choice("padding", padding, PADDINGS)
        check_choice("norm", norm, NORMS)
        check_choice("activation", activation, ACTIVATIONS)
        d_model = channels[-1] if channels else n_features
        if attention and d_model % n_heads:
            raise ConfigError(
                f"n_heads={n_heads} must divide the attention width {d_model} "
                f"(the last of conv_channels, or n_features without convolutions)"
            )

        self.n_features = n_features
        self.input_size = input_size
        self.horizon = horizon
        # The registry's vocabulary for what forward returns: "classification" means logits.
        self.task = "classification" if task == "direction" else "regression"  # type: ignore[misc]
        self._config: dict[str, Any] = {
            "n_features": n_features,
            "input_size": input_size,
            "horizon": horizon,
            "conv_channels": list(channels),
            "kernel_size": kernel_size,
            "lstm_hidden": lstm_hidden,
            "lstm_layers": lstm_layers,
            "attention": attention,
            "n_heads": n_heads,
            "dropout": float(dropout),
            "task": task,
            "padding": padding,
            "norm": norm,
            "activation": activation,
        }

        left = kernel_size - 1 if padding == "causal" else (kernel_size - 1) // 2
        right = kernel_size - 1 - left
        blocks: list[nn.Module] = []
        in_channels = n_features
        for out_channels in channels:
            blocks.append(nn.ConstantPad1d((left, right), 0.0))  # [B, C, L] -> [B, C, L + k - 1]
            # A bias before BatchNorm is cancelled by its mean subtraction (and gets no gradient).
            blocks.append(nn.Conv1d(in_channels, out_channels, kernel_size, bias=norm != "batch"))
            if norm == "batch":
                blocks.append(nn.BatchNorm1d(out_channels))
            elif norm == "layer":
                blocks.append(_ChannelLayerNorm(out_channels))
            blocks.append(ACTIVATIONS[activation]())
            blocks.append(nn.Dropout(dropout))
            in_channels = out_channels
        self.conv = nn.Sequential(*blocks)
        self.attention = (
            _SelfAttention(d_model, n_heads, dropout, causal=padding == "causal")
            if attention
            else None
        )
        # torch warns when dropout is set on a single-layer LSTM (it would never apply).
        self.lstm = nn.LSTM(
            d_model,
            lstm_hidden,
            num_layers=lstm_layers,
            batch_first=True,
            dropout=dropout if lstm_layers > 1 else 0.0,
        )
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(lstm_hidden, horizon)

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable, a fresh copy)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    @classmethod
    def tiny_config(cls, input_size: int, horizon: int, n_features: int) -> dict[str, Any]:
        """Return a very small configuration for contract tests."""
        return {
            "n_features": n_features,
            "input_size": input_size,
            "horizon": horizon,
            "conv_channels": [8],
            "kernel_size": 3,
            "lstm_hidden": 8,
            "lstm_layers": 1,
            "attention": True,
            "n_heads": 2,
            "dropout": 0.0,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``x`` ``[B, L, C]`` to forecasts (or direction logits) ``[B, H]``."""
        self.check_input(x)
        h = self.conv(x.transpose(1, 2))  # [B, L, C] -> [B, C, L] -> [B, C_conv, L]
        h = h.transpose(1, 2)  # [B, C_conv, L] -> [B, L, C_conv]
        if self.attention is not None:
            h = self.attention(h)  # [B, L, C_conv] -> [B, L, C_conv]
        out, _ = self.lstm(h)  # [B, L, C_conv] -> [B, L, lstm_hidden]
        last = out[:, -1, :]  # [B, L, lstm_hidden] -> [B, lstm_hidden]
        return self.head(self.head_dropout(last))  # [B, lstm_hidden] -> [B, H]
