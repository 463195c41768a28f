"""A small MLflow pyfunc model for the engine's mechanics (retries, error thresholds,
broken links, timeouts, unreadable inputs): Iris by two petal thresholds, no scikit-learn.

Loading the trainer's model takes a scoring process about 4 s of CPU (MLflow, then
scikit-learn and skops); this one about 1.5 s. It has the trainer's model's signature, so
the engine checks the same columns. The trainer's own model is scored in the format,
parallel, streaming and end-to-end tests.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.pyfunc

with warnings.catch_warnings():  # MLflow's advice to type predict: the signature is given
    warnings.simplefilter("ignore", UserWarning)

    class PetalRuleModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            import numpy as np

            length, width = model_input["petal_length"], model_input["petal_width"]
            return np.where(length < 2.5, "setosa",
                            np.where(width < 1.75, "versicolor", "virginica"))


def save_rule_model(path: Path, signature_from: Path) -> Path:
    """Save the rule model at path with the signature of the MLflow model at signature_from."""
    from mlflow.models import Model

    with warnings.catch_warnings():  # MLflow's advice to add an input example
        warnings.simplefilter("ignore", UserWarning)
        mlflow.pyfunc.save_model(str(path), python_model=PetalRuleModel(),
                                 signature=Model.load(str(signature_from)).signature,
                                 pip_requirements=[])
    return path
