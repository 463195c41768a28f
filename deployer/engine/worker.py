"""A scoring process: loads the MLflow model once, then scores the mini-batches it is sent.

Like an Azure ML batch scoring process, it calls `predict` per file (per record batch of
a file, which gives the same rows for a row-wise model with bounded memory), writes
`row,prediction,file_name` lines in input order to the mini-batch's part file, and
reports success or the first failing file. Its stdout and stderr go to
`logs/user/stdout/<node>/process<N>.stdout.txt`, failures also to
`logs/user/error/<node>/process<N>.txt`.
"""
from __future__ import annotations

import csv
import os
import sys
import time
import traceback
from collections import Counter
from itertools import repeat
from pathlib import Path

from deployer.engine.messages import Done, Failed, LoadFailed, Ready, Rows
from deployer.engine.reader import FileError, read_batches
from deployer.engine.signature import Column


def _redirect_output(stdout_path: Path) -> None:
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _log_error(error_path: Path, text: str) -> None:
    error_path.parent.mkdir(parents=True, exist_ok=True)
    with error_path.open("a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text.rstrip()}\n")


def _predictions(result) -> list:
    """predict()'s result as a flat list of values (one per input row)."""
    if hasattr(result, "columns"):  # DataFrame
        result = result.iloc[:, 0] if len(result.columns) == 1 else result.to_numpy().tolist()
    if hasattr(result, "tolist"):
        result = result.tolist()
    return [v if not isinstance(v, list) else (v[0] if len(v) == 1 else str(v)) for v in result]


def _prediction_column(result):
    """predict()'s result as a pyarrow string array written exactly as `csv.writer` writes
    `str(value)`, or None when that cannot be done without Python per value (floats, bools,
    nested values, missing values: those take the csv.writer path)."""
    import numpy as np
    import pyarrow as pa

    if hasattr(result, "columns"):
        if len(result.columns) != 1:
            return None
        result = result.iloc[:, 0]
    values = np.asarray(result)
    if values.ndim != 1:
        return None
    if values.dtype.kind in "iu":
        return pa.array(values).cast(pa.string())
    if values.dtype.kind == "U":
        return pa.array(values, pa.string())
    if values.dtype.kind == "O":  # class labels: few distinct values, encoded once each
        import pandas as pd

        codes, labels = pd.factorize(values, use_na_sentinel=True)
        if (codes < 0).any() or not all(type(v) is str for v in labels):
            return None
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)),
                                              pa.array(list(labels), pa.string()))
    return None


class PartWriter:
    """`row,prediction,file_name` lines in csv.writer's format (minimal quoting, "\n").
    Batches are formatted by pyarrow when no value needs quoting, by csv.writer otherwise:
    the bytes are the same either way. `per_class` counts the rows per prediction as
    written (the value a reader of the file sees), for the job's summary."""

    def __init__(self, handle):
        import pyarrow.csv as pacsv

        self.handle = handle
        self.writer = csv.writer(handle, lineterminator="\n")
        self.options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        self.per_class: Counter = Counter()

    def write(self, first_row: int, result, count: int, name: str) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.csv as pacsv

        column = _prediction_column(result)
        if column is not None and len(column) == count:
            table = pa.table({
                "row": pa.array(np.arange(first_row, first_row + count, dtype=np.int64)),
                "prediction": column,
                "file_name": pa.DictionaryArray.from_arrays(
                    pa.array(np.zeros(count, dtype=np.int32)), pa.array([name])),
            })
            sink = pa.BufferOutputStream()
            try:
                pacsv.write_csv(table, sink, write_options=self.options)
            except pa.ArrowInvalid:  # a value needs quoting: csv.writer does it
                pass
            else:
                self.handle.flush()
                self.handle.buffer.write(sink.getvalue())
                _count_column(self.per_class, column)
                return
        predicted = _predictions(result)
        self.writer.writerows(zip(range(first_row, first_row + count), predicted, repeat(name)))
        # What csv.writer writes for a value: "" for None, str() otherwise.
        self.per_class.update("" if v is None else str(v) for v in predicted)


def _count_column(totals: Counter, column) -> None:
    """Add a pyarrow prediction column's rows per value to totals."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.DictionaryArray):  # few labels: count the codes
        counts = np.bincount(column.indices.to_numpy(zero_copy_only=False),
                             minlength=len(column.dictionary))
        for label, n in zip(column.dictionary.to_pylist(), counts.tolist()):
            if n:
                totals[label] += n
        return
    counted = pc.value_counts(column)
    for value, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
        totals[value] += n


def _count(result) -> int:
    return len(result) if hasattr(result, "__len__") else len(list(result))


def score_minibatch(model, files: list, columns: list[Column], part_path: Path,
                    batch_rows: int, on_rows=None) -> tuple[int, dict, dict]:
    """Score every input of a mini-batch (or one piece of it) into part_path; returns
    (rows, {file: rows}, {prediction: rows}). An input is a file path, or (path, byte_start, byte_end,
    first_row) for a line-aligned byte range of a CSV file. Raises FileError naming the
    first file that cannot be scored."""
    rows_per_file: dict[str, int] = {}
    with part_path.open("w", newline="") as out:
        writer = PartWriter(out)
        for item in files:
            file, byte_range, first_row = _input_item(item)
            name = Path(file).name
            row = first_row
            try:
                for frame in read_batches(Path(file), columns, batch_rows, byte_range=byte_range):
                    result = model.predict(frame)
                    count = _count(result)
                    if count != len(frame):
                        raise FileError(name, f"the model returned {count} predictions "
                                        f"for {len(frame)} rows.")
                    writer.write(row, result, count, name)
                    row += count
                    if on_rows is not None:
                        on_rows(count)
            except FileError:
                raise
            except Exception as exc:  # the model refused the data (schema enforcement, ...)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise FileError(name, f"scoring failed: {type(exc).__name__}: {message}") from exc
            rows_per_file[name] = rows_per_file.get(name, 0) + row - first_row
    return sum(rows_per_file.values()), rows_per_file, dict(writer.per_class)


def _input_item(item) -> tuple[str, tuple | None, int]:
    if isinstance(item, (list, tuple)):
        file, start, end, first_row = item
        return file, (start, end), first_row
    return item, None, 0


def worker_main(conn, model_dir: str, columns: list[tuple], stdout_path: str, error_path: str,
                batch_rows: int, model=None) -> None:
    """Process entry point: spawned (loads the model) or forked from the job runner with
    the model it has loaded (`processes.ForkedProcess`: it has closed every descriptor
    but its socket, so the runner's part files and connections are not held here)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the runner's cancel handler
    stdout_path, error_path = Path(stdout_path), Path(error_path)
    _redirect_output(stdout_path)
    import pyarrow as pa

    # Arrow's default allocator keeps the pages of freed record batches; malloc gives them
    # back (as fast here), so a process's memory stays at about one batch.
    pa.set_memory_pool(pa.system_memory_pool())
    cols = [Column(*c) for c in columns]
    started = time.perf_counter()
    if model is None:
        try:
            from deployer.engine.model import load_model

            # The deployment checked this environment against the model's requirements.
            model = load_model(model_dir)
        except BaseException as exc:  # noqa: BLE001 - reported to the runner, then exit
            _log_error(error_path, f"loading the model from {model_dir} failed:\n{traceback.format_exc()}")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            conn.send(LoadFailed(f"{type(exc).__name__}: {first}"))
            return
        print(f"process {os.getpid()}: model loaded in {time.perf_counter() - started:.2f} s", flush=True)
    else:
        print(f"process {os.getpid()}: started with the model loaded by the job runner", flush=True)
    conn.send(Ready(os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, attempt, piece, items, part_path = (message.index, message.attempt, message.piece,
                                                   message.items, message.part_path)
        t0 = time.perf_counter()
        print(f"mini-batch {index} attempt {attempt} piece {piece}: {_describe(items)}", flush=True)
        try:
            rows, per_file, per_class = score_minibatch(model, items, cols, Path(part_path), batch_rows,
                                             on_rows=lambda n: conn.send(Rows(n)))
        except FileError as exc:
            _log_error(error_path, f"mini-batch {index} attempt {attempt}: {exc}")
            print(f"mini-batch {index} attempt {attempt}: failed: {exc}", flush=True)
            conn.send(Failed(index, attempt, piece, part_path, exc.file_name, exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the mini-batch fails
            _log_error(error_path, f"mini-batch {index} attempt {attempt}:\n{traceback.format_exc()}")
            conn.send(Failed(index, attempt, piece, part_path, "", f"{type(exc).__name__}: {exc}"))
            continue
        print(f"mini-batch {index} attempt {attempt} piece {piece}: {rows} rows in "
              f"{time.perf_counter() - t0:.3f} s", flush=True)
        conn.send(Done(index, attempt, piece, part_path, rows, per_file, per_class))


def _describe(items: list) -> str:
    names = []
    for item in items:
        file, byte_range, first_row = _input_item(item)
        names.append(Path(file).name if byte_range is None else
                     f"{Path(file).name} bytes {byte_range[0]}-{byte_range[1] or 'end'} "
                     f"(from row {first_row})")
    return f"{len(items)} file(s) {', '.join(names)}"
