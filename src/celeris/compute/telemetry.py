"""Hardware telemetry: what this process and machine use now (psutil) and what each NVIDIA GPU
reports (NVML, through ``pynvml`` from the nvidia-ml-py package, the ``gpu`` extra).

Plain readings in plain units (bytes, percent, degrees Celsius, watts), no exposition format:
:mod:`celeris.serving.metrics` turns them into Prometheus gauges at scrape time, and anything
else (a benchmark report, ``celeris doctor``) can read them the same way.

GPUs follow the rule of :func:`celeris.compute.resolve_device`: :meth:`GPUTelemetry.create`
returns ``None`` quietly when there is nothing to read (``pynvml`` not installed, no NVIDIA
driver, no GPU), while :meth:`GPUTelemetry.require` raises :class:`~celeris.DeviceError` saying
which of the three it was. ``pynvml`` and ``psutil`` are imported on use, so this module imports
without either.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celeris.errors import DeviceError

__all__ = ["GPUReading", "GPUTelemetry", "SystemReading", "SystemSampler"]

log = logging.getLogger(__name__)

# NVML_TEMPERATURE_GPU: the die sensor (pynvml names it; the value is fixed by NVML's C API).
_NVML_TEMPERATURE_GPU = 0
# NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: where the GPU starts to throttle its clocks.
_NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
# NVML_MEMORY_ERROR_TYPE_CORRECTED / _UNCORRECTED, and NVML_VOLATILE_ECC: counts since the
# driver was loaded (a counter that restarts with the driver; the aggregate one never does).
_NVML_ECC_CORRECTED, _NVML_ECC_UNCORRECTED, _NVML_VOLATILE_ECC = 0, 1, 0


@dataclass(frozen=True)
class SystemReading:
    """One sample of this process and this machine.

    CPU percentages cover the time since the previous sample of the same
    :class:`SystemSampler` (psutil's ``interval=None``): ``process_cpu_percent`` counts one
    core as 100, ``system_cpu_percent`` all cores as 100.
    """

    process_cpu_percent: float
    process_rss_bytes: int
    process_threads: int
    system_cpu_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    load_average: tuple[float, float, float]
    """Load average over 1, 5 and 15 minutes."""


class SystemSampler:
    """Samples this process and the machine through psutil (no background thread).

    The first :meth:`sample` after construction reads 0 % CPU: psutil measures CPU use between
    two calls, and construction makes the first.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._proc = psutil.Process(os.getpid())
        self._proc.cpu_percent(None)
        psutil.cpu_percent(None)

    def sample(self) -> SystemReading:
        """Return the process's and the machine's use now."""
        ps = self._psutil
        with self._proc.oneshot():
            cpu = self._proc.cpu_percent(None)
            rss = self._proc.memory_info().rss
            threads = self._proc.num_threads()
        vm = ps.virtual_memory()
        one, five, fifteen = os.getloadavg()
        return SystemReading(
            process_cpu_percent=float(cpu),
            process_rss_bytes=int(rss),
            process_threads=int(threads),
            system_cpu_percent=float(ps.cpu_percent(None)),
            memory_used_bytes=int(vm.total - vm.available),
            memory_total_bytes=int(vm.total),
            load_average=(float(one), float(five), float(fifteen)),
        )


@dataclass(frozen=True)
class GPUReading:
    """What one NVIDIA GPU reports. A value the GPU did not give (no power sensor, no ECC
    memory, a read that failed) is ``None``; the other values still stand.

    ``slowdown_celsius`` is the temperature at which the GPU throttles its clocks;
    ``ecc_corrected_errors`` and ``ecc_uncorrected_errors`` count memory errors since the
    driver was loaded (NVML's volatile counters).
    """

    index: int
    utilization_percent: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    temperature_celsius: float | None
    power_watts: float | None
    slowdown_celsius: float | None = None
    ecc_corrected_errors: float | None = None
    ecc_uncorrected_errors: float | None = None


class GPUTelemetry:
    """Readings of every NVIDIA GPU NVML sees (see the module docstring for the absent case).

    Parameters
    ----------
    nvml
        The ``pynvml`` module (initialised).
    handles
        NVML device handles, in NVML's index order.
    """

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = list(handles)

    @classmethod
    def create(cls) -> GPUTelemetry | None:
        """Return telemetry of this machine's GPUs, or ``None`` when there are none to read
        (``pynvml`` missing, no NVIDIA driver, no GPU). Never raises."""
        telemetry, why = cls._open()
        if telemetry is None:
            log.debug("no GPU telemetry: %s", why)
        return telemetry

    @classmethod
    def require(cls) -> GPUTelemetry:
        """Return telemetry of this machine's GPUs.

        Raises
        ------
        DeviceError
            ``pynvml`` is not installed, NVML finds no NVIDIA driver, or it sees no GPU; the
            message says which.
        """
        telemetry, why = cls._open()
        if telemetry is None:
            raise DeviceError(f"no GPU telemetry: {why}")
        return telemetry

    @classmethod
    def _open(cls) -> tuple[GPUTelemetry | None, str]:
        try:
            import pynvml  # type: ignore[import-not-found]
        except ImportError as exc:
            return None, f"pynvml is not importable ({exc}); install celeris[gpu]"
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            return None, f"no NVIDIA driver: NVML did not start ({exc})"
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            return None, f"NVML could not list the GPUs ({exc})"
        if not handles:
            return None, "no NVIDIA GPU: NVML sees 0 devices"
        return cls(pynvml, handles), f"{len(handles)} NVIDIA GPU(s)"

    @property
    def count(self) -> int:
        """The number of GPUs read."""
        return len(self._handles)

    def read(self) -> list[GPUReading]:
        """Return one reading per GPU, in NVML's index order.

        A GPU that stops answering must not break a caller that reads on a schedule (a
        ``/metrics`` scrape): each value that fails is ``None`` and logged at DEBUG.
        """
        nv = self._nvml
        out = []
        for i, handle in enumerate(self._handles):
            rates = _attempt(i, "utilization", nv.nvmlDeviceGetUtilizationRates, handle)
            memory = _attempt(i, "memory", nv.nvmlDeviceGetMemoryInfo, handle)
            temp = _attempt(
                i, "temperature", nv.nvmlDeviceGetTemperature, handle, _NVML_TEMPERATURE_GPU
            )
            milliwatts = _attempt(i, "power", nv.nvmlDeviceGetPowerUsage, handle)
            # Looked up inside the attempt: an NVML binding without these calls loses only them.
            slowdown = _attempt(
                i,
                "slowdown temperature",
                lambda h: nv.nvmlDeviceGetTemperatureThreshold(
                    h, _NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
                ),
                handle,
            )
            ecc = [
                _attempt(
                    i,
                    "ECC errors",
                    lambda h, kind: nv.nvmlDeviceGetTotalEccErrors(h, kind, _NVML_VOLATILE_ECC),
                    handle,
                    kind,
                )
                for kind in (_NVML_ECC_CORRECTED, _NVML_ECC_UNCORRECTED)
            ]
            out.append(
                GPUReading(
                    index=i,
                    utilization_percent=None if rates is None else float(rates.gpu),
                    memory_used_bytes=None if memory is None else float(memory.used),
                    memory_total_bytes=None if memory is None else float(memory.total),
                    temperature_celsius=None if temp is None else float(temp),
                    power_watts=None if milliwatts is None else float(milliwatts) / 1000.0,
                    slowdown_celsius=None if slowdown is None else float(slowdown),
                    ecc_corrected_errors=None if ecc[0] is None else float(ecc[0]),
                    ecc_uncorrected_errors=None if ecc[1] is None else float(ecc[1]),
                )
            )
        return out


def _attempt(gpu: int, what: str, read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except Exception as exc:  # one failed value must not lose the GPU's others
        log.debug("NVML read of GPU %d %s failed: %s", gpu, what, exc)
        return None
