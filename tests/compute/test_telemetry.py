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
