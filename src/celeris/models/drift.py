"""Drift of a served model: its inputs against training, its realised error against validation.

Pure functions, used by the serving metrics (:mod:`celeris.serving.metrics`) and by the live
loop alike; nothing here keeps state or logs.

* :func:`psi` is the population-stability index of one input feature: the values a model sees
  now against the distribution of its training rows, as the checkpoint's feature spec records
  it (``meta["feature_spec"]["reference"]``: 9 inner decile edges and the fraction of training
  rows in each of the 10 bins). :func:`psi_by_feature` does every feature of an input frame.
* :func:`validation_error` reads the model's error on held-out data from its checkpoint meta
  (``meta["test_metrics"]["model"]``, written by :func:`celeris.models.pipeline.fit_on_bars`);
  :func:`error_drift` compares the rolling mean of the realised errors with it.

The population-stability index (Siddiqi 2006, *Credit Risk Scorecards*, ch. 8; Yurdakul 2018,
*Statistical Properties of the Population Stability Index*)::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

over the bins ``i``, with ``e_i`` the fraction of training rows in bin ``i`` and ``a_i`` the
fraction of the new values there. Each term is >= 0; PSI is 0 for identical distributions.
The usual reading: below 0.1 no significant change, 0.1 to 0.25 a moderate shift worth
watching, above 0.25 a significant shift (:data:`PSI_MODERATE`, :data:`PSI_SIGNIFICANT`).
An empty bin would make a term infinite, so a fraction below :data:`PSI_EPSILON` (1e-4, a
hundredth of a percent) counts as ``PSI_EPSILON``, on either side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from celeris.checks import check_int, check_real
from celeris.errors import CelerisTypeError, DataError, did_you_mean

__all__ = [
    "PSI_EPSILON",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "ErrorDrift",
    "bin_fractions",
    "error_drift",
    "feature_reference",
    "psi",
    "psi_by_feature",
    "validation_error",
]

#: A bin fraction below this counts as this much in :func:`psi` (an empty bin's log is -inf).
PSI_EPSILON = 1e-4
#: PSI from here on: a moderate shift (Siddiqi 2006).
PSI_MODERATE = 0.1
#: PSI above this: a significant shift; the serving metrics warn.
PSI_SIGNIFICANT = 0.25


def _reference_arrays(reference: Mapping[str, Any], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Check one feature's reference; return (edges [k], fractions [k + 1]) as float64."""
    if (
        not isinstance(reference, Mapping)
        or "bins" not in reference
        or "fractions" not in reference
    ):
        raise CelerisTypeError(
            f"{what}: a feature's reference must be a mapping with 'bins' (the inner bin "
            f"edges) and 'fractions' (training rows per bin), got {type(reference).__name__}"
        )
    try:
        edges = np.asarray(reference["bins"], dtype=np.float64).ravel()
        fractions = np.asarray(reference["fractions"], dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what}: the reference's bins and fractions must be numbers: {exc}"
        ) from None
    if edges.size == 0 or fractions.size != edges.size + 1:
        raise DataError(
            f"{what}: the reference needs k inner edges and k + 1 fractions, got "
            f"{edges.size} edges and {fractions.size} fractions"
        )
    if not np.isfinite(edges).all() or (np.diff(edges) < 0).any():
        raise DataError(f"{what}: the reference's edges must be finite and non-decreasing")
    if not np.isfinite(fractions).all() or (fractions < 0).any():
        raise DataError(f"{what}: the reference's fractions must be finite and >= 0")
    if abs(float(fractions.sum()) - 1.0) > 1e-6:
        raise DataError(
            f"{what}: the reference's fractions must sum to 1, got {float(fractions.sum()):.9g}"
        )
    return edges, fractions


def _values(values: Any, what: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: values must be numbers: {exc}") from None
    if x.size == 0:
        raise DataError(f"{what}: no values to compare with the reference")
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{what}: value {i} is {float(x[i])!r}; drift is measured on finite values only "
            f"({int(bad.sum())} of {x.size} are not finite)"
        )
    return x


def bin_fractions(edges: Any, values: Any) -> np.ndarray:
    """Return the fraction of ``values`` in each bin of the inner ``edges`` ``[k] -> [k + 1]``.

    The bins are right-closed, the outer ones open: ``(-inf, e1], (e1, e2], ..., (ek, inf)``,
    as the feature spec's reference counts its training rows.
    """
    e = np.asarray(edges, dtype=np.float64).ravel()
    x = _values(values, "bin_fractions")
    # searchsorted(side="left") is the first edge >= x: x <= e[i] lands in bin i
    counts = np.bincount(np.searchsorted(e, x, side="left"), minlength=e.size + 1)
    return counts / x.size


def psi(reference: Mapping[str, Any], values: Any, *, feature: str = "values") -> float:
    """Return the population-stability index of ``values`` against one feature's reference.

    Parameters
    ----------
    reference : mapping
        ``{"bins": [e1, ..., e9], "fractions": [f0, ..., f9]}``: the inner decile edges of the
        training rows and the fraction of them in each bin (see :func:`feature_reference` to
        take one feature out of a feature spec's reference). Any ``k`` edges with ``k + 1``
        fractions work.
    values : array-like
        The feature's values now (for example the newest bar of each served window).
    feature : str
        The feature's name, for error messages.

    Returns
    -------
    float
        ``sum_i (a_i - e_i) ln(a_i / e_i)``, fractions floored at :data:`PSI_EPSILON` (see the
        module docstring for the source and the thresholds 0.1 and 0.25).

    Raises
    ------
    DataError
        A malformed reference, no values, or a non-finite value (its position named).

    Examples
    --------
    >>> ref = {"bins": [0.0], "fractions": [0.5, 0.5]}
    >>> round(psi(ref, [-1.0, -1.0, -1.0, 1.0]), 6)  # 0.25 ln 1.5 + 0.25 ln 2
    0.274653
    """
    edges, expected = _reference_arrays(reference, f"feature {feature!r}")
    actual = bin_fractions(edges, _values(values, f"feature {feature!r}"))
    a = np.maximum(actual, PSI_EPSILON)
    e = np.maximum(expected, PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_reference(reference: Mapping[str, Any], feature: str) -> dict[str, Any]:
    """Return ``{"bins", "fractions"}`` of ``feature`` from a feature spec's ``reference``
    (``{"bins": {feature: edges}, "fractions": {feature: fractions}}``).

    Raises
    ------
    DataError
        The reference has no entry for ``feature`` (with a did-you-mean hint).
    """
    if not isinstance(reference, Mapping) or not isinstance(reference.get("bins"), Mapping):
        raise CelerisTypeError(
            "reference must be {'bins': {feature: edges}, 'fractions': {feature: fractions}}, "
            f"got {type(reference).__name__}"
        )
    bins = reference["bins"]
    fractions = reference.get("fractions")
    if feature not in bins or not isinstance(fractions, Mapping) or feature not in fractions:
        raise DataError(
            f"the training reference has no distribution of feature {feature!r}"
            f"{did_you_mean(feature, list(bins))}"
        )
    return {"bins": bins[feature], "fractions": fractions[feature]}


def psi_by_feature(
    reference: Mapping[str, Any], values: Any, features: Sequence[str]
) -> dict[str, float]:
    """Return ``{feature: psi}`` for the columns of ``values`` ``[n, C]`` named ``features``.

    ``values`` may be a DataFrame (its columns are then looked up by name; ``features`` picks
    them) or an array whose column ``j`` is ``features[j]``. Features the reference does not
    cover raise :class:`DataError` (name them right or leave them out).
    """
    names = [str(f) for f in features]
    if hasattr(values, "columns"):
        missing = [f for f in names if f not in values.columns]
        if missing:
            raise DataError(f"values have no column {missing[0]!r}")
        arr = values[names].to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1 and len(names) == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise DataError(
                f"values must be [n, {len(names)}] (one column per feature {names}), got "
                f"shape {list(arr.shape)}"
            )
    return {
        name: psi(feature_reference(reference, name), arr[:, j], feature=name)
        for j, name in enumerate(names)
    }


# ---------------------------------------------------------------------------------------------
# Realised error against validation error


def validation_error(meta: Mapping[str, Any], metric: str = "mae") -> float | None:
    """Return the model's ``metric`` (``"mae"`` or ``"rmse"``) on its test split, from a
    checkpoint's meta (``meta["test_metrics"]["model"][metric]``), or None when the checkpoint
    has none (trained without a test split, or not by :func:`~celeris.models.pipeline.fit_on_bars`).

    The figure is in the target's original units, averaged over every horizon step of every
    test window: the same quantity as the mean of :func:`celeris.serving.outcomes` rows'
    realised ``mae`` (``rmse``: the root of the mean squared error, compare with the root of
    the mean of squared realised ``rmse``).
    """
    if metric not in ("mae", "rmse"):
        raise DataError(f"metric must be 'mae' or 'rmse', got {metric!r}")
    metrics = meta.get("test_metrics") if isinstance(meta, Mapping) else None
    model = metrics.get("model") if isinstance(metrics, Mapping) else None
    value = model.get(metric) if isinstance(model, Mapping) else None
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) and out >= 0 else None


@dataclasses.dataclass(frozen=True)
class ErrorDrift:
    """The rolling realised error of a model against its validation error.

    ``n`` realised errors entered the rolling mean ``realised`` (the last ``window`` of them);
    ``ratio = realised / validation``; ``exceeded`` is True once ``n >= min_samples`` and
    ``ratio > factor``. With fewer samples, or no validation error, ``exceeded`` is False and
    ``enough_data`` says why.
    """

    n: int
    realised: float
    validation: float | None
    ratio: float
    factor: float
    min_samples: int
    enough_data: bool
    exceeded: bool


def error_drift(
    errors: Any,
    validation: float | None,
    *,
    window: int = 500,
    factor: float = 1.5,
    min_samples: int = 30,
) -> ErrorDrift:
    """Compare the rolling mean of realised ``errors`` (oldest first) with ``validation``.

    Parameters
    ----------
    errors : array-like
        Per-prediction realised errors (for example :meth:`OutcomeStore.joined`'s ``mae``
        column), oldest first; the last ``window`` count.
    validation : float or None
        The model's error on held-out data (:func:`validation_error`); None: unknown.
    window : int
        How many of the newest errors the rolling mean covers.
    factor : float
        How many times the validation error the realised error may reach before
        ``exceeded`` (> 1: live error is usually a little worse than test error).
    min_samples : int
        Fewer realised errors than this never exceed (too few to say).
    """
    window = check_int("window", window, minimum=1)
    factor = check_real("factor", factor, minimum=0, open_low=True)
    min_samples = check_int("min_samples", min_samples, minimum=1)
    x = np.asarray(errors, dtype=np.float64).ravel()
    if x.size and not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x))[0])
        raise DataError(f"realised error {i} is {float(x[i])!r}; errors must be finite")
    recent = x[-window:]
    n = int(recent.size)
    realised = float(recent.mean()) if n else math.nan
    ratio = realised / validation if validation and n else math.nan
    enough = n >= min_samples and validation is not None
    return ErrorDrift(
        n=n,
        realised=realised,
        validation=validation,
        ratio=ratio,
        factor=factor,
        min_samples=min_samples,
        enough_data=enough,
        exceeded=bool(enough and ratio > factor),
    )
