"""A sweep's grid: a CSV whose columns are trainer options and whose lines are the runs.

The whole grid is checked before anything is queued; the first problem is one error
naming the file, the line (as an editor numbers it, the header being line 1) and what to
change. Values are checked with trainer/main.py's own option types (what the trainer
refuses, the grid refuses first).
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

from workspace.errors import ConfigError

MAX_LINES = 10_000


# Column → the trainer option it sets. Values are checked with that option's own type from
# trainer/main.py's parser, so the grid and the trainer never disagree on what is valid.
COLUMNS = {"epochs": "--epochs", "lr": "--lr", "seed": "--seed", "test_size": "--test-size"}


def _option_types() -> dict:
    from adf.parameters import trainer_parser

    actions = {o: a for a in trainer_parser()._actions for o in a.option_strings}
    return {column: actions[option].type for column, option in COLUMNS.items()}


@dataclass(frozen=True)
class GridLine:
    line: int          # line number in the file (header = 1)
    params: dict


def load_grid(path: Path | str) -> list[GridLine]:
    """Every line of the grid, typed; ConfigError naming the line on the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"Grid file '{path}' not found.",
                          "Pass --grid with a CSV such as data/sweep.csv.") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Grid file '{path}' is not UTF-8 text ({exc.reason}).") from None
    rows = [(number, row) for number, row in enumerate(csv.reader(text.splitlines()), 1)
            if any(cell.strip() for cell in row)]
    if not rows:
        raise ConfigError(f"Grid file '{path}' is empty.",
                          f"Write a header of trainer options ({', '.join(COLUMNS)}) and one "
                          "line per run.")
    header_line, header = rows[0]
    columns = _check_header(path, header_line, [c.strip() for c in header])
    types = _option_types()
    lines = [_parse_line(path, number, columns, row, types) for number, row in rows[1:]]
    if not lines:
        raise ConfigError(f"Grid file '{path}' has a header but no lines.",
                          "Add one line per run below the header.")
    if len(lines) > MAX_LINES:
        raise ConfigError(f"Grid file '{path}' has {len(lines)} lines; at most {MAX_LINES}.")
    _check_duplicates(path, lines)
    return lines


def _check_header(path: Path, number: int, columns: list[str]) -> list[str]:
    for column in columns:
        if column not in COLUMNS:
            raise ConfigError(f"Grid file '{path}' line {number}: unknown column '{column}'.",
                              f"Columns are trainer options: {', '.join(COLUMNS)}.")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise ConfigError(f"Grid file '{path}' line {number}: column '{repeated[0]}' appears "
                          "twice.")
    return columns


def _parse_line(path: Path, number: int, columns: list[str], row: list[str],
                types: dict) -> GridLine:
    if len(row) != len(columns):
        raise ConfigError(f"Grid file '{path}' line {number}: {len(row)} values for "
                          f"{len(columns)} columns ({', '.join(columns)}).")
    params = {}
    for column, cell in zip(columns, row):
        text = cell.strip()
        try:
            params[column] = types[column](text)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise ConfigError(f"Grid file '{path}' line {number}: {column} '{text}' {exc}.",
                              "Fix that line; nothing was queued.") from None
    return GridLine(number, params)


def _check_duplicates(path: Path, lines: list[GridLine]) -> None:
    seen: dict[tuple, int] = {}
    for entry in lines:
        key = tuple(sorted(entry.params.items()))
        if key in seen:
            raise ConfigError(f"Grid file '{path}' line {entry.line} repeats line "
                              f"{seen[key]} ({_show(entry.params)}).",
                              "Each line must be a distinct run: change or remove one.")
        seen[key] = entry.line


def _show(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())
