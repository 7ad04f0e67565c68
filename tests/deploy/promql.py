"""What the monitoring files ask of Prometheus, and what Celeris exports.

- :func:`metric_names`: the metric names a PromQL expression selects (no PromQL parser is on
  PyPI for Python; this one removes strings, label matchers, ranges, grouping clauses and
  Grafana variables, then keeps the identifiers that are not functions or keywords).
- :func:`exported_series`: every series name ``celeris serve`` and ``celeris live`` can put on
  ``/metrics``, read from the exposition that the real collectors render (counters with
  ``_total``, histograms with ``_bucket``/``_count``/``_sum``). The collectors that only
  export with something to watch (caches, feed, outcomes, drift, readiness, GPUs, the live
  loop) get small stand-ins for what they read.
- :func:`rule_exprs`, :func:`recorded_names`, :func:`dashboard_exprs`: the expressions of
  ``deploy/prometheus/alerts.yml`` and of the Grafana dashboards.
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
#: Series Prometheus makes itself: scrape health and the alerts' own state.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*+)(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Return the metric names ``expr`` selects (``sum by (le) (rate(x{a="b"}[5m]))`` -> x)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("0", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers, durations (5m), exponents (1e9)
    return {name for name in _IDENT.findall(text) if name.lower() not in _KEYWORDS}


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_exprs() -> dict[str, str]:
    """Return ``{alert or record name: expr}`` of ``deploy/prometheus/alerts.yml``."""
    return {rule.get("alert") or rule["record"]: rule["expr"] for rule in _rules()}


def alerts() -> dict[str, dict[str, Any]]:
    """Return ``{alert name: rule}`` (recording rules left out)."""
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def recorded_names() -> set[str]:
    """Return the series the recording rules make."""
    return {rule["record"] for rule in _rules() if "record" in rule}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboards() -> dict[str, dict[str, Any]]:
    """Return ``{file name: dashboard}`` of every JSON under ``deploy/grafana/dashboards``."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def dashboard_exprs() -> dict[str, str]:
    """Return ``{"file: panel title / refId": expr}`` of every query, variables included."""
    out: dict[str, str] = {}
    for name, dash in dashboards().items():
        for panel in _panels(dash["panels"]):
            for target in panel.get("targets", []):
                out[f"{name}: {panel['title']} / {target['refId']}"] = target["expr"]
        for var in dash.get("templating", {}).get("list", []):
            if var["type"] == "query":
                query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
                # label_values(SELECTOR, label): the selector is the expression
                selector = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
                out[f"{name}: variable {var['name']}"] = selector.group(1) if selector else query
    return out


def missing_names(exprs: dict[str, str], known: set[str]) -> dict[str, set[str]]:
    """Return ``{where: names not in known}`` for the expressions that select unknown names."""
    out = {}
    for where, expr in exprs.items():
        unknown = metric_names(expr) - known
        if unknown:
            out[where] = unknown
    return out


# -- what Celeris exports ---------------------------------------------------------------------


def _series(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def _fake_nvml() -> Any:
    return types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=10),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=1, total=2),
        nvmlDeviceGetTemperature=lambda h, sensor: 50,
        nvmlDeviceGetPowerUsage=lambda h: 100_000,
        nvmlDeviceGetTemperatureThreshold=lambda h, which: 87,
        nvmlDeviceGetTotalEccErrors=lambda h, kind, counter: 0,
    )


def serving_series() -> set[str]:
    """Every series a ``celeris serve`` process can export (GPU ones as NVML gives them)."""
    from celeris.serving.metrics import DriftCollector, PrometheusMetrics

    saved = sys.modules.get("pynvml")
    sys.modules["pynvml"] = _fake_nvml()
    try:
        m = PrometheusMetrics(system=True, gpu=True)
    finally:
        if saved is None:
            del sys.modules["pynvml"]
        else:
            sys.modules["pynvml"] = saved
    cache_stats = {
        "hit_rate": 0.5,
        "memory": {"hit_rate": 0.5, "items": 1},
        "redis": {"hit_rate": 0.5, "available": True, "outages": 0, "slow": 0},
    }
    m.watch_cache(types.SimpleNamespace(stats=lambda: cache_stats))
    feed = {"subscribers": 0, "max_subscribers": 1, "published": 0, "refused": 0, "dropped": 0}
    m.watch_feed(types.SimpleNamespace(stats=lambda: feed))
    m.watch_outcomes(
        types.SimpleNamespace(stats=lambda: {"predictions": 0, "outcomes": 0, "pruned": 0}),
        types.SimpleNamespace(stats=lambda: {"dropped": 0, "failed": 0}),
    )
    m.watch_drift(DriftCollector(store=None, served=lambda: []))  # families without samples
    readiness = {"ready": True, "models": {}, "out_of_sync": {}, "registry": {"reachable": True}}
    m.watch_readiness(types.SimpleNamespace(readiness=lambda: readiness))
    return _series(m.render().decode())


def live_series() -> set[str]:
    """Every series a ``celeris live`` process can export (a model source with drift, a
    market stream)."""
    from celeris.live.market import STAT_NAMES
    from celeris.live.metrics import LiveMetrics

    m = LiveMetrics(["BTC/USDT"], timeframe_ns=60_000_000_000)
    error = types.SimpleNamespace(realised=0.1, ratio=1.0, exceeded=False)
    m.loop = types.SimpleNamespace(
        risk=types.SimpleNamespace(blocked={}, killed=None),
        filled_bars=0,
        source=types.SimpleNamespace(drift=lambda: {"psi": {}, "error": error}),
    )
    m.stream = types.SimpleNamespace(stale=lambda: [], stats=lambda: dict.fromkeys(STAT_NAMES, 0))
    return _series(m.text().decode())


def exported_series() -> set[str]:
    """Every series name Celeris exports, and those Prometheus adds (``up``, ``ALERTS``)."""
    return serving_series() | live_series() | PROMETHEUS_SERIES
