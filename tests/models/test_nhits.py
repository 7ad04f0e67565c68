"""NHITS: learns known signals beyond the naive baseline; structure and validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models.catalogue import build_model
from celeris.models.data import make_windows, split_by_time
from celeris.models.nhits import NHITS
from tests.models.conftest import ar2_series, sine_series

# AR(2) with complex roots r * exp(+-i w): a noisy oscillation, predictable a few steps ahead.
R, OMEGA = 0.97, 2 * np.pi / 12
PHI1, PHI2 = 2 * R * np.cos(OMEGA), -(R**2)


def _fit(values: np.ndarray, input_size: int, horizon: int, steps: int = 200):
    """Train a small NHITS with Adam on MAE; return (model, test windows)."""
    train, _, test = split_by_time(make_windows(values, input_size, horizon), val=0.0, test=0.25)
    model = NHITS(input_size, horizon, mlp_units=[[64, 64], [64, 64]])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(np.array(train.x)), torch.from_numpy(np.array(train.y))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = (model(x[idx]) - y[idx]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), test


def _forecast(model: NHITS, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.array(x))).numpy()


def test_nhits_sine_wave_beats_naive_by_far():
    model, test = _fit(sine_series(600, period=20.0, noise=0.05), input_size=40, horizon=10)
    mae = np.abs(_forecast(model, test.x) - test.y).mean()
    naive = np.abs(test.x[:, -1:, 0] - test.y).mean()
    assert naive > 0.5
    assert mae < 0.2 * naive, (mae, naive)


def test_nhits_ar2_process_beats_naive_near_oracle():
    values = ar2_series(1500, PHI1, PHI2, sigma=0.2)
    model, test = _fit(values, input_size=24, horizon=3)
    mae = np.abs(_forecast(model, test.x) - test.y).mean()
    naive = np.abs(test.x[:, -1:, 0] - test.y).mean()
    # Oracle: the true conditional mean, iterating the AR recursion from the last two values.
    prev2, prev1 = test.x[:, -2, 0].astype(np.float64), test.x[:, -1, 0].astype(np.float64)
    oracle = []
    for _ in range(3):
        prev2, prev1 = prev1, PHI1 * prev1 + PHI2 * prev2
        oracle.append(prev1)
    oracle_mae = np.abs(np.stack(oracle, axis=1) - test.y).mean()
    assert mae < 0.5 * naive, (mae, naive)
    assert mae < 1.4 * oracle_mae  # naive is ~3x the oracle, (mae, oracle_mae)


def test_nhits_zero_weights_constant_input_forecasts_that_constant():
    # Level init: with every weight zero the blocks add nothing and the forecast is the last
    # input value repeated.
    model = NHITS(12, 5, n_exog=2, mlp_units=[[8, 8]])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.full((3, 12, 3), 7.25)
    x[1, :, 0] = -2.5
    out = model(x)
    assert out.shape == (3, 5)
    assert torch.equal(out, torch.tensor([[7.25] * 5, [-2.5] * 5, [7.25] * 5]))


def test_nhits_last_value_only_sets_level_when_weights_zero():
    model = NHITS(6, 4, mlp_units=[[4, 4]])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.arange(6, dtype=torch.float32).reshape(1, 6, 1)
    assert torch.equal(model(x), torch.full((1, 4), 5.0))


def test_nhits_pooling_ceil_mode_keeps_partial_window():
    # input_size 7 with kernel 2: ceil(7 / 2) = 4 pooled values feed the first Linear.
    model = NHITS(7, 4, n_pool_kernel_size=[2, 3, 1], mlp_units=[[8, 8]])
    pools = [block.pooling for block in model.blocks]
    assert all(isinstance(p, torch.nn.MaxPool1d) and p.ceil_mode for p in pools)
    assert [p.kernel_size for p in pools] == [2, 3, 1]
    assert [block.layers[0].in_features for block in model.blocks] == [4, 3, 7]


def test_nhits_mlp_layout_matches_neuralforecast():
    # Linear(in, u0) with no activation, then (Linear, ReLU) per layer, then Linear(u, n_theta);
    # n_theta = input_size + max(h // freq, 1).
    model = NHITS(10, 8, n_exog=1, mlp_units=[[16, 12], [12, 6]])
    kinds = [type(m).__name__ for m in model.blocks[0].layers]
    assert kinds == ["Linear", "Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert model.blocks[0].layers[0].in_features == 5 * 2  # pooled series + pooled exog
    assert [b.layers[-1].out_features for b in model.blocks] == [10 + 2, 10 + 4, 10 + 8]


def test_nhits_defaults_match_neuralforecast():
    cfg = NHITS(24, 12).config()
    assert cfg["n_stacks"] == 3
    assert cfg["n_blocks"] == [1, 1, 1]
    assert cfg["mlp_units"] == [[512, 512]] * 3
    assert cfg["n_pool_kernel_size"] == [2, 2, 1]
    assert cfg["n_freq_downsample"] == [4, 2, 1]
    assert (cfg["pooling_mode"], cfg["interpolation_mode"]) == ("MaxPool1d", "linear")
    assert (cfg["dropout_prob_theta"], cfg["activation"]) == (0.0, "ReLU")


@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
def test_nhits_interpolation_modes_give_horizon_outputs(mode):
    model = NHITS(16, 9, interpolation_mode=mode, mlp_units=[[8, 8]])
    out = model(torch.randn(2, 16, 1))
    assert out.shape == (2, 9)
    assert torch.isfinite(out).all()


def test_nhits_cubic_equals_neuralforecast_square_bicubic_row():
    # NeuralForecast interpolates [B, 1, 1, K] to (H, H) bicubic and keeps row 0; we ask for
    # (1, H) directly: the same values.
    model = NHITS(8, 7, n_freq_downsample=[3, 2, 1], interpolation_mode="cubic", mlp_units=[[4, 4]])
    knots = torch.randn(5, 2)
    ours = model.blocks[0]._interpolate(knots)
    square = torch.nn.functional.interpolate(knots[:, None, None, :], size=7, mode="bicubic")
    torch.testing.assert_close(ours, square[:, 0, 0, :], rtol=1e-5, atol=1e-6)


def test_nhits_config_rebuilds_same_architecture():
    model = NHITS(12, 6, n_exog=2, n_blocks=[2, 1, 1], mlp_units=[[8, 8]])
    clone = build_model("nhits", **model.config())
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(4, 12, 3)
    assert torch.equal(model.eval()(x), clone.eval()(x))
    cfg = model.config()
    cfg["n_blocks"].append(9)
    assert model.config()["n_blocks"] == [2, 1, 1]  # a copy


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"input_size": 0}, ConfigError, "input_size must be >= 1"),
        ({"horizon": 0}, ConfigError, "horizon must be >= 1"),
        ({"horizon": 2.5}, CelerisTypeError, "horizon must be an int"),
        ({"n_exog": -1}, ConfigError, "n_exog must be >= 0"),
        ({"n_blocks": [1, 1]}, ConfigError, r"n_blocks must have one entry per stack \(3\)"),
        ({"n_pool_kernel_size": [2, 0, 1]}, ConfigError, "n_pool_kernel_size entries must be >= 1"),
        ({"n_freq_downsample": "421"}, CelerisTypeError, "n_freq_downsample must be a list"),
        ({"mlp_units": [[8, 4], [8, 8]]}, ConfigError, "mlp_units do not chain"),
        ({"mlp_units": []}, ConfigError, "at least one"),
        ({"mlp_units": [[8]]}, ConfigError, r"\[in, out\] pairs"),
        ({"pooling_mode": "maxpool"}, ConfigError, "did you mean 'MaxPool1d'"),
        ({"interpolation_mode": "cubc"}, ConfigError, "did you mean 'cubic'"),
        ({"activation": "relu"}, ConfigError, "unknown activation 'relu'"),
        ({"dropout_prob_theta": 1.0}, ConfigError, r"dropout_prob_theta must be in \[0, 1\)"),
    ],
)
def test_nhits_bad_argument_raises_clear_error(kwargs, error, match):
    args = {"input_size": 8, "horizon": 4, "mlp_units": [[8, 8]], **kwargs}
    with pytest.raises(error, match=match):
        NHITS(**args)


def test_nhits_unknown_option_via_registry_suggests_name():
    with pytest.raises(ConfigError, match="did you mean 'n_pool_kernel_size'"):
        build_model("nhits", input_size=8, horizon=4, n_pool_kernel=[2, 2, 1])


@pytest.mark.parametrize(
    ("shape", "match"),
    [((2, 8, 2), "expected 1 feature"), ((2, 9, 1), "input_size=8"), ((8, 1), "2-D")],
)
def test_nhits_wrong_input_shape_raises_data_error(shape, match):
    model = NHITS(8, 4, mlp_units=[[8, 8]])
    with pytest.raises(DataError, match=match):
        model(torch.zeros(shape))
