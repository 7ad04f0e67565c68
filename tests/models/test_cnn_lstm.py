"""CNN+LSTM hybrid: shapes, gradients, padding and attention semantics, learning, errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models import cnn_lstm
from celeris.models.catalogue import build_model, get_model
from celeris.models.cnn_lstm import CNNLSTM
from tests.helpers import assert_values_close


def _small(**overrides) -> CNNLSTM:
    args = {
        "n_features": 5,
        "input_size": 12,
        "horizon": 3,
        "conv_channels": [8, 8],
        "lstm_hidden": 8,
        "n_heads": 2,
        **overrides,
    }
    return CNNLSTM(**args)


@pytest.mark.parametrize("task", ["regression", "direction"])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("padding", ["causal", "symmetric"])
def test_cnn_lstm_forward_returns_finite_batch_by_horizon(
    task: str, attention: bool, padding: str
) -> None:
    model = _small(task=task, attention=attention, padding=padding).eval()
    out = model(torch.randn(4, 12, 5))
    assert out.shape == (4, 3)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("task", ["regression", "direction"])
@pytest.mark.parametrize("attention", [False, True])
@pytest.mark.parametrize("norm", ["layer", "batch", "none"])
def test_cnn_lstm_backward_gives_every_parameter_a_gradient(
    task: str, attention: bool, norm: str
) -> None:
    torch.manual_seed(0)
    model = _small(task=task, attention=attention, norm=norm, lstm_layers=2, kernel_size=4)
    out = model(torch.randn(6, 12, 5))
    if task == "direction":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.ones_like(out))
    else:
        loss = out.square().mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_cnn_lstm_task_attribute_uses_registry_vocabulary() -> None:
    assert _small().task == "regression"
    assert _small(task="direction").task == "classification"
    assert _small(task="direction").config()["task"] == "direction"


@pytest.mark.parametrize("attention", [False, True])
def test_cnn_lstm_causal_padding_keeps_earlier_steps_blind_to_later_ones(attention: bool) -> None:
    model = _small(attention=attention, padding="causal", kernel_size=5).eval()
    x = torch.randn(2, 12, 5)
    changed = x.clone()
    changed[:, 8:] += 1.0

    def features(inp: torch.Tensor) -> torch.Tensor:
        h = model.conv(inp.transpose(1, 2)).transpose(1, 2)  # [B, L, C_conv]
        return model.attention(h) if model.attention is not None else h

    before, after = features(x), features(changed)
    assert torch.equal(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_cnn_lstm_symmetric_padding_lets_steps_see_the_next_ones() -> None:
    model = _small(padding="symmetric", kernel_size=5).eval()
    x = torch.randn(2, 12, 5)
    changed = x.clone()
    changed[:, 8:] += 1.0
    before = model.conv(x.transpose(1, 2))  # [B, C_conv, L]
    after = model.conv(changed.transpose(1, 2))
    assert torch.equal(before[..., :4], after[..., :4])  # two layers of half-width 2
    assert not torch.allclose(before[..., 6:8], after[..., 6:8])


@pytest.mark.parametrize("padding", ["causal", "symmetric"])
def test_cnn_lstm_attention_fallback_matches_fused_kernel(
    padding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _small(attention=True, padding=padding).eval()
    x = torch.randn(3, 12, 5)
    fused = model(x)
    monkeypatch.setattr(cnn_lstm, "_HAS_SDPA", False)
    manual = model(x)
    assert_values_close(manual.detach().numpy(), fused.detach().numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("attention", [False, True])
def test_cnn_lstm_safetensors_round_trip_gives_identical_outputs(attention: bool) -> None:
    torch.manual_seed(1)
    model = _small(attention=attention, norm="batch").train()
    model(torch.randn(16, 12, 5))  # move BatchNorm running statistics off their defaults
    model.eval()
    blob = save_safetensors(dict(model.state_dict()))
    torch.manual_seed(2)
    restored = CNNLSTM(**json.loads(json.dumps(model.config())))
    restored.load_state_dict(load_safetensors(blob))
    restored.eval()
    x = torch.randn(4, 12, 5)
    assert torch.equal(restored(x), model(x))


def test_cnn_lstm_torch_save_round_trip_via_build_model_gives_identical_outputs() -> None:
    model = _small(attention=True).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = build_model("cnn_lstm", **model.config())
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.eval()
    x = torch.randn(4, 12, 5)
    assert torch.equal(restored(x), model(x))


def test_cnn_lstm_registry_and_tiny_config_build_a_working_model() -> None:
    assert get_model("cnn_lstm") is CNNLSTM
    assert CNNLSTM.name == "cnn_lstm"
    assert CNNLSTM.trainable is True
    tiny = CNNLSTM(**CNNLSTM.tiny_config(input_size=10, horizon=4, n_features=3))
    assert tiny(torch.randn(2, 10, 3)).shape == (2, 4)
    config = tiny.config()
    config["conv_channels"].append(99)  # a copy: mutating it leaves the model's config alone
    assert tiny.config()["conv_channels"] == [8]


def _noisy_sine_windows(
    n: int, input_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three features per bar (noisy sine, its change, pure noise); target the next clean value.

    Returns x [n, L, 3], y [n, 1] and the naive forecast (last noisy value) [n, 1].
    """
    rng = np.random.default_rng(seed)
    t = np.arange(input_size + 1)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    clean = np.sin(2 * np.pi * t / 16 + phase)
    noisy = clean + 0.1 * rng.standard_normal(clean.shape)
    change = np.diff(noisy, axis=1, prepend=noisy[:, :1])
    junk = rng.standard_normal(clean.shape)
    feats = np.stack([noisy, change, junk], axis=-1)[:, :input_size]
    x = torch.tensor(feats, dtype=torch.float32)
    y = torch.tensor(clean[:, input_size:], dtype=torch.float32)
    naive = torch.tensor(noisy[:, input_size - 1 : input_size], dtype=torch.float32)
    return x, y, naive


def _train(model: CNNLSTM, x: torch.Tensor, y: torch.Tensor, loss_fn, steps: int = 150) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        opt.zero_grad()
        loss_fn(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def test_cnn_lstm_learns_noisy_sine_beyond_naive_baseline() -> None:
    torch.manual_seed(0)
    x, y, _ = _noisy_sine_windows(1000, 20, seed=0)
    x_test, y_test, naive = _noisy_sine_windows(300, 20, seed=1)
    model = CNNLSTM(3, 20, 1, conv_channels=[8], lstm_hidden=16, dropout=0.0)
    _train(model, x, y, torch.nn.functional.mse_loss)
    with torch.no_grad():
        model_mae = float((model(x_test) - y_test).abs().mean())
    naive_mae = float((naive - y_test).abs().mean())
    assert model_mae < 0.5 * naive_mae, (model_mae, naive_mae)


def test_cnn_lstm_direction_task_learns_sign_pattern_above_80_percent() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1300, 16, 3, generator=gen)
    # Step 1 goes up when feature 0 averaged over the last 4 bars is positive; step 2 when
    # feature 1 exceeds feature 2 at the last bar. Separable, but only from the right bars.
    up = torch.stack([x[:, -4:, 0].mean(1) > 0, x[:, -1, 1] > x[:, -1, 2]], dim=1).float()
    model = CNNLSTM(3, 16, 2, conv_channels=[8], lstm_hidden=16, dropout=0.0, task="direction")
    _train(model, x[:1000], up[:1000], torch.nn.BCEWithLogitsLoss())
    with torch.no_grad():
        predicted_up = model(x[1000:]) > 0  # logit > 0 <=> P(up) > 0.5
    accuracy = (predicted_up == up[1000:].bool()).float().mean(0)
    assert (accuracy > 0.8).all(), accuracy


def test_cnn_lstm_wrong_feature_count_raises_data_error_naming_expected_and_got() -> None:
    model = _small()
    with pytest.raises(DataError, match=r"expected 5 feature\(s\) per bar, got 4"):
        model(torch.randn(2, 12, 4))
    with pytest.raises(DataError, match="input_size=12 bars, got 11"):
        model(torch.randn(2, 11, 5))
    with pytest.raises(DataError, match="got 2-D shape"):
        model(torch.randn(12, 5))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_features": 0}, ConfigError, "n_features must be >= 1, got 0"),
        ({"input_size": 2.0}, CelerisTypeError, "input_size must be an int >= 1, got float 2.0"),
        ({"horizon": -1}, ConfigError, "horizon must be >= 1, got -1"),
        ({"conv_channels": "64"}, CelerisTypeError, "conv_channels must be a sequence"),
        ({"conv_channels": [8, 0]}, ConfigError, r"conv_channels\[1\] must be >= 1, got 0"),
        ({"kernel_size": 0}, ConfigError, "kernel_size must be >= 1"),
        ({"lstm_hidden": None}, CelerisTypeError, "lstm_hidden must be an int >= 1, got NoneType"),
        ({"lstm_layers": True}, CelerisTypeError, "lstm_layers must be an int >= 1, got bool"),
        ({"dropout": 1.0}, ConfigError, r"dropout must be in \[0, 1\), got 1.0"),
        ({"attention": 1}, CelerisTypeError, "attention must be True or False"),
        (
            {"task": "directon"},
            ConfigError,
            "unknown task 'directon' \\(did you mean 'direction'\\?\\)",
        ),
        ({"padding": "same"}, ConfigError, "unknown padding 'same'"),
        ({"norm": "group"}, ConfigError, "unknown norm 'group'"),
        (
            {"activation": "relu6"},
            ConfigError,
            "unknown activation 'relu6' \\(did you mean 'relu'\\?\\)",
        ),
        (
            {"attention": True, "n_heads": 3},
            ConfigError,
            "n_heads=3 must divide the attention width 8",
        ),
    ],
)
def test_cnn_lstm_bad_argument_raises_clear_error(kwargs: dict, error: type, message: str) -> None:
    # Unified rule (celeris.checks): a wrong type is a CelerisTypeError, a bad value a ConfigError.
    with pytest.raises(error, match=message):
        _small(**kwargs)


def test_cnn_lstm_without_convolutions_attends_over_raw_features() -> None:
    model = _small(conv_channels=[], attention=True, n_heads=5).eval()
    assert model(torch.randn(2, 12, 5)).shape == (2, 3)
