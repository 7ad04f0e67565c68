"""An append-only JSONL record of an optimisation run: every prompt, answer, backtest, decision.

One JSON object per line, written and flushed (and fsync'ed) as each event happens, so a run
cut off by a crash keeps every event before it and at most one truncated last line, which
:func:`read_audit` reports instead of guessing. Every event carries ``run_id``, a sequence
number ``seq`` and a UTC timestamp; ``event`` is one of :data:`EVENTS`.

Events
------
``run``        strategy, search space, data fingerprint, split, guard, method, model, seed
``prompt``     round, template id and sha256, rendered messages, token count and budget
``answer``     round, model, every attempt's raw answer and validation error, parsed value
``proposal``   round, source (baseline / optuna / llm / sensitivity / replay), params, reason
``backtest``   round, params, in-sample metrics and per-period Sharpe ratio
``decision``   round, params, accepted, reason, out-of-sample metric, DSR, trials so far
``result``     baseline vs accepted, in-sample vs out-of-sample
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celeris.errors import CelerisWarning, ConfigError, DataError
from celeris.jsonsafe import to_jsonable

EVENTS = ("run", "prompt", "answer", "proposal", "backtest", "decision", "result")


class AuditLog:
    """Append events of one run to a JSONL file (created with its folder if missing)."""

    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._seq = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"audit log {self.path}: {exc.strerror or exc}") from None

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one event and flush it to disk; return the record written."""
        if event not in EVENTS:
            raise ConfigError(f"unknown audit event {event!r}; events: {', '.join(EVENTS)}")
        self._seq += 1
        record = {
            "run_id": self.run_id,
            "seq": self._seq,
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": event,
            **to_jsonable(fields),
        }
        self._fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return record

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_audit(path: str | Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Return the events of ``path`` (of one run if ``run_id`` is given), in order.

    A truncated last line (a run killed mid-write) is skipped with a warning; a malformed line
    elsewhere is an error naming its line number.

    Raises
    ------
    DataError
        Missing file, a malformed line before the last, or a record without ``event``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"audit log {p} does not exist")
    lines = p.read_text(encoding="utf-8").splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                warnings.warn(
                    f"audit log {p}: last line {number} is truncated ({exc.msg}); ignored",
                    CelerisWarning,
                    stacklevel=2,
                )
                continue
            raise DataError(f"audit log {p}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "event" not in record:
            raise DataError(f"audit log {p}, line {number}: not an audit event")
        if run_id is None or record.get("run_id") == run_id:
            events.append(record)
    return events


def runs(events: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Yield ``(run_id, events)`` for each run in a log, in order of first appearance."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        grouped.setdefault(str(e.get("run_id")), []).append(e)
    yield from grouped.items()
