"""terraform/ read offline: every file parses (python-hcl2), every azurerm resource, argument
and block is one hashicorp/azurerm 4.55 declares (tests/fixtures/azurerm_schema.json, from the
provider's jsii assembly), azapi bodies fit the Bicep type fixture, and a planted misspelling
fails the check. Also the fixture extractor on a small assembly, and the resource names."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bicep import schema_check as azure_types
from terraform import hcl, schema_check
from tests.bicep.test_templates import NAME_RULES, PREFIXES
from tests.terraform.test_parity import copy_stack
from workspace.settings import REPO_ROOT

TERRAFORM = REPO_ROOT / "terraform"
FILES = hcl.tf_files(TERRAFORM)


@pytest.fixture(scope="module")
def schemas():
    return schema_check.ProviderSchema.load(), azure_types.Schema.load()


def test_there_are_a_root_and_a_module_per_bicep_module():
    modules = {p.name for p in (TERRAFORM / "modules").iterdir() if p.is_dir()}
    assert modules == {p.stem for p in (REPO_ROOT / "bicep" / "modules").glob("*.bicep")}
    assert {"main.tf", "variables.tf", "outputs.tf", "versions.tf", "providers.tf"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(TERRAFORM).as_posix())
def test_every_file_parses(path):
    assert hcl.parse(path)


def test_the_provider_is_pinned_to_the_checked_schema(schemas):
    versions = hcl.parse(TERRAFORM / "versions.tf")["terraform"][0]["required_providers"][0]
    assert hcl.unquote(versions["azurerm"]["source"]) == "hashicorp/azurerm"
    assert hcl.unquote(versions["azurerm"]["version"]) == "~> 4.55.0"
    assert schemas[0].source["provider"] == "hashicorp/azurerm 4.55.0"


def test_the_stack_passes_the_schema_check(schemas):
    problems = schema_check.check_all(*schemas, TERRAFORM)
    assert not problems, "\n".join(map(str, problems))


def test_the_fixture_holds_exactly_the_resources_declared(schemas):
    assert sorted(schemas[0].resources) == schema_check.declared_resource_types(TERRAFORM)


PLANTS = [  # (file, original, planted, expected message)
    ("modules/storage/main.tf", "  min_tls_version ", "  min_tls_versoin ",
     "min_tls_versoin: unknown argument (did you mean 'min_tls_version'?)"),
    ("modules/batch/main.tf", "  auto_scale {", "  autoscale {", "autoscale: unknown block"),
    ("modules/batch/main.tf", "      auto_user {", "      auto_usr {", "start_task.user_identity.auto_usr: unknown block"),
    ("modules/batch/main.tf", "  node_agent_sku_id              = local.node_agent_sku_id\n", "",
     "node_agent_sku_id: required argument is missing"),
    ("modules/private-endpoints/main.tf", '    is_manual_connection           = false\n', "",
     "private_service_connection.is_manual_connection: required argument is missing"),
    ("modules/registry/main.tf", '          ip_range = ', '          ip_ranges = ', "network_rule_set.ip_rule.ip_ranges: unknown argument"),
    ("modules/keyvault/main.tf", 'resource "azurerm_key_vault" "vault"', 'resource "azurerm_keyvault" "vault"',
     "azurerm_keyvault is not a resource of hashicorp/azurerm 4.55.0 (did you mean 'azurerm_key_vault'?)"),
    ("modules/storage-key-secret/main.tf", "      contentType = ", "      contentTyp = ",
     "body.properties.contentTyp: unknown property"),
    ("modules/storage-key-secret/main.tf", '"Microsoft.KeyVault/vaults/secrets@2023-07-01"',
     '"Microsoft.KeyVault/vaults/secrets@2019-09-01"', "is not in the fixture"),
]


@pytest.mark.parametrize("relative, original, planted, message", PLANTS, ids=[p[3][:40] for p in PLANTS])
def test_a_planted_mistake_fails_the_check(schemas, tmp_path, relative, original, planted, message):
    copy = copy_stack(tmp_path)
    path = copy / relative
    text = path.read_text()
    assert original in text
    path.write_text(text.replace(original, planted, 1))
    problems = [str(p) for p in schema_check.check_all(*schemas, copy)]
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.slow
def test_the_cli_exits_1_on_a_problem_and_2_on_a_file_that_does_not_parse(tmp_path):
    copy = copy_stack(tmp_path)
    run = [sys.executable, "-m", "terraform.schema_check", "--dir", str(copy)]
    ok = subprocess.run(run, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert ok.returncode == 0 and "no problems" in ok.stdout, ok.stdout + ok.stderr
    path = copy / "modules" / "storage" / "main.tf"
    path.write_text(path.read_text().replace("  min_tls_version ", "  min_tls_versoin ", 1))
    bad = subprocess.run(run, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert bad.returncode == 1 and "min_tls_versoin: unknown argument" in bad.stdout
    path.write_text("resource \"azurerm_resource_group\" \"x\" {\n  name = \n")
    broken = subprocess.run(run, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert broken.returncode == 2 and "does not parse as HCL" in broken.stderr and "Traceback" not in broken.stderr


# ------------------------------------------------------------------ the fixture extractor

def _property(name, hcl_name, resource, typ, optional=True, block=False):
    link = f"{{@link https://registry.terraform.io/providers/hashicorp/azurerm/4.55.0/docs/resources/{resource}#{hcl_name} X#{hcl_name}}}"
    docs = {"summary": f"{hcl_name} block.", "remarks": f"Docs at Terraform Registry: {link}"} if block else \
        {"summary": f"Docs at Terraform Registry: {link}."}
    return {"name": name, "docs": docs, "type": typ, **({"optional": True} if optional else {})}


def test_the_extractor_reads_arguments_blocks_and_required_from_an_assembly(tmp_path):
    """A two-resource assembly in the shape of @cdktf/provider-azurerm's .jsii."""
    p = "@cdktf/provider-azurerm.thing"
    link = "{@link https://registry.terraform.io/providers/hashicorp/azurerm/4.55.0/docs/resources/thing azurerm_thing}"
    assembly = {"name": "@cdktf/provider-azurerm", "version": "14.23.1", "types": {
        f"{p}.Thing": {"kind": "class", "docs": {"summary": f"Represents a {link}."}},
        f"{p}.ThingConfig": {"kind": "interface", "datatype": True, "properties": [
            _property("name", "name", "thing", {"primitive": "string"}, optional=False),
            _property("tags", "tags", "thing", {"collection": {"kind": "map", "elementtype": {"primitive": "string"}}}),
            _property("startTask", "start_task", "thing", {"fqn": f"{p}.ThingStartTask"}, optional=False, block=True),
            _property("rules", "rules", "thing", {"union": {"types": [{"fqn": "cdktf.IResolvable"}, {
                "collection": {"kind": "array", "elementtype": {"fqn": f"{p}.ThingRules"}}}]}}),
        ]},
        f"{p}.ThingStartTask": {"kind": "interface", "datatype": True, "properties": [
            _property("commandLine", "command_line", "thing", {"primitive": "string"}, optional=False)]},
        f"{p}.ThingRules": {"kind": "interface", "datatype": True, "properties": [
            _property("ipRange", "ip_range", "thing", {"primitive": "string"})]},
    }}
    (tmp_path / ".jsii").write_text(json.dumps(assembly))
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import extract_azurerm_schema as extractor
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    parsed = extractor.Assembly(tmp_path / ".jsii")
    assert parsed.classes == {"azurerm_thing": f"{p}.Thing"} and parsed.provider_version == "4.55.0"
    fixture = extractor.build(parsed, ["azurerm_thing"])
    assert fixture["resources"]["azurerm_thing"] == {
        "arguments": {"name": True, "tags": False},
        "blocks": {"rules": {"arguments": {"ip_range": False}, "blocks": {}, "required": False, "attribute": True},
                   "start_task": {"arguments": {"command_line": True}, "blocks": {}, "required": True}}}
    assert json.loads(extractor.render(fixture)) == fixture
    with pytest.raises(SystemExit, match="no such resource"):
        parsed.resource("azurerm_other")


# ------------------------------------------------------------------ names

@pytest.mark.parametrize("prefix", PREFIXES)
def test_resource_names_follow_azure_naming_rules(prefix):
    names = hcl.parse(TERRAFORM / "main.tf")["locals"][0]["names"]
    for kind, rule in NAME_RULES.items():
        key = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
        name = hcl.unquote(names[key]).replace("${local.compact_prefix}", prefix) \
            .replace("${var.prefix}", prefix).replace("${local.suffix}", "z9y8x7")
        assert "$" not in name and re.match(rule, name), (kind, name)


# ------------------------------------------------------------------ CI and deploy workflows

def _workflow(name: str) -> dict:
    import yaml

    return yaml.safe_load((REPO_ROOT / ".github" / "workflows" / name).read_text())


def test_ci_formats_initialises_and_validates_terraform():
    job = _workflow("ci.yml")["jobs"]["terraform"]
    runs = [step.get("run", "") for step in job["steps"]]
    assert any(s.get("uses", "").startswith("hashicorp/setup-terraform@") for s in job["steps"])
    assert "terraform -chdir=terraform fmt -check -recursive -diff" in runs
    assert "terraform -chdir=terraform init -backend=false -input=false" in runs
    assert "terraform -chdir=terraform validate" in runs
    assert runs.index("terraform -chdir=terraform validate") > runs.index(
        "terraform -chdir=terraform init -backend=false -input=false")


def test_deploy_has_a_terraform_path_with_openid_connect():
    workflow = _workflow("deploy.yml")
    job = workflow["jobs"]["deploy"]
    assert job["env"]["ARM_USE_OIDC"] == "true"
    assert {"ARM_CLIENT_ID", "ARM_TENANT_ID", "ARM_SUBSCRIPTION_ID"} <= set(job["env"])
    assert "bicep" in job["env"]["IAC"] and workflow[True]["workflow_dispatch"]["inputs"]["iac"]["default"] == "bicep"
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("hashicorp/setup-terraform@"))
    assert setup["if"] == "env.IAC == 'terraform'" and setup["with"]["terraform_wrapper"] is False
    deploy = next(s["run"] for s in job["steps"] if "make deploy-infra" in s.get("run", ""))
    assert 'IAC="$IAC"' in deploy
    backend = next(s["run"] for s in job["steps"] if "backend.tf.example" in s.get("run", ""))
    assert "TF_BACKEND_CONFIG=" in backend and "use_oidc" in backend


# ------------------------------------------------------------------ wiring (what `terraform validate` also checks)

def _references(value, kind: str) -> set[str]:
    """Names after `kind.` (var, local) in every expression of a parsed body."""
    text = json.dumps(value)
    return set(re.findall(rf"(?<![\w.]){kind}\.(\w+)", text))


def wiring_problems(directory) -> list[str]:
    """Module calls against the variables each module declares, and every `var.`, `local.`
    and `module.<m>.<output>` reference against what exists."""
    from terraform.stack import Stack

    stack, problems = Stack(directory), []
    for name, call in stack.root.calls.items():
        module = stack.modules[name]
        passed = {k for k in call if not k.startswith("__")} - {"source", "count", "for_each", "depends_on", "providers"}
        required = {v for v, body in module.variables.items() if "default" not in body}
        problems += [f"module {name}: unknown variable {v}" for v in sorted(passed - set(module.variables))]
        problems += [f"module {name}: missing variable {v}" for v in sorted(required - passed)]
    for module in [stack.root, *stack.modules.values()]:
        document = {"resources": [b for _, _, b in module.resources], "outputs": module.outputs,
                    "locals": module.locals, "calls": module.calls}
        problems += [f"{module.directory.name}: var.{v} is not declared"
                     for v in sorted(_references(document, "var") - set(module.variables))]
        problems += [f"{module.directory.name}: local.{v} is not defined"
                     for v in sorted(_references(document, "local") - set(module.locals))]
    text = json.dumps([stack.root.outputs, stack.root.locals, stack.root.calls])
    problems += [f"module.{name}.{output} does not exist"
                 for name, output in re.findall(r"module\.(\w+)(?:\[0\])?\.(\w+)", text)
                 if output not in stack.modules[name].outputs]
    return problems


def test_the_modules_are_wired_to_what_they_declare():
    assert wiring_problems(TERRAFORM) == []


def test_a_miswired_module_fails_the_wiring_check(tmp_path):
    copy = copy_stack(tmp_path)
    path = copy / "main.tf"
    text = path.read_text()
    path.write_text(text.replace("module.batch.batch_account_url", "module.batch.account_url", 1)
                    .replace("  vm_size             = var.pool_vm_size\n", "  vmsize              = var.pool_vm_size\n", 1))
    problems = wiring_problems(copy)
    assert "module.batch.account_url does not exist" in problems
    assert "module batch: unknown variable vmsize" in problems and "module batch: missing variable vm_size" in problems


def test_a_directory_without_terraform_files_is_an_error_not_a_pass(tmp_path):
    run = [sys.executable, "-m", "terraform.schema_check", "--dir", str(tmp_path / "missing")]
    result = subprocess.run(run, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2 and "no problems" not in result.stdout, result.stdout
    assert f"{tmp_path / 'missing'}: no .tf files" in result.stderr and "Traceback" not in result.stderr


# Language features and the Terraform release that introduced them: a variable validation that
# refers to another variable (1.9: hashicorp/terraform#34955, "Input variable validation rules
# can refer to other objects"), a write-only argument such as azapi's `sensitive_body` (1.11:
# the azapi docs, docs/resources/resource.md, "Write-only ... requires Terraform 1.11 or later").
def _minimum_terraform() -> tuple[tuple[int, int], list[str]]:
    needs = [((1, 6), "terraform/versions.tf")]
    for path in FILES:
        document = hcl.parse(path)
        for (name,), body in hcl.labelled(document, "variable"):
            for validation in body.get("validation", []):
                others = set(re.findall(r"\bvar\.(\w+)", str(validation.get("condition", "")))) - {name}
                if others:
                    needs.append(((1, 9), f"variable {name}: validation refers to var.{sorted(others)[0]}"))
        for (kind, name), body in hcl.labelled(document, "resource"):
            if kind == "azapi_resource" and "sensitive_body" in body:
                needs.append(((1, 11), f"{kind}.{name}: sensitive_body is write-only"))
    version = max(needs)
    return version[0], [why for v, why in needs if v == version[0]]


def test_the_required_terraform_version_has_the_features_the_stack_uses():
    (minimum, why) = _minimum_terraform()
    versions = hcl.parse(TERRAFORM / "versions.tf")["terraform"][0]
    declared = re.fullmatch(r">= ?(\d+)\.(\d+)(?:\.\d+)?", hcl.unquote(versions["required_version"]))
    assert declared, versions["required_version"]
    assert (int(declared[1]), int(declared[2])) >= minimum, f"needs Terraform {minimum}: {why}"
    # What the script and the docs tell someone installing Terraform.
    wanted = f"Terraform {int(declared[1])}.{int(declared[2])} or newer"
    assert wanted in (REPO_ROOT / "bicep" / "azure.sh").read_text()
    assert wanted in (REPO_ROOT / "docs" / "azure.md").read_text()


# With a storage firewall on Deny (private mode) the data plane refuses whoever runs Terraform
# from another address (a CI runner), and with storage_use_azuread it needs data roles: azurerm
# 4.55 reads an account's queue properties through the data plane on every refresh unless the
# provider's `features { storage { data_plane_available = false } }` (its features-block guide;
# hashicorp/terraform-provider-azurerm#16240, #33454). So every storage call goes through
# Resource Manager: the flag is off, no data-plane block or resource is used, containers are
# created by `storage_account_id` (Resource Manager), not `storage_account_name` (data plane).
DATA_PLANE_RESOURCES = {"azurerm_storage_blob", "azurerm_storage_queue", "azurerm_storage_share",
                        "azurerm_storage_table", "azurerm_storage_share_file", "azurerm_storage_data_lake_gen2_path"}


def test_storage_is_managed_through_resource_manager_only():
    provider = next(body for (name,), body in hcl.labelled(hcl.parse(TERRAFORM / "providers.tf"), "provider")
                    if name == "azurerm")
    storage = provider["features"][0].get("storage", [{}])[0]
    assert storage.get("data_plane_available") is False, "azurerm reads queue properties through the firewall"
    for path, kind, name, body in hcl.resources(TERRAFORM):
        assert kind not in DATA_PLANE_RESOURCES, f"{kind}.{name}"
        if kind == "azurerm_storage_account":
            assert not {"queue_properties", "static_website"} & set(body), f"{kind}.{name}"
        if kind == "azurerm_storage_container":
            assert "storage_account_id" in body and "storage_account_name" not in body, f"{kind}.{name}"


# Attributes of azurerm and azapi resources that hold a key or a secret (the azurerm docs'
# "Attributes Reference" of the accounts, App Insights, Batch and the registry; azapi's
# sensitive_output): none may reach an output, which `terraform output -json` prints in clear
# into .local/ and the .env writer reads.
SECRET_ATTRIBUTE = re.compile(r"\.(primary|secondary)_(access_key|key|connection_string|blob_connection_string)\b|"
                              r"\.(instrumentation_key|connection_string|admin_password|sensitive_output)\b")


def _output_problems(directory) -> list[str]:
    problems = []
    for path in hcl.tf_files(directory):
        for (name,), body in hcl.labelled(hcl.parse(path), "output"):
            where = f"{path.relative_to(directory)} output {name}"
            if body.get("sensitive") is True:
                problems.append(f"{where}: sensitive")
            if SECRET_ATTRIBUTE.search(str(body.get("value", ""))):
                problems.append(f"{where}: carries a key")
    return problems


def test_no_output_carries_a_key(tmp_path):
    assert _output_problems(TERRAFORM) == []
    copy = copy_stack(tmp_path)
    path = copy / "modules" / "storage" / "main.tf"
    path.write_text(path.read_text() + 'output "key" { value = azurerm_storage_account.storage.primary_access_key }\n')
    assert _output_problems(copy) == ["modules/storage/main.tf output key: carries a key"]


def _allowed_ip_patterns() -> tuple[re.Pattern, re.Pattern]:
    """The address pattern and the refused-ranges pattern of variables.tf's allowed_ip_address
    validation (RE2, as Terraform's regex(); these constructs read the same in Python)."""
    text = (TERRAFORM / "variables.tf").read_text()
    body = text[text.index('variable "allowed_ip_address"'):]
    found = re.findall(r'regex\("((?:[^"\\]|\\.)*)"', body[:body.index("\n}\n")])
    assert len(found) == 2, found
    return tuple(re.compile(p.replace("\\\\", "\\")) for p in found)


def test_terraform_refuses_the_allowed_ips_the_script_refuses():
    from tests.bicep.test_azure_sh import ACCEPTED_IPS, REFUSED_IPS

    address, refused = _allowed_ip_patterns()

    def valid(ip):
        return bool(address.search(ip)) and not refused.search(ip)
    assert [ip for ip in REFUSED_IPS if valid(ip)] == []
    assert [ip for ip in ACCEPTED_IPS if not valid(ip)] == []
