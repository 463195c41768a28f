"""The ARM JSON in adf/: valid for the Data Factory SDK, references resolve, placeholders are
settings, the evaluated command is one the trainer accepts, and nothing in it is a secret."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
from dataclasses import replace

import pytest

from adf.definitions import (DEFINITIONS_DIR, LOCAL_ONLY_EMPTY, coerce_parameters,
                             effective_parameters, fill, filled, load_definitions,
                             parse_param_options, placeholder_values, placeholders,
                             references)
from adf.expressions import PipelineContext, evaluate
from adf.activity_plan import LOCAL_PARAMETERS, plan_activity
from adf.runs import parse_timespan
from tests.conftest import TRAINER
from workspace.errors import ConfigError
from workspace.settings import AZURITE_KEY, REPO_ROOT, Settings, documented_keys

AZURE_VALUES = dict(
    target="azure", subscription_id="00000000-0000-0000-0000-000000000001",
    resource_group="rg-iris", location="westeurope", storage_account="stiris",
    storage_blob_url="https://stiris.blob.core.windows.net", key_vault="kv-iris",
    storage_suffix="core.windows.net", key_vault_dns_suffix=".vault.azure.net",
    aml_workspace="mlw-iris", data_factory="adf-iris",
    adf_identity_resource_id="/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/"
                             "rg-iris/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-adf",
    batch_account="batchiris", batch_account_url="https://batchiris.westeurope.batch.azure.com",
    pool_identity_client_id="11111111-2222-3333-4444-555555555555",
    datastore_name="irisdata", container="azureml")


@pytest.fixture
def azure_settings(tmp_path) -> Settings:
    return Settings.load(env_file=tmp_path / "no.env", environ={}, **AZURE_VALUES)


@pytest.fixture
def raw():
    return load_definitions()


def _trainer_parser():
    spec = importlib.util.spec_from_file_location("adf_test_trainer_main", TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def _unknown_keys(model, data: dict, path: str) -> list[str]:
    """Keys of data that the SDK model does not define (typos the service would reject or drop)."""
    from azure.mgmt.datafactory._utils.model_base import Model

    fields = {f._rest_name: attr for attr, f in type(model)._attr_to_rest_field.items()}
    unknown = []
    for key, value in data.items():
        if key not in fields:
            unknown.append(f"{path}.{key}")
            continue
        attribute = getattr(model, fields[key])
        if isinstance(attribute, Model) and isinstance(value, dict):
            unknown += _unknown_keys(attribute, value, f"{path}.{key}")
        elif isinstance(attribute, list) and isinstance(value, list):
            for i, (item, item_data) in enumerate(zip(attribute, value)):
                if isinstance(item, Model) and isinstance(item_data, dict):
                    unknown += _unknown_keys(item, item_data, f"{path}.{key}[{i}]")
    return unknown


# ------------------------------------------------------------------ SDK models


def test_pipeline_deserializes_with_the_data_factory_models(raw):
    from azure.mgmt.datafactory import models
    from azure.mgmt.datafactory._utils.model_base import _deserialize

    body = raw.pipeline.body
    pipeline = _deserialize(models.PipelineResource, body)
    assert pipeline.name == "train-iris"
    properties = {k: v for k, v in body["properties"].items() if k != "activities"}
    assert _unknown_keys(pipeline.properties, properties, "properties") == []
    assert set(pipeline.properties.parameters) == set(body["properties"]["parameters"])

    (activity_body,) = body["properties"]["activities"]
    assert activity_body["type"] == "Custom"
    # "Custom" is a discriminator of ExecutionActivity: it must select CustomActivity.
    activity = _deserialize(models.ExecutionActivity, activity_body)
    assert isinstance(activity, models.CustomActivity)
    assert _unknown_keys(activity, activity_body, "activity") == []
    assert activity.type_properties.command["type"] == "Expression"
    assert activity.type_properties.folder_path == "__DATASTORE_CONTAINER__/__STAGING_PREFIX__"
    assert activity.policy.retry == 0 and parse_timespan(activity.policy.timeout, "t") == 3600


def test_sdk_models_would_lose_the_custom_type_so_dicts_are_sent(raw):
    """Why the Azure backend publishes plain dicts: the 10.0.0 model rewrites the type."""
    from azure.mgmt.datafactory import models
    from azure.mgmt.datafactory._utils.model_base import _deserialize

    activity = _deserialize(models.ExecutionActivity, raw.activity)
    assert activity.as_dict()["type"] == "Execution"


@pytest.mark.parametrize("name, model_name", [
    ("AzureBatchLinkedService", "AzureBatchLinkedService"),
    ("AzureBlobStorageLinkedService", "AzureBlobStorageLinkedService"),
    ("KeyVaultLinkedService", "AzureKeyVaultLinkedService"),
])
def test_linked_services_deserialize_to_their_types(raw, name, model_name):
    from azure.mgmt.datafactory import models
    from azure.mgmt.datafactory._utils.model_base import _deserialize

    body = raw.linked_services[name].body
    resource = _deserialize(models.LinkedServiceResource, body)
    assert type(resource.properties).__name__ == model_name
    assert _unknown_keys(resource, body, name) == []


def test_credential_deserializes_as_a_managed_identity(raw):
    from azure.mgmt.datafactory import models
    from azure.mgmt.datafactory._utils.model_base import _deserialize

    (credential,) = raw.credentials.values()
    resource = _deserialize(models.CredentialResource, credential.body)
    assert isinstance(resource.properties, models.ManagedIdentityCredential)
    assert _unknown_keys(resource, credential.body, credential.name) == []


# ------------------------------------------------------------------ references


def test_every_reference_resolves(raw):
    linked = set(raw.linked_services)
    for document in raw.documents():
        for name in references(document.body, "LinkedServiceReference"):
            assert name in linked, f"{document.display_path} references missing linked service {name}"
        for name in references(document.body, "CredentialReference"):
            assert name in raw.credentials, f"{document.display_path} references missing credential {name}"
    activity = raw.activity
    assert raw.linked_services[activity["linkedServiceName"]["referenceName"]].properties["type"] == "AzureBatch"
    staging = activity["typeProperties"]["resourceLinkedService"]["referenceName"]
    assert raw.linked_services[staging].properties["type"] == "AzureBlobStorage"
    # ADF writes the task logs to the storage linked service of the Batch linked service.
    batch = raw.linked_services[activity["linkedServiceName"]["referenceName"]]
    assert batch.properties["typeProperties"]["linkedServiceName"]["referenceName"] == staging


def test_publish_order_puts_referenced_linked_services_first(raw):
    order = [d.name for d in raw.linked_services_in_order()]
    for document in raw.linked_services.values():
        for ref in references(document.body, "LinkedServiceReference"):
            assert order.index(ref) < order.index(document.name)


def test_expression_parameters_are_declared_and_used(raw):
    text = json.dumps(raw.activity)
    used = set(re.findall(r"pipeline\(\)\.parameters\.(\w+)", text))
    assert used == set(raw.parameters)


def test_placeholders_are_settings_keys():
    keys = {key for key, _, _ in documented_keys()}
    example = (REPO_ROOT / ".env.example").read_text()
    for path in sorted(DEFINITIONS_DIR.rglob("*.json")):
        for key in placeholders(json.loads(path.read_text())):
            assert key in keys and f"\n{key}=" in example, f"{path.name}: __{key}__"


# ------------------------------------------------------------------ placeholders


def test_filled_definitions_have_no_placeholder_left(raw, azure_settings):
    definitions = filled(raw, azure_settings)
    for document in definitions.documents():
        assert not placeholders(document.body), document.display_path
    batch = definitions.linked_services["AzureBatchLinkedService"].properties["typeProperties"]
    assert batch["batchUri"] == AZURE_VALUES["batch_account_url"]
    assert definitions.folder_path == "azureml/adf/iris-training"


def test_empty_setting_is_named_with_its_file(raw, azure_settings):
    settings = replace(azure_settings, key_vault="")
    with pytest.raises(ConfigError, match=r"adf/linkedServices/KeyVaultLinkedService\.json needs "
                                          r"setting\(s\) AZURE_KEY_VAULT"):
        filled(raw, settings)


def test_unknown_placeholder_is_an_error(raw, azure_settings, tmp_path):
    document = replace(raw.pipeline, body={**raw.pipeline.body, "name": "__NO_SUCH_KEY__"})
    with pytest.raises(ConfigError, match=r"adf/pipeline\.json uses placeholder\(s\) "
                                          r"__NO_SUCH_KEY__ that are not settings"):
        fill(document, placeholder_values(azure_settings))


def test_local_target_needs_no_azure_setting(raw, tmp_path):
    settings = Settings.load(env_file=tmp_path / "no.env", environ={})
    definitions = filled(raw, settings, pipeline_only=True, allow_empty=LOCAL_ONLY_EMPTY)
    assert definitions.parameters["containerPath"]["defaultValue"] == "azureml/models"


# ------------------------------------------------------------------ the command


def _command(definitions, parameters, settings, run_id="run-1") -> list[str]:
    plan = plan_activity(definitions, effective_parameters(definitions, parameters), run_id, settings)
    return shlex.split(plan.command)


def test_azure_command_parses_with_the_trainers_parser(raw, azure_settings):
    definitions = filled(raw, azure_settings)
    argv = _command(definitions, {}, azure_settings)
    assert argv[0] == "/opt/iris-trainer/venv/bin/python" and argv[1] == "main.py"
    args = _trainer_parser().parse_args(argv[2:])
    assert args.iris_csv == "iris_csv.csv"  # staged flat into the working directory
    assert (args.epochs, args.lr) == (50, 0.1)
    assert args.container_name == "azureml/models"
    assert args.account_url == AZURE_VALUES["storage_blob_url"]
    assert args.client_id == AZURE_VALUES["pool_identity_client_id"]
    assert args.connection_string is None


def test_local_command_uses_this_interpreter_and_no_storage_url(raw, tmp_path):
    settings = Settings.load(env_file=tmp_path / "no.env", environ={})
    definitions = filled(raw, settings, pipeline_only=True, allow_empty=LOCAL_ONLY_EMPTY)
    typed = coerce_parameters(definitions, parse_param_options(["epochs=7", "lr=0.05"]))
    argv = _command(definitions, {**LOCAL_PARAMETERS, **typed}, settings)
    assert argv[0] == LOCAL_PARAMETERS["python"]
    args = _trainer_parser().parse_args(argv[2:])
    assert (args.epochs, args.lr) == (7, 0.05)
    assert args.account_url == "" and args.client_id == ""  # empty: connection string from env


def test_staged_files_are_the_ones_the_command_uses(raw):
    from adf.staging import STAGED_FILES

    command = raw.activity["typeProperties"]["command"]["value"]
    names = {p.name for p in STAGED_FILES}
    assert {"main.py", "iris_csv.csv", "requirements.txt"} == names
    assert " main.py " in command and "--iris-csv iris_csv.csv" in command
    deploy = load_definitions(None, "deploy-pipeline.json").activity["typeProperties"]
    assert " deploy_task.py register-and-deploy" in deploy["command"]["value"]
    assert deploy["folderPath"] == raw.activity["typeProperties"]["folderPath"]  # one staging


def test_the_archive_holds_the_deployers_packages_reproducibly(tmp_path):
    import zipfile

    from adf.deploy_task import ARCHIVE
    from adf.staging import ARCHIVE_NAME, build_archive

    assert ARCHIVE == ARCHIVE_NAME
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = build_archive(tmp_path / "a"), build_archive(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()  # unchanged sources: staged once
    names = set(zipfile.ZipFile(first).namelist())
    assert {"deployer/__main__.py", "deployer/specs/deployment.yml", "deployer/smoke/smoke.csv",
            "workspace/settings.py", "adf/local_runner.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_activity_json_carries_the_run_id_and_evaluated_properties(raw, azure_settings):
    definitions = filled(raw, azure_settings)
    plan = plan_activity(definitions, effective_parameters(definitions, {}), "run-42", azure_settings)
    assert plan.activity["type"] == "Custom"
    assert plan.activity["typeProperties"]["extendedProperties"] == {"runId": "run-42"}
    assert plan.activity["typeProperties"]["command"] == plan.command
    assert (plan.timeout_seconds, plan.retry, plan.retry_interval_seconds) == (3600, 0, 30)


# ------------------------------------------------------------------ no secrets

SECRET_PATTERNS = [
    r"AccountKey\s*=", r"SharedAccessSignature", r"[?&]sig=", r"client_?secret",
    r"\"password\"\s*:", r"\"servicePrincipalKey\"", r"[A-Za-z0-9+/]{40,}={0,2}",
]


def test_no_secret_in_the_definitions(raw):
    for path in sorted(DEFINITIONS_DIR.rglob("*.json")):
        text = path.read_text()
        assert AZURITE_KEY not in text
        for pattern in SECRET_PATTERNS:
            assert not re.search(pattern, text, re.I), f"{path.name} matches {pattern}"
    # Anything in extendedProperties or the command is plain text on the node.
    type_properties = raw.activity["typeProperties"]
    assert "SecureString" not in json.dumps(type_properties)
    # The staging key is only ever a Key Vault reference.
    blob = raw.linked_services["AzureBlobStorageLinkedService"].properties["typeProperties"]
    assert blob["accountKey"]["type"] == "AzureKeyVaultSecret"
    assert "AccountKey" not in blob["connectionString"]


def test_no_secret_in_the_evaluated_local_command(raw, tmp_path):
    settings = Settings.load(env_file=tmp_path / "no.env", environ={})
    definitions = filled(raw, settings, pipeline_only=True, allow_empty=LOCAL_ONLY_EMPTY)
    plan = plan_activity(definitions, effective_parameters(definitions, LOCAL_PARAMETERS),
                         "r", settings)
    assert AZURITE_KEY not in json.dumps(plan.activity)
    assert "connection" not in plan.command.lower()


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("pair, message", [
    ("epochs=x", r"'epochs' is an Int parameter; pass a whole number"),
    ("nope=1", r"has no parameter 'nope' \(adf/pipeline.json accepts: epochs, lr, "
               r"containerPath\)"),
    # the runner's interpreter and the deployment's account are not a run's to choose
    ("python=/bin/sh", r"--param python: 'python' is not a run's parameter; it is the runner's "
                       r"interpreter .* Parameters you can pass: epochs, lr, "
                       r"containerPath\.$"),
    ("storageAccountUrl=https://elsewhere", r"'storageAccountUrl' is not a run's parameter"),
    ("datastoreName=x", r"'datastoreName' is not a run's parameter"),
    # a blob folder follows the Storage naming rules
    ("containerPath=models/../../other", r"--param containerPath 'models/../../other' is not "
                                         r"a valid container path: its folder '../../other': "
                                         r"its segment '..' ends with '.'"),
    ("containerPath=Models", r"its container 'Models'"),
    ("epochs", r"--param 'epochs' is not name=value"),
])
def test_bad_parameters_are_one_clear_error(raw, pair, message):
    with pytest.raises(ConfigError, match=message):
        coerce_parameters(raw, parse_param_options([pair]))


def test_parameters_are_typed_as_declared(raw):
    typed = coerce_parameters(raw, parse_param_options(["epochs=12", "lr=0.2",
                                                        "containerPath=cont/p=q"]))
    assert typed == {"epochs": 12, "lr": "0.2", "containerPath": "cont/p=q"}


def test_a_trainer_option_has_one_name_in_the_pipeline_the_grid_and_the_trainer(raw):
    """A pipeline parameter that feeds a trainer option a sweep's grid also sets is named as
    the grid's column (the trainer's option without its dashes, the MLflow param)."""
    from adf.parameters import command_template, trainer_options
    from adf.sweep_grid import COLUMNS

    fed = trainer_options(command_template(raw))
    shared = {name: option for name, option in fed.items() if option in COLUMNS.values()}
    assert shared and all(option == COLUMNS.get(name) for name, option in shared.items()), shared


def test_the_former_name_of_a_parameter_is_an_alias_with_one_note(raw):
    notes: list[str] = []
    typed = coerce_parameters(raw, parse_param_options(["learningRate=0.2", "epochs=3"]),
                              note=notes.append)
    assert typed == {"lr": "0.2", "epochs": 3}
    assert notes == ["note: --param learningRate is now --param lr, the trainer's and the "
                     "sweep grid's name; learningRate is still accepted."]
    with pytest.raises(ConfigError, match="--param learningRate and --param lr are the same"):
        coerce_parameters(raw, parse_param_options(["learningRate=0.2", "lr=0.3"]))


def test_timespans():
    assert parse_timespan("0.01:00:00", "t") == 3600
    assert parse_timespan("1.00:00:30", "t") == 86430
    assert parse_timespan("00:05:00", "t") == 300
    with pytest.raises(ConfigError, match="not a timespan d.hh:mm:ss"):
        parse_timespan("1h", "policy.timeout")


def test_expression_context_is_the_run(raw):
    context = PipelineContext("train-iris", "abc", {"epochs": 3})
    assert evaluate("@pipeline().RunId", context) == "abc"
    assert evaluate("@pipeline().Pipeline", context) == "train-iris"


def test_the_pool_installs_what_register_and_deploy_imports():
    """deploy-iris runs the deployer with the pool's interpreter: its third-party imports on
    the Azure path (the CLI, settings, the azure-ai-ml backend) are in the start task's list."""
    from workspace.settings import REPO_ROOT

    pinned = {line.split("==")[0].lower() for line in
              (REPO_ROOT / "trainer" / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert {"azure-ai-ml", "azure-identity", "azure-storage-blob", "click", "rich", "pyyaml",
            "python-dotenv", "mlflow"} <= pinned


def test_deploy_iris_is_planned_locally_with_the_local_deployer_settings(tmp_path):
    """deploy-iris alone on the local target: its Azure-only settings may be empty there, and
    the runner sets the deployer's target, state folder and Azurite port."""
    from adf.activity_plan import local_parameters
    from adf.local_runner import LocalBackend

    settings = Settings.load(env_file=tmp_path / "no.env", environ={},
                             local_dir=str(tmp_path / "local"), azurite_port="10123")
    backend = LocalBackend(settings)
    backend.pipeline_file = "deploy-pipeline.json"
    definitions = backend.definitions()
    values = effective_parameters(definitions, local_parameters(definitions, settings))
    plan = plan_activity(definitions, values, "run-7", settings)
    extended = plan.activity["typeProperties"]["extendedProperties"]
    assert extended["settings"]["TARGET"] == "local"
    assert extended["settings"]["LOCAL_DIR"] == str(tmp_path / "local")
    assert extended["settings"]["AZURITE_BLOB_PORT"] == "10123"
    assert extended["poolIdentityClientId"] == ""  # locally: Azurite's connection string
    assert plan.command.split()[1:] == ["deploy_task.py", "register-and-deploy"]
