"""celeris.bench is a tool, not runtime: nothing but the CLI imports it, and it reaches into
celeris.serving only for the signal feed's client side (its latency tool)."""

from __future__ import annotations

import ast
from pathlib import Path

import celeris

SRC = Path(celeris.__file__).parent
# What bench may import from celeris besides itself.
# celeris.checks and celeris._settings are leaf helpers (argument checks, frozen configs).
BENCH_MAY_IMPORT = ("celeris.errors", "celeris.data.atomic", "celeris.serving.feed",
                    "celeris.serving.errors", "celeris.checks", "celeris._settings")  # fmt: skip


def _celeris_imports(path: Path) -> set[str]:
    """Every ``celeris...`` module ``path`` imports (type-checking imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            out.update(n for n in names[:1] if n.startswith("celeris"))
            if node.module == "celeris":
                out.update(n for n in names[1:])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("celeris"))
    return out


def _module(path: Path) -> str:
    return ".".join(("celeris", *path.relative_to(SRC).with_suffix("").parts))


def test_layout_celeris_imports_finds_both_import_forms(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import celeris.bench.sla\nfrom celeris import bench\nfrom x import y\n")
    assert _celeris_imports(probe) == {"celeris.bench.sla", "celeris", "celeris.bench"}


def test_layout_only_the_cli_imports_bench() -> None:
    importers = sorted(
        _module(p)
        for p in SRC.rglob("*.py")
        if not _module(p).startswith(("celeris.bench", "celeris.cli."))
        and any(m == "celeris.bench" or m.startswith("celeris.bench.") for m in _celeris_imports(p))
    )
    assert importers == [], importers


def test_layout_bench_imports_no_server_side_module() -> None:
    bad = {
        _module(p): sorted(
            m
            for m in _celeris_imports(p)
            if m != "celeris"  # the package root (for its path)
            and not m.startswith(("celeris.bench", *BENCH_MAY_IMPORT))
        )
        for p in (SRC / "bench").glob("*.py")
    }
    assert {k: v for k, v in bad.items() if v} == {}
