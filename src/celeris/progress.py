"""Progress bars: the one factory every long-running Celeris call uses.

Bars are rich bars on standard error (standard output stays for results and ``--json``),
transient by default, and ``None`` when switched off, so a caller writes
``bar = progress_bar(enabled, ...)`` and guards its updates with ``if bar is not None``, or
``with progress_bar(...) or nullcontext() as bar`` for a bar used as a context. Like
:mod:`celeris.errors`, this module sits beside every package and imports nothing of Celeris.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress

__all__ = ["progress_bar"]


def progress_bar(
    enabled: bool,
    label: str = "{task.description}",
    *,
    fields: Sequence[str] = (),
    elapsed: bool = False,
    remaining: bool = True,
    transient: bool = True,
    tty_only: bool = False,
) -> Progress | None:
    """Return a rich progress bar, or ``None`` when ``enabled`` is false.

    Parameters
    ----------
    enabled
        Whether to show a bar at all.
    label
        The text before the bar (a rich format string; ``{task.description}`` by default).
    fields
        Names of task fields shown after the bar (``add_task(..., loss="")`` then
        ``update(task, loss=...)``).
    elapsed, remaining
        Show the elapsed time / the estimated time left.
    transient
        Remove the bar when it stops.
    tty_only
        Show nothing when standard error is not a terminal (training loops in scripts and CI).
    """
    if not enabled or (tty_only and not sys.stderr.isatty()):
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    columns: list[ProgressColumn | str] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    if elapsed:
        columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    columns.extend(TextColumn(f"{{task.fields[{name}]}}") for name in fields)
    return RichProgress(*columns, console=Console(stderr=True), transient=transient)
