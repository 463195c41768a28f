"""Reading a sweep's grid: sizes checked while reading, lines split by the CSV parser."""
from __future__ import annotations

import subprocess
import sys

import pytest

from adf.sweep_grid import MAX_BYTES, MAX_CELL_CHARS, MAX_LINE_CHARS, MAX_LINES, load_grid
from workspace.errors import ConfigError, ExitCode
from workspace.settings import REPO_ROOT


def _refused(path) -> str:
    with pytest.raises(ConfigError) as error:
        load_grid(path)
    assert str(path) in error.value.message
    return error.value.message


def test_a_quoted_value_spanning_two_lines_is_refused_not_joined(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text('epochs,lr\n20,0.1\n"1\n0",0.1\n30,0.2\n')  # "1\n0" must not become 10
    assert "line 3: a quoted value spans lines 3 to 4" in _refused(grid)


def test_line_numbers_count_physical_lines_after_a_quoted_line_break(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text('"epochs","lr"\n20,0.1\n\n30,0.1\n30,fast\n')
    assert "line 5: lr 'fast' must be a number" in _refused(grid)


def test_reading_stops_at_the_line_limit(tmp_path):
    """Line MAX_LINES + 2 (the header is line 1) stops the reading: the bad value further
    down is never reached."""
    grid = tmp_path / "grid.csv"
    lines = [f"{1 + i % 10000},0.1,{i}" for i in range(MAX_LINES + 1)]
    grid.write_text("epochs,lr,seed\n" + "\n".join(lines) + "\n20,not-a-number,0\n")
    message = _refused(grid)
    assert f"more than {MAX_LINES} lines (stopped reading at line {MAX_LINES + 2})" in message


def test_an_overlong_line_is_refused_by_number_without_a_traceback(tmp_path):
    grid = tmp_path / "grid.csv"
    with grid.open("w") as out:
        out.write("epochs,lr\n20,0.1\n20,")
        out.write("1" * (2 * 1024 * 1024))  # past csv's own field limit (128 KiB)
        out.write("\n")
    assert f"line 3 is longer than {MAX_LINE_CHARS} characters" in _refused(grid)


def test_an_unclosed_quote_stops_at_the_value_limit(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text('epochs,lr\n20,"0.1\n' + "".join(f"{i},0.1\n" for i in range(30, 200)))
    message = _refused(grid)
    assert f"line 2: a value is longer than {MAX_CELL_CHARS} characters" in message


def test_a_file_over_the_byte_cap_is_refused_while_reading(tmp_path):
    """Fewer than MAX_LINES lines, each valid (padded with spaces), but more than MAX_BYTES."""
    grid = tmp_path / "grid.csv"
    pad = " " * (MAX_CELL_CHARS - 10)  # every value within its limit, every line too
    line = f"{pad}20,{pad}0.1,{pad}{{}},{pad}0.2\n"
    count = MAX_BYTES // len(line) + 10
    assert count < MAX_LINES and len(line) < MAX_LINE_CHARS
    grid.write_text("epochs,lr,seed,test_size\n" + "".join(line.format(i) for i in range(count)))
    assert f"is larger than {MAX_BYTES // 1024} KiB" in _refused(grid)


def test_line_ends_lf_and_crlf_are_read_and_a_lone_cr_is_named(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_bytes(b"epochs,lr\r\n20,0.1\r\n30,0.1\r\n")
    assert [g.line for g in load_grid(grid)] == [2, 3]
    grid.write_bytes(b"epochs,lr\r20,0.1\r30,0.1\r")
    assert "line 1: a line break inside a line (a carriage return" in _refused(grid)


def test_bad_utf8_names_its_line(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_bytes(b"epochs,lr\n20,0.1\n30,0.\xff\n")
    assert "line 3 is not UTF-8 text" in _refused(grid)


def test_the_cli_refuses_a_huge_cell_with_one_error_line(tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs,lr\n20," + "1" * (1024 * 1024) + "\n")
    result = subprocess.run([sys.executable, "-m", "adf", "sweep", "start", "--grid", str(grid)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "TARGET": "local",
                                 "LOCAL_DIR": str(tmp_path / "local")})
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Grid file '{grid}' line 2 is longer than {MAX_LINE_CHARS} characters" in result.stderr
