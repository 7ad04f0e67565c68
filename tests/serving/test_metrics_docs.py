"""docs/serving.md's metrics table names every series ``GET /metrics`` exports."""

from __future__ import annotations

import re
from pathlib import Path

from celeris.serving.metrics import _GPU_SERIES, PrometheusMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "serving.md"


def _documented_series() -> set[str]:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    # the first cell of each row: `name`, `name`, ... (a label set such as {period} dropped)
    return {
        re.sub(r"\{.*\}$", "", name)
        for row in rows
        for name in re.findall(r"`([a-z0-9_{}]+)`", row.split(" | ")[0])
    }


def test_metrics_table_documents_every_exported_series() -> None:
    documented = _documented_series()
    families = {f.name for f in PrometheusMetrics().registry.collect()}
    families |= {name for name, _, _ in _GPU_SERIES}
    missing = sorted(
        name
        for name in families
        if not {name.removeprefix("celeris_"), name.removeprefix("celeris_") + "_total"}
        & documented
    )
    assert not missing, f"docs/serving.md's metrics table lacks {missing}"
