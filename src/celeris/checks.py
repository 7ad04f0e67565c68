"""Checks for scalar arguments: one function per kind of value, one exception type per mistake.

Every public entry point that takes a count, a window, a rate or a switch checks it with these
functions, so the same mistake raises the same error everywhere:

- the wrong **type** — a ``bool`` (or ``numpy.bool_``) where a number is wanted, a ``float``
  where an ``int`` is wanted, a string, ``None`` — raises :class:`~celeris.errors.CelerisTypeError`
  (also a ``TypeError``);
- the right type with a bad **value** — out of range, NaN or infinite — raises
  :class:`~celeris.errors.ConfigError` (also a ``ValueError``).

numpy scalars count as their Python kind (``np.int64`` is an int, ``np.float32`` a real), and
every check returns the normalised Python value (``int``, ``float`` or ``bool``). Messages name the
parameter, the value and what is allowed: ``hidden_size must be an int >= 1, got float 2.5``
for a wrong type, ``hidden_size must be >= 1, got 0`` for a bad value.

This module is a leaf: it imports nothing from Celeris but :mod:`celeris.errors`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from celeris.errors import CelerisTypeError, ConfigError

__all__ = ["check_bool", "check_fraction", "check_int", "check_real", "describe_range"]


def describe_range(
    minimum: float | None,
    maximum: float | None,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> str:
    """Return the allowed range in words: ``">= 1"``, ``"< 5"``, ``"in [0, 1)"`` or ``""``."""
    if minimum is not None and maximum is not None:
        return f"in {'(' if open_low else '['}{minimum}, {maximum}{')' if open_high else ']'}"
    if minimum is not None:
        return f"{'>' if open_low else '>='} {minimum}"
    if maximum is not None:
        return f"{'<' if open_high else '<='} {maximum}"
    return ""


def _wanted(kind: str, allowed: str) -> str:
    return f"{kind} {allowed}" if allowed else kind


def _suffix(reason: str) -> str:
    return f" ({reason})" if reason else ""


def check_int(
    what: str,
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    reason: str = "",
) -> int:
    """Return ``value`` as a Python ``int`` within ``[minimum, maximum]`` (either bound optional).

    Parameters
    ----------
    what
        The parameter's name as the user wrote it (``"hidden_size"``, ``"windows[2]"``).
    value
        The value to check: an ``int`` or a numpy integer; ``bool`` is refused.
    minimum, maximum
        Inclusive bounds; ``None`` leaves that side open.
    reason
        Why the bound exists, appended to the message in parentheses.

    Raises
    ------
    CelerisTypeError
        ``value`` is not an integer (a bool, a float such as ``2.0``, a string, ``None``).
    ConfigError
        ``value`` is outside the bounds.

    Examples
    --------
    >>> check_int("horizon", np.int64(12), minimum=1)
    12
    """
    allowed = describe_range(minimum, maximum)
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise CelerisTypeError(
            f"{what} must be {_wanted('an int', allowed)}, got "
            f"{type(value).__name__} {value!r}{_suffix(reason)}"
        )
    out = int(value)
    if (minimum is not None and out < minimum) or (maximum is not None and out > maximum):
        raise ConfigError(f"{what} must be {allowed}, got {out}{_suffix(reason)}")
    return out


def check_real(
    what: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    reason: str = "",
    finite: bool = True,
) -> float:
    """Return ``value`` as a finite Python ``float`` within the bounds (either optional).

    Ints count as reals (``1`` is ``1.0``); ``bool`` is refused.

    Parameters
    ----------
    what
        The parameter's name as the user wrote it.
    value
        The value to check.
    minimum, maximum
        The bounds; ``None`` leaves that side open (the value must still be finite).
    open_low, open_high
        Exclude the bound itself (``open_low=True`` with ``minimum=0`` means ``> 0``).
    reason
        Why the bound exists, appended to the message in parentheses.
    finite
        ``False`` admits infinity on a side without a bound (``inf`` with ``maximum=None``: a
        limit that is off); NaN is refused either way.

    Raises
    ------
    CelerisTypeError
        ``value`` is not a real number (a bool, a string, ``None``, a complex number).
    ConfigError
        ``value`` is NaN, infinite (unless ``finite=False`` allows it) or outside the bounds.

    Examples
    --------
    >>> check_real("fees", 0.001, minimum=0)
    0.001
    """
    allowed = describe_range(minimum, maximum, open_low=open_low, open_high=open_high)
    kind = "a real number"
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise CelerisTypeError(
            f"{what} must be {_wanted(kind, allowed)}, got "
            f"{type(value).__name__} {value!r}{_suffix(reason)}"
        )
    out = float(value)
    shown = value if type(value) is int or type(value) is float else out
    unbounded_side = maximum is None if out > 0 else minimum is None
    if not math.isfinite(out) and not (not finite and math.isinf(out) and unbounded_side):
        wanted = f"finite and {allowed}" if allowed else "finite"
        raise ConfigError(f"{what} must be {wanted}, got {shown!r}{_suffix(reason)}")
    bad = False
    if minimum is not None:
        bad = out <= minimum if open_low else out < minimum
    if not bad and maximum is not None:
        bad = out >= maximum if open_high else out > maximum
    if bad:
        raise ConfigError(f"{what} must be {allowed}, got {shown!r}{_suffix(reason)}")
    return out


def check_fraction(
    what: str,
    value: Any,
    *,
    open_low: bool = False,
    open_high: bool = False,
    reason: str = "",
) -> float:
    """Return ``value`` as a ``float`` in ``[0, 1]`` (ends excluded on request).

    Same rule as :func:`check_real`: a non-number is a :class:`CelerisTypeError`, a number
    outside the interval (or NaN) a :class:`ConfigError`.

    Examples
    --------
    >>> check_fraction("dropout", 0.1, open_high=True)
    0.1
    """
    return check_real(
        what,
        value,
        minimum=0,
        maximum=1,
        open_low=open_low,
        open_high=open_high,
        reason=reason,
    )


def check_bool(what: str, value: Any) -> bool:
    """Return ``value`` as a Python ``bool``; only ``bool`` and ``numpy.bool_`` are accepted.

    ``0``, ``1``, ``"yes"`` and ``None`` are refused with a :class:`CelerisTypeError`, since a
    switch given a number is more often a misplaced argument than a deliberate choice.

    Examples
    --------
    >>> check_bool("attention", np.True_)
    True
    """
    if not isinstance(value, bool | np.bool_):
        raise CelerisTypeError(
            f"{what} must be True or False, got {type(value).__name__} {value!r}"
        )
    return bool(value)
