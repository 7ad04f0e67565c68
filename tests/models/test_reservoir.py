"""Echo-state reservoir: construction, dynamics, closed-form readout, persistence, errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from celeris.errors import CelerisError, CelerisTypeError, ConfigError, DataError
from celeris.models.catalogue import build_model, get_model
from celeris.models.reservoir import EchoStateNetwork
from tests.helpers import assert_values_close


def _sine_windows(
    n: int, input_size: int, horizon: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of noisy sines, one series per window (random period 15-30 bars and phase)."""
    rng = np.random.default_rng(seed)
    t = np.arange(input_size + horizon)
    period = rng.uniform(15, 30, size=(n, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    series = np.sin(2 * np.pi * t / period + phase) + 0.05 * rng.standard_normal((n, t.size))
    x = torch.tensor(series[:, :input_size, None], dtype=torch.float32)
    y = torch.tensor(series[:, input_size:], dtype=torch.float32)
    return x, y


def _ar2_windows(n: int, input_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of one AR(2) series, target the next value.

    y_t = 0.95 y_{t-1} - 0.9025 y_{t-2} + e_t: complex roots of modulus 0.95 (quasi-period 6
    bars), so the last value is a poor guess: its MAE is ~2.7x the innovation's.
    """
    rng = np.random.default_rng(seed)
    length = n + input_size + 100
    e = rng.standard_normal(length)
    y = np.zeros(length)
    for t in range(2, length):
        y[t] = 0.95 * y[t - 1] - 0.9025 * y[t - 2] + e[t]
    y = y[100:]  # burn-in
    idx = np.arange(n)[:, None] + np.arange(input_size)[None, :]
    x = torch.tensor(y[idx][:, :, None], dtype=torch.float32)
    target = torch.tensor(y[np.arange(n) + input_size][:, None], dtype=torch.float32)
    return x, target


def _mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


@pytest.mark.parametrize("radius", [0.5, 0.9, 1.2])
def test_reservoir_spectral_radius_equals_requested_value(radius: float) -> None:
    model = EchoStateNetwork(2, 20, 1, reservoir_size=120, spectral_radius=radius, sparsity=0.8)
    eigenvalues = torch.linalg.eigvals(model.w_res.double())
    assert abs(float(eigenvalues.abs().max()) - radius) < 1e-6
    zero_fraction = float((model.w_res == 0).double().mean())
    assert abs(zero_fraction - 0.8) < 0.02


def test_reservoir_same_seed_builds_identical_matrices_other_seed_differs() -> None:
    a = EchoStateNetwork(2, 20, 1, reservoir_size=40, seed=3)
    b = EchoStateNetwork(2, 20, 1, reservoir_size=40, seed=3)
    c = EchoStateNetwork(2, 20, 1, reservoir_size=40, seed=4)
    for name in ("w_in", "w_res", "bias"):
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.equal(getattr(a, name), getattr(c, name))


def test_reservoir_state_update_matches_hand_computed_leaky_tanh() -> None:
    model = EchoStateNetwork(2, 3, 1, reservoir_size=5, sparsity=0.0, leak_rate=0.4, washout=0)
    x = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(1))
    w_in, w, b = (
        model.w_in.double().numpy(),
        model.w_res.double().numpy(),
        model.bias.double().numpy(),
    )
    expected = np.zeros((2, 3, 5))
    state = np.zeros((2, 5))
    for t in range(3):
        pre = np.tanh(x[:, t].double().numpy() @ w_in + state @ w + b)
        state = 0.6 * state + 0.4 * pre
        expected[:, t] = state
    got = model.reservoir_states(x, return_sequence=True)
    assert_values_close(got.double().numpy(), expected, rtol=0, atol=1e-6)
    assert_values_close(model.reservoir_states(x).double().numpy(), expected[:, -1], atol=1e-6)


def test_reservoir_states_with_washout_drop_leading_steps() -> None:
    model = EchoStateNetwork(1, 12, 1, reservoir_size=16, washout=5)
    x = torch.randn(3, 12, 1)
    assert model.reservoir_states(x, return_sequence=True).shape == (3, 7, 16)


def test_reservoir_batched_windows_match_one_at_a_time() -> None:
    model = EchoStateNetwork(3, 15, 2, reservoir_size=64)
    x = torch.randn(5, 15, 3)
    together = model.reservoir_states(x)
    alone = torch.cat([model.reservoir_states(x[i : i + 1]) for i in range(5)])
    assert_values_close(together.numpy(), alone.numpy(), rtol=0, atol=1e-6)


def test_reservoir_different_initial_states_converge_echo_state_property() -> None:
    model = EchoStateNetwork(1, 20, 1, reservoir_size=200, spectral_radius=0.9, leak_rate=0.3)
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(1, 300, 1, generator=gen)
    s1 = torch.rand(1, 200, generator=gen) * 2 - 1
    s2 = -s1
    start_gap = float((s1 - s2).norm())
    gaps = [
        float((model.reservoir_states(u[:, :n], s1) - model.reservoir_states(u[:, :n], s2)).norm())
        for n in (10, 50, 300)
    ]
    assert gaps[0] < start_gap
    assert gaps[1] < gaps[0]
    assert gaps[2] < 1e-4 * start_gap


def test_reservoir_sine_forecast_fits_closed_form_and_beats_naive_by_half() -> None:
    x, y = _sine_windows(800, 40, 3, seed=0)
    x_test, y_test = _sine_windows(300, 40, 3, seed=1)
    model = EchoStateNetwork(1, 40, 3, reservoir_size=200, ridge=1e-4, washout=10)
    assert list(model.parameters()) == []  # nothing for an optimizer: the readout is solved
    assert model.fit(x, y) is model
    pred = model(x_test)
    naive = x_test[:, -1, :].expand_as(y_test)
    model_mae, naive_mae = _mae(pred, y_test), _mae(naive, y_test)
    assert model_mae < 0.5 * naive_mae, (model_mae, naive_mae)


def test_reservoir_ar2_one_step_forecast_beats_naive_by_half() -> None:
    x, y = _ar2_windows(1500, 30, seed=0)
    x_test, y_test = _ar2_windows(500, 30, seed=1)
    model = EchoStateNetwork(1, 30, 1, reservoir_size=100, input_scaling=0.3).fit(x, y)
    model_mae = _mae(model(x_test), y_test)
    naive_mae = _mae(x_test[:, -1, :], y_test)
    # The best possible one-step MAE is E|e| = 0.80 for unit Gaussian innovations.
    assert model_mae < 0.5 * naive_mae, (model_mae, naive_mae)
    assert model_mae < 0.9


def test_reservoir_readout_equals_numpy_ridge_solution() -> None:
    x, y = _sine_windows(120, 20, 2, seed=2)
    model = EchoStateNetwork(1, 20, 2, reservoir_size=30, ridge=0.5).fit(x, y)
    state = model.reservoir_states(x).double().numpy()
    feats = np.hstack([state, x[:, -1, :].double().numpy(), np.ones((120, 1))])
    penalty = 0.5 * np.eye(feats.shape[1])
    penalty[-1, -1] = 0.0
    expected = np.linalg.solve(feats.T @ feats + penalty, feats.T @ y.double().numpy())
    assert_values_close(model.readout.double().numpy(), expected, rtol=1e-4, atol=1e-5)


def test_reservoir_fit_in_chunks_equals_fit_at_once() -> None:
    x, y = _sine_windows(100, 20, 2, seed=3)
    whole = EchoStateNetwork(1, 20, 2, reservoir_size=30, ridge=1e-2).fit(x, y)
    chunked = EchoStateNetwork(1, 20, 2, reservoir_size=30, ridge=1e-2).fit(x, y, batch_size=7)
    assert_values_close(chunked(x).numpy(), whole(x).numpy(), rtol=0, atol=1e-4)


def test_reservoir_safetensors_round_trip_gives_identical_outputs() -> None:
    x, y = _sine_windows(60, 20, 2, seed=4)
    model = EchoStateNetwork(1, 20, 2, reservoir_size=30).fit(x, y)
    blob = save_safetensors(dict(model.state_dict()))
    restored = EchoStateNetwork(**{**model.config(), "seed": 99})  # other random matrices
    restored.load_state_dict(load_safetensors(blob))
    assert torch.equal(restored(x), model(x))


def test_reservoir_torch_save_round_trip_via_build_model_gives_identical_outputs() -> None:
    x, y = _sine_windows(60, 20, 2, seed=5)
    model = EchoStateNetwork(1, 20, 2, reservoir_size=30).fit(x, y)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    config = json.loads(json.dumps(model.config()))
    restored = build_model("reservoir", **config)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored(x), model(x))


def test_reservoir_registry_name_and_flags_are_set() -> None:
    assert get_model("reservoir") is EchoStateNetwork
    assert EchoStateNetwork.name == "reservoir"
    assert EchoStateNetwork.trainable is False
    tiny = EchoStateNetwork(**EchoStateNetwork.tiny_config(8, 2, 3))
    assert tiny.reservoir_states(torch.randn(4, 8, 3)).shape == (4, 32)


def test_reservoir_forward_before_fit_raises_clear_error() -> None:
    model = EchoStateNetwork(1, 20, 2, reservoir_size=30)
    with pytest.raises(CelerisError, match=r"not fitted.*fit\(x, y\)"):
        model(torch.randn(2, 20, 1))


def test_reservoir_wrong_feature_count_raises_data_error_naming_expected_and_got() -> None:
    model = EchoStateNetwork(3, 20, 2, reservoir_size=30)
    x, y = torch.randn(10, 20, 3), torch.randn(10, 2)
    model.fit(x, y)
    with pytest.raises(DataError, match=r"expected 3 feature\(s\).*got 2"):
        model(torch.randn(4, 20, 2))
    with pytest.raises(DataError, match=r"expected 3 feature\(s\).*got 4"):
        model.fit(torch.randn(10, 20, 4), y)


def test_reservoir_fit_with_nan_raises_data_error_naming_index() -> None:
    model = EchoStateNetwork(1, 20, 2, reservoir_size=30)
    x, y = torch.randn(10, 20, 1), torch.randn(10, 2)
    x[3, 5, 0] = float("nan")
    with pytest.raises(DataError, match=r"x has a non-finite value .* at index \(3, 5, 0\)"):
        model.fit(x, y)
    with pytest.raises(DataError, match="horizon=2"):
        model.fit(torch.randn(10, 20, 1), torch.randn(10, 3))
    with pytest.raises(DataError, match="10 windows but y has 9 rows"):
        model.fit(torch.randn(10, 20, 1), torch.randn(9, 2))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"washout": 20}, ConfigError, "washout=20 must be smaller than input_size=20"),
        ({"washout": -1}, ConfigError, "washout must be >= 0, got -1"),
        ({"spectral_radius": 0.0}, ConfigError, "spectral_radius must be > 0, got 0.0"),
        ({"spectral_radius": float("inf")}, ConfigError, "spectral_radius must be finite"),
        ({"leak_rate": 1.5}, ConfigError, r"leak_rate must be in \(0, 1\], got 1.5"),
        ({"leak_rate": 0}, ConfigError, r"leak_rate must be in \(0, 1\], got 0"),
        ({"sparsity": 1.0}, ConfigError, r"sparsity must be in \[0, 1\), got 1.0"),
        ({"ridge": 0.0}, ConfigError, "ridge must be > 0, got 0.0"),
        ({"input_scaling": -1.0}, ConfigError, "input_scaling must be > 0, got -1.0"),
        ({"reservoir_size": 0}, ConfigError, "reservoir_size must be >= 1, got 0"),
        (
            {"reservoir_size": 2.5},
            CelerisTypeError,
            "reservoir_size must be an int >= 1, got float",
        ),
        ({"horizon": True}, CelerisTypeError, "horizon must be an int >= 1, got bool"),
        ({"seed": "1"}, CelerisTypeError, "seed must be an int, got str '1'"),
        ({"include_input": 1}, CelerisTypeError, "include_input must be True or False"),
    ],
)
def test_reservoir_bad_argument_raises_clear_error(kwargs: dict, error: type, message: str) -> None:
    # Unified rule (celeris.checks): a wrong type is a CelerisTypeError, a bad value a ConfigError.
    args = {"n_features": 1, "input_size": 20, "horizon": 2, "reservoir_size": 10, **kwargs}
    with pytest.raises(error, match=message):
        EchoStateNetwork(**args)


def test_reservoir_fully_sparse_matrix_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="no non-zero eigenvalue"):
        EchoStateNetwork(1, 20, 2, reservoir_size=1, sparsity=0.99)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reservoir_cuda_matches_cpu() -> None:
    x, y = _sine_windows(200, 30, 2, seed=6)
    cpu = EchoStateNetwork(1, 30, 2, reservoir_size=100).fit(x, y)
    gpu = EchoStateNetwork(1, 30, 2, reservoir_size=100).to("cuda").fit(x.cuda(), y.cuda())
    assert gpu.readout.device.type == "cuda"
    assert_values_close(gpu(x.cuda()).cpu().numpy(), cpu(x).numpy(), rtol=0, atol=1e-3)
