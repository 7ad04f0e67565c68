"""The list of checks, in the order they run, and the function that runs them."""

from __future__ import annotations

import time
import traceback

from celeris.doctor import accel, cpu, environment, gpu, llm, services
from celeris.doctor.base import Check, Context, DoctorOptions, fail
from celeris.doctor.report import CheckResult, Report
from celeris.errors import CelerisError

# ``quick``: local and fast (no torch/onnxruntime import, no network, no compile, no hashing).
CHECKS: tuple[Check, ...] = (
    Check("python", "Python", True, environment.check_python),
    Check("packages", "Packages vs lock", True, environment.check_packages),
    Check("config", "Settings", True, environment.check_config),
    Check("cpu", "CPU", True, cpu.check_cpu),
    Check("numba_threading", "numba threads", True, cpu.check_numba_threading),
    Check("numba_cache", "numba cache", True, cpu.check_numba_cache),
    Check("omp_wait_policy", "OMP_WAIT_POLICY", True, cpu.check_omp_wait_policy),
    Check("onnxruntime", "onnxruntime", False, accel.check_onnxruntime),
    Check("torch", "torch", False, accel.check_torch),
    Check("gpu", "GPU (NVML)", True, gpu.check_gpu),
    Check("device", 'device="auto"', False, accel.check_device),
    Check("cuda_kernel", "CUDA kernel", False, accel.check_cuda_kernel),
    Check("registry", "Model registry", False, services.check_registry),
    Check("redis", "Redis", False, services.check_redis),
    Check("postgres", "PostgreSQL", False, services.check_postgres),
    Check("ports", "Ports", True, services.check_ports),
    Check("socket", "Signal socket", True, services.check_socket),
)
LLM_CHECK = Check("llm", "LLM endpoint", False, llm.check_llm)


def check_names(*, quick: bool = False, llm: bool = False) -> list[str]:
    """Return the names of the checks a run with these options makes, in order."""
    names = [c.name for c in CHECKS if c.quick or not quick]
    return [*names, LLM_CHECK.name] if llm else names


def build_context(options: DoctorOptions) -> Context:
    """Load the settings the checks read; a loading error is kept for the ``config`` check."""
    from celeris.serving.config import load_serve_settings

    serve = serve_error = llm_settings = llm_error = None
    try:
        serve = load_serve_settings()
    except CelerisError as exc:
        serve_error = str(exc)
    if options.llm:
        from celeris.llm.settings import load_llm_settings

        try:
            llm_settings = load_llm_settings()
        except CelerisError as exc:
            llm_error = str(exc)
    return Context(options, serve, serve_error, llm_settings, llm_error)


def run_check(check: Check, ctx: Context) -> CheckResult:
    """Run one check; a check that crashes is a failure that names the exception and where."""
    t0 = time.perf_counter()
    try:
        finding = check.run(ctx)
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        finding = fail(
            f"the check itself failed: {type(exc).__name__}: {exc} "
            f"({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})",
            "report this output as a Celeris bug; the other checks are unaffected",
        )
    return CheckResult(
        name=check.name,
        title=check.title,
        status=finding.status,
        summary=finding.summary,
        fix=finding.fix,
        details=dict(finding.details),
        seconds=time.perf_counter() - t0,
    )


def run_doctor(options: DoctorOptions | None = None) -> Report:
    """Run every check (``options.quick``: the fast subset; ``options.llm``: and the LLM
    endpoint) and return the report. Never raises for what it finds: problems are results."""
    from celeris import __version__

    options = options or DoctorOptions()
    t0 = time.perf_counter()
    ctx = build_context(options)
    checks = [c for c in CHECKS if c.quick or not options.quick]
    if options.llm:
        checks.append(LLM_CHECK)
    results = tuple(run_check(c, ctx) for c in checks)
    return Report(
        celeris_version=__version__,
        quick=options.quick,
        llm=options.llm,
        checks=results,
        seconds=time.perf_counter() - t0,
    )
