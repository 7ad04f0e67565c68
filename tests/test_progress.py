"""celeris.progress: the one progress-bar factory."""

from __future__ import annotations

import io

import pytest
from rich.progress import Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from celeris.progress import progress_bar


def test_progress_bar_off_is_none() -> None:
    assert progress_bar(False) is None


def test_progress_bar_on_draws_on_stderr_with_the_asked_columns() -> None:
    bar = progress_bar(True, "training", fields=("loss",), elapsed=True, remaining=False)
    assert isinstance(bar, Progress)
    assert bar.console.stderr and bar.live.transient
    kinds = [type(c) for c in bar.columns]
    assert TimeElapsedColumn in kinds and TimeRemainingColumn not in kinds
    texts = [c.text_format for c in bar.columns if isinstance(c, TextColumn)]
    assert texts == ["training", "{task.fields[loss]}"]


def test_progress_bar_tty_only_without_a_terminal_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_bar(True, tty_only=True) is None
    assert progress_bar(True) is not None


def test_progress_bar_kept_on_screen_when_not_transient() -> None:
    bar = progress_bar(True, transient=False)
    assert bar is not None and bar.live.transient is False
