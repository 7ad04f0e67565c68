"""Export a checkpoint to ONNX (optionally int8) or TorchScript, with parity checks."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from celeris.errors import ConfigError, DataError

#: Largest |difference| to the eager model tolerated, relative to the output's scale
#: (max |eager output| over the check batch). fp32 exports agree to ~1e-6; dynamic int8
#: quantisation of the Linear/LSTM weights typically lands at 0.5-3%.
TOLERANCE = {"onnx": 1e-4, "onnx-int8": 0.1, "torchscript": 1e-5}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    rel_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.rel_diff <= self.tolerance


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
        fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
        os.close(fd)
        try:
            program.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def quantize_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantisation of an ONNX model's weights (activations stay float)."""
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
    directory: str | Path, fmt: str = "onnx", *, int8: bool = False
) -> ExportResult:
    """Export the checkpoint in ``directory`` next to its weights and verify it.

    ``fmt`` is ``"onnx"`` (``model.onnx``; with ``int8=True`` also ``model.int8.onnx``) or
    ``"torchscript"`` (``model.torchscript.pt``). The exported model is run on a random check
    batch and compared with the eager model; a difference above :data:`TOLERANCE` raises.
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
    example = _check_batch(ckpt.meta, n_features)
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
        return _verdict(path, "torchscript", got, expected)

    path = export_onnx(model, example, directory / "model.onnx")
    result = _verdict(path, "onnx", _run_onnx(path, example), expected)
    if int8:
        qpath = quantize_int8(path, directory / "model.int8.onnx")
        result = _verdict(qpath, "onnx-int8", _run_onnx(qpath, example), expected)
    return result


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: np.ndarray = session.run(None, {session.get_inputs()[0].name: x})[0]
    return out


def _verdict(path: Path, fmt: str, got: np.ndarray, expected: np.ndarray) -> ExportResult:
    if got.shape != expected.shape:
        raise DataError(f"{fmt} export returns shape {got.shape}, the model {expected.shape}")
    diff, rel = _relative(got, expected)
    result = ExportResult(path, fmt, diff, rel, TOLERANCE[fmt])
    if not result.ok:
        raise DataError(
            f"{fmt} export differs from the eager model by {rel:.2%} of the output scale "
            f"(tolerance {TOLERANCE[fmt]:.2%}); not using {path.name}"
        )
    return result
