"""Fast prediction from a checkpoint: eager torch, torch.compile, ONNX Runtime or int8 ONNX.

A :class:`Predictor` takes a batch of histories in original units, scales them with the
checkpoint's scaler into a preallocated buffer, runs the model and returns forecasts in original
units. Backends:

* ``"torch"``: the eager model under ``torch.inference_mode`` (optionally ``torch.compile``);
* ``"onnx"``: ``model.onnx`` run by onnxruntime (exported on first use when missing);
* ``"onnx-int8"``: ``model.int8.onnx``, dynamic int8 weights (smaller, a little less exact);
* ``"auto"`` (the default): the fastest backend the checkpoint has *verified* in its
  ``exports.json`` (:func:`choose_backend`): int8 ONNX when its recorded error is within
  :data:`~celeris.models.export.INT8_BUDGET`, else fp32 ONNX within its tolerance, else torch.
  A checkpoint without a record (trained with ``--no-export``, or before exports were
  recorded) loads as torch, as it always did.

**Exact answers.** Dynamic int8 sets its activation scale per batch, so an int8 forecast of one
history moves slightly (within the recorded ``batch_effect``) with the other histories of its
batch. Where that matters, ``Predictor.load(dir, exact=True)`` keeps ``"auto"`` to the exact
backends (fp32 ONNX, else torch): research and backtests do, since a rolling forecast predicts
every window in one batch and an early window's forecast would otherwise be nudged by later
bars (:func:`choose_backend` is the one rule for both).

An export whose file no longer matches the hash in the record is refused (:class:`DataError`),
never used, and never silently swapped for another backend: the same rule as the weights'
checksum in :func:`~celeris.models.checkpoint.load_checkpoint`.

On CUDA, a batch that runs out of GPU memory is halved and retried instead of failing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from celeris.checks import check_int
from celeris.errors import ConfigError, DataError, check_choice
from celeris.models.export import INT8_BUDGET, ONNX_FILES, TOLERANCE, import_onnxruntime

BACKENDS = ("torch", "onnx", "onnx-int8")
#: ``backend=AUTO`` picks the fastest verified backend (:func:`choose_backend`).
AUTO = "auto"
CHOICES = (AUTO, *BACKENDS)
#: Backends whose answer for one history does not depend on the other histories of its batch.
EXACT_BACKENDS = ("torch", "onnx")


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """What :func:`choose_backend` picked, and why (one line for people)."""

    backend: str
    reason: str


def choose_backend(
    record: dict[str, Any] | None,
    *,
    device: str = "cpu",
    compile: bool = False,
    exact: bool = False,
) -> BackendChoice:
    """Pick the default backend from a checkpoint's export record (``exports.json``).

    Fastest first, each only when verified: int8 ONNX when its recorded max error is within
    :data:`~celeris.models.export.INT8_BUDGET` of the output scale (it is an approximation);
    fp32 ONNX when within :data:`~celeris.models.export.TOLERANCE` ``["onnx"]``; torch
    otherwise, and always for ``device="cuda"`` or ``compile=True`` (ONNX runs on the CPU here).
    With ``exact=True`` int8 is never chosen (:data:`EXACT_BACKENDS` only): its activation
    scale is set per batch, so a history's answer depends on its batch-mates, which research
    and backtests must not allow (a rolling forecast batches later windows with earlier ones).
    The recorded numbers are judged against today's constants, not the record's own verdict.
    The files' hashes are checked by :meth:`Predictor.load`, not here.
    """
    if device != "cpu":
        return BackendChoice("torch", f"device={device!r}: the ONNX backends run on the CPU")
    if compile:
        return BackendChoice("torch", "compile=True applies to the torch backend")
    if record is None:
        return BackendChoice(
            "torch", "the checkpoint has no verified ONNX export (`celeris export DIR --int8`)"
        )
    exports = record.get("exports", {})
    declined: list[str] = []
    for backend, label, limit, what in (
        ("onnx-int8", "int8 ONNX", INT8_BUDGET, "budget"),
        ("onnx", "fp32 ONNX", TOLERANCE["onnx"], "tolerance"),
    ):
        entry = exports.get(backend)
        if entry is None:
            continue
        if exact and backend not in EXACT_BACKENDS:
            declined.append(
                f"{label} not used: exact answers asked (its activation scale depends on the batch)"
            )
            continue
        error = _recorded_error(entry)
        if error is None:
            declined.append(f"{label} not verified")
        elif not entry.get("verified") or not entry.get("file"):
            declined.append(f"{label} failed its export check (max rel. error {_pct(error)})")
        elif error > limit:
            declined.append(
                f"{label} max rel. error {_pct(error)} exceeds the {_pct(limit)} {what}"
            )
        else:
            reason = (
                f"{label} verified on {entry.get('checked_on') or 'its check windows'}: "
                f"max rel. error {_pct(error)} of the output scale, within the {_pct(limit)} {what}"
            )
            return BackendChoice(backend, "; ".join([reason, *declined]))
    return BackendChoice("torch", "; ".join(declined or ["no ONNX export recorded"]))


def export_summary(record: dict[str, Any] | None) -> list[str]:
    """One line per recorded export for people (``celeris export`` and ``celeris train`` print
    them): its max error, whether it is within its tolerance/budget, and which is the default.
    """
    if record is None:
        return ["no verified ONNX export: Predictor.load uses torch"]
    default = choose_backend(record).backend
    lines = []
    for backend, label, limit, what in (
        ("onnx", "fp32", TOLERANCE["onnx"], "tolerance"),
        ("onnx-int8", "int8", INT8_BUDGET, "budget"),
    ):
        entry = record.get("exports", {}).get(backend)
        if entry is None:
            continue
        error = _recorded_error(entry)
        if error is None:
            lines.append(f"{label}: no error recorded, not used by default")
            continue
        within = "within" if error <= limit and entry.get("verified") else "outside"
        kept = (
            ""
            if entry.get("file")
            else f", not kept (export tolerance {_pct(entry.get('tolerance', 0))})"
        )
        lines.append(
            f"{label}: max rel. error {_pct(error)} of scale, {within} the {_pct(limit)} {what}"
            f"{kept}{' -> default backend' if backend == default else ''}"
        )
    if default == "torch":
        lines.append("default backend: torch")
    return lines


def _pct(fraction: float) -> str:
    return f"{100 * float(fraction):.2g}%"


def _recorded_error(entry: dict[str, Any]) -> float | None:
    try:
        error = float(entry["max_rel_error"])
    except (KeyError, TypeError, ValueError):
        return None
    return error if error == error and error >= 0 else None  # NaN or negative: not a record


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
        reason: str = "asked for",
    ) -> None:
        self._run = run
        self.scaler = scaler
        self.meta = meta
        #: The backend running the model (never ``"auto"``) and why it was chosen.
        self.backend = backend
        self.backend_reason = reason
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
        backend: str = AUTO,
        compile: bool = False,
        threads: int | None = None,
        device: str = "cpu",
        max_batch: int = 4096,
        exact: bool = False,
    ) -> Predictor:
        """Load the checkpoint in ``directory`` for prediction with ``backend``.

        ``backend="auto"`` (the default) runs the fastest backend the checkpoint has verified
        (:func:`choose_backend`); ``"torch"``, ``"onnx"`` or ``"onnx-int8"`` force one.
        ``exact=True`` asks for answers that do not depend on the batch: ``"auto"`` then picks
        among :data:`EXACT_BACKENDS` only (what research and backtests load).
        :attr:`backend` and :meth:`describe` say what runs and why.

        Raises
        ------
        DataError
            An ONNX file the checkpoint's ``exports.json`` records that is missing or does not
            match its recorded sha256, or a record made for other weights: the checkpoint was
            changed after its exports were verified. Re-export (``celeris export DIR --int8``)
            or load with ``backend="torch"``.
        ConfigError
            ``exact=True`` with ``backend="onnx-int8"``, an approximate backend.
        """
        check_choice("backend", backend, CHOICES)
        directory = Path(directory)
        if threads is not None:
            threads = check_int("threads", threads, minimum=1)
        if exact and backend not in (AUTO, *EXACT_BACKENDS):
            raise ConfigError(
                f"backend={backend!r} is approximate (its answers depend on the batch) and "
                f"exact=True was asked; use backend='auto', {' or '.join(map(repr, EXACT_BACKENDS))}"
            )
        reason = f"asked for (backend={backend!r})"
        if backend != "torch":
            from celeris.models.checkpoint_file import read_config

            record = _current_record(directory, read_config(directory))
            if backend == AUTO:
                choice = choose_backend(record, device=device, compile=compile, exact=exact)
                backend, reason = choice.backend, choice.reason
            if backend in ONNX_FILES and record is not None:
                _check_recorded_file(directory, record, backend)
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
                reason=reason,
            )
        from celeris.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(directory)
        if backend == "torch":
            run = _torch_runner(ckpt.model, compile=compile, threads=threads, device=device)
        else:
            run = _onnx_runner(directory, int8=backend == "onnx-int8", threads=threads)
        return cls(
            run,
            scaler=ckpt.scaler,
            meta=dict(ckpt.meta),
            backend=backend,
            max_batch=max_batch,
            reason=reason,
        )

    @property
    def feature_spec(self) -> Any:
        """The :class:`~celeris.models.features.FeatureSpec` that turns bars into this model's
        inputs (:func:`~celeris.models.features.spec_of` of the checkpoint's meta). With the
        scaler this predictor applies, it is all a consumer of the model needs:
        ``predictor.predict(predictor.feature_spec.last_windows(bars, predictor.input_size))``.

        Raises
        ------
        DataError
            The checkpoint records no features.
        ConfigError
            Features this Celeris cannot compute.
        """
        spec = self.__dict__.get("_feature_spec")
        if spec is None:
            from celeris.models.features import spec_of

            spec = self.__dict__["_feature_spec"] = spec_of(self.meta)
        return spec

    def describe(self) -> str:
        """One line: the backend that runs and why it was chosen."""
        return f"{self.backend}: {self.backend_reason}"

    @classmethod
    def from_model(
        cls, model: Any, *, scaler: Any, meta: dict[str, Any], max_batch: int = 4096
    ) -> Predictor:
        """Predict with a model held in memory (eager torch on the CPU), e.g. one just fitted by
        :func:`~celeris.models.pipeline.fit_on_bars`; ``meta`` as a checkpoint would hold it."""
        run = _torch_runner(model, compile=False, threads=None, device="cpu")
        return cls(
            run,
            scaler=scaler,
            meta=dict(meta),
            backend="torch",
            max_batch=max_batch,
            reason="a model held in memory",
        )

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


def _current_record(directory: Path, document: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint's export record, refused when it was made for other weights."""
    from celeris.models.checkpoint_file import EXPORTS_FILE, read_exports

    record = read_exports(directory)
    if record is None:
        return None
    weights = document.get("weights_sha256")
    if record.get("weights_sha256") != weights:
        raise DataError(
            f"{directory / EXPORTS_FILE} was verified against other weights (sha256 "
            f"{record.get('weights_sha256')}, config.json has {weights}); its exports are not "
            f"this model's. Re-export (`celeris export {directory} --int8`) or load with "
            "backend='torch'"
        )
    return record


def _check_recorded_file(directory: Path, record: dict[str, Any], backend: str) -> None:
    """Refuse an ONNX file that the record lists as verified but that is missing or changed."""
    from celeris.models.checkpoint_file import EXPORTS_FILE, sha256_file

    entry = record["exports"].get(backend)
    if entry is None or not entry.get("verified") or not entry.get("file"):
        return  # nothing verified to hold the file to (an explicit backend exports on use)
    path = directory / str(entry["file"])
    fix = (
        f"re-export (`celeris export {directory} --int8`) or load with another backend "
        "(backend='torch')"
    )
    if not path.is_file():
        raise DataError(f"{path} is missing but {EXPORTS_FILE} records it as verified; {fix}")
    actual = sha256_file(path)
    if actual != entry.get("sha256"):
        raise DataError(
            f"{path} does not match the sha256 recorded in {EXPORTS_FILE} when it was verified "
            f"({actual[:12]}... vs {str(entry.get('sha256'))[:12]}...): changed or corrupt, "
            f"so it is not used; {fix}"
        )


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


def session_options(ort: Any, threads: int | None) -> Any:
    """onnxruntime session options for the predictor (``ort`` is the imported module).

    ``threads`` intra-op threads (onnxruntime's default, one per physical core, when None), one
    inter-op thread, sequential execution, all graph optimisations, and **no spinning**: by
    default onnxruntime's pool threads busy-wait between kernels, and on a 2-core machine that
    is shared (other processes, the server's event loop) a spinning worker takes the core the
    other shard of a parallel GEMM needs. The GEMMs are 96% of an NHITS forward pass (~5 GFLOP
    per 1,000 series), so each waits for its slowest shard: fp32 at 1,000 series measured
    216 ms with spinning vs 103 ms without on a loaded machine (load average 5), and 19-20 ms
    either way on a quiet one; batch 1 is unchanged (0.85-0.92 ms). benchmarks/RESULTS.md has
    the study. The pool threads also count float32 denormals as zero (the calling thread does
    inside :func:`flush_denormals`, which says why).
    """
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


def _onnx_runner(
    directory: Path, *, int8: bool, threads: int | None
) -> Callable[[np.ndarray], np.ndarray]:
    from celeris.models.export import export_checkpoint

    ort = import_onnxruntime()

    path = directory / ONNX_FILES["onnx-int8" if int8 else "onnx"]
    if not path.exists():
        export_checkpoint(directory, "onnx", int8=int8)
    session = ort.InferenceSession(
        str(path), session_options(ort, threads), providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name
    flush = flush_denormals()

    def run(x: np.ndarray) -> np.ndarray:
        if flush is None:
            out: np.ndarray = session.run(None, {name: x})[0]
            return out
        return flush(lambda: session.run(None, {name: x})[0])

    return run


class _FlushDenormals:
    """Calls a function with flush-to-zero and denormals-are-zero set in the calling thread's
    SSE control register (MXCSR), restored afterwards; through the C library's ``fegetenv``/
    ``fesetenv`` (x86-64 ``fenv_t``: 32 bytes, MXCSR at byte 28). Thread-safe: each call keeps
    its thread's register in buffers of its own."""

    _FTZ_DAZ = 0x8040  # MXCSR bits 15 (flush to zero) and 6 (denormals are zero)
    _ENV_BYTES = 32
    _MXCSR_AT = 28

    def __init__(self) -> None:
        import ctypes

        libc = ctypes.CDLL(None)
        self._get = libc.fegetenv
        self._set = libc.fesetenv
        self._buffer = ctypes.create_string_buffer

    def __call__(self, fn: Callable[[], Any]) -> Any:
        saved = self._buffer(self._ENV_BYTES)
        if self._get(saved) != 0:
            return fn()
        raw = bytearray(saved.raw)
        at = self._MXCSR_AT
        mxcsr = int.from_bytes(raw[at : at + 4], "little") | self._FTZ_DAZ
        raw[at : at + 4] = mxcsr.to_bytes(4, "little")
        self._set(self._buffer(bytes(raw), self._ENV_BYTES))
        try:
            return fn()
        finally:
            self._set(saved)


def flush_denormals() -> _FlushDenormals | None:
    """Return a caller ``flush(fn)`` that runs ``fn()`` with float32 denormals counted as zero
    (None where unavailable).

    The ONNX backends run the model through it: an attention layer's causal mask drives its
    softmax's ``exp`` into the denormal range, which x86 CPUs compute in microcode: the tiny
    cnn_lstm's softmax took 1.1 of 2.7 ms for 100 histories; its predict() 2.95 -> 2.05 ms
    on one thread, 2.40 -> 1.94 ms on two, outputs unchanged bit for bit (benchmarks/RESULTS.md).
    onnxruntime's own option (``session.set_denormal_as_zero``, set by
    :func:`session_options`) covers its pool threads only, not the calling thread, which runs
    a one-thread session and a share of every parallel kernel. Only on x86-64 Linux, and only where the flag is seen to
    work (a denormal times one gives zero inside, and not after); the register is restored
    after each run, so numpy and numba around it keep IEEE denormals.
    """
    import platform
    import sys

    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        flush = _FlushDenormals()
    except (OSError, AttributeError):
        return None
    tiny = np.float32(1e-40)  # a float32 denormal
    flushed = bool(flush(lambda: tiny * np.float32(1.0)) == 0.0)
    kept = bool(tiny * np.float32(1.0) != 0.0)
    return flush if flushed and kept else None
