"""Shared pieces of the CLI: consoles, the error boundary, shared options, parsing helpers."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from celeris.errors import CelerisError

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
