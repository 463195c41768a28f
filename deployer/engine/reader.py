"""Reading one input file the way Azure ML's MLflow batch scoring does, streamed.

`.csv` is read with its header row, `.parquet`/`.pqt` by row group; only the signature's
columns are kept (extra columns are ignored), typed as the signature says. Anything else
fails the file with Azure ML's message. Memory is bounded by `batch_rows`.

`folder_files` lists an input folder: the files a job reads, and every other entry (a
named pipe, a broken link, a link out of the folder) with why it is not read.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import re
import stat
from pathlib import Path
from typing import Iterator

from deployer.engine.signature import NUMERIC, Column

CSV_EXTENSIONS = {".csv"}
PARQUET_EXTENSIONS = {".parquet", ".pqt"}
DEFAULT_BATCH_ROWS = 65536
MIN_PIECE_BYTES = 4 << 20  # a CSV file is cut for parallel scoring into pieces no smaller
# ... and of about this size when it is large: pieces finish one after the other, so the
# processes stay evenly busy to the end and finished parts are uploaded while others run.
PIECE_BYTES = 8 << 20
READ_BLOCKS_PER_FRAME = 8


class FileError(Exception):
    """This input file cannot be scored; the message names the file and what is wrong."""

    def __init__(self, file_name: str, message: str):
        super().__init__(f"{file_name}: {message}")
        self.file_name = file_name
        self.message = message


def is_supported(path: Path) -> bool:
    return Path(path).suffix.lower() in CSV_EXTENSIONS | PARQUET_EXTENSIONS


def folder_files(folder: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files of an input folder a job reads (its top-level regular files, and links
    to such files inside it), in name order, and every other top-level entry but a
    subfolder as (name, why it is not read): nothing is skipped without a word."""
    root = Path(folder).resolve()
    files, refused = [], []
    for entry in sorted(Path(folder).iterdir(), key=lambda p: p.name):
        why = not_an_input_file(entry, root)
        if why is None:
            files.append(entry)
        elif why:  # "": a folder, not read (top-level files only)
            refused.append((entry.name, why))
    return files, refused


def not_an_input_file(entry: Path, root: Path) -> str | None:
    """None for a regular file the job may read (a symbolic link to one inside the input
    folder too); "" for a folder; otherwise why the entry is not read. A link that leaves
    the folder is never followed: Azure ML sees only what is inside an input folder, and
    a job must not read (and echo into its logs) a file it was not given."""
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError):
            return _broken_link(entry)
        if target.is_dir():
            return ""
        if not target.is_relative_to(root):
            return (f"a symbolic link to '{os.readlink(entry)}', outside the input folder; "
                    "only files inside the folder are read (Azure ML sees no others), so it "
                    "was not read")
        mode = target.stat().st_mode
    else:
        mode = entry.lstat().st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return ""
    kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file")
    return f"{kind}, not a regular file; it was not read"


def _broken_link(path: Path) -> str:
    """Why a symbolic link of an input folder is not a file it can read."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 raises this for a loop
        return "a symbolic link that loops; it was not read"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that loops; it was not read"
    return f"a symbolic link to '{os.readlink(path)}', which does not exist; it was not read"


def read_batches(path: Path, columns: list[Column], batch_rows: int = DEFAULT_BATCH_ROWS,
                 byte_range: tuple[int, int | None] | None = None) -> Iterator:
    """Yield pandas DataFrames of at most ~batch_rows rows with exactly the signature's
    columns, in file order; raise FileError for a file that cannot be scored.
    byte_range (CSV only): read just the data lines in [start, end) of the file (both at
    line starts, see `split_csv`), as if they followed the header line."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext in CSV_EXTENSIONS:
        yield from _read_csv(path, columns, batch_rows, byte_range)
    elif ext in PARQUET_EXTENSIONS:
        yield from _read_parquet(path, columns, batch_rows)
    else:
        raise FileError(path.name, f"File type '{ext or path.name}' is not supported. "
                        "Supported types are .csv and .parquet.")


# ---------------------------------------------------------------------- CSV


def _csv_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # a BOM is not a name
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise FileError(path.name, "the file is not UTF-8 text; a CSV file with a header row "
                        "is expected.")
    if not header or all(not name.strip() for name in header):
        raise FileError(path.name, "the file is empty; a CSV file needs a header row naming "
                        "the model's columns.")
    return header


def _check_columns(file_name: str, present: list[str], columns: list[Column]) -> None:
    missing = [c.name for c in columns if c.required and c.name not in present]
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise FileError(file_name, f"column {names} is missing (the model expects "
                        f"{', '.join(c.name for c in columns)}; the file has "
                        f"{', '.join(present) or 'no columns'}).")


def _read_csv(path: Path, columns: list[Column], batch_rows: int,
              byte_range: tuple[int, int | None] | None = None) -> Iterator:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    header = _csv_header(path)
    _check_columns(path.name, header, columns)
    wanted = [c for c in columns if c.name in header]
    types = {c.name: c.arrow_type() for c in wanted if c.arrow_type() is not None}
    # A frame of about batch_rows rows (at 16 bytes per row of a narrow numeric CSV; wider
    # rows give fewer) is parsed from READ_BLOCKS_PER_FRAME blocks: Arrow reads ahead some
    # 32 blocks, so small blocks keep that read-ahead small while `predict` still gets
    # large frames.
    frame_bytes = max(1 << 16, min(batch_rows * 16, 1 << 26))
    read = pacsv.ReadOptions(block_size=max(1 << 16, frame_bytes // READ_BLOCKS_PER_FRAME))
    convert = pacsv.ConvertOptions(column_types=types, include_columns=[c.name for c in wanted],
                                   strings_can_be_null=False)
    try:
        source = path if byte_range is None else _RangeStream(path, *byte_range)
        reader = pacsv.open_csv(source, read_options=read, convert_options=convert)
        gathered, rows = [], 0
        for batch in reader:
            if batch.num_rows:
                gathered.append(batch)
                rows += batch.num_rows
            if rows >= batch_rows:
                yield _to_frame(pa.Table.from_batches(gathered), columns)
                gathered, rows = [], 0
        if rows:
            yield _to_frame(pa.Table.from_batches(gathered), columns)
    except pa.ArrowInvalid as exc:
        raise _conversion_error(path, header, columns, exc) from None


class _RangeStream(io.RawIOBase):
    """The header line of a CSV file followed by the bytes [start, end) of the same file."""

    def __init__(self, path: Path, start: int, end: int | None):
        self.handle = open(path, "rb")
        header = self.handle.readline()
        if start < len(header):  # the first piece starts with the header itself
            header, start = b"", 0
        self.prefix = header
        self.handle.seek(start)
        self.left = None if end is None else end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.prefix:
            n = min(len(view), len(self.prefix))
            view[:n] = self.prefix[:n]
            self.prefix = self.prefix[n:]
            return n
        want = len(view) if self.left is None else min(len(view), self.left)
        if want <= 0:
            return 0
        n = self.handle.readinto(view[:want])
        if self.left is not None:
            self.left -= n
        return n

    def close(self) -> None:
        self.handle.close()
        super().close()


def split_csv(path: Path, pieces: int, min_piece_bytes: int = MIN_PIECE_BYTES,
              chunk_bytes: int = 8 << 20) -> list[tuple[int, int | None, int]]:
    """Cut a CSV file into up to `pieces` line-aligned byte ranges of about equal size:
    [(start, end, first data row)]; end None is the end of the file. A file that cannot be
    cut safely is one piece: a quote character (a quoted field may hold a newline), a
    carriage return or an empty line (row numbers could not be counted from newlines)."""
    path = Path(path)
    size = path.stat().st_size
    whole = [(0, None, 0)]
    if pieces <= 1 or size < 2 * min_piece_bytes:
        return whole
    pieces = min(pieces, size // min_piece_bytes)
    targets = [size * k // pieces for k in range(1, pieces)]
    cuts: list[tuple[int, int]] = []  # (byte offset of a line start, data rows before it)
    import numpy as np

    with open(path, "rb") as handle:
        header = handle.readline()
        offset, rows, previous = len(header), 0, b"\n"
        if not header.endswith(b"\n") or b'"' in header or b"\r" in header:
            return whole
        while True:
            chunk = handle.read(chunk_bytes)
            if not chunk:
                break
            # numpy scans without holding the GIL: this runs while the model loads.
            newlines = np.frombuffer(chunk, dtype=np.uint8) == 10
            if b'"' in chunk or b"\r" in chunk or (previous == b"\n" and chunk[:1] == b"\n") \
                    or np.any(newlines[1:] & newlines[:-1]):  # an empty line
                return whole
            while targets and targets[0] < offset + len(chunk):
                at = max(targets[0], offset) - offset
                newline = chunk.find(b"\n", at)
                if newline < 0:
                    break  # the next line start is in a later chunk
                cut = offset + newline + 1
                targets.pop(0)
                if cut < size and (not cuts or cut > cuts[-1][0]):
                    cuts.append((cut, rows + int(np.count_nonzero(newlines[:newline + 1]))))
            rows += int(np.count_nonzero(newlines))
            previous = chunk[-1:]
            offset += len(chunk)
    if not cuts:
        return whole
    starts = [(0, 0), *cuts]
    return [(start, starts[k + 1][0] if k + 1 < len(starts) else None, first)
            for k, (start, first) in enumerate(starts)]


def _conversion_error(path: Path, header: list[str], columns: list[Column], exc) -> FileError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    match = re.search(r"CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to (\w+): "
                      r"invalid value '(.*)'", text)
    if not match:
        return FileError(path.name, f"the file is not a readable CSV: {text}")
    index, to_type, value = int(match.group(1)), match.group(2), match.group(3)
    name = header[index] if index < len(header) else f"#{index}"
    expected = next((c.type for c in columns if c.name == name), to_type)
    row = _find_row(path, index, value)
    where = f" in data row {row}" if row is not None else ""
    return FileError(path.name, f"column '{name}' has the value '{value}'{where}, which is not "
                     f"a {expected}; the model's signature expects {expected} values in "
                     f"'{name}'. Fix or remove that row.")


def _find_row(path: Path, index: int, value: str) -> int | None:
    """The 0-based data row holding value in column index (error path only)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row, fields in enumerate(reader):
            if index < len(fields) and fields[index] == value:
                return row
    return None


# ---------------------------------------------------------------------- parquet


def _read_parquet(path: Path, columns: list[Column], batch_rows: int) -> Iterator:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileError(path.name, f"the file is not a readable parquet file: {_first_line(exc)}")
    schema = parquet.schema_arrow
    _check_columns(path.name, schema.names, columns)
    wanted = [c for c in columns if c.name in schema.names]
    for column in wanted:
        have = schema.field(column.name).type
        target = column.arrow_type()
        if target is None or have == target:
            continue
        numeric_have = pa.types.is_integer(have) or pa.types.is_floating(have)
        if not (column.type in NUMERIC and numeric_have):
            raise FileError(path.name, f"column '{column.name}' has type {have}; the model's "
                            f"signature expects {column.type}.")
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=[c.name for c in wanted]):
            if batch.num_rows:
                yield _to_frame(_cast(path, batch, wanted), columns)
    except pa.ArrowInvalid as exc:
        raise FileError(path.name, f"the file could not be read: {_first_line(exc)}")


def _cast(path: Path, batch, columns: list[Column]):
    import pyarrow as pa

    arrays = []
    for column in columns:
        array = batch.column(column.name)
        target = column.arrow_type()
        if target is not None and array.type != target:
            try:
                array = array.cast(target)  # safe cast: 1.5 → long fails
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise FileError(path.name, f"column '{column.name}' cannot be read as "
                                f"{column.type}: {_first_line(exc)}")
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in columns])


# ---------------------------------------------------------------------- common


def _to_frame(batch, columns: list[Column]):
    frame = batch.to_pandas()
    return frame[[c.name for c in columns if c.name in frame.columns]]


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
