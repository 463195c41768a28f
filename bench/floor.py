"""The floor (a): one process, no framework around it — load the pyfunc model, read the
whole CSV with pyarrow (types from the signature), predict, write Azure ML's output format.

Usage: python -m bench.floor MODEL_DIR OUTPUT_CSV INPUT_CSV [INPUT_CSV ...]
"""
from __future__ import annotations

import sys


def main(model_dir: str, output: str, inputs: list[str]) -> None:
    import os

    import mlflow.pyfunc
    import pyarrow as pa
    import pyarrow.csv as pacsv

    model = mlflow.pyfunc.load_model(model_dir)
    columns = model.metadata.get_input_schema().input_names()
    types = {c: pa.float64() for c in columns}
    with open(output, "wb") as sink:
        for path in inputs:
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
            predictions = model.predict(table.select(columns).to_pandas())
            n = table.num_rows
            out = pa.table({"row": pa.array(range(n), pa.int64()),
                            "prediction": pa.array(predictions),
                            "file_name": pa.array([os.path.basename(path)] * n)})
            pacsv.write_csv(out, sink, write_options=pacsv.WriteOptions(include_header=False,
                                                                         quoting_style="none"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
