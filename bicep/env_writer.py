"""Write the Azure keys of `.env` from the outputs of the Bicep (or Terraform) deployment.

    az deployment sub create ... -o json > deployment.json
    python -m bicep.env_writer deployment.json [--env-file .env]
    terraform -chdir=terraform output -json > outputs.json
    python -m bicep.env_writer outputs.json [--env-file .env]

Reads the JSON of `az deployment sub create|show -o json` (or just its
`properties.outputs`, or `terraform output -json`: the same output names), sets
TARGET=azure and every key below, keeps every other line of `.env` (comments, local keys,
your own additions) as it was, and prints what it wrote.
Standard library only: it runs before the project's virtualenv exists. The outputs hold
names, URLs and ids, never a key (main.bicep has no such output; tests check it).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# .env key -> output of bicep/main.bicep (the key in camelCase).
OUTPUTS: dict[str, str] = {
    "AZURE_SUBSCRIPTION_ID": "azureSubscriptionId",
    "AZURE_RESOURCE_GROUP": "azureResourceGroup",
    "AZURE_LOCATION": "azureLocation",
    "AZURE_STORAGE_ACCOUNT": "azureStorageAccount",
    "AZURE_STORAGE_BLOB_URL": "azureStorageBlobUrl",
    "AZURE_KEY_VAULT": "azureKeyVault",
    "STAGING_STORAGE_ACCOUNT": "stagingStorageAccount",
    "STAGING_STORAGE_BLOB_URL": "stagingStorageBlobUrl",
    "AZURE_STORAGE_SUFFIX": "azureStorageSuffix",
    "AZURE_KEY_VAULT_DNS_SUFFIX": "azureKeyVaultDnsSuffix",
    "AML_WORKSPACE": "amlWorkspace",
    "ADF_FACTORY": "adfFactory",
    "ADF_PIPELINE": "adfPipeline",
    "ADF_IDENTITY_RESOURCE_ID": "adfIdentityResourceId",
    "BATCH_ACCOUNT": "batchAccount",
    "BATCH_ACCOUNT_URL": "batchAccountUrl",
    "BATCH_POOL_ID": "batchPoolId",
    "BATCH_POOL_MAX_NODES": "batchPoolMaxNodes",
    "POOL_IDENTITY_CLIENT_ID": "poolIdentityClientId",
    "DATASTORE_NAME": "datastoreName",
    "DATASTORE_CONTAINER": "datastoreContainer",
    "MODEL_PREFIX": "modelPrefix",
    "STAGING_PREFIX": "stagingPrefix",
    "BATCH_ENDPOINT_NAME": "batchEndpointName",
    "AML_COMPUTE_IDENTITY_ID": "amlComputeIdentityId",
    "AML_COMPUTE_SUBNET_ID": "amlComputeSubnetId",
}
# Outputs that are empty in the default mode (written empty, clearing an earlier value).
OPTIONAL = {"AML_COMPUTE_SUBNET_ID"}
HEADER = "# --- Azure target (written by make deploy-infra) ---"
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
# A value is written unquoted only if a dotenv reader cannot misread it.
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@%+,=-]*$")


class EnvWriterError(Exception):
    """A deployment output that cannot be turned into .env (message says what to do)."""


def read_outputs(deployment: dict) -> dict[str, str]:
    """The string value of every output, from `az deployment ... -o json` or its outputs."""
    if not isinstance(deployment, dict):
        raise EnvWriterError("The deployment JSON is not an object; pass the output of "
                             "`az deployment sub show -n <name> -o json`.")
    if "properties" in deployment:  # the whole deployment object
        properties = deployment["properties"] or {}
        state = properties.get("provisioningState")
        if state is not None and state != "Succeeded":
            raise EnvWriterError(f"The deployment's provisioningState is '{state}', not 'Succeeded'; "
                                 "fix the error it reports (az deployment operation sub list -n <name>) "
                                 "and redeploy.")
        outputs = properties.get("outputs")
    else:  # just its outputs (--query properties.outputs)
        outputs = deployment
    if not isinstance(outputs, dict) or not outputs:
        raise EnvWriterError("The deployment JSON has no outputs; pass the output of "
                             "`az deployment sub show -n <name> -o json`.")
    values = {}
    for name, output in outputs.items():
        value = output.get("value") if isinstance(output, dict) else output
        if value is not None:
            values[name] = str(value)
    return values


def env_values(outputs: dict[str, str]) -> dict[str, str]:
    """TARGET=azure plus every key of OUTPUTS; names every missing output at once."""
    missing = [f"{name} (for {key})" for key, name in OUTPUTS.items()
               if not outputs.get(name) and not (key in OPTIONAL and name in outputs)]
    if missing:
        raise EnvWriterError(f"The deployment has no value for output(s): {', '.join(missing)}. "
                             "Deploy the current bicep/main.bicep or terraform/ (make deploy-infra [IAC=terraform]).")
    return {"TARGET": "azure", **{key: outputs[name] for key, name in OUTPUTS.items()}}


def _format(key: str, value: str) -> str:
    if _PLAIN.match(value):
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


def merge_env(text: str, values: dict[str, str]) -> str:
    """`text` with each key of `values` set in place; missing keys appended under a header."""
    lines = text.splitlines()
    pending = dict(values)
    out = []
    for line in lines:
        match = _LINE.match(line)
        if match and match.group(1) in values:
            key = match.group(1)
            if key in pending:
                out.append(_format(key, pending.pop(key)))
            # A repeated key would override the value just written: drop it.
            continue
        out.append(line)
    if pending:
        if out and out[-1].strip():
            out.append("")
        if HEADER not in out:
            out.append(HEADER)
        out.extend(_format(key, value) for key, value in pending.items())
    return "\n".join(out) + "\n"


def write_env(deployment: dict, env_file: Path, echo=print) -> dict[str, str]:
    values = env_values(read_outputs(deployment))
    before = env_file.read_text() if env_file.is_file() else ""
    env_file.write_text(merge_env(before, values))
    echo(f"Wrote {len(values)} key(s) to {env_file}:")
    for key, value in values.items():
        echo(f"  {key}={value}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bicep.env_writer", description=__doc__.split("\n\n")[0])
    parser.add_argument("deployment", help="JSON of `az deployment sub create|show -o json` or of "
                                           "`terraform output -json` ('-' for stdin)")
    parser.add_argument("--env-file", default=".env", help=".env to update (default: .env)")
    args = parser.parse_args(argv)
    try:
        raw = sys.stdin.read() if args.deployment == "-" else Path(args.deployment).read_text()
    except OSError as exc:
        print(f"error: cannot read {args.deployment}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        deployment = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"error: {args.deployment} is not JSON ({exc.msg} at line {exc.lineno}); "
              "pass the output of `az deployment sub show -n <name> -o json`.", file=sys.stderr)
        return 2
    try:
        write_env(deployment, Path(args.env_file))
    except EnvWriterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
