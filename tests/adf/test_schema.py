"""adf/*.json against Azure's published Microsoft.DataFactory/2018-06-01 types
(tests/fixtures/azure_types.json, from Azure/bicep-types-az): required properties, enums
and unknown properties. The files already round-trip the SDK models (test_adf_definitions);
the SDK ignores unknown keys and does not enforce enums, this does."""
from __future__ import annotations

import json

import pytest

from bicep import schema_check
from workspace.settings import REPO_ROOT

ADF = REPO_ROOT / "adf"
FILES = schema_check.adf_files()


@pytest.fixture(scope="module")
def schema() -> schema_check.Schema:
    return schema_check.Schema.load()


def planted(tmp_path, schema, relative: str, change) -> list[str]:
    """The problems of a copy of adf/<relative> after `change(document)`."""
    path = ADF / relative
    resource = dict((str(p.relative_to(ADF)), r) for p, r in FILES)[relative]
    document = json.loads(path.read_text())
    change(document)
    copy = tmp_path / path.name
    copy.write_text(json.dumps(document))
    return [f"{p.path}: {p.message}" for p in schema_check.check_adf_file(schema, copy, resource)]


def activity(document) -> dict:
    return document["properties"]["activities"][0]


def test_every_adf_definition_is_checked():
    names = {str(p.relative_to(ADF)) for p, _ in FILES}
    assert {"pipeline.json", "linkedServices/AzureBatchLinkedService.json",
            "linkedServices/AzureBlobStorageLinkedService.json", "linkedServices/KeyVaultLinkedService.json",
            "credentials/BatchIdentityCredential.json"} <= names
    assert names == {str(p.relative_to(ADF)) for p in ADF.rglob("*.json")}


@pytest.mark.parametrize("path, resource", FILES, ids=lambda v: getattr(v, "name", ""))
def test_every_adf_definition_fits_the_published_types(schema, path, resource):
    problems = schema_check.check_adf_file(schema, path, resource)
    assert not problems, "\n".join(map(str, problems))


def test_an_unknown_activity_property_is_caught(tmp_path, schema):
    def change(doc):
        activity(doc)["typeProperties"]["commandLine"] = activity(doc)["typeProperties"].pop("command")
    problems = planted(tmp_path, schema, "pipeline.json", change)
    assert "properties.activities[0].typeProperties.command: required property is missing" in problems
    assert any(p.startswith("properties.activities[0].typeProperties.commandLine: unknown property") for p in problems)


def test_an_unknown_activity_type_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "pipeline.json", lambda doc: activity(doc).update(type="Custon"))
    assert len(problems) == 1 and problems[0].startswith("properties.activities[0].type: 'Custon' is not one of ")
    assert "'Custom'" in problems[0]


def test_a_removed_required_linked_service_property_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "linkedServices/AzureBatchLinkedService.json",
                       lambda doc: doc["properties"]["typeProperties"].pop("poolName"))
    assert problems == ["properties.typeProperties.poolName: required property is missing"]


# Most Data Factory enums are open (any string, `modelAsString` in the REST spec); the kinds
# of activity, linked service, credential and secret reference are closed.
@pytest.mark.parametrize("relative, change, expected", [
    ("linkedServices/AzureBatchLinkedService.json", lambda doc: doc["properties"].update(type="Batch"),
     "properties.type: 'Batch' is not one of "),
    ("credentials/BatchIdentityCredential.json", lambda doc: doc["properties"].update(type="UserAssignedIdentity"),
     "properties.type: 'UserAssignedIdentity' is not one of 'ManagedIdentity', 'ServicePrincipal'"),
])
def test_a_value_outside_an_enum_is_caught(tmp_path, schema, relative, change, expected):
    problems = planted(tmp_path, schema, relative, change)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_name_outside_the_name_pattern_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "linkedServices/AzureBlobStorageLinkedService.json",
                       lambda doc: doc.update(name="Azure/Blob"))
    assert problems == ["name: 'Azure/Blob' does not match the pattern ^[A-Za-z0-9_][^<>*#.%&:\\\\+?/]*$"]


def test_a_literal_of_the_wrong_type_is_caught(tmp_path, schema):
    problems = planted(tmp_path, schema, "pipeline.json", lambda doc: activity(doc)["policy"].update(secureInput="no"))
    assert problems == ['properties.activities[0].policy.secureInput: expects true or false, not str "no"']


def test_adf_expressions_and_placeholders_are_skipped_literals_are_not(tmp_path, schema):
    # `@...` is evaluated by ADF and `__KEY__` filled at deploy time; `@@` is a literal `@`.
    def expression(doc):
        activity(doc)["policy"]["retry"] = "@pipeline().parameters.retries"
    assert planted(tmp_path, schema, "pipeline.json", expression) == []

    def literal(doc):
        activity(doc)["policy"]["secureInput"] = "@@pipeline().parameters.secure"
    assert planted(tmp_path, schema, "pipeline.json", literal) == [
        "properties.activities[0].policy.secureInput: expects true or false, "
        'not str "@@pipeline().parameters.secure"']
