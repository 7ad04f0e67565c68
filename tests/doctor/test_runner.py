"""run_doctor: which checks run, that every problem carries a fix, and that a crashing check
is a failure instead of a crash."""

from __future__ import annotations

import os
from typing import Any

import pytest

from celeris.doctor import CHECKS, DoctorOptions, Report, Status, check_names, run_doctor
from celeris.doctor.base import Check, Context
from celeris.doctor.runner import build_context, run_check
from tests.doctor.conftest import clean_env

QUICK = ["python", "packages", "config", "cpu", "numba_threading", "numba_cache",
         "omp_wait_policy", "gpu", "ports", "socket"]  # fmt: skip
FULL = ["python", "packages", "config", "cpu", "numba_threading", "numba_cache",
        "omp_wait_policy", "onnxruntime", "torch", "gpu", "device", "cuda_kernel", "registry",
        "redis", "postgres", "ports", "socket"]  # fmt: skip


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """One full run in a clean environment (module-scoped: torch and onnxruntime load once)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("CELERIS_")]:
            mp.delenv(key)
        for key, value in clean_env({}, tmp_path_factory.mktemp("home")).items():
            mp.setenv(key, value)
        return run_doctor(DoctorOptions())


def test_check_names_quick_subset_and_full_order_stable() -> None:
    assert check_names(quick=True) == QUICK
    assert check_names() == FULL and [c.name for c in CHECKS] == FULL
    assert check_names(llm=True) == [*FULL, "llm"]


def test_run_doctor_full_clean_machine_passes_every_check_named(full_report: Report) -> None:
    assert [c.name for c in full_report.checks] == FULL
    failed = [(c.name, c.summary) for c in full_report.checks if c.status is Status.FAIL]
    assert failed == [] and full_report.exit_code == 0
    assert full_report.get("registry").status is Status.SKIP  # a fresh CELERIS_HOME
    assert full_report.get("python").details["version"].startswith("3.")
    assert full_report.get("torch").details["cuda_build"] is None  # the lock's CPU torch


def test_run_doctor_quick_runs_only_the_fast_subset(doctor_env: pytest.MonkeyPatch) -> None:
    report = run_doctor(DoctorOptions(quick=True))
    assert [c.name for c in report.checks] == QUICK and report.quick


def test_run_check_crashing_check_fails_naming_exception(doctor_env: pytest.MonkeyPatch) -> None:
    def broken(ctx: Context) -> Any:
        raise RuntimeError("boom")

    result = run_check(Check("x", "X", True, broken), build_context(DoctorOptions()))
    assert result.status is Status.FAIL
    assert "RuntimeError: boom" in result.summary and "test_runner.py" in result.summary
    assert result.fix and "bug" in result.fix


def test_run_doctor_bad_serve_variable_config_fails_naming_it(
    doctor_env: pytest.MonkeyPatch,
) -> None:
    doctor_env.setenv("CELERIS_SERVE_PORT", "99999")
    report = run_doctor(DoctorOptions(quick=True))
    config = report.get("config")
    assert config.status is Status.FAIL and "CELERIS_SERVE_PORT" in config.summary
    assert config.fix and report.exit_code == 1
    assert report.get("ports").status is Status.SKIP and report.get("socket").status is Status.SKIP


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ports": (0,)}, "ports must be in [1, 65535], got 0"),
        ({"timeout_s": 0.0}, "timeout_s must be in (0, 600]"),
        ({"quik": True}, "did you mean 'quick'"),
    ],
)
def test_doctor_options_bad_value_raises_config_error(
    options: dict[str, Any], message: str
) -> None:
    from celeris.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        DoctorOptions(**options)
    assert message in str(raised.value)
