"""celeris.compute.telemetry: process/machine readings (psutil) and GPU readings (NVML).

No GPU is needed: NVML is a fake ``pynvml`` module put in ``sys.modules``, as a missing package
is a ``None`` entry there.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import pytest

from celeris import DeviceError
from celeris.compute.telemetry import GPUReading, GPUTelemetry, SystemSampler


def _fake_nvml(count: int = 1, *, init_error: Exception | None = None, **overrides: Any) -> Any:
    def init() -> None:
        if init_error is not None:
            raise init_error

    calls: dict[str, Any] = {
        "nvmlInit": init,
        "nvmlDeviceGetCount": lambda: count,
        "nvmlDeviceGetHandleByIndex": lambda i: f"gpu{i}",
        "nvmlDeviceGetUtilizationRates": lambda h: types.SimpleNamespace(gpu=37),
        "nvmlDeviceGetMemoryInfo": lambda h: types.SimpleNamespace(used=2 << 30, total=80 << 30),
        "nvmlDeviceGetTemperature": lambda h, sensor: 61,
        "nvmlDeviceGetPowerUsage": lambda h: 123_500,  # milliwatts
    }
    calls.update(overrides)
    return types.SimpleNamespace(**calls)


def test_system_sampler_reads_this_process_and_machine() -> None:
    now = SystemSampler().sample()
    assert now.process_rss_bytes > 10e6  # a Python process with numpy holds well over 10 MB
    assert now.process_threads >= 1
    assert 0 < now.memory_used_bytes <= now.memory_total_bytes
    assert now.process_cpu_percent >= 0 and now.system_cpu_percent >= 0
    assert now.load_average == pytest.approx(os.getloadavg(), abs=5.0)
    assert len(now.load_average) == 3


def test_gpu_telemetry_reads_every_gpu_in_plain_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(count=2))
    telemetry = GPUTelemetry.require()
    assert telemetry.count == 2
    first, second = telemetry.read()
    assert first == GPUReading(0, 37.0, float(2 << 30), float(80 << 30), 61.0, 123.5)
    assert second.index == 1


@pytest.mark.parametrize(
    ("nvml", "why"),
    [
        (None, "pynvml is not importable"),  # None in sys.modules: the import fails
        (_fake_nvml(init_error=RuntimeError("NVML Shared Library Not Found")), "no NVIDIA driver"),
        (_fake_nvml(count=0), "no NVIDIA GPU: NVML sees 0 devices"),
    ],
)
def test_gpu_telemetry_without_gpu_create_is_none_require_says_why(
    monkeypatch: pytest.MonkeyPatch, nvml: Any, why: str
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert GPUTelemetry.create() is None
    with pytest.raises(DeviceError, match=why):
        GPUTelemetry.require()


def test_gpu_telemetry_this_machine_create_and_require_agree() -> None:
    # Whatever this machine has (a GPU or not): the quiet and the strict entry agree.
    telemetry = GPUTelemetry.create()
    if telemetry is None:
        with pytest.raises(DeviceError, match="no GPU telemetry"):
            GPUTelemetry.require()
    else:
        assert GPUTelemetry.require().count == telemetry.count >= 1


def test_gpu_telemetry_failed_value_is_none_others_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_sensor(handle: Any, sensor: int) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(nvmlDeviceGetTemperature=no_sensor))
    (reading,) = GPUTelemetry.require().read()
    assert reading.temperature_celsius is None
    assert (reading.utilization_percent, reading.power_watts) == (37.0, 123.5)
    assert reading.memory_total_bytes == float(80 << 30)


def test_compute_imports_no_prometheus_and_nothing_above_data() -> None:
    # ARCHITECTURE: celeris.compute may import celeris.data only (and the leaf helpers)
    import subprocess

    code = (
        "import sys, celeris.compute, celeris.compute.telemetry, celeris.compute.profiles; "
        "allowed = ('celeris.compute', 'celeris.data', 'celeris.errors', 'celeris.checks'); "
        "bad = [m for m in sys.modules if m.startswith('prometheus_client') or "
        "(m.startswith('celeris.') and not m.startswith(allowed))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_gpu_telemetry_ecc_and_slowdown_read_with_nvml_constants(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[Any, ...]] = []

    def ecc(handle: str, kind: int, counter: int) -> int:
        seen.append(("ecc", kind, counter))
        return {0: 12, 1: 3}[kind]  # NVML_MEMORY_ERROR_TYPE_CORRECTED / _UNCORRECTED

    def threshold(handle: str, which: int) -> int:
        seen.append(("threshold", which))
        return 87

    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        _fake_nvml(nvmlDeviceGetTotalEccErrors=ecc, nvmlDeviceGetTemperatureThreshold=threshold),
    )
    (reading,) = GPUTelemetry.require().read()
    assert (reading.ecc_corrected_errors, reading.ecc_uncorrected_errors) == (12.0, 3.0)
    assert reading.slowdown_celsius == 87.0
    # NVML_VOLATILE_ECC (0): since the driver loaded; NVML_TEMPERATURE_THRESHOLD_SLOWDOWN (1)
    assert sorted(seen) == [("ecc", 0, 0), ("ecc", 1, 0), ("threshold", 1)]


def test_gpu_telemetry_without_ecc_memory_keeps_the_other_readings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_supported(*args: Any) -> int:
        raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    monkeypatch.setitem(
        sys.modules, "pynvml", _fake_nvml(nvmlDeviceGetTotalEccErrors=not_supported)
    )
    (reading,) = GPUTelemetry.require().read()
    assert reading.ecc_corrected_errors is None and reading.ecc_uncorrected_errors is None
    assert reading.temperature_celsius == 61.0 and reading.power_watts == 123.5


def test_gpu_telemetry_nvml_constants_are_pynvmls() -> None:
    import pynvml  # the gpu extra, part of dev: a real import, not the fakes above

    from celeris.compute import telemetry

    assert telemetry._NVML_TEMPERATURE_GPU == pynvml.NVML_TEMPERATURE_GPU
    assert telemetry._NVML_TEMPERATURE_THRESHOLD_SLOWDOWN == (
        pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    )
    assert telemetry._NVML_ECC_CORRECTED == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
    assert telemetry._NVML_ECC_UNCORRECTED == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    assert telemetry._NVML_VOLATILE_ECC == pynvml.NVML_VOLATILE_ECC
