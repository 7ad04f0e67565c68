"""numba's disk cache of a kernel follows the helper files it inlines (``_cache_guard``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KERNEL = textwrap.dedent(
    """
    import importlib.util
    from pathlib import Path
    from numba import njit
    from helper import step

    # The guard alone, without importing all of celeris.
    spec = importlib.util.spec_from_file_location("guard_mod", {guard_path!r})
    guard_mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(guard_mod)
    {guard}

    @njit("float64(float64)", cache=True)  # compiled (or loaded) at decoration, as the kernels
    def run(x):
        return step(x)

    if __name__ == "__main__":
        print(run(1.0))
    """
)


def _run(tmp: Path, helper_result: str, *, with_guard: bool) -> str:
    (tmp / "helper.py").write_text(
        "from numba.extending import register_jitable\n\n"
        f"@register_jitable\ndef step(x):\n    return x + {helper_result}\n"
    )
    line = 'guard_mod.watch(__file__, [Path(__file__), Path(__file__).with_name("helper.py")])'
    guard_path = str(ROOT / "src" / "celeris" / "backtest" / "_cache_guard.py")
    source = KERNEL.format(guard=line if with_guard else "pass", guard_path=guard_path)
    (tmp / "kernel_mod.py").write_text(source)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "cache"), PYTHONPATH=str(tmp))
    out = subprocess.run(
        [sys.executable, str(tmp / "kernel_mod.py")], env=env, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def test_guarded_kernel_recompiles_when_an_inlined_helper_changes(tmp_path: Path):
    assert _run(tmp_path, "1.0", with_guard=True) == "2.0"
    assert _run(tmp_path, "10.0", with_guard=True) == "11.0"


def test_unguarded_kernel_serves_the_stale_helper(tmp_path: Path):
    """What the guard is for: numba alone keeps the first helper's machine code."""
    assert _run(tmp_path, "1.0", with_guard=False) == "2.0"
    assert _run(tmp_path, "10.0", with_guard=False) == "2.0"


def test_guarded_kernel_loads_from_the_cache_when_nothing_changed(tmp_path: Path):
    assert _run(tmp_path, "1.0", with_guard=True) == "2.0"
    stamp = sorted((tmp_path / "cache").rglob("*.nbi"))
    mtimes = [p.stat().st_mtime_ns for p in stamp]
    assert _run(tmp_path, "1.0", with_guard=True) == "2.0"
    assert [p.stat().st_mtime_ns for p in stamp] == mtimes  # nothing re-saved
