"""bicep/ against Azure's published resource types (tests/fixtures/azure_types.json, from
Azure/bicep-types-az; rebuilt by scripts/extract_azure_types.py): the tree passes, and
each kind of mistake planted into a copy of a template is caught."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from bicep import schema_check
from workspace.settings import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "azure_types.json"
BICEP = REPO_ROOT / "bicep"
FILES = schema_check.bicep_files()


@pytest.fixture(scope="module")
def schema() -> schema_check.Schema:
    return schema_check.Schema.load(FIXTURE)


def planted(tmp_path, schema, relative: str, old: str, new: str) -> list[str]:
    """The problems of a copy of bicep/<relative> with `old` replaced by `new`."""
    text = (BICEP / relative).read_text()
    assert text.count(old) >= 1, f"{old!r} is not in {relative}"
    copy = tmp_path / relative.replace("/", "_")
    copy.write_text(text.replace(old, new, 1))
    return [f"{p.path}: {p.message}" for p in schema_check.check_bicep_file(schema, copy)]


# ------------------------------------------------------------------ the fixture

def test_the_fixture_records_its_upstream_commit_and_files():
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["source"]["repository"] == "Azure/bicep-types-az"
    assert re.fullmatch(r"[0-9a-f]{40}", fixture["source"]["commit"])
    assert all(re.fullmatch(r"generated/[\w.-]+/microsoft\.[\w.]+/\d{4}-\d\d-\d\d(-preview)?/types\.json", f)
               for f in fixture["source"]["files"])


def test_the_fixture_holds_every_resource_type_the_templates_declare(schema):
    declared = schema_check.declared_resource_types()
    assert len(declared) >= 20, declared
    missing = [r for r in declared if r.lower() not in schema.resources]
    assert not missing, f"rebuild the fixture (scripts/extract_azure_types.py): {missing}"
    for resource in set(schema_check.ADF_KINDS.values()):
        assert schema.body(resource)["$type"] == "ObjectType"


def test_an_undeclared_resource_type_is_a_clear_error(schema):
    with pytest.raises(schema_check.SchemaError, match="extract_azure_types.py"):
        schema.body("Microsoft.Storage/storageAccounts@1999-01-01")


# ------------------------------------------------------------------ the tree

@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(BICEP).as_posix())
def test_every_template_fits_the_published_types(schema, path):
    problems = schema_check.check_bicep_file(schema, path)
    assert not problems, "\n".join(map(str, problems))


def test_the_command_line_passes_on_the_tree():
    result = subprocess.run([sys.executable, "-m", "bicep.schema_check"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems" in result.stdout


# ------------------------------------------------------------------ planted mistakes

def test_an_unknown_property_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/storage.bicep",
                       "supportsHttpsTrafficOnly: true", "supportsHttpTrafficOnly: true")
    assert any(p.startswith("properties.supportsHttpTrafficOnly: unknown property") for p in problems), problems


def test_an_unknown_property_in_a_variable_the_body_uses_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/batch.bicep",
                       "  offer: 'ubuntu-hpc'\n", "  offer: 'ubuntu-hpc'\n  offerName: 'ubuntu-hpc'\n")
    assert problems == ["properties.deploymentConfiguration.virtualMachineConfiguration.imageReference."
                        "offerName: unknown property (known: communityGalleryImageId, id, offer, publisher, "
                        "sharedGalleryImageId, sku, version)"]


def test_an_unknown_property_in_the_body_of_a_for_expression_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/private-endpoints.bicep",
                       "        privateDnsZoneId: zoneId\n", "        privateDnsZoneIds: zoneId\n")
    assert problems == ["properties.privateDnsZoneConfigs[0].properties.privateDnsZoneIds: unknown property "
                        "(known: privateDnsZoneId)"]


def test_a_removed_required_property_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/keyvault.bicep", "    tenantId: subscription().tenantId\n", "")
    assert problems == ["properties.tenantId: required property is missing"]


def test_a_value_outside_an_enum_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/batch.bicep", "elevationLevel: 'Admin'", "elevationLevel: 'Root'")
    assert problems == ["properties.startTask.userIdentity.autoUser.elevationLevel: "
                        "'Root' is not one of 'NonAdmin', 'Admin'"]


def test_both_branches_of_a_conditional_are_checked(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/batch.bicep", "elevationLevel: 'Admin'",
                       "elevationLevel: empty(subnetId) ? 'Admin' : 'root'")
    assert problems == ["properties.startTask.userIdentity.autoUser.elevationLevel: "
                        "'root' is not one of 'NonAdmin', 'Admin'"]


ACCESS_PARAM = "@allowed([\n  'None'\n  {}\n])\nparam access string\n"


@pytest.mark.parametrize("second, expected", [
    ("'Blob'", []),
    ("'Private'", ["properties.publicAccess: 'Private' is not one of 'Container', 'Blob', 'None'"]),
])
def test_each_allowed_value_of_a_parameter_is_checked(tmp_path, schema, second, expected):
    text = (BICEP / "modules" / "storage.bicep").read_text().replace("publicAccess: 'None'", "publicAccess: access", 1)
    copy = tmp_path / "storage.bicep"
    copy.write_text(ACCESS_PARAM.format(second) + text)
    assert [f"{p.path}: {p.message}" for p in schema_check.check_bicep_file(schema, copy)] == expected


def test_a_write_to_a_read_only_property_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/registry.bicep", "adminUserEnabled: false",
                       "adminUserEnabled: false\n    loginServer: 'iris.azurecr.io'")
    assert "properties.loginServer: read-only property: the service sets it, a template cannot" in problems


def test_a_literal_of_the_wrong_type_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/keyvault.bicep", "enableRbacAuthorization: true",
                       "enableRbacAuthorization: 'true'")
    assert problems == ['properties.enableRbacAuthorization: expects true or false, not str "true"']


def test_a_literal_name_is_checked_against_the_name_pattern(tmp_path, schema):
    problems = planted(tmp_path, schema, "modules/batch.bicep", "name: poolId", "name: 'dsvm pool'")
    assert problems == ["name: 'dsvm pool' does not match the pattern ^[a-zA-Z0-9_-]+$"]
    problems = planted(tmp_path, schema, "modules/storage.bicep", "name: 'adfjobs'", "name: 'jo'")
    assert problems == ["name: 'jo' is 2 characters, outside 3..63"]


def test_expressions_are_skipped_literals_are_not(tmp_path, schema):
    # A parameter (an expression) where an enum is expected passes; the same text quoted fails.
    assert planted(tmp_path, schema, "modules/storage.bicep", "publicAccess: 'None'", "publicAccess: location") == []
    assert planted(tmp_path, schema, "modules/storage.bicep", "publicAccess: 'None'",
                   "publicAccess: 'location'") == ["properties.publicAccess: 'location' is not one of "
                                                   "'Container', 'Blob', 'None'"]
