"""What every CLI shares: ProjectError → one red line + exit code, and the --target option."""
from __future__ import annotations

import functools
import inspect
import re
import sys

import click

from workspace.errors import EXIT_CODES_HELP, ExitCode, ProjectError, exit_help


# Placeholders of help texts, filled from the exit-code table (workspace/errors.py) so no
# help text writes a code by hand: `{exit:RUN_FAILED}` → "exit 7 (run or job failed, ...)",
# `{exit_codes}` → the whole table on one line.
_EXIT_PLACEHOLDER = re.compile(r"\{exit:([A-Z_]+)\}")
HELP_OPTION_NAMES = ["-h", "--help"]


def expand_help(text: str | None) -> str | None:
    if not text:
        return text
    text = inspect.cleandoc(text).replace("{exit_codes}", EXIT_CODES_HELP)
    return _EXIT_PLACEHOLDER.sub(lambda m: exit_help(ExitCode[m.group(1)]), text)


def _expand_helps(command: click.Command) -> None:
    command.help = expand_help(command.help)
    for param in command.params:
        if isinstance(param, click.Option):
            param.help = expand_help(param.help)


class ProjectCommand(click.Command):
    """A command whose help texts (its own and its options') may name exit codes by
    placeholder; -h works as --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", {}).setdefault("help_option_names", HELP_OPTION_NAMES)
        super().__init__(*args, **kwargs)
        _expand_helps(self)


class ProjectGroup(click.Group):
    """A click group that prints ProjectError as one actionable line and exits non-zero.
    Its commands and subgroups are ProjectCommand and ProjectGroup."""

    command_class = ProjectCommand

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("context_settings", {}).setdefault("help_option_names", HELP_OPTION_NAMES)
        super().__init__(*args, **kwargs)
        _expand_helps(self)

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


def name_argument(rule, what: str = "NAME"):
    """A command's NAME, given as its argument or as `-n/--name NAME`, as `az ml` spells it
    (`az ml job show|download|cancel --name`); both at once must agree. Checked with `rule`
    (workspace/names.py); the command receives it as `name`."""

    def decorate(command):
        @functools.wraps(command)
        def with_name(*args, name=None, name_option=None, **kwargs):
            if name and name_option and name != name_option:
                raise click.UsageError(f"{what} '{name}' and --name '{name_option}' differ; "
                                       "give one.")
            if not (name or name_option):
                raise click.UsageError(f"Missing {what} (or -n/--name {what}).")
            return command(*args, name=name or name_option, **kwargs)

        with_name = click.option(
            "--name", "-n", "name_option", metavar=what, default=None, callback=checked(rule),
            help=f"The {what} (as `az ml` takes it), instead of the argument.")(with_name)
        return click.argument("name", required=False, callback=checked(rule))(with_name)

    return decorate


ProjectGroup.group_class = ProjectGroup
