"""An MLflow pyfunc model for timeout tests: it wraps a real model and sleeps in predict.

`mode` in the model config: "once" sleeps `seconds` the first time any process predicts
(a marker file records it), so the retried mini-batch succeeds; "always" sleeps every time;
"gate" waits (at most `seconds`) until the marker file exists: the test says when the job
may go on, and it is running until then.
"""
from __future__ import annotations

import time
from pathlib import Path

import mlflow.pyfunc


class SlowModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.config = dict(context.model_config or {})
        self.inner = mlflow.pyfunc.load_model(context.artifacts["inner"])

    def predict(self, context, model_input, params=None):
        marker = Path(self.config["marker"])
        if self.config.get("mode") == "gate":
            deadline = time.monotonic() + float(self.config.get("seconds", 30))
            while not marker.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        elif self.config.get("mode") == "always" or not marker.exists():
            marker.touch()
            time.sleep(float(self.config.get("seconds", 30)))
        return self.inner.predict(model_input)


def save_slow_model(path: Path, inner_model_dir: Path, marker: Path, mode: str = "once",
                    seconds: float = 30) -> Path:
    from mlflow.models import Model

    signature = Model.load(str(inner_model_dir)).signature
    mlflow.pyfunc.save_model(str(path), python_model=SlowModel(),
                             artifacts={"inner": str(inner_model_dir)}, signature=signature,
                             model_config={"marker": str(marker), "mode": mode,
                                           "seconds": seconds},
                             pip_requirements=[])
    return path
