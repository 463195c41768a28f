"""Settings: built-in local defaults, overridden by `.env`, overridden by the environment.

`make deploy-infra` writes the Azure keys into `.env`; `.env.example` documents every key.
The target is `local` (Azurite + local runners) unless `TARGET=azure`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from workspace.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("local", "azure")
LOCAL_HOST = "127.0.0.1"
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same for every installation); local default only.
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


def _key(name: str, doc: str, default: str = "", local_default: str | None = None):
    """A setting; `local_default` is a default for the local target only (the Azure target
    takes the value make deploy-infra wrote, or refuses)."""
    metadata = {"env": name, "doc": doc}
    if local_default is not None:
        metadata["local_default"] = local_default
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every setting the CLIs read; the env/.env key of each is in its metadata."""

    target: str = _key("TARGET", "Where commands act: local (default) or azure.", "local")
    # Datastore layout (the same on both targets)
    datastore_name: str = _key("DATASTORE_NAME", "Azure ML datastore over the container.",
                               local_default="workspaceblobstore")
    container: str = _key("DATASTORE_CONTAINER", "Blob container of the datastore.",
                          local_default="azureml")
    model_prefix: str = _key("MODEL_PREFIX", "Folder where the trainer publishes MLflow runs.",
                             "models")
    staging_prefix: str = _key("STAGING_PREFIX",
                               "Folder the ADF Custom activity downloads (trainer + data).",
                               "adf/iris-training")
    # Local target
    local_dir: str = _key("LOCAL_DIR", "State of the local target (Azurite data, registry, runs).",
                          ".local")
    azurite_port: str = _key("AZURITE_BLOB_PORT", "Port of the local Azurite blob service.", "10000")
    azurite_queue_port: str = _key("AZURITE_QUEUE_PORT",
                                   "Port of the local Azurite queue service (sweeps).", "10001")
    ui_port: str = _key("UI_PORT", "Port of the MLflow UI (`make ui`) on 127.0.0.1.", "5000")
    # Azure target (written by make deploy-infra)
    subscription_id: str = _key("AZURE_SUBSCRIPTION_ID", "Subscription of the deployment.")
    resource_group: str = _key("AZURE_RESOURCE_GROUP", "Resource group holding everything.")
    location: str = _key("AZURE_LOCATION", "Azure region.")
    storage_account: str = _key("AZURE_STORAGE_ACCOUNT", "Storage account of the datastore.")
    storage_blob_url: str = _key("AZURE_STORAGE_BLOB_URL",
                                 "Blob endpoint, https://<account>.blob.core.windows.net.")
    key_vault: str = _key("AZURE_KEY_VAULT", "Key Vault name.")
    # Private networking stages the Custom activity into a separate account (docs/azure.md).
    staging_storage_account: str = _key("STAGING_STORAGE_ACCOUNT",
                                        "Storage account the Custom activity is staged into and "
                                        "its task logs are read from: the datastore account, or "
                                        "the staging account in private mode.")
    staging_storage_blob_url: str = _key("STAGING_STORAGE_BLOB_URL",
                                         "Blob endpoint of that account (empty: "
                                         "AZURE_STORAGE_BLOB_URL).")
    # The cloud's host suffixes, as ARM's environment() gives them where Bicep deploys: the
    # linked services adf/ publishes name the account and the vault with them.
    storage_suffix: str = _key("AZURE_STORAGE_SUFFIX",
                               "Storage host suffix of the cloud deployed to (environment()."
                               "suffixes.storage), core.windows.net in the public cloud.")
    key_vault_dns_suffix: str = _key("AZURE_KEY_VAULT_DNS_SUFFIX",
                                     "Key Vault host suffix of the cloud deployed to "
                                     "(environment().suffixes.keyvaultDns), .vault.azure.net "
                                     "in the public cloud.")
    aml_workspace: str = _key("AML_WORKSPACE", "Azure ML workspace name.")
    data_factory: str = _key("ADF_FACTORY", "Data Factory name.")
    adf_pipeline: str = _key("ADF_PIPELINE", "Pipeline that trains the model.", "train-iris")
    adf_identity_resource_id: str = _key("ADF_IDENTITY_RESOURCE_ID",
                                         "Resource id of the factory's user-assigned identity "
                                         "(used by the Batch linked service).")
    batch_account: str = _key("BATCH_ACCOUNT", "Batch account name.")
    batch_account_url: str = _key("BATCH_ACCOUNT_URL",
                                  "Batch endpoint, https://<account>.<region>.batch.azure.com.")
    batch_pool_id: str = _key("BATCH_POOL_ID", "Batch pool that runs the trainer.", "dsvm-pool")
    batch_pool_max_nodes: str = _key("BATCH_POOL_MAX_NODES",
                                     "Most nodes the pool autoscales to (one sweep runner each; "
                                     "a sweep starts no more runners).")
    pool_identity_client_id: str = _key("POOL_IDENTITY_CLIENT_ID",
                                        "Client id of the pool's user-assigned identity.")
    batch_endpoint_name: str = _key("BATCH_ENDPOINT_NAME",
                                    "Batch endpoint name, unique per region (empty: the name "
                                    "in deployer/specs/endpoint.yml).")
    aml_compute_identity_id: str = _key("AML_COMPUTE_IDENTITY_ID",
                                        "Resource id of the identity the scoring cluster runs "
                                        "as (reads the datastore).")
    aml_compute_subnet_id: str = _key("AML_COMPUTE_SUBNET_ID",
                                      "Private mode: resource id of the subnet the scoring "
                                      "cluster is created in, without public node IPs (empty: "
                                      "no VNet).")

    def __post_init__(self):
        # Local-only defaults fill in on the local target; which ones did is remembered so
        # that switching to Azure does not carry them over.
        filled = tuple(f.name for f in fields(self)
                       if "local_default" in f.metadata and not getattr(self, f.name)
                       and self.target == "local")
        for name in filled:
            object.__setattr__(self, name, _field(name).metadata["local_default"])
        object.__setattr__(self, "_local_defaults", filled)
        # Without a separate staging account (the default mode, a .env written before private
        # networking), the datastore account stages the Custom activity.
        for staging, datastore in (("staging_storage_account", "storage_account"),
                                   ("staging_storage_blob_url", "storage_blob_url")):
            if not getattr(self, staging):
                object.__setattr__(self, staging, getattr(self, datastore))

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, env_file: str | os.PathLike | None = None,
             environ: dict[str, str] | None = None, **overrides: str) -> "Settings":
        """Defaults < `.env` (repo root unless given) < environment < explicit overrides."""
        from dotenv import dotenv_values

        path = Path(env_file) if env_file is not None else REPO_ROOT / ".env"
        file_values = {k: v for k, v in dotenv_values(path).items() if v is not None} \
            if path.is_file() else {}
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            key = f.metadata["env"]
            if key in environ and environ[key] != "":
                values[f.name] = environ[key]
            elif key in file_values and file_values[key] != "":
                values[f.name] = file_values[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def with_target(self, target: str | None) -> "Settings":
        if not target:
            return self
        settings = replace(self, target=target, **{n: "" for n in self._local_defaults})
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"TARGET is '{self.target}'.", "Set it to 'local' or 'azure' in .env.")
        if not self.azurite_port.isdigit():
            raise ConfigError(f"AZURITE_BLOB_PORT is '{self.azurite_port}'.", "Set a port number.")
        if not self.azurite_queue_port.isdigit():
            raise ConfigError(f"AZURITE_QUEUE_PORT is '{self.azurite_queue_port}'.",
                              "Set a port number.")
        if not (self.ui_port.isdigit() and 0 < int(self.ui_port) < 65536):
            raise ConfigError(f"UI_PORT is '{self.ui_port}'.", "Set a port number (1-65535).")
        if self.batch_pool_max_nodes and not (self.batch_pool_max_nodes.isdigit()
                                              and int(self.batch_pool_max_nodes) > 0):
            raise ConfigError(f"BATCH_POOL_MAX_NODES is '{self.batch_pool_max_nodes}'.",
                              "Set the pool's autoscale maximum (a whole number of at least 1), "
                              "or leave it empty.")

    def require(self, *names: str) -> None:
        """Raise one ConfigError naming every missing Azure setting."""
        by_name = {f.name: f for f in fields(self)}
        missing = [by_name[n].metadata["env"] for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(f"Missing setting(s) for the Azure target: {', '.join(missing)}.",
                              "Run `make deploy-infra` (it writes .env) or set them in .env; "
                              "see .env.example.")

    # ------------------------------------------------------------------ derived

    def as_environ(self) -> dict[str, str]:
        """The settings that are set, as the environment variables that give a child
        process these settings (the environment overrides its `.env`)."""
        return {f.metadata["env"]: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name)}

    @property
    def is_local(self) -> bool:
        return self.target == "local"

    @property
    def local_path(self) -> Path:
        path = Path(self.local_dir)
        return path if path.is_absolute() else REPO_ROOT / path

    @property
    def azurite_blob_endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.azurite_port}/{AZURITE_ACCOUNT}"

    @property
    def azurite_connection_string(self) -> str:
        return azurite_connection_string(self.azurite_blob_endpoint)

    @property
    def blob_endpoint(self) -> str:
        if self.is_local:
            return self.azurite_blob_endpoint
        self.require("storage_blob_url")
        return self.storage_blob_url.rstrip("/")

    @property
    def staging_blob_endpoint(self) -> str:
        """Where the Custom activity is staged and its logs are written: the datastore's
        endpoint unless a separate staging account is set (private mode)."""
        if self.is_local or self.staging_storage_blob_url == self.storage_blob_url:
            return self.blob_endpoint
        return self.staging_storage_blob_url.rstrip("/")

    @property
    def queue_endpoint(self) -> str:
        """Queue service of the datastore's account (Azurite's locally)."""
        if self.is_local:
            return f"http://{LOCAL_HOST}:{self.azurite_queue_port}/{AZURITE_ACCOUNT}"
        self.require("storage_blob_url")
        # The same account's queue endpoint: https://<account>.queue.<suffix>
        return self.storage_blob_url.rstrip("/").replace(".blob.", ".queue.", 1)

    def datastore_uri(self, path: str) -> str:
        """The Azure ML URI of a path in the datastore."""
        if not self.is_local:
            self.require("datastore_name")
        return f"azureml://datastores/{self.datastore_name}/paths/{path.strip('/')}"


def _field(name: str):
    return next(f for f in fields(Settings) if f.name == name)


def azurite_connection_string(blob_endpoint: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={blob_endpoint};")


def documented_keys() -> list[tuple[str, str, str]]:
    """(key, default, description) for every setting, in declaration order."""
    return [(f.metadata["env"], f.metadata.get("local_default", f.default), f.metadata["doc"])
            for f in fields(Settings)]


def render_env_example() -> str:
    """The text of .env.example (kept in sync by a test; regenerate with `make env-example`)."""
    lines = ["# Settings read by every CLI. Copy to .env to override; `make deploy-infra` writes the",
             "# Azure keys. Environment variables override .env. Never put keys or secrets here:",
             "# Azure access uses your Entra ID login (az login) and managed identities.", ""]
    for key, default, doc in documented_keys():
        if key == "AZURE_SUBSCRIPTION_ID":
            lines += ["", "# --- Azure target (written by make deploy-infra) ---"]
        lines += [f"# {doc}", f"{key}={default}"]
    return "\n".join(lines) + "\n"
