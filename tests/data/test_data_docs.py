"""The examples in the celeris.data docstrings run and print what they say."""

from __future__ import annotations

import doctest
import subprocess
import sys

import celeris.data


def test_data_package_docstring_examples_pass():
    result = doctest.testmod(celeris.data, verbose=False)
    assert result.attempted >= 5
    assert result.failed == 0


def test_data_import_is_light():
    code = (
        "import sys, celeris.data; "
        "print(sorted(m for m in ('numba', 'duckdb', 'ccxt', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
