"""Deterministic Iris-like scoring input: same seed, same bytes, any size."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# Per-class means and spreads of the real data set, so predictions cover every class.
CENTERS = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
SPREADS = np.array([[0.35, 0.38, 0.17, 0.1], [0.52, 0.31, 0.47, 0.2], [0.64, 0.32, 0.55, 0.27]])
CHUNK = 1_000_000


def write_csv(path: Path, rows: int, seed: int = 7) -> Path:
    """Write `rows` rows (header + one decimal per value) to path, once; reuse it after."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = Path(path)
    done = path.with_name(path.name + ".done")
    if path.exists() and done.exists() and done.read_text() == f"{rows} {seed}":
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    schema = pa.schema([(c, pa.float64()) for c in COLUMNS])
    with open(path, "wb") as sink:
        sink.write((",".join(COLUMNS) + "\n").encode())
        _write_rows(sink, rows, rng, schema, pa, pacsv)
    done.write_text(f"{rows} {seed}")
    return path


def _write_rows(sink, rows, rng, schema, pa, pacsv) -> None:
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pacsv.CSVWriter(sink, schema, write_options=options) as out:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            cls = rng.integers(0, 3, n)
            values = np.round(CENTERS[cls] + rng.standard_normal((n, 4)) * SPREADS[cls], 1)
            values = np.clip(values, 0.1, None)
            out.write_table(pa.table({c: values[:, i] for i, c in enumerate(COLUMNS)}, schema=schema))
