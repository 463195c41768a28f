"""The Azure backend through the real `MLClient`, against a fake of just the Azure ML REST
operations it calls (plugged in as the azure-core transport of every sub-client), with a
test token credential. Requests are recorded: paths, api-versions and bodies are asserted.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from deployer.azureml_rules import validate_endpoint_name
from deployer.backends.azure import (AzureAuthError, AzureBackend, AzureError, AzureNotFound,
                                     AzureQuotaError)
from deployer.entities import CREATE, DELETE, NO_OP, UPDATE, DefaultHistory, ModelSource
from deployer.spec import SPEC_DIR, load_specs
from tests.support.fake_azureml import FakeAzureML
from tests.support.status import assert_deployment_follows_the_spec
from tests.support.fake_http import StaticTokenCredential
from workspace.errors import ConfigError, ExitCode
from workspace.settings import REPO_ROOT, Settings

SUB = "00000000-0000-0000-0000-000000000001"
RG = "rg-iris"
WS = "mlw-iris"
WS_PATH = (f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/"
           f"Microsoft.MachineLearningServices/workspaces/{WS}")
# What azure-ai-ml 1.35.2 sends for each resource (pinned in requirements).
API = {"models": "2023-08-01-preview", "computes": "2023-08-01-preview",
       "batchEndpoints": "2023-10-01", "deployments": "2024-01-01-preview",
       "jobs": "2024-01-01-preview"}


@pytest.fixture
def azure_settings(tmp_path) -> Settings:
    return Settings.load(env_file=tmp_path / "no.env", environ={}, target="azure",
                         subscription_id=SUB, resource_group=RG, aml_workspace=WS,
                         storage_blob_url="https://stirisdata.blob.core.windows.net",
                         datastore_name="irisdata", container="azureml")


@pytest.fixture
def fake() -> FakeAzureML:
    return FakeAzureML(SUB, RG, WS)


@pytest.fixture
def sleeps() -> list:
    return []


@pytest.fixture
def backend(azure_settings, fake, sleeps) -> AzureBackend:
    return AzureBackend(azure_settings, credential=StaticTokenCredential(),
                        client_kwargs={"transport": fake, "retry_backoff_factor": 0},  # retried at once
                        poll_seconds=0, sleep=sleeps.append)


@pytest.fixture
def specs():
    return load_specs()


def source(digest: str = "a" * 64, run: str = "run1") -> ModelSource:
    return ModelSource(name="iris-classifier", datastore_path=f"models/iris/{run}/artifacts/model",
                       local_dir=None, tags={"run_id": run, "accuracy": 0.97}, content_sha256=digest)


def deploy(backend, specs, src=None, dry_run=False):
    model, model_change = backend.register_model(src or source(), dry_run=dry_run, spec=specs.model)
    return model, [model_change,
                   backend.ensure_compute(specs.compute, dry_run=dry_run),
                   backend.ensure_endpoint(specs.endpoint, dry_run=dry_run),
                   backend.ensure_deployment(specs.deployment, model, dry_run=dry_run)]


def puts(fake, suffix):
    return fake.find("PUT", suffix)


# ---------------------------------------------------------------------- specs


def test_specs_load_with_azure_ai_ml_loaders():
    from azure.ai.ml import load_batch_endpoint, load_compute, load_model
    from azure.ai.ml.entities import AmlCompute, BatchEndpoint, Model, ModelBatchDeployment
    from azure.ai.ml.entities._load_functions import load_model_batch_deployment

    model = load_model(SPEC_DIR / "model.yml")
    compute = load_compute(SPEC_DIR / "compute.yml")
    endpoint = load_batch_endpoint(SPEC_DIR / "endpoint.yml")
    deployment = load_model_batch_deployment(SPEC_DIR / "deployment.yml")
    assert isinstance(model, Model) and model.type == "mlflow_model"
    assert isinstance(compute, AmlCompute) and compute.max_instances == 2
    assert isinstance(endpoint, BatchEndpoint) and endpoint.auth_mode == "aad_token"
    assert isinstance(deployment, ModelBatchDeployment)
    assert deployment.resources["instance_count"] == 2
    assert deployment.settings.mini_batch_size == 10
    assert deployment.settings.retry_settings.timeout == 300


# ---------------------------------------------------------------------- register-and-deploy


def test_first_deploy_creates_everything_with_the_spec_in_the_request_bodies(backend, fake, specs):
    model, changes = deploy(backend, specs)

    assert [(c.kind, c.action) for c in changes] == [
        ("model", CREATE), ("compute", CREATE), ("endpoint", CREATE), ("deployment", CREATE)]
    assert (model.name, model.version) == ("iris-classifier", "1")
    assert fake.missing_routes() == []

    (model_put,) = puts(fake, "/models/iris-classifier/versions/1")
    assert model_put.path == f"{WS_PATH}/models/iris-classifier/versions/1"
    assert model_put.api_version == API["models"]
    props = model_put.body["properties"]
    assert props["modelType"] == "mlflow_model"
    assert props["modelUri"] == (f"azureml://subscriptions/{SUB}/resourcegroups/{RG}/workspaces/{WS}"
                                 "/datastores/irisdata/paths/models/iris/run1/artifacts/model")
    assert props["tags"] == {"run_id": "run1", "accuracy": "0.97", "content_sha256": "a" * 64}

    (compute_put,) = puts(fake, "/computes/cpu-cluster")
    assert compute_put.api_version == API["computes"]
    assert compute_put.body["location"] == "westeurope"
    aml = compute_put.body["properties"]
    assert aml["computeType"] == "AmlCompute"
    assert aml["properties"]["vmSize"] == "Standard_DS3_v2"
    assert aml["properties"]["vmPriority"] == "Dedicated"
    assert aml["properties"]["scaleSettings"] == {
        "maxNodeCount": 2, "minNodeCount": 0, "nodeIdleTimeBeforeScaleDown": "PT2M"}

    endpoint_puts = puts(fake, "/batchEndpoints/iris-batch")
    assert [p.api_version for p in endpoint_puts] == [API["batchEndpoints"]] * 2
    assert endpoint_puts[0].body["properties"]["authMode"] == "aadToken"
    assert "defaults" not in endpoint_puts[0].body["properties"]
    # after the deployment: the same endpoint, now with its default deployment
    assert endpoint_puts[1].body["properties"]["defaults"] == {"deploymentName": "iris-mlflow"}
    assert endpoint_puts[1].body["properties"]["description"] == specs.endpoint.data["description"]

    (dep_put,) = puts(fake, "/batchEndpoints/iris-batch/deployments/iris-mlflow")
    assert dep_put.api_version == API["deployments"]
    body = dep_put.body["properties"]
    assert body["model"] == {"assetId": f"{WS_PATH}/models/iris-classifier/versions/1",
                             "referenceType": "Id"}
    assert body["compute"] == f"{WS_PATH}/computes/cpu-cluster"
    assert body["resources"]["instanceCount"] == 2
    assert body["miniBatchSize"] == 10
    assert body["maxConcurrencyPerInstance"] == 2
    assert body["outputAction"] == "AppendRow"
    assert body["outputFileName"] == "predictions.csv"
    assert body["retrySettings"] == {"maxRetries": 3, "timeout": "PT5M"}
    assert body["errorThreshold"] == -1
    assert body["loggingLevel"].lower() == "info"
    assert "environment" not in body and "codeConfiguration" not in body  # no-code MLflow

    # the order a portal user follows: model, cluster, endpoint, deployment, default
    order = [r.path.rsplit("/", 1)[-1] for r in fake.writes()]
    assert order == ["1", "cpu-cluster", "iris-batch", "iris-mlflow", "iris-batch"]
    # every call carried the test credential's token
    assert all(r.headers.get("authorization") == "Bearer fake-token" for r in fake.requests)


def test_the_deployment_body_round_trips_through_the_sdk_schema(backend, fake, specs):
    """The PUT body, read back by the SDK's own REST model, gives the spec's settings."""
    from azure.ai.ml._restclient.arm_ml_service.models import BatchDeployment as RestDeployment
    from azure.ai.ml.entities import BatchDeployment

    deploy(backend, specs)
    (dep_put,) = puts(fake, "/deployments/iris-mlflow")
    rest = RestDeployment({**dep_put.body, "id": dep_put.path, "name": "iris-mlflow"})
    entity = BatchDeployment._from_rest_object(rest)
    settings = specs.deployment.data["settings"]
    assert entity.resources.instance_count == specs.deployment.data["resources"]["instance_count"]
    assert entity.mini_batch_size == settings["mini_batch_size"]
    assert entity.max_concurrency_per_instance == settings["max_concurrency_per_instance"]
    assert entity.error_threshold == settings["error_threshold"]
    assert entity.output_file_name == settings["output_file_name"]
    assert entity.retry_settings.max_retries == settings["retry_settings"]["max_retries"]
    assert entity.retry_settings.timeout == settings["retry_settings"]["timeout"]


def test_a_second_run_with_unchanged_state_makes_no_put(backend, fake, specs):
    deploy(backend, specs)
    before = len(fake.requests)

    model, changes = deploy(backend, specs)

    assert [c.action for c in changes] == [NO_OP] * 4
    assert model.version == "1"
    new = fake.requests[before:]
    assert [r for r in new if r.method != "GET"] == []
    assert new  # it did look


def test_dry_run_plans_every_create_and_writes_nothing(backend, fake, specs):
    model, changes = deploy(backend, specs, dry_run=True)

    assert model is None
    assert [(c.kind, c.action) for c in changes] == [
        ("model", CREATE), ("compute", CREATE), ("endpoint", CREATE), ("deployment", CREATE)]
    assert "set as the endpoint's default" in changes[3].detail
    assert fake.writes() == []
    assert not fake.models and not fake.computes and not fake.endpoints


def test_dry_run_on_a_changed_spec_plans_updates_and_writes_nothing(backend, fake, specs):
    deploy(backend, specs)
    changed = load_specs(overrides={"compute": {"max_instances": 4},
                                    "deployment": {"resources": {"instance_count": 3}}})
    writes = len(fake.writes())

    assert backend.ensure_compute(changed.compute, dry_run=True).action == UPDATE
    model, _ = backend.register_model(source(), dry_run=True)
    change = backend.ensure_deployment(changed.deployment, model, dry_run=True)

    assert change.action == UPDATE and "instance_count: 2 → 3" in change.detail
    assert len(fake.writes()) == writes


def test_a_changed_spec_updates_only_what_changed(backend, fake, specs):
    model, _ = deploy(backend, specs)
    changed = load_specs(overrides={
        "compute": {"max_instances": 4},
        "deployment": {"settings": {**specs.deployment.data["settings"], "mini_batch_size": 5}}})
    before = len(fake.requests)

    compute = backend.ensure_compute(changed.compute)
    endpoint = backend.ensure_endpoint(changed.endpoint)
    deployment = backend.ensure_deployment(changed.deployment, model)

    assert (compute.action, endpoint.action, deployment.action) == (UPDATE, NO_OP, UPDATE)
    assert "max_instances: 2 → 4" in compute.detail
    assert "mini_batch_size: 10 → 5" in deployment.detail
    new_puts = [r for r in fake.requests[before:] if r.method == "PUT"]
    assert [r.path.rsplit("/", 1)[-1] for r in new_puts] == ["cpu-cluster", "iris-mlflow"]
    assert new_puts[0].body["properties"]["properties"]["scaleSettings"]["maxNodeCount"] == 4
    assert new_puts[1].body["properties"]["miniBatchSize"] == 5
    assert new_puts[1].body["properties"]["resources"]["instanceCount"] == 2


def test_an_endpoint_update_keeps_the_default_deployment(backend, fake, specs):
    deploy(backend, specs)
    changed = load_specs(overrides={"endpoint": {"description": "New text."}})

    assert backend.ensure_endpoint(changed.endpoint).action == UPDATE
    last = puts(fake, "/batchEndpoints/iris-batch")[-1]
    assert last.body["properties"]["description"] == "New text."
    assert last.body["properties"]["defaults"] == {"deploymentName": "iris-mlflow"}


def test_same_content_reuses_the_version_and_new_content_adds_one(backend, fake, specs):
    first, change = backend.register_model(source("a" * 64), spec=specs.model)
    again, again_change = backend.register_model(source("a" * 64, run="run2"), spec=specs.model)
    newer, newer_change = backend.register_model(source("b" * 64, run="run3"), spec=specs.model)

    assert (change.action, again_change.action, newer_change.action) == (CREATE, NO_OP, CREATE)
    assert again.version == first.version == "1"
    assert newer.version == "2"
    assert [r.path.rsplit("/", 1)[-1] for r in fake.find("PUT", "")] == ["1", "2"]
    # the new deployment points at the new version
    backend.ensure_compute(specs.compute)
    backend.ensure_endpoint(specs.endpoint)
    backend.ensure_deployment(specs.deployment, first)
    change = backend.ensure_deployment(specs.deployment, newer)
    assert change.action == UPDATE and "model: iris-classifier:1 → iris-classifier:2" in change.detail
    assert puts(fake, "/deployments/iris-mlflow")[-1].body["properties"]["model"]["assetId"].endswith(
        "/models/iris-classifier/versions/2")


def test_settings_names_reach_the_requests(backend, fake):
    specs = load_specs(overrides={"endpoint": {"name": "iris-batch-team2"},
                                  "compute": {"name": "cpu-team2"},
                                  "deployment": {"endpoint_name": "iris-batch-team2",
                                                 "compute": "azureml:cpu-team2"}})
    deploy(backend, specs)
    assert puts(fake, "/computes/cpu-team2")
    assert puts(fake, "/batchEndpoints/iris-batch-team2/deployments/iris-mlflow")
    dep = puts(fake, "/deployments/iris-mlflow")[0]
    assert dep.body["properties"]["compute"].endswith("/computes/cpu-team2")


def test_deploy_infra_settings_name_the_endpoint_and_the_cluster_identity(azure_settings, backend, fake):
    from dataclasses import replace

    from deployer.app import spec_overrides

    identity = ("/subscriptions/sub/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
                "userAssignedIdentities/irisops-aml-compute-id")
    settings = replace(azure_settings, batch_endpoint_name="irisops-iris-x7k2qm",
                       aml_compute_identity_id=identity)
    specs = load_specs(overrides=spec_overrides(settings))
    deploy(backend, specs)

    compute = puts(fake, "/computes/cpu-cluster")[0]
    assert compute.body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {identity: {}}}
    assert puts(fake, "/batchEndpoints/irisops-iris-x7k2qm/deployments/iris-mlflow")
    before = len(fake.requests)
    assert [c.action for c in deploy(backend, specs)[1]] == [NO_OP] * 4
    assert [r for r in fake.requests[before:] if r.method != "GET"] == []


def test_private_mode_creates_the_cluster_in_the_subnet_without_public_node_ips(azure_settings, backend, fake):
    """AML_COMPUTE_SUBNET_ID (.env, from the Bicep output amlComputeSubnetId) reaches the PUT
    the real SDK sends: properties.properties.subnet.id and enableNodePublicIp false."""
    from dataclasses import replace

    from deployer.app import spec_overrides

    # A real id (the SDK's validate_arm_str wants a GUID subscription; anything else it
    # rewrites as a subnet *name* under the workspace's group).
    subnet = ("/subscriptions/6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f/resourceGroups/rg-irisops/providers/"
              "Microsoft.Network/virtualNetworks/irisops-x7k2qm-vnet/subnets/snet-aml-compute")
    specs = load_specs(overrides=spec_overrides(replace(azure_settings, aml_compute_subnet_id=subnet)))
    deploy(backend, specs)
    aml = puts(fake, "/computes/cpu-cluster")[0].body["properties"]["properties"]
    assert aml["subnet"] == {"id": subnet}
    assert aml["enableNodePublicIp"] is False


@pytest.mark.parametrize("subnet", [
    "snet-aml-compute",
    "/subscriptions/my-sub/resourceGroups/rg-irisops/providers/Microsoft.Network/virtualNetworks/v/subnets/s",
    "/subscriptions/6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f/resourceGroups/rg-irisops/providers/"
    "Microsoft.Network/virtualNetworks/irisops-x7k2qm-vnet",
])
def test_a_subnet_setting_that_is_not_a_subnet_id_is_refused_before_azure(subnet, azure_settings):
    """The SDK would rewrite it as a subnet name under the workspace's group (see above)."""
    from dataclasses import replace

    from deployer.app import spec_overrides

    with pytest.raises(ConfigError, match="AML_COMPUTE_SUBNET_ID .* is not a subnet resource id"):
        spec_overrides(replace(azure_settings, aml_compute_subnet_id=subnet))


PRIVATE_SUBNET = ("/subscriptions/6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f/resourceGroups/rg-irisops/providers/"
                  "Microsoft.Network/virtualNetworks/irisops-x7k2qm-vnet/subnets/snet-aml-compute")


def private_specs(azure_settings):
    from dataclasses import replace

    from deployer.app import spec_overrides

    return load_specs(overrides=spec_overrides(replace(azure_settings, aml_compute_subnet_id=PRIVATE_SUBNET)))


def test_status_shows_the_clusters_subnet_and_that_it_has_no_public_ip(azure_settings, backend):
    deploy(backend, private_specs(azure_settings))
    (cluster,) = backend.describe("iris-batch", compute="cpu-cluster", model="iris-classifier").computes
    assert (cluster.subnet, cluster.node_public_ip) == (PRIVATE_SUBNET, False)
    assert cluster.network == "private (subnet irisops-x7k2qm-vnet/snet-aml-compute, no public IP)"
    # Deploying again changes nothing: the network read back is the one asked for.
    assert [c.action for c in deploy(backend, private_specs(azure_settings))[1]] == [NO_OP] * 4


def test_a_cluster_outside_the_subnet_is_not_moved_into_it(azure_settings, backend, fake, specs):
    backend.ensure_compute(specs.compute)
    before = len(fake.requests)
    with pytest.raises(ConfigError, match="exists outside any VNet; the settings ask for in subnet "
                                          ".*snet-aml-compute, without public node IPs.*cannot move"):
        backend.ensure_compute(private_specs(azure_settings).compute)
    assert [r for r in fake.requests[before:] if r.method != "GET"] == []


def test_without_a_subnet_the_cluster_keeps_azure_mls_default_network(azure_settings, backend, fake):
    from deployer.app import spec_overrides

    deploy(backend, load_specs(overrides=spec_overrides(azure_settings)))
    aml = puts(fake, "/computes/cpu-cluster")[0].body["properties"]["properties"]
    assert aml.get("subnet") is None and aml.get("enableNodePublicIp", True) is True


def test_a_cluster_cannot_be_resized(backend, specs):
    backend.ensure_compute(specs.compute)
    bigger = load_specs(overrides={"compute": {"size": "Standard_DS4_v2"}})
    with pytest.raises(ConfigError, match="cannot change a cluster's size"):
        backend.ensure_compute(bigger.compute)


def test_summary_only_with_an_output_file_is_refused_before_any_call(backend, fake, specs):
    bad = load_specs(overrides={"deployment": {"settings": {
        **specs.deployment.data["settings"], "output_action": "summary_only"}}})
    with pytest.raises(ConfigError, match="summary_only"):
        backend.ensure_deployment(bad.deployment, None)
    assert fake.requests == []


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ["ab", "1iris", "iris_batch", "iris-", "x" * 33, "iris batch"])
def test_invalid_endpoint_names_are_refused_before_any_call(backend, fake, name):
    specs = load_specs(overrides={"endpoint": {"name": name}})
    with pytest.raises(ConfigError, match="3-32 characters"):
        backend.ensure_endpoint(specs.endpoint)
    with pytest.raises(ConfigError):
        backend.invoke(name, "azureml://datastores/workspaceblobstore/paths/x.csv")
    assert fake.requests == []


def test_an_invalid_deployment_name_is_refused_before_any_call(backend, fake):
    specs = load_specs(overrides={"deployment": {"name": "iris.mlflow"}})
    with pytest.raises(ConfigError, match="Deployment name 'iris.mlflow' is invalid"):
        backend.ensure_deployment(specs.deployment, None)
    assert fake.requests == []


@pytest.mark.parametrize("method,status,code,message,kind,exit_code", [
    ("PUT", 400, "BadRequest", "Compute name is invalid.\nMore detail on a second line.", AzureError,
     ExitCode.USAGE),
    ("PUT", 409, "Conflict", "There is an ongoing operation on this resource.\nTry later.", AzureError,
     ExitCode.FAILED),
    ("GET", 401, "InvalidAuthenticationToken", "The access token is invalid.\nDetails.", AzureAuthError,
     ExitCode.ACCESS_DENIED),
    ("PUT", 404, "ResourceNotFound", "The workspace 'mlw-iris' was not found.\nDetails.", AzureNotFound,
     ExitCode.NOT_FOUND),
    ("PUT", 500, "InternalServerError", "Something broke.\nDetails.", AzureError,
     ExitCode.UNREACHABLE),
])
def test_service_errors_become_one_line(backend, fake, specs, method, status, code, message, kind,
                                        exit_code):
    for _ in range(5):  # a 5xx is retried by the SDK first
        fake.fail(method, r"/computes/", status, code, message)
    with pytest.raises(kind) as err:
        backend.ensure_compute(specs.compute)
    assert err.value.exit_code == exit_code
    text = str(err.value)
    assert "\n" not in text
    assert message.split("\n")[0] in text
    assert err.value.hint  # always says what to do


@pytest.mark.parametrize("name", ["abc", "iris-batch", "A1-b2", "x" * 32])
def test_valid_endpoint_names_pass(name):
    validate_endpoint_name(name)


def test_missing_workspace_settings_name_the_keys(tmp_path):
    settings = Settings.load(env_file=tmp_path / "no.env", environ={}, target="azure")
    backend = AzureBackend(settings, credential=StaticTokenCredential())
    with pytest.raises(ConfigError) as err:
        backend.ensure_compute(load_specs().compute)
    assert "AZURE_SUBSCRIPTION_ID" in str(err.value) and "AML_WORKSPACE" in str(err.value)


def test_authorization_failed_names_the_role(backend, fake, specs):
    fake.fail("GET", r"/computes/", 403, "AuthorizationFailed",
              "The client 'dev@contoso.com' with object id '1' does not have authorization to "
              "perform action 'Microsoft.MachineLearningServices/workspaces/computes/read' over "
              "scope '/subscriptions/...'.")
    with pytest.raises(AzureAuthError) as err:
        backend.ensure_compute(specs.compute)
    assert err.value.exit_code == ExitCode.ACCESS_DENIED  # the same code as in `adf`
    text = str(err.value)
    # AzureML Data Scientist cannot write or delete computes (built-in roles list); the
    # Compute Operator role can, Contributor covers both.
    assert "'AzureML Data Scientist' + 'AzureML Compute Operator' (or 'Contributor')" in text
    # creating the cluster with its user-assigned identity assigns it: neither role grants that
    assert "'Managed Identity Operator' on the cluster's user-assigned identity" in text
    assert "az login" in text and WS in text
    assert "\n" not in text


def test_quota_exceeded_says_what_to_change(backend, fake, specs):
    fake.fail("PUT", r"/computes/", 400, "BadRequest",
              "Operation could not be completed as it results in exceeding approved standardDSv2Family "
              "Cores quota. Additional details - Deployment Model: Resource Manager, Location: "
              "westeurope, Current Limit: 0, Current Usage: 0, Additional Required: 8.")
    with pytest.raises(AzureQuotaError) as err:
        backend.ensure_compute(specs.compute)
    assert "max_instances" in str(err.value) and "quota increase" in str(err.value)
    assert "\n" not in str(err.value)


def test_no_default_deployment_tells_how_to_set_it(backend, fake, specs):
    backend.ensure_endpoint(specs.endpoint)  # an endpoint without a deployment
    with pytest.raises(AzureError) as err:
        backend.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/x.csv")
    assert "no default deployment" in str(err.value)
    assert "defaults.deployment_name" in str(err.value)


def test_invoking_a_missing_endpoint_says_to_deploy(backend):
    with pytest.raises(AzureNotFound, match="register-and-deploy"):
        backend.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/x.csv")


def test_no_sign_in_says_az_login(azure_settings, fake, specs):
    from azure.core.exceptions import ClientAuthenticationError

    class NoLogin:
        def get_token(self, *scopes, **kwargs):
            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token.")

    backend = AzureBackend(azure_settings, credential=NoLogin(), client_kwargs={"transport": fake})
    with pytest.raises(AzureAuthError, match="az login"):
        backend.ensure_compute(specs.compute)


def test_a_missing_local_input_is_refused(backend, fake, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        backend.invoke("iris-batch", str(tmp_path / "nope.csv"))
    assert fake.requests == []


# ---------------------------------------------------------------------- invoke and jobs


@pytest.fixture
def deployed(backend, specs):
    deploy(backend, specs)
    return backend


@pytest.fixture
def blob_store(azurite, fake, monkeypatch, tmp_path):
    """Both datastores of the workspace on Azurite. Inputs go to the identity-based data store
    (the deployer's own client); job outputs are in the account-key `workspaceblobstore`, which
    the SDK reaches by itself (listSecrets, then https://<account>.blob.core.windows.net),
    tunnelled to Azurite through an HTTPS proxy. `.outputs` is that second container."""
    import uuid

    from tests.support.fake_http import StorageTunnel
    from workspace.datastore import Datastore
    from workspace.settings import AZURITE_ACCOUNT, AZURITE_KEY

    def container(name):
        local = Settings.load(env_file=tmp_path / "no.env", environ={}, azurite_port=str(azurite.port),
                              container=name)
        store = Datastore.from_settings(local)
        store.ensure_container()
        return store

    inputs = container(f"t{uuid.uuid4().hex[:16]}")
    fake.datastore["container"] = inputs.container
    outputs = container(f"azureml-blobstore-{uuid.uuid4().hex[:12]}")
    fake.default_store.update(account=AZURITE_ACCOUNT, key=AZURITE_KEY, container=outputs.container)
    tunnel = StorageTunnel(azurite.port, [f"{AZURITE_ACCOUNT}.blob.core.windows.net"], tmp_path)
    for key, value in tunnel.env().items():
        monkeypatch.setenv(key, value)
    inputs.outputs, inputs.tunnel = outputs, tunnel
    yield inputs
    tunnel.close()


def test_invoke_uploads_waits_finds_the_child_and_downloads_predictions(
        backend, fake, specs, blob_store, tmp_path, sleeps):
    deploy(backend, specs)
    backend._datastore = blob_store
    predictions = b"0,Iris-setosa,iris_csv.csv\n1,Iris-versicolor,iris_csv.csv\n2,Iris-virginica,iris_csv.csv\n"
    fake.on_complete = lambda job: blob_store.outputs.upload_bytes(
        predictions, fake.output_path(job) + "predictions.csv")
    before = len(fake.requests)
    messages = []

    summary = backend.invoke("iris-batch", str(REPO_ROOT / "data" / "iris_csv.csv"),
                             output_dir=tmp_path / "out", progress=messages.append)

    assert summary.status == "Completed"
    # where the local target puts them too: <output dir>/<output file name>
    out = tmp_path / "out" / "predictions.csv"
    assert summary.predictions_file == str(out) and summary.predictions_at == str(out)
    assert out.read_bytes() == predictions
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["predictions.csv"]
    child = fake.jobs[summary.name].child  # the output's URI in the SDK's job-output form
    assert summary.output_uri == f"azureml://jobs/{child}/outputs/score/paths/predictions.csv"
    assert summary.rows_scored == 3
    assert (summary.endpoint, summary.deployment) == ("iris-batch", "iris-mlflow")
    # the local file went to the datastore first, and the job got its azureml:// path
    uploaded = [b.name for b in blob_store.list("inputs/")]
    assert len(uploaded) == 1 and uploaded[0].endswith("/iris_csv.csv")
    (post,) = [r for r in fake.requests[before:] if r.method == "POST" and r.path == "/jobs"]
    assert post.host == "iris-batch.westeurope.inference.ml.azure.com"
    assert post.body["properties"]["inputData"]["UriFile"] == {
        "jobInputType": "UriFile",
        "uri": f"azureml://datastores/irisdata/paths/{uploaded[0]}"}
    assert "azureml-model-deployment" not in post.headers  # routed to the default
    assert post.headers["authorization"] == "Bearer fake-token"
    # polled jobs.get until terminal, sleeping between polls
    job_gets = [r for r in fake.requests[before:]
                if r.method == "GET" and r.path == f"{WS_PATH}/jobs/{summary.name}"]
    assert len(job_gets) >= 3 and all(r.api_version == API["jobs"] for r in job_gets)
    assert len(sleeps) == 2
    # found the scoring child through run history, then downloaded its "score" output
    children = [r for r in fake.requests if r.path.endswith(f"/runs/{summary.name}/children")]
    assert children and children[0].host == "westeurope.api.azureml.ms"
    child = fake.jobs[summary.name].child
    assert fake.find("GET", f"/jobs/{child}")
    # outputs came from workspaceblobstore with the key from listSecrets, over its https URL
    (secrets,) = fake.find("POST", "/datastores/workspaceblobstore/listSecrets")
    assert secrets.api_version and blob_store.tunnel.tunnels
    assert set(blob_store.tunnel.tunnels) == {"devstoreaccount1.blob.core.windows.net"}
    assert any("Completed" in m for m in messages) and any("downloading" in m for m in messages)


def test_download_output_fetches_a_finished_jobs_predictions_again(
        backend, fake, specs, blob_store, tmp_path, sleeps):
    deploy(backend, specs)
    backend._datastore = blob_store
    predictions = b"0,Iris-setosa,a.csv\n"
    fake.on_complete = lambda job: blob_store.outputs.upload_bytes(
        predictions, fake.output_path(job) + "predictions.csv")
    job = backend.invoke("iris-batch", str(REPO_ROOT / "data" / "iris_csv.csv"), wait=True,
                         output_dir=tmp_path / "first")

    again = backend.download_output(backend.get_job(job.name), tmp_path / "second")

    assert again == tmp_path / "second" / "predictions.csv"
    assert again.read_bytes() == predictions


def test_a_previous_jobs_predictions_are_never_overwritten(deployed, fake, blob_store, tmp_path):
    deployed._datastore = blob_store
    earlier = tmp_path / "out" / "predictions.csv"
    earlier.parent.mkdir(parents=True)
    earlier.write_text("0,old,old.csv\n")
    fake.on_complete = lambda job: blob_store.outputs.upload_bytes(
        b"0,new,x.csv\n", fake.output_path(job) + "predictions.csv")

    with pytest.raises(ConfigError, match="holds another job's predictions"):
        deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/x.csv",
                        output_dir=tmp_path / "out")
    assert earlier.read_text() == "0,old,old.csv\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["predictions.csv"]


def test_a_job_without_a_predictions_file_says_so(deployed, fake, blob_store, tmp_path):
    fake.on_complete = None  # the service wrote no predictions file this time
    with pytest.raises(AzureError, match="no predictions file"):
        deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/x.csv",
                        output_dir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_invoke_with_a_deployment_and_a_remote_folder(deployed, fake):
    summary = deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/batches/",
                              deployment="iris-mlflow", wait=False)
    (post,) = fake.find("POST", "/jobs")
    assert post.headers["azureml-model-deployment"] == "iris-mlflow"
    assert post.body["properties"]["inputData"]["UriFolder"]["uri"] == \
        "azureml://datastores/workspaceblobstore/paths/batches/"
    assert summary.status == "Queued"
    assert not fake.find("GET", f"/jobs/{summary.name}")  # not waiting: no polling


def test_a_failed_job_is_reported_without_download(deployed, fake, tmp_path):
    fake.job_statuses = ["Running", "Failed"]
    summary = deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/x.csv",
                              output_dir=tmp_path / "out")
    assert summary.status == "Failed"
    # Azure's own error, from the run's details in run history (RootError code + message)
    assert summary.error == ("Execution failed. User process '/bin/bash' exited with status code 1. "
                             "Please check log file 'user_logs/std_log.txt' for error details. "
                             "(UserError)")
    assert fake.find("GET", f"/runs/{summary.name}/details")
    assert deployed.get_job(summary.name).error == summary.error
    assert not (tmp_path / "out").exists()
    assert not [r for r in fake.requests if r.path.endswith("/children")]


def test_get_job_and_list_jobs(deployed, fake):
    first = deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/a.csv", wait=False)
    second = deployed.invoke("iris-batch", "azureml://datastores/workspaceblobstore/paths/b.csv", wait=False)

    job = deployed.get_job(first.name)
    assert (job.name, job.status, job.endpoint, job.deployment) == (
        first.name, "Queued", "iris-batch", "iris-mlflow")
    jobs = deployed.list_jobs("iris-batch", limit=5)
    assert {j.name for j in jobs} == {first.name, second.name}
    listing = [r for r in fake.requests if r.path.endswith("/batchEndpoints/iris-batch/jobs")]
    assert listing[0].api_version == "2020-09-01-dataplanepreview"
    assert deployed.list_jobs("iris-batch", limit=1)[0].name in {first.name, second.name}


def test_describe_fills_the_typed_status_from_the_service(deployed, specs):
    from deployer.entities import TargetStatus

    status = deployed.describe("iris-batch", compute="cpu-cluster", model="iris-classifier")

    assert isinstance(status, TargetStatus) and status.backend == "azure"
    assert (status.workspace, status.resource_group, status.registry) == (WS, RG, None)
    assert status.endpoint.default_deployment == "iris-mlflow"
    assert status.endpoint.scoring_uri.startswith("https://iris-batch.")
    assert status.endpoint.description == specs.endpoint.data["description"]
    (dep,) = status.deployments
    assert (dep.model, dep.is_default, dep.compute) == ("iris-classifier:1", True, "cpu-cluster")
    assert_deployment_follows_the_spec(dep, specs)
    (model,) = status.models
    assert (model.name, model.version, model.tags["content_sha256"]) == (
        "iris-classifier", "1", "a" * 64)
    (cluster,) = status.computes
    assert (cluster.name, cluster.size, cluster.min_instances, cluster.max_instances) == (
        "cpu-cluster", "Standard_DS3_v2", 0, 2)
    assert cluster.idle_time_before_scale_down == specs.compute.data["idle_time_before_scale_down"]


def test_describe_a_missing_endpoint_still_shows_the_registered_model(backend, specs):
    backend.register_model(source(), spec=specs.model)
    status = backend.describe("iris-batch", compute="cpu-cluster", model="iris-classifier")
    assert status.endpoint is None and status.deployments == () and status.computes == ()
    assert [(m.name, m.version) for m in status.models] == [("iris-classifier", "1")]


def test_status_gives_each_deployment_its_role_newest_model_first(deployed, specs):
    from deployer.app import Deployer

    model, _ = deployed.register_model(source("b" * 64, "run2"), spec=specs.model)
    newer = load_specs(overrides={"deployment": {"name": "iris-mlflow-v2"}})
    deployed.ensure_deployment(newer.deployment, model)
    deployer = Deployer(deployed.settings, backend=deployed, specs=specs)
    # switched outside a rollout: iris-mlflow carries no smoke test, no record of serving
    assert [(d.name, d.role) for d in deployer.status(jobs=0).target.deployments] == [
        ("iris-mlflow-v2", "default"), ("iris-mlflow", "no candidate: untested, never the default")]
    deployed.set_default_deployment("iris-batch", "iris-mlflow-v2",
                                    history=DefaultHistory(previous=("iris-mlflow",)))
    assert [(d.name, d.role) for d in deployer.status(jobs=0).target.deployments][1] == (
        "iris-mlflow", "no candidate: served without a smoke test (untested)")
    deployed.tag_deployment("iris-batch", "iris-mlflow", {"smoke": "passed"})

    report = deployer.status(jobs=3)

    assert [(d.name, d.model, d.role) for d in report.target.deployments] == [
        ("iris-mlflow-v2", "iris-classifier:2", "default"),
        ("iris-mlflow", "iris-classifier:1", "rollback candidate")]
    assert [m.version for m in report.target.models] == ["1", "2"]
    assert report.jobs == ()


def test_the_status_command_shows_the_workspace_deployments_and_cluster(
        deployed, monkeypatch, tmp_path):
    from click.testing import CliRunner

    import deployer.backends
    from deployer.cli import cli

    monkeypatch.setattr(deployer.backends, "get_backend", lambda settings: deployed)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(cli, ["status", "--target", "azure"], prog_name="python -m deployer")
    assert result.exit_code == 0, result.output
    assert f"target    azure  (workspace {WS}, resource group {RG})" in result.output
    assert "endpoint  iris-batch  default deployment iris-mlflow  (Succeeded)" in result.output
    assert re.search(r"│ iris-mlflow\s+│ iris-classifier:1\s+│ default\s+│ -", result.output)
    assert re.search(r"│ iris-mlflow\s+│ cpu-cluster\s+│ 2\s+│ 10\s+│ 2\s+│ 3/300s\s+│ -1\s+│ "
                     r"predictions\.csv", result.output)
    assert re.search(r"│ cpu-cluster\s+│ Standard_DS3_v2\s+│ 0-2\s+│ 120s\s+│[^│]*│ public\s+│", result.output)


def test_the_status_command_shows_a_private_clusters_subnet(azure_settings, backend, monkeypatch, tmp_path):
    deploy(backend, private_specs(azure_settings))
    result = run_cli(backend, monkeypatch, tmp_path, "status")
    assert result.exit_code == 0, result.output
    assert re.search(r"│ cpu-cluster\s+│ .*│ private \(subnet irisops-x7k2qm-vnet/snet-aml-compute, no public IP\)",
                     result.output), result.output


# ---------------------------------------------------------------------- teardown


def test_teardown_deletes_deployments_endpoint_and_cluster(deployed, fake, specs):
    other = load_specs(overrides={"deployment": {"name": "iris-canary"}})
    deployed.ensure_deployment(other.deployment, deployed.register_model(source())[0])
    fake.endpoints["iris-batch"]["properties"]["defaults"] = {"deploymentName": "iris-mlflow"}

    planned = deployed.teardown("iris-batch", "cpu-cluster", dry_run=True)
    assert fake.find("DELETE", "") == []
    changes = deployed.teardown("iris-batch", "cpu-cluster")

    assert changes == planned
    assert [(c.kind, c.name, c.action) for c in changes] == [
        ("deployment", "iris-canary", DELETE), ("deployment", "iris-mlflow", DELETE),
        ("endpoint", "iris-batch", DELETE), ("compute", "cpu-cluster", DELETE)]
    deletes = fake.find("DELETE", "")
    assert [(r.path.removeprefix(WS_PATH), r.api_version) for r in deletes] == [
        ("/batchEndpoints/iris-batch/deployments/iris-canary", API["deployments"]),
        ("/batchEndpoints/iris-batch", API["batchEndpoints"]),
        ("/computes/cpu-cluster", API["computes"])]
    assert not fake.endpoints and not fake.deployments and not fake.computes
    assert fake.models  # models stay registered
    again = deployed.teardown("iris-batch", "cpu-cluster")
    assert [c.action for c in again] == [NO_OP, NO_OP]


# ---------------------------------------------------------------------- imports


def test_the_backend_module_does_not_import_the_sdk_until_used():
    code = ("import sys, deployer.backends.azure, deployer.backends; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('azure.ai.ml'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_the_default_client_uses_the_workspace_from_settings(azure_settings, monkeypatch):
    import azure.identity

    made = []

    class Credential(StaticTokenCredential):
        def __init__(self, **kwargs):
            super().__init__()
            made.append(self)

    monkeypatch.setattr(azure.identity, "DefaultAzureCredential", Credential)
    client = AzureBackend(azure_settings).ml_client
    assert (client.subscription_id, client.resource_group_name, client.workspace_name) == (SUB, RG, WS)
    assert made and client._credential is made[0]


def test_workspace_settings_file_is_honoured(tmp_path):
    env = tmp_path / ".env"
    env.write_text(f"TARGET=azure\nAZURE_SUBSCRIPTION_ID={SUB}\nAZURE_RESOURCE_GROUP={RG}\n"
                   f"AML_WORKSPACE={WS}\n")
    settings = Settings.load(env_file=env, environ={})
    client = AzureBackend(settings, credential=StaticTokenCredential()).ml_client
    assert (client.subscription_id, client.workspace_name) == (SUB, WS)


# ---------------------------------------------------------------------- long-running operations


def test_long_running_operations_are_waited_on_and_reported(backend, fake, specs):
    messages = []
    backend.ensure_compute(specs.compute, progress=messages.append)
    assert messages[0] == "create compute cpu-cluster ..."
    assert messages[-1].startswith("create compute cpu-cluster: done")
    # the operation status was polled until it succeeded, not assumed
    polls = [r for r in fake.requests if "/mfeOperationsStatus/" in r.path]
    assert len(polls) >= 2 and all(r.api_version == API["computes"] for r in polls)


def test_a_failed_long_running_operation_is_translated_and_retried_next_run(backend, fake, specs):
    fake.lro_errors.append(("QuotaExceeded", "Operation results in exceeding quota limits of Core. "
                                             "Maximum allowed: 0, Current in use: 0, Additional requested: 8."))
    with pytest.raises(AzureQuotaError):
        backend.ensure_compute(specs.compute)
    assert fake.computes["cpu-cluster"]["properties"]["provisioningState"] == "Failed"

    change = backend.ensure_compute(specs.compute)
    assert change.action == UPDATE and "failed" in change.detail
    assert len(puts(fake, "/computes/cpu-cluster")) == 2
    assert backend.ensure_compute(specs.compute).action == NO_OP


def test_get_backend_picks_the_azure_backend_without_connecting(azure_settings):
    from deployer.backends import get_backend

    backend = get_backend(azure_settings)
    assert isinstance(backend, AzureBackend) and backend.name == "azure"
    assert backend._ml_client is None  # the client (and the credential) come on first use


# ---------------------------------------------------------------------- service behaviour


def test_a_paused_job_ends_the_wait_with_what_azure_said(deployed, fake, tmp_path):
    fake.job_statuses = ["Queued", "Running", "Paused"]
    summary = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/x.csv",
                              output_dir=tmp_path / "out")
    assert summary.status == "Failed" and "paused" in summary.error
    assert not (tmp_path / "out").exists()


def test_unknown_and_cancel_requested_are_waited_through(deployed, fake, sleeps):
    fake.job_statuses = ["Unknown", "Running", "CancelRequested", "Canceled"]
    messages = []
    summary = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/x.csv",
                              progress=messages.append)
    assert summary.status == "Canceled"
    assert len(sleeps) == 3
    assert any("CancelRequested (cancel requested" in m for m in messages)


def test_the_polled_job_states_go_to_job_progress_as_typed_updates(deployed, fake, tmp_path):
    fake.job_statuses = ["Preparing", "Running", "Failed"]
    updates, lines = [], []
    summary = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/x.csv",
                              output_dir=tmp_path / "out", progress=lines.append,
                              job_progress=updates.append)

    name = summary.name
    # the service's state in the text, the deployer's five in status; no counts on Azure
    assert [(u.job, u.status, u.text) for u in updates] == [
        (name, "Queued", f"job {name}: NotStarted"),  # as the submission answered
        (name, "Queued", f"job {name}: Preparing (preparing the nodes (image pull, environment))"),
        (name, "Running", f"job {name}: Running (scoring)"),
        (name, "Failed", f"job {name}: Failed")]
    assert all(u.files_total is None and u.rows_scored is None for u in updates)
    assert updates[-1].ended and lines == []  # job states went only to job_progress


def test_a_job_stuck_in_the_queue_stops_at_the_deadline_and_says_why(deployed, fake, sleeps):
    from deployer.backends.base import JobTimeout

    fake.job_statuses = ["Queued"]
    deployed.timeout_seconds = 0
    messages = []
    with pytest.raises(JobTimeout) as err:
        deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/x.csv",
                        progress=messages.append)
    (job,) = fake.jobs
    assert err.value.message == (f"Job {job} is still Queued after 0 min: queued for nodes of "
                                 "the compute cluster (core quota, max_instances, other jobs).")
    assert err.value.hint == (f"It goes on in Azure: follow it with `python -m deployer jobs show "
                              f"{job} --wait`, cancel it with `python -m deployer jobs cancel {job}`, or "
                              "pass a longer --timeout.")
    assert err.value.exit_code == ExitCode.RUN_FAILED
    assert any(m.endswith("Queued (queued for nodes of the compute cluster (core quota, "
                          "max_instances, other jobs))") for m in messages)


def test_max_retries_goes_with_the_deployments_mini_batch_timeout(deployed, fake, specs):
    """A job's retrySettings replace the deployment's: --max-retries alone would leave the
    timeout to the service's default (30 s) instead of the deployment's (PT5M in
    deployment.yml). The body is what azure-ai-ml sent."""
    from deployer.entities import JobOverrides

    assert specs.deployment.data["settings"]["retry_settings"]["timeout"] == 300
    deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False,
                    overrides=JobOverrides(max_retries=1))
    body = fake.find("POST", "/jobs")[-1].body["properties"]
    assert body["retrySettings"] == {"maxRetries": 1, "timeout": "PT5M"}

    # routed to a deployment: that deployment's timeout
    fake.deployments[("iris-batch", "iris-mlflow")]["properties"]["retrySettings"]["timeout"] = "PT7M"
    deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False,
                    deployment="iris-mlflow", overrides=JobOverrides(max_retries=0))
    body = fake.find("POST", "/jobs")[-1].body["properties"]
    assert body["retrySettings"] == {"maxRetries": 0, "timeout": "PT7M"}
    # other overrides send no retrySettings: the deployment's apply whole
    deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False,
                    overrides=JobOverrides(mini_batch_size=2))
    assert "retrySettings" not in fake.find("POST", "/jobs")[-1].body["properties"]


def test_list_jobs_keeps_the_newest(deployed, fake):
    names = [deployed.invoke("iris-batch", f"azureml://datastores/irisdata/paths/{i}.csv",
                             wait=False).name for i in range(3)]
    # the service lists the oldest first here; the newest must still be the one kept
    newest = deployed.list_jobs("iris-batch", limit=1)
    assert [j.name for j in newest] == [names[-1]]
    assert [j.name for j in deployed.list_jobs("iris-batch", limit=3)] == names[::-1]


def test_list_jobs_reads_the_listing_page_by_page_not_each_job(deployed, fake):
    """The listing carries each job's state, creation time, deployment and input: one
    request per page of it, none per job (an endpoint's jobs grow with every smoke test)."""
    fake.job_page_size = 4
    names = [deployed.invoke("iris-batch", f"azureml://datastores/irisdata/paths/{i}.csv",
                             wait=False).name for i in range(10)]
    before = len(fake.requests)
    jobs = deployed.list_jobs("iris-batch", limit=3)
    made = fake.requests[before:]
    pages = [r for r in made if r.path.endswith("/batchEndpoints/iris-batch/jobs")]
    assert len(pages) == 3 and pages[0].api_version == "2020-09-01-dataplanepreview"
    assert [r for r in made if re.search(r"/(jobs|runs)/batchjob-", r.path)] == []
    assert len(made) <= len(pages) + 2  # and the workspace's discovery (once per client)
    assert [j.name for j in jobs] == names[::-1][:3]
    assert {(j.status, j.endpoint, j.deployment) for j in jobs} == {("Queued", "iris-batch",
                                                                     "iris-mlflow")}
    assert jobs[0].input == "azureml://datastores/irisdata/paths/9.csv"
    assert jobs[0].created == deployed.get_job(names[-1]).created


def test_job_endpoint_and_deployment_come_from_the_services_lower_case_keys(deployed, fake):
    job = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False)
    shown = deployed.get_job(job.name)
    assert (shown.endpoint, shown.deployment) == ("iris-batch", "iris-mlflow")


def test_a_compute_instance_with_the_clusters_name_is_a_clear_conflict(backend, fake, specs):
    fake.add_compute("cpu-cluster", "ComputeInstance", vmSize="Standard_DS3_v2")
    with pytest.raises(ConfigError) as err:
        backend.ensure_compute(specs.compute)
    assert "as a computeinstance compute, not an AmlCompute cluster" in str(err.value)
    assert "teardown" in err.value.hint and fake.find("PUT", "/computes/cpu-cluster") == []


def test_a_cluster_of_another_tier_is_a_clear_conflict(backend, fake, specs):
    backend.ensure_compute(specs.compute)
    low = load_specs(overrides={"compute": {"tier": "low_priority"}})
    with pytest.raises(ConfigError, match="cannot change a cluster's tier"):
        backend.ensure_compute(low.compute)
    assert len(puts(fake, "/computes/cpu-cluster")) == 1


@pytest.mark.parametrize("path,kind,sent", [
    ("wasbs://data@stiris.blob.core.windows.net/scoring/x.csv", "UriFile",
     "https://stiris.blob.core.windows.net/data/scoring/x.csv"),
    ("abfss://data@stiris.dfs.core.windows.net/scoring/", "UriFolder",
     "https://stiris.dfs.core.windows.net/data/scoring/"),
])
def test_storage_urls_reach_the_job_as_the_same_location(deployed, fake, path, kind, sent):
    deployed.invoke("iris-batch", path, wait=False)
    (post,) = fake.find("POST", "/jobs")
    assert post.body["properties"]["inputData"][kind]["uri"] == sent


@pytest.mark.parametrize("reference,data_type,kind", [
    ("azureml:iris-unlabeled:2", "uri_folder", "UriFolder"),
    ("azureml:iris-unlabeled@latest", "uri_file", "UriFile"),
])
def test_data_assets_pass_through_with_their_registered_type(deployed, fake, reference, data_type, kind):
    fake.add_data_asset("iris-unlabeled", "1", "uri_file", "azureml://datastores/irisdata/paths/a.csv")
    fake.add_data_asset("iris-unlabeled", "2", data_type, "azureml://datastores/irisdata/paths/b/")
    deployed.invoke("iris-batch", reference, wait=False)
    (post,) = fake.find("POST", "/jobs")
    sent = post.body["properties"]["inputData"][kind]
    assert sent["uri"].endswith("/data/iris-unlabeled/versions/2")


def test_a_local_folder_with_subfolders_is_refused_before_any_call(backend, fake, tmp_path):
    (tmp_path / "batch" / "more").mkdir(parents=True)
    (tmp_path / "batch" / "a.csv").write_text("x\n1\n")
    with pytest.raises(ConfigError) as err:
        backend.invoke("iris-batch", str(tmp_path / "batch"))
    assert "subfolders (more)" in str(err.value) and "top-level files" in err.value.hint
    assert fake.requests == []


def test_a_local_folder_with_a_pipe_or_a_link_out_of_it_is_refused_before_any_call(
        backend, fake, tmp_path):
    """The local engine names such entries as failed files; here nothing of the folder is
    uploaded: the file a link leads to outside the folder is never read."""
    import os

    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    os.mkfifo(folder / "b.csv")
    (tmp_path / "secret.csv").write_text("TOP-SECRET\n")
    (folder / "c.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(ConfigError) as err:
        backend.invoke("iris-batch", str(folder))
    assert "b.csv: a named pipe (FIFO), not a regular file" in str(err.value)
    assert f"c.csv: a symbolic link to '{tmp_path / 'secret.csv'}', outside the input folder" \
        in str(err.value)
    assert "TOP-SECRET" not in str(err.value) and "regular files" in err.value.hint
    assert fake.requests == []


def test_resources_are_creating_until_their_operation_ends_and_a_second_write_gets_409(
        backend, fake, specs):
    from deployer.backends.azure import AzureTimeout

    fake.op_polls = 10**6  # the operation does not end while the test runs
    backend.timeout_seconds = 0
    with pytest.raises(AzureTimeout, match="create compute cpu-cluster: still in progress"):
        backend.ensure_compute(specs.compute)
    assert fake.computes["cpu-cluster"]["properties"]["provisioningState"] == "Creating"
    changed = load_specs(overrides={"compute": {"max_instances": 3}})
    with pytest.raises(AzureError) as err:
        backend.ensure_compute(changed.compute)
    assert "still running" in str(err.value) and "status" in err.value.hint


def test_a_deployment_naming_a_missing_compute_is_not_found(backend, fake, specs):
    model, _ = backend.register_model(source(), spec=specs.model)
    backend.ensure_endpoint(specs.endpoint)
    with pytest.raises(AzureNotFound, match="Compute cpu-cluster was not found"):
        backend.ensure_deployment(specs.deployment, model)


def test_more_instances_than_the_cluster_allows_is_refused(backend, fake, specs):
    model, _ = backend.register_model(source(), spec=specs.model)
    backend.ensure_compute(specs.compute)
    backend.ensure_endpoint(specs.endpoint)
    many = load_specs(overrides={"deployment": {"resources": {"instance_count": 3}}})
    with pytest.raises(AzureError, match="Instance count 3 is greater than the maximum node count 2"):
        backend.ensure_deployment(many.deployment, model)


def test_cancel_job_asks_azure_and_returns_the_jobs_state(deployed, fake):
    job = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False)
    result = deployed.cancel_job(job.name)
    (cancel,) = fake.find("POST", f"/jobs/{job.name}/cancel")
    assert cancel.api_version
    assert result.name == job.name and result.status in ("Running", "Canceled")
    assert deployed.get_job(job.name).status == "Canceled"


def test_the_invoke_command_stops_at_its_timeout_and_says_what_the_job_waits_on(
        deployed, fake, monkeypatch, tmp_path):
    from click.testing import CliRunner

    import deployer.backends
    from deployer.cli import cli

    fake.job_statuses = ["Queued"]
    monkeypatch.setattr(deployer.backends, "get_backend", lambda settings: deployed)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["invoke", "--input", "azureml://datastores/irisdata/paths/x.csv",
                                      "--timeout", "0.0001", "--target", "azure"],
                                prog_name="python -m deployer")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    assert deployed.timeout_seconds == pytest.approx(0.006)
    assert "still Queued after" in result.output and "queued for nodes" in result.output


def test_the_service_refuses_names_outside_the_rest_spec_pattern(backend, fake, specs):
    """Past the deployer's own check (straight through MLClient), the fake answers as the
    service does: 400 for a deployment name outside the REST spec's pattern."""
    from azure.core.exceptions import HttpResponseError

    model, _ = backend.register_model(source(), spec=specs.model)
    backend.ensure_compute(specs.compute)
    backend.ensure_endpoint(specs.endpoint)
    deployment = backend.desired_deployment(specs.deployment, model)
    deployment.name = "blue.v2"
    with pytest.raises(HttpResponseError, match="does not match"):
        backend.ml_client.batch_deployments.begin_create_or_update(
            deployment, skip_script_validation=True).result()
    assert ("iris-batch", "blue.v2") not in fake.deployments


# ---------------------------------------------------------------------- jobs like `az ml job`


def run_cli(deployed, monkeypatch, tmp_path, *args, datastore=None):
    """`python -m deployer ... --target azure` in-process, on this backend (and datastore)."""
    from click.testing import CliRunner

    import deployer.backends
    from deployer.cli import cli
    from workspace.datastore import Datastore

    monkeypatch.setattr(deployer.backends, "get_backend", lambda settings: deployed)
    monkeypatch.setenv("DATASTORE_NAME", deployed.settings.datastore_name)
    if datastore is not None:
        monkeypatch.setattr(Datastore, "from_settings", classmethod(lambda cls, *a, **k: datastore))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner().invoke(cli, [*args, "--target", "azure"], prog_name="python -m deployer")


def test_jobs_show_wait_follows_a_job_to_its_end_and_exits_by_its_state(
        deployed, fake, monkeypatch, tmp_path):
    fake.job_statuses = ["Queued", "Running", "Finalizing", "Completed"]
    job = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False)

    done = run_cli(deployed, monkeypatch, tmp_path, "jobs", "show", job.name, "--wait")

    assert done.exit_code == 0, done.output
    for state in ("Queued", "Running (scoring)", "Finalizing (writing outputs)", "Completed"):
        assert f"job {job.name}: {state}" in done.output, state
    assert re.search(r"status\s+│ Completed", done.output)
    assert fake.jobs[job.name].polls == 4  # polled until it ended, not once

    fake.job_statuses = ["Running", "Failed"]
    failing = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/b.csv", wait=False)
    failed = run_cli(deployed, monkeypatch, tmp_path, "jobs", "show", failing.name, "--wait")
    assert failed.exit_code == ExitCode.RUN_FAILED, failed.output
    assert f"error: Job {failing.name} failed: Execution failed." in failed.output


def test_jobs_download_of_a_running_job_says_to_wait(deployed, fake, monkeypatch, tmp_path):
    fake.job_statuses = ["Running"]
    job = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False)

    early = run_cli(deployed, monkeypatch, tmp_path, "jobs", "download", job.name)

    assert early.exit_code == ExitCode.NOT_ENDED == 9, early.output
    assert f"Job {job.name} is Running: its predictions exist once it has completed" in early.output
    assert f"python -m deployer jobs show {job.name} --wait" in early.output
    assert not [r for r in fake.requests if r.path.endswith("/children")]  # nothing downloaded
    assert not (tmp_path / "outputs").exists()


def test_jobs_download_of_a_downloaded_job_is_a_no_op(deployed, fake, blob_store, monkeypatch,
                                                      tmp_path):
    deployed._datastore = blob_store
    fake.on_complete = lambda job: blob_store.outputs.upload_bytes(
        b"0,setosa,a.csv\n", fake.output_path(job) + "predictions.csv")
    job = deployed.invoke("iris-batch", "azureml://datastores/irisdata/paths/a.csv", wait=False)
    first = run_cli(deployed, monkeypatch, tmp_path, "jobs", "show", job.name, "--wait")
    assert first.exit_code == 0, first.output

    downloaded = run_cli(deployed, monkeypatch, tmp_path, "jobs", "download", job.name)
    assert downloaded.exit_code == 0, downloaded.output
    children_listed = len([r for r in fake.requests if r.path.endswith("/children")])
    again = run_cli(deployed, monkeypatch, tmp_path, "jobs", "download", job.name)

    assert again.exit_code == 0, again.output
    assert (f"Already downloaded: outputs/{job.name}/predictions.csv holds job {job.name}'s "
            "predictions") in again.output
    assert len([r for r in fake.requests if r.path.endswith("/children")]) == children_listed
    assert (tmp_path / "outputs" / job.name / "predictions.csv").read_bytes() == b"0,setosa,a.csv\n"


def test_a_failed_jobs_report_names_its_error(deployed, fake, monkeypatch, tmp_path):
    fake.job_statuses = ["Running", "Failed"]

    failed = run_cli(deployed, monkeypatch, tmp_path, "invoke", "--input",
                     "azureml://datastores/irisdata/paths/x.csv", "--report")

    assert failed.exit_code == ExitCode.RUN_FAILED, failed.output
    (name,) = fake.jobs
    page = (tmp_path / "outputs" / name / "report.html").read_text()
    assert 'class="status failed"' in page and "Execution failed. User process" in page
    assert "iris-classifier version 1" in page  # the model its deployment serves
    assert "No failed files" not in page


def test_the_report_of_an_azure_job_scores_the_uploaded_input_against_its_labels(
        deployed, fake, blob_store, monkeypatch, tmp_path):
    import csv

    deployed._datastore = blob_store
    iris = REPO_ROOT / "data" / "iris_csv.csv"
    species = [row["species"] for row in csv.DictReader(iris.open())]
    predicted = ["setosa"] * len(species)  # right for the 50 setosa rows only
    fake.on_complete = lambda job: blob_store.outputs.upload_bytes(
        "".join(f"{i},{p},iris_csv.csv\n" for i, p in enumerate(predicted)).encode(),
        fake.output_path(job) + "predictions.csv")

    done = run_cli(deployed, monkeypatch, tmp_path, "invoke", "--input", str(iris), "--report",
                   datastore=blob_store)

    assert done.exit_code == 0, done.output
    (name,) = fake.jobs
    page = (tmp_path / "outputs" / name / "report.html").read_text()
    assert '<div class="card" id="accuracy"><div class="value">0.333</div>' in page
    assert "50 of 150 rows" in page
    assert "iris-classifier version 1" in page


def test_a_label_column_without_a_report_is_refused(deployed, fake, monkeypatch, tmp_path):
    for args in (("jobs", "download", "batchjob-1"),
                 ("invoke", "--input", "azureml://datastores/irisdata/paths/x.csv")):
        refused = run_cli(deployed, monkeypatch, tmp_path, *args, "--label-column", "class")
        assert refused.exit_code == ExitCode.USAGE, refused.output
        assert "--label-column is for the report: pass --report too." in refused.output
    assert not fake.jobs
