"""Predictor backends, ONNX/int8/TorchScript export parity, profiles, forecast-driven signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from celeris import ConfigError, DataError
from celeris.models.catalogue import build_model
from celeris.models.checkpoint import save_checkpoint
from celeris.models.data import StandardScaler
from celeris.models.export import TOLERANCE, export_checkpoint
from celeris.models.predictor import Predictor, _halving
from celeris.models.profiles import auto_profile, load_predictor, optimal_batch_size
from celeris.models.signals import expected_returns, rolling_forecasts, signals_from_forecast
from tests.helpers import assert_values_close

L, H = 24, 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = build_model(
        "nhits", **build_model("nhits", input_size=L, horizon=H).tiny_config(L, H, 1)
    ).eval()
    rng = np.random.default_rng(0)
    scaler = StandardScaler().fit(100 + rng.standard_normal(500).cumsum())
    directory = tmp_path_factory.mktemp("ckpt") / "nhits"
    save_checkpoint(
        model, directory, scaler=scaler, meta={"input_size": L, "horizon": H, "n_features": 1}
    )
    return directory


def _eager(directory: Path, x: np.ndarray) -> np.ndarray:
    from celeris.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(directory)
    xs = ckpt.scaler.transform(x.astype(np.float64)).astype(np.float32)
    with torch.inference_mode():
        y = ckpt.model(torch.from_numpy(xs)).numpy()
    return ckpt.scaler.inverse_transform(y)


def _histories(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + rng.standard_normal((n, L, 1)).cumsum(axis=1)).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch", "onnx", "onnx-int8"])
def test_predictor_backends_match_the_eager_model(checkpoint, backend):
    x = _histories(33)
    expected = _eager(checkpoint, x)
    got = Predictor.load(checkpoint, backend=backend, max_batch=16).predict(x)  # 3 chunks
    scale = np.abs(expected).max()
    tol = {"torch": 1e-6, "onnx": 1e-4, "onnx-int8": TOLERANCE["onnx-int8"]}[backend]
    assert np.abs(got - expected).max() <= tol * scale


def test_predictor_accepts_one_history_and_checks_input(checkpoint):
    pred = Predictor.load(checkpoint)
    one = _histories(1)[0, :, 0]
    assert pred.predict(one).shape == (1, H)
    assert_values_close(pred.predict(np.concatenate([np.ones(10), one])), pred.predict(one), rtol=0)
    with pytest.raises(DataError, match="too short"):
        pred.predict(one[:-1])
    bad = one.copy()
    bad[5] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        pred.predict(bad)
    with pytest.raises(DataError, match="feature"):
        pred.predict(np.ones((2, L, 3)))
    with pytest.raises(ConfigError, match="backend"):
        Predictor.load(checkpoint, backend="tensorrt")


def test_export_torchscript_and_onnx_report_parity(checkpoint):
    ts = export_checkpoint(checkpoint, "torchscript")
    onnx = export_checkpoint(checkpoint, "onnx", int8=True)
    assert ts.ok and ts.path.exists() and ts.rel_diff < 1e-5
    assert onnx.ok and onnx.format == "onnx-int8" and onnx.path.stat().st_size > 0
    with pytest.raises(ConfigError, match="int8"):
        export_checkpoint(checkpoint, "torchscript", int8=True)


def test_halving_splits_batches_on_cuda_out_of_memory():
    calls: list[int] = []

    def fn(x):
        calls.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return x * 2

    x = torch.arange(8, dtype=torch.float32).reshape(8, 1)
    assert torch.equal(_halving(fn, x), x * 2)
    assert calls[:3] == [8, 4, 2]


def test_profiles_auto_choice_overrides_and_batch_probe(checkpoint):
    prof = auto_profile()
    assert prof.name in ("low_latency", "balanced", "high_throughput")
    assert auto_profile("memory_efficient").backend == "onnx-int8"
    assert auto_profile("balanced", max_batch=8).max_batch == 8
    with pytest.raises(ConfigError, match="did you mean"):
        auto_profile("balance")
    with pytest.raises(ConfigError, match="unknown profile field"):
        auto_profile("balanced", batch=8)
    pred = load_predictor(checkpoint, "ultra_low_latency")
    assert pred.backend == "onnx" and pred.max_batch == 1
    best, rates = optimal_batch_size(
        Predictor.load(checkpoint, max_batch=64), (1, 8, 64), seconds_per_candidate=0.02
    )
    assert best in rates and set(rates) == {1, 8, 64}


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_rolling_forecasts_use_only_past_bars(checkpoint, backend):
    # Exact backends only: dynamic int8 scales activations per batch, so its past forecasts
    # move by up to the recorded batch effect when later windows change (docs/models.md).
    pred = Predictor.load(checkpoint, backend=backend)
    rng = np.random.default_rng(3)
    values = 100 + rng.standard_normal(120).cumsum()
    # The checkpoint records no training bars and the values no dates: nothing to guard.
    base = rolling_forecasts(pred, values, include_train=True)
    assert base.iloc[: L - 1].isna().all().all() and base.iloc[L - 1 :].notna().all().all()
    t = 80
    moved = values.copy()
    moved[t + 1 :] += 25.0
    after = rolling_forecasts(pred, moved, include_train=True)
    assert_values_close(after.iloc[: t + 1], base.iloc[: t + 1], rtol=0)
    assert not np.allclose(after.iloc[t + 1 :], base.iloc[t + 1 :])


def test_signals_from_forecast_threshold_and_topk():
    idx = pd.date_range("2024", periods=4, freq="D", tz="UTC")
    close = pd.Series([100.0, 100.0, 100.0, 100.0], index=idx)
    fc = pd.DataFrame({1: [101.0, 99.0, 100.05, np.nan]}, index=idx)
    er = expected_returns(fc, close, step=1)
    sig = signals_from_forecast(er, threshold=0.001, short=True)
    assert sig["entries"].tolist() == [True, False, False, False]
    assert sig["exits"].tolist() == [False, True, False, False]
    assert sig["short_entries"].tolist() == [False, True, False, False]
    panel = pd.DataFrame({"A": [0.02, -0.01], "B": [0.01, 0.03], "C": [-0.02, 0.01]}, index=idx[:2])
    top = signals_from_forecast(panel, rule="topk", k=1)
    assert top["entries"].to_numpy().tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(ConfigError, match="k must be"):
        signals_from_forecast(panel, rule="topk", k=4)
    with pytest.raises(ConfigError, match="step 2"):
        expected_returns(fc, close, step=2)


def test_profiles_scale_gpu_batches_with_gpu_memory():
    from celeris.models.profiles import profiles

    big = profiles(16, "NVIDIA H100", 80.0)["high_throughput"]
    small = profiles(16, "NVIDIA T4", 16.0)["high_throughput"]
    cpu = profiles(2)["high_throughput"]
    assert (big.device, big.backend, big.max_batch) == ("cuda", "torch", 8192)
    assert small.max_batch == 2048
    assert (cpu.device, cpu.backend) == ("cpu", "auto")


def test_predictor_torch_compile_matches_eager(checkpoint):
    """torch.compile (inductor, ~25 s to compile on 2 cores) gives the eager model's forecasts."""
    x = _histories(8)
    compiled = Predictor.load(checkpoint, compile=True).predict(x)
    eager = Predictor.load(checkpoint, backend="torch").predict(x)
    assert np.abs(compiled - eager).max() <= 1e-5 * np.abs(eager).max()


def test_predictor_onnx_load_needs_no_torch_and_matches(checkpoint, tmp_path):
    import json
    import subprocess
    import sys

    export_checkpoint(checkpoint, "onnx")
    x = _histories(5)
    np.save(tmp_path / "x.npy", x)
    expected = Predictor.load(checkpoint, backend="onnx").predict(x)
    code = (
        "import sys, json, numpy as np\n"
        "from celeris.models.predictor import Predictor\n"
        f"p = Predictor.load({str(checkpoint)!r}, backend='onnx', threads=1)\n"
        f"y = p.predict(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'y': y.tolist()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["torch"] is False
    assert_values_close(np.asarray(result["y"], dtype=np.float32), expected, rtol=0)


def test_session_options_two_shards_never_spin():
    from celeris.models.export import import_onnxruntime
    from celeris.models.predictor import session_options

    ort = import_onnxruntime()
    options = session_options(ort, 2)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert session_options(ort, None).intra_op_num_threads == 0  # onnxruntime's default
