"""Parsing a ``switchboard`` command line with the real click commands, as a container
would run it: how the deployment files' tests check their commands and variables."""

from __future__ import annotations

import os
import warnings

import click
import pytest

from switchboard.cli import main


def leaf_command(args: list[str], env: dict[str, str],
                 monkeypatch: pytest.MonkeyPatch) -> tuple[click.Command, click.Context]:
    """Parse ``switchboard ARGS`` with the real click commands and ``env`` as the only
    SWITCHBOARD_* variables; the command that would run and its parsed context."""
    for key in list(os.environ):
        if key.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    command: click.Command = main
    ctx = main.make_context("switchboard", list(args))
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates it; 9 folds it into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        assert rest, f"{args}: no subcommand"
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None, f"{args}: unknown command"
        command = sub
        ctx = sub.make_context(name, rest, parent=ctx)
    return command, ctx
