"""The checkpoint's ``config.json`` and ``exports.json``: format constants and checked readers
that need no torch.

Serving an exported (ONNX) model reads only these files and the ONNX graph, so a server never has
to import torch (most of a cold start).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from celeris.errors import DataError

FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a checkpoint's ``config.json`` document, checked (no torch needed).

    Raises
    ------
    DataError
        No such directory, a missing or corrupt ``config.json``, or an unsupported format.
    """
    path = Path(directory)
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise DataError(f"no checkpoint at {path}: not a directory")
    if not config_path.is_file():
        raise DataError(f"{path} is not a complete checkpoint: {CONFIG_FILE} is missing")
    try:
        document = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupt {config_path}: {exc}") from None
    if not isinstance(document, dict):
        raise DataError(f"corrupt {config_path}: expected a JSON object")
    if document.get("format") != FORMAT:
        raise DataError(
            f"{config_path}: unsupported checkpoint format {document.get('format')!r} (expected {FORMAT})"
        )
    for key, kind in (("model", str), ("config", dict), ("meta", dict)):
        if not isinstance(document.get(key), kind):
            raise DataError(f"corrupt {config_path}: {key!r} missing or not a {kind.__name__}")
    return document


EXPORTS_FILE = "exports.json"
EXPORTS_FORMAT = 1


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_exports(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return a checkpoint's export verification record (``exports.json``), or None if it has
    none (a checkpoint trained with ``--no-export`` or before exports were recorded).

    The record is written by :func:`celeris.models.export.export_checkpoint`::

        {"format": 1, "weights_sha256": HEX, "onnxruntime_version": "...", "exports": {
            "onnx": {"file": "model.onnx", "sha256": HEX, "verified": true,
                     "max_abs_error": ..., "max_rel_error": ..., "tolerance": ...,
                     "checked_on": "512 held-out windows"}, ...}}

    ``weights_sha256`` names the weights the exports were checked against; the errors are in
    model space, relative to the output's scale (max |eager output| over the check windows).

    Raises
    ------
    DataError
        A corrupt record (not JSON, not an object, an unknown format or a malformed entry).
    """
    path = Path(directory) / EXPORTS_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"corrupt {path}: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != EXPORTS_FORMAT:
        raise DataError(f"corrupt {path}: expected an object with format {EXPORTS_FORMAT}")
    exports = record.get("exports")
    if not isinstance(exports, dict) or not all(isinstance(e, dict) for e in exports.values()):
        raise DataError(f"corrupt {path}: 'exports' must map a backend to its record")
    return record


def write_exports(directory: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Write ``record`` as the checkpoint's ``exports.json`` (:mod:`celeris.data.atomic`)."""
    from celeris.data.atomic import atomic_write_text, sweep_temp_files  # pandas: only to write

    path = Path(directory) / EXPORTS_FILE
    sweep_temp_files(path)
    atomic_write_text(path, json.dumps(record, indent=2, allow_nan=False) + "\n")
    return path
