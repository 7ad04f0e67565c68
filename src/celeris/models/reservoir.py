"""Echo-state network: a fixed random reservoir with a ridge-regression readout (no backprop).

Leaky-integrator update (Jaeger, 2001; Lukoševičius, "A Practical Guide to Applying Echo State
Networks", 2012, eqs. 2-3), batched over ``B`` windows at once with the state as rows::

    pre_t   = tanh(u_t W_in + s_{t-1} W + b)          # [B, N]
    s_t     = (1 - leak_rate) * s_{t-1} + leak_rate * pre_t

``W`` is sparse-random (a fraction ``sparsity`` of its entries is zero) and scaled once at
construction so that its spectral radius (largest |eigenvalue|) equals ``spectral_radius``. Each
window starts from the zero state. The readout maps ``[s_L, u_L, 1]`` (final state, the inputs of
the last step, a constant) to the ``horizon`` targets; :meth:`EchoStateNetwork.fit` solves it in
closed form, ``W_out = (S^T S + ridge * I)^-1 S^T Y`` with the constant column left
unpenalised, accumulating ``S^T S`` and ``S^T Y`` in float64 chunk by chunk.

Every matrix, the readout and the fitted flag are buffers: ``state_dict`` and safetensors round
trips carry the whole model, and ``.to("cuda")`` moves all of it.
"""

from __future__ import annotations

from typing import Any

import torch

from celeris.checks import check_bool, check_fraction, check_int, check_real
from celeris.errors import CelerisError, ConfigError, DataError
from celeris.models.catalogue import ForecastModel, register_model


@register_model("reservoir")
class EchoStateNetwork(ForecastModel):
    """Leaky echo-state network with a closed-form ridge readout, batched over many series.

    Parameters
    ----------
    n_features
        Number of input columns ``C`` of each window ``[B, L, C]``.
    input_size
        Window length ``L``; ``forward`` and ``fit`` reject any other length.
    horizon
        Number of outputs ``H`` per window.
    reservoir_size
        Number of reservoir units ``N``.
    spectral_radius
        Largest absolute eigenvalue of the reservoir matrix after scaling; below 1 is the usual
        choice for the echo-state property (fading memory of the initial state).
    leak_rate
        Leaky-integration rate in (0, 1]; small values make the state slower (longer memory).
    input_scaling
        Input weights are uniform in ``[-input_scaling, input_scaling]``.
    sparsity
        Fraction of reservoir weights that are zero, in [0, 1).
    ridge
        Ridge (Tikhonov) penalty of the readout, > 0.
    washout
        Leading steps of each window treated as warm-up: validated ``< input_size`` and dropped
        from :meth:`reservoir_states` sequences. The readout reads only the final state, so it
        never sees them directly.
    seed
        Seed of the random reservoir (built on CPU, so identical on every device).
    bias_scaling
        Reservoir biases are uniform in ``[-bias_scaling, bias_scaling]``.
    include_input
        Feed the last step's inputs to the readout beside the final state.
    """

    trainable = False

    # Buffers (declared for type checkers; registered in __init__).
    w_in: torch.Tensor
    w_res: torch.Tensor
    bias: torch.Tensor
    readout: torch.Tensor
    fitted: torch.Tensor
    _fitted: bool

    def __init__(
        self,
        n_features: int,
        input_size: int,
        horizon: int,
        reservoir_size: int = 500,
        spectral_radius: float = 0.9,
        leak_rate: float = 0.3,
        input_scaling: float = 1.0,
        sparsity: float = 0.9,
        ridge: float = 1e-4,
        washout: int = 10,
        seed: int = 0,
        bias_scaling: float = 0.2,
        include_input: bool = True,
    ) -> None:
        super().__init__()
        n_features = check_int("n_features", n_features, minimum=1)
        input_size = check_int("input_size", input_size, minimum=1)
        horizon = check_int("horizon", horizon, minimum=1)
        reservoir_size = check_int("reservoir_size", reservoir_size, minimum=1)
        spectral_radius = check_real("spectral_radius", spectral_radius, minimum=0, open_low=True)
        leak_rate = check_fraction("leak_rate", leak_rate, open_low=True)
        input_scaling = check_real("input_scaling", input_scaling, minimum=0, open_low=True)
        bias_scaling = check_real("bias_scaling", bias_scaling, minimum=0)
        sparsity = check_fraction("sparsity", sparsity, open_high=True)
        ridge = check_real("ridge", ridge, minimum=0, open_low=True)
        washout = check_int("washout", washout, minimum=0)
        if washout >= input_size:
            raise ConfigError(
                f"washout={washout} must be smaller than input_size={input_size} "
                "(the window would be all warm-up)"
            )
        seed = check_int("seed", seed)
        include_input = check_bool("include_input", include_input)

        self.n_features = n_features
        self.input_size = input_size
        self.horizon = horizon
        self.reservoir_size = reservoir_size
        self.leak_rate = float(leak_rate)
        self.ridge = float(ridge)
        self.washout = washout
        self.include_input = include_input
        self._config: dict[str, Any] = {
            "n_features": n_features,
            "input_size": input_size,
            "horizon": horizon,
            "reservoir_size": reservoir_size,
            "spectral_radius": float(spectral_radius),
            "leak_rate": float(leak_rate),
            "input_scaling": float(input_scaling),
            "sparsity": float(sparsity),
            "ridge": float(ridge),
            "washout": washout,
            "seed": seed,
            "bias_scaling": float(bias_scaling),
            "include_input": include_input,
        }

        gen = torch.Generator().manual_seed(seed)
        n = reservoir_size
        w_in = (
            torch.rand(n_features, n, generator=gen, dtype=torch.float64) * 2 - 1
        ) * input_scaling
        bias = (torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1) * bias_scaling
        keep = torch.rand(n, n, generator=gen, dtype=torch.float64) >= sparsity
        w_res = (torch.rand(n, n, generator=gen, dtype=torch.float64) * 2 - 1) * keep
        # W stays dense (N^2 floats): batched matmul beats sparse kernels at these sizes.
        radius = _spectral_radius(w_res)
        if radius < 1e-12:
            raise ConfigError(
                f"the reservoir matrix has no non-zero eigenvalue (reservoir_size={n}, "
                f"sparsity={sparsity}); use a larger reservoir_size or a lower sparsity"
            )
        w_res = w_res * (spectral_radius / radius)
        dtype = torch.get_default_dtype()
        self.register_buffer("w_in", w_in.to(dtype))  # [C, N]
        self.register_buffer("w_res", w_res.to(dtype))  # [N, N], state as rows: s @ W
        self.register_buffer("bias", bias.to(dtype))  # [N]
        self.register_buffer("readout", torch.zeros(self.n_readout_features, horizon, dtype=dtype))
        self.register_buffer("fitted", torch.tensor(False))
        self._fitted = False
        self.register_load_state_dict_post_hook(_sync_fitted_flag)

    @property
    def n_readout_features(self) -> int:
        """Width of the readout input: ``N`` state units (+ ``C`` inputs) + 1 constant."""
        return self.reservoir_size + (self.n_features if self.include_input else 0) + 1

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments (JSON-serialisable, a fresh copy)."""
        return dict(self._config)

    @classmethod
    def tiny_config(cls, input_size: int, horizon: int, n_features: int) -> dict[str, Any]:
        """Return a very small configuration for contract tests."""
        return {
            "n_features": n_features,
            "input_size": input_size,
            "horizon": horizon,
            "reservoir_size": 32,
            "sparsity": 0.5,
            "washout": min(2, input_size - 1),
        }

    def reservoir_states(
        self,
        x: torch.Tensor,
        initial_state: torch.Tensor | None = None,
        *,
        return_sequence: bool = False,
    ) -> torch.Tensor:
        """Run windows ``x`` ``[B, L, C]`` through the reservoir.

        Returns the final state ``[B, N]``, or with ``return_sequence=True`` the states after the
        washout, ``[B, L - washout, N]``. ``initial_state`` ``[B, N]`` defaults to zeros. Any
        window length is accepted here (the echo-state property is checked on long inputs).
        """
        if x.dim() != 3 or x.shape[2] != self.n_features:
            raise DataError(
                f"expected x as [B, L, C] with n_features={self.n_features}, got {tuple(x.shape)}"
            )
        batch, length, _ = x.shape
        x = x.to(device=self.w_res.device, dtype=self.w_res.dtype)
        drive = x @ self.w_in + self.bias  # [B, L, C] @ [C, N] -> [B, L, N], all steps at once
        if initial_state is None:
            state = x.new_zeros(batch, self.reservoir_size)  # [B, N]
        else:
            if initial_state.shape != (batch, self.reservoir_size):
                raise DataError(
                    f"expected initial_state of shape {(batch, self.reservoir_size)}, "
                    f"got {tuple(initial_state.shape)}"
                )
            state = initial_state.to(device=x.device, dtype=x.dtype)
        sequence = []
        for t in range(length):
            pre = torch.tanh(torch.addmm(drive[:, t], state, self.w_res))  # [B, N]
            state = torch.lerp(state, pre, self.leak_rate)  # (1 - a) s + a pre
            if return_sequence and t >= self.washout:
                sequence.append(state)
        if return_sequence:
            return torch.stack(sequence, dim=1)  # L - washout x [B, N] -> [B, L - washout, N]
        return state

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        state = self.reservoir_states(x)  # [B, L, C] -> [B, N]
        parts = [state]
        if self.include_input:
            parts.append(x[:, -1, :].to(state))  # [B, L, C] -> [B, C]
        parts.append(state.new_ones(state.shape[0], 1))  # [B, 1]
        return torch.cat(parts, dim=1)  # -> [B, n_readout_features]

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 2048) -> EchoStateNetwork:
        """Solve the ridge readout in closed form on windows ``x`` ``[S, L, C]``, targets ``y`` ``[S, H]``.

        ``S^T S`` and ``S^T Y`` are accumulated in float64, ``batch_size`` windows at a time, so
        memory stays at one chunk of states however many windows there are. Returns ``self``.
        """
        self.check_input(x)
        if y.dim() != 2 or y.shape[1] != self.horizon:
            raise DataError(
                f"expected y of shape [S, horizon={self.horizon}], got {tuple(y.shape)}"
            )
        if y.shape[0] != x.shape[0]:
            raise DataError(f"x has {x.shape[0]} windows but y has {y.shape[0]} rows")
        if x.shape[0] == 0:
            raise DataError("cannot fit the readout on zero windows")
        batch_size = check_int("batch_size", batch_size, minimum=1)
        for name, tensor in (("x", x), ("y", y)):
            bad = ~torch.isfinite(tensor)
            if bad.any():
                first = tuple(int(i) for i in bad.nonzero()[0])
                raise DataError(f"{name} has a non-finite value (NaN or inf) at index {first}")

        device = self.w_res.device
        width = self.n_readout_features
        gram = torch.zeros(width, width, dtype=torch.float64, device=device)
        cross = torch.zeros(width, self.horizon, dtype=torch.float64, device=device)
        for start in range(0, x.shape[0], batch_size):
            feats = self._features(x[start : start + batch_size]).double()  # [b, F]
            target = y[start : start + batch_size].to(device=device, dtype=torch.float64)  # [b, H]
            gram += feats.T @ feats  # [F, b] @ [b, F] -> [F, F]
            cross += feats.T @ target  # [F, b] @ [b, H] -> [F, H]
        penalty = torch.full((width,), self.ridge, dtype=torch.float64, device=device)
        penalty[-1] = 0.0  # the constant column (intercept) is not shrunk
        solution = torch.linalg.solve(gram + torch.diag(penalty), cross)  # [F, H]
        self.readout.copy_(solution.to(self.readout.dtype))
        self.fitted.fill_(True)
        self._fitted = True
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map windows ``x`` ``[B, L, C]`` to forecasts ``[B, H]``; requires :meth:`fit` first."""
        if not self._fitted:
            raise CelerisError(
                "the reservoir readout is not fitted: call fit(x, y) (closed-form ridge) "
                "or load a fitted state_dict before forward"
            )
        self.check_input(x)
        return self._features(x) @ self.readout  # [B, F] @ [F, H] -> [B, H]


def _spectral_radius(w: torch.Tensor) -> float:
    """Largest |eigenvalue| of ``w`` (float64, CPU), computed on one thread.

    LAPACK's non-symmetric eigensolver gains little from threads at N <= a few thousand, and on
    a busy machine OpenMP's spinning threads made it 200x slower (6.8 s instead of 0.03 s for
    N = 200 on 2 shared cores), so the thread count is lowered for this one call.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return float(torch.linalg.eigvals(w).abs().max())
    finally:
        torch.set_num_threads(threads)


def _sync_fitted_flag(module: torch.nn.Module, incompatible_keys: Any) -> None:
    # Mirror the loaded buffer in a Python flag so forward needs no device sync to check it.
    if isinstance(module, EchoStateNetwork):
        module._fitted = bool(module.fitted)
