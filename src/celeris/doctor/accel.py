"""The engines: onnxruntime's providers, the torch build, which device ``device="auto"`` picks,
and whether the CUDA build of the backtest kernel compiles and agrees with the CPU build."""

from __future__ import annotations

import importlib.util
import os
import warnings
from typing import Any

from celeris.doctor.base import Context, Finding, fail, ok, skip, warn
from celeris.doctor.gpu import read_nvml

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _gpu_present() -> bool:
    return bool(read_nvml().gpus)


def _probe_model() -> bytes | None:
    """A one-node ONNX graph (``y = x + x`` on ``[1, 4]`` floats), or None without ``onnx``."""
    if importlib.util.find_spec("onnx") is None:
        return None
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime Celeris supports
    return bytes(model.SerializeToString())


def check_onnxruntime(ctx: Context) -> Finding:
    """onnxruntime's execution providers, each one that matters run on a one-node graph."""
    if importlib.util.find_spec("onnxruntime") is None:
        return warn(
            "onnxruntime is not installed: the server runs torch only (no ONNX or int8 backends)",
            "pip install -c constraints.txt 'celeris[serve]'",
        )
    import numpy as np
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    details: dict[str, Any] = {"version": ort.__version__, "providers": providers}
    model = _probe_model()
    working: list[str] = []
    broken: dict[str, str] = {}
    if model is not None:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # a provider that falls back says so in get_providers()
        for provider in [p for p in _GPU_PROVIDERS if p in providers] + ["CPUExecutionProvider"]:
            try:
                session = ort.InferenceSession(model, options, providers=[provider])
                x = np.arange(4, dtype=np.float32).reshape(1, 4)
                (y,) = session.run(None, {"x": x})
                if session.get_providers()[0] != provider or not np.array_equal(y, 2 * x):
                    broken[provider] = f"fell back to {session.get_providers()[0]}"
                else:
                    working.append(provider)
            except Exception as exc:  # missing CUDA/cuDNN libraries surface here
                broken[provider] = str(exc).splitlines()[0][:200]
        details.update(working=working, broken=broken)
    summary = f"onnxruntime {ort.__version__}: {', '.join(working or providers)}"
    if broken:
        first = next(iter(broken))
        return fail(
            summary + f"; {first} does not run: {broken[first]}",
            "install the CUDA and cuDNN libraries this onnxruntime build needs (the CUDA image "
            "has them), or onnxruntime without that provider",
            **details,
        )
    if _gpu_present() and not any(p in providers for p in _GPU_PROVIDERS):
        return warn(
            summary + "; a GPU is present but onnxruntime has no CUDA provider",
            "for ONNX on the GPU install onnxruntime-gpu (same version) instead of onnxruntime; "
            "the torch backend uses the GPU either way",
            **details,
        )
    return ok(summary + ("" if model is not None else " (onnx not installed: providers listed, "
                         "not run)"), **details)  # fmt: skip


def check_torch(ctx: Context) -> Finding:
    """The torch build (CPU or CUDA), whether it sees the GPU, and its threads."""
    if importlib.util.find_spec("torch") is None:
        return skip("torch is not installed (the models extra): forecasting models unavailable")
    import torch

    cuda = torch.version.cuda
    available = bool(torch.cuda.is_available())
    details: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": cuda,
        "cuda_available": available,
        "threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }
    if available:
        details["devices"] = [
            torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
        ]
    build = f"CUDA {cuda} build" if cuda else "CPU build"
    summary = f"torch {torch.__version__} ({build}), {details['threads']} threads"
    if available:
        return ok(summary + f"; sees {', '.join(details['devices'])}", **details)
    if _gpu_present() and cuda is None:
        return warn(
            summary + "; a GPU is present but this torch cannot use it",
            "install the CUDA build of the locked torch (pip install torch==VERSION --index-url "
            "https://download.pytorch.org/whl/cu128) in the GPU image",
            **details,
        )
    if _gpu_present():
        return warn(
            summary + "; a GPU is present but torch.cuda.is_available() is False",
            "the driver is older than torch's CUDA runtime or the container lacks the GPU: "
            "check nvidia-smi inside the container and the driver's CUDA version",
            **details,
        )
    if cuda is not None:
        return warn(
            summary + "; no GPU here, so the CUDA libraries are dead weight",
            "use the CPU build of torch on CPU nodes (smaller image, same results)",
            **details,
        )
    return ok(summary, **details)


def check_device(ctx: Context) -> Finding:
    """Which engine ``device="auto"`` runs the backtest kernels on, and why not CUDA."""
    from celeris.compute.device import cuda_available, resolve_device
    from celeris.errors import DeviceError

    engine = resolve_device("auto")
    details: dict[str, Any] = {"auto": engine, "cuda_usable": cuda_available()}
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        details["simulator"] = True
    if engine == "cuda":
        return ok('device="auto" runs the backtest kernels on the GPU', **details)
    try:
        resolve_device("cuda")
        why = "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1); auto never picks it"
    except DeviceError as exc:
        why = str(exc).removeprefix("device='cuda' cannot run: ")
    details["why_not_cuda"] = why
    if _gpu_present() or ctx.options.expect_gpu:
        judge = fail if ctx.options.expect_gpu else warn
        return judge(
            f'device="auto" runs on the CPU although '
            f"{'a GPU is expected' if ctx.options.expect_gpu else 'NVML sees a GPU'}: {why}",
            "install the gpu extra (pip install -c constraints.txt 'celeris[gpu]': numba-cuda) "
            "and make the CUDA driver visible to this process",
            **details,
        )
    return ok(f'device="auto" runs on the CPU: {why}', **details)


def check_cuda_kernel(ctx: Context) -> Finding:
    """Compile the CUDA build of the backtest kernel and compare a small run with the CPU build
    (on a real GPU, or on numba's simulator under ``NUMBA_ENABLE_CUDASIM=1``)."""
    from celeris.compute.device import cuda_available

    if not cuda_available():
        if ctx.options.expect_gpu:
            return fail(
                "no GPU: the CUDA kernel cannot be compiled here",
                "see the gpu and device checks: the driver, numba-cuda and the GPU must be "
                "visible to this process",
            )
        return skip("no GPU: the CUDA kernel was not compiled")
    import numpy as np
    import pandas as pd

    from celeris.backtest import from_signals

    rng = np.random.default_rng(7)
    n, cols = 64, 4
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC", name="time")
    close = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 0.02, n))), index=index)
    entries = pd.DataFrame(rng.random((n, cols)) < 0.15, index=index)
    exits = pd.DataFrame(rng.random((n, cols)) < 0.15, index=index)
    kwargs: dict[str, Any] = {"fees": 0.001, "sl_stop": 0.03, "execution": "close"}
    cpu = from_signals(close, entries, exits, device="cpu", **kwargs)
    with warnings.catch_warnings(record=True) as seen:
        # numba's simulator runs the device code as Python on numpy scalars, whose inf * 0
        # warns where the GPU silently gives NaN (as the CPU kernel does): recorded, not raised
        warnings.simplefilter("always", RuntimeWarning)
        gpu = from_signals(close, entries, exits, device="cuda", **kwargs)
    same = bool(
        np.array_equal(cpu.metric_values, gpu.metric_values, equal_nan=True)
        and np.array_equal(cpu.equity.to_numpy(), gpu.equity.to_numpy())
    )
    where = "numba's CUDA simulator" if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else "GPU"
    details: dict[str, Any] = {
        "where": where,
        "columns": cols,
        "bars": n,
        "identical": same,
        "simulator_warnings": len(seen),
    }
    if not same:
        return fail(
            f"the CUDA kernel compiled on the {where} but its results differ from the CPU kernel",
            "report it with this output (nvidia-smi, the driver and numba-cuda versions); run "
            'with device="cpu" meanwhile',
            **details,
        )
    return ok(
        f"the CUDA kernel compiles on the {where} and matches the CPU kernel bit for bit",
        **details,
    )
