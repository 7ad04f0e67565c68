"""The audit log writes strict JSON through celeris.jsonsafe (one conversion for every value)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd

from celeris.llm.audit import AuditLog, read_audit


def test_audit_log_arrays_sets_and_nat_written_as_json_values(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, run_id="r1") as log:
        record = log.write(
            "run",
            split=np.array([0.7, 0.3]),  # was written as the string "[0.7 0.3]"
            tags={"a"},  # was "{'a'}"
            end=pd.NaT,  # was "NaT"
            start=pd.Timestamp("2024-01-02", tz="UTC"),
            sharpe=np.float64("nan"),
            best=np.inf,
            day=datetime.date(2024, 1, 2),
            window=(np.int64(5), 10),
        )
    line = json.loads(path.read_text().splitlines()[0])
    assert line == record
    assert record["split"] == [0.7, 0.3]
    assert record["tags"] == ["a"]
    assert record["end"] is None and record["sharpe"] is None and record["best"] is None
    assert record["start"] == "2024-01-02T00:00:00+00:00"
    assert record["day"] == "2024-01-02"
    assert record["window"] == [5, 10]
    assert [e["event"] for e in read_audit(path)] == ["run"]
