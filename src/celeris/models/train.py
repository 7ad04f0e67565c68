"""The training loop: AdamW, a learning-rate schedule, early stopping, clipping, mixed precision.

:func:`train` fits a model on training :class:`~celeris.models.data.Windows`, checks a
validation split every ``val_check_every`` steps, keeps the weights with the lowest validation
loss, and restores them before returning. Closed-form models (``trainable = False``, the
echo-state reservoir) are fitted once with ``model.fit(x, y)`` instead.

Scaled space: when a ``scaler`` is passed, windows are given in original units and every batch
is scaled on the fly (inputs with ``transform``, targets with the target channel's statistics,
or by each window's own statistics for a :class:`~celeris.models.data.WindowScaler`), so the
loss is computed in scaled space, as NeuralForecast does. Without a scaler the windows are fed
as they are. Fit a global scaler on the training split only
(``scaler.fit(training_bars(train))``) before calling :func:`train`.

Precision on the CPU, measured on this project's development machine (AMD EPYC with
AVX512-BF16, 2 threads, torch 2.13; forward + backward + AdamW step inside :func:`train`):
bf16 autocast was 1.4-1.8x faster for NHITS with its default sizes (input 120, horizon 24:
batch 1,024 129 -> 76 ms/step, batch 256 56 -> 40 ms/step; a 200-step run with validation on
an integrated AR(2) series 43 -> 24 ms/step, at the same accuracy: test MAE 0.417 fp32, 0.409
bf16); 1.2-1.5x faster for MLPs of 50k-600k parameters at batch 64-1,024; equal for the default
CNN+LSTM at batch 64; and 2-4x *slower* for tiny models (under ~5e6 parameter-samples per
batch), where casts outweigh the matmuls. Hence ``precision="auto"`` on the CPU picks bf16
only when the CPU has native bf16 (oneDNN reports AVX512-BF16 or AMX) and
``parameters x batch_size >= 1e7``, fp32 otherwise. The choice depends only on the machine and
the configuration, so a rerun picks the same precision. Pass ``precision="fp32"`` for
bit-for-bit results across machines.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from torch import nn

from celeris.compute.device import resolve_torch_device
from celeris.errors import CelerisError, ConfigError, DataError, did_you_mean
from celeris.models.data import Scaler, Windows, WindowScaler
from celeris.models.losses import Loss, get_loss
from celeris.progress import progress_bar

__all__ = ["TrainConfig", "TrainResult", "resolve_precision", "resolve_torch_device", "train"]

BF16_CPU_MIN_WORK = 1e7
"""Parameters x batch size from which ``precision="auto"`` uses bf16 on a bf16-capable CPU."""

_EVAL_CHUNK = 4096  # windows per forward pass when computing a validation loss


class TrainConfig(pydantic.BaseModel):
    """Training options (frozen; an unknown field raises :class:`ConfigError` with a hint).

    Attributes
    ----------
    max_steps : int
        Optimiser steps (mini-batches) at most.
    batch_size : int
        Windows per mini-batch (capped at the number of training windows).
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay (0 makes AdamW the same as Adam, which
        NeuralForecast uses).
    scheduler : {"cosine", "onecycle", "step", "none"}
        Learning-rate schedule over ``max_steps`` after ``warmup_steps`` of linear warm-up:
        ``cosine`` decays to 0; ``onecycle`` is torch's ``OneCycleLR`` shape (cosine up from
        ``lr / 25`` over ``warmup_steps``, or 30% of the steps when 0, then cosine down to
        ``lr / 25e4``; betas are not cycled); ``step`` halves the rate 3 times, every
        ``max_steps // 3`` steps (NeuralForecast's default); ``none`` keeps it constant.
    warmup_steps : int
        Steps of linear warm-up from ``lr / warmup_steps`` (ignored by ``onecycle``, which
        warms up its own way).
    patience : int or None
        Stop after this many validation checks in a row without an improvement of more than
        ``min_delta``; None trains ``max_steps`` (the best weights are still restored).
    val_check_every : int
        Steps between validation checks (and history entries).
    min_delta : float
        Smallest decrease of the validation loss that counts as an improvement.
    grad_clip : float or None
        Clip the global gradient norm to this value (None: no clipping).
    seed : int
        Seeds the mini-batch sampler and torch's RNG (dropout) for the run; the caller's global
        RNG state is restored afterwards.
    loss : str
        ``mae``, ``mse``, ``huber``, ``sharpe``, ``bce``, or ``auto`` (``mae`` for regression
        models, ``bce`` for direction classifiers).
    loss_params : dict
        Keyword arguments of the loss (``{"delta": 0.5}`` for Huber; ``k``, ``cost``,
        ``target``, ``position`` for Sharpe; see :mod:`celeris.models.losses`).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype. ``auto``: bf16 on a CUDA GPU that supports it (else fp16 with a gradient
        scaler); on the CPU bf16 only where it measurably helps (see the module docstring),
        else fp32. ``fp16`` is CUDA-only.
    progress : bool
        Show a rich progress bar when stderr is a terminal.
    device : {"auto", "cpu", "cuda"}
        ``auto`` uses CUDA when torch sees a GPU and falls back quietly to the CPU.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    max_steps: int = pydantic.Field(1000, ge=1)
    batch_size: int = pydantic.Field(256, ge=1)
    lr: float = pydantic.Field(1e-3, ge=0.0)
    weight_decay: float = pydantic.Field(0.0, ge=0.0)
    scheduler: Literal["cosine", "onecycle", "step", "none"] = "cosine"
    warmup_steps: int = pydantic.Field(0, ge=0)
    patience: int | None = pydantic.Field(10, ge=1)
    val_check_every: int = pydantic.Field(100, ge=1)
    min_delta: float = pydantic.Field(0.0, ge=0.0)
    grad_clip: float | None = pydantic.Field(1.0, gt=0.0)
    seed: int = 0
    loss: str = "auto"
    loss_params: dict[str, float | str] = pydantic.Field(default_factory=dict)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    progress: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @pydantic.model_validator(mode="after")
    def _check_loss(self) -> TrainConfig:
        if self.loss != "auto" or self.loss_params:
            # Unknown loss names and parameters fail here, with a hint, not at the first step.
            get_loss("mae" if self.loss == "auto" else self.loss, **self.loss_params)
        return self

    def __init__(self, **data: Any) -> None:
        fields = list(type(self).model_fields)
        for key in data:
            if key not in fields:
                raise ConfigError(
                    f"unknown TrainConfig field {key!r}{did_you_mean(key, fields)}; "
                    f"fields are {', '.join(fields)}"
                )
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(_describe(e) for e in exc.errors())
            raise ConfigError(f"invalid TrainConfig: {problems}") from None


def _describe(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across fields (the loss and its parameters)
        return message
    return f"{'.'.join(map(str, error['loc']))}: {message} (got {error.get('input')!r})"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : nn.Module
        The trained model (the same object that was passed), with the weights of the best
        validation check restored, in eval mode.
    history : list of dict
        One entry per validation check: ``step``, ``train_loss`` (mean over the steps since the
        previous check), ``val_loss`` (None without a validation split), ``lr`` (of the last
        step), ``grad_norm`` (largest global gradient norm before clipping since the previous
        check) and ``clipped_grad_norm`` (largest after clipping; None without clipping).
    best_step : int
        Step whose weights were restored (the last step without validation; 0 for a
        closed-form fit).
    best_val_loss : float or None
        Validation loss at ``best_step``.
    stopped_early : bool
        Whether early stopping ended training before ``max_steps``.
    seconds : float
        Wall time of the whole call (validation included).
    steps_per_second : float
        Optimiser steps per second of wall time (validation included; NaN for a closed-form fit).
    precision, device : str
        The precision and device that actually ran.
    checkpoint : Path or None
        Where the best model was saved, when ``checkpoint_dir`` was given.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    best_step: int
    best_val_loss: float | None
    stopped_early: bool
    seconds: float
    steps_per_second: float
    precision: str
    device: str
    checkpoint: Path | None = None


# --------------------------------------------------------------------------------------------
# Device and precision


def _cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API: absent means "do not assume"
        return False


def resolve_precision(
    precision: str, device: torch.device, model: nn.Module, batch_size: int
) -> Literal["fp32", "bf16", "fp16"]:
    """Return the precision that runs for ``precision`` on ``device`` (see :class:`TrainConfig`).

    Raises :class:`ConfigError` for fp16 on the CPU and bf16 on a GPU without bf16.
    """
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16_ok else "fp16"
        if precision == "bf16" and not bf16_ok:
            raise ConfigError("precision='bf16' is not supported by this GPU; use 'fp16'")
        return precision  # type: ignore[return-value]
    if precision == "fp16":
        raise ConfigError("precision='fp16' runs on CUDA only; use 'bf16' or 'fp32' on the CPU")
    if precision == "auto":
        work = sum(p.numel() for p in model.parameters()) * batch_size
        return "bf16" if _cpu_has_bf16() and work >= BF16_CPU_MIN_WORK else "fp32"
    return precision  # type: ignore[return-value]


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Batches in scaled space


def _tensor(a: np.ndarray, device: torch.device) -> torch.Tensor:
    # Windows.x is a read-only strided view; torch.from_numpy needs a writable array.
    if not (a.flags.writeable and a.flags.c_contiguous and a.dtype == np.float32):
        a = np.array(a, dtype=np.float32, order="C")
    return torch.from_numpy(a).to(device, non_blocking=True)


class _Batches:
    """Cuts windows into ``(x, y, last)`` tensors in scaled space on the training device."""

    def __init__(
        self, windows: Windows, scaler: Scaler | WindowScaler | None, device: torch.device
    ) -> None:
        self.windows, self.scaler, self.device = windows, scaler, device
        self.target = windows.target
        if scaler is not None and scaler.target != windows.target:
            raise ConfigError(
                f"the scaler's target channel ({scaler.target}) differs from the windows' "
                f"({windows.target})"
            )

    def get(self, index: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = _tensor(self.windows.x[index], self.device)  # [B, L, C]
        y = _tensor(self.windows.y[index], self.device)  # [B, H]
        if isinstance(self.scaler, WindowScaler):
            x, loc, scale = self.scaler.transform(x)  # loc, scale: [B, 1, C]
            y = (y - loc[:, :, self.target]) / scale[:, :, self.target]  # [B, H] vs [B, 1]
        elif self.scaler is not None:
            x = self.scaler.transform(x)
            y = self.scaler.transform_target(y)
        return x, y, x[:, -1, self.target]  # last input value of the target: [B]

    def chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.windows), _EVAL_CHUNK):
            yield self.get(slice(start, start + _EVAL_CHUNK))


class _Sampler:
    """Mini-batch indices from a seeded generator: shuffled epochs, or contiguous blocks.

    Random batches draw windows without replacement from a fresh permutation each epoch
    (dropping the last partial batch). A sequential loss gets a block of ``batch`` consecutive
    windows starting at a random position.
    """

    def __init__(self, n: int, batch: int, seed: int, sequential: bool) -> None:
        self.n, self.batch, self.sequential = n, min(batch, n), sequential
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = np.empty(0, dtype=np.int64)
        self.pos = 0

    def next(self) -> Any:
        if self.sequential:
            start = int(torch.randint(0, self.n - self.batch + 1, (1,), generator=self.gen))
            return slice(start, start + self.batch)
        if self.pos + self.batch > len(self.perm):
            self.perm = torch.randperm(self.n, generator=self.gen).numpy()
            self.pos = 0
        index = self.perm[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return index


# --------------------------------------------------------------------------------------------
# Schedules


def _lr_factor(config: TrainConfig) -> Any:
    total, warm = config.max_steps, config.warmup_steps

    def onecycle(step: int) -> float:
        # torch.optim.lr_scheduler.OneCycleLR, anneal_strategy="cos", div_factor=25,
        # final_div_factor=1e4, with the peak at warmup_steps (30% of the steps when 0).
        peak = warm if warm else max(1, round(0.3 * total))
        start, low = 1.0 / 25.0, 1.0 / 25.0 / 1e4
        if step < peak:
            frac = step / peak
            return 1.0 + (start - 1.0) / 2.0 * (math.cos(math.pi * frac) + 1.0)
        frac = min(1.0, (step - peak) / max(1, total - peak))
        return low + (1.0 - low) / 2.0 * (math.cos(math.pi * frac) + 1.0)

    def factor(step: int) -> float:
        if config.scheduler == "onecycle":
            return onecycle(step)
        if step < warm:
            return (step + 1) / warm
        if config.scheduler == "cosine":
            frac = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        if config.scheduler == "step":  # NeuralForecast: StepLR(max_steps // 3, gamma=0.5)
            return 0.5 ** (step // max(1, total // 3))
        return 1.0

    return factor


# --------------------------------------------------------------------------------------------
# The loop


def _resolve_loss(config: TrainConfig, model: nn.Module) -> Loss:
    task = getattr(model, "task", "regression")
    name = config.loss
    if name == "auto":
        name = "bce" if task == "classification" else "mae"
    loss = get_loss(name, **config.loss_params)
    if loss.task != task:
        raise ConfigError(
            f"loss {name!r} is for {loss.task} models but the model's task is {task!r}"
            + ("; use loss='bce'" if task == "classification" else "")
        )
    return loss


def _check_windows(name: str, windows: Windows) -> None:
    if len(windows) == 0:
        raise DataError(f"{name} has no windows")


def _dataset_loss(
    model: nn.Module, batches: _Batches, loss_fn: Loss, autocast: AbstractContextManager[Any]
) -> float:
    """Loss over all windows at once (the Sharpe loss needs the whole series, not chunks)."""
    model.eval()
    outs, ys, lasts = [], [], []
    with torch.inference_mode(), autocast:
        for x, y, last in batches.chunks():
            outs.append(model(x).float())
            ys.append(y)
            lasts.append(last)
    value = loss_fn(torch.cat(outs), torch.cat(ys), torch.cat(lasts))
    return float(value)


def _fit_closed_form(
    model: nn.Module,
    train_b: _Batches,
    val_b: _Batches | None,
    loss_fn: Loss,
) -> tuple[list[dict[str, Any]], float | None]:
    x, y, _ = train_b.get(slice(None))
    model.fit(x, y)  # type: ignore[operator]
    del x, y
    train_loss = _dataset_loss(model, train_b, loss_fn, nullcontext())
    val_loss = None if val_b is None else _dataset_loss(model, val_b, loss_fn, nullcontext())
    entry = {
        "step": 0,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "lr": None,
        "grad_norm": None,
        "clipped_grad_norm": None,
    }
    return [entry], val_loss


def _progress(enabled: bool, total: int) -> Any:
    bar = progress_bar(enabled, "training", fields=("losses",), elapsed=True, tty_only=True)
    if bar is not None:
        bar.add_task("train", total=total, losses="")
    return bar


def train(
    model: nn.Module,
    train: Windows,
    val: Windows | None = None,
    config: TrainConfig | None = None,
    *,
    scaler: Scaler | WindowScaler | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` windows, early-stopping on ``val``; restore the best weights.

    Parameters
    ----------
    model : nn.Module
        A :class:`~celeris.models.catalogue.ForecastModel` (or any module with the same contract:
        ``forward(x [B, L, C]) -> [B, H]``, optional ``task`` and ``trainable`` attributes).
        Trained in place and moved to the training device.
    train, val : Windows
        Training and validation windows (from :func:`~celeris.models.data.split_by_time`), in
        original units when ``scaler`` is given. Without ``val`` the model trains
        ``max_steps`` and keeps its final weights.
    config : TrainConfig, optional
        Training options (defaults: ``TrainConfig()``).
    scaler : Scaler or WindowScaler, optional
        A fitted scaler applied to every batch; the loss is computed in scaled space.
    checkpoint_dir : path, optional
        Write the best model (with ``scaler`` and training metadata) there with
        :func:`~celeris.models.checkpoint.save_checkpoint`.
    checkpoint_meta : dict, optional
        Extra metadata for the checkpoint (features, data source, ...).

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        A loss that does not fit the model's task, a precision the device cannot run.
    DataError
        Empty windows.
    CelerisError
        The training loss became NaN or infinite (lower ``lr`` or set ``grad_clip``).
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}")
    started = time.perf_counter()
    _check_windows("train", train)
    if val is not None:
        _check_windows("val", val)
    device = resolve_torch_device(config.device)
    loss_fn = _resolve_loss(config, model)
    trainable = bool(getattr(model, "trainable", True))
    precision = resolve_precision(
        config.precision, device, model, min(config.batch_size, len(train))
    )
    model.to(device)
    train_b = _Batches(train, scaler, device)
    val_b = None if val is None else _Batches(val, scaler, device)

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(config.seed)
        if not trainable:
            history, best_val = _fit_closed_form(model, train_b, val_b, loss_fn)
            best_step, stopped, steps = 0, False, 0
        else:
            history, best_step, best_val, stopped, steps = _loop(
                model, train_b, val_b, loss_fn, config, device, precision
            )
    model.eval()
    seconds = time.perf_counter() - started

    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = _save(
            model, checkpoint_dir, scaler, config, train, best_step, best_val, checkpoint_meta
        )
    return TrainResult(
        model=model,
        history=history,
        best_step=best_step,
        best_val_loss=best_val,
        stopped_early=stopped,
        seconds=seconds,
        steps_per_second=steps / seconds if steps else float("nan"),
        precision=precision if trainable else "fp32",
        device=str(device),
        checkpoint=checkpoint,
    )


def _loop(
    model: nn.Module,
    train_b: _Batches,
    val_b: _Batches | None,
    loss_fn: Loss,
    config: TrainConfig,
    device: torch.device,
    precision: str,
) -> tuple[list[dict[str, Any]], int, float | None, bool, int]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters (trainable=False models use fit)")
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
    grad_scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    sampler = _Sampler(len(train_b.windows), config.batch_size, config.seed, loss_fn.sequential)
    autocast = _autocast(device, precision)

    history: list[dict[str, Any]] = []
    best_val, best_step, best_state = math.inf, 0, None
    bad_checks, stopped = 0, False
    # Running sums stay on the device: one host sync per check, not per step.
    loss_sum = torch.zeros((), device=device)
    norm_max = torch.zeros((), device=device)
    clipped_max = torch.zeros((), device=device)
    since = 0
    bar = _progress(config.progress, config.max_steps)
    step = 0
    try:
        if bar is not None:
            bar.start()
        for step in range(1, config.max_steps + 1):
            model.train()
            x, y, last = train_b.get(sampler.next())
            with autocast:
                out = model(x)
            loss = loss_fn(out.float(), y, last)  # losses in fp32 whatever the autocast dtype
            optimizer.zero_grad(set_to_none=True)
            if grad_scaler is not None:
                grad_scaler.scale(loss).backward()
                grad_scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
            else:
                loss.backward()
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            if config.grad_clip is not None:
                torch.nn.utils.clip_grads_with_norm_(params, config.grad_clip, norm)
                clipped_max = torch.maximum(clipped_max, torch.nn.utils.get_total_norm(grads))
            if grad_scaler is not None:
                grad_scaler.step(optimizer)
                grad_scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            schedule.step()
            loss_sum += loss.detach()
            norm_max = torch.maximum(norm_max, norm.detach())
            since += 1
            if bar is not None:
                bar.advance(0)

            if step % config.val_check_every and step != config.max_steps:
                continue
            train_loss = float(loss_sum) / since
            if not math.isfinite(train_loss):
                raise CelerisError(
                    f"training diverged: the mean training loss is {train_loss} at step {step}; "
                    "lower lr, set grad_clip, or use precision='fp32'"
                )
            val_loss = None
            if val_b is not None:
                val_loss = _dataset_loss(model, val_b, loss_fn, autocast)
            history.append(
                {
                    "step": step,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "lr": lr,
                    "grad_norm": float(norm_max),
                    "clipped_grad_norm": None if config.grad_clip is None else float(clipped_max),
                }
            )
            loss_sum.zero_(), norm_max.zero_(), clipped_max.zero_()
            since = 0
            if bar is not None:
                shown = f"train {train_loss:.4g}" + (
                    "" if val_loss is None else f" val {val_loss:.4g}"
                )
                bar.update(0, losses=shown)
            if val_loss is None:
                continue
            if val_loss < best_val - config.min_delta:
                best_val, best_step, bad_checks = val_loss, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_checks += 1
                if config.patience is not None and bad_checks >= config.patience:
                    stopped = step < config.max_steps
                    break
    finally:
        if bar is not None:
            bar.stop()
    if best_state is not None:
        model.load_state_dict(best_state)
    if val_b is None:
        return history, step, None, False, step
    return history, best_step, best_val, stopped, step


def _save(
    model: nn.Module,
    directory: str | os.PathLike[str],
    scaler: Scaler | WindowScaler | None,
    config: TrainConfig,
    train: Windows,
    best_step: int,
    best_val: float | None,
    extra: dict[str, Any] | None,
) -> Path:
    try:
        from celeris.models.checkpoint import save_checkpoint
    except ImportError as exc:  # safetensors missing: the models extra is not installed
        raise ConfigError(f"checkpoint_dir needs celeris.models.checkpoint: {exc}") from None
    meta: dict[str, Any] = {
        "train": config.model_dump(mode="json"),
        "best_step": best_step,
        "best_val_loss": best_val,
        "target": train.target,
        "columns": None if train.columns is None else list(train.columns),
        **(extra or {}),
    }
    return save_checkpoint(model, directory, scaler=scaler, meta=meta)  # type: ignore[arg-type]
