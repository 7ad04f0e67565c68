"""Shared pieces of the CLI: consoles, the error boundary, shared options, parsing helpers."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from celeris.errors import CelerisError

if TYPE_CHECKING:  # pandas is imported only by the commands that load data
    import pandas as pd

# Piped output (CI logs, files) gets a wide fixed width instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

F = TypeVar("F", bound=Callable[..., Any])

#: Options declared once for several commands: ``(parameter name, annotation, default)``.
OptionSpec = Sequence[tuple[str, Any, Any]]
#: What a command receives for them from :func:`shared_options`: ``{parameter name: value}``.
Options = Mapping[str, Any]
#: Default of the parameter that :func:`shared_options` fills; the command never sees it.
FILLED: Options = MappingProxyType({})


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def cli_errors(func: F) -> F:
    """Turn :class:`~celeris.CelerisError` (and bad values) into one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CelerisError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def shared_options(spec: OptionSpec, into: str = "opts") -> Callable[[F], F]:
    """Give a command the options of ``spec``; it receives their values as one dict ``into``.

    The options take the place of the command's ``into`` parameter in its signature, and so in
    ``--help``; typer parses them like the command's own. Apply it under ``@cli_errors``; it
    stacks, one ``into`` per group.
    """
    names = [name for name, _, _ in spec]

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        if into not in sig.parameters:
            raise TypeError(f"{func.__name__} has no parameter {into!r} for the shared options")
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name == into:
                params += [
                    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a)
                    for name, a, d in spec
                ]
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names if name in kwargs}
            return func(*args, **{into: values}, **kwargs)

        new_sig = sig.replace(parameters=params)
        setattr(wrapper, "__signature__", new_sig)  # noqa: B010 - typer reads it
        del wrapper.__wrapped__  # typer must read the new signature, not the wrapped one
        wrapper.__annotations__ = {p.name: p.annotation for p in new_sig.parameters.values()}
        return wrapper  # type: ignore[return-value]

    return decorate


def command_group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    """Add a group of subcommands ``celeris NAME ...`` to ``app`` and return it."""
    group = typer.Typer(
        help=help_text, no_args_is_help=True, rich_markup_mode="rich", add_completion=False
    )
    app.add_typer(group, name=name)
    return group


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (no rich markup, safe for pipes)."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- the bars a command works on ------------------------------------------------------------
StartOpt = Annotated[
    str | None,
    typer.Option(
        "--start",
        help="First bar to use: a date or time (2015-01-01, 2015-01-01T09:30), inclusive; UTC "
        "unless it names a zone.",
    ),
]
EndOpt = Annotated[
    str | None,
    typer.Option(
        "--end", help="Last bar to use: a date or time, inclusive (a date means its 00:00)."
    ),
]
#: ``--start``/``--end`` of every data-taking command, declared once; the command receives them
#: as ``span`` and hands them to :func:`load_bars`.
_SPAN: OptionSpec = (("start", StartOpt, None), ("end", EndOpt, None))
date_range_options = shared_options(_SPAN, into="span")


def load_bars(source: str, span: Options = FILLED, **load_options: Any) -> pd.DataFrame:
    """Load and validate ``source`` (:func:`celeris.data.load`) and keep the bars of ``span``.

    The one loader of every data-taking command, so ``--start``/``--end`` mean the same
    everywhere.
    """
    from celeris.data import load

    bars = load(source, **load_options)
    return select_range(bars, span.get("start"), span.get("end"), source)


def select_range(
    bars: pd.DataFrame, start: str | None, end: str | None, source: str = "the data"
) -> pd.DataFrame:
    """Bars from ``start`` to ``end`` (both inclusive, either optional).

    Raises
    ------
    ConfigError
        A bound is not a date/time, ``start`` is not before ``end``, a bound lies outside the
        data (nothing is clipped silently), or no bar falls between them.
    """
    import numpy as np
    import pandas as pd

    from celeris.errors import ConfigError

    if start is None and end is None:
        return bars
    index = bars.index
    if not isinstance(index, pd.DatetimeIndex):
        raise ConfigError(f"--start/--end need timestamped bars; {source} has no datetime index")
    lo = _bound("--start", start, index)
    hi = _bound("--end", end, index)
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(f"--start {start} must be before --end {end}")
    first, last = index[0], index[-1]
    span = f"{source} runs from {first} to {last}"
    if lo is not None and not first <= lo <= last:
        raise ConfigError(f"--start {start} is outside the data: {span}")
    if hi is not None and not first <= hi <= last:
        raise ConfigError(f"--end {end} is outside the data: {span}")
    keep = np.ones(len(index), dtype=bool)
    if lo is not None:
        keep &= index >= lo
    if hi is not None:
        keep &= index <= hi
    if not keep.any():
        raise ConfigError(f"no bar of {source} lies between --start {start} and --end {end}")
    return bars[keep]


def _bound(flag: str, text: str | None, index: pd.DatetimeIndex) -> pd.Timestamp | None:
    import pandas as pd

    from celeris.errors import ConfigError

    if text is None:
        return None
    try:
        ts = pd.Timestamp(text)
        bad = pd.isna(ts)
    except (ValueError, TypeError):
        bad = True
    if bad:
        raise ConfigError(
            f"{flag} {text!r} is not a date or time (use e.g. 2015-01-01 or 2015-01-01T09:30)"
        )
    if ts.tzinfo is None and index.tz is not None:
        ts = ts.tz_localize(index.tz)  # a bare date is in the data's zone (UTC for bar frames)
    elif ts.tzinfo is not None and index.tz is None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts
