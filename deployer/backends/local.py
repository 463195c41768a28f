"""The embedded local backend: MLflow registry in SQLite, a JSON state file for the
cluster / endpoint / deployments, and the local batch engine (`deployer.engine`) for jobs.

Layout under LOCAL_DIR (default `.local/`):
- `mlflow.db` (tracking + registry), `mlartifacts/` (run artifacts): the training runs,
  imported under their own run ids (workspace/tracking.py), and the registered versions,
  each linked to its run; `make ui` shows them;
- `deployer/state.json`: computes, endpoints (with their default deployment), deployments;
- `deployer/jobs/<job>/`: `job.json`, `logs/` (Azure ML's layout), `outputs/`;
- in the datastore (Azurite): `batch-jobs/<job>/named-outputs/score/predictions.csv` and
  `batch-jobs/<job>/logs/...`.

mlflow is imported only to register a model version (reads go to the SQLite file,
`local_registry`) and by the scoring processes.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from deployer import plan
from deployer.azureml_rules import (DEPLOYMENT_DEFAULTS, validate_deployment_name,
                                    validate_deployment_settings, validate_endpoint_name)
from deployer.backends.base import (DEFAULT_TIMEOUT_SECONDS, Backend, JobProgress, Progress,
                                    job_timeout, newest, tell_job)
from deployer.entities import (NO_OP, Change, ComputeStatus, DefaultHistory, Deployment,
                               DeploymentStatus, EndpointStatus, JobOverrides, JobSummary,
                               with_history,
                               JobUpdate, ModelSource, RegisteredModel, TargetStatus,
                               job_output_dir, predictions_target)
from deployer.backends.local_registry import RegistryReader, RegistryUnreadable, RegistryVersion
from deployer.engine.lifecycle import write_runner_pid
from deployer.engine.records import TERMINAL, now, read_record, write_record
from workspace.cleanups import register_cleanup
from workspace.errors import ConfigError, NotFound, ProjectError
from workspace.names import JOB_NAME
from workspace.settings import REPO_ROOT, Settings
from workspace.tracking import TrackingStore

CONTENT_TAG = "content_sha256"


class LocalError(ProjectError):
    """The local target cannot do what was asked (its state, a job's files)."""


class LocalNotFound(LocalError, NotFound):
    """A local endpoint, deployment, model or job does not exist."""


def compute_state(data: dict) -> dict:
    """compute.yml, or a cluster kept in the state file, as the plan compares it."""
    identity = data.get("identity") or {}
    identities = data.get("identities") or [
        i.get("resource_id") for i in identity.get("user_assigned_identities") or []]
    return plan.compute_state(size=data.get("size"), min_instances=data.get("min_instances"),
                              max_instances=data.get("max_instances"), tier=data.get("tier"),
                              idle_time_before_scale_down=data.get("idle_time_before_scale_down"),
                              identities=identities)


def deployment_state(record: dict) -> dict:
    """A deployment kept in the state file, as the plan compares it."""
    return plan.deployment_state(model=record.get("model", ""), compute=record.get("compute"),
                                 settings=record,
                                 environment_variables=record.get("environment_variables"))


def desired_deployment_state(spec, model: str) -> dict:
    """deployment.yml (checked as Azure ML checks it) with `model`, as the plan compares it."""
    data = spec.data
    settings = validate_deployment_settings(data, str(spec.path))
    environment = (data.get("settings") or {}).get("environment_variables") or data.get(
        "environment_variables")
    return plan.deployment_state(model=model, compute=data.get("compute"), settings=settings,
                                 environment_variables=environment)


class LocalBackend(Backend):
    name = "local"

    def __init__(self, settings: Settings, *, datastore=None, mlflow_client=None,
                 python: str = sys.executable, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS):
        """`datastore` and `mlflow_client` are injectable; by default Azurite from settings
        and an MLflow client on `sqlite:///<LOCAL_DIR>/mlflow.db`. `timeout_seconds`
        bounds the wait for a job."""
        self.settings = settings
        self.root = settings.local_path
        self.state_dir = self.root / "deployer"
        self.jobs_dir = self.state_dir / "jobs"
        self.registry_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts_dir = self.root / "mlartifacts"
        self._datastore = datastore
        self._client = mlflow_client
        self.python = python
        self.timeout_seconds = timeout_seconds

    # ------------------------------------------------------------------ clients

    @property
    def datastore(self):
        if self._datastore is None:
            from workspace.datastore import Datastore

            self._datastore = Datastore.from_settings(self.settings)
        return self._datastore

    @property
    def client(self):
        if self._client is None:
            self.root.mkdir(parents=True, exist_ok=True)
            import logging

            from mlflow import MlflowClient

            for name in ("mlflow", "alembic"):  # no INFO chatter about creating tables
                logging.getLogger(name).setLevel(logging.WARNING)

            self._client = MlflowClient(tracking_uri=self.registry_uri, registry_uri=self.registry_uri)
        return self._client

    # ------------------------------------------------------------------ state file

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"

    def _read_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            state = {}
        except json.JSONDecodeError as exc:
            raise LocalError(f"The local deployer state '{self.state_path}' is corrupt ({exc}).",
                             "Delete it and run `python -m deployer register-and-deploy` again.")
        for key in ("computes", "endpoints", "deployments"):
            state.setdefault(key, {})
        return state

    @contextmanager
    def _state(self, write: bool = True):
        """Read-modify-write the state under an exclusive lock. A read-only use (a dry
        run) takes no lock and creates nothing: the file is only ever replaced whole."""
        if not write:
            yield self._read_state()
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".state.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._read_state()
            yield state
            if write:
                tmp = self.state_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
                tmp.replace(self.state_path)

    # ------------------------------------------------------------------ model

    def _find_version(self, name: str, digest: str):
        found = self._versions(name, (CONTENT_TAG, digest))
        return found[0] if found else None

    def _versions(self, name: str, tag: tuple[str, str] | None = None) -> list[RegistryVersion]:
        """The registered versions of `name` (with tag (key, value) if given), oldest first.
        Read from the registry file without importing MLflow, unless this backend uses
        MLflow already or the file cannot be read that way; no registry yet: none (a dry
        run must not create one)."""
        if self._client is None:
            try:
                return RegistryReader(self.root / "mlflow.db").versions(name, tag)
            except RegistryUnreadable:
                pass
        from mlflow.exceptions import MlflowException

        query = f"name='{name}'" + (f" and tags.{tag[0]}='{tag[1]}'" if tag else "")
        try:
            found = sorted(self.client.search_model_versions(query), key=lambda v: int(v.version))
            return [RegistryVersion(name, str(v.version),
                                    self.client.get_model_version_download_uri(name, v.version),
                                    dict(v.tags)) for v in found]
        except MlflowException:
            return []

    def register_model(self, source: ModelSource, *, dry_run: bool = False,
                       spec=None) -> tuple[RegisteredModel | None, Change]:
        if not source.content_sha256:
            raise ConfigError(f"Model '{source.name}' has no content digest.",
                              "Register from a complete training run (its manifest lists file hashes).")
        existing = self._find_version(source.name, source.content_sha256)
        if existing is not None:
            return (RegisteredModel(source.name, str(existing.version), dict(existing.tags)),
                    plan.model_change(source.name, existing=str(existing.version)))
        uri = self.settings.datastore_uri(source.datastore_path)
        if dry_run:
            return None, plan.model_change(source.name, source=uri)
        if source.run is None:
            raise ConfigError(f"Model '{source.name}' has no published run to register from.",
                              "Register through `python -m deployer register-and-deploy`.")
        # The version's run is the training run itself, imported under its own run id
        # (workspace/tracking.py): the registry links to it, `make ui` shows both.
        tracking = TrackingStore(self.root)
        tracking.import_run(self.datastore, source.run)
        run_id = source.run.run_id
        tags = {str(k): str(v) for k, v in (source.tags or {}).items()}
        client = self.client
        description = source.description or ((spec.data.get("description") if spec else "") or "")
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(source.name, description=description or None)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        artifact = f"{tracking.artifact_uri(run_id)}/model"
        # Only now, with every file in place, does the version become visible.
        version = client.create_model_version(source.name, artifact, run_id=run_id,
                                              tags={**tags, CONTENT_TAG: source.content_sha256},
                                              description=description or None)
        return (RegisteredModel(source.name, str(version.version), {**tags, CONTENT_TAG: source.content_sha256}),
                plan.model_change(source.name, created=str(version.version), source=uri))

    def _resolve_model(self, ref: str) -> tuple[str, str, str]:
        """'azureml:name@latest' | 'azureml:name:3' | 'name:3' → (name, version, local path)."""
        text = str(ref).removeprefix("azureml:")
        if "@" in text:
            name, label = text.split("@", 1)
            version = None if label == "latest" else label
        elif ":" in text:
            name, version = text.split(":", 1)
        else:
            name, version = text, None
        versions = self._versions(name)
        if version is None and not versions:
            raise LocalNotFound(f"Model '{name}' has no registered version.",
                                "Run `python -m deployer register-and-deploy`.")
        wanted = str(version).strip()
        wanted = str(int(wanted)) if wanted.isdigit() else wanted
        found = versions[-1] if version is None else \
            next((v for v in versions if v.version == wanted), None)
        if found is None:
            raise LocalNotFound(f"Model '{name}' version {version} is not registered (versions: "
                                f"{', '.join(v.version for v in versions) or 'none'}).",
                                "Run `python -m deployer register-and-deploy`.")
        return name, found.version, found.path.removeprefix("file://")

    # ------------------------------------------------------------------ compute / endpoint

    def ensure_compute(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        want = compute_state(spec.data)
        with self._state(write=not dry_run) as state:
            have = state["computes"].get(spec.name)
            change = plan.compute_change(spec.name, None if have is None else compute_state(have), want)
            if not dry_run and change.action != NO_OP:
                # Kept as the spec spells them (status shows them); compared normalised.
                spelled = {k: spec.data[k] for k in ("size", "tier") if spec.data.get(k)}
                state["computes"][spec.name] = {**want, **spelled, "updated": now()}
        return change

    def ensure_endpoint(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        validate_endpoint_name(spec.name, str(spec.path))
        want = plan.endpoint_state(description=spec.data.get("description"),
                                   auth_mode=spec.data.get("auth_mode"))
        with self._state(write=not dry_run) as state:
            have = state["endpoints"].get(spec.name)
            change = plan.endpoint_change(spec.name, None if have is None else plan.endpoint_state(
                description=have.get("description"), auth_mode=have.get("auth_mode")), want)
            if not dry_run and change.action != NO_OP:
                state["endpoints"][spec.name] = {**(have or {"default_deployment": "",
                                                              "created": now()}), **want}
        return change

    def ensure_deployment(self, spec, model: RegisteredModel | None, *, dry_run: bool = False,
                          progress: Progress | None = None, set_default: bool = True) -> Change:
        endpoint = spec.data.get("endpoint_name", "")
        validate_endpoint_name(endpoint, str(spec.path))
        validate_deployment_name(spec.name, str(spec.path))
        want = desired_deployment_state(spec, "")  # settings checked before the registry is read
        want["model"], path = self._model_to_deploy(spec, model, dry_run)
        with self._state(write=not dry_run) as state:
            ep = state["endpoints"].get(endpoint)
            if not dry_run:
                self._require_parents(state, spec, endpoint, want["compute"])
            have = state["deployments"].get(endpoint, {}).get(spec.name)
            compared = None if have is None else deployment_state(have)
            is_default = ep is not None and ep.get("default_deployment") == spec.name
            change = plan.deployment_change(spec.name, compared, want, is_default=is_default,
                                            set_default=set_default)
            if not dry_run:
                if plan.needs_write(compared, want):
                    state["deployments"].setdefault(endpoint, {})[spec.name] = {
                        **want, "model_path": path, "updated": now(),
                        "created": (have or {}).get("created") or now(),
                        "tags": dict((have or {}).get("tags") or {})}
                if set_default:
                    ep["default_deployment"] = spec.name
        if not dry_run and plan.needs_write(compared, want) and path:
            _warn_environment(path, progress)
        return change

    def _model_to_deploy(self, spec, model: RegisteredModel | None, dry_run: bool) -> tuple[str, str]:
        """('name:version', local path) of the model a deployment serves; when planning for a
        model not registered yet, the spec's reference (as the Azure target plans it)."""
        if model is None and dry_run:
            return plan.model_reference(spec.data.get("model")), ""
        ref = f"{model.name}:{model.version}" if model is not None else spec.data.get("model", "")
        name, version, path = self._resolve_model(ref)
        return f"{name}:{version}", path

    @staticmethod
    def _require_parents(state: dict, spec, endpoint: str, compute: str) -> None:
        """The endpoint and the cluster a deployment names must exist (as in Azure ML)."""
        if endpoint not in state["endpoints"]:
            raise LocalNotFound(f"Endpoint '{endpoint}' does not exist.",
                                "Create it first (register-and-deploy does, in order).")
        if compute and compute not in state["computes"]:
            raise LocalNotFound(f"Deployment '{spec.name}' uses compute '{compute}', "
                                "which does not exist.",
                                "Fix `compute:` in deployment.yml or create the cluster "
                                "(register-and-deploy does).")

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        return list(_deployment_statuses(self._read_state(), endpoint))

    def default_history(self, endpoint: str) -> DefaultHistory:
        return DefaultHistory.from_tags(
            (self._read_state()["endpoints"].get(endpoint) or {}).get("tags"))

    def set_default_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                               progress: Progress | None = None,
                               history: DefaultHistory | None = None) -> Change:
        with self._state(write=not dry_run) as state:
            ep = state["endpoints"].get(endpoint)
            if ep is None:
                raise LocalNotFound(f"Endpoint '{endpoint}' does not exist.",
                                    "Run `python -m deployer register-and-deploy` first.")
            if name not in state["deployments"].get(endpoint, {}):
                raise LocalNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.",
                                    "See `python -m deployer status` for the deployments.")
            change = plan.default_change(endpoint, ep.get("default_deployment") or "", name)
            if not dry_run:
                ep["default_deployment"] = name
                if history is not None:
                    ep["tags"] = with_history(ep.get("tags"), history)
        return change

    def delete_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                          progress: Progress | None = None) -> Change:
        with self._state(write=not dry_run) as state:
            deployments = state["deployments"].get(endpoint, {})
            if name not in deployments:
                return plan.delete_change("deployment", name, False)
            if (state["endpoints"].get(endpoint) or {}).get("default_deployment") == name:
                raise LocalError(f"Deployment '{name}' is the default of endpoint '{endpoint}'; "
                                 "it cannot be deleted.",
                                 "Make another deployment the default first (rollback --to).")
            model = deployments[name].get("model", "")
            if not dry_run:
                del deployments[name]
        return plan.delete_change("deployment", name, True, f"model {model}")

    def tag_deployment(self, endpoint: str, name: str, tags: dict, *,
                       progress: Progress | None = None) -> None:
        with self._state() as state:
            dep = state["deployments"].get(endpoint, {}).get(name)
            if dep is None:
                raise LocalNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.")
            dep["tags"] = {**(dep.get("tags") or {}), **{str(k): str(v) for k, v in tags.items()}}

    # ------------------------------------------------------------------ invoke and jobs

    def invoke(self, endpoint: str, input_path: str, *, deployment: str | None = None,
               output_dir: Path | None = None, wait: bool = True,
               progress: Progress | None = None,
               overrides: JobOverrides | None = None,
               job_progress: JobProgress | None = None) -> JobSummary:
        overrides = overrides or JobOverrides()
        state = self._read_state()
        ep = state["endpoints"].get(endpoint)
        if ep is None:
            raise LocalNotFound(f"Endpoint '{endpoint}' does not exist.",
                                "Run `python -m deployer register-and-deploy` first.")
        name = deployment or ep.get("default_deployment")
        if not name:
            raise LocalNotFound(f"Endpoint '{endpoint}' has no default deployment: no valid "
                                "deployments to route to.",
                                "Run `python -m deployer register-and-deploy` (it sets the default) "
                                "or pass --deployment.")
        dep = state["deployments"].get(endpoint, {}).get(name)
        if dep is None:
            raise LocalNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.",
                                "See `python -m deployer status` for the deployments.")
        input_uri = self._input_uri(input_path)
        self.settle_dead_jobs()  # a job killed earlier leaves no processes behind
        # The job writes its output to the datastore: fail now, not at the end (the job
        # checks the container itself, while it loads the model).
        _require_azurite(self.settings)
        settings, output_blob = self._job_settings(dep, overrides)
        job_dir = self._new_job_dir(overrides.job_name)
        job_name = job_dir.name
        record = {
            "name": job_name, "status": "Queued", "endpoint": endpoint, "deployment": name,
            "model": dep["model"], "model_path": dep["model_path"], "input": input_uri,
            "created": now(), "settings": settings,
            "experiment": overrides.experiment_name or endpoint,
            "datastore": {"port": int(self.settings.azurite_port), "container": self.settings.container,
                          "name": self.settings.datastore_name},
        }
        if output_blob:
            record["output_blob"] = output_blob
        write_record(job_dir, record)
        self._start_runner(job_dir, dep.get("environment_variables") or {})
        tell_job(JobUpdate(job_name, "Queued", f"job {job_name}: Queued ({name} on {endpoint})"),
                 progress, job_progress)
        if not wait:
            return self._summary(read_record(job_dir), job_dir)
        summary = self.wait(job_name, progress=progress, job_progress=job_progress)
        if summary.output_uri:
            self.download_output(summary, job_output_dir(job_name, output_dir), progress)
        return summary

    def _job_settings(self, dep: dict, overrides: JobOverrides) -> tuple[dict, str]:
        """The deployment's settings with this job's overrides; the output blob of a
        custom output path ('' for the job's own folder)."""
        settings = {k: dep[k] for k in DEPLOYMENT_DEFAULTS if k in dep}
        for key in ("mini_batch_size", "instance_count", "max_retries", "error_threshold"):
            if getattr(overrides, key) is not None:
                settings[key] = getattr(overrides, key)
        if overrides.output_datastore is None:
            return settings, ""
        datastore, path = overrides.output_datastore
        if datastore != self.settings.datastore_name:
            raise ConfigError(f"--output-path names datastore '{datastore}'; the local target "
                              f"has only '{self.settings.datastore_name}'.",
                              f"Use azureml://datastores/{self.settings.datastore_name}/paths/...")
        settings["output_file_name"] = path.rsplit("/", 1)[-1]
        return settings, path

    def _new_job_dir(self, name: str | None) -> Path:
        """The folder of a new job: `name` (refused if a job has it), else batchjob-<uuid>."""
        job_dir = self.jobs_dir / (JOB_NAME.check(name, "--job-name") if name
                                   else f"batchjob-{uuid.uuid4()}")
        try:
            job_dir.mkdir(parents=True)
        except FileExistsError:
            raise ConfigError(f"A job named '{name}' already exists.",
                              "Job names are unique in a workspace; pick another --job-name.")
        # `python -m workspace down` then settles jobs whose runner died (engine/lifecycle.py)
        register_cleanup(self.root, "deployer-jobs", "deployer.engine.lifecycle",
                         str(self.jobs_dir))
        return job_dir

    def _input_uri(self, input_path: str) -> str:
        if input_path.startswith("azureml://"):
            if not re.fullmatch(r"azureml://datastores/[^/]+/paths/.+", input_path):
                raise ConfigError(f"Input '{input_path}' is not a datastore path.",
                                  "Use azureml://datastores/<datastore>/paths/<file or folder>.")
            return input_path
        if input_path.startswith("azureml:"):
            raise ConfigError(f"Input '{input_path}': registered data assets exist only on the "
                              "Azure target.",
                              "Use a local path or azureml://datastores/<datastore>/paths/<path>.")
        if re.match(r"^[a-z]+://", input_path):
            raise ConfigError(f"Input '{input_path}': the local target reads local paths and "
                              "azureml://datastores/... paths only.",
                              "Download the file first, or upload it to the datastore.")
        path = Path(input_path)
        if not path.exists():
            raise ConfigError(f"Input '{input_path}' does not exist.",
                              "Pass a .csv/.parquet file, a folder of them, or an azureml:// path.")
        return str(path.resolve())

    def _start_runner(self, job_dir: Path, environment: dict) -> None:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in environment.items()})
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        with open(job_dir / "runner.log", "ab") as log:
            process = subprocess.Popen([self.python, "-m", "deployer.engine", str(job_dir)],
                                       cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        write_runner_pid(job_dir, process.pid)
        self._children = getattr(self, "_children", []) + [process]

    def settle_dead_jobs(self) -> tuple[list[str], list[str]]:
        """Settle every job whose runner is gone; (settled, still running) job names."""
        from deployer.engine.lifecycle import settle_dead_jobs

        return settle_dead_jobs(self.jobs_dir)

    def cancel_job(self, name: str) -> JobSummary:
        from deployer.engine.lifecycle import cancel

        job_dir = self._job_dir(name)
        for child in getattr(self, "_children", []):
            child.poll()
        return self._summary(cancel(job_dir), job_dir)

    def wait(self, job_name: str, *, progress: Progress | None = None,
             job_progress: JobProgress | None = None, poll: float = 0.1) -> JobSummary:
        """Follow a job until it ends, telling job_progress (else progress) what changes;
        JobTimeout after timeout_seconds (the detached runner goes on)."""
        job_dir = self._job_dir(job_name)
        last = None
        started = time.monotonic()
        while True:
            for child in getattr(self, "_children", []):
                child.poll()  # reap a finished runner so it is not seen as alive
            record = self._fresh_record(job_dir)
            update = job_update(record)
            if update != last:
                tell_job(update, progress, job_progress)
            last = update
            if record["status"] in TERMINAL:
                return self._summary(record, job_dir)
            if time.monotonic() - started >= self.timeout_seconds:
                raise job_timeout(job_name, update.status, _waiting_on(update),
                                  self.timeout_seconds, "in its runner on this machine")
            time.sleep(poll)

    def download_output(self, job: JobSummary, output_dir: Path,
                        progress: Progress | None = None) -> Path:
        summary = job
        record = read_record(self._job_dir(summary.name))
        blob = record.get("output_datastore_path")
        if not blob:
            raise LocalError(f"Job '{summary.name}' has no output file.",
                             f"See its logs in {summary.logs_path}.")
        target = predictions_target(output_dir, Path(blob).name)
        if progress:
            progress(f"downloading {self.settings.datastore_uri(blob)} → {target}")
        if not self._copy_published_output(record, blob, target):
            self.datastore.download_file(blob, target)
        summary.predictions_file = str(target)
        return target

    def _copy_published_output(self, record: dict, blob: str, target: Path) -> bool:
        """The job ran on this machine: the output file it uploaded to the datastore is
        still in the job folder. Move it to the target (a copy across file systems) when
        it has the size of the uploaded blob, rather than read it back over HTTP (for
        millions of rows that is seconds); the datastore keeps the job's copy."""
        local = self._job_dir(record["name"]) / "outputs" / Path(blob).name
        try:
            if not local.is_file() or local.stat().st_size != record.get("output_bytes"):
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            try:
                os.replace(local, partial)
            except OSError:  # another file system
                shutil.copyfile(local, partial)
            partial.replace(target)
            return True
        except Exception:  # noqa: BLE001 - the datastore copy is the reference: download it
            return False

    def _job_dir(self, name: str) -> Path:
        job_dir = self.jobs_dir / JOB_NAME.check(name, "job name")
        if not (job_dir / "job.json").is_file():
            raise LocalNotFound(f"Job '{name}' does not exist on the local target.",
                                "`python -m deployer status` lists recent jobs.")
        return job_dir

    def _fresh_record(self, job_dir: Path) -> dict:
        """The record; a job whose runner died without finishing is settled first (its
        processes stopped, its partial output removed, marked Failed with the reason)."""
        from deployer.engine.lifecycle import settle_if_dead

        return settle_if_dead(job_dir)

    def _summary(self, record: dict, job_dir: Path) -> JobSummary:
        # The runner records the blob only when a completed job has output (not with
        # summary_only): nothing else is ever shown as predictions.
        blob = record.get("output_datastore_path")
        return JobSummary(
            name=record["name"], status=record["status"], endpoint=record.get("endpoint", ""),
            deployment=record.get("deployment", ""), input=record.get("input", ""),
            created=record.get("created", ""), finished=record.get("finished", ""),
            rows_scored=record.get("rows_scored"), files_total=record.get("files_total"),
            files_failed=record.get("files_failed"), error=record.get("error", ""),
            output_uri=self.settings.datastore_uri(blob) if blob and record["status"] == "Completed"
            else "",
            logs_path=str(job_dir / "logs"),
            mini_batches_total=record.get("mini_batches_total"),
            mini_batches_done=record.get("mini_batches_done"),
            duration_seconds=record.get("duration_seconds"),
            failed_files=list(record.get("failed_files") or []),
            prediction_counts=record.get("predictions"),
            experiment=record.get("experiment") or record.get("endpoint", ""),
            model=record.get("model", ""))

    def get_job(self, name: str) -> JobSummary:
        job_dir = self._job_dir(name)
        return self._summary(self._fresh_record(job_dir), job_dir)

    def list_jobs(self, endpoint: str, limit: int | None = 10) -> list[JobSummary]:
        if not self.jobs_dir.is_dir():
            return []
        records = []
        for job_dir in self.jobs_dir.iterdir():
            try:
                record = self._fresh_record(job_dir)
            except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
                continue
            if record.get("endpoint") == endpoint:
                records.append((record, job_dir))
        records.sort(key=lambda r: r[0].get("created", ""), reverse=True)
        return [self._summary(r, d) for r, d in records[newest(limit)]]

    # ------------------------------------------------------------------ status and teardown

    def describe(self, endpoint: str, *, compute: str | None = None,
                 model: str | None = None) -> TargetStatus:
        state = self._read_state()
        ep = state["endpoints"].get(endpoint)
        deployments = tuple(_deployment_statuses(state, endpoint)) if ep is not None else ()
        clusters = sorted(({compute} | {d.compute for d in deployments}) & set(state["computes"]))
        models = {model} | {d.model.split(":")[0] for d in deployments}
        return TargetStatus(
            backend=self.name, endpoint_name=endpoint, registry=self.registry_uri,
            endpoint=None if ep is None else EndpointStatus(
                name=endpoint, default_deployment=ep.get("default_deployment", ""),
                description=ep.get("description", ""), tags=dict(ep.get("tags") or {})),
            deployments=deployments, models=self._model_versions(models - {None, ""}),
            computes=tuple(_compute_status(name, state["computes"][name]) for name in clusters))

    def _model_versions(self, names: set[str]) -> tuple[RegisteredModel, ...]:
        """Every registered version of the named models ((), before the registry exists)."""
        versions = [RegisteredModel(name, v.version, dict(v.tags))
                    for name in sorted(names) for v in self._versions(name)]
        return tuple(sorted(versions, key=lambda m: (m.name, int(m.version))))

    def teardown(self, endpoint: str, compute: str, *, dry_run: bool = False) -> list[Change]:
        with self._state(write=not dry_run) as state:
            ep = state["endpoints"].get(endpoint)
            deployments = None if ep is None else {
                name: name == ep.get("default_deployment")
                for name in state["deployments"].get(endpoint, {})}
            changes = plan.teardown_changes(endpoint, deployments, compute,
                                            compute in state["computes"])
            if not dry_run:
                state["deployments"].pop(endpoint, None)
                state["endpoints"].pop(endpoint, None)
                state["computes"].pop(compute, None)
        return changes


# ---------------------------------------------------------------------- helpers


def _deployment_statuses(state: dict, endpoint: str) -> list[DeploymentStatus]:
    """The endpoint's deployments from the state file, by name."""
    default = (state["endpoints"].get(endpoint) or {}).get("default_deployment", "")
    statuses = []
    for name, dep in sorted(state["deployments"].get(endpoint, {}).items()):
        action = dep.get("output_action", "")
        statuses.append(DeploymentStatus(
            name=name, model=dep.get("model", ""), created=dep.get("created") or dep.get("updated", ""),
            is_default=name == default, tags=dict(dep.get("tags") or {}),
            compute=dep.get("compute", ""), instance_count=dep.get("instance_count"),
            mini_batch_size=dep.get("mini_batch_size"),
            max_concurrency_per_instance=dep.get("max_concurrency_per_instance"),
            max_retries=dep.get("max_retries"), retry_timeout=dep.get("timeout"),
            error_threshold=dep.get("error_threshold"), output_action=action,
            output_file_name=None if action == "summary_only" else dep.get("output_file_name"),
            logging_level=dep.get("logging_level", "")))
    return statuses


def _compute_status(name: str, compute: dict) -> ComputeStatus:
    return ComputeStatus(name=name, size=compute.get("size") or "",
                         min_instances=compute.get("min_instances"),
                         max_instances=compute.get("max_instances"),
                         idle_time_before_scale_down=compute.get("idle_time_before_scale_down"),
                         tier=compute.get("tier") or "")


def _require_azurite(settings) -> None:
    from workspace.azurite import is_listening
    from workspace.errors import DatastoreUnavailable

    if not is_listening(int(settings.azurite_port)):
        raise DatastoreUnavailable(f"The local datastore (Azurite) is not reachable at "
                                   f"{settings.azurite_blob_endpoint}.",
                                   "Start it with `make local-up`.")


def _warn_environment(model_path: str, progress: Progress | None) -> None:
    """The local target scores in this Python environment: say once, at deployment, what
    of the model's requirements it does not meet (jobs then load the model without
    checking again)."""
    from deployer.environment import environment_mismatches

    mismatches = environment_mismatches(Path(model_path))
    if mismatches and progress:
        progress("warning: this environment does not meet the model's requirements (scoring "
                 "may differ from training): " + "; ".join(mismatches))


def _waiting_on(update: JobUpdate) -> str:
    """What a job that has not ended is doing, for the timeout's message."""
    if update.status == "Queued":
        return "its runner is starting (reading the input, loading the model)"
    return ", ".join(part for part in ("scoring", _counts(update)) if part)


def _counts(update: JobUpdate) -> str:
    """The job's counts as a line says them ('' before its mini-batches are planned)."""
    if not update.mini_batches_total:
        return ""
    settled = (update.mini_batches_done or 0) + (update.mini_batches_failed or 0)
    text = (f"mini-batches {settled}/{update.mini_batches_total}, rows {update.rows_scored or 0}, "
            f"failed files {update.files_failed or 0}")
    return text + (f", retries {update.retries}" if update.retries else "")


def job_update(record: dict) -> JobUpdate:
    """The job record as the update `wait` sends: its counts and one line of text."""
    update = JobUpdate(job=record["name"], status=record["status"], text="",
                       mini_batches_total=record.get("mini_batches_total"),
                       mini_batches_done=record.get("mini_batches_done"),
                       mini_batches_failed=record.get("mini_batches_failed"),
                       files_total=record.get("files_total"), files_done=record.get("files_done"),
                       files_failed=record.get("files_failed"),
                       rows_scored=record.get("rows_scored"),
                       rows_in_progress=record.get("rows_in_progress"),
                       retries=record.get("retries"))
    counts = _counts(update)
    return replace(update, text=f"job {update.job}: {update.status}" + (f", {counts}" if counts else ""))
