"""The application layer's own rules, without a backend: content digest, quality gate,
model path parsing and the prediction summary."""
from __future__ import annotations

import pytest

from deployer.app import (QualityGateError, _datastore_path, content_digest, prediction_stats)
from workspace.errors import ConfigError
from workspace.published import PublishedRun


def _run(**metrics) -> PublishedRun:
    return PublishedRun(manifest_path="models/1/r1/manifest.json", run_id="r1", experiment_id="1",
                        created="2026-01-01T00:00:00+00:00",
                        model_path="models/1/r1/artifacts/model", metrics=metrics)


def test_content_digest_depends_on_file_hashes_only():
    files = {"MLmodel": {"sha256": "a" * 64, "size": 1}, "model.skops": {"sha256": "b" * 64, "size": 2}}
    same = dict(reversed(list(files.items())))
    assert content_digest(files) == content_digest(same)
    changed = {**files, "model.skops": {"sha256": "c" * 64, "size": 2}}
    assert content_digest(changed) != content_digest(files)


def test_quality_gate():
    from deployer.app import Deployer

    assert Deployer.quality_gate(_run(test_accuracy=0.95, test_rows=30.0), 0.9, force=False) == ""
    with pytest.raises(QualityGateError, match=r"test_accuracy 0\.850, below the quality gate of 0\.9"):
        Deployer.quality_gate(_run(test_accuracy=0.85, test_rows=30.0), 0.9, force=False)
    with pytest.raises(QualityGateError, match="reports no test_accuracy"):
        Deployer.quality_gate(_run(), 0.9, force=False)
    assert "deployed anyway" in Deployer.quality_gate(_run(test_accuracy=0.5), 0.9, force=True)


def test_the_quality_gate_needs_enough_test_rows():
    """1.000 on 3 test rows says little (workspace/quality.py): refused unless forced, or
    unless the minimum is lowered; a run that does not record its test rows is refused."""
    from deployer.app import Deployer

    tiny = _run(test_accuracy=1.0, test_f1_macro=1.0, test_rows=3.0)
    with pytest.raises(QualityGateError) as error:
        Deployer.quality_gate(tiny, 0.9, force=False)
    assert error.value.message == ("Run r1 has test_accuracy 1.000 on only 3 test rows: the "
                                   "quality gate needs at least 30; it was not deployed.")
    assert "larger --test-size" in error.value.hint and "--min-test-rows" in error.value.hint
    assert Deployer.quality_gate(tiny, 0.9, force=True).endswith("(deployed anyway: --force).")
    assert Deployer.quality_gate(tiny, 0.9, force=False, min_test_rows=3) == ""
    assert Deployer.quality_gate(_run(test_accuracy=0.95, test_rows=29.0), 0.9, force=False,
                                 min_test_rows=29) == ""
    with pytest.raises(QualityGateError, match="29 test rows: the quality gate needs at least 30"):
        Deployer.quality_gate(_run(test_accuracy=0.95, test_rows=29.0), 0.9, force=False)
    with pytest.raises(QualityGateError, match="with no test_rows metric"):
        Deployer.quality_gate(_run(test_accuracy=0.95), 0.9, force=False)


def test_model_paths_are_datastore_paths():
    uri = "azureml://datastores/workspaceblobstore/paths/models/1/r1/artifacts/model"
    assert _datastore_path(uri, "workspaceblobstore") == "models/1/r1/artifacts/model"
    assert _datastore_path("/models/1/r1/artifacts/model/", "workspaceblobstore") == "models/1/r1/artifacts/model"
    with pytest.raises(ConfigError, match="names datastore 'other'"):
        _datastore_path(uri.replace("workspaceblobstore", "other"), "workspaceblobstore")
    with pytest.raises(ConfigError, match="is not a datastore path"):
        _datastore_path("s3://bucket/model", "workspaceblobstore")


def test_prediction_stats_counts_rows_classes_and_files(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("0,setosa,a.csv\n1,virginica,a.csv\n0,setosa,b.csv\n")
    stats = prediction_stats(path)
    assert stats.rows == 3
    assert stats.per_class == {"setosa": 2, "virginica": 1}
    assert stats.per_file == {"a.csv": 2, "b.csv": 1}
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert prediction_stats(empty).rows == 0


@pytest.mark.parametrize("kind, change, message", [
    ("endpoint", {"name": "9bad"}, "endpoint.yml: Endpoint name '9bad' is invalid"),
    ("deployment", {"name": "iris.mlflow"}, "deployment.yml: Deployment name 'iris.mlflow' is invalid"),
    ("deployment", {"endpoint_name": "other"}, "endpoint_name 'other' is not the endpoint"),
    ("deployment", {"compute": "azureml:gpu"}, "compute 'azureml:gpu' is not the cluster"),
    ("deployment", {"settings": {"mini_batch_size": 0}}, "settings.mini_batch_size is 0"),
    ("deployment", {"settings": {"mini_batch_size": 2, "retry_settings": {"timeout": "30s"}}},
     "settings.retry_settings.timeout is '30s'"),
    ("deployment", {"settings": {"mini_batch_size": 2, "output_action": "summary_only",
                                 "output_file_name": "p.csv"}},
     "summary_only cannot have an output_file_name"),
])
def test_specs_are_checked_before_anything_changes(kind, change, message):
    from deployer.app import validate_specs
    from deployer.spec import load_specs

    validate_specs(load_specs())  # the shipped specs are valid
    with pytest.raises(ConfigError, match=message):
        validate_specs(load_specs(overrides={kind: change}))
