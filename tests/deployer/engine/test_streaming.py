"""Streaming changes no result: scoring a file in record batches, and in line-aligned byte
ranges side by side, writes byte for byte what scoring the whole file at once writes
(Azure ML's `row,prediction,file_name` lines, csv.writer's quoting), for CSV and parquet."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.tree import DecisionTreeClassifier

from deployer.engine.job import plan_minibatch
from deployer.engine.reader import read_batches, split_csv
from deployer.engine.signature import Column
from deployer.engine.worker import score_minibatch

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
COLUMNS = [Column(name, "double") for name in FEATURES]
ROWS = 20_000  # ~400 KB of CSV: several 64 KB read blocks, so several record batches
SMALL_BATCH = 1000


def features(rows: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(np.round(rng.uniform(0.1, 8.0, (rows, 4)), 1), columns=FEATURES)


def classifier(labels: list) -> DecisionTreeClassifier:
    """A real fitted model whose predictions are the given labels."""
    frame = features(300, seed=1)
    kinds = np.array(labels, dtype=object if isinstance(labels[0], str) else None)
    target = kinds[(frame["petal_length"] * 7).astype(int) % len(labels)]
    return DecisionTreeClassifier(max_depth=6, random_state=0).fit(frame, target)


def whole_file_output(model, frame: pd.DataFrame, name: str) -> bytes:
    """What Azure ML's format is for the file scored in one predict call."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows((i, p, name) for i, p in enumerate(model.predict(frame[FEATURES]).tolist()))
    return buffer.getvalue().encode()


def write_csv(path: Path, frame: pd.DataFrame, trailing_newline: bool) -> Path:
    text = frame.to_csv(index=False, lineterminator="\n")
    path.write_bytes((text if trailing_newline else text.rstrip("\n")).encode())
    return path


def streamed_output(model, items: list, tmp_path: Path, batch_rows: int = SMALL_BATCH) -> bytes:
    """Score each item into its own part file, as the worker processes do, and append the
    parts in order, as the job runner does. The rows per prediction each piece counted
    must be what a reader of the output counts."""
    from collections import Counter

    from deployer.report import summarize_predictions

    out, counted = b"", Counter()
    for k, item in enumerate(items):
        part = tmp_path / f"part{k}.csv"
        _, _, per_class = score_minibatch(model, [item], COLUMNS, part, batch_rows)
        counted.update(per_class)
        out += part.read_bytes()
    (tmp_path / "joined.csv").write_bytes(out)
    assert dict(sorted(counted.items())) == summarize_predictions(tmp_path / "joined.csv").per_class
    return out


# ---------------------------------------------------------------------- CSV, split into ranges


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_csv_ranges_cover_every_data_line_once_with_their_row_numbers(tmp_path, trailing_newline):
    frame = features(ROWS)
    path = write_csv(tmp_path / "x.csv", frame, trailing_newline)
    ranges = split_csv(path, 4, min_piece_bytes=16 << 10)
    assert len(ranges) == 4
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    assert ranges[0][0] == 0 and ranges[-1][1] is None
    lines = []
    for start, end, first_row in ranges:
        chunk = data[max(start, header_end):end]
        assert start == 0 or data[start - 1:start] == b"\n"  # a range starts at a line start
        assert first_row == len(lines)
        lines += chunk.decode().splitlines()
    assert lines == data[header_end:].decode().splitlines()


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_streamed_and_split_csv_scores_like_the_whole_file(tmp_path, trailing_newline):
    model = classifier(["setosa", "versicolor", "virginica"])
    frame = features(ROWS)
    path = write_csv(tmp_path / "iris.csv", frame, trailing_newline)
    expected = whole_file_output(model, frame, "iris.csv")

    batches = list(read_batches(path, COLUMNS, SMALL_BATCH))
    assert len(batches) > 3  # the file really is read in several record batches
    assert streamed_output(model, [str(path)], tmp_path) == expected

    pieces = [(str(path), s, e, r) for s, e, r in split_csv(path, 3, min_piece_bytes=16 << 10)]
    assert len(pieces) == 3
    assert streamed_output(model, pieces, tmp_path) == expected


def test_the_job_plans_a_large_csv_as_pieces_and_a_small_one_whole(tmp_path):
    big = write_csv(tmp_path / "big.csv", features(600_000), True)  # ~12 MB
    small = write_csv(tmp_path / "small.csv", features(100), True)
    plan = plan_minibatch([str(small), str(big)], workers=2)
    assert plan[0] == [str(small)]
    assert [item[0][0] for item in plan[1:]] == [str(big)] * 2
    assert plan_minibatch([str(small), str(big)], workers=1) == [[str(small), str(big)]]


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_quoted_fields_with_newlines_are_never_cut_and_score_like_the_whole_file(
        tmp_path, trailing_newline):
    model = classifier(["a", "b", "c"])
    frame = features(ROWS)
    frame.insert(0, "note", [f"line {i},\n\"quoted\"" if i % 7 == 0 else f"n{i}" for i in range(ROWS)])
    path = write_csv(tmp_path / "notes.csv", frame, trailing_newline)
    assert b'"' in path.read_bytes()
    assert split_csv(path, 4, min_piece_bytes=16 << 10) == [(0, None, 0)]
    expected = whole_file_output(model, frame, "notes.csv")
    assert streamed_output(model, [str(path)], tmp_path) == expected


@pytest.mark.parametrize("chunk_bytes", [7, 64, 1000, 4096])
@pytest.mark.parametrize("oddity", [b"\n\n", b"\r\n", b'"'])
def test_a_csv_with_an_empty_line_a_carriage_return_or_a_quote_is_never_cut(
        tmp_path, chunk_bytes, oddity):
    """Row numbers are counted from newlines, which such a file would throw off; wherever
    the oddity falls (also across the reading chunks), the file stays one piece."""
    data = write_csv(tmp_path / "x.csv", features(2000), True).read_bytes()
    assert split_csv(tmp_path / "x.csv", 4, min_piece_bytes=4096, chunk_bytes=chunk_bytes) != [(0, None, 0)]
    lines = data.split(b"\n")
    for at in (1, 700, 1999):  # after the first data line, in the middle, near the end
        odd = b"\n".join(lines[:at + 1]) + oddity + b"\n".join(lines[at + 1:])
        if oddity == b'"':
            odd = b"\n".join(lines[:at]) + b'\n"1.0",' + lines[at].split(b",", 1)[1] + b"\n" + \
                b"\n".join(lines[at + 1:])
        path = tmp_path / f"odd{at}.csv"
        path.write_bytes(odd)
        assert split_csv(path, 4, min_piece_bytes=4096, chunk_bytes=chunk_bytes) == [(0, None, 0)], at


@pytest.mark.parametrize("labels", [
    ["plain", "with,comma", 'with"quote'],
    ["multi\nline", "", "x"],
    [1, 2, 3],
    [True, False, True],
], ids=["comma-and-quote", "newline-and-empty", "integers", "booleans"])
def test_predictions_that_need_quoting_or_formatting_are_written_like_csv_writer(tmp_path, labels):
    model = classifier(labels)
    frame = features(ROWS)
    path = write_csv(tmp_path / "odd, name.csv", frame, True)  # the file name needs quoting too
    expected = whole_file_output(model, frame, "odd, name.csv")
    pieces = [(str(path), s, e, r) for s, e, r in split_csv(path, 2, min_piece_bytes=16 << 10)]
    assert streamed_output(model, pieces, tmp_path) == expected


def test_float_predictions_keep_their_python_formatting(tmp_path):
    frame = features(ROWS)
    model = LinearRegression().fit(frame, frame["petal_length"] * 0.37 + 0.1)
    path = write_csv(tmp_path / "reg.csv", frame, False)
    expected = whole_file_output(model, frame, "reg.csv")
    assert streamed_output(model, [str(path)], tmp_path) == expected


# ---------------------------------------------------------------------- parquet


def test_parquet_by_row_group_scores_like_the_whole_file(tmp_path):
    model = classifier(["setosa", "with,comma", "virginica"])
    frame = features(ROWS)
    path = tmp_path / "iris.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=3000)
    assert pq.ParquetFile(path).num_row_groups > 3
    expected = whole_file_output(model, frame, "iris.parquet")
    assert len(list(read_batches(path, COLUMNS, SMALL_BATCH))) >= ROWS // SMALL_BATCH
    assert streamed_output(model, [str(path)], tmp_path) == expected
    assert plan_minibatch([str(path)], workers=2) == [[str(path)]]  # parquet is never cut
