"""The CUDA path: CPU/CUDA parity under numba's CUDA simulator, and device selection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from celeris import DeviceError
from celeris.compute import cuda_available, resolve_device

ROOT = Path(__file__).resolve().parents[2]


def test_cuda_kernels_under_simulator_match_cpu_exactly():
    """The single-column and the grouped kernel, CUDA build vs CPU build, bit for bit."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "backtest" / "cuda_sim_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("ok ") for line in lines) == 12, proc.stdout


@pytest.mark.skipif(cuda_available(), reason="a GPU is present")
def test_resolve_device_explicit_cuda_without_gpu_raises():
    with pytest.raises(DeviceError, match="cannot run"):
        resolve_device("cuda")


@pytest.mark.skipif(cuda_available(), reason="a GPU is present")
def test_resolve_device_auto_without_gpu_falls_back_to_cpu():
    assert resolve_device("auto") == "cpu"
