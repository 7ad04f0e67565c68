"""Every series the alert rules and the Grafana dashboards query is one Celeris exports.

The exported names are read from what the real collectors render (tests/deploy/promql.py), so
renaming a metric in ``celeris.serving.metrics`` or ``celeris.live.metrics`` fails here until
the rules and dashboards follow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy import promql
from tests.deploy.promql import metric_names, missing_names

SRC = Path(__file__).resolve().parents[2] / "src" / "celeris"


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return promql.exported_series()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(celeris_request_seconds_bucket{le="0.1", model=~"$model"}'
            "[$__rate_interval]))",
            {"celeris_request_seconds_bucket"},
        ),
        (  # identifiers inside strings, grouping clauses, offsets and numbers are not names
            'a_total{outcome=~"failed|timeout"} / on(job, model) group_left(version) '
            "b:ratio_rate5m offset 5m > 1e9 and bool up{job=~'celeris.*'}",
            {"a_total", "b:ratio_rate5m", "up"},
        ),
        (
            "histogram_quantile(0.99, sum(rate(x_bucket[5m])) by (le)) * 1000 - y ^ 2",
            {"x_bucket", "y"},
        ),
        ('count(ALERTS{alertstate="firing"}) or vector(0)', {"ALERTS"}),
        ("rate(x[5m:30s]) unless ignoring(kind) z", {"x", "z"}),
    ],
)
def test_metric_names_expression_selects_metrics_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_missing_names_unknown_series_reported_where_used() -> None:
    exprs = {"A": "rate(celeris_requests_total[5m])", "B": "celeris_requests_totl > 0"}
    assert missing_names(exprs, {"celeris_requests_total"}) == {"B": {"celeris_requests_totl"}}


def test_alert_rules_query_only_exported_series(exported: set[str]) -> None:
    known = exported | promql.recorded_names()
    assert missing_names(promql.rule_exprs(), known) == {}


def test_dashboards_query_only_exported_series(exported: set[str]) -> None:
    exprs = promql.dashboard_exprs()
    assert len(exprs) > 30  # every panel's queries were found
    assert missing_names(exprs, exported | promql.recorded_names()) == {}


def test_exported_series_renamed_gauge_fails_the_rules_that_use_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import celeris.serving.metrics as metrics

    renamed = tuple(
        (name.replace("temperature_celsius", "temp_c"), doc, field)
        for name, doc, field in metrics._GPU_SERIES
    )
    monkeypatch.setattr(metrics, "_GPU_SERIES", renamed)
    known = promql.exported_series() | promql.recorded_names()
    missing = missing_names(promql.rule_exprs(), known)
    assert missing == {
        "CelerisGPUHot": {
            "celeris_gpu_temperature_celsius",
            "celeris_gpu_slowdown_temperature_celsius",
        }
    }


def _label_values(label: str) -> set[str]:
    exprs = " ".join(promql.rule_exprs().values()) + " ".join(promql.dashboard_exprs().values())
    values = set()
    for match in re.findall(rf'\b{label}=~?"([^"]*)"', exprs):
        values |= set(match.split("|"))
    return values


@pytest.mark.parametrize(
    ("label", "modules"),
    [
        ("outcome", ["serving/batcher.py", "serving/engine.py"]),
        ("kind", ["serving/batcher.py", "serving/manager.py", "serving/http.py"]),
    ],
)
def test_label_values_in_rules_are_ones_the_server_emits(label: str, modules: list[str]) -> None:
    # outcome and kind values are string literals where the engine, manager and HTTP layer
    # report them (metrics.error(model, "shadow_failed"), _fail(req, exc, "timeout")...)
    source = "".join((SRC / module).read_text(encoding="utf-8") for module in modules)
    values = _label_values(label)
    assert values, f"no {label} values found in the rules"
    assert {v for v in values if f'"{v}"' not in source} == set()
