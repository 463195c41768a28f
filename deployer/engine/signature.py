"""The model's input columns and types, read from its MLmodel file (no mlflow import)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from workspace.errors import ExitCode, ProjectError

# MLflow ColSpec types → pyarrow type names (pyarrow is imported where they are used).
ARROW_TYPES = {
    "double": "float64", "float": "float32", "long": "int64", "integer": "int32",
    "boolean": "bool_", "string": "string", "binary": "binary", "datetime": "timestamp",
}
NUMERIC = {"double", "float", "long", "integer"}


class SignatureError(ProjectError):
    """The model's signature cannot be read or used."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # MLflow type name: double, long, string, ...
    required: bool = True

    def arrow_type(self):
        import pyarrow as pa

        name = ARROW_TYPES.get(self.type)
        if name is None:
            return None
        if name == "timestamp":
            return pa.timestamp("ns")
        return getattr(pa, name)()


def read_signature(model_dir: Path) -> list[Column]:
    """The signature's input columns of the MLflow model in model_dir."""
    mlmodel = Path(model_dir) / "MLmodel"
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except FileNotFoundError:
        raise SignatureError(f"'{mlmodel}' is missing; '{model_dir}' is not an MLflow model.",
                             "Register the model again with `python -m deployer register-and-deploy`.")
    inputs = ((meta or {}).get("signature") or {}).get("inputs")
    if not inputs:
        raise SignatureError(f"The model in '{model_dir}' has no input signature.",
                             "Save it with a signature (mlflow.models.infer_signature); batch "
                             "scoring needs it to read columns with the right types.")
    columns = []
    for spec in json.loads(inputs):
        if "name" not in spec:
            raise SignatureError(f"The model in '{model_dir}' has a tensor signature; batch "
                                 "scoring of CSV/parquet files needs named columns.")
        columns.append(Column(spec["name"], spec.get("type", "string"), spec.get("required", True)))
    return columns
