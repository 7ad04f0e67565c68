"""Shape of the whole of ``celeris``: no god functions, no import cycles, test doubles kept apart.

Read from the source (``ast``), nothing is imported. An import counts wherever it is written:
at module level and inside functions (a function-level import that closes a cycle only defers
it). Two kinds of import statement never run as an import of the module and are left out of
the cycle check: those under ``if TYPE_CHECKING:`` (annotations only) and those under
``if __name__ == "__main__":`` (the file run as a script is ``__main__``, not the module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

import celeris

_SRC = Path(celeris.__file__).parent.parent
#: Most lines of code (docstring excluded) in one function of ``src/celeris``.
MAX_FUNCTION_LINES = 150
#: Functions allowed to be longer, each with the note in its module that says why.
LONG_BY_DESIGN = {
    "celeris.backtest.kernel.simulate_column": "split into steps it ran 9-18% slower",
}
#: The only modules outside ``celeris.testing`` that import it: ``celeris llm serve --tiny``.
TESTING_IMPORTERS = {"celeris.cli.llm_cmd", "celeris.cli.exchange_cmd"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(_SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((_SRC / "celeris").rglob("*.py"))}


def _function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end (nested functions in)."""
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first = body[1] if has_doc and len(body) > 1 else body[0]
    return (node.end_lineno or first.lineno) - first.lineno + 1


def _functions(
    node: ast.AST, prefix: str
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function under ``node`` with its dotted name (``module.Class.method.inner``)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{child.name}"
            yield name, child
            yield from _functions(child, name)
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}.{child.name}")
        else:
            yield from _functions(child, prefix)


def _long_functions(modules: Mapping[str, Path], limit: int) -> list[str]:
    return [
        f"{name} ({lines} lines)"
        for module, path in modules.items()
        for name, node in _functions(ast.parse(path.read_text()), module)
        if (lines := _function_lines(node)) > limit
    ]


def _never_imported_at_run_time(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:`` / ``if __name__ == "__main__":``."""
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _import_nodes(node: ast.AST, run_time_only: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node``; with ``run_time_only``, not those that never run
    as an import of the module."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif run_time_only and isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
            continue  # a module's alias for a moved name: runs only when the old name is asked for
        elif (
            run_time_only and isinstance(child, ast.If) and _never_imported_at_run_time(child.test)
        ):
            for other in child.orelse:  # the else branch does run
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]), True)
        else:
            yield from _import_nodes(child, run_time_only)


def _module_level(statements: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements a module runs at import, through ``if``/``try`` blocks."""
    for node in statements:
        if isinstance(node, ast.If):
            if not _never_imported_at_run_time(node.test):
                yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse):
                yield from _module_level(block)
        else:
            yield node


def _imported_names(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: Set[str]
) -> list[str]:
    """Absolute dotted names an import statement loads; ``from P import x`` is ``P.x`` when
    that is a module, else ``P``. Relative imports are resolved against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def _imports(module: str, path: Path, modules: Set[str], *, run_time_only: bool = True) -> set[str]:
    """The ``celeris`` modules that ``module`` imports (the nearest module of each name)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in _import_nodes(tree, run_time_only):
        for name in _imported_names(module, path.name == "__init__.py", node, modules):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


def _import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {m: _imports(m, p, modules.keys()) for m, p in modules.items()}


def _cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The groups of modules that import each other (directly or around a loop), each sorted."""

    def reach(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in graph}
    groups = {
        tuple(sorted(m for m in reachable[start] if start in reachable[m]))
        for start in graph
        if start in reachable[start]
    }
    return [list(group) for group in sorted(groups)]


def _edges_within(graph: Mapping[str, Set[str]], group: list[str]) -> list[str]:
    return [f"{a} -> {b}" for a in group for b in sorted(graph[a]) if b in group]


def _lazy_imports(modules: Mapping[str, Path]) -> list[str]:
    """``from P import x`` where ``x`` is neither a submodule nor bound in ``P`` (a package's
    ``__init__.py``, or a module with a ``__getattr__`` alias): loaded by ``__getattr__``, so
    invisible to the import graph."""
    bound: dict[str, set[str]] = {}
    for module, path in modules.items():
        body = ast.parse(path.read_text()).body
        has_getattr = any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in body)
        if path.name != "__init__.py" and not has_getattr:
            continue
        names = set()
        for node in _module_level(body):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names |= {(a.asname or a.name).partition(".")[0] for a in node.names}
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            else:
                names |= {
                    n.id
                    for n in ast.walk(node)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                }
        bound[module] = names
    return [
        f"{module}: from {node.module} import {alias.name}"
        for module, path in modules.items()
        for node in _import_nodes(ast.parse(path.read_text()), run_time_only=True)
        if isinstance(node, ast.ImportFrom) and not node.level and node.module in bound
        for alias in node.names
        if f"{node.module}.{alias.name}" not in modules
        and alias.name not in bound[node.module]
        and alias.name != "*"
    ]


# ---- the project -----------------------------------------------------------------------------
def test_src_functions_fit_the_length_limit_but_the_noted_ones() -> None:
    too_long = [
        f for f in _long_functions(_modules(), MAX_FUNCTION_LINES)
        if f.partition(" ")[0] not in LONG_BY_DESIGN
    ]  # fmt: skip
    assert too_long == []


def test_long_functions_by_design_are_long_and_carry_their_note() -> None:
    modules = _modules()
    long_ones = {f.partition(" ")[0] for f in _long_functions(modules, MAX_FUNCTION_LINES)}
    for name in LONG_BY_DESIGN:
        module, _, function = name.rpartition(".")
        assert name in long_ones, f"{name} is short now: take it off LONG_BY_DESIGN"
        assert f"# {function} is one long function on purpose" in modules[module].read_text()


def test_src_modules_import_no_cycle() -> None:
    graph = _import_graph(_modules())
    cycles = _cycles(graph)
    assert cycles == [], [_edges_within(graph, group) for group in cycles]


def test_src_modules_import_nothing_through_a_lazy_package_getattr() -> None:
    # What keeps the cycle check whole: a package's lazy __getattr__ imports with a computed
    # name that the graph cannot see, so nothing in src may depend on it.
    assert _lazy_imports(_modules()) == []


def test_src_imports_no_tests_and_celeris_testing_only_from_the_cli() -> None:
    modules = _modules()
    importers = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        names = {
            name
            for node in _import_nodes(tree, run_time_only=False)
            for name in _imported_names(module, path.name == "__init__.py", node, modules.keys())
        }
        importers[module] = names
    assert [m for m, names in importers.items() if any(
        n == "tests" or n.startswith("tests.") for n in names)] == []  # fmt: skip
    testing = {
        m
        for m, names in importers.items()
        if not m.startswith("celeris.testing")
        and any(n == "celeris.testing" or n.startswith("celeris.testing.") for n in names)
    }
    assert testing == TESTING_IMPORTERS


# ---- the helpers above ---------------------------------------------------------------------
def test_cycles_of_a_graph_with_two_loops_names_each_once() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert _edges_within(graph, ["a", "b", "c"]) == ["a -> b", "b -> c", "c -> a"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_imports_resolve_relative_and_skip_type_checking_and_main(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "from ..other import thing\n"
        "import celeris.pkg.sub.deep\n"
        "if TYPE_CHECKING:\n"
        "    from celeris.typed import T\n"
        "else:\n"
        "    import celeris.runtime\n"
        "def f():\n"
        "    from celeris.lazy import g\n"
        'if __name__ == "__main__":\n'
        "    import celeris.script\n"
    )
    path = tmp_path / "mod.py"
    path.write_text(source)
    known = {"celeris.pkg", "celeris.pkg.sibling", "celeris.pkg.sub", "celeris.other",
             "celeris.typed", "celeris.runtime", "celeris.lazy", "celeris.script"}  # fmt: skip
    assert _imports("celeris.pkg.mod", path, known) == {
        "celeris.pkg.sibling", "celeris.other", "celeris.pkg.sub", "celeris.runtime",
        "celeris.lazy",
    }  # fmt: skip
    everything = _imports("celeris.pkg.mod", path, known, run_time_only=False)
    assert {"celeris.typed", "celeris.script"} <= everything


def test_function_lines_leave_out_the_docstring_and_count_nested_functions() -> None:
    tree = ast.parse(
        'def f():\n    """Doc.\n\n    More.\n    """\n    x = 1\n\n    def g():\n        return x\n\n    return g\n'
    )
    (name, node), (inner, _) = list(_functions(tree, "m"))
    assert (name, inner) == ("m.f", "m.f.g")
    assert _function_lines(node) == 6
