"""Losses: hand-computed values, torch parity, the Sharpe loss's ordering, name lookup."""

from __future__ import annotations

import math

import pytest
import torch

from celeris.errors import ConfigError
from celeris.models.losses import BCE, MAE, MSE, Huber, SharpeLoss, get_loss

F = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
Y = torch.tensor([[1.5, 0.0], [3.0, 9.0]])
LAST = torch.tensor([1.0, 4.0])


def test_mae_small_batch_equals_hand_value() -> None:
    # |errors| = 0.5, 2, 0, 4 -> 6.5 / 4
    assert MAE()(F, Y, LAST).item() == pytest.approx(1.625, rel=1e-7)


def test_mse_small_batch_equals_hand_value() -> None:
    # squares = 0.25, 4, 0, 16 -> 20.25 / 4
    assert MSE()(F, Y, LAST).item() == pytest.approx(5.0625, rel=1e-7)


def test_huber_small_batch_equals_hand_value_and_torch() -> None:
    # delta 1: 0.5*0.25, 1*(2-0.5), 0, 1*(4-0.5) -> (0.125 + 1.5 + 0 + 3.5) / 4
    assert Huber(1.0)(F, Y, LAST).item() == pytest.approx(1.28125, rel=1e-7)
    for delta in (0.3, 1.0, 2.5):
        expected = torch.nn.functional.huber_loss(F, Y, delta=delta)
        assert Huber(delta)(F, Y, LAST).item() == pytest.approx(expected.item(), rel=1e-6)


def test_huber_nonpositive_delta_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="delta must be > 0"):
        Huber(0.0)


def test_sharpe_direct_positions_with_cost_equals_hand_value() -> None:
    loss = SharpeLoss(position="direct", target="return", cost=0.1)
    forecast = torch.tensor([[1.0], [-1.0], [-1.0], [0.5]])  # positions
    realised = torch.tensor([[0.02], [-0.01], [0.03], [0.04]])
    # pnl = pos * r - 0.1 * |dpos| (no cost on the first row)
    pnl = [0.02, 0.01 - 0.2, -0.03, 0.02 - 0.15]
    mean = sum(pnl) / 4
    std = math.sqrt(sum((p - mean) ** 2 for p in pnl) / 4)
    got = loss(forecast, realised, torch.zeros(4)).item()
    assert got == pytest.approx(-mean / (std + 1e-8), rel=1e-5)


def test_sharpe_level_target_uses_change_from_last() -> None:
    loss = SharpeLoss(k=2.0)
    last = torch.tensor([10.0, 10.0, 10.0])
    forecast = torch.tensor([[11.0], [9.0], [10.5]])
    y = torch.tensor([[10.5], [9.0], [12.0]])
    pos = torch.tanh(2.0 * (forecast[:, 0] - last))
    pnl = pos * (y[:, 0] - last)
    expected = -pnl.mean() / (pnl.std(correction=0) + 1e-8)
    assert loss(forecast, y, last).item() == pytest.approx(expected.item(), rel=1e-6)


def test_sharpe_perfect_foresight_lower_than_negated_forecast() -> None:
    gen = torch.Generator().manual_seed(1)
    returns = torch.randn(256, 1, generator=gen) * 0.01
    last = torch.zeros(256)
    for cost in (0.0, 0.001):
        loss = SharpeLoss(k=100.0, cost=cost, target="return")
        perfect = loss(returns, returns, last).item()
        negated = loss(-returns, returns, last).item()
        assert perfect < 0 < negated
        assert perfect < negated


def test_sharpe_flat_positions_gives_finite_zero() -> None:
    loss = SharpeLoss(position="direct", target="return")
    value = loss(torch.zeros(8, 1), torch.randn(8, 1), torch.zeros(8))
    assert torch.isfinite(value) and value.item() == 0.0


def test_sharpe_gradient_flows_to_forecast() -> None:
    forecast = torch.randn(32, 2, requires_grad=True)
    SharpeLoss()(forecast, torch.randn(32, 2), torch.randn(32)).backward()
    assert forecast.grad is not None and forecast.grad[:, 0].abs().sum() > 0


def test_bce_direction_labels_match_torch() -> None:
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.1]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # Y > LAST[:, None]
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    assert BCE()(logits, Y, LAST).item() == pytest.approx(expected.item(), rel=1e-6)


def test_get_loss_misspelt_name_raises_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'hubr' \(did you mean 'huber'\?\)"):
        get_loss("hubr")


def test_get_loss_unknown_parameter_raises_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"no parameter 'delt' \(did you mean 'delta'\?\)"):
        get_loss("huber", delt=0.5)


def test_get_loss_parameters_reach_the_loss() -> None:
    loss = get_loss("huber", delta=0.25)
    assert isinstance(loss, Huber) and loss.delta == 0.25
    assert get_loss("sharpe", cost=0.01).sequential
