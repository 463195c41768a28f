"""score-iris and its triggers on the Azure target, through the real
DataFactoryManagementClient with the fake factory as its transport: what is published (down
to the request bodies) and how triggers are listed, started and stopped."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from adf.azure_backend import AzureBackend
from adf.cli import cli
from adf.definitions import DEFINITIONS_DIR, fill, load_definitions, placeholder_values
from adf.local_triggers import load_triggers
from tests.adf.test_azure_backend import fake  # noqa: F401 - the fake over this module's settings
from tests.adf.test_definitions import AZURE_VALUES
from tests.support.fake_datafactory import FakeAzure
from tests.support.fake_http import StaticTokenCredential
from workspace.settings import Settings


@pytest.fixture
def azure_settings(tmp_path) -> Settings:
    return Settings.load(env_file=tmp_path / "no.env", environ={}, local_dir=str(tmp_path / "local"),
                         batch_endpoint_name="iris-batch-7f3a", **AZURE_VALUES)


@pytest.fixture
def backend(azure_settings, fake) -> AzureBackend:
    return AzureBackend(azure_settings, credential=StaticTokenCredential(), transport=fake,
                        retry_backoff_factor=0)


@pytest.fixture
def run_cli(monkeypatch, backend):
    def run(*args):
        monkeypatch.setattr("adf.cli.make_backend",
                            lambda target, definitions_dir, pipeline=None: _with(backend, pipeline))
        monkeypatch.setattr("adf.triggers_cli._azure", lambda settings, definitions_dir: backend)
        monkeypatch.setattr("adf.triggers_cli._load",
                            lambda target, definitions_dir: (backend.settings,
                                                             load_triggers(backend.settings)))
        return CliRunner().invoke(cli, list(args), prog_name="python -m adf")
    return run


def _with(backend, pipeline):
    from adf.targets import pipeline_file

    if pipeline:
        backend.pipeline_file = pipeline_file(None, pipeline)
    return backend


def test_score_iris_is_published_as_its_json_with_the_deployments_values(run_cli, fake, azure_settings):
    result = run_cli("trigger", "--pipeline", "score-iris", "--param", "input=incoming/a.csv",
                     "--no-wait")
    assert result.exit_code == 0, result.output
    assert fake.missing_routes() == []
    expected = fill(load_definitions(DEFINITIONS_DIR, "score-pipeline.json").pipeline,
                    placeholder_values(azure_settings)).body
    assert fake.published[("pipelines", "score-iris")] == {"properties": expected["properties"]}
    sent = json.dumps(fake.published[("pipelines", "score-iris")])
    assert "__" not in sent.replace("__main__", "")  # every placeholder filled
    params = expected["properties"]["parameters"]
    assert params["endpoint"]["defaultValue"] == "iris-batch-7f3a"
    assert params["workspaceUri"]["defaultValue"] == (
        "https://management.azure.com/subscriptions/00000000-0000-0000-0000-000000000001/"
        "resourceGroups/rg-iris/providers/Microsoft.MachineLearningServices/workspaces/mlw-iris")
    # the Web activities authenticate with the factory's managed identity, audience
    # ml.azure.com; the routing header is sent only on the route that names a deployment
    route = {a["name"]: a for a in expected["properties"]["activities"]}["RouteInvoke"]["typeProperties"]
    default, routed = route["ifTrueActivities"][0], route["ifFalseActivities"][0]
    for web in (default, routed):
        assert web["typeProperties"]["authentication"] == {"type": "MSI", "resource": "https://ml.azure.com"}
    assert "azureml-model-deployment" not in default["typeProperties"]["headers"]
    assert routed["typeProperties"]["headers"]["azureml-model-deployment"] == "@pipeline().parameters.deployment"
    run = fake.find("POST", r"/pipelines/score-iris/createRun$")[0]
    assert run.body == {"input": "incoming/a.csv"}  # only what was given; the rest: defaults
    # staging is the training pipeline's: the scoring pipeline uploads nothing
    assert not [r for r in fake.requests if r.method == "PUT" and r.host == fake.storage_host]


def test_triggers_are_listed_started_and_stopped_by_the_factory(run_cli, fake, azure_settings):
    for name, document in load_triggers(azure_settings).items():  # as Bicep deploys them: stopped
        fake.published[("triggers", name)] = {"properties": document.properties}
        fake.trigger_states[name] = "Stopped"
    listed = run_cli("triggers", "list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    states = {t["name"]: t["state"] for t in json.loads(listed.output)["triggers"]}
    assert states == {"score-iris-nightly": "Stopped", "score-iris-on-upload": "Stopped"}
    started = run_cli("triggers", "start", "score-iris-on-upload")
    assert started.exit_code == 0, started.output
    assert fake.trigger_states == {"score-iris-nightly": "Stopped", "score-iris-on-upload": "Started"}
    assert fake.find("POST", r"/triggers/score-iris-on-upload/start$")[0].query["api-version"] == "2018-06-01"
    stopped = run_cli("triggers", "stop")
    assert stopped.exit_code == 0, stopped.output
    assert set(fake.trigger_states.values()) == {"Stopped"}
    unknown = run_cli("triggers", "start", "nope")
    assert unknown.exit_code == 2 and "score-iris-nightly" in unknown.output


def test_the_storage_trigger_watches_incoming_of_the_datastore_account(azure_settings):
    trigger = load_triggers(azure_settings)["score-iris-on-upload"].properties
    assert trigger["typeProperties"]["blobPathBeginsWith"] == "/azureml/blobs/incoming/"
    assert trigger["typeProperties"]["scope"] == (
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-iris/providers/"
        "Microsoft.Storage/storageAccounts/stiris")
    assert trigger["pipelines"][0]["pipelineReference"]["referenceName"] == "score-iris"


def test_cancel_of_a_scoring_run_also_cancels_its_job_in_azure_ml(azure_settings):
    """Data Factory's cancel stops the pipeline run, not the batch job its Web activity
    started: the job is cancelled through azure-ai-ml (Jobs - Cancel), both through the real
    SDK clients over the fakes (Data Factory's and Azure ML's, one transport by host/path)."""
    from tests.support.fake_azureml import FakeAzureML, FakeJob
    from tests.support.fake_datafactory import RunPlan

    ml = FakeAzureML(azure_settings.subscription_id, azure_settings.resource_group,
                     azure_settings.aml_workspace)

    class Both(FakeAzure):
        def _route(self, r):
            if "/providers/microsoft.machinelearningservices/" in r.path.lower() or \
                    r.host.endswith("api.azureml.ms"):
                return ml._route(r)
            return super()._route(r)

    both = Both(azure_settings.subscription_id, azure_settings.resource_group,
                azure_settings.data_factory, azure_settings.batch_account_url,
                azure_settings.storage_blob_url, pool_id=azure_settings.batch_pool_id)
    ml.jobs["batchjob-1"] = FakeJob("batchjob-1", "iris-batch-7f3a", "iris-mlflow-v1", {},
                                    statuses=["Running"])
    invoke_output = {"id": f"{ml.ws_path}/batchEndpoints/iris-batch-7f3a/deployments/iris-mlflow-v1"
                           "/jobs/batchjob-1", "name": "batchjob-1",
                     "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments/jobs",
                     "properties": {"status": "NotStarted"}}
    both.next_plan = RunPlan(statuses=["InProgress"], activities=[
        {"activityName": "InvokeBatchEndpoint", "activityType": "WebActivity",
         "status": "Succeeded", "output": invoke_output},
        {"activityName": "WaitForJob", "activityType": "Until", "status": "InProgress", "output": {}}])
    backend = AzureBackend(azure_settings, credential=StaticTokenCredential(), transport=both,
                           retry_backoff_factor=0)
    backend.pipeline_file = "score-pipeline.json"
    both.published[("pipelines", "score-iris")] = {}
    run_id = backend.start({"input": "incoming/a.csv"})
    backend.cancel(run_id)
    assert both.find("POST", rf"/pipelineruns/{run_id}/cancel$")
    assert [r.path for r in both.requests if r.method == "POST" and "/jobs/" in r.path] == [
        f"{ml.ws_path}/jobs/batchjob-1/cancel"]
    assert both.missing_routes() == []
    assert ml.jobs["batchjob-1"].statuses[-1] == "Canceled"


def test_train_and_deploy_is_published_after_the_pipelines_it_executes_and_stages_the_deployer(
        run_cli, fake, azure_settings, tmp_path):
    import zipfile

    from adf.staging import DEPLOY_TASK, STAGED_FILES, build_archive

    result = run_cli("trigger", "--pipeline", "train-and-deploy", "--no-wait")
    assert result.exit_code == 0, result.output
    assert fake.missing_routes() == []
    # Data Factory refuses an Execute Pipeline of a pipeline it lacks: children first
    order = [r.path.rsplit("/", 1)[-1] for r in fake.requests
             if r.method == "PUT" and "/pipelines/" in r.path]
    assert order[-1] == "train-and-deploy"
    assert {"train-iris", "deploy-iris", "score-iris"} <= set(order[:-1])
    values = placeholder_values(azure_settings)
    for name, file in (("train-and-deploy", "train-and-deploy-pipeline.json"),
                       ("deploy-iris", "deploy-pipeline.json")):
        expected = fill(load_definitions(DEFINITIONS_DIR, file).pipeline, values).body
        assert fake.published[("pipelines", name)] == {"properties": expected["properties"]}
        assert "__" not in json.dumps(fake.published[("pipelines", name)])
    deploy = fake.published[("pipelines", "deploy-iris")]["properties"]
    custom = deploy["activities"][0]["typeProperties"]
    settings = custom["extendedProperties"]["settings"]  # the deployer's settings, none secret
    assert settings["AML_WORKSPACE"] == azure_settings.aml_workspace
    assert settings["AZURE_SUBSCRIPTION_ID"] == azure_settings.subscription_id
    assert deploy["parameters"]["target"]["defaultValue"] == "azure"
    assert deploy["parameters"]["poolIdentityClientId"]["defaultValue"] == \
        azure_settings.pool_identity_client_id
    assert not [k for k in settings if "KEY" in k or "SECRET" in k or "CONNECTION" in k]
    loop = fake.published[("pipelines", "train-and-deploy")]["properties"]
    assert loop["parameters"]["input"]["defaultValue"] == f"{azure_settings.staging_prefix}/iris_csv.csv"
    # one staging for both Custom activities: the trainer, the sample, the deployer archive
    folder = custom["folderPath"]
    assert folder == fake.published[("pipelines", "train-iris")]["properties"]["activities"][0][
        "typeProperties"]["folderPath"]
    archive = build_archive(tmp_path)
    for path in (*STAGED_FILES, DEPLOY_TASK, archive):
        assert fake.blobs[f"{folder}/{path.name}"] == path.read_bytes()
    assert "deployer/__main__.py" in zipfile.ZipFile(archive).namelist()
    assert fake.find("POST", r"/pipelines/train-and-deploy/createRun$")
