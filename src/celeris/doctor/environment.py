"""The Python interpreter, the installed packages against the lock, and the settings."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from celeris.doctor.base import Context, Finding, fail, ok, skip, warn

LOCK_NAME = "constraints.txt"
_SHOWN = 8  # names listed in a summary before "and N more"


def _listed(names: list[str]) -> str:
    head = ", ".join(names[:_SHOWN])
    return head + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def check_python(ctx: Context) -> Finding:
    """The interpreter against the project's ``Requires-Python``."""
    version = platform.python_version()
    try:
        wanted = md.metadata("celeris")["Requires-Python"] or ""
    except md.PackageNotFoundError:
        wanted = ""
    details = {"version": version, "executable": sys.executable, "requires": wanted or None}
    if wanted and not SpecifierSet(wanted).contains(version, prereleases=True):
        return fail(
            f"Python {version} does not satisfy Requires-Python {wanted}",
            f"run Celeris on a Python that satisfies {wanted} (the lock was made on 3.11)",
            **details,
        )
    return ok(f"Python {version} ({platform.python_implementation()})", **details)


def find_lock(explicit: Path | None) -> Path | None:
    """Return the lock file: ``explicit``, else ``./constraints.txt``, else the source tree's."""
    if explicit is not None:
        return explicit
    here = Path.cwd() / LOCK_NAME
    if here.is_file():
        return here
    tree = Path(__file__).resolve().parents[3] / LOCK_NAME  # src/celeris/doctor -> repo root
    return tree if tree.is_file() else None


def _installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def read_lock(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """Return the exact pins of a lock file (``name==version`` lines whose marker holds here)
    by canonical name, and the lines that are not exact pins (reported, never ignored).
    """
    pins: dict[str, Requirement] = {}
    other: list[str] = []
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            other.append(f"line {number}: {line}")
            continue
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator not in ("==", "==="):
            other.append(f"line {number}: {line}")
            continue
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        pins[canonicalize_name(req.name)] = req
    return pins, other


def _core_requirements() -> list[Requirement]:
    try:
        lines = md.requires("celeris") or []
    except md.PackageNotFoundError:
        return []
    out = []
    for line in lines:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def _extras() -> dict[str, bool]:
    """Each extra of celeris: whether every package it names (besides celeris) is installed."""
    try:
        meta = md.metadata("celeris")
        lines = md.requires("celeris") or []
    except md.PackageNotFoundError:
        return {}
    reqs = [Requirement(line) for line in lines]
    out = {}
    for extra in meta.get_all("Provides-Extra") or []:
        named = [
            r
            for r in reqs
            if r.marker is not None
            and r.marker.evaluate({"extra": extra})
            and canonicalize_name(r.name) != "celeris"
        ]
        out[extra] = all(_installed(r.name) is not None for r in named)
    return out


def check_packages(ctx: Context) -> Finding:
    """Installed packages against the lock file; Celeris's own requirements present."""
    core_missing = [str(r) for r in _core_requirements() if _installed(r.name) is None]
    core_bad = [
        f"{r.name} {v} (needs {r.specifier})"
        for r in _core_requirements()
        if (v := _installed(r.name)) is not None and not r.specifier.contains(v, prereleases=True)
    ]
    extras = _extras()
    details: dict[str, object] = {
        "extras_installed": sorted(k for k, v in extras.items() if v),
        "extras_missing": sorted(k for k, v in extras.items() if not v),
    }
    if core_missing or core_bad:
        return fail(
            f"Celeris's requirements are not met: {_listed(core_missing + core_bad)}",
            "reinstall through the lock: pip install -c constraints.txt -e . (or the image)",
            missing=core_missing,
            wrong=core_bad,
            **details,
        )
    lock = find_lock(ctx.options.lock)
    if lock is None:
        return warn(
            "no lock file found: installed versions not compared",
            f"pass --lock PATH/{LOCK_NAME} (the repository's lock; images copy it)",
            **details,
        )
    details["lock"] = str(lock)
    try:
        pins, other = read_lock(lock)
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"cannot read the lock {lock}: {exc}", "pass a readable --lock file", **details)
    mismatched, absent, matching = [], [], 0
    for _, req in sorted(pins.items()):
        version = _installed(req.name)
        if version is None:
            absent.append(req.name)
        elif req.specifier.contains(version, prereleases=True):
            matching += 1
        else:
            pinned = next(iter(req.specifier)).version
            mismatched.append(f"{req.name} {version} (lock {pinned})")
    details.update(
        pinned=len(pins),
        matching=matching,
        mismatched=mismatched,
        not_installed=len(absent),
        not_pins=other,
    )
    if mismatched:
        return fail(
            f"{len(mismatched)} of {len(pins)} locked packages differ from {lock.name}: "
            f"{_listed(mismatched)}",
            f"reinstall through the lock: pip install -c {lock} -e '.[EXTRAS]' (an "
            "untested version once broke 26 tests overnight)",
            **details,
        )
    if other:
        return warn(
            f"{len(other)} lines of {lock} are not exact pins: {_listed(other)}",
            f"pin every line of {lock.name} as NAME==VERSION (a range lets pip pick untested "
            "versions)",
            **details,
        )
    extras_text = ", ".join(sorted(k for k, v in extras.items() if v)) or "none"
    unused = f" ({len(absent)} locked ones not installed: extras not in use)" if absent else ""
    return ok(
        f"{matching} installed packages match {lock}{unused}; extras: {extras_text}", **details
    )


def check_config(ctx: Context) -> Finding:
    """The ``CELERIS_SERVE_*`` (and with ``--llm``, ``CELERIS_LLM_*``) settings load."""
    problems = [e for e in (ctx.serve_error, ctx.llm_error) if e]
    variables = sorted(k for k in os.environ if k.startswith("CELERIS_"))
    if problems:
        return fail(
            "; ".join(problems),
            "correct the variable named (or the [llm] table of the config file)",
            variables=variables,
        )
    if ctx.serve is None:  # pragma: no cover - serve_error is set whenever serve is None
        return skip("serving settings not loaded")
    s = ctx.serve
    return ok(
        f"settings load ({len(variables)} CELERIS_* variables set); registry {s.registry}",
        variables=variables,
        registry=str(s.registry),
        models=list(s.models),
    )
