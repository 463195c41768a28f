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
from typing import Callable

import yaml

from deployer import plan
from deployer.azureml_rules import (DEPLOYMENT_DEFAULTS, validate_deployment_name,
                                    validate_deployment_settings, validate_endpoint_name)
from deployer.backends.base import (DEFAULT_TIMEOUT_SECONDS, Backend, JobProgress, Progress,
                                    job_timeout, minutes, newest, tell_job)
from deployer.entities import (DEFAULT_OUTPUT_FILE, NO_OP, Change, ComputeStatus, DefaultHistory,
                               Deployment, DeploymentStatus, EndpointStatus, history_tags,
                               with_history,
                               JobOverrides, JobSummary, JobUpdate, ModelSource, RegisteredModel,
                               TargetStatus, job_output_dir, predictions_target)
from workspace.azure_errors import (AzureAuthError, AzureError, AzureHints, AzureNotFound,  # noqa: F401
                                    AzureRefused, AzureTimeout, translate)
from workspace.errors import ConfigError, ProjectError
from workspace.settings import Settings

CONTENT_TAG = "content_sha256"
# azure-ai-ml's RunHistoryConstants.TERMINAL_STATUSES: a Paused or NotResponding job makes no
# progress on its own, so waiting on it ends.
TERMINAL = {"Completed", "Failed", "Canceled", "NotResponding", "Paused"}
STATUS = {  # REST JobStatus (every value) → the five the deployer reports
    "NotStarted": "Queued", "Queued": "Queued", "Preparing": "Queued", "Provisioning": "Queued",
    "Starting": "Running", "Running": "Running", "Finalizing": "Running",
    "CancelRequested": "Running", "Unknown": "Running", "Completed": "Completed",
    "Failed": "Failed", "NotResponding": "Failed", "Paused": "Failed", "Canceled": "Canceled",
}
WAITING_ON = {  # what a job in each non-final state is waiting on (shown while waiting)
    "NotStarted": "not started by the service yet",
    "Queued": "queued for nodes of the compute cluster (core quota, max_instances, other jobs)",
    "Provisioning": "the cluster is allocating nodes (a new node takes a few minutes)",
    "Preparing": "preparing the nodes (image pull, environment)",
    "Starting": "starting on the nodes",
    "Running": "scoring",
    "Finalizing": "writing outputs",
    "CancelRequested": "cancel requested; waiting for the service to stop it",
    "Unknown": "the service reports no known state; waiting for one",
}
STOPPED = {  # terminal states that are neither success nor a job error
    "Paused": "Azure ML paused job {name}; it makes no progress until resumed in Azure ML studio",
    "NotResponding": "Job {name} is not responding (Azure ML lost contact with it)",
}


def _status(value) -> str:
    """'Running' from a str or an azure-ai-ml JobStatus enum."""
    return str(getattr(value, "value", value) or "")


SCORE_OUTPUT = "score"
SCORE_FILE = Path("named-outputs") / SCORE_OUTPUT
# azureml:<name>:<version> or azureml:<name>@<label> (e.g. @latest), the SDK's data references
DATA_ASSET = re.compile(r"^azureml:(?P<name>[A-Za-z0-9_.-]+)(?::(?P<version>[A-Za-z0-9_.-]+)"
                        r"|@(?P<label>[A-Za-z0-9_.-]+))$")
# wasbs://<container>@<account>.blob.<suffix>/<path>, abfss://<fs>@<account>.dfs.<suffix>/<path>
STORAGE_URL = re.compile(r"^(?:wasbs?|abfss?)://([^@/]+)@([^./]+)\.((?:blob|dfs)\.[^/]+)/(.*)$")


class AzureBackend(Backend):
    name = "azure"

    def __init__(self, settings: Settings, *, credential=None, client_kwargs: dict | None = None,
                 ml_client=None, datastore=None, poll_seconds: float = 15.0,
                 sleep: Callable[[float], None] = time.sleep,
                 timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        """`credential`, `client_kwargs` (e.g. `transport=`), `ml_client` and `datastore` are
        injectable; by default `DefaultAzureCredential` and the workspace from settings.
        `timeout_seconds` bounds every wait (a job, a long-running operation)."""
        self.settings = settings
        self._credential = credential
        self._client_kwargs = dict(client_kwargs or {})
        self._ml_client = ml_client
        self._datastore = datastore
        self.poll_seconds = poll_seconds
        self._sleep = sleep
        self.timeout_seconds = timeout_seconds

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
            if elapsed >= self.timeout_seconds and not poller.done():
                raise AzureTimeout(
                    f"{what}: still in progress after {minutes(self.timeout_seconds)}.",
                    "It goes on in Azure; run the command again later (it picks up the "
                    "resource's state), or pass a longer --timeout.")
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
                        plan.model_change(source.name, existing=str(existing.version)))
            path = self.settings.datastore_uri(source.datastore_path)
            if dry_run:
                return None, plan.model_change(source.name, source=path)
            model = self.desired_model(source, spec)
            created = self.ml_client.models.create_or_update(model)
            return (_registered(created),
                    plan.model_change(source.name, created=str(created.version), source=path))

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
            if existing is not None:
                _check_replaceable(existing, desired)
            change = plan.compute_change(desired.name, _compute_state(existing),
                                         _compute_state(desired), stale=_failed(existing))
            if not dry_run and change.action != NO_OP:
                self._wait(self.ml_client.compute.begin_create_or_update(desired),
                           f"{change.action} compute {desired.name}", progress)
            return change

    # ------------------------------------------------------------------ endpoint

    def desired_endpoint(self, spec):
        from azure.ai.ml import load_batch_endpoint

        validate_endpoint_name(spec.name, str(spec.path))
        return load_batch_endpoint(_yaml_source(spec))

    def ensure_endpoint(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        desired = self.desired_endpoint(spec)
        with self._errors(f"creating endpoint '{desired.name}'"):
            existing = self._get_or_none(self.ml_client.batch_endpoints.get, desired.name)
            change = plan.endpoint_change(desired.name, _endpoint_state(existing),
                                          _endpoint_state(desired), stale=_failed(existing))
            if existing is not None:  # keep the default deployment and the history of defaults
                desired.defaults = existing.defaults
                desired.tags = {**history_tags(existing.tags), **dict(desired.tags or {})}
            if not dry_run and change.action != NO_OP:
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(desired),
                           f"{change.action} endpoint {desired.name}", progress)
            return change

    # ------------------------------------------------------------------ deployment

    def desired_deployment(self, spec, model: RegisteredModel | None):
        from azure.ai.ml.entities._load_functions import load_model_batch_deployment

        overrides = {}
        if model is not None:
            overrides["model"] = f"azureml:{model.name}:{model.version}"
        validate_endpoint_name(spec.data.get("endpoint_name", ""), str(spec.path))
        validate_deployment_name(spec.name, str(spec.path))
        validate_deployment_settings(spec.data, str(spec.path))
        return load_model_batch_deployment(_yaml_source(spec),
                                           params_override=[overrides] if overrides else None)

    def ensure_deployment(self, spec, model: RegisteredModel | None, *, dry_run: bool = False,
                          progress: Progress | None = None, set_default: bool = True) -> Change:
        desired = self.desired_deployment(spec, model)
        endpoint_name, name = desired.endpoint_name, desired.name
        with self._errors(f"creating deployment '{name}' of endpoint '{endpoint_name}'"):
            endpoint = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint_name)
            existing = None
            if endpoint is not None:
                existing = self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint_name)
            have, want, stale = _deployment_state(existing), _deployment_state(desired), _failed(existing)
            is_default = endpoint is not None and _default_deployment(endpoint) == name
            change = plan.deployment_change(name, have, want, is_default=is_default,
                                            set_default=set_default, stale=stale)
            if dry_run:
                return change
            if plan.needs_write(have, want, stale):
                if existing is not None:  # keep the smoke test's result
                    desired.tags = {**dict(existing.tags or {}), **dict(desired.tags or {})}
                self._wait(self.ml_client.batch_deployments.begin_create_or_update(
                    desired, skip_script_validation=True),
                    f"{change.action} deployment {name}", progress)
            if set_default and not is_default:
                endpoint = self.ml_client.batch_endpoints.get(endpoint_name)
                endpoint.defaults = {"deployment_name": name}
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(endpoint),
                           f"set default deployment of {endpoint_name} to {name}", progress)
            return change

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        validate_endpoint_name(endpoint)
        with self._errors(f"listing the deployments of endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            return [] if found is None else list(self._deployment_statuses(found))

    def default_history(self, endpoint: str) -> DefaultHistory:
        validate_endpoint_name(endpoint)
        with self._errors(f"reading endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
        return DefaultHistory.from_tags(None if found is None else found.tags)

    def set_default_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                               progress: Progress | None = None,
                               history: DefaultHistory | None = None) -> Change:
        """One PUT of the endpoint sets the default and its history of defaults (tags)."""
        validate_endpoint_name(endpoint)
        with self._errors(f"setting the default deployment of endpoint '{endpoint}'"):
            found = self.ml_client.batch_endpoints.get(endpoint)
            if self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint) is None:
                raise AzureNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.",
                                    "See `python -m deployer status` for the deployments.")
            change = plan.default_change(endpoint, _default_deployment(found), name)
            tags = dict(found.tags or {}) if history is None else with_history(found.tags, history)
            if not dry_run and (change.action != NO_OP or tags != dict(found.tags or {})):
                found.defaults = {"deployment_name": name}
                found.tags = tags
                self._wait(self.ml_client.batch_endpoints.begin_create_or_update(found),
                           f"set default deployment of {endpoint} to {name}", progress)
        return change

    def delete_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                          progress: Progress | None = None) -> Change:
        validate_endpoint_name(endpoint)
        with self._errors(f"deleting deployment '{name}' of endpoint '{endpoint}'"):
            dep = self._get_or_none(self.ml_client.batch_deployments.get, name, endpoint)
            if dep is None:
                return plan.delete_change("deployment", name, False)
            if not dry_run:
                self._wait(self.ml_client.batch_deployments.begin_delete(name, endpoint),
                           f"delete deployment {name}", progress)
        return plan.delete_change("deployment", name, True, f"model {_model_ref(dep.model)}")

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
               overrides: JobOverrides | None = None,
               job_progress: JobProgress | None = None) -> JobSummary:
        validate_endpoint_name(endpoint)
        from azure.ai.ml import Input
        from azure.ai.ml.constants import AssetTypes

        remote, is_folder = self._remote_input(input_path, progress)
        with self._errors(f"invoking endpoint '{endpoint}'"):
            if is_folder is None:  # a data asset: its registered type says file or folder
                is_folder = self._asset_type(remote) == AssetTypes.URI_FOLDER
            input_ = Input(type=AssetTypes.URI_FOLDER if is_folder else AssetTypes.URI_FILE,
                           path=remote)
            retry_timeout = None
            if overrides is not None and overrides.max_retries is not None:
                retry_timeout = self._retry_timeout(endpoint, deployment)
            _forget_routed_deployment()
            job = self.ml_client.batch_endpoints.invoke(endpoint_name=endpoint,
                                                        deployment_name=deployment, input=input_,
                                                        **_invoke_options(overrides, retry_timeout))
        summary = JobSummary(name=job.name, status=STATUS.get(_status(job.status), "Queued"),
                             endpoint=endpoint, deployment=deployment or "", input=remote)
        tell_job(JobUpdate(job.name, summary.status,
                           f"job {job.name}: {_status(job.status) or 'Queued'}"),
                 progress, job_progress)
        if not wait:
            return summary
        summary = self._wait_for_job(job.name, summary, progress, job_progress)
        if summary.status == "Completed":
            self._download_predictions(summary, job_output_dir(summary.name, output_dir), progress)
        return summary

    def _retry_timeout(self, endpoint: str, deployment: str | None) -> int:
        """The mini-batch timeout (seconds) of the deployment the job goes to (`deployment`,
        else the endpoint's default). A job's retrySettings replace the deployment's as a
        whole: sent without `timeout`, the service takes its default (BatchRetrySettings:
        "Invocation timeout for a mini-batch", 30 s when unset; azure-ai-ml
        entities/_deployment/deployment_settings.py), not the deployment's."""
        if not deployment:
            deployment = _default_deployment(self.ml_client.batch_endpoints.get(endpoint))
        if not deployment:  # the invoke itself then fails with the service's own message
            return DEPLOYMENT_DEFAULTS["timeout"]
        dep = self.ml_client.batch_deployments.get(deployment, endpoint)
        return int(_deployment_state(dep)["timeout"])

    def _remote_input(self, input_path: str, progress: Progress | None) -> tuple[str, bool | None]:
        """(path for the job, is it a folder; None for a data asset). azureml://, http(s)://,
        wasbs:// and abfss:// paths and `azureml:<asset>:<version>` / `azureml:<asset>@latest`
        pass through; a local file or folder is uploaded to the datastore under
        `inputs/<digest>/` first."""
        storage = STORAGE_URL.match(input_path)
        if storage:  # azure-ai-ml's invoke parses only https:// storage URLs: same place, that form
            container, account, service, path = storage.groups()
            return f"https://{account}.{service}/{container}/{path}", input_path.endswith("/")
        if re.match(r"^(azureml|https?)://", input_path):
            return input_path, input_path.endswith("/")
        if DATA_ASSET.match(input_path):
            return input_path, None
        local = Path(input_path)
        if not local.exists():
            raise ConfigError(f"Input '{input_path}' does not exist.",
                              "Pass a local .csv file or folder, an azureml://, https://, wasbs:// "
                              "or abfss:// path, or a data asset azureml:<name>:<version> or "
                              "azureml:<name>@latest.")
        import hashlib

        from deployer.engine.reader import folder_files

        files, refused = ([local], []) if local.is_file() else folder_files(local)
        nested = [] if local.is_file() else sorted(p.name for p in local.iterdir() if p.is_dir())
        if nested:
            raise ConfigError(f"Input folder '{input_path}' has subfolders ({', '.join(nested[:3])}"
                              f"{', ...' if len(nested) > 3 else ''}).",
                              "Azure ML scores only the top-level files of a folder; move the files "
                              "up or invoke each subfolder on its own.")
        if refused:  # what the local engine names as failed files is never uploaded
            raise ConfigError(f"Input folder '{input_path}' has entries that are not files of "
                              "it: " + "; ".join(f"{name}: {why}" for name, why in refused) + ".",
                              "Put regular files in the folder (a copy, not a link out of it), "
                              "or remove those entries.")
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

    def _asset_type(self, reference: str) -> str:
        """'uri_file' or 'uri_folder' of a registered data asset azureml:<name>:<version|@label>."""
        match = DATA_ASSET.match(reference)
        name, version, label = match.group("name"), match.group("version"), match.group("label")
        asset = self.ml_client.data.get(name, version=version, label=label)
        return str(getattr(asset, "type", "") or "")

    def _wait_for_job(self, name: str, summary: JobSummary, progress: Progress | None,
                      job_progress: JobProgress | None) -> JobSummary:
        last, started = None, time.monotonic()
        while True:
            with self._errors(f"reading job '{name}'"):
                job = self.ml_client.jobs.get(name)
            status = _status(job.status)
            if status != last:
                tell_job(_job_update(name, status), progress, job_progress)
            last = status
            if status in TERMINAL:
                break
            if time.monotonic() - started >= self.timeout_seconds:
                raise job_timeout(name, status, WAITING_ON.get(status, "waiting"),
                                  self.timeout_seconds, "in Azure")
            self._sleep(self.poll_seconds)
        merged = self._summary(job)
        merged.endpoint = merged.endpoint or summary.endpoint
        merged.deployment = merged.deployment or summary.deployment
        merged.input = merged.input or summary.input
        return merged

    def wait(self, name: str, *, progress: Progress | None = None,
             job_progress: JobProgress | None = None) -> JobSummary:
        return self._wait_for_job(name, JobSummary(name, "", "", "", ""), progress, job_progress)

    def download_output(self, job: JobSummary, output_dir: Path,
                        progress: Progress | None = None) -> Path:
        return self._download_predictions(job, Path(output_dir), progress)

    def _download_predictions(self, summary: JobSummary, output_dir: Path,
                              progress: Progress | None) -> Path:
        """The scoring child's `score` output, downloaded beside (not into) output_dir,
        then its predictions file moved to predictions_target: the layout of every target."""
        import tempfile

        output_dir.mkdir(parents=True, exist_ok=True)
        with self._errors(f"downloading the predictions of job '{summary.name}'"), \
                tempfile.TemporaryDirectory(prefix=".download-", dir=output_dir) as tmp:
            children = list(self.ml_client.jobs.list(parent_job_name=summary.name))
            if not children:
                raise AzureError(f"Job '{summary.name}' completed without a scoring step.",
                                 f"Inspect it with `az ml job show -n {summary.name}`.")
            child = children[0].name
            if progress:
                progress(f"downloading output '{SCORE_OUTPUT}' of {child}")
            self.ml_client.jobs.download(name=child, output_name=SCORE_OUTPUT, download_path=tmp)
            found = _predictions_in(Path(tmp) / SCORE_FILE)
            if found is None:
                raise AzureError(f"Job '{summary.name}' has no predictions file in its "
                                 f"'{SCORE_OUTPUT}' output.",
                                 f"Look at its logs: `az ml job download -n {child} --all`.")
            target = predictions_target(output_dir, found.name)
            found.replace(target)
        from azure.ai.ml.constants._common import JOB_URI_FORMAT

        summary.output_uri = JOB_URI_FORMAT.format(child, SCORE_OUTPUT, target.name)
        summary.predictions_file = str(target)
        with target.open("rb") as handle:
            summary.rows_scored = sum(1 for line in handle if line.strip())
        return target

    def _job_error(self, name: str, raw_status: str) -> str:
        """Azure's error of a failed job. Job entities carry none: it is in the run's details
        in run history (what `jobs.stream` reads before raising its JobException)."""
        if raw_status in STOPPED:
            return STOPPED[raw_status].format(name=name) + "."
        root = None
        try:
            details = self.ml_client.jobs._runs_operations.get_run_details(name)
            root = getattr(getattr(details, "error", None), "error", None)
        except Exception:  # the error is a help; the job's state is reported either way
            pass
        message = str(getattr(root, "message", None) or "").strip()
        code = getattr(root, "code", None)
        if not message:
            return (f"Job {name} failed; see logs/user/error.txt "
                    f"(`az ml job download -n {name} --all`).")
        return f"{message.splitlines()[0]}" + (f" ({code})" if code else "")

    def get_job(self, name: str) -> JobSummary:
        with self._errors(f"reading job '{name}'"):
            return self._summary(self.ml_client.jobs.get(name))

    def list_jobs(self, endpoint: str, limit: int | None = 10) -> list[JobSummary]:
        """The newest `limit` jobs, each from the listing itself (its name, state, creation
        time, deployment and input): no request per job. The listing has no documented
        order, so every page of it is read (one request per page)."""
        validate_endpoint_name(endpoint)
        with self._errors(f"listing the jobs of endpoint '{endpoint}'"):
            summaries = [_listed_summary(item, endpoint) for item in self._listed_jobs(endpoint)]
        return sorted(summaries, key=lambda s: s.created, reverse=True)[newest(limit)]

    def _listed_jobs(self, endpoint: str):
        """The endpoint's jobs as the service lists them (BatchJobResource, camelCase), page
        by page: the request of azure-ai-ml's `batch_endpoints.list_jobs` (the workspace's
        MFE URL, api-version 2020-09-01-dataplanepreview, `nextLink` paging), which keeps
        only each job's name and status of what the service returns."""
        import json

        from azure.ai.ml._azure_environments import (_get_aml_resource_id_from_metadata,
                                                     _resource_to_scopes)
        from azure.ai.ml._utils._endpoint_utils import validate_response
        from azure.ai.ml._utils.utils import _get_mfe_base_url_from_discovery_service
        from azure.ai.ml.constants._common import AzureMLResourceType
        from azure.ai.ml.constants._endpoint import EndpointInvokeFields

        ops = self.ml_client.batch_endpoints
        pipeline = ops._requests_pipeline
        base = _get_mfe_base_url_from_discovery_service(
            ops._all_operations.all_operations[AzureMLResourceType.WORKSPACE],
            self.settings.aml_workspace, pipeline)
        url = (f"{base.rstrip('/')}/subscriptions/{self.settings.subscription_id}/resourceGroups/"
               f"{self.settings.resource_group}/providers/Microsoft.MachineLearningServices/"
               f"workspaces/{self.settings.aml_workspace}/batchEndpoints/{endpoint}/jobs"
               "?api-version=2020-09-01-dataplanepreview")
        token = ops._credentials.get_token(
            *_resource_to_scopes(_get_aml_resource_id_from_metadata())).token
        headers = {"Accept": "application/json",
                   EndpointInvokeFields.AUTHORIZATION: f"Bearer {token}"}
        while url:
            response = pipeline.get(url, headers=headers)
            validate_response(response)
            body = json.loads(response.text())
            yield from body.get("value") or []
            url = body.get("nextLink")

    def _summary(self, job) -> JobSummary:
        """A job entity (jobs.get) as reported; a failed one with its error."""
        inputs = getattr(job, "inputs", None) or {}
        input_path = ""
        for value in inputs.values() if isinstance(inputs, dict) else []:
            input_path = getattr(value, "path", None) or str(value)
            break
        raw_status = _status(job.status)
        summary = _job_summary(job.name, raw_status, getattr(job, "tags", None),
                               getattr(job, "properties", None),
                               getattr(getattr(job, "creation_context", None), "created_at", None),
                               input_path)
        summary.experiment = str(getattr(job, "experiment_name", "") or "")
        if summary.status == "Failed":
            summary.error = self._job_error(job.name, raw_status)
        return summary

    # ------------------------------------------------------------------ status and teardown

    def describe(self, endpoint: str, *, compute: str | None = None,
                 model: str | None = None) -> TargetStatus:
        validate_endpoint_name(endpoint)
        with self._errors(f"reading endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            deployments = () if found is None else tuple(self._deployment_statuses(found))
            clusters = sorted({compute} | {d.compute for d in deployments} - {None, ""})
            names = sorted({model} | {d.model.split(":")[0] for d in deployments} - {None, ""})
            computes = [self._get_or_none(self.ml_client.compute.get, name) for name in clusters]
            models = [_registered(m) for name in names
                      for m in self._get_or_none(lambda: list(self.ml_client.models.list(name=name))) or []]
        return TargetStatus(
            backend=self.name, endpoint_name=endpoint, workspace=self.settings.aml_workspace,
            resource_group=self.settings.resource_group,
            endpoint=None if found is None else EndpointStatus(
                name=found.name, default_deployment=_default_deployment(found),
                provisioning_state=_status(found.provisioning_state),
                description=found.description or "", scoring_uri=found.scoring_uri,
                tags=dict(found.tags or {})),
            deployments=deployments,
            models=tuple(sorted(models, key=lambda m: (m.name, _version_order(m.version)))),
            computes=tuple(_compute_status(c) for c in computes if c is not None))

    def _deployment_statuses(self, endpoint) -> list[DeploymentStatus]:
        """The endpoint's deployments with their settings, by name."""
        default = _default_deployment(endpoint)
        listed = self.ml_client.batch_deployments.list(endpoint_name=endpoint.name)
        return sorted((_deployment_status(dep, default) for dep in listed), key=lambda d: d.name)

    def teardown(self, endpoint: str, compute: str, *, dry_run: bool = False) -> list[Change]:
        validate_endpoint_name(endpoint)
        with self._errors(f"reading endpoint '{endpoint}'"):
            found = self._get_or_none(self.ml_client.batch_endpoints.get, endpoint)
            default = _default_deployment(found) if found is not None else ""
            deployments = None if found is None else {
                dep.name: dep.name == default
                for dep in self.ml_client.batch_deployments.list(endpoint_name=endpoint)}
            cluster = self._get_or_none(self.ml_client.compute.get, compute)
        changes = plan.teardown_changes(endpoint, deployments, compute, cluster is not None)
        if not dry_run:
            self._delete_all(endpoint, [n for n, is_default in (deployments or {}).items()
                                        if not is_default], found is not None,
                             compute if cluster is not None else "")
        return changes

    def _delete_all(self, endpoint: str, deployments: list[str], has_endpoint: bool,
                    compute: str) -> None:
        """Delete the deployments (the default goes with the endpoint), the endpoint, the cluster."""
        with self._errors(f"deleting endpoint '{endpoint}'"):
            for name in sorted(deployments):
                self._wait(self.ml_client.batch_deployments.begin_delete(name, endpoint),
                           f"delete deployment {name}", None)
            if has_endpoint:
                self._wait(self.ml_client.batch_endpoints.begin_delete(endpoint),
                           f"delete endpoint {endpoint}", None)
        with self._errors(f"deleting compute '{compute}'"):
            if compute:
                self._wait(self.ml_client.compute.begin_delete(compute),
                           f"delete compute {compute}", None)

    # ------------------------------------------------------------------ cancel

    def cancel_job(self, name: str) -> JobSummary:
        """Ask Azure ML to cancel the job and wait for the request to be accepted; returns the
        job's state then (Canceled, or Running while the service stops it)."""
        with self._errors(f"canceling job '{name}'"):
            self._wait(self.ml_client.jobs.begin_cancel(name), f"cancel job {name}", None)
        return self.get_job(name)


# ---------------------------------------------------------------------- helpers


def _forget_routed_deployment() -> None:
    """azure-ai-ml's batch_endpoints.invoke writes the deployment header into its
    class-level default headers (EndpointInvokeFields.DEFAULT_HEADER) in place: without
    this, every later invoke in the process would be routed to that deployment (e.g. a
    smoke test's), not the endpoint's default."""
    from azure.ai.ml.constants._endpoint import EndpointInvokeFields

    EndpointInvokeFields.DEFAULT_HEADER.pop(EndpointInvokeFields.MODEL_DEPLOYMENT, None)


def _invoke_options(overrides: JobOverrides | None, retry_timeout: int | None = None) -> dict:
    """Job overrides as `batch_endpoints.invoke` takes them: the settings as
    params_override entries of its BatchJobSchema (the keys `az ml batch-endpoint invoke`
    uses: mini_batch_size, compute.instance_count, ...), the output location as the
    `score` output (uri_file), job_name and experiment_name as keywords. `max_retries`
    goes with `retry_timeout`, the deployment's mini-batch timeout (see _retry_timeout)."""
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
    if overrides.max_retries is not None and retry_timeout is not None:
        params.append({"retry_settings.timeout": retry_timeout})
    options: dict = {"params_override": params} if params else {}
    if overrides.output_path:
        options["outputs"] = {SCORE_OUTPUT: Output(type=AssetTypes.URI_FILE,
                                                   path=overrides.output_path)}
    if overrides.job_name:
        options["job_name"] = overrides.job_name
    if overrides.experiment_name:
        options["experiment_name"] = overrides.experiment_name
    return options


def _yaml_source(spec) -> io.StringIO:
    """The spec's data (with overrides) as a YAML stream for `azure.ai.ml.load_*`."""
    return io.StringIO(yaml.safe_dump(spec.data, sort_keys=False))


def _registered(model) -> RegisteredModel:
    return RegisteredModel(name=model.name, version=str(model.version), tags=dict(model.tags or {}))


def _failed(resource) -> str:
    """A detail when the resource's last provisioning failed (then it is applied again)."""
    state = _status(getattr(resource, "provisioning_state", None))
    return f"last provisioning {state.lower()}, applying again" if state.lower() in ("failed", "canceled") else ""


def _check_replaceable(existing, desired) -> None:
    """Type, size, tier and network of a cluster are fixed at creation (an update carries
    scale settings only: ClusterUpdateProperties in the SDK's REST models): a compute of that
    name that differs in one of them is a conflict the user resolves, not an update to send."""
    name = desired.name
    fix = "Run `python -m deployer teardown` first, or give the cluster another name in compute.yml."
    kind = str(getattr(existing, "type", "") or "").lower()
    if kind != "amlcompute":
        raise ConfigError(f"Compute '{name}' exists in the workspace as a {kind or 'non-cluster'} "
                          "compute, not an AmlCompute cluster.", fix)
    have, want = _compute_state(existing), _compute_state(desired)
    for key in ("size", "tier"):
        if have[key] != want[key]:
            raise ConfigError(f"Compute '{name}' exists with {key} {getattr(existing, key)}, the spec "
                              f"asks for {getattr(desired, key)}; Azure ML cannot change a "
                              f"cluster's {key}.", fix)
    have_net, want_net = compute_network(existing), compute_network(desired)
    if (have_net[0].lower(), have_net[1]) != (want_net[0].lower(), want_net[1]):
        raise ConfigError(f"Compute '{name}' exists {_network_text(*have_net)}; the settings ask for "
                          f"{_network_text(*want_net)} (AML_COMPUTE_SUBNET_ID in .env); Azure ML "
                          "cannot move a cluster into or out of a subnet.", fix)


def compute_network(compute) -> tuple[str, bool]:
    """(subnet resource id or '', whether nodes get public IPs) of an AmlCompute entity."""
    settings = getattr(compute, "network_settings", None)
    subnet = str(getattr(settings, "subnet", None) or "")
    public = getattr(compute, "enable_node_public_ip", True)
    return subnet, True if public is None else bool(public)


def _network_text(subnet: str, public_ip: bool) -> str:
    where = f"in subnet {subnet}" if subnet else "outside any VNet"
    return where + ("" if public_ip else ", without public node IPs")


def _compute_state(compute) -> dict | None:
    """An AmlCompute entity (from the spec or the service) as the plan compares it."""
    if compute is None:
        return None
    identities = getattr(getattr(compute, "identity", None), "user_assigned_identities", None) or []
    return plan.compute_state(size=compute.size, min_instances=compute.min_instances,
                              max_instances=compute.max_instances, tier=compute.tier,
                              idle_time_before_scale_down=compute.idle_time_before_scale_down,
                              identities=[i.resource_id for i in identities])


def _endpoint_state(endpoint) -> dict | None:
    if endpoint is None:
        return None
    return plan.endpoint_state(description=endpoint.description, auth_mode=endpoint.auth_mode)


def _default_deployment(endpoint) -> str:
    defaults = getattr(endpoint, "defaults", None)
    if defaults is None:
        return ""
    if isinstance(defaults, dict):
        return defaults.get("deployment_name") or ""
    return getattr(defaults, "deployment_name", None) or ""


def _model_ref(value) -> str:
    """A model reference in any form → 'name:version'."""
    text = str(getattr(value, "id", None) or value or "")
    match = re.search(r"/models/([^/]+)/versions/([^/]+)$", text)
    if match:
        return f"{match.group(1)}:{match.group(2)}"
    return text.removeprefix("azureml:")


def _deployment_state(dep) -> dict | None:
    """A batch deployment entity (from the spec or the service) as the plan compares it."""
    if dep is None:
        return None
    settings = getattr(dep, "settings", None)

    def setting(key):
        value = getattr(settings, key, None) if settings is not None else None
        return value if value is not None else getattr(dep, key, None)

    retry = setting("retry_settings")
    resources = getattr(dep, "resources", None)
    instances = (resources.get("instance_count") if isinstance(resources, dict)
                 else getattr(resources, "instance_count", None))
    flat = {key: setting(key) for key in DEPLOYMENT_DEFAULTS}
    flat.update(instance_count=instances or setting("instance_count"),
                max_retries=getattr(retry, "max_retries", None),
                timeout=getattr(retry, "timeout", None))
    return plan.deployment_state(model=_model_ref(dep.model), compute=dep.compute, settings=flat,
                                 environment_variables=setting("environment_variables"))


def _predictions_in(folder: Path) -> Path | None:
    """The predictions file of a downloaded `score` output: predictions.csv, or the one
    file there (a custom output_file_name)."""
    files = sorted(p for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    named = [p for p in files if p.name == DEFAULT_OUTPUT_FILE]
    return named[0] if named else files[0] if len(files) == 1 else None


def _job_update(name: str, raw_status: str) -> JobUpdate:
    """The job's state as polled: the service reports no counts while a job runs, so the
    line says what it waits on instead."""
    waiting = WAITING_ON.get(raw_status)
    return JobUpdate(name, STATUS.get(raw_status, "Queued"),
                     f"job {name}: {raw_status}" + (f" ({waiting})" if waiting else ""))


def _deployment_status(dep, default: str) -> DeploymentStatus:
    state = _deployment_state(dep)  # settings in the spec's words (append_row), defaults filled
    created = getattr(getattr(dep, "creation_context", None), "created_at", None)
    action = state["output_action"]
    return DeploymentStatus(
        name=dep.name, model=state["model"], is_default=dep.name == default,
        created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
        tags=dict(dep.tags or {}), provisioning_state=_status(dep.provisioning_state),
        compute=state["compute"], instance_count=state["instance_count"],
        mini_batch_size=state["mini_batch_size"],
        max_concurrency_per_instance=state["max_concurrency_per_instance"],
        max_retries=state["max_retries"], retry_timeout=state["timeout"],
        error_threshold=state["error_threshold"], output_action=action,
        output_file_name=None if action == "summary_only" else state["output_file_name"],
        logging_level=str(state["logging_level"] or ""))


def _compute_status(compute) -> ComputeStatus:
    state = _compute_state(compute)
    subnet, public_ip = compute_network(compute)
    return ComputeStatus(name=compute.name, size=str(compute.size or ""),
                         min_instances=state["min_instances"], max_instances=state["max_instances"],
                         idle_time_before_scale_down=state["idle_time_before_scale_down"],
                         tier=str(compute.tier or ""),
                         provisioning_state=_status(compute.provisioning_state),
                         subnet=subnet, node_public_ip=public_ip)


def _job_summary(name: str, raw_status: str, tags, properties, created,
                 input_path: str) -> JobSummary:
    """A batch job as reported, from its tags and properties. The service writes the
    endpoint and deployment of a batch-endpoint job as properties `azureml.endpointname`
    and `azureml.deploymentname` (and the deployment as a tag of that name), lower case:
    see the sample output of `batch_endpoints.get`/`list_jobs` and of an invoke in the
    azure.azcollection Ansible collection (ansible-collections/azure,
    plugins/modules/azure_rm_ml_batch_endpoint_info.py, RETURN)."""
    tags = {str(k).lower(): v for k, v in (tags or {}).items()}
    props = {str(k).lower(): v for k, v in (properties or {}).items()}
    if isinstance(created, str) and created:
        from datetime import datetime

        created = datetime.fromisoformat(created)
    return JobSummary(
        name=name, status=STATUS.get(raw_status, "Queued"),
        endpoint=_first(props, tags, "azureml.endpointname"),
        deployment=_first(props, tags, "azureml.deploymentname"),
        input=input_path,
        created=created.isoformat() if hasattr(created, "isoformat") else str(created or ""),
        finished=_first(props, tags, "endtimeutc"),
        logs_path=f"azureml://jobs/{name}/outputs/artifacts/paths/logs/user/")


def _listed_summary(item: dict, endpoint: str) -> JobSummary:
    """One BatchJobResource of the endpoint's job listing: `properties` holds its status,
    inputData, properties and tags; `systemData.createdAt` its creation time (the
    listing's shape in the Ansible sample cited at _job_summary)."""
    props = item.get("properties") or {}
    inputs = [v for v in (props.get("inputData") or {}).values() if isinstance(v, dict)]
    summary = _job_summary(str(item.get("name") or ""), str(props.get("status") or ""),
                           props.get("tags"), props.get("properties"),
                           (item.get("systemData") or {}).get("createdAt"),
                           str(inputs[0].get("uri") or "") if inputs else "")
    summary.endpoint = summary.endpoint or endpoint
    return summary


def _version_order(version: str) -> tuple:
    return (0, int(version), "") if str(version).isdigit() else (1, 0, str(version))


def _first(*mappings_and_keys) -> str:
    mappings = [m for m in mappings_and_keys if isinstance(m, dict)]
    keys = [k for k in mappings_and_keys if isinstance(k, str)]
    for key in keys:
        for mapping in mappings:
            if mapping.get(key):
                return str(mapping[key])
    return ""


def translate_error(exc: Exception, what: str, settings: Settings) -> ProjectError | None:
    """One actionable line for an Azure ML failure; None when `exc` is not from Azure."""
    return translate(exc, what, _hints(settings))


def _hints(settings: Settings) -> AzureHints:
    ws = f"workspace '{settings.aml_workspace}' (resource group '{settings.resource_group}')"
    return AzureHints(
        access=("Your identity needs the roles 'AzureML Data Scientist' + 'AzureML Compute "
                f"Operator' (or 'Contributor') on {ws}, and 'Managed Identity Operator' on the "
                "cluster's user-assigned identity (compute.yml) to create the cluster with it; "
                "`make deploy-infra` grants the three to the deploying user, otherwise ask an "
                "owner to assign them, then `az login` again."),
        not_found=(f"Check the names and {ws} in .env; `python -m deployer register-and-deploy` "
                   "creates the cluster, endpoint and deployment."),
        refused="Fix the spec in deployer/specs/ or the settings in .env and run again.",
        busy=("Wait for it to end (`python -m deployer status` shows provisioning states) and "
              "run the command again."),
        rules=(_quota_rule, _no_default_rule, _client_rule))


def _quota_rule(exc, what, code, first):
    if "quota" in str(exc).lower():
        return AzureQuotaError(
            f"Not enough core quota while {what}: {first}",
            "Lower max_instances or pick a smaller size in deployer/specs/compute.yml, or request "
            "a quota increase for that VM family in the workspace's region.")
    return None


def _no_default_rule(exc, what, code, first):
    if "no valid deployments to route to" in str(exc).lower():
        return AzureNotFound(
            f"The endpoint has no default deployment ({what}).",
            "Run `python -m deployer register-and-deploy` (it sets the default), or pass "
            "--deployment, or `az ml batch-endpoint update --set defaults.deployment_name=<name>`.")
    return None


def _client_rule(exc, what, code, first):
    """azure-ai-ml's own validation, before any request."""
    from azure.ai.ml.exceptions import MlException

    if isinstance(exc, MlException):
        return AzureRefused(f"Azure ML client error while {what}: {first}",
                            "Fix the spec in deployer/specs/ or the input and run again.")
    return None


class AzureQuotaError(AzureError):
    """The subscription's core quota does not allow the cluster."""
