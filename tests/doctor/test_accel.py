"""The engine checks: onnxruntime's providers run, the torch build, device="auto", and the CUDA
kernel compiled and compared with the CPU kernel (on numba's CUDA simulator here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from celeris.compute.device import cuda_available
from celeris.doctor import DoctorOptions, Status
from celeris.doctor.accel import check_cuda_kernel, check_device, check_onnxruntime, check_torch
from celeris.doctor.runner import build_context
from tests.doctor.conftest import ROOT

_UNDER_SIMULATOR = """
import json
from celeris.doctor import DoctorOptions
from celeris.doctor.accel import check_cuda_kernel, check_device
from celeris.doctor.runner import build_context
ctx = build_context(DoctorOptions())
out = {}
for name, check in (("device", check_device), ("cuda_kernel", check_cuda_kernel)):
    f = check(ctx)
    out[name] = {"status": f.status.value, "summary": f.summary, "details": dict(f.details)}
print(json.dumps(out))
"""


def test_cuda_kernel_on_simulator_compiles_and_matches_cpu_auto_stays_cpu() -> None:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_SIMULATOR], env=env, capture_output=True, text=True,
        timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    kernel, device = out["cuda_kernel"], out["device"]
    assert kernel["status"] == "ok" and kernel["details"]["identical"] is True, kernel
    assert kernel["details"]["where"] == "numba's CUDA simulator"
    assert device["status"] == "ok" and device["details"]["auto"] == "cpu"
    assert "simulator" in device["summary"]


def test_expect_gpu_without_usable_gpu_fails_with_fix(doctor_env: pytest.MonkeyPatch) -> None:
    ctx = build_context(DoctorOptions(expect_gpu=True))
    kernel, device = check_cuda_kernel(ctx), check_device(ctx)
    if cuda_available():  # a GPU machine: both pass
        assert kernel.status is Status.OK and device.status is Status.OK
        return
    assert kernel.status is Status.FAIL and kernel.fix
    assert device.status is Status.FAIL and device.fix and "celeris[gpu]" in device.fix
    assert check_cuda_kernel(build_context(DoctorOptions())).status is Status.SKIP


def test_onnxruntime_cpu_provider_runs_a_graph(doctor_env: pytest.MonkeyPatch) -> None:
    finding = check_onnxruntime(build_context(DoctorOptions()))
    assert finding.status is Status.OK, finding.summary
    assert "CPUExecutionProvider" in finding.details["working"]
    assert finding.details["broken"] == {}


def test_torch_build_reported(doctor_env: pytest.MonkeyPatch) -> None:
    import torch

    finding = check_torch(build_context(DoctorOptions()))
    assert finding.status is Status.OK
    assert finding.details["version"] == torch.__version__
    assert finding.details["cuda_build"] == torch.version.cuda
    assert ("CPU build" if torch.version.cuda is None else "CUDA") in finding.summary
