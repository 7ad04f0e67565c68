"""Request bodies for a Celeris model: random-walk histories in JSON or msgpack, stamped or fixed."""

from __future__ import annotations

from typing import Any

import numpy as np

from celeris.bench.config import LoadgenError
from celeris.bench.loopback import check_loopback
from celeris.bench.targets import Stamps, Target
from celeris.checks import check_int
from celeris.errors import ConfigError


def model_shape(base_url: str, model: str, *, timeout_s: float = 10.0) -> tuple[int, int]:
    """Ask a Celeris server (``GET /v1/models``) for ``model``'s ``(input_size, n_features)``."""
    import json
    import urllib.error
    import urllib.request

    host, port, _ = check_loopback(base_url)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            doc = json.loads(answer.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the model list from {url} ({getattr(exc, 'reason', exc)}); give "
            "--input-size and --n-features, or --body-file"
        ) from None
    names = []
    for entry in doc.get("models", []):
        names.append(str(entry.get("name")))
        if entry.get("name") == model:
            return int(entry["input_size"]), int(entry["n_features"])
    from celeris.errors import did_you_mean

    raise ConfigError(
        f"{url} does not serve a model named {model!r}{did_you_mean(model, names)}; "
        f"served: {', '.join(names) or 'none'}"
    )


def _random_walks(
    input_size: int, n_features: int, rows: int, distinct: int, fmt: str, seed: int | None
) -> list[np.ndarray]:
    """Return ``distinct`` arrays ``[rows, input_size, n_features]`` of random walks near 100."""
    input_size, n_features, rows, distinct = (
        check_int(name, value, minimum=1, maximum=top)
        for name, value, top in (
            ("input_size", input_size, 1_000_000),
            ("n_features", n_features, 100_000),
            ("rows", rows, 100_000),
            ("distinct", distinct, 100_000),
        )
    )
    if fmt not in ("json", "msgpack"):
        raise ConfigError(f"fmt must be 'json' or 'msgpack', got {fmt!r}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(distinct):
        steps = rng.standard_normal((rows, input_size, n_features)) * 0.5
        out.append(np.round(100.0 + steps.cumsum(axis=1), 4))  # [rows, L, C]
    return out


def predict_bodies(
    input_size: int,
    n_features: int,
    *,
    rows: int = 1,
    distinct: int = 1,
    fmt: str = "json",
    priority: str | None = None,
    seed: int | None = 0,
) -> tuple[tuple[bytes, ...], str]:
    """Return ``(bodies, content_type)`` of ``POST /v1/models/{name}/predict`` requests.

    Each body holds ``rows`` random-walk histories ``[rows, input_size, n_features]`` around 100
    (4 decimals in JSON); ``fmt="msgpack"`` sends them as a binary float32 array, which the
    server reads without parsing numbers. ``distinct`` different bodies are made: a server with
    a response cache answers a repeated one from the cache (see :func:`predict_target` for
    bodies that never repeat).
    """
    bodies = []
    for x in _random_walks(input_size, n_features, rows, distinct, fmt, seed):
        doc: dict[str, Any]
        if fmt == "json":
            import orjson

            doc = {"inputs": x}
            if priority is not None:
                doc["priority"] = priority
            bodies.append(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
        else:
            import msgpack

            arr = x.astype("<f4")
            doc = {"inputs": {"shape": list(arr.shape), "dtype": "<f4", "data": arr.tobytes()}}
            if priority is not None:
                doc["priority"] = priority
            bodies.append(msgpack.packb(doc))
    content_type = "application/json" if fmt == "json" else "application/msgpack"
    return tuple(bodies), content_type


# Sites per history: 100**5 (JSON) or 256**5 (msgpack) stamps, far above MAX_REQUESTS.
STAMP_SITES = 5
# JSON stamps change the 3rd-4th decimals, which float32 (what the server computes in) tells
# apart only below 2**10; sites are chosen among values under this magnitude.
_JSON_STAMP_MAX = 1000.0


def _stamped_json(x: np.ndarray, priority: str | None) -> tuple[bytes, tuple[tuple[int, ...], ...]]:
    """Return a JSON predict body of ``x [rows, L, C]`` (4 decimals) and its stamp sites."""
    rows, length, width = x.shape
    parts: list[str] = ['{"inputs":[']
    pos = len(parts[0])
    offsets = []
    for r in range(rows):
        flat = x[r].ravel()
        small = np.flatnonzero(np.abs(flat) < _JSON_STAMP_MAX)[::-1][:STAMP_SITES]
        if small.size == 0:
            raise ConfigError("cannot stamp a history whose values are all 1000 or more")
        chosen = set(small.tolist())
        row_sites = []
        head = ("," if r else "") + "["
        parts.append(head)
        pos += len(head)
        for i in range(length):
            bar = ("," if i else "") + "["
            parts.append(bar)
            pos += len(bar)
            for j in range(width):
                if j:
                    parts.append(",")
                    pos += 1
                text = f"{flat[i * width + j]:.4f}"
                if i * width + j in chosen:
                    row_sites.append((i * width + j, pos + len(text) - 2))
                parts.append(text)
                pos += len(text)
            parts.append("]")
            pos += 1
        parts.append("]")
        pos += 1
        # least significant digit on the newest value
        offsets.append(tuple(o for _, o in sorted(row_sites, reverse=True)))
    parts.append("]")
    if priority is not None:
        parts.append(f',"priority":"{priority}"')
    parts.append("}")
    return "".join(parts).encode(), tuple(offsets)


def _stamped_msgpack(
    x: np.ndarray, priority: str | None
) -> tuple[bytes, tuple[tuple[int, ...], ...]]:
    """Return a msgpack predict body of ``x [rows, L, C]`` (float32) and its stamp sites."""
    import msgpack

    arr = np.ascontiguousarray(x.astype("<f4"))
    data = arr.tobytes()
    doc: dict[str, Any] = {} if priority is None else {"priority": priority}
    # the binary array last, so its bytes end the message
    doc["inputs"] = {"shape": list(arr.shape), "dtype": "<f4", "data": data}
    body = msgpack.packb(doc)
    start = len(body) - len(data)
    if body[start:] != data:  # pragma: no cover - msgpack keeps insertion order
        raise LoadgenError("the float32 array does not end the msgpack body")
    rows, length, width = arr.shape
    per_row = length * width
    offsets = tuple(
        tuple(
            start + 4 * (r * per_row + j)  # little-endian: the first byte is the lowest
            for j in range(per_row - 1, max(per_row - 1 - STAMP_SITES, -1), -1)
        )
        for r in range(rows)
    )
    return body, offsets


def predict_target(
    url: str,
    input_size: int,
    n_features: int,
    *,
    rows: int = 1,
    distinct: int | None = None,
    fmt: str = "json",
    priority: str | None = None,
    seed: int | None = None,
    label: str = "",
    metrics_url: str | None = None,
) -> Target:
    """Return a :class:`Target` of ``POST /v1/models/{name}/predict`` requests.

    By default (``distinct=None``) every request is unique: one random-walk body whose
    histories carry a request counter in their last values (:class:`Stamps`), so a server's
    response cache never answers and the run measures computation. ``distinct=N`` cycles
    through ``N`` fixed bodies instead (a server with a cache then answers all but the first
    ``N`` from it: that measures the cache). ``seed=None`` draws fresh bodies, so a second run
    against the same server does not meet the first run's answers in its cache.
    """
    if distinct is not None:
        bodies, ctype = predict_bodies(
            input_size, n_features, rows=rows, distinct=distinct, fmt=fmt,
            priority=priority, seed=seed,
        )  # fmt: skip
        return Target(url, bodies, ctype, label, metrics_url=metrics_url)
    x = _random_walks(input_size, n_features, rows, 1, fmt, seed)[0]
    body, offsets = (_stamped_json if fmt == "json" else _stamped_msgpack)(x, priority)
    ctype = "application/json" if fmt == "json" else "application/msgpack"
    stamps = Stamps((offsets,), 100 if fmt == "json" else 256)
    return Target(url, (body,), ctype, label, stamps=stamps, metrics_url=metrics_url)
