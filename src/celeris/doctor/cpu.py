"""The CPU side: cores and their quota, instruction sets, numba's threads and its kernel cache,
and ``OMP_WAIT_POLICY``."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celeris.doctor.base import Context, Finding, fail, ok, warn

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Features the kernels and onnxruntime profit from; AVX2 and FMA are the ones a 2015+ x86 server
# has, so their absence usually means a VM that hides them (a generic CPU model).
_X86_FEATURES = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vnni", "amx-tile")
_ARM_FEATURES = ("neon", "sve", "sve2")


def numba_setting(name: str) -> Any:
    """Return numba's configuration value ``name`` (read from ``NUMBA_*`` at import)."""
    from numba.core import config

    return getattr(config, name)


def cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """Return the CPU limit of this process's cgroup in cores (``2.0`` for a Kubernetes
    ``limits.cpu: 2``), or ``None`` when there is none.

    Reads cgroup v2's ``cpu.max`` (``"200000 100000"``, or ``"max 100000"`` for no limit), else
    cgroup v1's ``cpu/cpu.cfs_quota_us`` and ``cpu/cpu.cfs_period_us`` (quota ``-1``: no limit).
    """
    v2 = root / "cpu.max"
    try:
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return int(quota) / int(period or "100000")
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            quota_us = int(v1.read_text().strip())
            period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text().strip())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def check_cpu(ctx: Context) -> Finding:
    """Cores this process may use (affinity and cgroup quota) and the instruction sets LLVM
    compiles the kernels for."""
    import llvmlite.binding as ll

    from celeris.compute.profiles import cpu_cores

    cores = cpu_cores()
    quota = cpu_quota()
    features = {f[1:] for f in ll.get_host_cpu_features().flatten().split(",") if f.startswith("+")}
    host = ll.get_host_cpu_name()
    x86 = bool({"sse2", "avx"} & features) or "x86" in os.uname().machine
    known = _X86_FEATURES if x86 else _ARM_FEATURES
    present = [f for f in known if f in features]
    details = {
        "model": _cpu_model(),
        "llvm_cpu": host,
        "cores": cores,
        "os_cpus": os.cpu_count(),
        "quota_cores": quota,
        "features": present,
    }
    summary = (
        f"{details['model']} ({host}): {cores} cores usable"
        + (f", cgroup limit {quota:g} cores" if quota is not None else "")
        + f"; {' '.join(present) or 'no SIMD extensions seen'}"
    )
    if "x86" in os.uname().machine and not {"avx2", "fma"} <= features:
        return warn(
            summary + "; no AVX2/FMA",
            "the kernels and onnxruntime fall back to narrower, slower vector code; "
            "give the VM the host CPU model (e.g. libvirt host-passthrough) or a newer instance",
            **details,
        )
    target = str(host_magic()[1])
    details["numba_target"] = target
    if target != host:
        # Deliberate (an image warms one cache for every CPU model): noted, not a problem.
        summary += (
            f"; numba compiles for {target} (NUMBA_CPU_NAME), not {host}: portable code "
            "without this CPU's newest vector instructions"
        )
    return ok(summary, **details)


def check_numba_threading(ctx: Context) -> Finding:
    """numba's threading layer (the one parallel kernels will really use) and its threads
    against the cores and the cgroup quota."""
    import numba
    from numba.np.ufunc import parallel

    from celeris.compute.profiles import cpu_cores

    requested = numba_setting("THREADING_LAYER")
    threads = int(numba_setting("NUMBA_NUM_THREADS"))
    details: dict[str, Any] = {
        "requested": requested,
        "threads": threads,
        "numba": numba.__version__,
    }
    try:
        parallel._launch_threads()  # what the first parallel kernel does; compiles nothing
        layer = numba.threading_layer()
    except Exception as exc:  # numba raises ValueError when no requested layer loads
        return fail(
            f"numba cannot start a threading layer (NUMBA_THREADING_LAYER={requested}): "
            f"{str(exc).strip().splitlines()[0]}",
            "install the layer asked for (pip install tbb) or unset NUMBA_THREADING_LAYER "
            "(numba then picks OpenMP or workqueue)",
            **details,
        )
    details["layer"] = layer
    summary = f"threading layer {layer}, {threads} threads"
    if layer == "workqueue":
        return warn(
            summary + ": workqueue is not thread-safe",
            "two threads running parallel kernels at once (the server's batches, threaded "
            "sweeps) abort the process under workqueue: pip install tbb, or set "
            "NUMBA_THREADING_LAYER=omp where numba's OpenMP layer loads",
            **details,
        )
    limit = cpu_quota()
    usable = min(cpu_cores(), int(limit) if limit is not None else threads)
    if threads > max(1, usable):
        return warn(
            summary + f" on {usable} usable cores",
            f"more threads than cores only adds switching and cgroup throttling: set "
            f"NUMBA_NUM_THREADS={max(1, usable)}",
            usable_cores=usable,
            **details,
        )
    return ok(summary, **details)


def check_omp_wait_policy(ctx: Context) -> Finding:
    """``OMP_WAIT_POLICY``: PASSIVE (Celeris's default) keeps idle OpenMP threads off the cores."""
    value = os.environ.get("OMP_WAIT_POLICY")
    others = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    if value is None or value.upper() == "PASSIVE":
        return ok(f"OMP_WAIT_POLICY={value or 'unset'} (idle threads sleep)", value=value, **others)
    if value.upper() == "ACTIVE":
        return warn(
            "OMP_WAIT_POLICY=ACTIVE: idle OpenMP threads spin",
            "unset OMP_WAIT_POLICY or set it to PASSIVE: spinning threads steal the cores from "
            "the serial work between kernels (sweeps measured 15-25% slower on 2 cores)",
            value=value,
            **others,
        )
    return warn(
        f"OMP_WAIT_POLICY={value!r} is not PASSIVE or ACTIVE",
        "set OMP_WAIT_POLICY=PASSIVE (or unset it: Celeris sets PASSIVE)",
        value=value,
        **others,
    )


# ------------------------------------------------------------------------------- numba cache

_KERNEL_LINE = re.compile(r"^\s*(@\w.*\bcache=True|cache=True)", re.MULTILINE)


def kernel_files() -> list[Path]:
    """Return Celeris's source files that define numba kernels cached on disk (``cache=True``),
    test tooling (``celeris.testing``) left out."""
    root = Path(__file__).resolve().parents[1]
    out = []
    for path in sorted(root.rglob("*.py")):
        if "testing" in path.relative_to(root).parts:
            continue
        if _KERNEL_LINE.search(path.read_text(encoding="utf-8")):
            out.append(path)
    return out


@dataclass(frozen=True)
class CacheState:
    """The on-disk cache of one kernel source file."""

    source: Path
    directory: Path
    indexes: int  # index files of this source in the cache directory
    fresh: int  # of them, written for the source as it is now
    this_cpu: int  # of the fresh ones, holding machine code for this CPU
    other_cpus: tuple[str, ...]  # CPU names the fresh entries were compiled for instead


def _cache_directory(source: Path) -> Path:
    """Where numba caches ``source``'s kernels: ``$NUMBA_CACHE_DIR/<dir>_<sha1>``, else the
    ``__pycache__`` beside it when writable, else numba's per-user cache directory."""
    from numba.core.caching import _CacheLocator

    sub = _CacheLocator.get_suitable_cache_subpath(str(source))
    if numba_setting("CACHE_DIR"):
        return Path(numba_setting("CACHE_DIR")) / sub
    beside = source.parent / "__pycache__"
    if _writable(beside):
        return beside
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir) / sub


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
        return True
    except OSError:
        return False


def cache_state(source: Path, magic: tuple[Any, ...]) -> CacheState:
    """Read the index files numba keeps for ``source`` (as numba does: its version, the
    source's sha256 stamp, then overloads keyed by ``(signature, (triple, cpu, features))``).

    A kernel file watched by :mod:`celeris.backtest._cache_guard` is stamped with its
    dependencies' digest too; only the source part of that stamp is compared here.
    """
    import hashlib

    import numba

    directory = _cache_directory(source)
    expected = hashlib.sha256(source.read_bytes()).digest()
    indexes = fresh = this_cpu = 0
    others: set[str] = set()
    for index in sorted(directory.glob(f"{source.stem}.*.nbi")):
        indexes += 1
        try:
            with index.open("rb") as f:
                version = pickle.load(f)
                stamp, overloads = pickle.loads(f.read())
        except Exception:  # a truncated or foreign file: numba would recompile too
            continue
        if version != numba.__version__:
            continue
        stamp = stamp[0] if isinstance(stamp, tuple) else stamp
        if stamp != expected:
            continue
        fresh += 1
        targets = {key[1] for key in overloads if isinstance(key, tuple) and len(key) >= 2}
        if magic in targets:
            this_cpu += 1
        else:
            others.update(str(t[1]) for t in targets if isinstance(t, tuple) and len(t) == 3)
    return CacheState(source, directory, indexes, fresh, this_cpu, tuple(sorted(others)))


def host_magic() -> tuple[Any, ...]:
    """The ``(triple, cpu name, features)`` numba keys this machine's compiled code by."""
    from numba.core.registry import cpu_target

    return tuple(cpu_target.target_context.codegen().magic_tuple())


def check_numba_cache(ctx: Context) -> Finding:
    """Where numba caches the kernels, whether it can write there, and whether the cache is warm
    (compiled for these sources, this numba and this CPU) or cold (the first run compiles)."""

    configured = numba_setting("CACHE_DIR") or None
    files = kernel_files()
    root = Path(__file__).resolve().parents[1]
    magic = host_magic()
    states = [cache_state(f, magic) for f in files]
    directories = sorted({str(s.directory) for s in states})
    details: dict[str, Any] = {
        "NUMBA_CACHE_DIR": configured,
        "directories": directories,
        "kernel_files": len(files),
        "warm": [str(s.source.relative_to(root)) for s in states if s.this_cpu],
        "cold": [str(s.source.relative_to(root)) for s in states if not s.this_cpu],
    }
    unwritable = [d for d in directories if not _writable(Path(d))]
    if unwritable:
        return fail(
            f"numba cannot write its kernel cache at {', '.join(unwritable)}: every process "
            "compiles every kernel (the backtest kernels alone take ~66 s of CPU)",
            "set NUMBA_CACHE_DIR to a writable, persistent directory (an image: warm it at "
            "build time and make it readable by the runtime user)",
            **details,
        )
    warm = sum(1 for s in states if s.this_cpu)
    other_cpus = sorted({c for s in states if not s.this_cpu for c in s.other_cpus})
    where = configured or directories[0] if directories else "-"
    if warm == len(states):
        return ok(f"warm: all {warm} kernel files cached for {magic[1]} in {where}", **details)
    if other_cpus:
        details["cached_for"] = other_cpus
        return warn(
            f"{len(states) - warm} of {len(states)} kernel files cached only for another CPU "
            f"({', '.join(other_cpus)}), not this {magic[1]}: they recompile on first use",
            "warm the cache on the CPU model that runs it, or warm it with NUMBA_CPU_NAME=generic "
            "and run with NUMBA_CPU_NAME=generic too (portable, somewhat slower code)",
            **details,
        )
    kind = "cold" if warm == 0 else f"partly warm ({warm} of {len(states)} kernel files)"
    return warn(
        f"{kind} in {where}: the first run compiles (~66 s of CPU for the backtest kernels "
        "on 2 cores)",
        "warm it once with the workload (e.g. celeris demo) under the same NUMBA_CACHE_DIR, and "
        "keep that directory (a volume, or the image)",
        **details,
    )
