"""The local tracking store: a published run imported under the trainer's own run id."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from workspace.tracking import (EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_RUN_TAG,
                                TrackingStore, known_runs, sweep_run_id)

pytestmark = pytest.mark.azurite


def _client(tracking: TrackingStore):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.uri)


def test_a_published_run_is_imported_under_its_own_id_with_params_metrics_and_artifacts(
        published_run):
    settings, store, run = published_run
    tracking = TrackingStore(settings.local_path)
    result = tracking.sync(store, settings.model_prefix)
    assert result.imported == [run.run_id]

    client = _client(tracking)
    got = client.get_run(run.run_id)  # the trainer's run id, not a new one
    assert got.info.status == "FINISHED"
    assert got.info.run_name == run.logged["run_name"] and got.info.run_name
    assert got.info.start_time == run.logged["start_time"]
    assert got.info.end_time == run.logged["end_time"]
    assert got.data.params == {"epochs": "50", "lr": "0.1", "test_size": "0.2", "seed": "42",
                               "learner": "MLPClassifier(16, sgd)"}
    assert got.data.metrics["test_accuracy"] == run.metrics["test_accuracy"]
    assert got.data.metrics["test_rows"] == 30.0
    assert got.data.tags["data_sha256"] == run.data["sha256"]
    assert PARENT_RUN_TAG not in got.data.tags
    experiment = client.get_experiment(got.info.experiment_id)
    assert experiment.name == "iris"
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    top = {a.path for a in client.list_artifacts(run.run_id)}
    assert top == {"confusion_matrix.png", "model"}
    model = {a.path for a in client.list_artifacts(run.run_id, "model")}
    assert "model/MLmodel" in model
    local = Path(tracking.artifact_uri(run.run_id).removeprefix("file://"))
    assert (local / "model" / "MLmodel").is_file()

    # Once there, a run is never imported again; reading that needs no MLflow.
    assert known_runs(tracking.db_path) == {run.run_id}
    again = TrackingStore(settings.local_path).sync(store, settings.model_prefix)
    assert again.imported == [] and again.present == 1
    assert len(client.search_runs([got.info.experiment_id])) == 1


def test_a_sweeps_lines_are_child_runs_of_one_run_per_sweep(published_run):
    settings, store, run = published_run
    # Two lines of one sweep: the published run's manifest, rewritten as a sweep's.
    manifest = store.read_json(run.manifest_path)
    for line, run_id in ((1, "a" * 32), (2, "b" * 32)):
        prefix = f"{settings.model_prefix}/{run.experiment_id}/{run_id}"
        for rel in manifest["files"]:
            store.upload_bytes(store.read_bytes(f"{run.run_prefix}/{rel}"), f"{prefix}/{rel}")
        line_manifest = {**manifest, "run_id": run_id, "run_name": f"line-{line}",
                         "model_path": f"{prefix}/artifacts/model",
                         "sweep": {"id": "sw-20261206-x", "line": line}}
        store.upload_bytes(json.dumps(line_manifest).encode(), f"{prefix}/manifest.json")

    tracking = TrackingStore(settings.local_path)
    result = tracking.sync(store, settings.model_prefix)
    assert sorted(result.imported) == sorted([run.run_id, "a" * 32, "b" * 32])
    client = _client(tracking)
    parent = client.get_run(sweep_run_id("sw-20261206-x"))
    assert parent.info.run_name == "sw-20261206-x" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["line-1", "line-2"]
    assert {c.data.tags["sweep_line"] for c in children} == {"1", "2"}
    assert parent.info.start_time <= min(c.info.start_time for c in children)


def test_a_manifests_run_id_that_would_leave_the_store_is_refused(published_run, tmp_path):
    """The run id names the run's artifact folder: a manifest edited to '../..' is refused
    before any path is built from it, and nothing is written outside the store."""
    from dataclasses import replace

    from workspace.published import ManifestError

    settings, store, run = published_run
    tracking = TrackingStore(tmp_path / "store")
    for bad in ("../../../escaped", run.run_id.upper(), run.run_id + "0"):
        with pytest.raises(ManifestError, match="is not an MLflow run id"):
            tracking.import_run(store, replace(run, run_id=bad))
    assert not (tmp_path / "escaped").exists()
    assert tracking.import_run(store, run)
