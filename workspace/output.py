"""What the listing commands print: a table for people (`--output table`, the default) or
one JSON document for scripts (`--output json`, `-o json` as `az` spells it).

Both are built from the same typed objects (dataclasses): the JSON is their fields, turned
into JSON types by `to_data`, inside an envelope `{"schema_version": 1, "kind": ..., ...}`.
In JSON mode stdout holds that document and nothing else: progress and errors go to
stderr, and the exit codes are those of the table mode. `schema_version` changes only when
a field is removed, renamed or changes type; new fields may appear without it.

A table printed to something that is not a terminal (a pipe, a file) is never cut to the
terminal's width: a name is whole for `grep`, not "iris…".
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

SCHEMA_VERSION = 1
FORMATS = ("table", "json")
# The width of a table that is not printed to a terminal: as wide as its longest row,
# which no real row reaches (rich cuts cells with "…" only beyond the console's width).
PIPE_WIDTH = 1 << 15


def output_option(command):
    """`-o/--output table|json` on a listing command (its value as `output_format`)."""
    return click.option(
        "-o", "--output", "output_format", type=click.Choice(FORMATS), default="table",
        show_default=True,
        help="table: for people; json: one JSON document on stdout for scripts (its shape "
        "is in the README; progress and errors stay on stderr).")(command)


def to_data(value, exclude: tuple[str, ...] = ()):
    """A dataclass (or dicts, lists and tuples of them) as JSON types: a dataclass is a
    dict of its fields (those in `exclude` left out, at the top level), a Path a string."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)
                if f.name not in exclude}
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items() if k not in exclude}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(kind: str, data) -> None:
    """The JSON document of a listing command on stdout: the envelope and the fields of
    `data` (a dict or a dataclass)."""
    payload = {"schema_version": SCHEMA_VERSION, "kind": kind, **to_data(data)}
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str))


def console(stderr: bool = False):
    """A rich console for stdout (or stderr): colour and the terminal's width on a
    terminal; elsewhere plain text and tables as wide as their content."""
    from rich.console import Console

    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out
