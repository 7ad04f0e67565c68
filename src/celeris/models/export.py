"""Export a checkpoint to ONNX (optionally int8) or TorchScript, with parity checks."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from celeris.errors import ConfigError, DataError
from celeris.models.checkpoint_file import write_exports

#: Largest |difference| to the eager model tolerated, relative to the output's scale
#: (max |eager output| over the check batch). fp32 exports agree to ~1e-6; dynamic int8
#: quantisation of the Linear/LSTM weights typically lands at 0.5-3%.
TOLERANCE = {"onnx": 1e-4, "onnx-int8": 0.1, "torchscript": 1e-5}

#: Error budget for choosing the approximate int8 backend *by default*: max |int8 - eager| over
#: the check windows at most 1% of the output scale. An int8 export within :data:`TOLERANCE` but
#: outside this budget is kept (``backend="onnx-int8"`` still runs it) and not chosen unasked.
#: NHITS measures 0.02-0.1% here, so the budget leaves a wide margin without admitting an int8
#: model whose error would be visible next to the forecast error itself.
INT8_BUDGET = 0.01

#: At most this many held-out windows are used for the check (evenly spaced over the test span).
CHECK_WINDOWS = 512

#: The file each ONNX backend runs, inside the checkpoint directory.
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}


def import_onnxruntime() -> Any:
    """Import onnxruntime with its telemetry off (unless the caller set it).

    onnxruntime 1.32 writes a device id and a SQLite database under ``~/.cache/Microsoft`` when
    it is first imported, unless ``ORT_DISABLE_TELEMETRY`` is set (checked: a fresh ``HOME``
    gets ``.cache/Microsoft/DeveloperTools/.onnxruntime/{deviceid,onnxruntime.db}``).
    """
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime

    return onnxruntime


@dataclass(frozen=True)
class ExportResult:
    """One verified (or declined) export: its file and its error against the eager model."""

    path: Path
    format: str
    max_abs_diff: float
    rel_diff: float
    tolerance: float
    checked_on: str = ""
    sha256: str = ""
    #: max |output in the batch - output alone| over the check windows, relative to the scale
    batch_effect: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rel_diff <= self.tolerance

    def entry(self) -> dict[str, Any]:
        """The ``exports.json`` entry of this result."""
        return {
            "file": self.path.name if self.ok else None,
            "sha256": self.sha256 if self.ok else None,
            "verified": self.ok,
            "max_abs_error": self.max_abs_diff,
            "max_rel_error": self.rel_diff,
            "tolerance": self.tolerance,
            "batch_effect": self.batch_effect,
            "checked_on": self.checked_on,
        }


def _check_batch(
    meta: dict[str, Any], n_features: int, batch: int = 16, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, int(meta["input_size"]), n_features)).astype(np.float32)


def _relative(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = max(float(np.max(np.abs(b))), 1e-12)
    return diff, diff / scale


def export_onnx(model: Any, example: np.ndarray, path: Path) -> Path:
    """Write ``model`` (eval mode) to ONNX with a dynamic batch axis; return the path.

    Uses the ``torch.export``-based exporter (onnxscript). Its deprecation chatter is silenced;
    the exported graph is verified by the caller against the eager model.
    """
    import torch

    x = torch.from_numpy(example)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False
        )
        if program is None:  # pragma: no cover - the dynamo exporter always returns a program
            raise DataError("the ONNX exporter returned no program")
        from celeris.data.atomic import atomic_path  # celeris.data loads pandas: only to write

        with atomic_path(path) as tmp:
            program.save(str(tmp))
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of an ONNX model's weights (activations stay float)."""
    import_onnxruntime()  # telemetry off before onnxruntime is first imported
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's quantiser logs a pre-processing hint at WARNING
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst


def export_checkpoint(
    directory: str | Path,
    fmt: str = "onnx",
    *,
    int8: bool = False,
    histories: np.ndarray | None = None,
    decline_int8: bool = False,
) -> ExportResult:
    """Export the checkpoint in ``directory`` next to its weights and verify it.

    ``fmt`` is ``"onnx"`` (``model.onnx``; with ``int8=True`` also ``model.int8.onnx``) or
    ``"torchscript"`` (``model.torchscript.pt``). The exported model is run on check inputs and
    compared with the eager model; a difference above :data:`TOLERANCE` raises and leaves no
    file behind. The check inputs are ``histories`` (``[B, L, C]`` in original units, e.g. the
    held-out test windows; at most :data:`CHECK_WINDOWS` of them, scaled as the predictor
    scales them) or, without them, a random standard-normal batch in model space.

    ONNX results are recorded in the checkpoint's ``exports.json`` (see
    :func:`celeris.models.checkpoint_file.read_exports`), declined ones included. With
    ``decline_int8=True`` an int8 export outside its tolerance is recorded as declined and
    returned (``result.ok`` is False) instead of raising; the fp32 export still must pass.
    Returns the int8 result when ``int8`` is set, else the fp32 (or TorchScript) one.
    """
    import torch

    from celeris.models.checkpoint import load_checkpoint

    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"unknown export format {fmt!r}; choose 'onnx' or 'torchscript'")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 applies to ONNX exports only")
    directory = Path(directory)
    ckpt = load_checkpoint(directory)
    model = ckpt.model.eval()
    n_features = int(ckpt.meta.get("n_features", 1))
    if histories is None:
        example, checked_on = (
            _check_batch(ckpt.meta, n_features),
            "16 random standard-normal windows",
        )
    else:
        example, checked_on = _model_inputs(ckpt.scaler, histories, ckpt.meta, n_features)
    with torch.inference_mode():
        expected = model(torch.from_numpy(example)).numpy()

    if fmt == "torchscript":
        path = directory / "model.torchscript.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, torch.from_numpy(example))
            traced.save(str(path))
        with torch.inference_mode():
            got = torch.jit.load(str(path))(torch.from_numpy(example)).numpy()
        result = _verdict(path, "torchscript", got, expected, checked_on)
        if not result.ok:
            raise DataError(_failure(result))
        return result

    record = _fresh_record(directory)
    try:
        result = _place(directory, "onnx", expected, example, checked_on, record,
                        lambda tmp: export_onnx(model, example, tmp))  # fmt: skip
        if result.ok and int8:
            fp32 = result.path
            result = _place(directory, "onnx-int8", expected, example, checked_on, record,
                            lambda tmp: quantize_int8(fp32, tmp))  # fmt: skip
    finally:
        write_exports(directory, record)
    if not result.ok and not (decline_int8 and result.format == "onnx-int8"):
        raise DataError(_failure(result))
    return result


def _place(
    directory: Path,
    fmt: str,
    expected: np.ndarray,
    example: np.ndarray,
    checked_on: str,
    record: dict[str, Any],
    write: Callable[[Path], Any],
) -> ExportResult:
    """Write an export under a scratch name, verify it, record the verdict, and move it into
    place only when it passed (a failed export also removes an older file of that name)."""
    from celeris.data.atomic import atomic_path, sweep_temp_files

    final = directory / ONNX_FILES[fmt]
    sweep_temp_files(final)
    try:
        with atomic_path(final) as tmp:
            write(tmp)
            batched, alone = _run_onnx(tmp, example, one_by_one=True)
            result = _verdict(final, fmt, batched, expected, checked_on, tmp, alone)
            record["exports"][fmt] = result.entry()
            if not result.ok:
                raise _Declined  # leaves the scratch file out of place and removes it
    except _Declined:
        final.unlink(missing_ok=True)
    return result


class _Declined(Exception):
    """An export that failed its check, raised inside ``atomic_path`` to discard it."""


def _model_inputs(
    scaler: Any, histories: np.ndarray, meta: dict[str, Any], n_features: int
) -> tuple[np.ndarray, str]:
    """Check inputs in model space from ``histories`` in original units, as the predictor
    scales them; and a description of them for the record."""
    from celeris.models.data import WindowScaler

    x = np.asarray(histories, dtype=np.float32)
    input_size = int(meta["input_size"])
    if x.ndim != 3 or x.shape[1] < input_size or x.shape[2] != n_features or len(x) == 0:
        raise DataError(
            f"check histories must be [B, >= {input_size}, {n_features}], got {x.shape}"
        )
    if len(x) > CHECK_WINDOWS:  # evenly spaced over the span, first and last included
        x = x[np.linspace(0, len(x) - 1, CHECK_WINDOWS).round().astype(int)]
    x = np.ascontiguousarray(x[:, -input_size:, :])
    if isinstance(scaler, WindowScaler):
        x = np.asarray(scaler.transform(x)[0], dtype=np.float32)
    elif scaler is not None:
        x = np.asarray(scaler.transform(x.astype(np.float64)), dtype=np.float32)
    return np.ascontiguousarray(x), f"{len(x)} held-out windows"


def _fresh_record(directory: Path) -> dict[str, Any]:
    """The checkpoint's export record to update: entries for the current weights are kept."""
    from celeris.models.checkpoint_file import EXPORTS_FORMAT, read_config, read_exports

    weights = read_config(directory).get("weights_sha256")
    try:
        old = read_exports(directory)
    except DataError:
        old = None  # a corrupt record is replaced by this export's
    exports = old["exports"] if old is not None and old.get("weights_sha256") == weights else {}
    return {
        "format": EXPORTS_FORMAT,
        "weights_sha256": weights,
        "exports": dict(exports),
        "onnxruntime_version": _ort_version(),
    }


def _ort_version() -> str:
    return str(import_onnxruntime().__version__)


def _run_onnx(path: Path, x: np.ndarray, *, one_by_one: bool = False) -> Any:
    """The ONNX model's output for the batch ``x``; with ``one_by_one``, also for each window
    run alone (dynamic int8 scales its activations per batch, so its answers depend a little
    on the other windows of a batch; the check measures both)."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    out: np.ndarray = session.run(None, {name: x})[0]
    if not one_by_one:
        return out
    alone = np.concatenate([session.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])
    return out, alone


def _verdict(
    path: Path,
    fmt: str,
    got: np.ndarray,
    expected: np.ndarray,
    checked_on: str,
    written: Path | None = None,
    alone: np.ndarray | None = None,
) -> ExportResult:
    """Compare an export's output with the eager model's: the worse of the batched output and
    (when given) each window run ``alone``. ``written`` is the file checked (a scratch name
    until it passes), hashed for the record."""
    from celeris.models.checkpoint_file import sha256_file

    if got.shape != expected.shape:
        raise DataError(f"{fmt} export returns shape {got.shape}, the model {expected.shape}")
    diff, rel = _relative(got, expected)
    batch_effect = 0.0
    if alone is not None:
        diff_alone, rel_alone = _relative(alone, expected)
        diff, rel = max(diff, diff_alone), max(rel, rel_alone)
        batch_effect = _relative(alone, got)[0] / max(float(np.max(np.abs(expected))), 1e-12)
    sha = sha256_file(written) if written is not None else ""
    return ExportResult(path, fmt, diff, rel, TOLERANCE[fmt], checked_on, sha, batch_effect)


def _failure(result: ExportResult) -> str:
    return (
        f"{result.format} export differs from the eager model by {result.rel_diff:.2%} of the "
        f"output scale (tolerance {result.tolerance:.2%}) on {result.checked_on}; "
        f"not using {result.path.name}"
    )
