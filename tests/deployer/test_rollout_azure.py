"""Safe rollout and the `invoke` overrides on the Azure target: the application's rollout
over the real azure-ai-ml client, against the Azure ML fake (tests/support/fake_azureml.py)
with the workspace datastore on Azurite. Request bodies and their order are asserted."""
from __future__ import annotations

from dataclasses import replace

import uuid

import pytest

from deployer.entities import JobOverrides
from deployer.plan import plan_line
from deployer.rollout import SMOKE_INPUT, SMOKE_LABELS, Rollout, SmokeTestError, RollbackRefused
from deployer.spec import load_specs
from tests.support.fake_azureml import FakeJob
from tests.deployer.test_azure_backend import (WS_PATH, azure_settings, backend, blob_store,  # noqa: F401
                                       fake, sleeps, source, specs)
from workspace.errors import ConfigError, NotFound
from workspace.published import PublishedRun
from workspace.settings import Settings

EXPECTED = SMOKE_LABELS.read_text().split()
REMOTE = "azureml://datastores/workspaceblobstore/paths/x.csv"


@pytest.fixture
def azure(backend, fake, specs, blob_store):
    """The backend with its cluster and endpoint, and smoke jobs whose predictions are
    right unless `fake.wrong_for` names the deployment."""
    backend._datastore = blob_store
    backend.ensure_compute(specs.compute)
    backend.ensure_endpoint(specs.endpoint)
    fake.wrong_for = set()

    def write_predictions(job):
        labels = ["setosa"] * len(EXPECTED) if job.deployment in fake.wrong_for else EXPECTED
        lines = "".join(f"{i},{label},{SMOKE_INPUT.name}\n" for i, label in enumerate(labels))
        blob_store.outputs.upload_bytes(lines.encode(), fake.output_path(job) + "predictions.csv")

    fake.on_complete = write_predictions
    return backend


def release(backend, specs, digest: str, run: str, **options):
    model, _ = backend.register_model(source(digest * 64, run), spec=specs.model)
    return Rollout(backend, "iris-batch").deploy(specs.deployment, model, dry_run=False, **options)


def default(fake) -> str:
    return fake.endpoints["iris-batch"]["properties"]["defaults"]["deploymentName"]


def writes_since(fake, before: int) -> list[tuple[str, str]]:
    """PUTs and DELETEs, and job submissions (the data-plane POSTs of a download only read)."""
    return [(r.method, r.path.removeprefix(WS_PATH)) for r in fake.requests[before:]
            if r.method in ("PUT", "DELETE") or (r.method == "POST" and r.path == "/jobs")]


def test_each_version_gets_a_deployment_smoke_tested_before_it_becomes_the_default(
        azure, fake, specs):
    before = len(fake.requests)
    changes, smoke = release(azure, specs, "a", "run1")

    assert [(c.kind, c.name, c.action) for c in changes] == [
        ("deployment", "iris-mlflow-v1", "create"), ("smoke", "iris-mlflow-v1", "passed"),
        ("default-deployment", "iris-batch", "update")]
    assert smoke.accuracy == 1.0 and smoke.rows == len(EXPECTED)
    writes = writes_since(fake, before)
    assert writes[0] == ("PUT", "/models/iris-classifier/versions/1")
    assert writes[1] == ("PUT", "/batchEndpoints/iris-batch/deployments/iris-mlflow-v1")
    # the smoke job is routed to the new deployment, before the default is set
    (post,) = [r for r in fake.requests[before:] if r.method == "POST" and r.path == "/jobs"]
    assert post.headers["azureml-model-deployment"] == "iris-mlflow-v1"
    assert post.body["properties"]["inputData"]["UriFile"]["uri"].endswith("/smoke.csv")
    assert writes[2:] == [("POST", "/jobs"),
                          ("PUT", "/batchEndpoints/iris-batch/deployments/iris-mlflow-v1"),
                          ("PUT", "/batchEndpoints/iris-batch")]
    tagged = fake.find("PUT", "/deployments/iris-mlflow-v1")[-1].body
    assert tagged["tags"]["smoke"] == "passed" and tagged["tags"]["smoke_job"] == smoke.job.name
    assert tagged["properties"]["model"]["assetId"].endswith("/models/iris-classifier/versions/1")
    endpoint_put = fake.find("PUT", "/batchEndpoints/iris-batch")[-1].body
    assert endpoint_put["properties"]["defaults"] == {"deploymentName": "iris-mlflow-v1"}

    # The same model again: nothing is written.
    before = len(fake.requests)
    changes, smoke = release(azure, specs, "a", "run1")
    assert {c.action for c in changes} == {"no-op"} and smoke is None
    assert writes_since(fake, before) == []


def test_a_failing_smoke_test_leaves_the_default_and_the_next_good_release_prunes(
        azure, fake, specs):
    release(azure, specs, "a", "run1")
    fake.wrong_for = {"iris-mlflow-v2"}
    before = len(fake.requests)

    with pytest.raises(SmokeTestError) as err:
        release(azure, specs, "b", "run2")
    assert err.value.exit_code == 6
    assert "Smoke test of deployment iris-mlflow-v2 failed (job batchjob-" in str(err.value)
    assert "accuracy 0.333 on the 15 known rows is below the quality gate of 0.9" in str(err.value)
    assert default(fake) == "iris-mlflow-v1"
    assert not [w for w in writes_since(fake, before) if w[1] == "/batchEndpoints/iris-batch"]
    failed = fake.deployments[("iris-batch", "iris-mlflow-v2")]
    assert failed["tags"]["smoke"] == "failed"  # left for inspection

    with pytest.raises(RollbackRefused, match="failed its last smoke test"):
        Rollout(azure, "iris-batch").rollback(to="iris-mlflow-v2")

    before = len(fake.requests)
    changes, _ = release(azure, specs, "c", "run3")
    assert [(c.kind, c.name, c.action) for c in changes][2:] == [
        ("default-deployment", "iris-batch", "update"), ("deployment", "iris-mlflow-v2", "delete")]
    assert default(fake) == "iris-mlflow-v3"
    deletes = [w for w in writes_since(fake, before) if w[0] == "DELETE"]
    assert deletes == [("DELETE", "/batchEndpoints/iris-batch/deployments/iris-mlflow-v2")]
    assert sorted(n for _, n in fake.deployments) == ["iris-mlflow-v1", "iris-mlflow-v3"]

    # rollback: the previous version serves again; a dry run only plans it.
    planned = Rollout(azure, "iris-batch").rollback(dry_run=True)
    assert [(c.kind, c.action, c.detail) for c in planned] == [
        ("default-deployment", "update", "iris-mlflow-v3 → iris-mlflow-v1")]
    assert default(fake) == "iris-mlflow-v3"
    Rollout(azure, "iris-batch").rollback()
    assert default(fake) == "iris-mlflow-v1"
    assert fake.find("PUT", "/batchEndpoints/iris-batch")[-1].body["properties"]["defaults"] == {
        "deploymentName": "iris-mlflow-v1"}


def test_rollback_goes_to_what_served_before_and_the_endpoint_carries_the_history(
        azure, fake, specs):
    """v1, v2, rollback (v2 → v1), v3: v3 serves, v1 (restored by the rollback) is kept as
    the candidate and v2 (rolled back from) is deleted; the history of defaults travels
    in the endpoint's tags, in the same PUT that moves the default."""
    release(azure, specs, "a", "run1")
    release(azure, specs, "b", "run2")
    put = fake.find("PUT", "/batchEndpoints/iris-batch")[-1].body
    assert put["properties"]["defaults"] == {"deploymentName": "iris-mlflow-v2"}
    assert put["tags"] == {"rollout.previous.1": "iris-mlflow-v1"}

    Rollout(azure, "iris-batch").rollback()
    put = fake.find("PUT", "/batchEndpoints/iris-batch")[-1].body
    assert put["properties"]["defaults"] == {"deploymentName": "iris-mlflow-v1"}
    assert put["tags"] == {"rollout.rolled_back.1": "iris-mlflow-v2"}
    with pytest.raises(NotFound, match="iris-mlflow-v2: rolled back from"):
        Rollout(azure, "iris-batch").rollback(dry_run=True)

    changes, _ = release(azure, specs, "c", "run3")
    assert [(c.kind, c.name, c.action) for c in changes][2:] == [
        ("default-deployment", "iris-batch", "update"), ("deployment", "iris-mlflow-v2", "delete")]
    put = fake.find("PUT", "/batchEndpoints/iris-batch")[-1].body
    assert put["properties"]["defaults"] == {"deploymentName": "iris-mlflow-v3"}
    assert put["tags"] == {"rollout.previous.1": "iris-mlflow-v1"}  # v2 goes: not named
    assert sorted(n for _, n in fake.deployments) == ["iris-mlflow-v1", "iris-mlflow-v3"]

    Rollout(azure, "iris-batch").rollback()
    assert default(fake) == "iris-mlflow-v1"
    with pytest.raises(NotFound, match="iris-mlflow-v3: rolled back from"):
        Rollout(azure, "iris-batch").rollback()
    # an endpoint.yml change keeps the history
    azure.ensure_endpoint(load_specs(overrides={"endpoint": {"description": "Iris, batch."}}).endpoint)
    assert fake.endpoints["iris-batch"]["tags"] == {"rollout.rolled_back.1": "iris-mlflow-v3"}


def test_cleanup_failed_deletes_the_new_deployment(azure, fake, specs):
    release(azure, specs, "a", "run1")
    fake.wrong_for = {"iris-mlflow-v2"}
    with pytest.raises(SmokeTestError):
        release(azure, specs, "b", "run2", cleanup_failed=True)
    assert fake.find("DELETE", "/deployments/iris-mlflow-v2")
    assert sorted(n for _, n in fake.deployments) == ["iris-mlflow-v1"]
    assert default(fake) == "iris-mlflow-v1"


def test_keep_never_deletes_a_deployment_a_running_job_uses(azure, fake, specs):
    release(azure, specs, "a", "run1")
    fake.job_statuses = ["Running"]
    busy = azure.invoke("iris-batch", REMOTE, deployment="iris-mlflow-v1", wait=False)
    fake.job_statuses = ["Queued", "Running", "Completed"]
    # more finished jobs since than a page of "recent jobs": the busy one is still seen
    for n in range(60):
        fake.jobs[f"done-{n}"] = FakeJob(f"done-{n}", "iris-batch", "iris-mlflow-v1", {},
                                         statuses=["Completed"])
    release(azure, specs, "b", "run2")

    model, _ = azure.register_model(source("c" * 64, "run3"), dry_run=True, spec=specs.model)
    writes = len(fake.writes())
    planned, _ = Rollout(azure, "iris-batch").deploy(specs.deployment, model, dry_run=True, keep=0)
    assert [(c.kind, c.name, c.action) for c in planned] == [
        ("deployment", "iris-mlflow-vnext", "create"), ("smoke", "iris-mlflow-vnext", "run"),
        ("default-deployment", "iris-batch", "update"), ("deployment", "iris-mlflow-v2", "delete"),
        ("deployment", "iris-mlflow-v1", "no-op")]
    assert len(fake.writes()) == writes

    changes, _ = release(azure, specs, "c", "run3", keep=0)

    assert [(c.name, c.action, c.detail) for c in changes if c.kind == "deployment"][1:] == [
        ("iris-mlflow-v2", "delete", "model iris-classifier:2"),
        ("iris-mlflow-v1", "no-op", f"kept: job {busy.name} is using it")]
    assert sorted(n for _, n in fake.deployments) == ["iris-mlflow-v1", "iris-mlflow-v3"]


@pytest.fixture
def local(tmp_path, azurite):
    """The local target on a registry and state of its own, with a model folder to register
    (nothing here runs a job; the session's Azurite is the datastore registration reads
    the run from)."""
    from deployer.backends.local import LocalBackend

    settings = Settings.load(env_file=tmp_path / "no.env", environ={}, target="local",
                             local_dir=str(tmp_path / "local"), datastore_name="irisdata",
                             azurite_port=str(azurite.port),
                             container=f"t{uuid.uuid4().hex[:16]}")
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text("flavors: {}\n")
    return LocalBackend(settings), model


def plan_lines(backend, specs, src, *, dry_run: bool, keep: int = 1) -> list[str]:
    """register-and-deploy's changes as the application prints them, without the smoke test
    (it runs a job): the model, the cluster, the endpoint, then the rollout."""
    model, registered = backend.register_model(src, dry_run=dry_run, spec=specs.model)
    changes = [registered, backend.ensure_compute(specs.compute, dry_run=dry_run),
               backend.ensure_endpoint(specs.endpoint, dry_run=dry_run)]
    rolled, _ = Rollout(backend, specs.endpoint.name).deploy(specs.deployment, model,
                                                            dry_run=dry_run, smoke=False, keep=keep)
    return [plan_line(c, dry_run) for c in changes + rolled]


def teardown_lines(backend, specs, *, dry_run: bool) -> list[str]:
    return [plan_line(c, dry_run) for c in backend.teardown(specs.endpoint.name, specs.compute.name,
                                                            dry_run=dry_run)]


def test_both_targets_print_the_same_plan(backend, fake, local, specs):
    """The same specs and steps on the Azure target (the SDK over the fake) and the local
    target give the same lines: create, no-op, update, a new version with old ones pruned,
    teardown; a dry run writes nothing on either."""
    local_backend, model_dir = local
    changed = load_specs(overrides={
        "compute": {"max_instances": 3}, "endpoint": {"description": "Iris, batch."},
        "deployment": {"settings": {**specs.deployment.data["settings"], "mini_batch_size": 5,
                                    "environment_variables": {"LOG": "1"}}}})
    steps = [("plan", specs, "a", True), ("deploy", specs, "a", False), ("again", specs, "a", True),
             ("plan update", changed, "a", True), ("update", changed, "a", False),
             ("version 2", changed, "b", False), ("version 3", changed, "c", False)]
    seen = {}
    for name, target, writes in (("azure", backend, lambda: len(fake.writes())),
                                 ("local", local_backend, lambda: local_state(local_backend))):
        lines = []
        for step, step_specs, digest, dry_run in steps:
            before = writes()
            src = replace(source(digest * 64, f"run-{digest}"), local_dir=model_dir)
            if name == "local":  # the local registry links a version to its imported run
                src = replace(src, run=PublishedRun(
                    f"models/iris/run-{digest}/manifest.json", digest * 32, "0",
                    "2026-01-01T00:00:00Z", f"models/iris/run-{digest}/artifacts/model"))
            lines.append((step, plan_lines(target, step_specs, src, dry_run=dry_run)))
            assert not dry_run or writes() == before, (name, step)
        lines.append(("teardown plan", teardown_lines(target, changed, dry_run=True)))
        lines.append(("teardown", teardown_lines(target, changed, dry_run=False)))
        lines.append(("teardown again", teardown_lines(target, changed, dry_run=True)))
        seen[name] = lines
    for (step, azure_lines), (_, local_lines) in zip(seen["azure"], seen["local"]):
        assert azure_lines == local_lines, step
    plans = dict(seen["azure"])
    uri = "azureml://datastores/irisdata/paths/models/iris/run-a/artifacts/model"
    assert plans["plan"] == [
        f"model iris-classifier: would create (new version from {uri})",
        "compute cpu-cluster: would create (standard_ds3_v2, 0-2 nodes)",
        "endpoint iris-batch: would create",
        "deployment iris-mlflow-vnext: would create (model iris-classifier@latest)",
        "smoke iris-mlflow-vnext: would skip (--no-smoke: switching without a test)",
        "default-deployment iris-batch: would update ((none) → iris-mlflow-vnext)"]
    assert all(": no-op" in line for line in plans["again"]), plans["again"]
    assert plans["plan update"][1:4] == [
        "compute cpu-cluster: would update (max_instances: 2 → 3)",
        "endpoint iris-batch: would update (description: " + specs.endpoint.data["description"]
        + " → Iris, batch.)",
        "deployment iris-mlflow-v1: would update (mini_batch_size: 10 → 5, "
        "environment_variables: {} → {'LOG': '1'})"]
    # --no-smoke: v2 served untested, so it is no rollback candidate that --keep 1 keeps
    assert plans["version 2"][-1] == "deployment iris-mlflow-v1: delete (model iris-classifier:1)"
    assert plans["version 3"][-1] == "deployment iris-mlflow-v2: delete (model iris-classifier:2)"
    assert plans["teardown"] == [
        "deployment iris-mlflow-v3: delete (with the endpoint)",
        "endpoint iris-batch: delete", "compute cpu-cluster: delete"]
    assert plans["teardown again"] == ["endpoint iris-batch: no-op (does not exist)",
                                       "compute cpu-cluster: no-op (does not exist)"]


def local_state(backend) -> str:
    """Everything the local target keeps: its state file and registry."""
    return "".join(sorted(f"{p}:{p.stat().st_size}" for p in backend.root.rglob("*") if p.is_file()))


# ---------------------------------------------------------------------- invoke


def test_invoke_overrides_go_through_the_sdks_batch_job_settings(azure, fake, specs):
    release(azure, specs, "a", "run1")
    out = "azureml://datastores/workspaceblobstore/paths/results/iris.csv"
    overrides = JobOverrides(mini_batch_size=1, instance_count=3, max_retries=0,
                             error_threshold=5, output_path=out, job_name="nightly-001",
                             experiment_name="nightly")
    azure.invoke("iris-batch", REMOTE, wait=False, overrides=overrides)

    post = fake.find("POST", "/jobs")[-1]
    body = post.body["properties"]
    assert body["miniBatchSize"] == 1
    assert body["compute"]["instanceCount"] == 3
    assert body["retrySettings"]["maxRetries"] == 0
    assert body["errorThreshold"] == 5
    assert body["outputData"] == {"score": {"jobOutputType": "UriFile", "uri": out}}
    assert body["name"] == "nightly-001"
    assert body["properties"]["experimentName"] == "nightly"
    # without overrides, the job carries none of them: the deployment's settings apply
    azure.invoke("iris-batch", REMOTE, wait=False)
    plain = fake.find("POST", "/jobs")[-1].body["properties"]
    assert set(plain) == {"inputData"}


def test_an_invoke_after_one_routed_to_a_deployment_goes_to_the_default(azure, fake, specs):
    """azure-ai-ml keeps the deployment header of an invoke in a class-level dict: a smoke
    test's routing must not stick to the next job of the same process."""
    release(azure, specs, "a", "run1")  # its smoke job was routed to iris-mlflow-v1
    azure.invoke("iris-batch", REMOTE, deployment="iris-mlflow-v1", wait=False)
    azure.invoke("iris-batch", REMOTE, wait=False)
    routed, default_routed = fake.find("POST", "/jobs")[-2:]
    assert routed.headers["azureml-model-deployment"] == "iris-mlflow-v1"
    assert "azureml-model-deployment" not in default_routed.headers
