"""The Grafana dashboards and their provisioning (deploy/grafana).

Which series the queries select is checked in test_prometheus_names.py; here: the JSON is a
dashboard Grafana can provision (ids, layout, datasource), the provisioning files point where
compose.yaml mounts the dashboards, and every query is PromQL that ``promtool`` accepts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import promql

PROVISIONING = promql.DEPLOY / "grafana" / "provisioning"
#: Where compose.yaml mounts deploy/grafana/dashboards in the Grafana container.
DASHBOARDS_MOUNT = "/var/lib/grafana/dashboards"
#: Values for Grafana's variables when a query is checked as plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = doc["datasources"]
    return dict(source)


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    return list(promql._panels(dash["panels"]))


def test_dashboards_serving_live_and_gpu_rows_present() -> None:
    dashes = promql.dashboards()
    assert list(dashes) == ["celeris.json"]
    rows = [p["title"] for p in _panels(dashes["celeris.json"]) if p["type"] == "row"]
    assert rows == ["Serving", "Live", "GPU"]


@pytest.mark.parametrize("name", sorted(promql.dashboards()))
def test_dashboard_panels_unique_ids_inside_the_grid(name: str) -> None:
    dash = promql.dashboards()[name]
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cover = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cover & cells, f"{p['title']} overlaps another panel"
        cells |= cover
        if p["type"] != "row":
            assert p["targets"], p["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


@pytest.mark.parametrize("name", sorted(promql.dashboards()))
def test_dashboard_datasource_variable_defaults_to_the_provisioned_one(
    name: str, datasource: dict[str, Any]
) -> None:
    variables = {v["name"]: v for v in promql.dashboards()[name]["templating"]["list"]}
    assert variables["datasource"]["query"] == datasource["type"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    used = set(re.findall(r"\$(\w+)", " ".join(promql.dashboard_exprs().values())))
    assert used - {"__rate_interval"} <= set(variables)


def test_provisioning_loads_the_dashboards_directory() -> None:
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "celeris.yml").read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == DASHBOARDS_MOUNT


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: run `make system-deps`"
    rules = []
    for i, expr in enumerate(promql.dashboard_exprs().values()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
