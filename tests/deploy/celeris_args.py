"""Parse a ``celeris`` command line the way the CLI would, without running it.

The manifests and compose.yaml spell out ``celeris serve``, ``celeris live``, ``celeris train``
and ``celeris models register`` command lines; a renamed or misspelt option would only show when
a pod starts. :func:`check_celeris_args` parses them with the real command's parser (Typer's
click), which raises on an unknown command or option, a bad value or a missing argument.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer.main


def check_celeris_args(args: Sequence[str]) -> None:
    """Parse ``celeris ARGS...``; raise (click's ``UsageError``) where the CLI would refuse."""
    from celeris.cli.main import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="celeris")
    rest = list(args)
    while hasattr(command, "list_commands"):  # a command group: the next word names a command
        assert rest, f"celeris {' '.join(args)}: a command group needs a command"
        name, *rest = rest
        sub = command.get_command(ctx, name)  # type: ignore[attr-defined]
        assert sub is not None, f"celeris has no command {name!r} ({' '.join(args)})"
        command, ctx = sub, sub.context_class(sub, info_name=name, parent=ctx)
    command.make_context(ctx.info_name, rest, parent=ctx.parent)
