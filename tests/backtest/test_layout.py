"""Shape of celeris.backtest's code: no private cross-imports, the kernel's packed arguments.

The function-length limit (and the kernel's one long function) is checked for all of src by
tests/test_layout.py.
"""

import ast
from pathlib import Path

import celeris.backtest as bt

_PACKAGE = Path(bt.__file__).parent


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
