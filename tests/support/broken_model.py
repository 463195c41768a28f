"""An MLflow pyfunc model that loads but cannot predict: what a broken release looks like
to a batch deployment (its environment or code fails at scoring time)."""
from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc


class BrokenModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("this model is broken on purpose")


def save_broken_model(path: Path, inner_model_dir: Path) -> Path:
    """A pyfunc model with the inner model's signature whose predict raises."""
    from mlflow.models import Model

    signature = Model.load(str(inner_model_dir)).signature
    mlflow.pyfunc.save_model(str(path), python_model=BrokenModel(), signature=signature,
                             pip_requirements=[])
    return path
