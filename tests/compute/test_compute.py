"""celeris.compute: the one place that chooses a device (numba and torch) and a hardware profile."""

from __future__ import annotations

import pytest
import torch

from celeris import ConfigError, DeviceError
from celeris.compute import profiles as hw
from celeris.compute import resolve_torch_device


def test_resolve_torch_device_cpu_and_auto_follow_what_torch_sees() -> None:
    assert resolve_torch_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_torch_device("auto").type == expected


def test_resolve_torch_device_explicit_cuda_without_gpu_raises_saying_why(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="device='cuda' cannot run"):
        resolve_torch_device("cuda")
    assert resolve_torch_device("auto") == torch.device("cpu")  # auto falls back quietly


def test_resolve_torch_device_unknown_name_hints() -> None:
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        resolve_torch_device("cdua")


@pytest.mark.parametrize(
    ("cores", "gpu", "expected"),
    [(2, None, "low_latency"), (16, None, "balanced"), (16, "NVIDIA H100", "high_throughput")],
)
def test_auto_profile_chooses_from_cores_and_gpu(monkeypatch, cores, gpu, expected) -> None:
    info = {"cores": cores, "gpu": gpu, "gpu_memory_gb": 80.0 if gpu else None}
    monkeypatch.setattr(hw, "detect", lambda: info)
    chosen = hw.auto_profile()
    assert chosen.name == expected
    assert chosen.device == ("cuda" if gpu and expected != "low_latency" else "cpu")
    if gpu:
        assert chosen.max_batch == 8192  # 80 GB: the large-memory batch


def test_auto_profile_unknown_name_or_field_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown profile 'balancd' \(did you mean 'balanced'"):
        hw.auto_profile("balancd")
    with pytest.raises(ConfigError, match="unknown profile field 'thread'"):
        hw.auto_profile("balanced", thread=2)


def test_models_profiles_reexports_the_compute_profiles() -> None:
    from celeris.models import profiles as model_profiles

    assert model_profiles.auto_profile is hw.auto_profile and model_profiles.Profile is hw.Profile
