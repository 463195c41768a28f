from __future__ import annotations

import pytest

from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT, Settings, documented_keys, render_env_example


def test_local_defaults_without_any_file(tmp_path):
    s = Settings.load(env_file=tmp_path / "none.env", environ={})
    assert s.is_local and s.container == "azureml" and s.model_prefix == "models"
    assert s.blob_endpoint == "http://127.0.0.1:10000/devstoreaccount1"
    assert s.local_path == REPO_ROOT / ".local"


def test_env_file_then_environment_override(tmp_path):
    env = tmp_path / ".env"
    env.write_text("TARGET=azure\nAZURE_STORAGE_BLOB_URL=https://acct.blob.core.windows.net/\n"
                   "DATASTORE_CONTAINER=fromfile\n")
    s = Settings.load(env_file=env, environ={"DATASTORE_CONTAINER": "fromenv"})
    assert s.target == "azure" and s.container == "fromenv"
    assert s.blob_endpoint == "https://acct.blob.core.windows.net"
    assert s.with_target("local").blob_endpoint.startswith("http://127.0.0.1:")


def test_missing_azure_settings_are_all_named(tmp_path):
    s = Settings.load(env_file=tmp_path / "none.env", environ={"TARGET": "azure"})
    with pytest.raises(ConfigError) as err:
        s.require("subscription_id", "resource_group", "data_factory")
    assert "AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, ADF_FACTORY" in str(err.value)
    assert "make deploy-infra" in str(err.value)


def test_bad_target_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="TARGET is 'cloud'"):
        Settings.load(env_file=tmp_path / "none.env", environ={"TARGET": "cloud"})


def test_env_example_documents_every_key():
    example = (REPO_ROOT / ".env.example").read_text()
    keys = {line.split("=", 1)[0] for line in example.splitlines()
            if line and not line.startswith("#")}
    assert keys == {key for key, _, _ in documented_keys()}
    assert example == render_env_example(), "run `make env-example`"


def test_the_azure_target_takes_no_local_datastore_default(tmp_path):
    """make deploy-infra writes DATASTORE_NAME and DATASTORE_CONTAINER for the workspace's
    data store; the local names (workspaceblobstore, azureml) must not stand in for them."""
    from workspace.datastore import Datastore

    s = Settings.load(env_file=tmp_path / "none.env", environ={"TARGET": "azure",
                      "AZURE_STORAGE_BLOB_URL": "https://acct.blob.core.windows.net"})
    assert (s.datastore_name, s.container) == ("", "")
    with pytest.raises(ConfigError) as err:
        s.datastore_uri("models/x")
    assert "DATASTORE_NAME" in str(err.value) and "make deploy-infra" in str(err.value)
    assert ".env" in err.value.hint
    with pytest.raises(ConfigError, match="DATASTORE_CONTAINER"):
        Datastore.from_settings(s, credential=object())


def test_switching_targets_does_not_carry_local_defaults(tmp_path):
    local = Settings.load(env_file=tmp_path / "none.env", environ={})
    assert (local.datastore_name, local.container) == ("workspaceblobstore", "azureml")
    azure = local.with_target("azure")
    assert (azure.datastore_name, azure.container) == ("", "")
    assert azure.with_target("local").container == "azureml"
    env = tmp_path / ".env"
    env.write_text("DATASTORE_NAME=irisdata\nDATASTORE_CONTAINER=data\n")
    written = Settings.load(env_file=env, environ={}).with_target("azure")
    assert (written.datastore_name, written.container) == ("irisdata", "data")
