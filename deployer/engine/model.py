"""Loading the deployment's MLflow model in the engine: one function for the job runner
(which loads it before forking its scoring processes) and for a spawned scoring process."""
from __future__ import annotations

from pathlib import Path

import yaml


def load_model(model_dir: str):
    """`mlflow.pyfunc.load_model`, as Azure ML's MLflow batch scoring loads the model.

    A scikit-learn model saved with skops (the trainer's) gets skops imported first: skops
    looks up the module of each scikit-learn type among all loaded modules when it is
    imported, and before MLflow's two thousand modules are loaded that takes about 0.7 s
    of CPU less on every job."""
    if serialization_format(model_dir) == "skops":
        try:
            import skops.io  # noqa: F401
        except ImportError:  # MLflow says what is missing
            pass
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_dir, suppress_warnings=True)


def serialization_format(model_dir: str) -> str | None:
    """The sklearn flavor's serialization_format in the model's MLmodel file, if any."""
    try:
        meta = yaml.safe_load((Path(model_dir) / "MLmodel").read_text()) or {}
        return ((meta.get("flavors") or {}).get("sklearn") or {}).get("serialization_format")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
