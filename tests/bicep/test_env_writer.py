"""The .env writer on a deployment output JSON in the shape of `az deployment sub create
-o json` (tests/fixtures/az_deployment_sub_create.json)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from bicep import env_writer
from bicep.env_writer import EnvWriterError
from workspace.settings import REPO_ROOT, Settings

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "az_deployment_sub_create.json"


@pytest.fixture
def deployment() -> dict:
    return json.loads(FIXTURE.read_text())


def _outputs(deployment) -> dict:
    return {k: v["value"] for k, v in deployment["properties"]["outputs"].items()}


def test_fixture_holds_every_output_the_writer_reads(deployment):
    assert set(env_writer.OUTPUTS.values()) <= set(deployment["properties"]["outputs"])


def test_writes_a_new_env_the_settings_load_as_the_azure_target(deployment, tmp_path):
    env = tmp_path / ".env"
    lines = []
    written = env_writer.write_env(deployment, env, echo=lines.append)
    settings = Settings.load(env_file=env, environ={})
    out = _outputs(deployment)
    assert settings.target == "azure"
    assert settings.storage_account == out["azureStorageAccount"]
    assert settings.storage_blob_url == out["azureStorageBlobUrl"]
    assert settings.batch_account_url == out["batchAccountUrl"]
    assert settings.adf_identity_resource_id == out["adfIdentityResourceId"]
    assert settings.pool_identity_client_id == out["poolIdentityClientId"]
    assert settings.datastore_name == "irisdata" and settings.container == "azureml"
    settings.require("subscription_id", "resource_group", "location", "storage_account", "key_vault",
                     "aml_workspace", "data_factory", "adf_pipeline", "batch_account", "batch_pool_id")
    # It says what it wrote, one line per key.
    assert lines[0] == f"Wrote {len(written)} key(s) to {env}:"
    assert f"  AZURE_KEY_VAULT={out['azureKeyVault']}" in lines
    assert len(lines) == len(written) + 1


def test_keeps_unrelated_lines_and_updates_keys_in_place(deployment, tmp_path):
    env = tmp_path / ".env"
    env.write_text("# my settings\nTARGET=local\nAZURITE_BLOB_PORT=10123\n\n"
                   "AZURE_STORAGE_ACCOUNT=old\nMY_OWN=keep me\nAZURE_STORAGE_ACCOUNT=duplicate\n")
    env_writer.write_env(deployment, env, echo=lambda _: None)
    text = env.read_text()
    lines = text.splitlines()
    assert lines[:5] == ["# my settings", "TARGET=azure", "AZURITE_BLOB_PORT=10123", "",
                         "AZURE_STORAGE_ACCOUNT=irisopsstx7k2qm"]
    assert "MY_OWN=keep me" in lines
    assert text.count("AZURE_STORAGE_ACCOUNT=") == 1, "a later duplicate would override the new value"
    assert env_writer.HEADER in lines
    settings = Settings.load(env_file=env, environ={})
    assert settings.azurite_port == "10123" and settings.storage_account == "irisopsstx7k2qm"


def test_is_idempotent(deployment, tmp_path):
    env = tmp_path / ".env"
    env_writer.write_env(deployment, env, echo=lambda _: None)
    first = env.read_text()
    env_writer.write_env(deployment, env, echo=lambda _: None)
    assert env.read_text() == first


def test_quotes_values_a_dotenv_reader_could_misread(deployment, tmp_path):
    deployment["properties"]["outputs"]["stagingPrefix"]["value"] = "adf/iris training #1"
    env = tmp_path / ".env"
    env_writer.write_env(deployment, env, echo=lambda _: None)
    assert Settings.load(env_file=env, environ={}).staging_prefix == "adf/iris training #1"


def test_accepts_just_the_outputs(deployment, tmp_path):
    env = tmp_path / ".env"
    env_writer.write_env(deployment["properties"]["outputs"], env, echo=lambda _: None)
    assert Settings.load(env_file=env, environ={}).batch_pool_id == "dsvm-pool"


def test_refuses_a_failed_deployment(deployment, tmp_path):
    deployment["properties"]["provisioningState"] = "Failed"
    env = tmp_path / ".env"
    with pytest.raises(EnvWriterError, match="provisioningState is 'Failed'"):
        env_writer.write_env(deployment, env, echo=lambda _: None)
    assert not env.exists()


def test_names_every_missing_output(deployment, tmp_path):
    broken = copy.deepcopy(deployment)
    del broken["properties"]["outputs"]["batchAccountUrl"]
    broken["properties"]["outputs"]["poolIdentityClientId"]["value"] = ""
    with pytest.raises(EnvWriterError) as error:
        env_writer.write_env(broken, tmp_path / ".env", echo=lambda _: None)
    assert "batchAccountUrl (for BATCH_ACCOUNT_URL)" in str(error.value)
    assert "poolIdentityClientId (for POOL_IDENTITY_CLIENT_ID)" in str(error.value)


def test_no_outputs_is_an_error(deployment, tmp_path):
    deployment["properties"]["outputs"] = {}
    with pytest.raises(EnvWriterError, match="no outputs"):
        env_writer.write_env(deployment, tmp_path / ".env", echo=lambda _: None)


def _cli(*args, cwd=REPO_ROOT, stdin=None):
    return subprocess.run([sys.executable, "-m", "bicep.env_writer", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_command_line_writes_and_prints(tmp_path):
    env = tmp_path / ".env"
    result = _cli(str(FIXTURE), "--env-file", str(env))
    assert result.returncode == 0, result.stderr
    assert "TARGET=azure" in result.stdout and "BATCH_POOL_ID=dsvm-pool" in result.stdout
    assert "TARGET=azure" in env.read_text()


def test_command_line_reads_stdin(tmp_path):
    env = tmp_path / ".env"
    result = _cli("-", "--env-file", str(env), stdin=FIXTURE.read_text())
    assert result.returncode == 0, result.stderr
    assert "ADF_FACTORY=irisops-adf-x7k2qm" in env.read_text()


def test_command_line_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("ERROR: (AuthorizationFailed) ...")
    result = _cli(str(bad), "--env-file", str(tmp_path / ".env"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad} is not JSON") and "az deployment sub show" in result.stderr
    missing = _cli(str(tmp_path / "nope.json"), "--env-file", str(tmp_path / ".env"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert not (tmp_path / ".env").exists()


def test_terraform_output_json_gives_the_same_values(deployment):
    """`terraform output -json` ({name: {sensitive, type, value}}, terraform/outputs.tf has
    Bicep's output names) is read like Bicep's outputs; a null output counts as missing."""
    terraform = json.loads((REPO_ROOT / "tests" / "fixtures" / "terraform_output.json").read_text())
    assert all(set(o) == {"sensitive", "type", "value"} for o in terraform.values())
    assert env_writer.env_values(env_writer.read_outputs(terraform)) == \
        env_writer.env_values(env_writer.read_outputs(deployment))
    terraform["amlWorkspace"]["value"] = None
    with pytest.raises(EnvWriterError, match=r"amlWorkspace \(for AML_WORKSPACE\).*IAC=terraform"):
        env_writer.env_values(env_writer.read_outputs(terraform))
