"""The Azure target through the real DataFactoryManagementClient, BatchClient and blob client,
with a fake of just the operations used plugged in as their HTTP transport."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from adf.azure_backend import AzureBackend
from adf.cli import cli
from adf.definitions import filled, load_definitions
from tests.support.fake_datafactory import FakeAzure, RunPlan
from tests.support.fake_http import StaticTokenCredential
from tests.adf.test_definitions import AZURE_VALUES
from workspace.errors import ConfigError, ExitCode
from workspace.settings import AZURITE_KEY, Settings

FACTORY_API = "2018-06-01"
BATCH_API = "2025-06-01"
STDERR = (b"Traceback (most recent call last):\n  File \"main.py\", line 1\n"
          b"ModuleNotFoundError: No module named 'mlflow'\n")


@pytest.fixture
def azure_settings(tmp_path) -> Settings:
    return Settings.load(env_file=tmp_path / "no.env", environ={}, local_dir=str(tmp_path / "local"),
                         **AZURE_VALUES)


@pytest.fixture
def fake(azure_settings) -> FakeAzure:
    return FakeAzure(azure_settings.subscription_id, azure_settings.resource_group,
                     azure_settings.data_factory, azure_settings.batch_account_url,
                     azure_settings.storage_blob_url, pool_id=azure_settings.batch_pool_id)


@pytest.fixture
def credential() -> StaticTokenCredential:
    return StaticTokenCredential()


@pytest.fixture
def invoke(monkeypatch, azure_settings, fake, credential):
    """Run the CLI in-process with an AzureBackend whose clients talk to the fake."""
    def run(*args, credential_override=None):
        backend = AzureBackend(azure_settings, credential=credential_override or credential,
                               transport=fake, retry_backoff_factor=0)
        monkeypatch.setattr("adf.cli.make_backend", lambda target, definitions_dir, pipeline=None: backend)
        return CliRunner().invoke(cli, list(args), prog_name="python -m adf")
    return run


def _idle_pool(fake: FakeAzure) -> None:
    fake.pool.update(currentDedicatedNodes=1, targetDedicatedNodes=1)
    fake.nodes = [{"id": "tvm-1", "url": "https://x/nodes/tvm-1", "state": "idle"}]


def test_trigger_publishes_the_arm_json_and_follows_the_run(invoke, fake, azure_settings, credential):
    _idle_pool(fake)
    fake.next_plan = RunPlan(custom_output={"runId": "mlflow-run-1", "metrics": {"test_accuracy": 1.0}},
                             stdout=b"[trainer] published run mlflow-run-1\n")
    result = invoke("trigger", "--no-stage", "--param", "epochs=3", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert fake.missing_routes() == []

    # Published from the JSON files as plain dicts: types intact, placeholders filled, in order.
    expected = filled(load_definitions(), azure_settings)
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert [r.path.rsplit("/", 2)[-2:] for r in puts] == [
        ["credentials", "BatchIdentityCredential"],
        ["linkedservices", "KeyVaultLinkedService"],
        ["linkedservices", "AzureBlobStorageLinkedService"],
        ["linkedservices", "AzureBatchLinkedService"],
        ["pipelines", "train-iris"]]
    for request in puts:
        assert request.host == "management.azure.com" and request.api_version == FACTORY_API
        assert request.path.startswith(
            f"/subscriptions/{azure_settings.subscription_id}/resourceGroups/rg-iris/providers/"
            "Microsoft.DataFactory/factories/adf-iris/")
        assert request.headers["authorization"] == "Bearer fake-token"
        text = json.dumps(request.body)
        assert "__" not in text.replace("__init__", "") and AZURITE_KEY not in text
    pipeline_body = puts[-1].body
    assert pipeline_body == {"properties": expected.pipeline.properties}
    assert pipeline_body["properties"]["activities"][0]["type"] == "Custom"
    assert [p.body["properties"]["type"] for p in puts[1:4]] == ["AzureKeyVault", "AzureBlobStorage",
                                                               "AzureBatch"]
    assert puts[0].body["properties"]["type"] == "ManagedIdentity"

    (create,) = fake.find("POST", r"/pipelines/train-iris/createRun$")
    assert create.body == {"epochs": 3} and create.api_version == FACTORY_API
    run_id = next(iter(fake.runs))
    assert fake.find("GET", rf"/pipelineruns/{run_id}$")
    query = fake.find("POST", rf"/pipelineruns/{run_id}/queryActivityruns$")[0]
    assert {"lastUpdatedAfter", "lastUpdatedBefore"} <= set(query.body)

    pool = fake.find("GET", r"^/pools/dsvm-pool$")
    assert pool and all(r.api_version == BATCH_API for r in pool)
    assert pool[0].headers["authorization"] == "Bearer fake-token"
    scopes = {s for call in credential.scopes for s in call}
    assert {"https://management.azure.com/.default", "https://batch.core.windows.net//.default",
            "https://storage.azure.com/.default"} <= scopes

    assert f"Run id:   {run_id}" in result.output
    assert "pool dsvm-pool: steady, 1 node(s)" in result.output and "1 idle" in result.output
    assert '"runId": "mlflow-run-1"' in result.output
    assert "[trainer] published run mlflow-run-1" in result.output  # stdout from adfjobs
    assert fake.find("GET", rf"^/adfjobs/{fake.runs[run_id].activity_run_id}/output/stdout\.txt$")

    status = invoke("status")  # the last run started from this machine
    assert status.exit_code == 0 and run_id in status.output and "Succeeded" in status.output


def test_failed_run_surfaces_stderr_and_the_pool_problem(invoke, fake):
    fake.pool.update(allocationState="resizing", targetDedicatedNodes=1, resizeErrors=[
        {"code": "AllocationTimedout", "message": "Desired number of nodes could not be allocated"}])
    fake.nodes = [{"id": "tvm-7", "url": "https://x/nodes/tvm-7", "state": "starttaskfailed",
                   "startTaskInfo": {"state": "completed", "startTime": "2026-11-22T07:00:00Z",
                                     "exitCode": 127, "retryCount": 0,
                                     "failureInfo": {"category": "usererror", "code": "FailureExitCode",
                                                     "message": "The task exited with an exit code "
                                                                "representing a failure"}}}]
    fake.node_files[("tvm-7", "startup/stderr.txt")] = b"/bin/sh: 1: python3.11: not found\n"
    fake.next_plan = RunPlan(statuses=["Queued", "InProgress", "Failed"], exitcode=1,
                             stderr=STDERR, error_message="Task exited with code 1.")
    result = invoke("trigger", "--no-stage", "--poll", "0")
    assert result.exit_code == ExitCode.RUN_FAILED, result.output
    out = result.output
    assert "Status:   Failed" in out and "exit code 1" in out
    assert "ModuleNotFoundError: No module named 'mlflow'" in out  # the task's stderr
    assert "Failed: Operation on target TrainIrisModel failed: Task exited with code 1." in out
    assert "pool dsvm-pool: resizing to 1 node(s), 0 allocated" in out
    assert "resize error AllocationTimedout: Desired number of nodes could not be allocated" in out
    assert "node tvm-7 is starttaskfailed: start task exit code 127" in out
    assert "/bin/sh: 1: python3.11: not found" in out
    file_requests = fake.find("GET", r"^/pools/dsvm-pool/nodes/tvm-7/files/startup/stderr\.txt$")
    assert file_requests and all(r.api_version == BATCH_API for r in file_requests)

    run_id = next(iter(fake.runs))
    logs = invoke("logs", run_id)
    assert logs.exit_code == 0 and "No module named 'mlflow'" in logs.output


def test_an_unreadable_start_task_stderr_keeps_the_rest_of_the_pool_diagnosis(invoke, fake):
    # No startup/stderr.txt on the node: Batch answers 404 FileNotFound (BatchError shape of the
    # Batch REST spec: code + message.value).
    fake.pool.update(allocationState="resizing", targetDedicatedNodes=1, resizeErrors=[
        {"code": "AllocationFailed", "message": "Quota reached for the pool's VM family"}])
    fake.nodes = [{"id": "tvm-8", "url": "https://x/nodes/tvm-8", "state": "starttaskfailed",
                   "startTaskInfo": {"state": "completed", "startTime": "2026-11-22T07:00:00Z",
                                     "exitCode": 2, "retryCount": 0}}]
    fake.next_plan = RunPlan(statuses=["Queued", "InProgress", "Failed"], exitcode=1,
                             stderr=STDERR, error_message="Task exited with code 1.")
    result = invoke("trigger", "--no-stage", "--poll", "0")
    out = result.output
    assert "resize error AllocationFailed: Quota reached for the pool's VM family" in out
    assert "node tvm-8 is starttaskfailed: start task exit code 2" in out
    assert "nodes: 1 starttaskfailed" in out
    assert "cannot read startup/stderr.txt" in out
    assert "cannot read the Batch pool" not in out


def test_transient_errors_are_retried(invoke, fake):
    _idle_pool(fake)
    for _ in range(2):
        fake.fail("GET", r"/pipelineruns/", 503, "ServiceUnavailable", "try again")
    # ARM throttling says when to come back; only then is a non-idempotent POST retried.
    fake.fail("POST", r"/createRun$", 429, "TooManyRequests", "slow down", {"Retry-After": "0"})
    result = invoke("trigger", "--no-stage", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert len(fake.find("POST", r"/createRun$")) == 2
    assert len(fake.runs) == 1


def test_sign_in_failure_says_az_login(invoke):
    from azure.core.exceptions import ClientAuthenticationError

    broken = StaticTokenCredential(ClientAuthenticationError(
        "DefaultAzureCredential failed to retrieve a token from the included credentials."))
    result = invoke("trigger", "--no-stage", credential_override=broken)
    assert result.exit_code == ExitCode.ACCESS_DENIED  # the same code as in `deployer`
    assert "No Azure sign-in while publishing credential 'BatchIdentityCredential'" in result.output
    assert "Run `az login`" in result.output


def test_missing_role_is_named(invoke, fake):
    fake.fail("PUT", r"/pipelines/train-iris$", 403, "AuthorizationFailed",
              "The client does not have authorization to perform action "
              "'Microsoft.DataFactory/factories/pipelines/write'")
    result = invoke("trigger", "--no-stage")
    assert result.exit_code == ExitCode.ACCESS_DENIED  # the same code as in `deployer`
    assert "Access denied while publishing pipeline 'train-iris'" in result.output
    assert "'Data Factory Contributor' on factory 'adf-iris'" in result.output
    assert not fake.runs


def test_unreadable_pool_does_not_stop_following(invoke, fake):
    fake.fail("GET", r"^/pools/dsvm-pool$", 403, "AuthorizationFailure", "not allowed")
    result = invoke("trigger", "--no-stage", "--poll", "0")
    assert result.exit_code == 0, result.output
    assert "(cannot read the Batch pool:" in result.output
    assert "'Azure Batch Account Reader' on Batch account 'batchiris'" in result.output


def test_unknown_run_id(invoke):
    result = invoke("status", "00000000-0000-0000-0000-00000000dead")
    assert result.exit_code == 4
    assert "Factory 'adf-iris' has no pipeline run '00000000-0000-0000-0000-00000000dead'" in result.output


def test_runs_list_queries_the_factory_newest_first_page_by_page(invoke, fake):
    from tests.support.fake_datafactory import FakeRun

    for index, status in enumerate(["Succeeded", "Failed", "InProgress"]):
        run = FakeRun(f"0000000{index}-0000-0000-0000-000000000000", "train-iris",
                      {"epochs": 10 + index}, RunPlan(statuses=[status]),
                      start=f"2026-01-0{index + 1}T10:00:00.000000Z")
        fake.runs[run.run_id] = run
    fake.runs_page_size = 2

    result = invoke("runs", "list", "-o", "json")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["kind"], shown["target"]) == ("adf.runs", "azure")
    assert [(r["run_id"][:8], r["status"], r["parameters"]) for r in shown["runs"]] == [
        ("00000002", "InProgress", {"epochs": "12"}), ("00000001", "Failed", {"epochs": "11"}),
        ("00000000", "Succeeded", {"epochs": "10"})]
    queries = fake.find("POST", r"/factories/adf-iris/queryPipelineRuns$")
    assert len(queries) == 2 and queries[1].body["continuationToken"] == "2"  # two pages
    body = queries[0].body
    assert body["orderBy"] == [{"orderBy": "RunStart", "order": "DESC"}]
    assert body["lastUpdatedAfter"] < body["lastUpdatedBefore"]
    assert all(q.api_version == FACTORY_API for q in queries)

    one = invoke("runs", "list", "--limit", "1")
    assert one.exit_code == 0 and one.output.startswith("00000002-0000-0000-0000-000000000000  "
                                                        "InProgress")
    assert len(fake.find("POST", r"/queryPipelineRuns$")) == 3  # a page was enough


def test_missing_azure_settings_are_named(azure_settings):
    with pytest.raises(ConfigError, match=r"ADF_FACTORY, BATCH_ACCOUNT_URL"):
        AzureBackend(replace(azure_settings, data_factory="", batch_account_url=""))


def test_stage_uploads_to_the_azure_folder_path_with_entra_id_and_skips_unchanged(invoke, fake,
                                                                                  tmp_path):
    from adf.staging import DEPLOY_TASK, STAGED_FILES, build_archive
    from workspace.datastore import sha256_file

    first = invoke("stage")
    assert first.exit_code == 0, first.output
    assert "Staging to azureml/adf/iris-training (azure)" in first.output
    assert "Staged 5 files (5 uploaded, 0 unchanged)" in first.output
    for path in (*STAGED_FILES, DEPLOY_TASK, build_archive(tmp_path)):
        name = f"azureml/adf/iris-training/{path.name}"
        assert fake.blobs[name] == path.read_bytes()
        assert fake.blob_metadata[name] == {"sha256": sha256_file(path)}
    puts = fake.find("PUT", r"^/azureml/adf/iris-training/")
    assert all(r.headers["authorization"] == "Bearer fake-token" for r in puts)
    assert not any("sig=" in r.url for r in puts)  # no SAS: the signed-in identity

    again = invoke("stage")
    assert "Staged 5 files (0 uploaded, 5 unchanged)" in again.output
    assert len(fake.find("PUT", r"^/azureml/adf/iris-training/")) == 5


def test_trigger_stages_before_it_starts(invoke, fake):
    _idle_pool(fake)
    result = invoke("trigger", "--poll", "0")
    assert result.exit_code == 0, result.output
    stage_puts = [i for i, r in enumerate(fake.requests)
                  if r.method == "PUT" and r.path.startswith("/azureml/adf/iris-training/")]
    (create,) = [i for i, r in enumerate(fake.requests) if r.path.endswith("/createRun")]
    assert len(stage_puts) == 5 and max(stage_puts) < create  # trainer, data, deployer archive


def test_cancel_calls_data_factory_cancel_recursively_and_follows_to_cancelled(invoke, fake):
    fake.next_plan = RunPlan(statuses=["Queued", "InProgress", "InProgress", "InProgress"])
    started = invoke("trigger", "--no-stage", "--no-wait")
    assert started.exit_code == 0, started.output
    run_id = next(iter(fake.runs))
    result = invoke("cancel", run_id)
    assert result.exit_code == 0, result.output
    assert f"Run {run_id} Cancelled." in result.output
    calls = fake.find("POST", rf"/pipelineruns/{run_id}/cancel$")
    assert len(calls) == 1 and calls[0].query == {"api-version": FACTORY_API, "isRecursive": "true"}
    again = invoke("cancel", run_id)
    assert again.exit_code == 0 and "already Cancelled" in again.output
    assert len(fake.find("POST", r"/cancel$")) == 1
    unknown = invoke("cancel", "00000000-0000-0000-0000-00000000dead")
    assert unknown.exit_code == 4 and "has no pipeline run" in unknown.output


def test_bad_parameter_is_refused_before_anything_is_published(invoke, fake):
    result = invoke("trigger", "--no-stage", "--param", "lr=0.1 --evil")
    assert result.exit_code == 2
    assert "--param lr=0.1 --evil: passed to the trainer as --lr" in result.output
    assert fake.requests == []


# The host suffixes of Azure US Government, as `az cloud show --name AzureUSGovernment`
# prints them and ARM's environment() returns them there: suffixes.storage and
# suffixes.keyvaultDns of AZURE_US_GOV_CLOUD in azure-cli-core (azure/cli/core/cloud.py);
# the storage suffix is also azure-ai-ml's for that cloud (azure/ai/ml/_azure_environments.py).
US_GOVERNMENT = {"storage": "core.usgovcloudapi.net", "keyvaultDns": ".vault.usgovcloudapi.net"}
PUBLIC_CLOUD = ("core.windows.net", "vault.azure.net")


def test_the_linked_services_carry_the_suffixes_of_the_cloud_deployed_to(tmp_path, credential):
    """A deployment in a sovereign cloud: its outputs (written from environment() by
    main.bicep) become .env, and what `python -m adf` publishes carries that cloud's hosts,
    as the Bicep deployment did, never the public cloud's."""
    from bicep import env_writer
    from tests.bicep.test_env_writer import FIXTURE

    deployment = json.loads(FIXTURE.read_text())
    outputs = deployment["properties"]["outputs"]
    account = outputs["azureStorageAccount"]["value"]
    outputs["azureStorageBlobUrl"]["value"] = f"https://{account}.blob.{US_GOVERNMENT['storage']}"
    outputs["azureStorageSuffix"] = {"type": "String", "value": US_GOVERNMENT["storage"]}
    outputs["azureKeyVaultDnsSuffix"] = {"type": "String", "value": US_GOVERNMENT["keyvaultDns"]}
    env = tmp_path / ".env"
    env_writer.write_env(deployment, env, echo=lambda _: None)
    settings = Settings.load(env_file=env, environ={}, local_dir=str(tmp_path / "local"))
    fake = FakeAzure(settings.subscription_id, settings.resource_group, settings.data_factory,
                     settings.batch_account_url, settings.storage_blob_url,
                     pool_id=settings.batch_pool_id)

    AzureBackend(settings, credential=credential, transport=fake,
                 retry_backoff_factor=0).prepare(lambda _: None)

    published = {r.path.rsplit("/", 1)[-1]: r.body["properties"]["typeProperties"]
                 for r in fake.requests if r.method == "PUT" and "/linkedservices/" in r.path}
    vault = outputs["azureKeyVault"]["value"]
    assert published["KeyVaultLinkedService"]["baseUrl"] == \
        f"https://{vault}{US_GOVERNMENT['keyvaultDns']}/"
    assert published["AzureBlobStorageLinkedService"]["connectionString"] == (
        f"DefaultEndpointsProtocol=https;AccountName={account};"
        f"EndpointSuffix={US_GOVERNMENT['storage']};")
    text = json.dumps(published)
    assert not [suffix for suffix in PUBLIC_CLOUD if suffix in text], text


def test_private_mode_stages_into_and_reads_logs_from_the_staging_account(tmp_path, credential, monkeypatch):
    """With STAGING_STORAGE_ACCOUNT/_BLOB_URL (private networking), the staged trainer, the task
    logs and the published staging linked service are the staging account's; the fake answers
    blob calls on that host only, so a call to the datastore account fails the run."""
    settings = Settings.load(env_file=tmp_path / "no.env", environ={}, local_dir=str(tmp_path / "local"),
                             **AZURE_VALUES, staging_storage_account="stgiris",
                             staging_storage_blob_url="https://stgiris.blob.core.windows.net")
    fake = FakeAzure(settings.subscription_id, settings.resource_group, settings.data_factory,
                     settings.batch_account_url, settings.staging_storage_blob_url, pool_id=settings.batch_pool_id)
    _idle_pool(fake)
    fake.next_plan = RunPlan(stdout=b"[trainer] published run mlflow-run-1\n")
    backend = AzureBackend(settings, credential=credential, transport=fake, retry_backoff_factor=0)
    monkeypatch.setattr("adf.cli.make_backend", lambda *args: backend)

    result = CliRunner().invoke(cli, ["trigger", "--poll", "0"], prog_name="python -m adf")

    assert result.exit_code == 0, result.output
    assert fake.missing_routes() == []
    assert all(r.host == "stgiris.blob.core.windows.net"
               for r in fake.requests if r.host.endswith(".blob.core.windows.net"))
    assert len(fake.find("PUT", r"^/azureml/adf/iris-training/")) == 5  # with deploy-iris's
    assert "[trainer] published run mlflow-run-1" in result.output  # read from the staging adfjobs
    linked = fake.published[("linkedservices", "AzureBlobStorageLinkedService")]
    assert "AccountName=stgiris;" in linked["properties"]["typeProperties"]["connectionString"]
    # The pipeline still names the datastore account for the model the trainer publishes.
    pipeline = fake.published[("pipelines", "train-iris")]
    assert pipeline["properties"]["parameters"]["storageAccountUrl"]["defaultValue"] == settings.storage_blob_url
