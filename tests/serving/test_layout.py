"""The serving package's module layout: imports point one way, the HTTP layer maps errors by
attribute, and only the CLI imports the composition root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from celeris.errors import CelerisError, CelerisTypeError, ConfigError, DataError, ModelNotFound
from celeris.serving import errors as serving_errors
from celeris.serving.http import problem_of

SRC = Path(__file__).resolve().parents[2] / "src" / "celeris"


def _module(path: Path) -> str:
    return "celeris." + ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(
        ".__init__"
    )


def _imports(path: Path) -> set[str]:
    """Every celeris module ``path`` imports, at the top or inside a function (not the ones
    under ``if TYPE_CHECKING:``, which never run)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("celeris"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("celeris"))
    return out


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module(p): p for p in (SRC / package).rglob("*.py")}
    return {m: (_imports(p) & files.keys()) - {m} for m, p in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_layout_cycle_finder_finds_a_planted_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_layout_serving_modules_import_each_other_one_way_only():
    graph = _graph("serving")
    assert "celeris.serving.http" in graph and "celeris.serving.manager" in graph
    assert _cycle(graph) is None


def test_layout_http_imports_no_domain_module():
    allowed = {
        "celeris.serving.config",
        "celeris.serving.errors",
        "celeris.serving.feed",  # MAX_HORIZON, the wire format's limit
        "celeris.serving.metrics",  # its content type
    }
    http = _graph("serving")["celeris.serving.http"]
    assert http <= allowed, sorted(http - allowed)


def test_layout_only_the_cli_imports_the_composition_root():
    importers = sorted(
        _module(p)
        for p in SRC.rglob("*.py")
        if {"celeris.serving.app"} & _imports(p) and _module(p) != "celeris.serving.app"
    )
    assert all(m.startswith("celeris.cli.") for m in importers), importers


@pytest.mark.parametrize("name", serving_errors.__all__)
def test_layout_every_serving_error_carries_an_http_answer(name):
    cls = getattr(serving_errors, name)
    assert issubclass(cls, serving_errors.ServingError)
    assert 400 <= cls.http_status < 600 and cls.http_error


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (serving_errors.Overloaded("queue full", 1.5), 429, "overloaded"),
        (serving_errors.RequestFailed("refused", DataError("short")), 422, "invalid"),
        (serving_errors.RequestFailed("raised", RuntimeError("bug")), 500, "model_failed"),
        (serving_errors.ArtifactTampered("hash"), 409, "artifact_tampered"),
        (serving_errors.RegistryUnavailable("db"), 503, "unavailable"),
        (serving_errors.IncompatibleVersion("shape"), 409, "conflict"),
        (serving_errors.ModelLoading("loading"), 503, "unavailable"),
        (ModelNotFound("btc"), 404, "not_found"),
        (ConfigError("bad"), 422, "invalid"),
        # celeris.checks raises CelerisTypeError for a wrong type: still the caller's mistake.
        (CelerisTypeError("split must be a real number in [0, 1], got str '0.5'"), 422, "invalid"),
        (CelerisError("other"), 500, "internal"),
    ],
)
def test_layout_problem_of_reads_the_answer_from_the_error(exc, status, kind):
    problem = problem_of(exc)
    assert (problem.status, problem.error) == (status, kind)
    if status == 429:
        assert problem.headers == {"Retry-After": "2"}
        assert problem.extra == {"retry_after_ms": 1500.0}
    if kind == "invalid" and isinstance(exc, serving_errors.RequestFailed):
        assert problem.detail == "short"  # the cause's message, as before
