"""What every CLI shares: ProjectError → one red line + exit code, and the --target option."""
from __future__ import annotations

import sys

import click

from workspace.errors import ProjectError


class ProjectGroup(click.Group):
    """A click group that prints ProjectError as one actionable line and exits non-zero."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProjectError as exc:
            click.secho(f"error: {exc.message}", fg="red", err=True)
            if exc.hint:
                click.echo(f"  → {exc.hint}", err=True)
            sys.exit(exc.exit_code)


target_option = click.option(
    "--target", type=click.Choice(["local", "azure"]), default=None,
    help="Override TARGET from .env (default: local unless .env says azure).")


def checked(rule, *, also: tuple[str, ...] = ()):
    """A click callback that checks an option's or argument's value with a name rule of
    workspace/names.py before the command runs (None and the words in `also`, e.g.
    'latest', pass). The error names the option (`--job-name`) or argument (`RUN_ID`)."""

    def callback(ctx, param, value):
        if value is None or value in also:
            return value
        where = param.opts[0] if param.param_type_name == "option" else param.human_readable_name
        return rule.check(value, where)

    return callback
