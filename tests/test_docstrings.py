"""Every ``>>>`` example in Celeris's docstrings runs, and prints what the docstring says.

Modules are found by their text, so a new example is tested without registering it here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "celeris").rglob("*.py")):
        if ">>> " not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(SRC).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_docstring_examples_are_found() -> None:
    # The finder itself: the packages known to carry examples are among those found.
    assert {"celeris.backtest.signals", "celeris.backtest.report", "celeris.data"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run_as_written(name: str) -> None:
    module = importlib.import_module(name)
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    result = doctest.testmod(module, optionflags=flags, verbose=False, report=True)
    text = Path(module.__file__ or "").read_text(encoding="utf-8")
    runnable = [ln for ln in text.splitlines() if ">>> " in ln and "doctest: +SKIP" not in ln]
    assert result.attempted > 0 or not runnable, f"doctest found none of {name}'s examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
