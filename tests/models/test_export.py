"""The export record (exports.json) and the default backend chosen from it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from celeris import ConfigError, DataError
from celeris.data import load
from celeris.models.catalogue import build_model
from celeris.models.checkpoint_file import EXPORTS_FILE, read_exports
from celeris.models.export import INT8_BUDGET, TOLERANCE, export_checkpoint
from celeris.models.pipeline import train_on_bars
from celeris.models.predictor import Predictor, choose_backend, export_summary

L, H = 20, 2


def _train(out: Path, **options):
    tiny = build_model("nhits", input_size=L, horizon=H).tiny_config(L, H, 1)
    return train_on_bars(
        "nhits", load("sample:sp500").iloc[-600:], out, input_size=L, horizon=H,
        model_options=tiny, max_steps=3, batch_size=32, precision="fp32", progress=False,
        **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("exp") / "m")


def _copy(trained, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained.directory, tmp_path / "copy"))


def test_train_on_bars_default_load_is_the_verified_onnx_backend(trained):
    record = read_exports(trained.directory)
    assert record is not None and trained.exports == record
    assert sorted(p.name for p in trained.directory.iterdir()) == [
        "config.json", "exports.json", "model.int8.onnx", "model.onnx", "model.safetensors"
    ]  # fmt: skip
    for backend, entry in record["exports"].items():
        assert entry["verified"] and entry["checked_on"].endswith("held-out windows"), backend
        assert 0 <= entry["max_rel_error"] <= TOLERANCE[backend]
    assert record["exports"]["onnx-int8"]["max_rel_error"] <= INT8_BUDGET
    pred = Predictor.load(trained.directory)
    assert pred.backend == "onnx-int8"
    assert "within the 1% budget" in pred.describe()
    # the default answers like the eager model, within the recorded error
    x = load("sample:sp500")["close"].to_numpy()[-L:]
    eager = Predictor.load(trained.directory, backend="torch").predict(x)
    assert np.abs(pred.predict(x) - eager).max() > 0  # it is not torch in disguise
    assert np.allclose(pred.predict(x), eager, rtol=0.01)


def test_train_on_bars_without_export_loads_as_torch(tmp_path):
    plain = _train(tmp_path / "plain", export=False)
    assert plain.exports is None and not (plain.directory / EXPORTS_FILE).exists()
    pred = Predictor.load(plain.directory)
    assert pred.backend == "torch" and "no verified ONNX export" in pred.backend_reason


def test_predictor_load_onnx_file_changed_after_verification_is_refused(trained, tmp_path):
    ckpt = _copy(trained, tmp_path)
    # a valid model that onnxruntime would happily run, but not the one that was verified
    shutil.copyfile(ckpt / "model.onnx", ckpt / "model.int8.onnx")
    for backend in ("auto", "onnx-int8"):
        with pytest.raises(DataError, match=r"model.int8.onnx does not match the sha256"):
            Predictor.load(ckpt, backend=backend)
    assert Predictor.load(ckpt, backend="torch").backend == "torch"  # the weights are intact
    (ckpt / "model.int8.onnx").unlink()
    with pytest.raises(DataError, match=r"missing but exports\.json records it"):
        Predictor.load(ckpt)


def test_predictor_load_record_of_other_weights_is_refused(trained, tmp_path):
    ckpt = _copy(trained, tmp_path)
    record = json.loads((ckpt / EXPORTS_FILE).read_text())
    record["weights_sha256"] = "0" * 64
    (ckpt / EXPORTS_FILE).write_text(json.dumps(record))
    with pytest.raises(DataError, match="verified against other weights"):
        Predictor.load(ckpt)


def _record(int8: float | None, fp32: float | None = 1e-7) -> dict:
    exports = {}
    for name, error, tol in (("onnx-int8", int8, 0.1), ("onnx", fp32, 1e-4)):
        if error is not None:
            exports[name] = {"file": f"{name}.onnx", "verified": error <= tol,
                             "max_rel_error": error, "checked_on": "9 held-out windows"}  # fmt: skip
    return {"format": 1, "weights_sha256": "x", "exports": exports}


@pytest.mark.parametrize(
    ("record", "kwargs", "backend", "why"),
    [
        (_record(0.0002), {}, "onnx-int8", "int8 ONNX verified on 9 held-out windows: max rel. error 0.02%"),
        (_record(INT8_BUDGET), {}, "onnx-int8", "within the 1% budget"),
        (_record(0.02), {}, "onnx", "int8 ONNX max rel. error 2% exceeds the 1% budget"),
        (_record(None), {}, "onnx", "fp32 ONNX verified"),
        (_record(0.02, fp32=2e-4), {}, "torch", "fp32 ONNX failed its export check (max rel. error 0.02%)"),
        (_record(0.5), {}, "onnx", "int8 ONNX failed its export check (max rel. error 50%)"),
        (_record(float("nan")), {}, "onnx", "int8 ONNX not verified"),
        (None, {}, "torch", "no verified ONNX export"),
        (_record(0.0002), {"device": "cuda"}, "torch", "device='cuda'"),
        (_record(0.0002), {"compile": True}, "torch", "compile=True"),
    ],
)  # fmt: skip
def test_choose_backend_int8_only_within_budget(record, kwargs, backend, why):
    choice = choose_backend(record, **kwargs)
    assert choice.backend == backend and why in choice.reason


def test_export_summary_names_the_default_and_the_budget():
    assert export_summary(_record(0.0002)) == [
        "fp32: max rel. error 1e-05% of scale, within the 0.01% tolerance",
        "int8: max rel. error 0.02% of scale, within the 1% budget -> default backend",
    ]
    assert (
        export_summary(_record(0.02))[1]
        == "int8: max rel. error 2% of scale, outside the 1% budget"
    )
    assert export_summary(None) == ["no verified ONNX export: Predictor.load uses torch"]


def test_choose_backend_judges_numbers_not_the_recorded_verdict():
    record = _record(0.05)
    record["exports"]["onnx-int8"]["verified"] = True  # a record claiming more than it shows
    assert choose_backend(record).backend == "onnx"


@pytest.mark.parametrize(
    ("record", "backend", "why"),
    [
        (_record(0.0002), "onnx", "int8 ONNX not used: exact answers asked"),
        (_record(0.0002, fp32=2e-4), "torch", "int8 ONNX not used: exact answers asked"),
        (_record(0.0002, fp32=None), "torch", "int8 ONNX not used: exact answers asked"),
        (None, "torch", "no verified ONNX export"),
    ],
)  # fmt: skip
def test_choose_backend_exact_never_picks_int8(record, backend, why):
    choice = choose_backend(record, exact=True)
    assert choice.backend == backend and why in choice.reason


def test_predictor_load_exact_takes_the_fastest_exact_verified_backend(trained):
    assert Predictor.load(trained.directory).backend == "onnx-int8"  # the inexact default
    exact = Predictor.load(trained.directory, exact=True)
    assert exact.backend == "onnx" and "exact answers asked" in exact.describe()
    assert Predictor.load(trained.directory, backend="torch", exact=True).backend == "torch"
    with pytest.raises(ConfigError, match="backend='onnx-int8' is approximate"):
        Predictor.load(trained.directory, backend="onnx-int8", exact=True)
    # an exact backend answers each history as it would alone, whatever its batch-mates
    close = load("sample:sp500")["close"].to_numpy()
    x = np.stack([close[len(close) - L - k : len(close) - k] for k in range(8)])[..., None]
    assert np.array_equal(exact.predict(x)[:1], exact.predict(x[:1]))


def test_high_throughput_profile_int8_outside_budget_loads_fp32_onnx(trained, tmp_path):
    from celeris.models.profiles import load_predictor

    assert load_predictor(trained.directory, "high_throughput").backend == "onnx-int8"
    ckpt = _copy(trained, tmp_path)
    record = json.loads((ckpt / EXPORTS_FILE).read_text())
    record["exports"]["onnx-int8"]["max_rel_error"] = 0.05  # within its tolerance, not the budget
    (ckpt / EXPORTS_FILE).write_text(json.dumps(record))
    pred = load_predictor(ckpt, "high_throughput")
    assert pred.backend == "onnx" and "exceeds the 1% budget" in pred.describe()


def test_export_checkpoint_failed_int8_is_recorded_and_leaves_no_file(
    trained, tmp_path, monkeypatch
):
    ckpt = _copy(trained, tmp_path)
    monkeypatch.setitem(TOLERANCE, "onnx-int8", 0.0)
    with pytest.raises(DataError, match="onnx-int8 export differs"):
        export_checkpoint(ckpt, "onnx", int8=True)
    assert not (ckpt / "model.int8.onnx").exists()
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]  # nor scratch files
    entry = read_exports(ckpt)["exports"]["onnx-int8"]
    assert entry["verified"] is False and entry["file"] is None
    monkeypatch.undo()
    assert Predictor.load(ckpt).backend == "onnx"
    declined = export_checkpoint(ckpt, "onnx", int8=True, decline_int8=True)
    assert declined.ok and Predictor.load(ckpt).backend == "onnx-int8"


def test_train_on_bars_fp32_export_failing_its_check_warns_and_stays_on_torch(
    tmp_path, monkeypatch
):
    from celeris.errors import CelerisWarning

    monkeypatch.setitem(TOLERANCE, "onnx", -1.0)  # nothing passes
    with pytest.warns(CelerisWarning, match="Predictor.load uses torch for this checkpoint"):
        trained = _train(tmp_path / "m")
    assert not (trained.directory / "model.onnx").exists()
    assert trained.exports is not None and not trained.exports["exports"]["onnx"]["verified"]
    monkeypatch.undo()
    assert Predictor.load(trained.directory).backend == "torch"


def test_train_on_bars_exporter_crash_warns_and_keeps_the_trained_checkpoint(tmp_path, monkeypatch):
    # The checkpoint is saved before the export: an exporter that fails (a torch.onnx error)
    # must not turn a finished training run into an error.
    from celeris.errors import CelerisWarning
    from celeris.models import export

    def crash(*args, **kwargs):
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(export, "export_onnx", crash)
    with pytest.warns(CelerisWarning, match="ONNX export failed: RuntimeError"):
        trained = _train(tmp_path / "m")
    assert (trained.directory / "model.safetensors").is_file()
    monkeypatch.undo()
    assert Predictor.load(trained.directory).backend == "torch"


def test_onnx_predictor_writes_nothing_under_home(trained, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "from celeris.models.predictor import Predictor\n"
        f"p = Predictor.load({str(trained.directory)!r}, backend='onnx')\n"
        "p.predict([1.0] * 30)\n"
    )
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(tmp_path / "nb")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    assert list(home.rglob("*")) == []
