"""``celeris doctor``: check that this machine can run Celeris, and say how to fix what cannot.

The hardware verification checklist of a deployment, as one command: Python and packages
against the lock, numba's threads and kernel cache, CPU features, ``OMP_WAIT_POLICY``,
onnxruntime and torch builds, NVIDIA GPUs through NVML, which device ``device="auto"`` picks and
whether the CUDA kernel compiles, the model registry (every artifact's sha256), Redis,
PostgreSQL, the serving port and the signal socket; with ``llm=True`` the LLM endpoint and its
structured output. Each check is a :class:`CheckResult` (ok, warn, fail or skip, a one-line
summary, the fix); :func:`run_doctor` returns them as a :class:`Report`.

>>> from celeris.doctor import DoctorOptions, run_doctor
>>> report = run_doctor(DoctorOptions(quick=True))  # doctest: +SKIP
>>> report.exit_code, report.get("numba_cache").status  # doctest: +SKIP
(0, <Status.OK: 'ok'>)
"""

from __future__ import annotations

from celeris.doctor.base import DoctorOptions
from celeris.doctor.report import SCHEMA_VERSION, CheckResult, Report, Status
from celeris.doctor.runner import CHECKS, check_names, run_doctor

__all__ = [
    "CHECKS",
    "SCHEMA_VERSION",
    "CheckResult",
    "DoctorOptions",
    "Report",
    "Status",
    "check_names",
    "run_doctor",
]
