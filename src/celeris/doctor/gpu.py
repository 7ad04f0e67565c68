"""NVIDIA GPUs through NVML: driver, devices, memory, temperature, power and ECC health.

Reading (:func:`read_nvml`) and judging (:func:`judge_gpus`) are apart, so the rules are
tested on readings of any GPU while the reading runs wherever a driver exists. NVML comes from
``pynvml`` (the nvidia-ml-py package, the ``gpu`` extra); nothing here needs CUDA libraries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from celeris.doctor.base import Context, Finding, fail, ok, skip, warn

# NVML enum values (fixed by NVML's C API; pynvml names them the same).
_TEMPERATURE_GPU = 0
_THRESHOLD_SLOWDOWN = 1
_UNCORRECTED = 1  # NVML_MEMORY_ERROR_TYPE_UNCORRECTED
_CORRECTED = 0
_VOLATILE = 0  # NVML_VOLATILE_ECC: since the last driver load
_AGGREGATE = 1  # NVML_AGGREGATE_ECC: over the board's life

HOT_MARGIN_C = 5.0
"""Warn when a GPU is this close to its slowdown temperature (clocks are cut there)."""
MEMORY_BUSY_FRACTION = 0.9
"""Warn when other processes already hold this share of a GPU's memory."""


@dataclass(frozen=True)
class GPUInfo:
    """What NVML says about one GPU; a value it does not report is ``None``."""

    index: int
    name: str
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: float | None = None
    slowdown_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    utilization_percent: float | None = None
    ecc_enabled: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    ecc_corrected_volatile: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    retired_pages_pending: bool | None = None


@dataclass(frozen=True)
class NVMLState:
    """The driver and its GPUs, or why NVML could not be read (``gpus`` empty then)."""

    driver: str | None
    cuda_driver: str | None
    gpus: tuple[GPUInfo, ...]
    why_none: str | None = None


def _read(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # NVMLError_NotSupported on boards without the sensor / feature
        return None


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu(nv: Any, index: int) -> GPUInfo:
    h = nv.nvmlDeviceGetHandleByIndex(index)
    memory = _read(nv.nvmlDeviceGetMemoryInfo, h)
    power = _read(nv.nvmlDeviceGetPowerUsage, h)
    limit = _read(nv.nvmlDeviceGetEnforcedPowerLimit, h)
    rates = _read(nv.nvmlDeviceGetUtilizationRates, h)
    ecc_mode = _read(nv.nvmlDeviceGetEccMode, h)
    remap = _read(nv.nvmlDeviceGetRemappedRows, h)  # (corrected, uncorrected, pending, failed)
    retired = _read(nv.nvmlDeviceGetRetiredPagesPendingStatus, h)
    temp = _read(nv.nvmlDeviceGetTemperature, h, _TEMPERATURE_GPU)
    slowdown = _read(nv.nvmlDeviceGetTemperatureThreshold, h, _THRESHOLD_SLOWDOWN)

    def ecc(kind: int, counter: int) -> int | None:
        value = _read(nv.nvmlDeviceGetTotalEccErrors, h, kind, counter)
        return None if value is None else int(value)

    return GPUInfo(
        index=index,
        name=_decode(_read(nv.nvmlDeviceGetName, h) or "unknown"),
        memory_used_bytes=None if memory is None else int(memory.used),
        memory_total_bytes=None if memory is None else int(memory.total),
        temperature_c=None if temp is None else float(temp),
        slowdown_c=None if slowdown is None else float(slowdown),
        power_w=None if power is None else power / 1000.0,
        power_limit_w=None if limit is None else limit / 1000.0,
        utilization_percent=None if rates is None else float(rates.gpu),
        ecc_enabled=None if ecc_mode is None else bool(ecc_mode[0]),
        ecc_uncorrected_volatile=ecc(_UNCORRECTED, _VOLATILE),
        ecc_uncorrected_aggregate=ecc(_UNCORRECTED, _AGGREGATE),
        ecc_corrected_volatile=ecc(_CORRECTED, _VOLATILE),
        remap_pending=None if remap is None else bool(remap[2]),
        remap_failed=None if remap is None else bool(remap[3]),
        retired_pages_pending=None if retired is None else bool(retired),
    )


@functools.cache
def read_nvml() -> NVMLState:
    """Read the driver and every GPU through NVML (once per process)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError as exc:
        return NVMLState(None, None, (), f"pynvml is not importable ({exc}); install celeris[gpu]")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return NVMLState(None, None, (), f"no NVIDIA driver (NVML did not start: {exc})")
    try:
        driver = _decode(_read(pynvml.nvmlSystemGetDriverVersion) or "") or None
        cuda = _read(pynvml.nvmlSystemGetCudaDriverVersion)
        cuda_text = None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}"
        count = int(pynvml.nvmlDeviceGetCount())
        gpus = tuple(_gpu(pynvml, i) for i in range(count))
    except Exception as exc:
        return NVMLState(None, None, (), f"NVML could not list the GPUs ({exc})")
    finally:
        _read(pynvml.nvmlShutdown)
    why = None if gpus else "the NVIDIA driver sees no GPU"
    return NVMLState(driver, cuda_text, gpus, why)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def judge_gpu(gpu: GPUInfo) -> tuple[list[str], list[str], list[str]]:
    """Return ``(failures, warnings, fixes)`` for one GPU's readings."""
    failures: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    tag = f"GPU {gpu.index} ({gpu.name})"
    if gpu.ecc_uncorrected_volatile:
        failures.append(f"{tag}: {gpu.ecc_uncorrected_volatile} uncorrected ECC errors")
        fixes.append(
            f"drain the node and reset GPU {gpu.index} (nvidia-smi -r -i {gpu.index}); replace "
            "it if errors return"
        )
    if gpu.remap_failed:
        failures.append(f"{tag}: a row remapping failed")
        fixes.append(f"GPU {gpu.index} has exhausted its spare memory rows: replace it")
    elif gpu.remap_pending or gpu.retired_pages_pending:
        warnings.append(f"{tag}: memory row remap / page retirement pending")
        fixes.append(f"reset GPU {gpu.index} (or reboot) when it is idle to apply the remap")
    if gpu.ecc_enabled is False and gpu.ecc_uncorrected_aggregate is not None:
        warnings.append(f"{tag}: ECC is off")
        fixes.append(f"enable ECC (nvidia-smi -e 1 -i {gpu.index}, then reset) on a server GPU")
    if (
        gpu.temperature_c is not None
        and gpu.slowdown_c is not None
        and gpu.temperature_c >= gpu.slowdown_c - HOT_MARGIN_C
    ):
        warnings.append(
            f"{tag}: {gpu.temperature_c:.0f} C, slowdown at {gpu.slowdown_c:.0f} C (throttling)"
        )
        fixes.append("check the cooling and airflow of the node")
    used, total = gpu.memory_used_bytes, gpu.memory_total_bytes
    if used is not None and total and used / total >= MEMORY_BUSY_FRACTION:
        warnings.append(f"{tag}: {_gib(used)} of {_gib(total)} memory already in use")
        fixes.append("free the GPU (nvidia-smi shows which processes hold it)")
    return failures, warnings, fixes


def _line(gpu: GPUInfo) -> str:
    parts = [f"{gpu.index}: {gpu.name}"]
    if gpu.memory_total_bytes is not None:
        parts.append(f"{_gib(gpu.memory_used_bytes)}/{_gib(gpu.memory_total_bytes)}")
    if gpu.temperature_c is not None:
        parts.append(f"{gpu.temperature_c:.0f} C")
    if gpu.power_w is not None:
        limit = "" if gpu.power_limit_w is None else f"/{gpu.power_limit_w:.0f}"
        parts.append(f"{gpu.power_w:.0f}{limit} W")
    if gpu.ecc_enabled is not None:
        parts.append(f"ECC {'on' if gpu.ecc_enabled else 'off'}")
    return " ".join(parts)


def judge_gpus(state: NVMLState, *, expect_gpu: bool) -> Finding:
    """Judge NVML's readings: no GPU is a skip (a failure when one is expected); uncorrected
    ECC errors or a failed row remap fail; heat, a pending remap, ECC off or memory held by
    others warn."""
    if not state.gpus:
        why = state.why_none or "no GPU"
        if expect_gpu:
            return fail(
                f"no GPU: {why}",
                "install the NVIDIA driver (and on Kubernetes the NVIDIA device plugin; request "
                "nvidia.com/gpu), or run without --expect-gpu on a CPU node",
                reason=why,
            )
        return skip(f"no GPU: {why}", reason=why)
    details: dict[str, Any] = {
        "driver": state.driver,
        "cuda_driver": state.cuda_driver,
        "gpus": [asdict(g) for g in state.gpus],
    }
    failures: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    for gpu in state.gpus:
        f, w, x = judge_gpu(gpu)
        failures += f
        warnings += w
        fixes += x
    head = f"driver {state.driver}, CUDA {state.cuda_driver}; " + "; ".join(
        _line(g) for g in state.gpus
    )
    if failures:
        return fail(head + " -- " + "; ".join(failures + warnings), "; ".join(fixes), **details)
    if warnings:
        return warn(head + " -- " + "; ".join(warnings), "; ".join(fixes), **details)
    return ok(head, **details)


def check_gpu(ctx: Context) -> Finding:
    """The NVIDIA driver and each GPU's memory, temperature, power and ECC health."""
    return judge_gpus(read_nvml(), expect_gpu=ctx.options.expect_gpu)
