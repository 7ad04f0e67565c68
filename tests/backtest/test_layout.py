"""Shape of celeris.backtest's code: no private cross-imports, no god functions."""

import ast
from pathlib import Path

import celeris.backtest as bt

_PACKAGE = Path(bt.__file__).parent
#: Most lines of code (docstring excluded) in one function of celeris.backtest.
MAX_FUNCTION_LINES = 150
#: Functions allowed to be longer, each with the note in its module that says why.
LONG_BY_DESIGN = {"kernel.py:simulate_column": "split into steps it ran 9-18% slower"}


def _modules() -> list[Path]:
    return sorted(_PACKAGE.glob("*.py"))


def test_backtest_modules_import_no_private_names_from_each_other() -> None:
    offenders = [
        f"{path.name}: {node.module}.{alias.name}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("celeris")
        for alias in node.names
        # private modules (``_inputs``) are package-internal; private names are not
        if alias.name.startswith("_") and alias.name != "_inputs"
    ]
    assert offenders == []


def test_backtest_functions_fit_the_length_limit() -> None:
    too_long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            first = body[1] if has_doc and len(body) > 1 else body[0]
            lines = node.end_lineno - first.lineno + 1
            name = f"{path.name}:{node.name}"
            if lines > MAX_FUNCTION_LINES and name not in LONG_BY_DESIGN:
                too_long.append(f"{name} ({lines} lines)")
    assert too_long == []


def test_long_functions_by_design_still_exist_and_carry_their_note() -> None:
    for name in LONG_BY_DESIGN:
        module, function = name.split(":")
        source = (_PACKAGE / module).read_text()
        assert f"def {function}(" in source
        assert f"# {function} is one long function on purpose" in source


def test_kernel_entry_points_take_the_packed_argument_list() -> None:
    import inspect

    from celeris.backtest import kernel as K

    packed = ["prices", "signals", "params", "ann_factor", "out"]
    assert list(inspect.signature(K.simulate_nb.py_func).parameters) == packed
    assert list(inspect.signature(K.simulate_column).parameters) == ["col", *packed]


def test_kernel_inputs_pack_prices_and_signals_read_only_in_kernel_order() -> None:
    import numpy as np

    from celeris.backtest.engine import KernelInputs

    arrays = {name: np.full((3, 1), float(k + 1)) for k, name in enumerate(
        ("close", "open", "high", "low", "price"))}  # fmt: skip
    flags = {name: np.zeros((3, 1), bool) for name in
             ("entries", "exits", "short_entries", "short_exits")}  # fmt: skip
    inp = KernelInputs(**arrays, **flags, params=np.zeros((1, 14)), ann_factor=1.0)
    assert [float(a[0, 0]) for a in inp.prices] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert len(inp.signals) == 4
    assert not any(a.flags.writeable for a in (*inp.prices, *inp.signals))
    assert inp.close.flags.writeable  # the views are read-only, the arrays are untouched
