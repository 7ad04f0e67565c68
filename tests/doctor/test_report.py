"""The report's rules and its JSON shape (a stable interface for scripts)."""

from __future__ import annotations

import pytest

from celeris.doctor import SCHEMA_VERSION, CheckResult, Report, Status

TOP_KEYS = {"schema_version", "celeris_version", "quick", "llm", "ok", "counts", "seconds",
            "checks"}  # fmt: skip
CHECK_KEYS = {"name", "title", "status", "summary", "fix", "details", "seconds"}


def _report(*statuses: Status) -> Report:
    checks = tuple(
        CheckResult(
            name=f"c{i}",
            title=f"C{i}",
            status=s,
            summary="found",
            fix=None if s in (Status.OK, Status.SKIP) else "do this",
        )
        for i, s in enumerate(statuses)
    )
    return Report(celeris_version="0", quick=False, llm=False, checks=checks, seconds=0.5)


def test_report_to_json_keys_and_values_stable() -> None:
    doc = _report(Status.OK, Status.WARN, Status.SKIP).to_json()
    assert set(doc) == TOP_KEYS and SCHEMA_VERSION == 1 and doc["schema_version"] == 1
    assert doc["counts"] == {"ok": 1, "warn": 1, "fail": 0, "skip": 1} and doc["ok"] is True
    assert [set(c) for c in doc["checks"]] == [CHECK_KEYS] * 3
    assert [c["status"] for c in doc["checks"]] == ["ok", "warn", "skip"]
    assert doc["checks"][1]["fix"] == "do this" and doc["checks"][0]["fix"] is None


@pytest.mark.parametrize(
    ("statuses", "code"),
    [((Status.OK, Status.WARN, Status.SKIP), 0), ((Status.OK, Status.FAIL), 1), ((), 0)],
)
def test_report_exit_code_fail_one_warn_zero(statuses: tuple[Status, ...], code: int) -> None:
    assert _report(*statuses).exit_code == code


@pytest.mark.parametrize("status", [Status.WARN, Status.FAIL])
def test_check_result_problem_without_fix_raises(status: Status) -> None:
    with pytest.raises(ValueError, match="gives no fix"):
        CheckResult(name="x", title="X", status=status, summary="bad")


def test_check_result_details_made_json_safe() -> None:
    import numpy as np

    result = CheckResult(
        name="x", title="X", status=Status.OK, summary="s", details={"n": np.int64(3), "t": (1,)}
    )
    assert result.details == {"n": 3, "t": [1]} and type(result.details["n"]) is int


def test_report_get_unknown_name_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no check named 'nope'"):
        _report(Status.OK).get("nope")
