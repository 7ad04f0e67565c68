"""The CPU checks: cgroup quota, numba's threading layer and its kernel cache, OMP_WAIT_POLICY.

numba reads ``NUMBA_*`` once, at import, so those cases run ``celeris doctor --quick --json``
in a fresh interpreter (``run_cli``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celeris.doctor import DoctorOptions, Status, run_doctor
from celeris.doctor.cpu import cpu_quota, kernel_files
from tests.doctor.conftest import ROOT, by_name

RunCLI = Callable[..., tuple[int, Any, str]]


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "150000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cpu_quota_cgroup_v2_and_v1_files_read_in_cores(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota


def test_kernel_files_are_the_cached_kernel_modules() -> None:
    names = {str(p.relative_to(ROOT / "src" / "celeris")) for p in kernel_files()}
    assert {"backtest/kernel.py", "indicators/nb.py", "data/nb.py"} <= names
    assert "backtest/_cache_guard.py" not in names  # mentions cache=True in prose only
    assert not any(n.startswith("testing/") for n in names)


@pytest.mark.parametrize(
    ("layer", "status", "words"),
    [("tbb", "fail", "pip install tbb"), ("workqueue", "warn", "not thread-safe")],
)
def test_numba_threading_unusable_layers_fail_or_warn_with_fix(
    run_cli: RunCLI, layer: str, status: str, words: str
) -> None:
    code, doc, out = run_cli("--quick", "--json", env={"NUMBA_THREADING_LAYER": layer})
    check = by_name(doc)["numba_threading"]
    assert check["status"] == status, out
    assert words in check["summary"] + check["fix"]
    assert code == (1 if status == "fail" else 0)


_COMPILE_ONE = "from celeris.data.nb import garch_variance_nb as f; import numpy as np; " \
    "f(np.zeros(4), 0.1, 0.1, 0.8)"  # fmt: skip


def test_numba_cache_cold_then_other_cpu_then_warm_for_that_cpu(
    run_cli: RunCLI, tmp_path: Path
) -> None:
    cache = tmp_path / "numba"
    env = {"NUMBA_CACHE_DIR": str(cache)}
    code, doc, out = run_cli("--quick", "--json", env=env)
    check = by_name(doc)["numba_cache"]
    assert check["status"] == "warn" and check["summary"].startswith("cold"), out
    assert "NUMBA_CACHE_DIR" in check["fix"] and code == 0 and check["details"]["warm"] == []

    # one kernel compiled for a generic CPU: fresh entries, but not for this host's CPU
    generic = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_CPU_NAME="generic")
    subprocess.run([sys.executable, "-c", _COMPILE_ONE], env=generic, check=True, cwd=ROOT)
    _, doc, out = run_cli("--quick", "--json", env=env)
    check = by_name(doc)["numba_cache"]
    assert check["status"] == "warn" and "another CPU (generic)" in check["summary"], out
    assert "NUMBA_CPU_NAME=generic" in check["fix"]

    _, doc, out = run_cli("--quick", "--json", env={**env, "NUMBA_CPU_NAME": "generic"})
    check = by_name(doc)["numba_cache"]
    assert check["details"]["warm"] == ["data/nb.py"], out
    assert check["summary"].startswith("partly warm (1 of ")
    cpu = by_name(doc)["cpu"]  # the image's deliberate choice: noted, not a problem
    assert cpu["status"] == "ok" and cpu["details"]["numba_target"] == "generic"
    assert "numba compiles for generic (NUMBA_CPU_NAME)" in cpu["summary"]


def test_numba_cache_unwritable_directory_fails(run_cli: RunCLI, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, doc, out = run_cli("--quick", "--json", env={"NUMBA_CACHE_DIR": str(blocker / "c")})
    check = by_name(doc)["numba_cache"]
    assert check["status"] == "fail" and code == 1, out
    assert "cannot write" in check["summary"] and "NUMBA_CACHE_DIR" in check["fix"]


@pytest.mark.parametrize(("value", "status"), [("ACTIVE", "warn"), ("passive", "ok"),
                                               ("spin", "warn")])  # fmt: skip
def test_omp_wait_policy_active_or_unknown_warns(
    doctor_env: pytest.MonkeyPatch, value: str, status: str
) -> None:
    doctor_env.setenv("OMP_WAIT_POLICY", value)
    check = run_doctor(DoctorOptions(quick=True)).get("omp_wait_policy")
    assert check.status == Status(status)
    if status == "warn":
        assert check.fix and "PASSIVE" in check.fix
