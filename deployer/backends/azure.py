"""Azure ML backend: the portal click-path as `azure-ai-ml` 1.x calls.

Entities come from the YAML specs through `azure.ai.ml.load_*`; every call that changes
something is preceded by a GET and skipped when the service already matches the spec, so
a second `register-and-deploy` makes no write. Long-running operations are named and
waited on explicitly (`begin_*` → `_wait`), with `progress` told while they run.
Service errors become one `AzureError` line saying what to do.

The Azure SDK is imported only here, and only when the backend is used.
"""
from __future__ import annotations

import io
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import yaml

from deployer.backends.base import Backend, Progress
from deployer.entities import (CREATE, DELETE, NO_OP, UPDATE, Change, Deployment, JobOverrides,
                               JobSummary, ModelSource, RegisteredModel)
from workspace.errors import ConfigError, ProjectError
from workspace.settings import Settings

CONTENT_TAG = "content_sha256"
ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding"}


def _status(value) -> str:
    """'Running' from a str or an azure-ai-ml JobStatus enum."""
    return str(getattr(value, "value", value) or "")
STATUS = {  # Azure ML job states → the five the deployer reports
    "NotStarted": "Queued", "Queued": "Queued", "Preparing": "Queued", "Provisioning": "Queued",
    "Starting": "Running", "Running": "Running", "Finalizing": "Running",
    "CancelRequested": "Running", "Completed": "Completed", "Failed": "Failed",
    "NotResponding": "Failed", "Canceled": "Canceled", "Paused": "Running",
}
SCORE_OUTPUT = "score"
SCORE_FILE = Path("named-outputs") / SCORE_OUTPUT
DEPLOYMENT_SETTINGS = ("mini_batch_size", "max_concurrency_per_instance", "output_action",
                       "output_file_name", "error_threshold", "logging_level")


class AzureError(ProjectError):
    """Azure ML refused or failed a call; the hint says what to do."""

    exit_code = 4


class AzureAuthError(AzureError):
    """No usable Azure sign-in, or the identity lacks a role on the workspace."""


class AzureQuotaError(AzureError):
    """The subscription's core quota does not allow the cluster."""


class AzureNotFound(AzureError):
    """A resource the command needs does not exist."""


def validate_endpoint_name(name: str, what: str = "Endpoint") -> None:
    """Batch endpoint (and deployment) names: 3-32 characters, letters, digits and dashes,
    starting with a letter and not ending with a dash (checked before any call)."""
    if not isinstance(name, str) or not 3 <= len(name) <= 32 or not ENDPOINT_NAME.match(name):
        unique = " (endpoint names are unique per Azure region)" if what == "Endpoint" else ""
        raise ConfigError(
            f"{what} name '{name}' is invalid.",
            "Use 3-32 characters: letters, digits and dashes, starting with a letter and not "
            f"ending with a dash{unique}.")


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, settings: Settings, *, credential=None, client_kwargs: dict | None = None,
                 ml_client=None, datastore=None, poll_seconds: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep):
        """`credential`, `client_kwargs` (e.g. `transport=`), `ml_client` and `datastore` are
        injectable; by default `DefaultAzureCredential` and the workspace from settings."""
        self.settings = settings
        self._credential = credential
        self._client_kwargs = dict(client_kwargs or {})
        self._ml_client = ml_client
        self._datastore = datastore
        self.poll_seconds = poll_seconds
        self._sleep = sleep

    # ------------------------------------------------------------------ client

    @property
    def ml_client(self):
        if self._ml_client is None:
            self.settings.require("subscription_id", "resource_group", "aml_workspace")
            from azure.ai.ml import MLClient

            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential()
            kwargs = {"show_progress": False, "enable_telemetry": False, **self._client_kwargs}
            self._ml_client = MLClient(credential, self.settings.subscription_id,
                                       self.settings.resource_group, self.settings.aml_workspace,
                                       **kwargs)
        return self._ml_client

    @property
    def datastore(self):
        """The workspace datastore's container (for uploading a local invoke input)."""
        if self._datastore is None:
            from workspace.datastore import Datastore

            self._datastore = Datastore.from_settings(self.settings, credential=self._credential)
        return self._datastore

    @contextmanager
    def _errors(self, what: str):
        try:
            yield
        except ProjectError:
            raise
        except Exception as exc:  # translated when it comes from Azure; re-raised otherwise
            translated = translate_error(exc, what, self.settings)
            if translated is None:
                raise
            raise translated from exc

    def _wait(self, poller, what: str, progress: Progress | None):
        """Wait for a long-running operation, telling `progress` once a second while it runs.
        (azure-ai-ml prints a dot per poll of some deletes; that goes nowhere.)"""
        import contextlib

        with contextlib.redirect_stdout(io.StringIO()) if progress is None else contextlib.nullcontext():
            return self._wait_for(poller, what, progress)

    def _wait_for(self, poller, what: str, progress: Progress | None):
        started = time.monotonic()
        if progress:
            progress(f"{what} ...")
        shown = 0
        while not poller.done():
            poller.wait(timeout=1.0)
            elapsed = int(time.monotonic() - started)
            if progress and elapsed > shown and not poller.done():
                shown = elapsed
                progress(f"{what} ... {elapsed}s")
        result = poller.result()
        if progress:
            progress(f"{what}: done in {time.monotonic() - started:.0f}s")
        return result

    def _get_or_none(self, getter, *args, **kwargs):
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return getter(*args, **kwargs)
        except ResourceNotFoundError:
            return None

    # ------------------------------------------------------------------ model

    def register_model(self, source: ModelSource, *, dry_run: bool = False,
                       spec=None) -> tuple[RegisteredModel | None, Change]:
        """Register `source` as an MLflow model unless a version tagged with the same
        `content_sha256` exists. `spec` (model.yml) supplies description and type."""
        if not source.datastore_path:
            raise ConfigError(f"Model '{source.name}' has no datastore path.",
                              "Train first (`python -m adf trigger`) so a complete run exists.")
        if not source.content_sha256:
            raise ConfigError(f"Model '{source.name}' has no content digest.",
                              "Register from a complete training run (its manifest lists file hashes).")
        with self._errors(f"registering model '{source.name}'"):
            existing = self._find_model_version(source.name, source.content_sha256)
            if existing is not None:
                return (_registered(existing),
                        Change("model", source.name, NO_OP,
                               f"version {existing.version} has the same content"))
            path = self.settings.datastore_uri(source.datastore_path)
            if dry_run:
                return None, Change("model", source.name, CREATE, f"new version from {path}")
            model = self.desired_model(source, spec)
            created = self.ml_client.models.create_or_update(model)
            return (_registered(created),
                    Change("model", source.name, CREATE, f"version {created.version} from {path}"))

    def desired_model(self, source: ModelSource, spec=None):
        """model.yml (or a bare MLflow model) with the run's datastore folder, name and tags."""
        from azure.ai.ml import load_model

        data = dict(spec.data) if spec is not None else {"type": "mlflow_model"}
        if data.get("type", "mlflow_model") != "mlflow_model":
            raise ConfigError(f"model.yml has type '{data.get('type')}'.",
                              "A no-code batch deployment needs type: mlflow_model.")
        tags = {**{str(k): str(v) for k, v in (data.get("tags") or {}).items()},
                **{str(k): str(v) for k, v in (source.tags or {}).items()},
                CONTENT_TAG: source.content_sha256}
        data.update(name=source.name, path=self.settings.datastore_uri(source.datastore_path),
                    tags=tags)
        data.pop("version", None)  # the service numbers versions
        return load_model(io.StringIO(yaml.safe_dump(data, sort_keys=False)))

    def _find_model_version(self, name: str, digest: str):
        versions = self._get_or_none(lambda: list(self.ml_client.models.list(name=name))) or []
        for model in versions:
            if (model.tags or {}).get(CONTENT_TAG) == digest:
                return model
        return None

    # ------------------------------------------------------------------ compute

    def desired_compute(self, spec):
        from azure.ai.ml import load_compute

        return load_compute(_yaml_source(spec))

    def ensure_compute(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        desired = self.desired_compute(spec)
        with self._errors(f"creating compute '{desired.name}'"):
            existing = self._get_or_none(self.ml_client.compute.get, desired.name)
            if existing is None:
                action, detail = CREATE, f"{desired.size}, {desired.min_instances}-{desired.max_instances} nodes"
            else:
                have, want = _compute_state(existing), _compute_state(desired)
                if have["size"] != want["size"]:
                    raise ConfigError(
                        f"Compute '{desired.name}' exists with size {existing.size}, the spec asks "
                        f"for {desired.size}; Azure ML cannot resize a cluster.",
                        "Run `python -m deployer teardown` first, or give the cluster another name.")
                diff = _diff(have, want) or _failed(existing)
                if not diff:
                    return Change("compute", desired.name, NO_OP)
                action, detail = UPDATE, diff
            if not dry_run:
                self._wait(self.ml_client.compute.begin_create_or_update(desired),
                           f"{action} compute {desired.name}", progress)
            return Change("compute", desired.name, action, detail)

    # ------------------------------------------------------------------ endpoint

    def desired_endpoint(self, spec):
        from azure.ai.ml import load_batch_endpoint

        validate_endpoint_name(spec.name)
        return load_batch_endpoint(_yaml_source(spec))

    def ensure_endpoint(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        desired = self.desired_endpoint(spec)
        with self._errors(f"creating endpoint '{desired.name}'"):
            existing = self._get_or_none(self.ml_client.batch_endpoints.get, desired.name)
            if existing is None:
                action, detail = CREATE, ""
            else:
                diff = _diff(_endpoint_state(existing), _endpoint_state(desired)) or _failed(existing)
                if not diff:
                    return Change("endpoint", desired.name, NO_OP)
                action, detail = UPDATE, diff
                desired.defaults = existing.defaults  # keep the default deployment
            if not dry_run:
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(desired),
                           f"{action} endpoint {desired.name}", progress)
            return Change("endpoint", desired.name, action, detail)

    # ------------------------------------------------------------------ deployment

    def desired_deployment(self, spec, model: RegisteredModel | None):
        from azure.ai.ml.entities._load_functions import load_model_batch_deployment

        overrides = {}
        if model is not None:
            overrides["model"] = f"azureml:{model.name}:{model.version}"
        validate_endpoint_name(spec.data.get("endpoint_name", ""))
        validate_endpoint_name(spec.name, "Deployment")
        deployment = load_model_batch_deployment(_yaml_source(spec),
                                                 params_override=[overrides] if overrides else None)
        settings = deployment.settings
        action = str(getattr(settings, "output_action", "") or "").lower().replace("_", "")
        if action == "summaryonly" and settings.output_file_name:
            raise ConfigError(f"Deployment '{deployment.name}': output_action summary_only cannot "
                              "have an output_file_name.",
                              "Remove output_file_name from deployment.yml or use append_row.")
        return deployment

    def ensure_deployment(self, spec, model: RegisteredModel | None, *, dry_run: bool = False,
                          progress: Progress | None = None, set_default: bool = True) -> Change:
        desired = self.desired_deployment(spec, model)
        endpoint_name, name = desired.endpoint_name, desired.name
        with self._errors(f"creating deployment '{name}' of endpoint '{endpoint_name}'"):
            endpoint = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint_name)
            existing = None
            if endpoint is not None:
                existing = self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint_name)
            if existing is None:
                needs_put, action, detail = True, CREATE, f"model {_model_ref(desired.model)}"
            else:
                diff = _diff(_deployment_state(existing), _deployment_state(desired)) or _failed(existing)
                needs_put, action, detail = bool(diff), (UPDATE if diff else NO_OP), diff
            is_default = endpoint is not None and _default_deployment(endpoint) == name
            if set_default and not is_default:
                detail = "; ".join(x for x in (detail, "set as the endpoint's default") if x)
                if action == NO_OP:
                    action = UPDATE
            if dry_run:
                return Change("deployment", name, action, detail)
            if needs_put:
                if existing is not None:  # keep the smoke test's result
                    desired.tags = {**dict(existing.tags or {}), **dict(desired.tags or {})}
                self._wait(self.ml_client.batch_deployments.begin_create_or_update(
                    desired, skip_script_validation=True),
                    f"{action} deployment {name}", progress)
            if set_default and not is_default:
                endpoint = self.ml_client.batch_endpoints.get(endpoint_name)
                endpoint.defaults = {"deployment_name": name}
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(endpoint),
                           f"set default deployment of {endpoint_name} to {name}", progress)
            return Change("deployment", name, action, detail)

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        validate_endpoint_name(endpoint)
        with self._errors(f"listing the deployments of endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            if found is None:
                return []
            default = _default_deployment(found)
            listed = []
            for dep in self.ml_client.batch_deployments.list(endpoint_name=endpoint):
                created = getattr(getattr(dep, "creation_context", None), "created_at", None)
                listed.append(Deployment(
                    name=dep.name, model=_model_ref(dep.model), is_default=dep.name == default,
                    created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
                    tags=dict(dep.tags or {}), provisioning_state=_status(dep.provisioning_state)))
            return sorted(listed, key=lambda d: d.name)

    def set_default_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                               progress: Progress | None = None) -> Change:
        validate_endpoint_name(endpoint)
        with self._errors(f"setting the default deployment of endpoint '{endpoint}'"):
            found = self.ml_client.batch_endpoints.get(endpoint)
            if self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint) is None:
                raise AzureNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.",
                                    "See `python -m deployer status` for the deployments.")
            old = _default_deployment(found)
            if old == name:
                return Change("default-deployment", endpoint, NO_OP, name)
            if not dry_run:
                found.defaults = {"deployment_name": name}
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(found),
                           f"set default deployment of {endpoint} to {name}", progress)
        return Change("default-deployment", endpoint, UPDATE, f"{old or '(none)'} → {name}")

    def delete_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                          progress: Progress | None = None) -> Change:
        validate_endpoint_name(endpoint)
        with self._errors(f"deleting deployment '{name}' of endpoint '{endpoint}'"):
            dep = self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint)
            if dep is None:
                return Change("deployment", name, NO_OP, "does not exist")
            if not dry_run:
                self._wait(self.ml_client.batch_deployments.begin_delete(name, endpoint),
                           f"delete deployment {name}", progress)
        return Change("deployment", name, DELETE, f"model {_model_ref(dep.model)}")

    def tag_deployment(self, endpoint: str, name: str, tags: dict, *,
                       progress: Progress | None = None) -> None:
        """Tags of a deployment change with a PUT of the deployment as it is (what
        `az ml batch-deployment update --set tags.x=y` does)."""
        with self._errors(f"tagging deployment '{name}' of endpoint '{endpoint}'"):
            dep = self.ml_client.batch_deployments.get(name, endpoint)
            dep.tags = {**dict(dep.tags or {}), **{str(k): str(v) for k, v in tags.items()}}
            self._wait(self.ml_client.batch_deployments.begin_create_or_update(
                dep, skip_script_validation=True), f"record the smoke test on {name}", progress)

    # ------------------------------------------------------------------ invoke and jobs

    def invoke(self, endpoint: str, input_path: str, *, deployment: str | None = None,
               output_dir: Path | None = None, wait: bool = True,
               progress: Progress | None = None,
               overrides: JobOverrides | None = None) -> JobSummary:
        validate_endpoint_name(endpoint)
        from azure.ai.ml import Input
        from azure.ai.ml.constants import AssetTypes

        with self._errors(f"reading the input '{input_path}'"):
            remote, is_folder = self._remote_input(input_path, progress)
        input_ = Input(type=AssetTypes.URI_FOLDER if is_folder else AssetTypes.URI_FILE, path=remote)
        with self._errors(f"invoking endpoint '{endpoint}'"):
            job = self.ml_client.batch_endpoints.invoke(endpoint_name=endpoint,
                                                        deployment_name=deployment, input=input_,
                                                        **_invoke_options(overrides))
        if progress:
            progress(f"job {job.name}: {_status(job.status) or 'Queued'}")
        summary = JobSummary(name=job.name, status=STATUS.get(_status(job.status), "Queued"),
                             endpoint=endpoint, deployment=deployment or "", input=remote)
        if not wait:
            return summary
        summary = self._wait_for_job(job.name, summary, progress)
        if summary.status == "Completed":
            self._download_predictions(summary, Path(output_dir or Path("outputs") / summary.name),
                                       progress)
        return summary

    def _remote_input(self, input_path: str, progress: Progress | None) -> tuple[str, bool]:
        """An azureml:// or http(s) path passes through; a registered data asset becomes
        its asset id; wasbs:// and abfss:// become their https:// URL (which the SDK passes
        through; it would look a wasbs:// path up as an asset name); a local file or folder
        is uploaded to the datastore under `inputs/<digest>/` first."""
        if re.match(r"^(azureml|https?)://", input_path):
            return input_path, input_path.endswith("/")
        if input_path.startswith("azureml:"):
            return self._data_asset(input_path)
        if re.match(r"^(wasbs|abfss)://", input_path):
            return storage_https_url(input_path), input_path.endswith("/")
        local = Path(input_path)
        if not local.exists():
            raise ConfigError(f"Input '{input_path}' does not exist.",
                              "Pass a local .csv file or folder, or an azureml:// or https:// path.")
        import hashlib

        files = [local] if local.is_file() else sorted(p for p in local.iterdir() if p.is_file())
        if not files:
            raise ConfigError(f"Input folder '{input_path}' has no files.", "Put .csv files in it.")
        digest = hashlib.sha256()
        for file in files:
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        prefix = f"inputs/{digest.hexdigest()[:16]}"
        for file in files:
            if progress:
                progress(f"uploading {file.name} to {self.settings.datastore_name}/{prefix}/")
            self.datastore.upload_file(file, f"{prefix}/{file.name}")
        if local.is_file():
            return self.settings.datastore_uri(f"{prefix}/{local.name}"), False
        return self.settings.datastore_uri(prefix) + "/", True

    def _data_asset(self, ref: str) -> tuple[str, bool]:
        """azureml:<name>:<version> or azureml:<name>@latest → (asset id, is a folder), as
        `az ml batch-endpoint invoke --input` resolves it."""
        match = re.fullmatch(r"azureml:([A-Za-z0-9_.-]+)(?::([A-Za-z0-9_.-]+)|@([A-Za-z0-9_.-]+))",
                             ref)
        if not match:
            raise ConfigError(f"Input '{ref}' is not a data asset reference.",
                              "Use azureml:<name>:<version> or azureml:<name>@latest.")
        name, version, label = match.groups()
        try:
            data = (self.ml_client.data.get(name, version=version) if version
                    else self.ml_client.data.get(name, label=label))
        except Exception as exc:  # noqa: BLE001 - a missing asset says how to find one
            from azure.core.exceptions import ResourceNotFoundError

            if isinstance(exc, ResourceNotFoundError) or "does not exist" in str(exc):
                raise AzureNotFound(f"Data asset '{ref.removeprefix('azureml:')}' is not "
                                    f"registered in workspace '{self.settings.aml_workspace}'.",
                                    "List them with `az ml data list`.") from exc
            raise
        kind = str(getattr(data, "type", "") or "")
        if kind not in ("uri_file", "uri_folder"):
            raise ConfigError(f"Data asset '{ref}' is of type '{kind}'; a model deployment "
                              "scores uri_file or uri_folder assets.",
                              "Register the data as uri_file or uri_folder.")
        return data.id, kind == "uri_folder"

    def _wait_for_job(self, name: str, summary: JobSummary, progress: Progress | None) -> JobSummary:
        last = None
        while True:
            with self._errors(f"reading job '{name}'"):
                job = self.ml_client.jobs.get(name)
            status = _status(job.status)
            if status != last and progress:
                progress(f"job {name}: {status}")
            last = status
            if status in TERMINAL:
                break
            self._sleep(self.poll_seconds)
        merged = self._summary(job)
        merged.endpoint = merged.endpoint or summary.endpoint
        merged.deployment = merged.deployment or summary.deployment
        merged.input = merged.input or summary.input
        return merged

    def download_output(self, job: JobSummary, output_dir: Path,
                        progress: Progress | None = None) -> Path:
        self._download_predictions(job, Path(output_dir), progress)
        return Path(job.output_path)

    def _download_predictions(self, summary: JobSummary, output_dir: Path,
                              progress: Progress | None) -> None:
        with self._errors(f"downloading the predictions of job '{summary.name}'"):
            children = list(self.ml_client.jobs.list(parent_job_name=summary.name))
            if not children:
                raise AzureError(f"Job '{summary.name}' completed without a scoring step.",
                                 f"Inspect it with `az ml job show -n {summary.name}`.")
            child = children[0].name
            if progress:
                progress(f"downloading output '{SCORE_OUTPUT}' of {child}")
            output_dir.mkdir(parents=True, exist_ok=True)
            for stale in (output_dir / SCORE_FILE).glob("*") if (output_dir / SCORE_FILE).is_dir() else []:
                if stale.is_file():  # a previous job's predictions must not pass for this one's
                    stale.unlink()
            self.ml_client.jobs.download(name=child, output_name=SCORE_OUTPUT,
                                         download_path=str(output_dir))
        predictions = output_dir / SCORE_FILE / "predictions.csv"
        if not predictions.is_file():
            found = sorted((output_dir / SCORE_FILE).glob("*")) if (output_dir / SCORE_FILE).is_dir() else []
            if len(found) == 1 and found[0].is_file():
                predictions = found[0]  # a custom output_file_name
            else:
                raise AzureError(f"Job '{summary.name}' has no predictions file in its "
                                 f"'{SCORE_OUTPUT}' output.",
                                 f"Look at its logs: `az ml job download -n {child} --all`.")
        summary.output_path = str(predictions)
        with predictions.open("rb") as handle:
            summary.rows_scored = sum(1 for line in handle if line.strip())

    def get_job(self, name: str) -> JobSummary:
        with self._errors(f"reading job '{name}'"):
            return self._summary(self.ml_client.jobs.get(name))

    def list_jobs(self, endpoint: str, limit: int = 10) -> list[JobSummary]:
        validate_endpoint_name(endpoint)
        with self._errors(f"listing the jobs of endpoint '{endpoint}'"):
            jobs = list(self.ml_client.batch_endpoints.list_jobs(endpoint_name=endpoint))
            summaries = []
            for job in jobs[: max(limit, 0)]:
                detail = self._get_or_none(self.ml_client.jobs.get, job.name)
                summary = self._summary(detail) if detail is not None else JobSummary(
                    name=job.name, status=STATUS.get(_status(job.status), "Queued"),
                    endpoint=endpoint, deployment="", input="")
                summary.endpoint = summary.endpoint or endpoint
                summaries.append(summary)
        return sorted(summaries, key=lambda s: s.created, reverse=True)

    def _summary(self, job) -> JobSummary:
        tags = dict(getattr(job, "tags", None) or {})
        props = dict(getattr(job, "properties", None) or {})
        created = getattr(getattr(job, "creation_context", None), "created_at", None)
        inputs = getattr(job, "inputs", None) or {}
        input_path = ""
        for value in inputs.values() if isinstance(inputs, dict) else []:
            input_path = getattr(value, "path", None) or str(value)
            break
        status = STATUS.get(_status(job.status), "Queued")
        return JobSummary(
            name=job.name, status=status,
            endpoint=_first(props, tags, "azureml.endpointName", "endpointName", "azureml.endpoint_name"),
            deployment=_first(props, tags, "azureml.deploymentName", "deploymentName",
                              "azureml.deployment_name"),
            input=input_path,
            created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
            finished=_first(props, tags, "EndTimeUtc", "endTimeUtc"),
            error=_job_error(job) if status == "Failed" else "",
            logs_path=f"azureml://jobs/{job.name}/outputs/artifacts/paths/logs/user/",
            experiment=str(getattr(job, "experiment_name", "") or ""),
        )

    # ------------------------------------------------------------------ status and teardown

    def describe(self, endpoint: str) -> dict:
        validate_endpoint_name(endpoint)
        with self._errors(f"reading endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            result: dict[str, Any] = {
                "backend": self.name,
                "workspace": self.settings.aml_workspace,
                "resource_group": self.settings.resource_group,
                "endpoint": None, "deployments": [], "models": [],
            }
            if found is None:
                return result
            result["endpoint"] = {
                "name": found.name, "scoring_uri": found.scoring_uri,
                "default_deployment": _default_deployment(found),
                "provisioning_state": _status(found.provisioning_state),
            }
            names = set()
            for dep in self.ml_client.batch_deployments.list(endpoint_name=endpoint):
                state = _deployment_state(dep)
                result["deployments"].append({"name": dep.name, **state,
                                              "provisioning_state": _status(dep.provisioning_state)})
                names.add(state["model"].split(":")[0])
            for model_name in sorted(n for n in names if n):
                for model in self._get_or_none(lambda: list(self.ml_client.models.list(name=model_name))) or []:
                    result["models"].append({"name": model.name, "version": model.version,
                                             "tags": dict(model.tags or {})})
            return result

    def teardown(self, endpoint: str, compute: str, *, dry_run: bool = False) -> list[Change]:
        validate_endpoint_name(endpoint)
        changes: list[Change] = []
        with self._errors(f"deleting endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            if found is not None:
                default = _default_deployment(found)
                deployments = list(self.ml_client.batch_deployments.list(endpoint_name=endpoint))
                # The default deployment cannot be deleted on its own; it goes with the endpoint.
                for dep in sorted(deployments, key=lambda d: d.name == default):
                    if dep.name != default and not dry_run:
                        self._wait(self.ml_client.batch_deployments.begin_delete(dep.name, endpoint),
                                   f"delete deployment {dep.name}", None)
                    changes.append(Change("deployment", dep.name, DELETE,
                                          "with the endpoint" if dep.name == default else ""))
                if not dry_run:
                    self._wait(self.ml_client.batch_endpoints.begin_delete(endpoint),
                               f"delete endpoint {endpoint}", None)
                changes.append(Change("endpoint", endpoint, DELETE))
            else:
                changes.append(Change("endpoint", endpoint, NO_OP, "does not exist"))
        with self._errors(f"deleting compute '{compute}'"):
            if self._get_or_none(self.ml_client.compute.get, compute) is not None:
                if not dry_run:
                    self._wait(self.ml_client.compute.begin_delete(compute),
                               f"delete compute {compute}", None)
                changes.append(Change("compute", compute, DELETE))
            else:
                changes.append(Change("compute", compute, NO_OP, "does not exist"))
        return changes


# ---------------------------------------------------------------------- helpers


def _invoke_options(overrides: JobOverrides | None) -> dict:
    """Job overrides as `batch_endpoints.invoke` takes them: the settings as
    params_override entries of its BatchJobSchema (the keys `az ml batch-endpoint invoke`
    uses: mini_batch_size, compute.instance_count, ...), the output location as the
    `score` output (uri_file), job_name and experiment_name as keywords."""
    if overrides is None:
        return {}
    from azure.ai.ml import Output
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.constants._endpoint import EndpointYamlFields

    keys = {"mini_batch_size": EndpointYamlFields.MINI_BATCH_SIZE,
            "instance_count": EndpointYamlFields.BATCH_JOB_INSTANCE_COUNT,
            "max_retries": "retry_settings.max_retries", "error_threshold": "error_threshold"}
    params = [{key: getattr(overrides, field)} for field, key in keys.items()
              if getattr(overrides, field) is not None]
    options: dict = {"params_override": params} if params else {}
    if overrides.output_path:
        options["outputs"] = {SCORE_OUTPUT: Output(type=AssetTypes.URI_FILE,
                                                   path=overrides.output_path)}
    if overrides.job_name:
        options["job_name"] = overrides.job_name
    if overrides.experiment_name:
        options["experiment_name"] = overrides.experiment_name
    return options


def storage_https_url(url: str) -> str:
    """wasbs://<container>@<account>.blob.core.windows.net/<path> (or abfss:// with
    .dfs.) → https://<account>.<host>/<container>/<path>, the same blob."""
    match = re.fullmatch(r"(wasbs|abfss)://([^@/]+)@([^/]+)(/.*)?", url)
    if not match:
        raise ConfigError(f"Input '{url}' is not a storage URL.",
                          "Use wasbs://<container>@<account>.blob.core.windows.net/<path> or "
                          "abfss://<filesystem>@<account>.dfs.core.windows.net/<path>.")
    _, container, host, path = match.groups()
    return f"https://{host}/{container}{path or '/'}"


def _yaml_source(spec) -> io.StringIO:
    """The spec's data (with overrides) as a YAML stream for `azure.ai.ml.load_*`."""
    return io.StringIO(yaml.safe_dump(spec.data, sort_keys=False))


def _registered(model) -> RegisteredModel:
    return RegisteredModel(name=model.name, version=str(model.version), tags=dict(model.tags or {}))


def _failed(resource) -> str:
    """A detail when the resource's last provisioning failed (then it is applied again)."""
    state = _status(getattr(resource, "provisioning_state", None))
    return f"last provisioning {state.lower()}, applying again" if state.lower() in ("failed", "canceled") else ""


def _diff(have: dict, want: dict) -> str:
    return ", ".join(f"{k}: {have.get(k)} → {want[k]}" for k in want if have.get(k) != want[k])


def _compute_state(compute) -> dict:
    return {
        "size": str(compute.size or "").lower(),
        "min_instances": int(compute.min_instances or 0),
        "max_instances": int(compute.max_instances or 0),
        "idle_time_before_scale_down": int(compute.idle_time_before_scale_down or 0),
        "tier": str(compute.tier or "dedicated").lower().replace("_", ""),
        "identities": sorted(str(i.resource_id).lower() for i in
                             getattr(getattr(compute, "identity", None), "user_assigned_identities",
                                     None) or []),
    }


def _endpoint_state(endpoint) -> dict:
    return {"description": endpoint.description or "", "auth_mode": str(endpoint.auth_mode or "aad_token").lower()}


def _default_deployment(endpoint) -> str:
    defaults = getattr(endpoint, "defaults", None)
    if defaults is None:
        return ""
    if isinstance(defaults, dict):
        return defaults.get("deployment_name") or ""
    return getattr(defaults, "deployment_name", None) or ""


def _arm_name(value) -> str:
    """'azureml:cpu-cluster', '/subscriptions/.../computes/cpu-cluster' → 'cpu-cluster'."""
    text = str(getattr(value, "id", None) or value or "")
    return text.removeprefix("azureml:").rstrip("/").split("/")[-1]


def _model_ref(value) -> str:
    """A model reference in any form → 'name:version'."""
    text = str(getattr(value, "id", None) or value or "")
    match = re.search(r"/models/([^/]+)/versions/([^/]+)$", text)
    if match:
        return f"{match.group(1)}:{match.group(2)}"
    return text.removeprefix("azureml:")


def _deployment_state(dep) -> dict:
    settings = getattr(dep, "settings", None)

    def setting(key):
        value = getattr(settings, key, None) if settings is not None else None
        return value if value is not None else getattr(dep, key, None)

    retry = setting("retry_settings")
    resources = getattr(dep, "resources", None)
    instances = (resources.get("instance_count") if isinstance(resources, dict)
                 else getattr(resources, "instance_count", None))
    state = {
        "model": _model_ref(dep.model),
        "compute": _arm_name(dep.compute),
        "instance_count": int(instances or setting("instance_count") or 1),
        "max_retries": getattr(retry, "max_retries", None),
        "retry_timeout": getattr(retry, "timeout", None),
    }
    for key in DEPLOYMENT_SETTINGS:
        value = setting(key)
        if key in ("output_action", "logging_level") and value:  # AppendRow / append_row
            value = str(getattr(value, "value", value)).lower().replace("_", "")
        state[key] = value
    return state


def _first(*mappings_and_keys) -> str:
    mappings = [m for m in mappings_and_keys if isinstance(m, dict)]
    keys = [k for k in mappings_and_keys if isinstance(k, str)]
    for key in keys:
        for mapping in mappings:
            if mapping.get(key):
                return str(mapping[key])
    return ""


def _job_error(job) -> str:
    error = getattr(job, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    return (message or f"Job {job.name} failed; see logs/user/error.txt "
            f"(`az ml job download -n {job.name} --all`).").splitlines()[0]


def _service_message(exc: Exception) -> tuple[str, str]:
    """(error code, first line of the service message) of an azure-core error."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "error_code", None) or ""
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if first.startswith("(") and ")" in first:  # "(Code) message" from azure-core
        first = first.split(")", 1)[1].strip() or first
    return str(code), first


def translate_error(exc: Exception, what: str, settings: Settings) -> ProjectError | None:
    """One actionable line for an Azure failure; None when `exc` is not from Azure."""
    from azure.core.exceptions import (AzureError as CoreAzureError, ClientAuthenticationError,
                                       HttpResponseError, ResourceNotFoundError,
                                       ServiceRequestError)

    ws = f"workspace '{settings.aml_workspace}' (resource group '{settings.resource_group}')"
    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover
        CredentialUnavailableError = ()  # type: ignore

    if isinstance(exc, CredentialUnavailableError) or (
            isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) is None):
        return AzureAuthError(f"No Azure sign-in while {what}.",
                              "Run `az login` (or set up a managed identity) and try again.")
    text = str(exc)
    code, first = _service_message(exc)
    status = getattr(exc, "status_code", None)
    if code in ("AuthorizationFailed", "LinkedAuthorizationFailed") or status == 403:
        return AzureAuthError(
            f"Access denied while {what}: {first}",
            f"Your identity needs the 'AzureML Data Scientist' (or Contributor) role on {ws}; "
            "ask an owner to assign it, then `az login` again.")
    if isinstance(exc, ClientAuthenticationError) or status == 401:
        return AzureAuthError(f"Azure rejected the sign-in while {what}: {first}",
                              "Run `az login` again (the token may have expired or be for another tenant).")
    if "quota" in text.lower():
        return AzureQuotaError(
            f"Not enough core quota while {what}: {first}",
            "Lower max_instances or pick a smaller size in deployer/specs/compute.yml, or request "
            "a quota increase for that VM family in the workspace's region.")
    if "no valid deployments to route to" in text.lower():
        return AzureError(
            f"The endpoint has no default deployment ({what}).",
            "Run `python -m deployer register-and-deploy` (it sets the default), or pass "
            "--deployment, or `az ml batch-endpoint update --set defaults.deployment_name=<name>`.")
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return AzureNotFound(f"Not found while {what}: {first}",
                             f"Check the names and {ws} in .env; `python -m deployer "
                             "register-and-deploy` creates the cluster, endpoint and deployment.")
    if isinstance(exc, ServiceRequestError):
        return AzureError(f"Azure is not reachable while {what}: {first}",
                          "Check your network or proxy settings and try again.")
    if isinstance(exc, HttpResponseError):
        label = f" ({code})" if code else ""
        return AzureError(f"Azure ML refused{label} while {what}: {first}",
                          "Fix the spec in deployer/specs/ or the settings in .env and run again.")
    if isinstance(exc, CoreAzureError):
        return AzureError(f"Azure call failed while {what}: {first}")
    try:
        from azure.ai.ml.exceptions import MlException
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, MlException):
        return AzureError(f"Azure ML client error while {what}: {first}",
                          "Fix the spec in deployer/specs/ or the input and run again.")
    return None
