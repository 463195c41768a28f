"""Parity of terraform/ with bicep/, both read offline (python-hcl2 and pycep): the same
Azure resource kinds in each mode, the same role assignments (role id, principal, scope
kind), the same output names, the same pool settings and the same ADF documents after
placeholder filling. A resource added to one stack only fails it (the planted tests)."""
from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from pycep import BicepParser

from bicep import env_writer, flows
from bicep import schema_check as azure_types
from terraform.stack import Stack, StackError, expression
from tests.bicep.test_templates import BICEP, PLACEHOLDER, config, functions, main, module, ref, replace_chain
from workspace.settings import REPO_ROOT

TERRAFORM = REPO_ROOT / "terraform"
MODES = {"public": False, "private": True}


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack(TERRAFORM)


def copy_stack(tmp_path: Path) -> Path:
    """A copy of terraform/ beside links to the adf/, bicep/ and trainer/ files it reads."""
    copy = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform*"))
    for name in ("adf", "bicep", "trainer"):
        (tmp_path / name).symlink_to(REPO_ROOT / name)
    return copy


def planted(tmp_path: Path, relative: str, old: str, new: str) -> Path:
    """A copy of terraform/ with `old` replaced by `new` once in one file (which must change)."""
    copy = copy_stack(tmp_path)
    path = copy / relative
    text = path.read_text()
    assert old in text, (relative, old)
    path.write_text(text.replace(old, new, 1))
    return copy


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ------------------------------------------------------------------ Bicep, read as the Terraform is

@lru_cache(maxsize=None)
def _parse_bicep(text: str) -> dict:
    return BicepParser().parse(text=text)


def bicep_kind_counts(directory: Path, private: bool) -> Counter:
    """How many resources of each ARM type main.bicep deploys with privateNetworking=private
    (`existing` ones left out; a `[for x in list]` counts the list's items; `if` ones counted)."""
    template = _parse_bicep((directory / "main.bicep").read_text())
    found = Counter(r["type"] for r in template.get("resources", {}).values() if not r.get("existing"))
    for statement in template.get("modules", {}).values():
        if not private and statement["config"].get("condition") == "privateNetworking":
            continue
        body = _parse_bicep((directory / statement["detail"]["path"]).read_text())
        for resource in body.get("resources", {}).values():
            if not resource.get("existing"):
                found[resource["type"]] += _instances(resource["config"], body)
    return found


def _instances(config: dict, template: dict) -> int:
    loop = config.get("loop_type")
    if not loop:
        return 1
    return len(template["variables"][loop["detail"]["array_name"]]["value"])


def bicep_kinds(directory: Path, private: bool) -> set[str]:
    return set(bicep_kind_counts(directory, private))


ROLE_MODULES = ("roles", "stagingRoles")


def bicep_role_assignments() -> dict[str, tuple[str, tuple[str, str], str]]:
    """name -> (role key, principal (kind, snake_case symbol) or ('deployer', ''), scope kind)."""
    found = {}
    for symbol in ROLE_MODULES:
        _, template = module(symbol)
        resources = template["resources"]
        for name, statement in resources.items():
            if statement["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            body = config(statement)
            role = ref(body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])
            if role.startswith("roles["):
                role_key = f"[{snake(role[len('roles['):-1])}]"
            else:  # roles.<key>, or a variable named after the role
                role_key = role.removeprefix("roles.")
            principal = ref(body["properties"]["principalId"]).split(".")[0]
            who = ("deployer", "") if principal == "deployerPrincipalId" else (resources[principal]["type"], snake(principal))
            found[name] = (role_key, who, resources[body["scope"]]["type"])
    return found


def bicep_role_ids() -> dict[str, str]:
    ids = dict(module("roles")[1]["variables"]["roles"]["value"])
    for name, variable in module("stagingRoles")[1]["variables"].items():
        ids.setdefault(name, variable["value"])
    return ids


# ------------------------------------------------------------------ resource kinds

@pytest.mark.parametrize("mode", MODES)
def test_both_stacks_deploy_the_same_resource_kinds(stack, mode):
    terraform, bicep = stack.kinds(MODES[mode]), bicep_kinds(BICEP, MODES[mode])
    assert terraform == bicep, (f"only in terraform/: {sorted(terraform - bicep)}; "
                                f"only in bicep/: {sorted(bicep - terraform)}")


@pytest.mark.parametrize("mode", MODES)
def test_both_stacks_deploy_as_many_resources_of_each_kind(stack, mode):
    terraform, bicep = stack.kind_counts(MODES[mode]), bicep_kind_counts(BICEP, MODES[mode])
    assert terraform == bicep, {k: (terraform[k], bicep[k]) for k in set(terraform) | set(bicep)
                                if terraform[k] != bicep[k]}


def test_private_mode_adds_the_network_in_both(stack):
    added = stack.kinds(True) - stack.kinds(False)
    assert "Microsoft.Network/virtualNetworks" in added and "Microsoft.Network/privateEndpoints" in added
    assert added == bicep_kinds(BICEP, True) - bicep_kinds(BICEP, False)


def test_a_resource_added_to_terraform_only_fails_the_parity(tmp_path):
    copy = copy_stack(tmp_path)
    (copy / "modules" / "storage" / "queue.tf").write_text(
        'resource "azurerm_storage_queue" "extra" {\n  name = "extra"\n'
        '  storage_account_id = azurerm_storage_account.storage.id\n}\n')
    with pytest.raises(StackError, match="azurerm_storage_queue"):
        Stack(copy).kinds(False)
    # A second resource of a kind both deploy: one more of that kind.
    (copy / "modules" / "storage" / "queue.tf").write_text(
        'resource "azurerm_key_vault" "extra" {\n  name = "extra"\n}\n')
    counts = Stack(copy).kind_counts(False) - bicep_kind_counts(BICEP, False)
    assert counts == Counter({"Microsoft.KeyVault/vaults": 1})
    # Known to the kind table, it is a kind Bicep does not deploy.
    (copy / "modules" / "storage" / "queue.tf").write_text(
        'resource "azurerm_nat_gateway" "extra" {\n  name = "extra"\n}\n')
    assert Stack(copy).kinds(False) - bicep_kinds(BICEP, False) == {"Microsoft.Network/natGateways"}


def test_a_resource_added_to_bicep_only_fails_the_parity(stack, tmp_path):
    copy = tmp_path / "bicep"
    shutil.copytree(BICEP, copy)
    with (copy / "modules" / "storage.bicep").open("a") as handle:
        handle.write("\nresource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {\n"
                     "  parent: storage\n  name: 'default'\n}\n")
    assert bicep_kinds(copy, False) - stack.kinds(False) == {"Microsoft.Storage/storageAccounts/queueServices"}


def test_a_private_endpoint_added_to_bicep_only_fails_the_parity(stack, tmp_path):
    copy = tmp_path / "bicep"
    shutil.copytree(BICEP, copy)
    path = copy / "modules" / "private-endpoints.bicep"
    text = path.read_text()
    path.write_text(text.replace("  {\n    name: 'vault'", "  {\n    name: 'file'\n    resourceId: storageAccountId\n"
                                 "    groupId: 'file'\n    zoneIds: [\n      blobDnsZoneId\n    ]\n  }\n"
                                 "  {\n    name: 'vault'", 1))
    extra = bicep_kind_counts(copy, True) - stack.kind_counts(True)
    assert extra == Counter({"Microsoft.Network/privateEndpoints": 1, "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": 1})
    assert bicep_kind_counts(copy, False) == stack.kind_counts(False)


# ------------------------------------------------------------------ role assignments

def test_the_role_assignments_are_the_same(stack):
    terraform, bicep = stack.role_assignments(), bicep_role_assignments()
    assert set(terraform) == set(bicep)
    for name, (role, principal, scope) in bicep.items():
        assert terraform[name] == (role, principal, scope), name


def test_the_role_ids_are_the_same(stack):
    assert stack.role_ids() == bicep_role_ids()


def test_an_assignment_given_another_scope_fails_the_parity(stack, tmp_path):
    copy = planted(tmp_path, "modules/roles/main.tf", "poolWritesModels             = { scope = var.container_id",
                   "poolWritesModels             = { scope = var.storage_account_id")
    changed = Stack(copy).role_assignments()["poolWritesModels"]
    assert changed != bicep_role_assignments()["poolWritesModels"]
    assert changed[2] == "Microsoft.Storage/storageAccounts"


# ------------------------------------------------------------------ outputs

def test_the_outputs_have_the_same_names(stack):
    assert set(stack.outputs()) == set(main()["outputs"])


def test_each_env_output_is_the_value_the_factory_receives(stack):
    """An output the .env writer reads is local.env[KEY] (or a factory output), and the factory's
    placeholders are local.env: __KEY__ is filled with what .env gets for KEY, as in Bicep."""
    outputs = stack.outputs()
    assert stack.placeholder_source() == "local.env"
    for key, name in env_writer.OUTPUTS.items():
        if key in ("ADF_FACTORY", "ADF_PIPELINE"):
            assert outputs[name].startswith("module.data_factory."), name
        else:
            assert outputs[name] == f'local.env["{key}"]', name
            assert key in stack.root.locals["env"], key


# ------------------------------------------------------------------ pool

def test_the_pool_settings_are_the_same(stack):
    _, batch = module("batch")
    pool = batch["resources"]["pool"]["config"]["properties"]
    start = pool["startTask"]
    settings = {s["name"]: functions(s["value"], "load_text_content")[0]["file_path"]
                for s in start["environmentSettings"]}
    formula = batch["variables"]["autoScaleFormula"]["value"]["function"]["parameters"]["input_array"]
    terraform = stack.pool()
    assert terraform["image"] == batch["variables"]["imageReference"]["value"]
    assert terraform["node_agent_sku_id"] == batch["variables"]["nodeAgentSkuId"]["value"]
    assert terraform["formula"] == [line.replace("${maxNodes}", "{maxNodes}") for line in formula]
    assert terraform["evaluation_interval"] == pool["scaleSettings"]["autoScale"]["evaluationInterval"]
    assert terraform["command_line"] == start["commandLine"]
    assert terraform["environment_files"] == {k: (BICEP / "modules" / v).resolve() for k, v in settings.items()}
    assert terraform["auto_user"] == start["userIdentity"]["autoUser"]
    assert terraform["max_task_retry_count"] == start["maxTaskRetryCount"]
    assert terraform["wait_for_success"] == start["waitForSuccess"]
    assert terraform["task_slots_per_node"] == pool["taskSlotsPerNode"]
    assert terraform["inter_node_communication"] == pool["interNodeCommunication"]
    assert terraform["target_node_communication_mode"] == pool["targetNodeCommunicationMode"]


# ------------------------------------------------------------------ ADF documents

def bicep_adf() -> dict[str, dict]:
    """Each adf/ file data-factory.bicep loads, filled with '<output name>' for each placeholder:
    the placeholder's module parameter, followed to the main.bicep output of the same value."""
    statement, factory = module("dataFactory")
    outputs = {ref(o["value"]): name for name, o in main()["outputs"].items()}
    documents = {}
    for variable in factory["variables"].values():
        if not functions(variable["value"], "load_text_content"):
            continue
        path, pairs = replace_chain(variable["value"])
        text = (BICEP / "modules" / path).read_text()
        for old, param in pairs:
            text = text.replace(old, f"<{outputs[ref(statement['config']['params'][param])]}>")
        relative = (BICEP / "modules" / path).resolve().relative_to((REPO_ROOT / "adf").resolve()).as_posix()
        documents[relative] = json.loads(text)
    return documents


def terraform_adf(stack: Stack) -> dict[str, dict]:
    """The same, filled as the data-factory module fills them (local.env[KEY] is output camel(KEY))."""
    outputs = {value: name for name, value in stack.outputs().items()}
    values = {key: f'<{outputs[f"local.env[{json.dumps(key)}]"]}>' for key in stack.root.locals["env"]
              if not key.startswith("__")}
    return {relative: stack.fill(relative, values) for relative in stack.adf_files()}


def test_the_adf_documents_are_the_same_after_filling(stack):
    bicep, terraform = bicep_adf(), terraform_adf(stack)
    assert set(terraform) == set(bicep)
    for relative, document in bicep.items():
        assert terraform[relative] == document, relative
        assert not PLACEHOLDER.search(json.dumps(terraform[relative])), relative


def test_a_file_left_out_or_filled_differently_fails_the_parity(tmp_path):
    module = "modules/data-factory/main.tf"
    left_out = Stack(planted(tmp_path / "a", module, 'fileset(local.adf_dir, "credentials/*.json")', "[]"))
    assert "credentials/BatchIdentityCredential.json" not in left_out.adf_files()
    assert set(terraform_adf(left_out)) != set(bicep_adf())
    # A placeholder pattern that misses the keys with digits and underscores.
    missed = terraform_adf(Stack(planted(tmp_path / "b", module, "__([A-Z][A-Z0-9_]*?)__", "__([A-Z]+)__")))
    assert missed != bicep_adf() and "__BATCH_POOL_ID__" in json.dumps(missed)


# ------------------------------------------------------------------ triggers

TRIGGERS = "Microsoft.DataFactory/factories/triggers"


def on_disk_triggers() -> list[str]:
    return sorted(p.relative_to(REPO_ROOT / "adf").as_posix() for p in (REPO_ROOT / "adf" / "triggers").glob("*.json"))


def bicep_trigger_problems(directory: Path) -> list[str]:
    """Each adf/triggers/ file must be a trigger resource of data-factory.bicep whose
    properties are the file's own (so nothing sets runtimeState), and nothing else."""
    template = _parse_bicep((directory / "modules" / "data-factory.bicep").read_text())
    loaded = {name: Path(os.path.relpath(directory / "modules" / replace_chain(v["value"])[0], directory.parent / "adf"))
              for name, v in template["variables"].items() if functions(v["value"], "load_text_content")}
    problems, deployed = [], []
    for symbol, statement in template["resources"].items():
        if statement["type"] != TRIGGERS:
            continue
        body = config(statement)
        variable = ref(body["name"]).split(".")[0]
        if variable not in loaded or ref(body.get("properties")) != f"{variable}.properties":
            problems.append(f"{symbol}: properties must be those of the file it loads, as they are")
        else:
            deployed.append(loaded[variable].as_posix())
    if sorted(deployed) != on_disk_triggers():
        problems.append(f"deploys {sorted(deployed)}, adf/triggers/ holds {on_disk_triggers()}")
    return problems


def terraform_trigger_problems(stack: Stack) -> list[str]:
    """The same of terraform/: only azapi_resource creates a trigger (azurerm's trigger resources
    start it), with the file's own properties as its body; no action starts one."""
    problems, deployed = [], []
    for address, body in stack.triggers():
        if not address.startswith("azapi_resource."):
            problems.append(f"{address}: a trigger is created by azapi_resource only, and nothing acts on it")
            continue
        files = stack.adf_selection(body.get("for_each", ""))
        written = {k: expression(v) for k, v in body.get("body", {}).items() if not k.startswith("__")}
        if files is None or written != {"properties": "local.documents[each.key].properties"}:
            problems.append(f"{address}: its body must be the properties of the adf/ file it deploys, as they are")
        else:
            deployed += files
    if sorted(deployed) != on_disk_triggers():
        problems.append(f"deploys {sorted(deployed)}, adf/triggers/ holds {on_disk_triggers()}")
    return problems


def test_the_triggers_are_deployed_stopped_in_both(stack):
    """A trigger is created stopped and only its start API starts it: runtimeState is read-only
    in the REST type. Both stacks deploy each adf/triggers/ file's properties as they are (no
    file sets runtimeState, after filling) and nothing starts them."""
    types = azure_types.Schema.load()
    trigger = types.get(types.body(f"{TRIGGERS}@2018-06-01")["properties"]["properties"]["type"])
    assert trigger["baseProperties"]["runtimeState"]["flags"] & azure_types.READ_ONLY
    assert on_disk_triggers(), "adf/triggers/ holds no trigger"
    assert bicep_trigger_problems(BICEP) == []
    assert terraform_trigger_problems(stack) == []
    for documents in (bicep_adf(), terraform_adf(stack)):
        for relative in on_disk_triggers():
            assert "runtimeState" not in documents[relative]["properties"], relative


def test_a_trigger_started_or_left_out_fails_the_parity(stack, tmp_path):
    module = "modules/data-factory/main.tf"
    body = "properties = local.documents[each.key].properties\n  }\n\n  # A trigger"
    started = Stack(planted(tmp_path / "a", module, body,
                            'properties = merge(local.documents[each.key].properties, { runtimeState = "Started" })'
                            "\n  }\n\n  # A trigger"))
    assert any("azapi_resource.trigger" in p for p in terraform_trigger_problems(started))
    # Started after creation, by an action on each trigger.
    copy = copy_stack(tmp_path / "b")
    (copy / "modules" / "data-factory" / "start.tf").write_text(
        'resource "azapi_resource_action" "start" {\n  for_each    = azapi_resource.trigger\n'
        '  type        = "Microsoft.DataFactory/factories/triggers@2018-06-01"\n'
        '  resource_id = each.value.id\n  action      = "start"\n}\n')
    assert any("azapi_resource_action.start" in p for p in terraform_trigger_problems(Stack(copy)))
    # A selection that misses the triggers.
    missed = Stack(planted(tmp_path / "c", module, 'startswith(f, "triggers/")', 'startswith(f, "trigger/")'))
    assert terraform_trigger_problems(missed) == [f"deploys [], adf/triggers/ holds {on_disk_triggers()}"]
    # Bicep, started by a property set on top of the file's.
    bicep = tmp_path / "bicep"
    shutil.copytree(BICEP, bicep)
    path = bicep / "modules" / "data-factory.bicep"
    text = path.read_text()
    assert "properties: scoreNightlyTriggerJson.properties" in text
    path.write_text(text.replace("properties: scoreNightlyTriggerJson.properties",
                                 "properties: union(scoreNightlyTriggerJson.properties, { runtimeState: 'Started' })"))
    assert any(p.startswith("scoreNightlyTrigger:") for p in bicep_trigger_problems(bicep))


def test_every_pipeline_in_adf_is_deployed(stack):
    """New adf/*.json pipelines are picked up by the module's fileset without an edit."""
    on_disk = sorted(p.relative_to(REPO_ROOT / "adf").as_posix() for p in (REPO_ROOT / "adf").rglob("*.json"))
    assert stack.adf_files() == on_disk


# ------------------------------------------------------------------ private mode in detail

# How each stack writes the cloud's suffixes into a zone name (Bicep: environment(); Terraform:
# cut from the deployed account, vault and registry), as one token each.
ZONE_SUFFIXES = {
    "${environment().suffixes.storage}": "{storage}", "${var.storage_suffix}": "{storage}",
    "${vaultDomain}": "{vault domain}", '${replace(var.key_vault_dns_suffix, ".vault", "")}': "{vault domain}",
    "${environment().suffixes.acrLoginServer}": "{acr}",
    "${trimprefix(var.registry_login_server, var.registry_name)}": "{acr}",
}


def _zone(name: str) -> str:
    for written, token in ZONE_SUFFIXES.items():
        name = name.replace(written, token)
    return name


def test_the_private_endpoints_and_dns_zones_are_the_same(stack):
    _, endpoints = module("privateEndpoints")
    bicep = {(e["name"], e["groupId"]) for e in endpoints["variables"]["endpoints"]["value"]}
    terraform = {(name, e["group_id"].strip('"')) for name, e in stack.modules["private_endpoints"].locals["endpoints"].items()}
    assert terraform == bicep
    _, network = module("network")
    bicep_zones = sorted(_zone(z) for z in network["variables"]["privateDnsZoneNames"]["value"])
    terraform_zones = sorted(_zone(z.strip('"')) for z in stack.modules["network"].locals["private_dns_zone_names"].values())
    assert terraform_zones == bicep_zones
    assert "{" not in "".join(z.replace("{storage}", "").replace("{vault domain}", "").replace("{acr}", "")
                              for z in terraform_zones)


def test_private_mode_stages_into_the_staging_account_in_both(stack):
    """STAGING_STORAGE_ACCOUNT (the storage linked service's account, the key secret's account)
    is the staging account in private mode and the datastore account otherwise, in both stacks."""
    staging = stack.root.calls["staging_storage"]
    assert expression(staging["count"]) == "var.private_networking ? 1 : 0"
    assert expression(staging["private_networking"]) == "false"
    assert expression(stack.root.locals["env"]["STAGING_STORAGE_ACCOUNT"]) == "local.staging_account_name"
    assert expression(stack.root.locals["staging_account_name"]) == \
        "var.private_networking ? module.staging_storage[0].storage_account_name : module.storage.storage_account_name"
    assert expression(stack.root.calls["storage_key_secret"]["storage_account_id"]) == "local.staging_account_id"
    assert main()["modules"]["stagingStorage"]["config"]["condition"] == "privateNetworking"
    assert ref(main()["modules"]["storageKeySecret"]["config"]["params"]["storageAccountName"]) == "stagingAccountName"


# ------------------------------------------------------------------ firewalls

# Terraform module -> Bicep module of each firewalled resource (bicep/flows.py FIREWALLED).
FIREWALLS = {"storage": "storage", "staging_storage": "stagingStorage", "keyvault": "keyVault",
             "registry": "registry", "ml_workspace": "workspace", "batch": "batch"}


def _firewalls(stack: Stack, private: bool) -> tuple[dict, dict]:
    network = flows.Network(BICEP, private)
    bicep = {name: network.firewall(symbol) for name, symbol in FIREWALLS.items() if symbol in network.modules}
    terraform = {name: stack.firewall(name, private, flows.ALLOWED_IP) for name in bicep}
    return terraform, bicep


@pytest.mark.parametrize("mode", MODES)
def test_the_firewalls_are_the_same(stack, mode):
    """Open to all networks or not, the allowed IP, the trusted-services bypass: as bicep/flows.py
    reads them from the Bicep, for the datastore, staging account, vault, registry, workspace, Batch."""
    terraform, bicep = _firewalls(stack, MODES[mode])
    assert terraform == bicep
    assert ("staging_storage" in bicep) is MODES[mode]  # the staging account exists in private mode only


def test_a_firewall_left_open_fails_the_parity(tmp_path):
    copy = planted(tmp_path, "modules/keyvault/main.tf",
                   'default_action = var.private_networking ? "Deny" : "Allow"', 'default_action = "Allow"')
    terraform, bicep = _firewalls(Stack(copy), True)
    assert terraform["keyvault"] != bicep["keyvault"] and terraform["keyvault"].open_to_all
