"""Fast prediction from a checkpoint: eager torch, torch.compile, ONNX Runtime or int8 ONNX.

A :class:`Predictor` takes a batch of histories in original units, scales them with the
checkpoint's scaler into a preallocated buffer, runs the model and returns forecasts in original
units. Backends:

* ``"torch"``: the eager model under ``torch.inference_mode`` (optionally ``torch.compile``);
* ``"onnx"``: ``model.onnx`` run by onnxruntime (exported on first use when missing);
* ``"onnx-int8"``: ``model.int8.onnx``, dynamic int8 weights (smaller, a little less exact).

On CUDA, a batch that runs out of GPU memory is halved and retried instead of failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from celeris.errors import ConfigError, DataError, check_choice

BACKENDS = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}


class Predictor:
    """Forecasts from a checkpoint directory; see :meth:`load`."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        *,
        scaler: Any,
        meta: dict[str, Any],
        backend: str,
        max_batch: int = 4096,
    ) -> None:
        self._run = run
        self.scaler = scaler
        self.meta = meta
        self.backend = backend
        self.input_size = int(meta["input_size"])
        self.horizon = int(meta["horizon"])
        self.n_features = int(meta.get("n_features", 1))
        self.max_batch = max_batch
        # Preallocated input buffer: scaling writes here, the model reads a view of it.
        self._buf = np.empty((max_batch, self.input_size, self.n_features), dtype=np.float32)
        self._center: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._window_scaler = None
        if scaler is not None and getattr(scaler, "center", None) is not None:
            self._center = np.asarray(scaler.center, dtype=np.float32)
            self._scale = np.asarray(scaler.scale, dtype=np.float32)
            self._t_center = float(scaler.center[scaler.target])
            self._t_scale = float(scaler.scale[scaler.target])
        elif scaler is not None:
            self._window_scaler = scaler  # per-window normalisation: statistics of each window

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        backend: str = "torch",
        compile: bool = False,
        threads: int | None = None,
        device: str = "cpu",
        max_batch: int = 4096,
    ) -> Predictor:
        """Load the checkpoint in ``directory`` for prediction with ``backend``."""
        check_choice("backend", backend, BACKENDS)
        directory = Path(directory)
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        onnx_file = directory / ONNX_FILES.get(backend, "")
        if backend != "torch" and onnx_file.is_file() and device == "cpu":
            # Serving an exported model needs neither torch nor the weights: importing torch is
            # most of a cold start (1.7 s of ~2.5 s on a 2-core machine).
            from celeris.models.checkpoint_file import read_config
            from celeris.models.data import scaler_from_state

            document = read_config(directory)
            state = document.get("scaler")
            return cls(
                _onnx_runner(directory, int8=backend == "onnx-int8", threads=threads),
                scaler=None if state is None else scaler_from_state(state),
                meta=dict(document["meta"]),
                backend=backend,
                max_batch=max_batch,
            )
        from celeris.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(directory)
        if backend == "torch":
            run = _torch_runner(ckpt.model, compile=compile, threads=threads, device=device)
        else:
            run = _onnx_runner(directory, int8=backend == "onnx-int8", threads=threads)
        return cls(
            run, scaler=ckpt.scaler, meta=dict(ckpt.meta), backend=backend, max_batch=max_batch
        )

    @classmethod
    def from_model(
        cls, model: Any, *, scaler: Any, meta: dict[str, Any], max_batch: int = 4096
    ) -> Predictor:
        """Predict with a model held in memory (eager torch on the CPU), e.g. one just fitted by
        :func:`~celeris.models.pipeline.fit_on_bars`; ``meta`` as a checkpoint would hold it."""
        run = _torch_runner(model, compile=False, threads=None, device="cpu")
        return cls(run, scaler=scaler, meta=dict(meta), backend="torch", max_batch=max_batch)

    def _check(self, x: np.ndarray) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1, 1)
        elif arr.ndim == 2:
            # [L, C] for one multi-feature history, [B, L] for many single-feature ones.
            arr = arr.reshape(1, *arr.shape) if self.n_features > 1 else arr.reshape(*arr.shape, 1)
        if arr.ndim != 3:
            raise DataError(
                f"histories must be [L], [L, C], [B, L] or [B, L, C], got {np.ndim(x)}-D"
            )
        b, length, c = arr.shape
        if c != self.n_features:
            raise DataError(f"expected {self.n_features} feature(s) per bar, got {c}")
        if length < self.input_size:
            raise DataError(
                f"history too short: {length} bars, the model needs the last {self.input_size}"
            )
        arr = arr[:, -self.input_size :, :]
        bad = ~np.isfinite(arr)
        if bad.any():
            i, t, k = np.argwhere(bad)[0]
            raise DataError(
                f"history {i} has a non-finite value at bar {t - self.input_size} (feature {k})"
            )
        if b == 0:
            raise DataError("no histories given")
        return arr

    def predict(self, histories: Any) -> np.ndarray:
        """Forecast ``[B, horizon]`` (original units) from histories ``[B, L, C]`` (or ``[L]``...)."""
        x = self._check(histories)
        out = np.empty((x.shape[0], self.horizon), dtype=np.float32)
        for start in range(0, x.shape[0], self.max_batch):
            chunk = x[start : start + self.max_batch]
            buf = self._buf[: chunk.shape[0]]
            dest = out[start : start + chunk.shape[0]]
            if self._window_scaler is not None:
                np.copyto(buf, chunk)  # a writable copy (histories may be read-only views)
                scaled, loc, scale = self._window_scaler.transform(buf)
                np.copyto(buf, scaled)
                dest[:] = self._window_scaler.inverse_transform(self._run(buf), loc, scale)
            elif self._center is not None and self._scale is not None:
                np.subtract(chunk, self._center, out=buf)
                np.divide(buf, self._scale, out=buf)
                y = self._run(buf)
                np.multiply(y, self._t_scale, out=dest)
                dest += self._t_center
            else:
                np.copyto(buf, chunk)
                dest[:] = self._run(buf)
        return out

    def latency(self, batch: int = 1, repeats: int = 200, warmup: int = 20) -> dict[str, float]:
        """Measure predict() latency percentiles (ms) for ``batch`` random histories."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, self.input_size, self.n_features)).astype(np.float32)
        if self._center is not None and self._scale is not None:
            x = x * self._scale + self._center  # plausible histories in original units
        for _ in range(warmup):
            self.predict(x)
        times = np.empty(repeats)
        for k in range(repeats):
            t0 = time.perf_counter()
            self.predict(x)
            times[k] = time.perf_counter() - t0
        return {
            "p50_ms": float(np.percentile(times, 50) * 1e3),
            "p95_ms": float(np.percentile(times, 95) * 1e3),
        }


def _torch_runner(
    model: Any, *, compile: bool, threads: int | None, device: str
) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model = model.to(dev).eval()
    fn = torch.compile(model) if compile else model

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(_halving(fn, torch.from_numpy(x).to(dev)).cpu().numpy())

    return run


def _halving(fn: Callable[[Any], Any], x: Any) -> Any:
    """Run ``fn(x)``; on CUDA out-of-memory, split the batch in halves and retry each."""
    import torch

    try:
        return fn(x)
    except torch.cuda.OutOfMemoryError:
        if x.shape[0] <= 1:
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = x.shape[0] // 2
        return torch.cat([_halving(fn, x[:half]), _halving(fn, x[half:])])


def _onnx_runner(
    directory: Path, *, int8: bool, threads: int | None
) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    from celeris.models.export import export_checkpoint

    path = directory / ONNX_FILES["onnx-int8" if int8 else "onnx"]
    if not path.exists():
        export_checkpoint(directory, "onnx", int8=int8)
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: x})[0]
        return out

    return run
