"""Safe rollouts: A/B routing, per-arm statistics, their evaluation, and shadow validation.

* :func:`arm_for` sends a request to ``"challenger"`` or ``"champion"`` by a hash of its key, so
  the same key (a symbol, a client id) always sees the same arm and the split holds without any
  shared state between server processes.
* :class:`ABStats` accumulates per-arm latency and success statistics, thread-safely and in
  constant memory (running moments plus a bounded reservoir sample for percentiles).
* :func:`evaluate_outcomes` compares two versions on what their predictions were worth once the
  horizon passed: realised error (lower is better) and the paper P&L of their signals (higher is
  better), read from an :class:`~celeris.serving.outcomes.OutcomeStore`.
  :func:`evaluate_ab` is the test underneath (Welch's t-test and Hedges' g); it says when the
  data are too thin to judge. A version is never judged on its mean forecast: a forecast that is
  higher or lower says nothing about whether it was right.
* :func:`shadow_validate` runs a candidate model on a validation batch before promotion: it must
  run, return the right shape, return finite values, be fast enough and (optionally) agree with the
  serving version. Every check is reported, including after one fails. :func:`replay_batch`
  takes the batch from the live inputs recorded in an outcome store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from celeris.checks import check_fraction, check_int, check_real
from celeris.errors import CelerisTypeError, ConfigError, DataError, check_choice
from celeris.formatting import format_number

__all__ = [
    "ARMS",
    "CHALLENGER",
    "CHAMPION",
    "ABReport",
    "ABStats",
    "Check",
    "ShadowReport",
    "arm_for",
    "evaluate_ab",
    "evaluate_outcomes",
    "hedges_g",
    "replay_batch",
    "shadow_validate",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
ARMS = (CHAMPION, CHALLENGER)
_STAT_METRICS = ("latency", "value")  # what ABStats keeps per arm
#: What evaluate_ab compares: latency (an ABStats' or samples), realised error, paper P&L.
METRICS = ("latency", "error", "pnl")
_LOWER_IS_BETTER = {"latency": True, "error": True, "pnl": False}


def arm_for(key: str, split: float, salt: str = "") -> str:
    """Return the A/B arm of a request key: ``"challenger"`` with probability ``split``.

    The first 8 bytes of ``sha256(salt + NUL + key)`` read as an unsigned integer ``u`` give a
    uniform number ``u / 2**64`` in [0, 1); the request goes to the challenger when it is below
    ``split``. The answer depends only on ``(key, split, salt)``: every process routes a key the
    same way, a larger split only moves keys from champion to challenger, and a new ``salt``
    reshuffles which keys land where (start each experiment with its own salt).

    Raises
    ------
    ConfigError
        ``split`` outside [0, 1].
    CelerisTypeError
        ``key`` or ``salt`` not a string, ``split`` not a number.
    """
    if not isinstance(key, str) or not isinstance(salt, str):
        raise CelerisTypeError(
            f"key and salt must be str, got {type(key).__name__} and {type(salt).__name__}"
        )
    if type(split) is not float or not 0.0 <= split <= 1.0:  # also refuses NaN
        # Per request: a float in range costs one type test; anything else gets the full check.
        split = check_fraction("split", split)
    digest = hashlib.sha256(salt.encode() + b"\0" + key.encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return CHALLENGER if u < split else CHAMPION


class _Moments:
    """Running count, mean and sum of squared deviations (Welford 1962)."""

    __slots__ = ("m2", "mean", "n")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def var(self) -> float:
        """Sample variance (ddof=1); NaN below two observations."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan


class _Arm:
    __slots__ = ("errors", "latency", "reservoir", "seen", "value")

    def __init__(self) -> None:
        self.latency = _Moments()  # successful requests only
        self.value = _Moments()
        self.errors = 0
        self.reservoir: list[float] = []
        self.seen = 0


class ABStats:
    """Per-arm latency and success statistics of an A/B test (thread-safe).

    Latency moments and percentiles cover successful requests only (a request refused early is
    fast and would flatter its arm); failures count towards the error rate. Memory is constant:
    means and variances are kept as running moments, and latency percentiles come from a
    uniform reservoir sample of ``reservoir_size`` latencies per arm (Vitter's algorithm R).

    An optional per-request ``value`` is summarised too (the engine passes the request's mean
    forecast); it is descriptive only: :func:`evaluate_ab` refuses to compare it, because
    versions are judged on realised outcomes (:func:`evaluate_outcomes`).

    Parameters
    ----------
    reservoir_size : int
        Latencies kept per arm for percentiles.
    seed : int
        Seed of the reservoir's sampling (percentiles are reproducible).
    """

    def __init__(self, reservoir_size: int = 4096, *, seed: int = 0) -> None:
        self.reservoir_size = check_int("reservoir_size", reservoir_size, minimum=1)
        self._arms = {arm: _Arm() for arm in ARMS}
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def record(self, arm: str, latency_s: float, ok: bool, value: float | None = None) -> None:
        """Record one request served by ``arm``: its latency, whether it succeeded, and an
        optional descriptive ``value`` (summarised, never compared).

        Non-finite latencies or values are refused (:class:`DataError`): one NaN would turn
        every later mean into NaN.
        """
        state = self._arms.get(arm)
        if state is None:
            check_choice("arm", arm, ARMS)
            return
        latency = float(latency_s)
        if not (math.isfinite(latency) and latency >= 0.0):
            raise DataError(f"latency_s must be finite and >= 0, got {latency_s!r}")
        val = None if value is None else float(value)
        if val is not None and not math.isfinite(val):
            raise DataError(f"value must be finite, got {value!r}")
        with self._lock:
            if not ok:
                state.errors += 1
            else:
                state.latency.add(latency)
                state.seen += 1
                if len(state.reservoir) < self.reservoir_size:
                    state.reservoir.append(latency)
                else:
                    j = self._rng.randrange(state.seen)
                    if j < self.reservoir_size:
                        state.reservoir[j] = latency
            if val is not None:
                state.value.add(val)

    def moments(self, arm: str, metric: str = "latency") -> tuple[int, float, float]:
        """Return ``(n, mean, sample variance)`` of ``metric`` for ``arm``."""
        check_choice("arm", arm, ARMS)
        check_choice("metric", metric, _STAT_METRICS)
        with self._lock:
            m = getattr(self._arms[arm], metric)
            return m.n, m.mean, m.var

    def summary(self) -> dict[str, dict[str, Any]]:
        """Return per-arm counts, error rate, latency mean/p50/p95/p99 (ms) and value stats.

        Keys per arm: ``requests``, ``ok``, ``errors``, ``error_rate``, ``latency_mean_ms``,
        ``latency_p50_ms``, ``latency_p95_ms``, ``latency_p99_ms``, ``value_n``,
        ``value_mean``, ``value_std``. Statistics of an empty arm are None (JSON null).
        """
        with self._lock:
            snapshot = {
                arm: (
                    s.latency.n,
                    s.latency.mean,
                    s.errors,
                    list(s.reservoir),
                    s.value.n,
                    s.value.mean,
                    s.value.var,
                )
                for arm, s in self._arms.items()
            }
        out: dict[str, dict[str, Any]] = {}
        for arm, (n_ok, lat_mean, errors, sample, v_n, v_mean, v_var) in snapshot.items():
            total = n_ok + errors
            p50, p95, p99 = (
                (float(v) for v in np.percentile(sample, [50, 95, 99]) * 1e3)
                if sample
                else (None, None, None)
            )
            out[arm] = {
                "requests": total,
                "ok": n_ok,
                "errors": errors,
                "error_rate": errors / total if total else None,
                "latency_mean_ms": lat_mean * 1e3 if n_ok else None,
                "latency_p50_ms": p50,
                "latency_p95_ms": p95,
                "latency_p99_ms": p99,
                "value_n": v_n,
                "value_mean": v_mean if v_n else None,
                "value_std": math.sqrt(v_var) if v_n > 1 else None,
            }
        return out


@dataclasses.dataclass(frozen=True)
class ABReport:
    """The comparison of an A/B test's arms on one metric (challenger minus champion).

    ``t``, ``p_value`` and ``df`` come from Welch's t-test; ``effect_size`` is Hedges' g with
    ``effect_ci`` its confidence interval at ``1 - alpha``. Statistics that cannot be computed
    (fewer than two samples in an arm) are NaN. ``significant`` is True only when both arms have
    ``min_samples`` and ``p_value < alpha``.
    """

    metric: str
    n: dict[str, int]
    mean: dict[str, float]
    std: dict[str, float]
    t: float
    p_value: float
    df: float
    effect_size: float
    effect_ci: tuple[float, float]
    alpha: float
    min_samples: int
    significant: bool
    enough_data: bool
    error_rate: dict[str, float | None]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN and infinities become None)."""

        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, tuple | list):
                return [clean(v) for v in x]
            return x

        return {f.name: clean(getattr(self, f.name)) for f in dataclasses.fields(self)}


def hedges_g(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float, *, alpha: float = 0.05
) -> tuple[float, tuple[float, float]]:
    """Return Hedges' g of group 2 minus group 1 and its ``1 - alpha`` confidence interval.

    ``d = (mean2 - mean1) / s_pooled`` with ``s_pooled**2 = ((n1-1) var1 + (n2-1) var2) /
    (n1 + n2 - 2)``; ``g = J d`` with the small-sample correction ``J = 1 - 3 / (4 df - 1)``,
    ``df = n1 + n2 - 2``; ``Var(g) = J**2 ((n1 + n2) / (n1 n2) + d**2 / (2 (n1 + n2)))`` and a
    normal interval (Borenstein et al. 2009, *Introduction to Meta-Analysis*, eqs. 4.18-4.24;
    Hedges & Olkin 1985). NaN below two observations per group; with zero spread in both groups
    g is 0 for equal means and ±inf otherwise.
    """
    from scipy import stats

    if n1 < 2 or n2 < 2:
        return math.nan, (math.nan, math.nan)
    df = n1 + n2 - 2
    pooled = math.sqrt(((n1 - 1) * var1 + (n2 - 1) * var2) / df)
    diff = mean2 - mean1
    if pooled == 0.0:
        g = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        return g, (g, g)
    d = diff / pooled
    j = 1.0 - 3.0 / (4.0 * df - 1.0)
    g = j * d
    se = j * math.sqrt((n1 + n2) / (n1 * n2) + d * d / (2.0 * (n1 + n2)))
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    return g, (g - z * se, g + z * se)


def _welch(
    n1: int, mean1: float, var1: float, n2: int, mean2: float, var2: float
) -> tuple[float, float, float]:
    """Welch's t-test of mean2 - mean1 from summary statistics: (t, two-sided p, df)."""
    from scipy import stats

    if n1 < 2 or n2 < 2:
        return math.nan, math.nan, math.nan
    se2 = var1 / n1 + var2 / n2
    if se2 == 0.0:
        # both arms constant: identical means are no evidence of a difference, distinct ones are
        # (scipy answers 0/0 = NaN here)
        if mean1 == mean2:
            return 0.0, 1.0, float(n1 + n2 - 2)
        return math.copysign(math.inf, mean2 - mean1), 0.0, float(n1 + n2 - 2)
    result = stats.ttest_ind_from_stats(
        mean2, math.sqrt(var2), n2, mean1, math.sqrt(var1), n1, equal_var=False
    )
    # Welch-Satterthwaite degrees of freedom (Welch 1947)
    df = se2**2 / ((var1 / n1) ** 2 / (n1 - 1) + (var2 / n2) ** 2 / (n2 - 1))
    return float(result.statistic), float(result.pvalue), float(df)


def evaluate_ab(
    stats_or_samples: ABStats | Mapping[str, Any],
    *,
    metric: str = "latency",
    min_samples: int = 30,
    alpha: float = 0.05,
) -> ABReport:
    """Compare the challenger with the champion on ``metric``; return an :class:`ABReport`.

    Parameters
    ----------
    stats_or_samples : ABStats or mapping
        The :class:`ABStats` of a running test (latency only), or raw samples
        ``{"champion": array, "challenger": array}``: latencies in seconds, per-prediction
        realised errors, or per-prediction paper P&L (:func:`evaluate_outcomes` builds these
        from an outcome store).
    metric : {"latency", "error", "pnl"}
        What the samples are: it sets which direction is better in the verdict (lower latency
        and error, higher P&L). ``"value"`` (the mean forecast, which older versions compared)
        is refused: how high a forecast is says nothing about whether it was right.
    min_samples : int
        Below this many samples in either arm the verdict is "too thin" and nothing is
        significant, whatever the p-value.
    alpha : float
        Significance level of the test and ``1 - alpha`` coverage of the effect-size interval.

    Notes
    -----
    Welch's t-test (unequal variances) is scipy's ``ttest_ind(equal_var=False)``, computed from
    the arms' means, variances and counts (``ttest_ind_from_stats``), which is exact and lets
    :class:`ABStats` keep constant memory.
    """
    if metric == "value":
        raise ConfigError(
            "metric 'value' (the mean forecast) is not compared: a higher or lower forecast says "
            "nothing about whether it was right; compare realised 'error' or 'pnl' "
            "(evaluate_outcomes), or 'latency'"
        )
    check_choice("metric", metric, METRICS)
    min_samples = check_int("min_samples", min_samples, minimum=2)
    alpha = check_fraction("alpha", alpha, open_low=True, open_high=True)

    error_rate: dict[str, float | None] = dict.fromkeys(ARMS)
    moments: dict[str, tuple[int, float, float]] = {}
    if isinstance(stats_or_samples, ABStats):
        if metric != "latency":
            raise ConfigError(
                f"an ABStats holds latencies only; metric {metric!r} compares realised outcomes: "
                "use evaluate_outcomes(store, model, champion, challenger)"
            )
        summary = stats_or_samples.summary()
        for arm in ARMS:
            moments[arm] = stats_or_samples.moments(arm, metric)
            error_rate[arm] = summary[arm]["error_rate"]
    elif isinstance(stats_or_samples, Mapping):
        unknown = set(stats_or_samples) - set(ARMS)
        if unknown or len(stats_or_samples) != 2:
            raise ConfigError(
                f"samples must be a mapping with exactly the keys {ARMS}, got {sorted(stats_or_samples)}"
            )
        for arm in ARMS:
            x = np.asarray(stats_or_samples[arm], dtype=np.float64).ravel()
            if not np.isfinite(x).all():
                raise DataError(f"{arm} samples contain non-finite values")
            var = float(x.var(ddof=1)) if x.size > 1 else math.nan
            moments[arm] = (int(x.size), float(x.mean()) if x.size else math.nan, var)
    else:
        raise CelerisTypeError(
            f"expected ABStats or a mapping of samples, got {type(stats_or_samples).__name__}"
        )

    (n1, m1, v1), (n2, m2, v2) = moments[CHAMPION], moments[CHALLENGER]
    t, p, df = _welch(n1, m1, v1, n2, m2, v2)
    g, ci = hedges_g(n1, m1, v1, n2, m2, v2, alpha=alpha)
    enough = min(n1, n2) >= min_samples
    significant = enough and p < alpha
    return ABReport(
        metric=metric,
        n={CHAMPION: n1, CHALLENGER: n2},
        mean={CHAMPION: m1 if n1 else math.nan, CHALLENGER: m2 if n2 else math.nan},
        std={CHAMPION: math.sqrt(v1), CHALLENGER: math.sqrt(v2)},
        t=t,
        p_value=p,
        df=df,
        effect_size=g,
        effect_ci=ci,
        alpha=alpha,
        min_samples=min_samples,
        significant=significant,
        enough_data=enough,
        error_rate=error_rate,
        verdict=_verdict(metric, n1, m1, n2, m2, p, g, ci, alpha, min_samples, significant),
    )


def evaluate_outcomes(
    outcomes: Any,
    model: str,
    champion: int,
    challenger: int,
    *,
    metric: str = "error",
    since: Any = None,
    min_samples: int = 30,
    alpha: float = 0.05,
) -> ABReport:
    """Compare two versions of ``model`` on their realised outcomes; return an :class:`ABReport`.

    Parameters
    ----------
    outcomes : OutcomeStore or DataFrame
        An :class:`~celeris.serving.outcomes.OutcomeStore` (read with ``joined``), or a frame
        such as :meth:`~celeris.serving.outcomes.OutcomeStore.joined` returns (columns
        ``version``, ``ts``, ``mae``, ``pnl``).
    model : str
        The model's name.
    champion, challenger : int
        The two versions compared (challenger minus champion).
    metric : {"error", "pnl"}
        ``"error"``: each joined prediction's realised MAE over its horizon (lower is better);
        ``"pnl"``: the paper P&L of its signal, ``signal * realised_return`` (higher is better;
        predictions made without a signal carry no P&L and are left out, and ``n`` counts
        the rest).
    since : Timestamp or int, optional
        Only predictions made at or after it (the start of the A/B test).
    min_samples, alpha
        As in :func:`evaluate_ab`: with fewer joined outcomes than ``min_samples`` in either
        version the report says so ("too thin to judge") instead of giving a verdict.
    """
    check_choice("metric", metric, ("error", "pnl"))
    champion = check_int("champion", champion, minimum=0)
    challenger = check_int("challenger", challenger, minimum=0)
    if champion == challenger:
        raise ConfigError(f"champion and challenger are both version {champion}; pick two")
    column = "mae" if metric == "error" else "pnl"
    samples: dict[str, np.ndarray] = {}
    for arm, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        frame = _joined_of(outcomes, model, version, since)
        x = frame[column].to_numpy(dtype=np.float64)
        samples[arm] = x[~np.isnan(x)]
    return evaluate_ab(samples, metric=metric, min_samples=min_samples, alpha=alpha)


def _joined_of(outcomes: Any, model: str, version: int, since: Any) -> Any:
    import pandas as pd

    if isinstance(outcomes, pd.DataFrame):
        missing = {"version", "ts", "mae", "pnl"} - set(outcomes.columns)
        if missing:
            raise DataError(f"the joined outcomes frame lacks the columns {sorted(missing)}")
        frame = outcomes[outcomes["version"] == version]
        if since is not None:
            # an int is nanoseconds since the epoch, as the store takes it
            start = pd.Timestamp(since, tz="UTC") if isinstance(since, int) else pd.Timestamp(since)
            if start.tzinfo is None:
                raise DataError(f"since must be timezone-aware (UTC), got {start}")
            frame = frame[frame["ts"] >= start]
        return frame
    joined = getattr(outcomes, "joined", None)
    if not callable(joined):
        raise CelerisTypeError(
            f"outcomes must be an OutcomeStore or a joined frame, got {type(outcomes).__name__}"
        )
    return joined(model, version=version, since=since)


def _verdict(
    metric: str,
    n1: int,
    m1: float,
    n2: int,
    m2: float,
    p: float,
    g: float,
    ci: tuple[float, float],
    alpha: float,
    min_samples: int,
    significant: bool,
) -> str:
    if min(n1, n2) < min_samples:
        what = "samples" if metric == "latency" else "joined outcomes"
        return (
            f"too thin to judge: {n1} champion and {n2} challenger {what} of {metric}; "
            f"need at least {min_samples} in each arm"
        )

    def fmt(x: float) -> str:
        if metric == "latency":
            return f"{format_number(x * 1e3, 'general', digits=3)} ms"
        return format_number(x, "general", digits=4)

    stats = f"Welch p={p:.3g}, Hedges' g={g:.3g} [{ci[0]:.3g}, {ci[1]:.3g}]"
    if not significant:
        return (
            f"no significant difference in {metric} at alpha={alpha:g}: champion {fmt(m1)}, "
            f"challenger {fmt(m2)} ({stats})"
        )
    higher = m2 > m1
    direction = "higher" if higher else "lower"
    if metric == "latency":
        judgement = " (slower)" if higher else " (faster)"
    else:
        judgement = " (worse)" if higher == _LOWER_IS_BETTER[metric] else " (better)"
    return (
        f"challenger's mean {metric} is significantly {direction}{judgement}: {fmt(m2)} vs "
        f"champion {fmt(m1)} ({stats})"
    )


def replay_batch(
    outcomes: Any, model: str, candidate: Any, *, rows: int = 64, version: int | None = None
) -> np.ndarray:
    """Return up to ``rows`` recent live input windows of ``model`` that fit ``candidate``.

    The windows come from the outcome store (``outcomes.recent_inputs``: what the server or the
    live loop recorded with its predictions), oldest first, shaped ``[n, input_size,
    n_features]`` of the candidate; ``n`` is 0 when none were recorded with that shape. Pass a
    non-empty result to :func:`shadow_validate` to replay live traffic through a shadow model.
    """
    rows = check_int("rows", rows, minimum=1)
    shape = (int(candidate.input_size), int(candidate.n_features))
    batch: np.ndarray = outcomes.recent_inputs(model, version=version, shape=shape, limit=rows)
    return batch


# ---------------------------------------------------------------------------------------------
# Shadow validation


class _Predicts(Protocol):
    def predict(self, histories: Any) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class Check:
    """One shadow-validation check: its name, whether it passed, and what was measured."""

    name: str
    passed: bool
    detail: str
    value: float | None = None


@dataclasses.dataclass(frozen=True)
class ShadowReport:
    """The outcome of :func:`shadow_validate`: passed only if every check passed."""

    passed: bool
    checks: list[Check]

    @property
    def failed(self) -> list[str]:
        """Return the names of the checks that failed."""
        return [c.name for c in self.checks if not c.passed]

    def check(self, name: str) -> Check:
        """Return the check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        check_choice("check", name, [c.name for c in self.checks])
        raise AssertionError("unreachable")  # check_choice raised

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {"passed": self.passed, "checks": [dataclasses.asdict(c) for c in self.checks]}

    def __str__(self) -> str:
        lines = [f"shadow validation {'passed' if self.passed else 'FAILED'}"]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)


def shadow_validate(
    candidate: _Predicts,
    validation_batch: np.ndarray,
    *,
    serving: _Predicts | np.ndarray | None = None,
    max_latency_ms: float = 50.0,
    max_rel_diff: float | None = None,
    repeats: int = 20,
) -> ShadowReport:
    """Check a candidate model before it is promoted; return every check's outcome.

    Checks, in order (all are run and reported even when an earlier one fails; a check that
    needs the candidate's output fails with "not run" when the candidate raised):

    * ``runs``: ``candidate.predict(validation_batch)`` returns without raising;
    * ``shape``: the output is ``[B, horizon]`` with ``B`` the batch's rows (and ``horizon`` the
      candidate's, when it has that attribute);
    * ``finite``: every output is finite (a model that produces NaN or inf is refused);
    * ``latency``: the p95 of ``repeats`` timed ``predict`` calls on the whole batch is at most
      ``max_latency_ms`` (after one warm-up call);
    * ``agreement`` (only when ``serving`` is given): ``max|candidate - serving| / max|serving|``
      is at most ``max_rel_diff`` (reported without a threshold when ``max_rel_diff`` is None).

    Parameters
    ----------
    candidate : object with ``predict``
        Usually a :class:`celeris.models.predictor.Predictor`.
    validation_batch : array ``[B, L, C]``
        Finite histories in original units.
    serving : object with ``predict``, or array ``[B, horizon]``, optional
        The version in production, or its outputs on ``validation_batch``. A Predictor is not
        thread-safe: pass a separate instance, or outputs obtained through the serving engine,
        rather than the instance a batcher's worker thread is using.
    max_latency_ms : float
        Latency threshold of the p95 of one ``predict`` call on the batch.
    max_rel_diff : float, optional
        Agreement threshold (relative to the serving output's largest magnitude).
    repeats : int
        Timed calls for the latency check.
    """
    batch = np.asarray(validation_batch, dtype=np.float32)
    if batch.ndim != 3 or batch.shape[0] == 0:
        raise DataError(
            f"validation_batch must be a non-empty [B, L, C] array, got shape {batch.shape}"
        )
    if not np.isfinite(batch).all():
        raise DataError("validation_batch has non-finite values; validate with finite histories")
    # infinity switches a limit off, as it always could
    max_latency_ms = check_real(
        "max_latency_ms", max_latency_ms, minimum=0, open_low=True, finite=False
    )
    if max_rel_diff is not None:
        max_rel_diff = check_real(
            "max_rel_diff", max_rel_diff, minimum=0, reason="or None", finite=False
        )
    repeats = check_int("repeats", repeats, minimum=1)
    if not callable(getattr(candidate, "predict", None)):
        raise CelerisTypeError(f"candidate has no predict method: {type(candidate).__name__}")

    checks: list[Check] = []
    out: np.ndarray | None = None
    try:
        out = np.asarray(candidate.predict(batch))
        checks.append(Check("runs", True, f"predict returned an array of shape {out.shape}"))
    except Exception as exc:  # any failure of the candidate is a verdict, not a crash
        checks.append(Check("runs", False, f"predict raised {type(exc).__name__}: {exc}"))

    rows = batch.shape[0]
    horizon = getattr(candidate, "horizon", None)
    if out is None:
        checks.append(Check("shape", False, "not run: the candidate raised"))
        checks.append(Check("finite", False, "not run: the candidate raised"))
    else:
        want = f"[{rows}, {horizon if horizon is not None else 'horizon'}]"
        shape_ok = out.ndim == 2 and out.shape[0] == rows
        if horizon is not None:
            shape_ok = shape_ok and out.shape[1] == int(horizon)
        checks.append(Check("shape", shape_ok, f"output shape {out.shape}, expected {want}"))
        checks.append(_finite_check(out))

    checks.append(_latency_check(candidate, batch, max_latency_ms, repeats))
    if serving is not None:
        checks.append(_agreement_check(out, serving, batch, max_rel_diff))
    return ShadowReport(passed=all(c.passed for c in checks), checks=checks)


def _finite_check(out: np.ndarray) -> Check:
    if not np.issubdtype(out.dtype, np.number):
        return Check("finite", False, f"output is not numeric (dtype {out.dtype})")
    bad = ~np.isfinite(out)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        return Check(
            "finite",
            False,
            f"{int(bad.sum())} of {out.size} outputs are not finite (first at {first}: "
            f"{out[first]!r})",
            float(bad.sum()),
        )
    return Check("finite", True, f"all {out.size} outputs are finite", 0.0)


def _latency_check(
    candidate: _Predicts, batch: np.ndarray, max_latency_ms: float, repeats: int
) -> Check:
    times = np.empty(repeats)
    try:
        candidate.predict(batch)  # warm-up: first-call allocations and lazy initialisation
        for k in range(repeats):
            t0 = time.perf_counter()
            candidate.predict(batch)
            times[k] = time.perf_counter() - t0
    except Exception as exc:
        return Check("latency", False, f"not measured: predict raised {type(exc).__name__}: {exc}")
    p50, p95 = (float(v) for v in np.percentile(times * 1e3, [50, 95]))
    return Check(
        "latency",
        p95 <= max_latency_ms,
        f"p95 {p95:.3g} ms (p50 {p50:.3g} ms) over {repeats} calls on {batch.shape[0]} "
        f"histories; limit {max_latency_ms:g} ms",
        p95,
    )


def _agreement_check(
    out: np.ndarray | None,
    serving: _Predicts | np.ndarray,
    batch: np.ndarray,
    max_rel_diff: float | None,
) -> Check:
    if out is None:
        return Check("agreement", False, "not run: the candidate raised")
    if isinstance(serving, np.ndarray):
        reference = serving
    else:
        try:
            reference = np.asarray(serving.predict(batch))
        except Exception as exc:
            return Check(
                "agreement", False, f"the serving model raised {type(exc).__name__}: {exc}"
            )
    if reference.shape != out.shape:
        return Check(
            "agreement",
            False,
            f"candidate output {out.shape} and serving output {reference.shape} differ in shape",
        )
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(out.astype(np.float64) - reference.astype(np.float64))
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    worst = float(np.max(diff)) if diff.size else 0.0
    if not math.isfinite(worst):
        return Check("agreement", False, "outputs differ by a non-finite amount", math.nan)
    rel = worst / scale if scale > 0 else (0.0 if worst == 0 else math.inf)
    if max_rel_diff is None:
        return Check(
            "agreement", True, f"max relative difference {rel:.3g} (no threshold set)", rel
        )
    return Check(
        "agreement",
        rel <= max_rel_diff,
        f"max relative difference {rel:.3g} (max |diff| {worst:.4g} over a scale of "
        f"{scale:.4g}); limit {max_rel_diff:g}",
        rel,
    )
