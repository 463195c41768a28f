"""`make deploy-infra | what-if | destroy IAC=terraform` (bicep/azure.sh) with fake `az` and
`terraform` on PATH: the same pre-flight checks as Bicep before Terraform runs, a clear
message without Terraform, and the same .env from `terraform output -json`."""
from __future__ import annotations

import json
import sys

import pytest

from bicep import env_writer
from tests.bicep.test_azure_sh import FAKE_AZ, SCRIPT, _run, bin_dir  # noqa: F401  (fixture)
from workspace.settings import REPO_ROOT, Settings

TF_OUTPUT = REPO_ROOT / "tests" / "fixtures" / "terraform_output.json"
SUBSCRIPTION = "6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f"
FAKE_TERRAFORM = r"""#!/bin/bash
echo "ARM_SUBSCRIPTION_ID=$ARM_SUBSCRIPTION_ID $*" >> "$FAKE_TF_LOG"
case "$*" in
  *" output -json") cat "$FAKE_TF_OUTPUT" ;;
  *" init "*|*" apply "*|*" plan "*|*" destroy "*|*" state rm "*) echo "terraform: $2 done" ;;
  *" state list "*) [ -z "${FAKE_TF_EMPTY_STATE:-}" ] && echo "$4" ;;
  *) echo "fake terraform: unexpected: $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def fakes(bin_dir, tmp_path):  # noqa: F811
    az = bin_dir / "az"
    az.write_text(FAKE_AZ.replace('  "account show --query user.type',
                                  f'  "account show --query id -o tsv") echo {SUBSCRIPTION} ;;\n'
                                  '  "account show --query user.type'))
    terraform = bin_dir / "terraform"
    terraform.write_text(FAKE_TERRAFORM)
    for tool in (az, terraform):
        tool.chmod(0o755)
    return tmp_path / "az.log", tmp_path / "tf.log"


def _tf(action, bin_dir, tmp_path, *args, env=None):  # noqa: F811
    return _run(["bash", str(SCRIPT), action, *args], bin_dir, tmp_path,
                env={"IAC": "terraform", "FAKE_TF_LOG": str(tmp_path / "tf.log"),
                     "FAKE_TF_OUTPUT": str(TF_OUTPUT), **(env or {})})


def _calls(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("action", ["deploy", "what-if", "destroy"])
def test_says_how_to_install_terraform_when_it_is_missing(action, bin_dir, tmp_path):  # noqa: F811
    result = _tf(action, bin_dir, tmp_path)
    assert result.returncode == 2
    assert "error: Terraform ('terraform') is not installed or not on PATH." in result.stderr
    assert "Install Terraform 1.11 or newer" in result.stderr and "make deploy-infra" in result.stderr


def test_make_deploy_infra_iac_terraform_gives_the_same_message(bin_dir, tmp_path):  # noqa: F811
    result = _run(["make", "--no-print-directory", "deploy-infra", "IAC=terraform", f"PYTHON={sys.executable}"],
                  bin_dir, tmp_path)
    assert result.returncode != 0
    assert "error: Terraform ('terraform') is not installed or not on PATH." in result.stderr


@pytest.mark.parametrize("env, argument, message", [
    ({"PREFIX": "Iris"}, None, "PREFIX 'Iris' is not 3-10 lowercase letters or digits starting with a letter."),
    ({"PRIVATE_NETWORKING": "true"}, None, "PRIVATE_NETWORKING=true needs ALLOWED_IP, your public IPv4 address."),
    ({}, "poolMaxNodes=3", "terraform/variables.tf has no parameter 'poolMaxNodes'."),
    ({}, "private_networking=true", "parameter 'private_networking' is set by this script."),
    ({}, "pool_max_nodes", "template parameter 'pool_max_nodes' is not name=value."),
    ({"IAC": "pulumi"}, None, "IAC must be bicep or terraform, not 'pulumi'."),
])
def test_bad_settings_are_refused_before_terraform_or_azure(env, argument, message, bin_dir, fakes, tmp_path):  # noqa: F811
    result = _tf("deploy", bin_dir, tmp_path, *([argument] if argument else []), env=env)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    az_log, tf_log = fakes
    assert not az_log.exists() and not tf_log.exists(), "nothing may run before the checks pass"


def test_deploy_applies_and_writes_the_same_env_as_bicep(bin_dir, fakes, tmp_path):  # noqa: F811
    env = tmp_path / ".env"
    env.write_text("AZURITE_BLOB_PORT=10555\n")
    result = _tf("deploy", bin_dir, tmp_path, "factory_batch_role=dataContributor",
                 env={"LOCATION": "northeurope", "PREFIX": "demo1", "PARAMS": "pool_max_nodes=3"})
    assert result.returncode == 0, result.stderr
    _, tf_log = fakes
    calls = _calls(tf_log)
    assert [c.split()[2] for c in calls] == ["init", "apply", "output"]
    assert all(c.startswith(f"ARM_SUBSCRIPTION_ID={SUBSCRIPTION} -chdir=terraform ") for c in calls)
    apply = calls[1]
    for variable in ("location=northeurope", "prefix=demo1", "private_networking=false",
                     "deployer_principal_id=9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "deployer_principal_type=User",
                     "pool_max_nodes=3", "factory_batch_role=dataContributor"):
        assert f"-var {variable}" in apply, variable
    assert "-auto-approve" in apply and "-input=false" in apply
    assert (tmp_path / "state" / "terraform-outputs-demo1.json").read_text() == TF_OUTPUT.read_text()
    # The same .env as Bicep's deployment of the same outputs (tests/bicep/test_azure_sh.py).
    settings = Settings.load(env_file=env, environ={})
    assert settings.target == "azure" and settings.azurite_port == "10555"
    assert settings.data_factory == "irisops-adf-x7k2qm"
    bicep_env = tmp_path / "bicep.env"
    bicep_env.write_text("AZURITE_BLOB_PORT=10555\n")
    env_writer.write_env(json.loads((REPO_ROOT / "tests" / "fixtures" / "az_deployment_sub_create.json").read_text()),
                         bicep_env, echo=lambda *_: None)
    assert env.read_text() == bicep_env.read_text()


def test_what_if_plans_and_destroy_asks_first(bin_dir, fakes, tmp_path):  # noqa: F811
    _, tf_log = fakes
    assert _tf("what-if", bin_dir, tmp_path).returncode == 0
    assert [c.split()[2] for c in _calls(tf_log)] == ["init", "plan"]
    refused = _tf("destroy", bin_dir, tmp_path)
    assert refused.returncode == 2 and "refusing to destroy without confirmation" in refused.stderr
    assert [c.split()[2] for c in _calls(tf_log)] == ["init", "plan"]
    (tmp_path / ".env").write_text("TARGET=azure\n")
    done = _tf("destroy", bin_dir, tmp_path, env={"YES": "1"})
    assert done.returncode == 0, done.stderr
    assert [c.split()[2] for c in _calls(tf_log)][-4:] == ["init", "state", "state", "destroy"]
    assert "TARGET=local" in (tmp_path / ".env").read_text()


def test_a_remote_backend_needs_backend_tf(bin_dir, fakes, tmp_path):  # noqa: F811
    config = tmp_path / "backend.hcl"
    config.write_text('storage_account_name = "tfstate12345"\n')
    result = _tf("what-if", bin_dir, tmp_path, env={"TF_BACKEND_CONFIG": str(config)})
    assert result.returncode == 2
    assert "terraform/backend.tf does not exist" in result.stderr and "backend.tf.example" in result.stderr


def test_private_mode_reaches_terraform_with_the_allowed_ip(bin_dir, fakes, tmp_path):  # noqa: F811
    result = _tf("what-if", bin_dir, tmp_path, env={"PRIVATE_NETWORKING": "true", "ALLOWED_IP": "203.0.113.7"})
    assert result.returncode == 0, result.stderr
    plan = _calls(fakes[1])[-1]
    assert "-var private_networking=true" in plan and "-var allowed_ip_address=203.0.113.7" in plan


# Resource Manager refuses DELETE on Microsoft.KeyVault/vaults/secrets ("The operation 'delete' on
# resource type 'vaults/secrets' is disallowed": Azure/terraform-provider-azapi#879; the REST spec
# of Microsoft.KeyVault has no Secrets_Delete), so `terraform destroy` would stop at the secret.
SECRET = "module.storage_key_secret.azapi_resource.secret"


@pytest.mark.parametrize("empty_state", [False, True])
def test_destroy_leaves_the_secret_to_the_vault_instead_of_deleting_it(empty_state, bin_dir, fakes, tmp_path):  # noqa: F811
    _, tf_log = fakes
    done = _tf("destroy", bin_dir, tmp_path, env={"YES": "1", **({"FAKE_TF_EMPTY_STATE": "1"} if empty_state else {})})
    assert done.returncode == 0, done.stderr
    calls = [" ".join(c.split()[2:]) for c in _calls(tf_log)]
    assert calls[0].startswith("init ") and calls[-1].startswith("destroy ")
    assert calls[1] == f"state list {SECRET}"
    assert (f"state rm {SECRET}" in calls) is not empty_state
    # The address is the stack's.
    from terraform.hcl import TERRAFORM_DIR, labelled, parse, resources
    assert any(labels == ["storage_key_secret"] for labels, _ in labelled(parse(TERRAFORM_DIR / "main.tf"), "module"))
    assert ("azapi_resource", "secret") in {(k, n) for _, k, n, _ in resources(TERRAFORM_DIR / "modules/storage-key-secret")}
