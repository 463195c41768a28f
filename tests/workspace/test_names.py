"""The name rules of workspace/names.py against Azure's own definitions: the REST patterns
of tests/fixtures/azure_types.json, and the examples of the Storage naming rules."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.support.fake_azureml import rest_name_pattern
from workspace import names
from workspace.settings import REPO_ROOT

SAMPLES = ["iris-mlflow-v3", "iris_mlflow", "1blue", "a", "A_-9", "x" * 255, "x" * 256,
           "blue.v2", "-x", "_x", "a/b", "../x", "a b", "", "x\n"]


@pytest.mark.parametrize("rule, kind", [(names.JOB_NAME, "jobs"),
                                        (names.EXPERIMENT_NAME, "jobs"),
                                        (names.DEPLOYMENT_NAME, "batchEndpoints/deployments"),
                                        (names.DATASTORE_NAME, "datastores")])
@pytest.mark.parametrize("name", SAMPLES)
def test_azure_ml_names_follow_the_rest_pattern(rule, kind, name):
    rest = rest_name_pattern(kind)
    assert rule.is_valid(name) == bool(rest.fullmatch(name) and name == name.strip())


def test_a_run_id_is_the_guid_of_the_rest_types():
    types = json.loads((REPO_ROOT / "tests" / "fixtures" / "azure_types.json").read_text())
    guid = next(t["pattern"] for t in types["types"]
                if "fA-F]{8}" in str(t.get("pattern", "")))
    assert names.GUID in guid.replace("([0-9a-fA-F]{4}-)", "(?:[0-9a-fA-F]{4}-)")
    run_id = str(uuid.uuid4())
    assert names.PIPELINE_RUN_ID.is_valid(run_id) and re.fullmatch(guid, run_id)
    # the example run id of the Pipeline Runs - Get reference
    assert names.PIPELINE_RUN_ID.is_valid("2f7fdb90-5df1-4b8e-ac2f-064cfa58202b")
    for bad in (run_id.replace("-", ""), "{" + run_id + "}", run_id + "/..", "../" + run_id):
        assert not names.PIPELINE_RUN_ID.is_valid(bad)


@pytest.mark.parametrize("name, valid", [
    ("models", True), ("abc", True), ("a-b-c", True), ("0container", True), ("x" * 63, True),
    ("ab", False), ("x" * 64, False), ("Models", False), ("a--b", False), ("-ab", False),
    ("ab-", False), ("a_b", False), ("a.b", False),
])
def test_container_names_follow_the_storage_naming_rules(name, valid):
    assert names.CONTAINER_NAME.is_valid(name) is valid


@pytest.mark.parametrize("path, problem", [
    ("models", None), ("models/iris/v1", None), ("a/b.c/d", None),
    ("../x", "its segment '..' ends with '.'"), ("a/./b", "its segment '.' ends with '.'"),
    ("a/b.", "its segment 'b.' ends with '.'"), ("/a", "empty segment"), ("a/", "empty segment"),
    ("a//b", "empty segment"), ("a\\b", "'\\'"), ("a\x00b", "control character"),
    ("x" * 1025, "1025 characters"), ("/".join("a" * 255), "255 segments"),
])
def test_blob_paths_follow_the_storage_naming_rules(path, problem):
    found = names.BLOB_PATH.problem(path)
    assert (found is None) if problem is None else problem in found


@pytest.mark.parametrize("value, valid", [
    ("models", True), ("models/iris", True), ("models/../other", False), ("../x", False),
    ("Models/x", False), ("models/", False),
])
def test_a_container_path_is_a_container_and_a_folder(value, valid):
    assert names.CONTAINER_PATH.is_valid(value) is valid


def test_a_sweep_id_leaves_room_for_its_longest_queue_name():
    from adf.sweep import new_sweep_id

    longest = "s" * names.SWEEP_ID.max_length
    assert names.SWEEP_ID.is_valid(longest) and not names.SWEEP_ID.is_valid(longest + "s")
    assert names.CONTAINER_NAME.is_valid(longest + names.SWEEP_QUEUE_SUFFIX)  # the queue rule
    assert names.SWEEP_ID.is_valid(new_sweep_id())


def test_an_error_names_where_the_name_came_from_and_says_the_rule():
    with pytest.raises(names.InvalidName) as caught:
        names.JOB_NAME.check("j" * 300, "--job-name")
    assert str(caught.value.message).startswith("--job-name 'jjj")
    assert "(300 characters) is not a valid Azure ML job name" in caught.value.message
    assert caught.value.hint == names.JOB_NAME.rule and caught.value.exit_code == 2
