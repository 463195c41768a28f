"""The Bicep templates, parsed with pycep-parser (no Bicep CLI, no Azure account): every
file parses, modules are wired to what they declare, the ADF objects come from adf/ with
every placeholder filled, the outputs cover what the .env writer reads and carry no key,
and each role assignment gives the intended identity the intended role on one resource."""
from __future__ import annotations

import json
import re
from functools import lru_cache

import pytest
from pycep import BicepParser

from bicep import env_writer, schema_check
from bicep.flows import ref
from workspace.settings import REPO_ROOT, documented_keys

BICEP = REPO_ROOT / "bicep"
ADF = REPO_ROOT / "adf"
FILES = sorted(BICEP.rglob("*.bicep"))
PLACEHOLDER = re.compile(r"__([A-Z][A-Z0-9_]*?)__")


@lru_cache(maxsize=None)
def parse(relative: str) -> dict:
    return BicepParser().parse(text=(BICEP / relative).read_text())


def main() -> dict:
    return parse("main.bicep")


def module(symbol: str) -> tuple[dict, dict]:
    """(the module statement in main.bicep, the parsed module file)."""
    statement = main()["modules"][symbol]
    return statement, parse(statement["detail"]["path"])


def config(statement: dict) -> dict:
    """The body of a module or resource statement, also when it is conditional (`if`)."""
    body = statement["config"]
    return body["config"] if "condition" in body else body


def camel(key: str) -> str:
    head, *rest = key.lower().split("_")
    return head + "".join(part.capitalize() for part in rest)


def functions(expr, name: str) -> list[dict]:
    """Every call of function `name` (pycep's snake_case name) inside an expression."""
    found = []
    if isinstance(expr, dict):
        if "function" in expr and expr["function"].get("type") == name:
            found.append(expr["function"]["parameters"])
        for value in expr.values():
            found += functions(value, name)
    elif isinstance(expr, list):
        for value in expr:
            found += functions(value, name)
    return found


def replace_chain(expr) -> tuple[str, list[tuple[str, str]]]:
    """For json(replace(replace(loadTextContent(f), a, x), b, y)): (f, [(a, x), (b, y)])."""
    node = expr["function"]["parameters"]["arg_1"]
    pairs = []
    while node["function"]["type"] == "replace":
        params = node["function"]["parameters"]
        pairs.append((params["old_string"], params["new_string"]))
        node = params["original_string"]
    assert node["function"]["type"] == "load_text_content", "the chain must start at loadTextContent"
    return node["function"]["parameters"]["file_path"], list(reversed(pairs))


# ------------------------------------------------------------------ parsing and modules

def test_there_are_a_main_and_modules():
    assert BICEP / "main.bicep" in FILES
    assert len(FILES) >= 10, FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_every_bicep_file_parses(path):
    template = parse(path.relative_to(BICEP).as_posix())
    assert template.get("resources") or template.get("modules"), f"{path.name} declares nothing"


def test_main_is_subscription_scoped_and_creates_the_resource_group():
    template = main()
    assert template["globals"]["scope"]["value"] == "subscription"
    groups = [r for r in template["resources"].values()
              if r["type"] == "Microsoft.Resources/resourceGroups"]
    assert len(groups) == 1
    for symbol, statement in template["modules"].items():
        assert config(statement)["scope"] == "rg", f"module {symbol} is not deployed into the group"


@pytest.mark.parametrize("symbol", sorted(main()["modules"]))
def test_module_parameters_match_what_the_module_declares(symbol):
    statement, template = module(symbol)
    passed = set(config(statement)["params"])
    declared = template["parameters"]
    assert passed <= set(declared), f"{symbol}: unknown parameter(s) {passed - set(declared)}"
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= passed, f"{symbol}: missing parameter(s) {required - passed}"


def test_every_module_output_main_reads_exists():
    template = main()
    text = json.dumps(template)
    references = re.findall(r'"operand_1": "(\w+)", "operand_2": \{"operator": \{"type": '
                            r'"property_accessor", "operands": \{"operand_1": "outputs", '
                            r'"operand_2": "(\w+)"', text)
    assert len(references) > 30, "main.bicep should read module outputs"
    for symbol, name in references:
        _, module_template = module(symbol)
        assert name in module_template["outputs"], f"{symbol}.outputs.{name} does not exist"


# ------------------------------------------------------------------ ADF objects from adf/

ADF_VARIABLES = {
    "credentialJson": "credentials/BatchIdentityCredential.json",
    "keyVaultLinkedServiceJson": "linkedServices/KeyVaultLinkedService.json",
    "storageLinkedServiceJson": "linkedServices/AzureBlobStorageLinkedService.json",
    "batchLinkedServiceJson": "linkedServices/AzureBatchLinkedService.json",
    "pipelineJson": "pipeline.json",
    "sweepPipelineJson": "sweep-pipeline.json",
    "scorePipelineJson": "score-pipeline.json",
    "scoreOnUploadTriggerJson": "triggers/score-iris-on-upload.json",
    "scoreNightlyTriggerJson": "triggers/score-iris-nightly.json",
}


def test_every_adf_json_file_is_loaded_by_the_factory_module():
    _, factory = module("dataFactory")
    loaded = {(BICEP / "modules" / p["file_path"]).resolve()
              for p in functions(factory["variables"], "load_text_content")}
    on_disk = {p.resolve() for p in ADF.rglob("*.json")}
    assert loaded == on_disk, "adf/ and the Bicep disagree on which JSON files exist"
    for variable, relative in ADF_VARIABLES.items():
        path, _ = replace_chain(factory["variables"][variable]["value"])
        assert (BICEP / "modules" / path).resolve() == (ADF / relative).resolve()


@pytest.mark.parametrize("variable", sorted(ADF_VARIABLES))
def test_each_adf_object_is_deployed_with_the_name_and_properties_of_its_json(variable):
    _, factory = module("dataFactory")
    resources = [r for r in factory["resources"].values()
                 if ref(r["config"].get("name")) == f"{variable}.name"]
    assert len(resources) == 1, f"no single resource deploys {variable}"
    resource = resources[0]
    assert ref(resource["config"]["properties"]) == f"{variable}.properties"
    assert resource["config"]["parent"] == "factory"
    kind = {"credentialJson": "credentials", "pipelineJson": "pipelines",
            "sweepPipelineJson": "pipelines", "scorePipelineJson": "pipelines",
            "scoreOnUploadTriggerJson": "triggers",
            "scoreNightlyTriggerJson": "triggers"}.get(variable, "linkedservices")
    assert resource["type"] == f"Microsoft.DataFactory/factories/{kind}"


# The cloud's host suffixes in adf/'s linked services: placeholders, filled here and in .env
# from ARM's environment() of the deployment (the .env writer's key → environment().suffixes).
CLOUD_SUFFIXES = {"AZURE_STORAGE_SUFFIX": "storage", "AZURE_KEY_VAULT_DNS_SUFFIX": "keyvaultDns"}


def test_the_linked_services_use_the_suffixes_of_the_cloud_deployed_to():
    """No linked service names a public-cloud host: the JSON carries the suffix placeholders,
    which the factory module and .env both take from environment().suffixes (the factory
    receives what main.bicep writes to .env: test_the_factory_receives_the_same_values...)."""
    statement, _ = module("dataFactory")
    outputs = main()["outputs"]
    for key, suffix in CLOUD_SUFFIXES.items():
        for value in (outputs[env_writer.OUTPUTS[key]]["value"],
                      statement["config"]["params"][camel(key)]):
            text = json.dumps(value)
            assert "environment" in text and f'"{suffix}"' in text, (key, value)
    texts = [p.read_text() for p in (ADF / "linkedServices").glob("*.json")]
    for key in CLOUD_SUFFIXES:
        assert any(f"__{key}__" in text for text in texts), key
    for text in texts:
        found = [s for s in PUBLIC_CLOUD_SUFFIXES if s in text]
        assert not found, f"adf/linkedServices hard-codes {found}"


# Host suffixes of the public cloud; a template reads them from environment() (the Bicep
# linter's no-hardcoded-env-urls rule, which CI also runs).
PUBLIC_CLOUD_SUFFIXES = ("core.windows.net", "vault.azure.net", "vaultcore.azure.net", "azurecr.io",
                         "management.azure.com", "login.microsoftonline.com", "batch.azure.com")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_no_template_hard_codes_a_public_cloud_host(path):
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
    found = [suffix for suffix in PUBLIC_CLOUD_SUFFIXES if suffix in code]
    assert not found, f"{path.name} hard-codes {found}; use environment().suffixes"


@pytest.mark.parametrize("variable", sorted(ADF_VARIABLES))
def test_no_placeholder_survives_the_replacements(variable):
    """Every __KEY__ in the JSON is replaced by the module parameter named after KEY, and
    the filled text is valid JSON without any placeholder left."""
    _, factory = module("dataFactory")
    path, pairs = replace_chain(factory["variables"][variable]["value"])
    text = (BICEP / "modules" / path).read_text()
    needed = set(PLACEHOLDER.findall(text))
    replaced = {old.strip("_"): new for old, new in pairs}
    assert needed <= set(replaced), f"{path}: placeholder(s) not replaced: {needed - set(replaced)}"
    for key, new in replaced.items():
        assert new == camel(key), f"__{key}__ must be replaced by parameter {camel(key)}, not {new}"
        assert new in factory["parameters"]
    for old, new in pairs:
        text = text.replace(old, f"value-of-{new}")
    assert not PLACEHOLDER.search(text)
    json.loads(text)


def test_the_factory_receives_the_same_values_main_writes_to_env():
    """A placeholder KEY is filled with exactly what main.bicep outputs for .env key KEY."""
    statement, factory = module("dataFactory")
    outputs = main()["outputs"]
    placeholders = {key for p in ADF.rglob("*.json") for key in PLACEHOLDER.findall(p.read_text())}
    for key in placeholders:
        param = camel(key)
        assert key in env_writer.OUTPUTS, f"__{key}__ is not a key the .env writer writes"
        output = outputs[env_writer.OUTPUTS[key]]
        assert ref(statement["config"]["params"][param]) == ref(output["value"]), \
            f"__{key}__ gets {ref(statement['config']['params'][param])}, .env gets {ref(output['value'])}"


def test_the_storage_key_secret_is_the_one_the_staging_linked_service_reads():
    linked = json.loads((ADF / "linkedServices" / "AzureBlobStorageLinkedService.json").read_text())
    secret_name = linked["properties"]["typeProperties"]["accountKey"]["secretName"]
    assert main()["variables"]["storageKeySecretName"]["value"] == secret_name
    statement, _ = module("storageKeySecret")
    assert statement["config"]["params"]["secretName"] == "storageKeySecretName"


def test_the_factory_has_both_identities_and_the_credential_names_the_user_assigned_one():
    _, factory = module("dataFactory")
    identity = factory["resources"]["factory"]["config"]["identity"]
    assert identity["type"] == "SystemAssigned,UserAssigned"
    assert set(identity["userAssignedIdentities"]) == {"'${adfIdentityResourceId}'"}
    credential = json.loads((ADF / "credentials" / "BatchIdentityCredential.json").read_text())
    assert credential["properties"]["typeProperties"]["resourceId"] == "__ADF_IDENTITY_RESOURCE_ID__"
    statement, _ = module("dataFactory")
    assert ref(statement["config"]["params"]["adfIdentityResourceId"]) == "identities.outputs.factoryIdentityId"


# ------------------------------------------------------------------ outputs and secrets

def test_every_output_the_env_writer_reads_exists():
    outputs = main()["outputs"]
    for key, name in env_writer.OUTPUTS.items():
        assert name in outputs, f"main.bicep has no output {name} (for {key})"
        assert outputs[name]["type"] == "string"


def test_the_env_writer_fills_every_azure_setting():
    keys = [key for key, _, _ in documented_keys()]
    azure_keys = keys[keys.index("AZURE_SUBSCRIPTION_ID"):]
    assert set(env_writer.OUTPUTS) <= set(keys), "the writer writes keys settings do not know"
    assert set(azure_keys) <= set(env_writer.OUTPUTS), f"not written: {set(azure_keys) - set(env_writer.OUTPUTS)}"
    for key, name in env_writer.OUTPUTS.items():
        assert name == camel(key)


SECRETISH = re.compile(r"(?i)(accountkey|primarykey|secondarykey|accesskey|password|secret|"
                       r"connectionstring|sastoken|credential)")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_no_output_or_parameter_carries_a_key(path):
    template = parse(path.relative_to(BICEP).as_posix())
    for name, output in template.get("outputs", {}).items():
        value = json.dumps(output["value"])
        assert name.endswith("Name") or not SECRETISH.search(name), f"output {name} looks like a secret"
        assert not re.search(r'"type": "list\w*"|listKeys|list_keys|connection', value, re.I), \
            f"output {name} reads a key or connection string"
        assert "secret" not in value.lower() or name == "secretName"
    for name, param in template.get("parameters", {}).items():
        decorators = {d["type"] for d in param.get("decorators", [])}
        assert "secure" not in decorators, f"parameter {name} passes a secret into the deployment"


def test_list_keys_is_used_only_to_fill_the_key_vault_secret():
    for path in FILES:
        text = path.read_text()
        if path.name == "storage-key-secret.bicep":
            secret = parse("modules/storage-key-secret.bicep")["resources"]["secret"]
            assert secret["type"] == "Microsoft.KeyVault/vaults/secrets"
            code = [line for line in text.splitlines() if not line.lstrip().startswith("//")]
            assert [line.strip() for line in code if "listKeys" in line] == \
                ["value: storage.listKeys().keys[0].value"]
            assert "listKeys" not in json.dumps(parse("modules/storage-key-secret.bicep")["outputs"])
        else:
            assert not re.search(r"list(Keys|ConnectionStrings|Credentials|Secrets)\(", text), path.name
        assert not re.search(r"AccountKey=|SharedAccessSignature|sig=", text), path.name


def test_no_property_holds_a_connection_string_with_a_key():
    for path in list(FILES) + sorted(ADF.rglob("*.json")):
        text = path.read_text()
        assert "AccountKey=" not in text and "SharedAccessKey=" not in text, path.name


# ------------------------------------------------------------------ role assignments

# Built-in role ids from Microsoft's built-in roles list (the fixture names its source).
BUILTIN_ROLES = {name: role["id"] for name, role in
                 json.loads((REPO_ROOT / "tests" / "fixtures" / "builtin_roles.json").read_text())["roles"].items()}
# The built-in role each key of roles.bicep's `roles` variable stands for.
ROLE_NAMES = {
    "storageBlobDataContributor": "Storage Blob Data Contributor",
    "storageBlobDataReader": "Storage Blob Data Reader",
    "storageQueueDataContributor": "Storage Queue Data Contributor",
    "keyVaultSecretsUser": "Key Vault Secrets User",
    "acrPull": "AcrPull",
    "jobSubmitter": "Azure Batch Job Submitter",
    "dataContributor": "Azure Batch Data Contributor",
    "batchAccountReader": "Azure Batch Account Reader",
    "azureMLDataScientist": "AzureML Data Scientist",
    "azureMLComputeOperator": "AzureML Compute Operator",
    "managedIdentityOperator": "Managed Identity Operator",
}
# assignment: (scope symbol, scope type, principal, role)
EXPECTED_ROLES = {
    "poolWritesModels": ("container", "Microsoft.Storage/storageAccounts/blobServices/containers",
                         "poolIdentity.properties.principalId", "roles.storageBlobDataContributor"),
    # Sweep runners receive, renew, delete and send queue messages; queues are per sweep.
    "poolProcessesQueues": ("storage", "Microsoft.Storage/storageAccounts",
                            "poolIdentity.properties.principalId", "roles.storageQueueDataContributor"),
    "deployerUsesQueues": ("storage", "Microsoft.Storage/storageAccounts",
                           "deployerPrincipalId", "roles.storageQueueDataContributor"),
    "factoryRunsBatchJobs": ("batchAccount", "Microsoft.Batch/batchAccounts",
                             "factoryIdentity.properties.principalId", "roles[factoryBatchRole]"),
    "factoryReadsStaging": ("container", "Microsoft.Storage/storageAccounts/blobServices/containers",
                            "factory.identity.principalId", "roles.storageBlobDataReader"),
    "factoryReadsStorageKeySecret": ("storageKeySecret", "Microsoft.KeyVault/vaults/secrets",
                                     "factory.identity.principalId", "roles.keyVaultSecretsUser"),
    # score-iris: the factory's own identity (Web activity MSI) invokes the batch endpoint and
    # reads its jobs; AzureML Data Scientist is the narrowest built-in role that may.
    "factoryInvokesBatchEndpoints": ("workspace", "Microsoft.MachineLearningServices/workspaces",
                                     "factory.identity.principalId", "roles.azureMLDataScientist"),
    "workspaceReadsDatastore": ("container", "Microsoft.Storage/storageAccounts/blobServices/containers",
                                "workspace.identity.principalId", "roles.storageBlobDataReader"),
    "batchUsesAutoStorage": ("storage", "Microsoft.Storage/storageAccounts",
                             "batchAccount.identity.principalId", "roles.storageBlobDataContributor"),
    "amlComputeUsesStorage": ("storage", "Microsoft.Storage/storageAccounts",
                              "amlComputeIdentity.properties.principalId", "roles.storageBlobDataContributor"),
    "amlComputePullsImages": ("registry", "Microsoft.ContainerRegistry/registries",
                              "amlComputeIdentity.properties.principalId", "roles.acrPull"),
    "deployerUsesStorage": ("storage", "Microsoft.Storage/storageAccounts",
                            "deployerPrincipalId", "roles.storageBlobDataContributor"),
    "deployerReadsBatch": ("batchAccount", "Microsoft.Batch/batchAccounts",
                           "deployerPrincipalId", "roles.batchAccountReader"),
    # The deployer CLI registers models and creates endpoints (Data Scientist) and creates,
    # updates and deletes the scoring cluster (Compute Operator: Data Scientist cannot).
    "deployerUsesWorkspace": ("workspace", "Microsoft.MachineLearningServices/workspaces",
                              "deployerPrincipalId", "roles.azureMLDataScientist"),
    "deployerManagesCompute": ("workspace", "Microsoft.MachineLearningServices/workspaces",
                               "deployerPrincipalId", "roles.azureMLComputeOperator"),
    # Creating that cluster with the compute identity assigns the identity (*/assign/action):
    # Managed Identity Operator on that identity alone.
    "deployerAssignsComputeIdentity": ("amlComputeIdentity",
                                       "Microsoft.ManagedIdentity/userAssignedIdentities",
                                       "deployerPrincipalId", "roles.managedIdentityOperator"),
    # deploy-iris runs register-and-deploy on the pool with the pool's identity: the same
    # three roles as the deployer CLI's user, on the same scopes.
    "poolUsesWorkspace": ("workspace", "Microsoft.MachineLearningServices/workspaces",
                          "poolIdentity.properties.principalId", "roles.azureMLDataScientist"),
    "poolManagesCompute": ("workspace", "Microsoft.MachineLearningServices/workspaces",
                           "poolIdentity.properties.principalId", "roles.azureMLComputeOperator"),
    "poolAssignsComputeIdentity": ("amlComputeIdentity",
                                   "Microsoft.ManagedIdentity/userAssignedIdentities",
                                   "poolIdentity.properties.principalId",
                                   "roles.managedIdentityOperator"),
}


def _roles() -> dict:
    return parse("modules/roles.bicep")


def test_role_definition_ids_are_the_built_in_roles():
    roles = _roles()["variables"]["roles"]["value"]
    assert set(roles) == set(ROLE_NAMES)
    for key, role_id in roles.items():
        assert role_id == BUILTIN_ROLES[ROLE_NAMES[key]], \
            f"roles.{key} is {role_id}; the built-in role {ROLE_NAMES[key]!r} is {BUILTIN_ROLES[ROLE_NAMES[key]]}"
    allowed = next(d["argument"] for d in _roles()["parameters"]["factoryBatchRole"]["decorators"]
                   if d["type"] == "allowed")
    assert set(allowed) <= set(roles)
    assert main()["parameters"]["factoryBatchRole"]["default"] == "jobSubmitter"


def test_every_role_assignment_is_expected():
    assignments = {s for s, r in _roles()["resources"].items()
                   if r["type"] == "Microsoft.Authorization/roleAssignments"}
    assert assignments == set(EXPECTED_ROLES)


@pytest.mark.parametrize("symbol", sorted(EXPECTED_ROLES))
def test_role_assignment_targets_the_intended_identity_role_and_resource(symbol):
    template = _roles()
    body = config(template["resources"][symbol])
    scope, scope_type, principal, role = EXPECTED_ROLES[symbol]
    assert body["scope"] == scope
    assert template["resources"][scope]["type"] == scope_type
    assert template["resources"][scope]["existing"] is True
    assert ref(body["properties"]["principalId"]) == principal
    definition = body["properties"]["roleDefinitionId"]["function"]
    assert definition["type"] == "subscription_resource_id"
    assert ref(definition["parameters"]["resource_name_1"]) == role
    # Deterministic name: guid(scope id, the identity's resource, the role).
    guid = body["name"]["function"]
    assert guid["type"] == "guid"
    seeds = [ref(v) for v in guid["parameters"].values() if v is not None]
    assert seeds[0] == f"{scope}.id" and seeds[-1] == role
    identity = principal.split(".")[0]
    assert seeds[1] in (f"{identity}.id", principal)
    if not symbol.startswith("deployer"):
        assert body["properties"]["principalType"] == "ServicePrincipal"
    else:  # only when an object id is given
        condition = template["resources"][symbol]["config"]["condition"]
        assert "deployerPrincipalId" in json.dumps(condition)


def test_role_assignment_scopes_are_the_deployed_resources():
    statement, _ = module("roles")
    params = {k: ref(v) for k, v in statement["config"]["params"].items()}
    assert params["storageAccountName"] == "storage.outputs.storageAccountName"
    assert params["datastoreContainer"] == "storage.outputs.containerName"
    assert params["keyVaultName"] == "keyVault.outputs.keyVaultName"
    assert params["storageKeySecretName"] == "storageKeySecret.outputs.secretName"
    assert params["batchAccountName"] == "batch.outputs.batchAccountName"
    assert params["factoryName"] == "dataFactory.outputs.factoryName"
    assert params["workspaceName"] == "workspace.outputs.workspaceName"
    assert params["poolIdentityName"] == "names.poolIdentity"
    assert params["factoryIdentityName"] == "names.factoryIdentity"
    assert params["amlComputeIdentityName"] == "names.amlComputeIdentity"
    assert params["registryName"] == "registry.outputs.registryName"
    statement, _ = module("identities")
    assert ref(statement["config"]["params"]["poolIdentityName"]) == "names.poolIdentity"
    assert ref(statement["config"]["params"]["factoryIdentityName"]) == "names.factoryIdentity"
    assert ref(statement["config"]["params"]["amlComputeIdentityName"]) == "names.amlComputeIdentity"


def test_the_pool_uses_the_identity_whose_client_id_the_trainer_gets():
    statement, batch = module("batch")
    assert ref(statement["config"]["params"]["poolIdentityId"]) == "identities.outputs.poolIdentityId"
    pool = batch["resources"]["pool"]["config"]
    assert pool["identity"]["type"] == "UserAssigned"
    assert set(pool["identity"]["userAssignedIdentities"]) == {"'${poolIdentityId}'"}
    assert ref(main()["outputs"]["poolIdentityClientId"]["value"]) == "identities.outputs.poolIdentityClientId"


# ------------------------------------------------------------------ resources

def test_batch_pool_runs_the_dsvm_image_scales_to_zero_and_installs_the_trainer():
    _, batch = module("batch")
    image = batch["variables"]["imageReference"]["value"]
    assert image == {"publisher": "microsoft-dsvm", "offer": "ubuntu-hpc", "sku": "2204", "version": "latest"}
    assert batch["variables"]["nodeAgentSkuId"]["value"] == "batch.node.ubuntu 22.04"
    pool = batch["resources"]["pool"]["config"]["properties"]
    assert pool["deploymentConfiguration"]["virtualMachineConfiguration"]["imageReference"] == "imageReference"
    autoscale = pool["scaleSettings"]["autoScale"]
    assert autoscale["formula"] == "autoScaleFormula"
    formula = " ".join(batch["variables"]["autoScaleFormula"]["value"]["function"]["parameters"]["input_array"])
    assert "$TargetDedicatedNodes = min(${maxNodes}" in formula
    assert "max(0, $PendingTasks.GetSample(1))" in formula and "$TargetLowPriorityNodes = 0" in formula
    assert "$NodeDeallocationOption = taskcompletion" in formula
    start = pool["startTask"]
    assert start["userIdentity"] == {"autoUser": {"scope": "Pool", "elevationLevel": "Admin"}}
    assert start["waitForSuccess"] is True
    settings = {s["name"]: s["value"] for s in start["environmentSettings"]}
    loads = {name: functions(value, "load_text_content")[0]["file_path"] for name, value in settings.items()}
    assert (BICEP / "modules" / loads["TRAINER_REQUIREMENTS_B64"]).resolve() == \
        (REPO_ROOT / "trainer" / "requirements.txt").resolve()
    assert (BICEP / "modules" / loads["START_TASK_B64"]).resolve() == (BICEP / "pool-start-task.sh").resolve()
    assert all(functions(value, "base64") for value in settings.values())
    assert "$START_TASK_B64" in start["commandLine"] and start["commandLine"].startswith("/bin/bash -c ")


@pytest.mark.parametrize("pipeline_file", ["pipeline.json", "sweep-pipeline.json"])
def test_the_start_task_virtualenv_is_the_interpreter_the_pipeline_calls(pipeline_file):
    pipeline = json.loads((ADF / pipeline_file).read_text())
    python = pipeline["properties"]["parameters"]["python"]["defaultValue"]
    script = (BICEP / "pool-start-task.sh").read_text()
    root = re.search(r'root="\$\{IRIS_TRAINER_ROOT:-([^}]+)\}"', script).group(1)
    assert python == f"{root}/venv/bin/python"
    assert '"$root/venv/bin/python" -m pip install' in script and '-r "$root/requirements.txt"' in script


def test_batch_account_uses_managed_identities_only():
    _, batch = module("batch")
    account = batch["resources"]["batchAccount"]["config"]
    assert account["identity"]["type"] == "SystemAssigned"
    assert "SharedKey" not in account["properties"]["allowedAuthenticationModes"]
    auto = account["properties"]["autoStorage"]
    assert auto["authenticationMode"] == "BatchAccountManagedIdentity"
    assert auto["nodeIdentityReference"]["resourceId"] == "poolIdentityId"


def test_storage_key_vault_registry_and_workspace_settings():
    storage = module("storage")[1]["resources"]["storage"]["config"]["properties"]
    assert storage["supportsHttpsTrafficOnly"] is True
    assert storage["minimumTlsVersion"] == "TLS1_2"
    assert storage["allowBlobPublicAccess"] is False
    vault = module("keyVault")[1]["resources"]["vault"]["config"]["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enableSoftDelete"] is True and vault["enablePurgeProtection"] is True
    registry = module("registry")[1]["resources"]["registry"]["config"]["properties"]
    assert registry["adminUserEnabled"] is False
    insights = module("monitoring")[1]["resources"]["appInsights"]["config"]["properties"]
    assert ref(insights["WorkspaceResourceId"]) == "logAnalytics.id"
    workspace = module("workspace")[1]["resources"]["workspace"]["config"]
    assert workspace["identity"]["type"] == "SystemAssigned"
    assert set(workspace["properties"]) >= {"storageAccount", "keyVault", "applicationInsights", "containerRegistry"}
    datastore = module("workspace")[1]["resources"]["datastore"]["config"]["properties"]
    assert datastore["credentials"] == {"credentialsType": "None"}
    assert datastore["serviceDataAccessAuthIdentity"] == "WorkspaceSystemAssignedIdentity"


def test_private_networking_adds_the_network_and_private_endpoints():
    template = main()
    for symbol in ("network", "privateEndpoints"):
        assert template["modules"][symbol]["config"]["condition"] == "privateNetworking"
    _, endpoints = module("privateEndpoints")
    groups = {e["groupId"] for e in endpoints["variables"]["endpoints"]["value"]}
    assert groups == {"blob", "queue", "vault", "registry", "amlworkspace"}
    _, network = module("network")
    subnets = {s["name"] for s in network["resources"]["vnet"]["config"]["properties"]["subnets"]}
    assert subnets == {"snet-private-endpoints", "snet-aml-compute", "snet-batch"}
    zones = network["variables"]["privateDnsZoneNames"]["value"]
    assert zones == ["privatelink.blob.${environment().suffixes.storage}",
                     "privatelink.queue.${environment().suffixes.storage}", "privatelink.vaultcore${vaultDomain}",
                     "privatelink${environment().suffixes.acrLoginServer}", "privatelink.api.azureml.ms",
                     "privatelink.notebooks.azure.net"]
    assert functions(network["variables"]["vaultDomain"]["value"], "replace")
    statement, _ = module("batch")
    subnet = statement["config"]["params"]["subnetId"]["operator"]["operands"]
    assert (subnet["condition"], ref(subnet["true_value"]), subnet["false_value"]) == \
        ("privateNetworking", "network.outputs.batchSubnetId", "")
    for symbol, resource in (("storage", "storage"), ("keyVault", "vault")):
        acls = module(symbol)[1]["resources"][resource]["config"]["properties"]["networkAcls"]
        condition = acls["defaultAction"]["operator"]["operands"]
        assert (condition["condition"], condition["true_value"], condition["false_value"]) == \
            ("privateNetworking", "Deny", "Allow")
        assert "allowedIpAddress" in json.dumps(module(symbol)[1]["variables"] if symbol == "storage"
                                                else acls["ipRules"])


def test_parameter_defaults_match_the_settings_defaults():
    defaults = {key: default for key, default, _ in documented_keys()}
    params = main()["parameters"]
    for key in ("BATCH_POOL_ID", "DATASTORE_CONTAINER", "MODEL_PREFIX", "STAGING_PREFIX"):
        assert params[camel(key)]["default"] == defaults[key], key


NAME_RULES = {  # Azure naming rules of each resource (Microsoft's naming-rules page)
    "storage": r"^[a-z0-9]{3,24}$",
    "stagingStorage": r"^[a-z0-9]{3,24}$",
    "keyVault": r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$",
    "registry": r"^[a-zA-Z0-9]{5,50}$",
    "batch": r"^[a-z0-9]{3,24}$",
    "factory": r"^[A-Za-z0-9](?:[A-Za-z0-9-]{1,61}[A-Za-z0-9])$",
    "workspace": r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$",
    "logAnalytics": r"^[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]$",
}
# The resource each name is for, whose published name type (pattern, length) it must fit.
NAMED_RESOURCES = {
    "storage": "Microsoft.Storage/storageAccounts@2023-05-01",
    "stagingStorage": "Microsoft.Storage/storageAccounts@2023-05-01",
    "keyVault": "Microsoft.KeyVault/vaults@2023-07-01",
    "registry": "Microsoft.ContainerRegistry/registries@2023-07-01",
    "batch": "Microsoft.Batch/batchAccounts@2024-07-01",
    "factory": "Microsoft.DataFactory/factories@2018-06-01",
    "workspace": "Microsoft.MachineLearningServices/workspaces@2024-10-01",
    "logAnalytics": "Microsoft.OperationalInsights/workspaces@2023-09-01",
    "resourceGroup": "Microsoft.Resources/resourceGroups@2024-03-01",
}
# The prefixes bicep/azure.sh accepts: the shortest, the default, the longest (tests/bicep/test_azure_sh.py).
PREFIXES = ["abc", "irisops", "a23456789z"]


def _name(kind: str, prefix: str) -> str:
    names = main()["variables"]["names"]["value"]
    value = names[kind]
    if isinstance(value, dict):  # resourceGroup: empty(resourceGroupName) ? 'rg-${prefix}' : ...
        value = value["operator"]["operands"]["true_value"]
    name = value.replace("${compactPrefix}", prefix).replace("${prefix}", prefix).replace("${suffix}", "z9y8x7")
    assert "$" not in name, name
    return name


@pytest.mark.parametrize("prefix", PREFIXES)
def test_resource_names_follow_azure_naming_rules(prefix):
    template = main()
    limits = {d["type"]: d["argument"] for d in template["parameters"]["prefix"]["decorators"]}
    assert limits["min_length"] <= len(prefix) <= limits["max_length"]
    for kind, rule in NAME_RULES.items():
        name = _name(kind, prefix)
        assert re.match(rule, name), f"{kind} name {name!r} breaks {rule}"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_resource_names_fit_the_published_name_types(prefix):
    schema = schema_check.Schema.load()
    for kind, resource in NAMED_RESOURCES.items():
        name_type = schema.get(schema.body(resource)["properties"]["name"]["type"])
        problem = schema_check.scalar_problem(schema, _name(kind, prefix), name_type)
        assert problem is None, f"{kind} ({resource}): {problem}"


def test_a_prefix_the_script_refuses_would_break_a_published_name_type():
    """Why azure.sh checks PREFIX: hyphens and capitals pass Bicep's length check but not Azure's names."""
    schema = schema_check.Schema.load()
    for prefix, kind in (("iris--ops", "factory"), ("IrisOps", "storage"), ("ab-", "factory")):
        resource = NAMED_RESOURCES[kind]
        name_type = schema.get(schema.body(resource)["properties"]["name"]["type"])
        assert schema_check.scalar_problem(schema, _name(kind, prefix), name_type), (prefix, kind)


def test_private_networking_is_a_choice_off_by_default():
    param = main()["parameters"]["privateNetworking"]
    assert param["type"] == "bool" and param["default"] is False
    assert not [d for d in param.get("decorators", []) if d["type"] == "allowed"]


def test_private_mode_stages_into_a_separate_account_the_factory_reaches():
    """The staging account (the storage module again, public) gets the staged trainer, the
    task logs and the key the factory's linked service reads; the datastore stays private."""
    template = main()
    staging = template["modules"]["stagingStorage"]
    assert staging["config"]["condition"] == "privateNetworking"
    assert staging["detail"]["path"] == "modules/storage.bicep"
    params = config(staging)["params"]
    assert params["privateNetworking"] is False and ref(params["storageAccountName"]) == "names.stagingStorage"
    account = template["variables"]["stagingAccountName"]["value"]["operator"]["operands"]
    assert (account["condition"], ref(account["true_value"]), ref(account["false_value"])) == \
        ("privateNetworking", "stagingStorage.outputs.storageAccountName", "storage.outputs.storageAccountName")
    assert module("storageKeySecret")[0]["config"]["params"]["storageAccountName"] == "stagingAccountName"
    assert module("dataFactory")[0]["config"]["params"]["stagingStorageAccount"] == "stagingAccountName"
    assert template["outputs"]["stagingStorageAccount"]["value"] == "stagingAccountName"
    assert config(template["modules"]["stagingRoles"])["params"]["stagingStorageAccountName"] == "stagingAccountName"


def test_the_key_vault_create_mode_reaches_the_vault():
    template = main()
    allowed = next(d["argument"] for d in template["parameters"]["keyVaultCreateMode"]["decorators"]
                   if d["type"] == "allowed")
    assert allowed == ["default", "recover"] and template["parameters"]["keyVaultCreateMode"]["default"] == "default"
    statement, vault = module("keyVault")
    assert statement["config"]["params"]["createMode"] == "keyVaultCreateMode"
    assert vault["resources"]["vault"]["config"]["properties"]["createMode"] == "createMode"
