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
