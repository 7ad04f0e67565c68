"""Predict bodies for a Celeris model: shapes, formats, and stamps that make every request unique."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest

import celeris.bench as bench
from celeris.errors import CelerisTypeError, ConfigError
from tests.bench.conftest import sent_bodies


def test_predict_bodies_json_and_msgpack_shapes() -> None:
    bodies, ctype = bench.predict_bodies(16, 3, rows=2, distinct=3, priority="high")
    assert ctype == "application/json" and len(set(bodies)) == 3
    doc = json.loads(bodies[0])
    assert np.asarray(doc["inputs"]).shape == (2, 16, 3) and doc["priority"] == "high"
    packed, ctype = bench.predict_bodies(16, 3, rows=2, fmt="msgpack")
    assert ctype == "application/msgpack"
    arr = msgpack.unpackb(packed[0])["inputs"]
    x = np.frombuffer(arr["data"], dtype=arr["dtype"]).reshape(arr["shape"])
    assert x.shape == (2, 16, 3) and np.isfinite(x).all()
    assert np.allclose(x, np.asarray(doc["inputs"], dtype=np.float32))  # same seed, same data
    for bad in ({"rows": 0}, {"fmt": "xml"}, {"distinct": 0}):
        with pytest.raises(ConfigError):
            bench.predict_bodies(16, 3, **bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rows": 2.0}, CelerisTypeError, r"^rows must be an int in \[1, 100000\], got float"),
        ({"distinct": True}, CelerisTypeError, r"^distinct must be an int in \[1, 100000\]"),
        ({"rows": 100_001}, ConfigError, r"^rows must be in \[1, 100000\], got 100001$"),
    ],
)
def test_predict_bodies_bad_counts_raise_one_type_per_mistake(kwargs, error, message) -> None:
    # A float or bool count was a ConfigError before celeris.checks.
    with pytest.raises(error, match=message):
        bench.predict_bodies(16, 3, **kwargs)


def test_predict_bodies_numpy_integer_sizes_accepted() -> None:
    bodies, _ = bench.predict_bodies(np.int64(4), np.int32(2), rows=np.int64(1))
    assert np.asarray(json.loads(bodies[0])["inputs"]).shape == (1, 4, 2)


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_predict_target_default_every_history_of_every_request_unique(fmt: str) -> None:
    url = "http://127.0.0.1:9/v1/models/m/predict"
    target = bench.predict_target(url, 8, 3, rows=2, fmt=fmt, priority="low", seed=3)
    bodies = sent_bodies(target, 300)
    if fmt == "json":
        docs = [json.loads(b) for b in bodies]
        xs = np.asarray([d["inputs"] for d in docs], dtype=np.float32)  # the server's dtype
        assert {d["priority"] for d in docs} == {"low"}
    else:
        docs = [msgpack.unpackb(b) for b in bodies]
        xs = np.stack(
            [np.frombuffer(d["inputs"]["data"], "<f4").reshape(d["inputs"]["shape"]) for d in docs]
        )
        assert {d["priority"] for d in docs} == {"low"}
    assert xs.shape == (300, 2, 8, 3)
    histories = {h.tobytes() for h in xs.reshape(600, 8, 3)}
    assert len(histories) == 600  # no history repeats, within or across requests
    assert np.abs(xs - xs[0]).max() < 0.01  # the stamps barely move the values
    # a later run of the same target continues the counter instead of starting over
    later = sent_bodies(target, 1)[0]
    assert later not in bodies and target.unique_left == target.stamps.capacity - 301


def test_predict_target_distinct_cycles_fixed_bodies() -> None:
    target = bench.predict_target("http://127.0.0.1:9/x", 8, 1, distinct=3, seed=0)
    bodies = sent_bodies(target, 7)
    assert target.stamps is None and len(set(bodies)) == 3 and bodies[:3] == bodies[3:6]
