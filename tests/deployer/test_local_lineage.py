"""A model version registered on the local target links to its training run, not a copy."""
from __future__ import annotations

from pathlib import Path

import pytest

from deployer.app import Deployer
from workspace.tracking import TrackingStore

pytestmark = pytest.mark.azurite


def test_a_registered_version_links_to_the_training_run_itself(published_run, tmp_path):
    from mlflow import MlflowClient

    settings, store, run = published_run
    deployer = Deployer(settings, datastore=store)
    source = deployer.model_source(run, tmp_path / "download")
    model, change = deployer.backend.register_model(source, spec=deployer.specs.model)
    assert (model.version, change.action) == ("1", "create")

    tracking = TrackingStore(settings.local_path)
    client = MlflowClient(tracking.uri, tracking.uri)
    version = client.get_model_version(model.name, model.version)
    assert version.run_id == run.run_id  # the trainer's run id
    assert version.source == f"{tracking.artifact_uri(run.run_id)}/model"
    # One run in the store, the training run; no copy in an experiment of its own.
    experiments = client.search_experiments()
    assert sorted(e.name for e in experiments) == ["Default", "iris"]
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert [r.info.run_id for r in runs] == [run.run_id]
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"confusion_matrix.png", "model"}
    # The deployment scores with the registered files: the run's own model folder.
    _, _, path = deployer.backend._resolve_model(f"azureml:{model.name}:{model.version}")
    assert (Path(path) / "MLmodel").is_file()
