"""Turning Celeris values into JSON: one home for the conversion rules.

- :func:`to_jsonable` makes a JSON-safe copy of a value, recursively: numpy scalars and arrays
  become Python numbers and lists, NaN (and, by default, infinity) becomes ``null``, dates and
  times become ISO strings, mapping keys become strings, tuples and sets become lists, anything
  else its ``str``. The audit log and the CLI's ``--json`` output use it.
- :func:`json_default` is the ``default=`` callback for an encoder (``json.dumps``, orjson,
  msgpack): the encoder serialises what it knows natively at full speed and calls this only for
  the rest, so the HTTP layer adds no work per response for plain numbers and lists.
- :func:`to_python` turns one numpy scalar into its Python equivalent (labels, keys).

A leaf module: numpy only, nothing from Celeris.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = ["json_default", "to_jsonable", "to_python"]


def to_python(value: Any) -> Any:
    """Return a numpy scalar as the Python scalar it holds; anything else unchanged.

    Examples
    --------
    >>> to_python(np.int64(3)), to_python(np.float32(0.5)), to_python("x")
    (3, 0.5, 'x')
    """
    return value.item() if isinstance(value, np.generic) else value


def _is_nat(value: Any) -> bool:
    # pandas' NaT (its own type) and numpy's NaT are the date/time values unequal to themselves.
    return (type(value).__name__ == "NaTType") or (
        isinstance(value, np.datetime64 | np.timedelta64) and np.isnat(value)
    )


def to_jsonable(
    value: Any,
    *,
    times: Literal["iso", "str"] = "iso",
    inf: Literal["null", "keep"] = "null",
) -> Any:
    """Return a JSON-safe copy of ``value`` (see the module docstring for the rules).

    Parameters
    ----------
    value
        Any value: mappings, sequences, numpy and pandas scalars and arrays, dates, paths.
    times
        ``"iso"``: a date, time, timestamp or duration as its ``isoformat()``
        (``"2024-01-02T00:00:00+00:00"``); ``"str"``: as its ``str`` (``"2024-01-02
        00:00:00+00:00"``, ``"2 days 04:00:00"``), the CLI's ``--json`` form. NaT is ``null``.
    inf
        ``"null"``: infinity becomes ``null`` like NaN (strict JSON); ``"keep"``: infinity stays
        a float (``json.dumps`` writes ``Infinity``), the CLI's historical output.

    Examples
    --------
    >>> to_jsonable({"sharpe": np.float64("nan"), 1: (np.int64(2), float("inf"))})
    {'sharpe': None, '1': [2, None]}
    >>> import datetime
    >>> to_jsonable([datetime.date(2024, 1, 2), np.array([0.5, np.nan])])
    ['2024-01-02', [0.5, None]]
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, times=times, inf=inf) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v, times=times, inf=inf) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), times=times, inf=inf)
    if _is_nat(value):
        return None
    value = to_python(value)
    if isinstance(value, float):
        if math.isnan(value) or (math.isinf(value) and inf == "null"):
            return None
        return value
    if isinstance(value, str | int | bool) or value is None:
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat() if times == "iso" else str(value)
    return str(value)


def json_default(obj: Any) -> Any:
    """``default=`` callback of a JSON or msgpack encoder, for what it cannot encode natively.

    An object with ``to_dict()`` is encoded as that dict; numpy arrays and scalars as lists and
    Python numbers (for encoders without numpy support, such as msgpack); sets and tuples as
    lists; anything else (paths, datetimes) as its ``str``.

    Examples
    --------
    >>> import json, pathlib
    >>> json.dumps({"path": pathlib.Path("a/b"), "tags": {"x"}, "n": np.int64(3)}, default=json_default)
    '{"path": "a/b", "tags": ["x"], "n": 3}'
    """
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return str(obj)
