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
from itertools import repeat
from pathlib import Path

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


def score_minibatch(model, files: list[str], columns: list[Column], part_path: Path,
                    batch_rows: int) -> tuple[int, dict]:
    """Score every file of a mini-batch into part_path; returns (rows, {file: rows}).
    Raises FileError naming the first file that cannot be scored."""
    rows_per_file: dict[str, int] = {}
    with part_path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for file in files:
            name = Path(file).name
            row = 0
            try:
                for frame in read_batches(Path(file), columns, batch_rows):
                    predicted = _predictions(model.predict(frame))
                    if len(predicted) != len(frame):
                        raise FileError(name, f"the model returned {len(predicted)} predictions "
                                        f"for {len(frame)} rows.")
                    writer.writerows(zip(range(row, row + len(predicted)), predicted, repeat(name)))
                    row += len(predicted)
            except FileError:
                raise
            except Exception as exc:  # the model refused the data (schema enforcement, ...)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise FileError(name, f"scoring failed: {type(exc).__name__}: {message}") from exc
            rows_per_file[name] = row
    return sum(rows_per_file.values()), rows_per_file


def worker_main(conn, model_dir: str, columns: list[tuple], stdout_path: str, error_path: str,
                batch_rows: int) -> None:
    """Process entry point (multiprocessing, spawn)."""
    stdout_path, error_path = Path(stdout_path), Path(error_path)
    _redirect_output(stdout_path)
    cols = [Column(*c) for c in columns]
    started = time.perf_counter()
    try:
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(model_dir)
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, then exit
        _log_error(error_path, f"loading the model from {model_dir} failed:\n{traceback.format_exc()}")
        conn.send(("load_failed", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"))
        return
    print(f"process {os.getpid()}: model loaded in {time.perf_counter() - started:.2f} s", flush=True)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, attempt, files, part_path = message
        t0 = time.perf_counter()
        print(f"mini-batch {index} attempt {attempt}: {len(files)} file(s) "
              f"{', '.join(Path(f).name for f in files)}", flush=True)
        try:
            rows, per_file = score_minibatch(model, files, cols, Path(part_path), batch_rows)
        except FileError as exc:
            _log_error(error_path, f"mini-batch {index} attempt {attempt}: {exc}")
            print(f"mini-batch {index} attempt {attempt}: failed: {exc}", flush=True)
            conn.send(("failed", index, attempt, exc.file_name, exc.message))
            continue
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the mini-batch fails
            _log_error(error_path, f"mini-batch {index} attempt {attempt}:\n{traceback.format_exc()}")
            conn.send(("failed", index, attempt, "", f"{type(exc).__name__}: {exc}"))
            continue
        print(f"mini-batch {index} attempt {attempt}: {rows} rows in "
              f"{time.perf_counter() - t0:.3f} s", flush=True)
        conn.send(("done", index, attempt, rows, per_file))
