"""The ONNX backends count float32 denormals as zero while the model runs, and only then."""

from __future__ import annotations

import platform
import sys
import threading

import numpy as np
import pytest

from celeris.models.export import import_onnxruntime
from celeris.models.predictor import flush_denormals, session_options

TINY = np.float32(1e-40)  # a float32 denormal


def _x86_linux() -> bool:
    return sys.platform == "linux" and platform.machine().lower() in ("x86_64", "amd64")


def test_flush_denormals_flushes_inside_and_restores_after():
    flush = flush_denormals()
    if not _x86_linux():  # elsewhere: not offered, the model runs as it always did
        assert flush is None
        return
    assert flush is not None
    assert TINY * np.float32(1.0) != 0.0
    assert flush(lambda: TINY * np.float32(1.0)) == 0.0
    assert TINY * np.float32(1.0) != 0.0  # restored: numpy around the model keeps denormals
    # restored after an exception too
    with pytest.raises(ZeroDivisionError):
        flush(lambda: 1 / 0)
    assert TINY * np.float32(1.0) != 0.0


def test_flush_denormals_touches_the_calling_thread_only():
    flush = flush_denormals()
    if flush is None:
        assert not _x86_linux()
        return
    seen: list[bool] = []
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(10)
        seen.append(bool(TINY * np.float32(1.0) != 0.0))
        release.set()

    thread = threading.Thread(target=other)
    thread.start()

    def model() -> bool:
        inside.set()
        release.wait(10)
        return bool(TINY * np.float32(1.0) == 0.0)

    assert flush(model) is True
    thread.join(10)
    assert seen == [True]  # another thread, while this one ran the model: IEEE denormals


def test_session_options_pool_threads_count_denormals_as_zero():
    ort = import_onnxruntime()
    options = session_options(ort, 2)
    assert options.get_session_config_entry("session.set_denormal_as_zero") == "1"


def test_onnx_runner_predicts_with_denormals_flushed(tmp_path):
    # a one-node model that multiplies by one: a denormal input comes out as zero inside the
    # runner, and numpy after it still computes denormals
    import onnx
    from onnx import TensorProto, helper

    from celeris.models.predictor import _onnx_runner

    ort = import_onnxruntime()
    node = helper.make_node("Mul", ["x", "one"], ["y"])
    graph = helper.make_graph(
        [node],
        "times_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.save(model, tmp_path / "model.onnx")
    x = np.full((2, 4), TINY, dtype=np.float32)
    plain = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert (plain.run(None, {"x": x})[0] != 0).all()  # without: the denormals survive
    run = _onnx_runner(tmp_path, int8=False, threads=1)
    if _x86_linux():
        assert (run(x) == 0).all()
    else:  # no flush offered: as before
        assert run(x).tobytes() == plain.run(None, {"x": x})[0].tobytes()
    assert TINY * np.float32(1.0) != 0.0
