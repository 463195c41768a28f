"""A sweep's grid: a CSV whose columns are trainer options and whose lines are the runs.

The whole grid is checked before anything is queued; the first problem is one error
naming the file, the line (as an editor numbers it, the header being line 1) and what to
change. Values are checked with trainer/main.py's own option types (what the trainer
refuses, the grid refuses first).
"""
from __future__ import annotations

import argparse
import csv
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workspace.errors import ConfigError

MAX_LINES = 10_000
# Sizes checked while reading (a grid line is a few numbers: "40,0.05,7,0.25" is 14 bytes, so
# MAX_LINES lines take about 150 KiB): a wrong or hostile file is refused after at most
# MAX_BYTES read, never parsed whole.
MAX_BYTES = 1024 * 1024
MAX_LINE_CHARS = 1024      # one physical line
MAX_CELL_CHARS = 100       # one value (csv.field_size_limit)


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
    """Every line of the grid, typed; ConfigError naming the line on the first problem.

    Sizes are checked while reading, so an oversized file is refused after at most
    MAX_BYTES: no physical line over MAX_LINE_CHARS, no value over MAX_CELL_CHARS (a quoted
    value that never ends stops there), and reading stops at line MAX_LINES + 1."""
    path = Path(path)
    rows = _read_rows(path)
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
    _check_duplicates(path, lines)
    return lines


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The header and at most MAX_LINES non-blank rows, each with the line it starts on.

    Lines are split by the CSV parser (a quoted value may hold a line break, which is then
    refused by name), never before it."""
    try:
        with open(path, "rb") as handle, _field_size_limit(MAX_CELL_CHARS):
            physical = _SizedLines(path, handle)
            reader = csv.reader(physical)
            rows: list[tuple[int, list[str]]] = []
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader, None)
                except csv.Error as exc:
                    raise _cell_error(path, start, exc) from None
                if row is None:
                    return rows
                if not any(cell.strip() for cell in row):
                    continue
                _refuse_line_breaks(path, start, reader.line_num, row)
                rows.append((start, row))
                if len(rows) > MAX_LINES + 1:  # the header and MAX_LINES lines
                    raise ConfigError(f"Grid file '{path}' has more than {MAX_LINES} lines "
                                      f"(stopped reading at line {start}); at most "
                                      f"{MAX_LINES}.", "Split the grid into several sweeps.")
    except FileNotFoundError:
        raise ConfigError(f"Grid file '{path}' not found.",
                          "Pass --grid with a CSV such as data/sweep.csv.") from None
    except OSError as exc:
        raise ConfigError(f"Grid file '{path}' cannot be read: {exc.strerror or exc}.",
                          "Pass --grid with a readable CSV file.") from None


class _SizedLines:
    """The file's physical lines, decoded, for the CSV parser; an overlong line or file is
    refused as soon as it is read (never more than MAX_LINE_CHARS + 1 bytes at once)."""

    def __init__(self, path: Path, handle):
        self.path, self.handle = path, handle
        self.number = 0
        self.size = 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        data = self.handle.readline(MAX_LINE_CHARS + 1)
        if not data:
            raise StopIteration
        self.number += 1
        self.size += len(data)
        if len(data) > MAX_LINE_CHARS:
            raise ConfigError(f"Grid file '{self.path}' line {self.number} is longer than "
                              f"{MAX_LINE_CHARS} characters.",
                              "A grid line holds a few numbers; is this the right file?")
        if self.size > MAX_BYTES:
            raise ConfigError(f"Grid file '{self.path}' is larger than {MAX_BYTES // 1024} KiB "
                              f"(at line {self.number}); {MAX_LINES} lines of trainer options "
                              "take far less.", "Is this the right file?")
        try:
            return data.decode("utf-8-sig" if self.number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"Grid file '{self.path}' line {self.number} is not UTF-8 text "
                              f"({exc.reason}).") from None


@contextmanager
def _field_size_limit(limit: int):
    """The csv module's cap on one value (process-wide state, restored on the way out)."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _cell_error(path: Path, number: int, exc: csv.Error) -> ConfigError:
    if "field limit" in str(exc):
        return ConfigError(f"Grid file '{path}' line {number}: a value is longer than "
                           f"{MAX_CELL_CHARS} characters (an unclosed quote?).",
                           "Each value is one number; close every quote on its own line.")
    if "new-line character" in str(exc):  # lines split on a lone \r only (old Mac files)
        return ConfigError(f"Grid file '{path}' line {number}: a line break inside a line (a "
                           "carriage return without a line feed).",
                           "Save the grid with LF or CRLF line ends.")
    return ConfigError(f"Grid file '{path}' line {number}: not valid CSV ({exc}).")


def _refuse_line_breaks(path: Path, start: int, end: int, row: list[str]) -> None:
    """A quoted value spanning lines is not a number: refuse it rather than join the lines."""
    if any("\n" in cell or "\r" in cell for cell in row):
        raise ConfigError(f"Grid file '{path}' line {start}: a quoted value spans lines "
                          f"{start} to {end}.",
                          "Write each value on its line: close the quote before the line ends.")


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
