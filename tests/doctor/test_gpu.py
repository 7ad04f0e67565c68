"""The GPU rules on readings of any GPU, and NVML read for real on this machine."""

from __future__ import annotations

import dataclasses

import pytest

from celeris.doctor import Status
from celeris.doctor.gpu import GPUInfo, NVMLState, judge_gpus, read_nvml

HEALTHY = GPUInfo(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    memory_used_bytes=1 << 30,
    memory_total_bytes=80 << 30,
    temperature_c=41.0,
    slowdown_c=87.0,
    power_w=71.5,
    power_limit_w=700.0,
    utilization_percent=0.0,
    ecc_enabled=True,
    ecc_uncorrected_volatile=0,
    ecc_uncorrected_aggregate=0,
    ecc_corrected_volatile=0,
    remap_pending=False,
    remap_failed=False,
)


def _state(*gpus: GPUInfo) -> NVMLState:
    return NVMLState("570.86", "12.8", gpus)


def test_judge_gpus_healthy_reports_memory_temperature_power_ecc() -> None:
    finding = judge_gpus(_state(HEALTHY), expect_gpu=True)
    assert finding.status is Status.OK and finding.fix is None
    assert "H100" in finding.summary and "41 C" in finding.summary
    assert "72/700 W" in finding.summary and "ECC on" in finding.summary
    assert "1.0 GiB/80.0 GiB" in finding.summary
    assert finding.details["gpus"][0]["ecc_uncorrected_volatile"] == 0


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"ecc_uncorrected_volatile": 3}, Status.FAIL, "nvidia-smi -r -i 1"),
        ({"remap_failed": True}, Status.FAIL, "replace it"),
        ({"remap_pending": True}, Status.WARN, "apply the remap"),
        ({"temperature_c": 84.0}, Status.WARN, "cooling"),
        ({"memory_used_bytes": 75 << 30}, Status.WARN, "free the GPU"),
        ({"ecc_enabled": False}, Status.WARN, "nvidia-smi -e 1"),
    ],
)
def test_judge_gpus_unhealthy_second_gpu_gives_status_and_fix(
    change: dict[str, object], status: Status, words: str
) -> None:
    bad = dataclasses.replace(HEALTHY, index=1, **change)  # type: ignore[arg-type]
    finding = judge_gpus(_state(HEALTHY, bad), expect_gpu=False)
    assert finding.status is status
    assert finding.fix is not None and words in finding.fix
    assert "GPU 1" in finding.summary


def test_judge_gpus_missing_readings_are_not_problems() -> None:
    bare = GPUInfo(index=0, name="GeForce RTX 4090")
    finding = judge_gpus(_state(bare), expect_gpu=False)
    assert finding.status is Status.OK
    assert finding.summary == "driver 570.86, CUDA 12.8; 0: GeForce RTX 4090"


@pytest.mark.parametrize(("expect_gpu", "status"), [(False, Status.SKIP), (True, Status.FAIL)])
def test_judge_gpus_no_gpu_skips_unless_expected(expect_gpu: bool, status: Status) -> None:
    state = NVMLState(None, None, (), "no NVIDIA driver (NVML did not start: not found)")
    finding = judge_gpus(state, expect_gpu=expect_gpu)
    assert finding.status is status and "no NVIDIA driver" in finding.summary
    assert (finding.fix is not None) == expect_gpu


def test_read_nvml_this_machine_reads_gpus_or_says_why_not() -> None:
    state = read_nvml()
    if state.gpus:  # a GPU machine: every GPU named and its memory read
        assert all(g.name and g.memory_total_bytes for g in state.gpus) and state.driver
    else:
        assert state.why_none and ("NVIDIA driver" in state.why_none or "GPU" in state.why_none)


class _NVMLError(Exception):
    """What pynvml raises for a reading the board does not support."""


class _OneH100:
    """The NVML calls ``_gpu`` makes, answering as an H100 would (NVML's units: bytes,
    milliwatts, degrees), with no row-remapper support (raises, as older boards do)."""

    class _Memory:
        used, total = 3 << 30, 80 << 30

    class _Rates:
        gpu = 37

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"handle-{index}"

    def nvmlDeviceGetName(self, h: str) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: str) -> object:
        return self._Memory()

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:
        return 123_456

    def nvmlDeviceGetEnforcedPowerLimit(self, h: str) -> int:
        return 700_000

    def nvmlDeviceGetUtilizationRates(self, h: str) -> object:
        return self._Rates()

    def nvmlDeviceGetEccMode(self, h: str) -> tuple[int, int]:
        return (1, 1)

    def nvmlDeviceGetRemappedRows(self, h: str) -> tuple[int, int, int, int]:
        raise _NVMLError("Not Supported")

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: str) -> int:
        return 0

    def nvmlDeviceGetTemperature(self, h: str, sensor: int) -> int:
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return 52

    def nvmlDeviceGetTemperatureThreshold(self, h: str, kind: int) -> int:
        assert kind == 1  # NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        return 87

    def nvmlDeviceGetTotalEccErrors(self, h: str, kind: int, counter: int) -> int:
        # (uncorrected, volatile) = 0; (uncorrected, aggregate) = 2; corrected volatile = 5
        return {(1, 0): 0, (1, 1): 2, (0, 0): 5}[(kind, counter)]


def test_gpu_reading_units_and_unsupported_values() -> None:
    from celeris.doctor.gpu import _gpu

    gpu = _gpu(_OneH100(), 0)
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.index == 0
    assert (gpu.memory_used_bytes, gpu.memory_total_bytes) == (3 << 30, 80 << 30)
    assert gpu.power_w == pytest.approx(123.456) and gpu.power_limit_w == 700.0
    assert (gpu.temperature_c, gpu.slowdown_c, gpu.utilization_percent) == (52.0, 87.0, 37.0)
    assert gpu.ecc_enabled is True and gpu.ecc_uncorrected_volatile == 0
    assert gpu.ecc_uncorrected_aggregate == 2 and gpu.ecc_corrected_volatile == 5
    assert gpu.remap_pending is None and gpu.remap_failed is None  # not supported: unknown
    assert gpu.retired_pages_pending is False
    assert judge_gpus(_state(gpu), expect_gpu=True).status is Status.OK
