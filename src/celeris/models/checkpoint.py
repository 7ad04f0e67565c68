"""Model checkpoints: safetensors weights plus a JSON config that rebuilds the model.

A checkpoint is a directory holding

* ``model.safetensors`` — the model's ``state_dict`` (``safetensors.torch.save_file``);
* ``config.json`` — ``{"format": 1, "model": NAME, "config": {...}, "scaler": {...} | null,
  "meta": {...}, "weights_sha256": HEX}``: the registry name and constructor arguments
  (``build_model(NAME, **config)`` rebuilds the model), the scaler state, and free metadata
  (input size, horizon, features, target, data source, metrics, creation time, versions).

``celeris train`` also writes the ONNX exports and their verification record
(``exports.json``, see :func:`celeris.models.checkpoint_file.read_exports`) that
:meth:`celeris.models.predictor.Predictor.load` chooses its default backend from.

It is written atomically: both files go to a temporary sibling directory that is then renamed
into place, so a reader sees the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from celeris.errors import ConfigError, DataError
from celeris.models.catalogue import ForecastModel, build_model
from celeris.models.data import Scaler, WindowScaler, scaler_from_state

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "LoadedCheckpoint",
    "load_checkpoint",
    "save_checkpoint",
]

from celeris.models.checkpoint_file import (
    CONFIG_FILE,
    FORMAT,
    WEIGHTS_FILE,
    read_config,
    sha256_file,
)


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read back: the model (in eval mode), its scaler, metadata and config."""

    model: ForecastModel
    scaler: Scaler | WindowScaler | None
    meta: dict[str, Any]
    config: dict[str, Any]
    path: Path


def _sha256(path: Path) -> str:
    return sha256_file(path)


def _default_meta(model: ForecastModel) -> dict[str, Any]:
    import celeris

    meta: dict[str, Any] = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "celeris_version": celeris.__version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    for key in ("input_size", "horizon", "n_features"):
        if hasattr(model, key):
            meta[key] = int(getattr(model, key))
    return meta


def save_checkpoint(
    model: ForecastModel,
    directory: str | os.PathLike[str],
    *,
    scaler: Scaler | WindowScaler | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (and its scaler and metadata) as a checkpoint directory; return its path.

    ``meta`` is merged over the defaults (creation time, Celeris and torch versions, the model's
    ``input_size``/``horizon``/``n_features``); put the features, target, data source and
    metrics there. An existing checkpoint at ``directory`` is replaced atomically; an existing
    directory that is not a checkpoint is refused (:class:`ConfigError`).
    """
    if not isinstance(model, ForecastModel) or not model.name:
        raise ConfigError(
            f"cannot checkpoint {type(model).__name__}: not a registered ForecastModel"
        )
    target = Path(directory)
    if target.exists() and (
        not target.is_dir() or (any(target.iterdir()) and not (target / CONFIG_FILE).exists())
    ):
        raise ConfigError(
            f"{target} exists and is not a checkpoint directory; refusing to replace it"
        )
    document: dict[str, Any] = {
        "format": FORMAT,
        "model": model.name,
        "config": model.config(),
        "scaler": None if scaler is None else scaler.state(),
        "meta": {**_default_meta(model), **(meta or {})},
    }
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"checkpoint config/scaler/meta is not JSON-serialisable: {exc}"
        ) from None

    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # contiguous copies on CPU: safetensors refuses views and tensors sharing storage
        state = {
            k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
        }
        save_file(
            state, str(tmp / WEIGHTS_FILE), metadata={"format": str(FORMAT), "model": model.name}
        )
        document["weights_sha256"] = _sha256(tmp / WEIGHTS_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_checkpoint(
    directory: str | os.PathLike[str], *, map_location: str = "cpu"
) -> LoadedCheckpoint:
    """Read a checkpoint written by :func:`save_checkpoint`: rebuild the model, load weights.

    The model is rebuilt from ``config.json`` through the registry and its weights loaded
    strictly (every tensor present, same shapes), then put in eval mode on ``map_location``.

    Raises
    ------
    DataError
        A missing or corrupt file, a checksum mismatch, or weights that do not fit the model.
    ConfigError
        A model name the registry does not know, or a config the model rejects.
    """
    path = Path(directory)
    weights_path = path / WEIGHTS_FILE
    document = read_config(path)
    if not weights_path.is_file():
        raise DataError(f"{path} is not a complete checkpoint: {weights_path.name} is missing")
    expected = document.get("weights_sha256")
    if expected is not None and _sha256(weights_path) != expected:
        raise DataError(
            f"{weights_path} does not match the checksum in {CONFIG_FILE} (corrupt or replaced)"
        )

    model = build_model(document["model"], **document["config"])
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"corrupt {weights_path}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"{weights_path} does not fit model {document['model']!r}: {exc}") from None
    model.to(map_location).eval()
    scaler = None if document.get("scaler") is None else scaler_from_state(document["scaler"])
    return LoadedCheckpoint(
        model=model, scaler=scaler, meta=document["meta"], config=document["config"], path=path
    )
