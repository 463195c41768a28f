"""The engine's file reader on its own: columns and types from the signature, streamed
record batches, and one clear reason per file that cannot be scored."""
from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deployer.engine.reader import FileError, read_batches
from deployer.engine.signature import Column, SignatureError, read_signature

COLUMNS = [Column("a", "double"), Column("b", "long")]


def frames(path, batch_rows=65536):
    return list(read_batches(path, COLUMNS, batch_rows))


def test_csv_is_read_with_signature_types_in_signature_order(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('extra,"b",a\nq,1,1.5\nr,2,2\n')
    (frame,) = frames(path)
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].dtype == "float64" and frame["b"].dtype == "int64"
    assert frame.to_dict("list") == {"a": [1.5, 2.0], "b": [1, 2]}


def test_large_csv_streams_in_bounded_batches_in_order(tmp_path):
    path = tmp_path / "big.csv"
    pd.DataFrame({"a": [float(i) for i in range(200_000)], "b": range(200_000)}).to_csv(path, index=False)
    batches = frames(path, batch_rows=1024)
    assert len(batches) > 1
    assert max(len(b) for b in batches) < 200_000
    assert pd.concat(batches)["b"].tolist() == list(range(200_000))


def test_a_frame_gathers_small_read_blocks_up_to_batch_rows(tmp_path):
    # About 14 bytes per row: a 65,536-row frame is several of the small blocks Arrow reads
    # (and reads ahead), so `predict` sees few large frames while read-ahead stays small.
    path = tmp_path / "big.csv"
    pd.DataFrame({"a": [float(i % 1000) for i in range(300_000)],
                  "b": range(300_000)}).to_csv(path, index=False)
    batches = frames(path, batch_rows=65536)
    sizes = [len(b) for b in batches]
    assert all(size >= 65536 for size in sizes[:-1]) and 0 < sizes[-1]
    assert len(batches) <= 5 and max(sizes) < 2 * 65536
    assert pd.concat(batches)["b"].tolist() == list(range(300_000))


def test_parquet_by_row_group_with_numeric_casts(tmp_path):
    path = tmp_path / "x.parquet"
    table = pa.table({"b": pa.array([1, 2, 3], pa.int32()), "a": pa.array([1, 2, 3], pa.int64())})
    pq.write_table(table, path, row_group_size=2)
    batches = frames(path)
    assert pd.concat(batches).to_dict("list") == {"a": [1.0, 2.0, 3.0], "b": [1, 2, 3]}


@pytest.mark.parametrize("name, content, message", [
    ("x.json", b"{}", "File type '.json' is not supported"),
    ("x", b"a,b\n1,2\n", "File type 'x' is not supported"),
    ("x.csv", b"", "x.csv: the file is empty"),
    ("x.csv", b"a,c\n1,2\n", "x.csv: column 'b' is missing"),
    ("x.csv", b"a,b\n1,2\n1,2.5\n", "x.csv: column 'b' has the value '2.5' in data row 1, which is not a long"),
    ("x.csv", b"a,b\n\xff\xfe,1\n", "x.csv: the file is not UTF-8 text"),
])
def test_unreadable_files_fail_with_the_file_and_column_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(FileError) as info:
        frames(path)
    assert message in str(info.value)
    assert info.value.file_name == name


def test_parquet_with_a_string_column_is_refused(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": ["1.0"], "b": [1]}), path)
    with pytest.raises(FileError, match="column 'a' has type string; the model's signature expects double"):
        frames(path)


def test_header_only_csv_has_no_rows(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n")
    assert frames(path) == []


def test_a_model_without_signature_is_refused(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(SignatureError, match="has no input signature"):
        read_signature(tmp_path)


def test_a_byte_order_mark_and_windows_line_ends_are_accepted(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\r\n1.5,2\r\n")
    (frame,) = frames(path)
    assert frame.to_dict("list") == {"a": [1.5], "b": [2]}


def test_a_wrong_value_is_named_when_pyarrow_reads_with_one_thread(tmp_path):
    """With one CPU thread (OMP_NUM_THREADS=1 in a scoring process) pyarrow's message also
    carries its own row number; the file, column, value and data row are still named."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"a,b\n1,2\n1,2\n1,x\n")
    threads = pa.cpu_count()
    pa.set_cpu_count(1)
    try:
        with pytest.raises(FileError, match="column 'b' has the value 'x' in data row 2, which is not a long"):
            frames(path)
    finally:
        pa.set_cpu_count(threads)
