"""The training loop: learning a known signal, early stopping, seeds, clipping, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from celeris.errors import ConfigError
from celeris.models.data import IdentityScaler, StandardScaler, make_windows, split_by_time
from celeris.models.evaluate import evaluate
from celeris.models.train import TrainConfig, resolve_precision, train
from tests.models.conftest import sine_series

FAST = {"progress": False, "device": "cpu", "precision": "fp32"}


class Linear(nn.Module):
    """A window-to-horizon linear map: the same contract as a ForecastModel."""

    task = "regression"
    trainable = True

    def __init__(self, input_size: int, horizon: int, n_features: int = 1) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size * n_features, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.reshape(x.shape[0], -1))  # [B, L, C] -> [B, L * C] -> [B, H]


def _sine_splits(noise: float = 0.05, input_size: int = 40, horizon: int = 10):
    values = sine_series(1500, period=20.0, noise=noise) + 5.0
    return split_by_time(make_windows(values, input_size, horizon), val=0.15, test=0.2)


def test_train_sine_linear_model_beats_naive_baseline() -> None:
    tr, va, te = _sine_splits()
    model = Linear(40, 10)
    cfg = TrainConfig(max_steps=400, batch_size=64, lr=1e-2, val_check_every=50, **FAST)
    result = train(model, tr, va, cfg)
    report = evaluate(result.model, te)
    table = report.table()
    assert table.loc["model", "skill"] > 0.5
    assert table.loc["model", "mae"] < 0.5 * table.loc["naive", "mae"]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_train_best_weights_restored_val_loss_matches_best() -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(
        max_steps=120,
        batch_size=64,
        lr=5e-2,
        scheduler="none",
        patience=None,
        val_check_every=10,
        **FAST,
    )
    result = train(Linear(40, 10), tr, va, cfg)
    assert result.best_step < result.history[-1]["step"]  # the last weights are not the best
    best = min(h["val_loss"] for h in result.history)
    assert result.best_val_loss == best
    assert result.best_step == next(h["step"] for h in result.history if h["val_loss"] == best)
    with torch.inference_mode():
        pred = result.model(torch.from_numpy(np.array(va.x)))
    val_mae = (pred - torch.from_numpy(np.array(va.y))).abs().mean().item()
    assert val_mae == pytest.approx(best, rel=1e-5)


def test_train_zero_lr_stops_early_after_patience_checks() -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(max_steps=1000, lr=0.0, patience=2, val_check_every=10, **FAST)
    result = train(Linear(40, 10), tr, va, cfg)
    assert result.stopped_early
    assert [h["step"] for h in result.history] == [10, 20, 30]  # best at 10, then 2 bad checks
    assert result.best_step == 10


def test_train_same_seed_gives_identical_weights() -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(max_steps=60, batch_size=32, lr=1e-2, val_check_every=20, seed=7, **FAST)
    weights = []
    for other_seed in (0, 123):  # the model init is the same; the global RNG differs between runs
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.Dropout(0.2), nn.Linear(16, 10))
        torch.manual_seed(other_seed)
        train(model, tr, va, cfg)
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(40, 16), nn.Dropout(0.2), nn.Linear(16, 10))
    train(model, tr, va, cfg.model_copy(update={"seed": 8}))
    assert not torch.equal(model.state_dict()["1.weight"], weights[0]["1.weight"])


def test_train_does_not_disturb_the_callers_rng() -> None:
    tr, va, _ = _sine_splits()
    model = Linear(40, 10)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    train(model, tr, va, TrainConfig(max_steps=5, **FAST))
    assert torch.equal(torch.rand(3), expected)


def test_train_grad_clip_bounds_the_norm_at_every_step() -> None:
    tr, va, _ = _sine_splits()
    clip = 0.05
    model = Linear(40, 10)
    seen: list[float] = []

    def before_step(optimizer, args, kwargs):  # independent of the trainer's own bookkeeping
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.nn.utils.get_total_norm(grads)))

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        cfg = TrainConfig(max_steps=30, lr=1e-2, grad_clip=clip, val_check_every=10, **FAST)
        result = train(model, tr, va, cfg)
    finally:
        handle.remove()
    assert len(seen) == 30
    assert max(seen) <= clip + 1e-6
    assert all(h["grad_norm"] > clip for h in result.history)  # clipping did happen
    assert all(h["clipped_grad_norm"] <= clip + 1e-6 for h in result.history)


def test_train_config_unknown_field_raises_with_hint() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown TrainConfig field 'max_step' \(did you mean 'max_steps'\?\)"
    ):
        TrainConfig(max_step=10)


def test_train_config_bad_value_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="scheduler"):
        TrainConfig(scheduler="linear")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_train_config_misspelt_loss_raises_with_hint() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'sharp' \(did you mean 'sharpe'\?\)"):
        TrainConfig(loss="sharp")
    with pytest.raises(ConfigError, match="no parameter 'delt'"):
        TrainConfig(loss="huber", loss_params={"delt": 0.5})


def test_train_config_is_frozen() -> None:
    cfg = TrainConfig()
    with pytest.raises(Exception, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]


def test_train_identity_scaler_same_weights_as_no_scaler() -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(max_steps=20, lr=1e-2, val_check_every=10, **FAST)
    torch.manual_seed(0)
    a = train(Linear(40, 10), tr, va, cfg).model
    torch.manual_seed(0)
    scaler = IdentityScaler().fit(np.asarray(tr.x[:, :, 0]).reshape(-1))
    b = train(Linear(40, 10), tr, va, cfg, scaler=scaler).model
    assert torch.equal(a.proj.weight, b.proj.weight)


def test_train_standard_scaler_loss_in_scaled_space() -> None:
    tr, va, _ = _sine_splits()
    scaler = StandardScaler().fit(np.asarray(tr.x[:, :, 0]).reshape(-1))
    cfg = TrainConfig(max_steps=5, lr=0.0, val_check_every=5, **FAST)
    model = Linear(40, 10)
    result = train(model, tr, va, cfg, scaler=scaler)
    with torch.inference_mode():
        xs = scaler.transform(torch.from_numpy(np.array(va.x)))
        expected = model(xs) - scaler.transform_target(torch.from_numpy(np.array(va.y)))
    assert result.history[-1]["val_loss"] == pytest.approx(expected.abs().mean().item(), rel=1e-5)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle", "step", "none"])
def test_train_scheduler_lr_follows_schedule(scheduler: str) -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(
        max_steps=40,
        lr=0.1,
        scheduler=scheduler,
        warmup_steps=4,
        val_check_every=1,
        patience=None,
        **FAST,
    )
    lrs = [h["lr"] for h in train(Linear(40, 10), tr, va, cfg).history]
    assert lrs[0] <= 0.1 and max(lrs) == pytest.approx(0.1, rel=1e-6)
    if scheduler == "none":
        assert lrs[0] == pytest.approx(0.025) and lrs[-1] == pytest.approx(0.1)
    elif scheduler == "step":
        assert lrs[-1] == pytest.approx(0.1 / 8)
    else:
        assert lrs[-1] < 0.01


def test_train_sharpe_loss_learns_a_profitable_sign() -> None:
    tr, va, _ = _sine_splits(noise=0.0, horizon=1)
    cfg = TrainConfig(
        max_steps=200,
        batch_size=128,
        lr=1e-2,
        loss="sharpe",
        loss_params={"k": 1.0},
        val_check_every=50,
        **FAST,
    )
    result = train(Linear(40, 1), tr, va, cfg)
    assert result.best_val_loss is not None and result.best_val_loss < -1.0


def test_train_classification_model_with_mae_raises() -> None:
    model = Linear(40, 10)
    model.task = "classification"  # type: ignore[misc]
    tr, va, _ = _sine_splits()
    with pytest.raises(ConfigError, match="use loss='bce'"):
        train(model, tr, va, TrainConfig(loss="mae", **FAST))


def test_resolve_precision_cpu_rules() -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA only"):
        resolve_precision("fp16", cpu, Linear(4, 2), 8)
    assert resolve_precision("auto", cpu, Linear(4, 2), 8) == "fp32"  # tiny: bf16 would be slower
    assert resolve_precision("bf16", cpu, Linear(4, 2), 8) == "bf16"


def test_train_bf16_on_cpu_runs_and_reports_precision() -> None:
    tr, va, _ = _sine_splits()
    cfg = TrainConfig(max_steps=10, precision="bf16", progress=False, device="cpu")
    result = train(Linear(40, 10), tr, va, cfg)
    assert result.precision == "bf16" and np.isfinite(result.best_val_loss)


def test_train_reservoir_fits_in_closed_form() -> None:
    from celeris.models.catalogue import build_model, get_model

    tr, va, _ = _sine_splits(noise=0.0)
    model = build_model("reservoir", **get_model("reservoir").tiny_config(40, 10, 1))
    result = train(model, tr, va, TrainConfig(**FAST))
    assert len(result.history) == 1 and result.history[0]["step"] == 0
    assert result.best_val_loss is not None and result.best_val_loss < 0.1


def test_train_checkpoint_dir_round_trips(tmp_path) -> None:
    from celeris.models.catalogue import build_model, get_model
    from celeris.models.checkpoint import load_checkpoint

    tr, va, _ = _sine_splits()
    scaler = StandardScaler().fit(np.asarray(tr.x[:, :, 0]).reshape(-1))
    model = build_model("nhits", **get_model("nhits").tiny_config(40, 10, 1))
    cfg = TrainConfig(max_steps=10, val_check_every=5, **FAST)
    result = train(model, tr, va, cfg, scaler=scaler, checkpoint_dir=tmp_path / "ckpt")
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.meta["best_step"] == result.best_step
    assert loaded.meta["train"]["max_steps"] == 10
    x = scaler.transform(torch.from_numpy(np.array(va.x[:16])))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), result.model(x))
