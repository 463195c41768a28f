"""Reading published models from a real Azurite: bad manifests and unsafe paths."""
from __future__ import annotations

import hashlib
import json

import pytest

from workspace.published import (MANIFEST_FORMAT, ManifestError, ModelNotFound, download_model,
                                 find_published_run, list_published_runs)

PREFIX = "models"


def _publish(store, run_id: str, created: str, *, files: dict | None = None,
             manifest: dict | None = None, raw: bytes | None = None, adf: dict | None = None) -> str:
    """A run as the trainer lays it out: artifacts, then manifest.json."""
    run_prefix = f"{PREFIX}/1/{run_id}"
    entries = {}
    for rel, content in (files or {"artifacts/model/MLmodel": b"flavors: {}\n"}).items():
        if rel == "artifacts/model/MLmodel":  # the others are only listed (some are no blob name)
            store.upload_bytes(content, f"{run_prefix}/{rel}")
        entries[rel] = {"sha256": hashlib.sha256(content).hexdigest(), "size": len(content)}
    body = {"format": MANIFEST_FORMAT, "run_id": run_id, "experiment_id": "1",
            "created": created, "model_path": f"{run_prefix}/artifacts/model", "files": entries,
            **({"adf": adf} if adf else {}), **(manifest or {})}
    name = f"{run_prefix}/manifest.json"
    store.upload_bytes(raw if raw is not None else json.dumps(body).encode(), name)
    return name


def test_a_bad_manifest_elsewhere_is_skipped_with_a_warning_naming_it(datastore, capsys):
    _publish(datastore, "good", "2024-01-01T00:00:00+00:00")
    not_json = _publish(datastore, "notjson", "2024-01-02T00:00:00+00:00", raw=b"{oops")
    lacking = _publish(datastore, "lacking", "2024-01-03T00:00:00+00:00",
                       manifest={"model_path": None})
    no_key = _publish(datastore, "nokey", "2024-01-04T00:00:00+00:00")
    body = json.loads(datastore.read_bytes(no_key))
    del body["created"]
    datastore.upload_bytes(json.dumps(body).encode(), no_key)

    assert find_published_run(datastore, PREFIX, "good").run_id == "good"
    warnings = capsys.readouterr().err
    assert f"{datastore.container}/{not_json}" in warnings and "is not JSON" in warnings
    assert f"{datastore.container}/{lacking}" in warnings
    assert f"{datastore.container}/{no_key}" in warnings and "lacks created" in warnings
    assert find_published_run(datastore, PREFIX).run_id == "good"

    with pytest.raises(ManifestError, match="is not JSON"):
        find_published_run(datastore, PREFIX, "notjson")


def test_a_bad_manifest_among_a_sweeps_runs_is_skipped_with_the_same_warning(datastore, capsys):
    """register-and-deploy --sweep reads the sweep's runs from their manifests: one that
    is not JSON (or not a trainer's) is skipped as the plain path skips it, not a traceback."""
    from workspace.sweep_runs import sweep_runs

    sweep = {"sweep": {"id": "sw-20260101-000000", "line": 1}}
    _publish(datastore, "good", "2024-01-01T00:00:00+00:00", manifest=sweep)
    not_json = _publish(datastore, "notjson", "2024-01-02T00:00:00+00:00", raw=b"{oops")
    not_object = _publish(datastore, "list", "2024-01-03T00:00:00+00:00", raw=b"[1, 2]")
    no_key = _publish(datastore, "nokey", "2024-01-04T00:00:00+00:00",
                      manifest={"sweep": {"id": "sw-20260101-000000", "line": 2}})
    body = json.loads(datastore.read_bytes(no_key))
    del body["created"]
    datastore.upload_bytes(json.dumps(body).encode(), no_key)

    runs = sweep_runs(datastore, PREFIX, "latest")
    assert [(r.line, r.run.run_id) for r in runs] == [(1, "good")]
    warnings = capsys.readouterr().err
    assert (f"warning: skipped {datastore.container}/{not_json}: Manifest '{not_json}' is not "
            "JSON") in warnings
    assert f"warning: skipped {datastore.container}/{no_key}: " in warnings
    assert "lacks created" in warnings
    assert not_object not in warnings  # JSON, not a sweep's run: not one of its manifests
    list_published_runs(datastore, PREFIX)
    plain = capsys.readouterr().err
    assert f"warning: skipped {datastore.container}/{not_json}: Manifest '{not_json}' is not " \
           "JSON" in plain


@pytest.mark.parametrize("key", ["artifacts/model/../../x", "/etc/x", "artifacts/model/./MLmodel",
                                 "artifacts\\model\\..\\..\\x", "artifacts/model//x"])
def test_a_key_that_leaves_the_model_folder_is_refused_before_any_download(datastore, tmp_path,
                                                                           key, capsys):
    _publish(datastore, "evil", "2024-01-01T00:00:00+00:00",
             files={"artifacts/model/MLmodel": b"flavors: {}\n", key: b"payload"})
    with pytest.raises(ManifestError, match="leaves the run's folder"):
        find_published_run(datastore, PREFIX, "evil")
    assert list_published_runs(datastore, PREFIX) == []
    assert "leaves the run's folder" in capsys.readouterr().err

    # A PublishedRun built by hand is checked too, before anything is written.
    from workspace.published import PublishedRun

    run = PublishedRun(manifest_path=f"{PREFIX}/1/evil/manifest.json", run_id="evil",
                       experiment_id="1", created="", model_path=f"{PREFIX}/1/evil/artifacts/model",
                       files={"artifacts/model/MLmodel": {"sha256": "0"}, key: {"sha256": "0"}})
    dest = tmp_path / "deep" / "tmp" / "model"
    with pytest.raises(ManifestError):
        download_model(datastore, run, dest)
    assert not (tmp_path / "deep").exists() and not (tmp_path / "x").exists()


def test_a_model_path_outside_the_run_is_refused(datastore):
    _publish(datastore, "moved", "2024-01-01T00:00:00+00:00",
             manifest={"model_path": "models/1/other/artifacts/model"})
    with pytest.raises(ManifestError, match="is not inside the run's folder"):
        find_published_run(datastore, PREFIX, "moved")


def test_a_model_whose_pipeline_run_failed_is_skipped_or_refused(datastore, capsys):
    _publish(datastore, "ok", "2024-01-01T00:00:00+00:00",
             adf={"pipeline_run_id": "p1", "batch_task_id": "a1"})
    _publish(datastore, "failed", "2024-01-02T00:00:00+00:00",
             adf={"pipeline_run_id": "p2", "batch_task_id": "a2"})
    verdicts = {"p1": None, "p2": "its pipeline run p2 is Failed"}

    def check(adf):
        return verdicts[adf["pipeline_run_id"]]

    assert find_published_run(datastore, PREFIX, check=check).run_id == "ok"
    assert "its pipeline run p2 is Failed" in capsys.readouterr().err
    with pytest.raises(ModelNotFound, match="Run 'failed' is not usable: its pipeline run p2"):
        find_published_run(datastore, PREFIX, "failed", check=check)
    assert find_published_run(datastore, PREFIX).run_id == "failed"  # no check: newest
