"""The checkpoint's ``config.json``: format constants and a checked reader that needs no torch.

Serving an exported (ONNX) model reads only this file and the ONNX graph, so a server never has
to import torch (most of a cold start).
"""

from __future__ import annotations

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
