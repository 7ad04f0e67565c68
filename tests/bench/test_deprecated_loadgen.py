"""``celeris.serving.loadgen`` stays importable for one release, warning, as ``celeris.bench``."""

from __future__ import annotations

import importlib

import pytest

import celeris.bench as bench


def test_serving_loadgen_old_name_warns_and_is_the_bench_object() -> None:
    old = importlib.import_module("celeris.serving.loadgen")
    with pytest.warns(DeprecationWarning, match=r"celeris\.bench\.load"):
        assert old.load is bench.load
    with pytest.warns(DeprecationWarning, match=r"celeris\.bench\.Target"):
        from celeris.serving.loadgen import Target
    assert Target is bench.Target
    assert set(dir(old)) == set(bench.__all__)


def test_serving_loadgen_unknown_name_raises_attribute_error() -> None:
    old = importlib.import_module("celeris.serving.loadgen")
    with pytest.raises(AttributeError, match=r"moved to celeris\.bench"):
        _ = old.no_such_thing
