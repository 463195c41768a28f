"""`make deploy-infra | what-if | destroy` (bicep/azure.sh) with a fake `az` on PATH, and
the pool start task (bicep/pool-start-task.sh) with a fake interpreter."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workspace.settings import REPO_ROOT, Settings

SCRIPT = REPO_ROOT / "bicep" / "azure.sh"
START_TASK = REPO_ROOT / "bicep" / "pool-start-task.sh"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "az_deployment_sub_create.json"
TOOLS = ("bash", "dirname", "sed", "cut", "mkdir", "tail", "tr", "grep", "cat", "env", "cmp",
         "base64", "mv", "rm", "cp", "chmod", "wc", "printf", "make", "sh")

FAKE_AZ = r"""#!/bin/bash
echo "$*" >> "$FAKE_AZ_LOG"
case "$*" in
  "account show --query [name, id, user.name] -o tsv")
    if [ -n "${FAKE_AZ_LOGGED_OUT:-}" ]; then
      echo "ERROR: Please run 'az login' to setup account." >&2; exit 1
    fi
    printf 'My subscription\t6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f\tdev@example.org\n' ;;
  "account show --query user.type -o tsv") echo "${FAKE_AZ_USER_TYPE:-user}" ;;
  "account show --query user.name -o tsv") echo dev@example.org ;;
  "ad signed-in-user show --query id -o tsv") echo 9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d ;;
  "ad sp show "*) echo "ERROR: Insufficient privileges to complete the operation." >&2; exit 1 ;;
  "account get-access-token --query accessToken -o tsv") echo "$FAKE_AZ_TOKEN" ;;
  "keyvault list-deleted --resource-type vault --query "*) echo "${FAKE_AZ_DELETED_VAULT:-}" ;;
  "deployment sub create "*) cat "$FAKE_AZ_DEPLOYMENT" ;;
  "deployment sub what-if "*) echo "Resource changes: 1 to create." ;;
  "group exists "*) echo true ;;
  "group delete "*) ;;
  *) echo "fake az: unexpected: $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    """A PATH with the shell tools the scripts use and python3, but no `az`."""
    path = tmp_path / "bin"
    path.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (path / tool).symlink_to(found)
    (path / "python3").symlink_to(sys.executable)
    return path


@pytest.fixture
def fake_az(bin_dir, tmp_path) -> Path:
    az = bin_dir / "az"
    az.write_text(FAKE_AZ)
    az.chmod(0o755)
    return tmp_path / "az.log"


def _run(command, bin_dir, tmp_path, *, env=None, stdin=None):
    environ = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FAKE_AZ_LOG": str(tmp_path / "az.log"),
               "FAKE_AZ_DEPLOYMENT": str(FIXTURE), "ENV_FILE": str(tmp_path / ".env"),
               "STATE_DIR": str(tmp_path / "state"),
               "PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    return subprocess.run(command, cwd=REPO_ROOT, env=environ, input=stdin, capture_output=True,
                          text=True, timeout=120)


def _script(action, bin_dir, tmp_path, **kwargs):
    return _run(["bash", str(SCRIPT), action], bin_dir, tmp_path, **kwargs)


@pytest.mark.parametrize("action", ["deploy", "what-if", "destroy"])
def test_says_so_when_az_is_missing(action, bin_dir, tmp_path):
    result = _script(action, bin_dir, tmp_path)
    assert result.returncode == 2
    assert "the Azure CLI ('az') is not installed or not on PATH" in result.stderr
    assert "az login" in result.stderr


@pytest.mark.parametrize("action", ["deploy", "what-if", "destroy"])
def test_says_so_when_az_is_not_logged_in(action, bin_dir, fake_az, tmp_path):
    result = _script(action, bin_dir, tmp_path, env={"FAKE_AZ_LOGGED_OUT": "1"})
    assert result.returncode == 2
    assert "error: the Azure CLI is not logged in." in result.stderr
    assert "Run 'az login'" in result.stderr
    assert "deployment" not in fake_az.read_text() and "group" not in fake_az.read_text()


def test_make_deploy_infra_gives_the_same_message(bin_dir, fake_az, tmp_path):
    result = _run(["make", "--no-print-directory", "deploy-infra", f"PYTHON={sys.executable}"],
                  bin_dir, tmp_path, env={"FAKE_AZ_LOGGED_OUT": "1"})
    assert result.returncode != 0
    assert "error: the Azure CLI is not logged in." in result.stderr


def test_deploy_creates_the_deployment_and_writes_env(bin_dir, fake_az, tmp_path):
    env = tmp_path / ".env"
    env.write_text("AZURITE_BLOB_PORT=10555\n")
    result = _script("deploy", bin_dir, tmp_path, env={"LOCATION": "northeurope", "PREFIX": "demo1"})
    assert result.returncode == 0, result.stderr
    calls = fake_az.read_text().splitlines()
    create = next(c for c in calls if c.startswith("deployment sub create "))
    assert "--name iris-infra-demo1 --location northeurope --template-file bicep/main.bicep" in create
    for parameter in ("location=northeurope", "prefix=demo1", "privateNetworking=false",
                      "deployerPrincipalId=9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "deployerPrincipalType=User"):
        assert parameter in create.split(), parameter
    assert not any(word in create.lower() for word in ("key=", "secret", "password", "connectionstring"))
    # .env from the outputs, printed, local keys kept.
    settings = Settings.load(env_file=env, environ={})
    assert settings.target == "azure" and settings.azurite_port == "10555"
    assert settings.data_factory == "irisops-adf-x7k2qm"
    assert "ADF_FACTORY=irisops-adf-x7k2qm" in result.stdout
    assert "Azure subscription: My subscription (6b1f5c3e-2d4a-4e8b-9c7d-1a2b3c4d5e6f)" in result.stdout
    # The deployment's JSON is kept for re-running the writer.
    assert (tmp_path / "state" / "deployment-demo1.json").read_text() == FIXTURE.read_text()


def test_a_service_principal_without_graph_access_gets_its_object_id_from_its_token(bin_dir, fake_az,
                                                                                   tmp_path):
    claims = base64.urlsafe_b64encode(b'{"oid":"1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9","appid":"x"}')
    token = "eyJhbGciOiJSUzI1NiJ9." + claims.decode().rstrip("=") + ".c2lnbmF0dXJl"
    result = _script("deploy", bin_dir, tmp_path,
                     env={"FAKE_AZ_USER_TYPE": "servicePrincipal", "FAKE_AZ_TOKEN": token})
    assert result.returncode == 0, result.stderr
    calls = fake_az.read_text()
    create = next(c for c in calls.splitlines() if c.startswith("deployment sub create "))
    assert "deployerPrincipalId=1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9" in create.split()
    assert "deployerPrincipalType=ServicePrincipal" in create.split()
    assert token not in calls, "the token must not appear on any command line"


def _call(fake_az, prefix: str) -> str:
    return next(c for c in fake_az.read_text().splitlines() if c.startswith(prefix))


def test_allowed_ip_reaches_the_template(bin_dir, fake_az, tmp_path):
    result = _script("what-if", bin_dir, tmp_path, env={"ALLOWED_IP": "203.0.113.7"})
    assert result.returncode == 0, result.stderr
    what_if = _call(fake_az, "deployment sub what-if ").split()
    assert "privateNetworking=false" in what_if and "allowedIpAddress=203.0.113.7" in what_if
    assert "Resource changes" in result.stdout


@pytest.mark.parametrize("action", ["deploy", "what-if"])
def test_private_networking_runs_the_same_path_with_the_allowed_ip(action, bin_dir, fake_az, tmp_path):
    result = _script(action, bin_dir, tmp_path, env={"PRIVATE_NETWORKING": "true", "ALLOWED_IP": "203.0.113.7"})
    assert result.returncode == 0, result.stderr
    call = _call(fake_az, "deployment sub create " if action == "deploy" else "deployment sub what-if ").split()
    assert "privateNetworking=true" in call and "allowedIpAddress=203.0.113.7" in call


# The storage firewall refuses RFC 1918 private ranges in IP rules (Microsoft's "Guidelines and
# limitations for the Azure Storage firewall"); loopback, link-local, carrier-grade NAT, "this
# network" and multicast addresses are never the address Azure sees; a leading zero is ambiguous.
REFUSED_IPS = ["", "203.0.113", "203.0.113.256", "10.0.0.0/8", "myhost", "10.1.2.3", "172.16.0.5", "172.31.255.1",
               "192.168.1.10", "127.0.0.1", "0.0.0.0", "169.254.10.1", "100.64.0.1", "100.127.0.1", "224.0.0.1",
               "255.255.255.255", "09.1.1.1"]
ACCEPTED_IPS = ["172.15.0.1", "172.32.0.1", "100.63.0.1", "100.128.0.1", "192.169.0.1", "8.8.4.4", "203.0.113.7",
                "223.255.0.1"]


@pytest.mark.parametrize("allowed_ip", REFUSED_IPS)
def test_private_networking_without_a_valid_allowed_ip_is_refused_before_azure(allowed_ip, bin_dir, fake_az,
                                                                                tmp_path):
    result = _script("what-if", bin_dir, tmp_path, env={"PRIVATE_NETWORKING": "true", "ALLOWED_IP": allowed_ip})
    assert result.returncode == 2
    assert "error: PRIVATE_NETWORKING=true needs ALLOWED_IP, your public IPv4 address" in result.stderr
    assert "ALLOWED_IP=<address>" in result.stderr
    assert "azure.sh: line" not in result.stderr, "a shell error instead of the message"
    assert not fake_az.exists(), "nothing may reach Azure"


@pytest.mark.parametrize("allowed_ip", ACCEPTED_IPS)
def test_public_addresses_next_to_the_refused_ranges_are_accepted(allowed_ip, bin_dir, fake_az, tmp_path):
    result = _script("what-if", bin_dir, tmp_path, env={"PRIVATE_NETWORKING": "true", "ALLOWED_IP": allowed_ip})
    assert result.returncode == 0, result.stderr
    assert f"allowedIpAddress={allowed_ip}" in _call(fake_az, "deployment sub what-if ").split()


@pytest.mark.parametrize("prefix", ["ab", "abcdefghijk", "1iris", "Iris", "iris-ops", "iris_ops", "iris ops"])
def test_a_prefix_outside_the_name_rules_is_refused_before_azure(prefix, bin_dir, fake_az, tmp_path):
    result = _script("deploy", bin_dir, tmp_path, env={"PREFIX": prefix})
    assert result.returncode == 2
    assert f"error: PREFIX '{prefix}' is not 3-10 lowercase letters or digits starting with a letter." in result.stderr
    assert not fake_az.exists(), "nothing may reach Azure"


@pytest.mark.parametrize("prefix", ["abc", "irisops", "a23456789z"])
def test_a_prefix_inside_the_name_rules_is_accepted(prefix, bin_dir, fake_az, tmp_path):
    result = _script("what-if", bin_dir, tmp_path, env={"PREFIX": prefix})
    assert result.returncode == 0, result.stderr
    assert f"prefix={prefix}" in _call(fake_az, "deployment sub what-if ").split()


def test_extra_template_parameters_from_arguments_and_params(bin_dir, fake_az, tmp_path):
    result = _run(["bash", str(SCRIPT), "deploy", "factoryBatchRole=dataContributor"], bin_dir, tmp_path,
                  env={"PARAMS": "poolMaxNodes=3 poolVmSize=Standard_D4s_v3"})
    assert result.returncode == 0, result.stderr
    create = _call(fake_az, "deployment sub create ").split()
    for parameter in ("factoryBatchRole=dataContributor", "poolMaxNodes=3", "poolVmSize=Standard_D4s_v3"):
        assert parameter in create, parameter


def test_make_deploy_infra_passes_params(bin_dir, fake_az, tmp_path):
    result = _run(["make", "--no-print-directory", "what-if", f"PYTHON={sys.executable}",
                   "PARAMS=factoryBatchRole=dataContributor"], bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "factoryBatchRole=dataContributor" in _call(fake_az, "deployment sub what-if ").split()


@pytest.mark.parametrize("target", ["what-if", "deploy-infra"])
def test_make_runs_private_networking_like_the_default_mode(target, bin_dir, fake_az, tmp_path):
    result = _run(["make", "--no-print-directory", target, f"PYTHON={sys.executable}",
                   "PRIVATE_NETWORKING=true", "ALLOWED_IP=203.0.113.7"], bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    call = _call(fake_az, "deployment sub what-if " if target == "what-if" else "deployment sub create ").split()
    assert "privateNetworking=true" in call and "allowedIpAddress=203.0.113.7" in call


@pytest.mark.parametrize("argument, message", [
    ("factoryBatchRole", "template parameter 'factoryBatchRole' is not name=value."),
    ("poolSize=3", "bicep/main.bicep has no parameter 'poolSize'."),
    ("prefix=other", "parameter 'prefix' is set by this script."),
    ("keyVaultCreateMode=recover", "parameter 'keyVaultCreateMode' is set by this script."),
])
def test_a_bad_extra_parameter_is_refused_before_azure(argument, message, bin_dir, fake_az, tmp_path):
    result = _run(["bash", str(SCRIPT), "deploy", argument], bin_dir, tmp_path)
    assert result.returncode == 2
    assert f"error: {message}" in result.stderr
    assert not fake_az.exists()


def test_a_soft_deleted_key_vault_of_this_prefix_and_region_is_recovered(bin_dir, fake_az, tmp_path):
    result = _script("deploy", bin_dir, tmp_path, env={"PREFIX": "demo1", "LOCATION": "northeurope",
                                                       "FAKE_AZ_DELETED_VAULT": "demo1-kv-x7k2qm"})
    assert result.returncode == 0, result.stderr
    query = _call(fake_az, "keyvault list-deleted ")
    assert "starts_with(name, 'demo1-kv-')" in query and "properties.location=='northeurope'" in query
    assert "keyVaultCreateMode=recover" in _call(fake_az, "deployment sub create ").split()
    assert "Key Vault 'demo1-kv-x7k2qm' is soft-deleted from an earlier deployment; recovering it." in result.stdout


def test_without_a_soft_deleted_key_vault_it_is_created(bin_dir, fake_az, tmp_path):
    result = _script("deploy", bin_dir, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "keyVaultCreateMode=default" in _call(fake_az, "deployment sub create ").split()


def test_destroy_refuses_without_confirmation(bin_dir, fake_az, tmp_path):
    result = _script("destroy", bin_dir, tmp_path, stdin="")
    assert result.returncode == 2
    assert "refusing to delete without confirmation" in result.stderr
    assert "group delete" not in fake_az.read_text()


def test_destroy_with_yes_deletes_the_group_from_env_and_resets_the_target(bin_dir, fake_az, tmp_path):
    env = tmp_path / ".env"
    env.write_text("TARGET=azure\nAZURE_RESOURCE_GROUP=rg-mine\n")
    result = _script("destroy", bin_dir, tmp_path, env={"YES": "1"})
    assert result.returncode == 0, result.stderr
    assert "group delete --name rg-mine --yes" in fake_az.read_text().splitlines()
    assert "TARGET=local" in env.read_text().splitlines()


BSD_SED = """#!/bin/bash
# sed as on macOS: `-i` takes the next argument as the backup suffix, so GNU-style use fails.
for arg in "$@"; do
  [ "$arg" = "-i" ] && { echo "sed: 1: \"$3\": invalid command code" >&2; exit 1; }
done
exec REAL_SED "$@"
"""


def test_destroy_resets_the_target_with_a_bsd_sed(bin_dir, fake_az, tmp_path):
    real = (bin_dir / "sed").resolve()
    (bin_dir / "sed").unlink()
    (bin_dir / "sed").write_text(BSD_SED.replace("REAL_SED", str(real)))
    (bin_dir / "sed").chmod(0o755)
    env = tmp_path / ".env"
    env.write_text("TARGET=azure\nAZURE_RESOURCE_GROUP=rg-mine\nMODEL_PREFIX=models\n")
    result = _script("destroy", bin_dir, tmp_path, env={"YES": "1"})
    assert result.returncode == 0, result.stderr
    assert env.read_text() == "TARGET=local\nAZURE_RESOURCE_GROUP=rg-mine\nMODEL_PREFIX=models\n"
    assert not list(tmp_path.glob(".env.tmp*"))


def test_unknown_action_shows_usage(bin_dir, tmp_path):
    result = _script("nuke", bin_dir, tmp_path)
    assert result.returncode == 2 and "usage:" in result.stderr


# ------------------------------------------------------------------ pool start task

FAKE_PYTHON = r"""#!/bin/bash
# Stands in for python3.11: `-m venv DIR` makes DIR/bin/python, which logs its arguments.
echo "python3.11 $*" >> "$FAKE_LOG"
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"
  printf '#!/bin/bash\necho "venv-python $*" >> "$FAKE_LOG"\n' > "$3/bin/python"
  chmod +x "$3/bin/python"
fi
"""


def _start_task(bin_dir, tmp_path, requirements: bytes | None):
    fake = bin_dir / "python3.11"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": str(bin_dir), "IRIS_TRAINER_ROOT": str(tmp_path / "opt"), "FAKE_LOG": str(tmp_path / "log")}
    if requirements is not None:
        env["TRAINER_REQUIREMENTS_B64"] = base64.b64encode(requirements).decode()
    return subprocess.run(["bash", str(START_TASK)], env=env, capture_output=True, text=True, timeout=60)


def test_start_task_installs_the_trainer_requirements_into_the_fixed_venv(bin_dir, tmp_path):
    requirements = (REPO_ROOT / "trainer" / "requirements.txt").read_bytes()
    result = _start_task(bin_dir, tmp_path, requirements)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "opt"
    assert (root / "requirements.txt").read_bytes() == requirements
    log = (tmp_path / "log").read_text().splitlines()
    assert log[0] == f"python3.11 -m venv {root}/venv"
    assert f"venv-python -m pip install --quiet --disable-pip-version-check -r {root}/requirements.txt" in log
    # The task user (non-admin) can read and run it.
    assert os.stat(root / "venv" / "bin" / "python").st_mode & 0o005 == 0o005
    # On reboot with the same requirements nothing is reinstalled.
    again = _start_task(bin_dir, tmp_path, requirements)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert len((tmp_path / "log").read_text().splitlines()) == len(log)
    # Changed requirements rebuild the virtualenv.
    changed = _start_task(bin_dir, tmp_path, requirements + b"rich==13.0.0\n")
    assert changed.returncode == 0
    assert len((tmp_path / "log").read_text().splitlines()) == 2 * len(log)


def test_start_task_without_the_requirements_fails_clearly(bin_dir, tmp_path):
    result = _start_task(bin_dir, tmp_path, None)
    assert result.returncode == 2
    assert "TRAINER_REQUIREMENTS_B64 is empty" in result.stderr
