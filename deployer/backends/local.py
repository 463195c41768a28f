"""The embedded local backend: MLflow registry in SQLite, a JSON state file for the
cluster / endpoint / deployments, and the local batch engine (`deployer.engine`) for jobs.

Layout under LOCAL_DIR (default `.local/`):
- `mlflow.db` (tracking + registry), `mlartifacts/` (run artifacts): `mlflow ui
  --backend-store-uri sqlite:///.local/mlflow.db` shows the runs and registered models;
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
from pathlib import Path

from deployer.backends.base import Backend, Progress
from deployer.entities import (CREATE, DELETE, NO_OP, UPDATE, Change, Deployment, JobOverrides,
                               JobSummary, ModelSource, RegisteredModel)
from deployer.backends.local_registry import RegistryReader, RegistryUnreadable, RegistryVersion
from deployer.engine.lifecycle import write_runner_pid
from deployer.engine.records import TERMINAL, now, read_record, write_record
from workspace.errors import ConfigError, NotFound, ProjectError
from workspace.settings import REPO_ROOT, Settings

CONTENT_TAG = "content_sha256"
REGISTRY_EXPERIMENT = "deployer-registrations"
ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
# Azure ML's service defaults for a model batch deployment.
DEPLOYMENT_DEFAULTS = {"mini_batch_size": 10, "instance_count": 1, "max_concurrency_per_instance": 1,
                       "error_threshold": -1, "max_retries": 3, "timeout": 30,
                       "output_action": "append_row", "output_file_name": "predictions.csv",
                       "logging_level": "info"}


class LocalError(ProjectError):
    """The local target cannot do what was asked (its state, a job's files)."""


class LocalNotFound(LocalError, NotFound):
    """A local endpoint, deployment, model or job does not exist."""


def _arm_name(value) -> str:
    return str(value or "").removeprefix("azureml:").rstrip("/").split("/")[-1]


def desired_deployment_state(spec) -> dict:
    """The deployment spec as the flat dict the local state stores and compares."""
    data = spec.data
    settings = dict(data.get("settings") or {})
    retry = dict(settings.pop("retry_settings", None) or {})
    resources = dict(data.get("resources") or {})
    state = dict(DEPLOYMENT_DEFAULTS)
    for key in ("mini_batch_size", "max_concurrency_per_instance", "error_threshold",
                "output_action", "output_file_name", "logging_level"):
        if settings.get(key) is not None:
            state[key] = settings[key]
    for key in ("max_retries", "timeout"):
        if retry.get(key) is not None:
            state[key] = retry[key]
    if resources.get("instance_count") is not None:
        state["instance_count"] = resources["instance_count"]
    state["output_action"] = str(state["output_action"]).lower()
    state["logging_level"] = str(state["logging_level"]).lower()
    state["compute"] = _arm_name(data.get("compute"))
    state["environment_variables"] = dict(settings.get("environment_variables") or
                                          data.get("environment_variables") or {})
    return state


class LocalBackend(Backend):
    name = "local"

    def __init__(self, settings: Settings, *, datastore=None, mlflow_client=None,
                 python: str = sys.executable):
        """`datastore` and `mlflow_client` are injectable; by default Azurite from settings
        and an MLflow client on `sqlite:///<LOCAL_DIR>/mlflow.db`."""
        self.settings = settings
        self.root = settings.local_path
        self.state_dir = self.root / "deployer"
        self.jobs_dir = self.state_dir / "jobs"
        self.registry_uri = f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts_dir = self.root / "mlartifacts"
        self._datastore = datastore
        self._client = mlflow_client
        self.python = python

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

    def _model_names(self) -> list[str]:
        if self._client is None:
            try:
                return RegistryReader(self.root / "mlflow.db").model_names()
            except RegistryUnreadable:
                pass
        from mlflow.exceptions import MlflowException

        try:
            return sorted(m.name for m in self.client.search_registered_models())
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
                    Change("model", source.name, NO_OP, f"version {existing.version} has the same content"))
        if dry_run:
            return None, Change("model", source.name, CREATE,
                                f"new version from {self.settings.datastore_uri(source.datastore_path)}")
        if source.local_dir is None or not (Path(source.local_dir) / "MLmodel").is_file():
            raise ConfigError(f"Model '{source.name}' has no downloaded, verified copy to register.",
                              "Register through `python -m deployer register-and-deploy`.")
        client = self.client
        experiment = client.get_experiment_by_name(REGISTRY_EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            REGISTRY_EXPERIMENT, artifact_location=str(self.artifacts_dir))
        tags = {str(k): str(v) for k, v in (source.tags or {}).items()}
        run_name = f"train-{tags.get('run_id', source.content_sha256)[:12]}"
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        try:
            for key, value in (source.params or {}).items():
                client.log_param(run_id, key, value)
            for key, value in (source.metrics or {}).items():
                if isinstance(value, (int, float)):
                    client.log_metric(run_id, key, float(value))
            client.log_artifacts(run_id, str(source.local_dir), "model")
            extras = Path(source.local_dir).parent / "extra-artifacts"
            if extras.is_dir():
                client.log_artifacts(run_id, str(extras))
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
        description = source.description or ((spec.data.get("description") if spec else "") or "")
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(source.name, description=description or None)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        artifact = f"{client.get_run(run_id).info.artifact_uri}/model"
        # Only now, with every file in place, does the version become visible.
        version = client.create_model_version(source.name, artifact, run_id=run_id,
                                              tags={**tags, CONTENT_TAG: source.content_sha256},
                                              description=description or None)
        return (RegisteredModel(source.name, str(version.version), {**tags, CONTENT_TAG: source.content_sha256}),
                Change("model", source.name, CREATE, f"version {version.version}"))

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
        want = {k: spec.data.get(k) for k in ("type", "size", "min_instances", "max_instances",
                                              "idle_time_before_scale_down", "tier")}
        with self._state(write=not dry_run) as state:
            have = state["computes"].get(spec.name)
            if have is None:
                action, detail = CREATE, (f"{want['size']}, {want['min_instances']}-"
                                          f"{want['max_instances']} nodes (local: worker processes)")
            else:
                detail = _diff(have, want)
                if not detail:
                    return Change("compute", spec.name, NO_OP)
                action = UPDATE
            if not dry_run:
                state["computes"][spec.name] = {**want, "updated": now()}
        return Change("compute", spec.name, action, detail)

    def ensure_endpoint(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        validate_endpoint_name(spec.name)
        want = {"description": spec.data.get("description") or "",
                "auth_mode": str(spec.data.get("auth_mode") or "aad_token").lower()}
        with self._state(write=not dry_run) as state:
            have = state["endpoints"].get(spec.name)
            if have is None:
                action, detail = CREATE, ""
            else:
                detail = _diff(have, want)
                if not detail:
                    return Change("endpoint", spec.name, NO_OP)
                action = UPDATE
            if not dry_run:
                state["endpoints"][spec.name] = {**(have or {"default_deployment": "",
                                                              "created": now()}), **want}
        return Change("endpoint", spec.name, action, detail)

    def ensure_deployment(self, spec, model: RegisteredModel | None, *, dry_run: bool = False,
                          progress: Progress | None = None, set_default: bool = True) -> Change:
        endpoint = spec.data.get("endpoint_name", "")
        validate_endpoint_name(endpoint)
        want = desired_deployment_state(spec)
        if want["output_action"] == "summary_only" and spec.data.get("settings", {}).get("output_file_name"):
            raise ConfigError(f"Deployment '{spec.name}': output_action summary_only cannot have "
                              "an output_file_name.",
                              "Remove output_file_name from deployment.yml or use append_row.")
        if model is not None:
            name, version, path = self._resolve_model(f"{model.name}:{model.version}")
        elif dry_run:
            name, version, path = _arm_name(spec.data.get("model")).split("@")[0], "(new)", ""
        else:
            name, version, path = self._resolve_model(spec.data.get("model", ""))
        want["model"] = f"{name}:{version}"
        with self._state(write=not dry_run) as state:
            ep = state["endpoints"].get(endpoint)
            if ep is None and not dry_run:
                raise LocalNotFound(f"Endpoint '{endpoint}' does not exist.",
                                    "Create it first (register-and-deploy does, in order).")
            if want["compute"] and want["compute"] not in state["computes"] and not dry_run:
                raise LocalNotFound(f"Deployment '{spec.name}' uses compute '{want['compute']}', "
                                    "which does not exist.",
                                    "Fix `compute:` in deployment.yml or create the cluster "
                                    "(register-and-deploy does).")
            have = state["deployments"].get(endpoint, {}).get(spec.name)
            comparable = {k: v for k, v in (have or {}).items() if k in want}
            if have is None:
                action, detail = CREATE, f"model {want['model']}"
            else:
                detail = _diff(comparable, want)
                action = UPDATE if detail else NO_OP
            is_default = ep is not None and ep.get("default_deployment") == spec.name
            if set_default and not is_default:
                detail = "; ".join(x for x in (detail, "set as the endpoint's default") if x)
                if action == NO_OP:
                    action = UPDATE
            if not dry_run:
                if action != NO_OP and (have is None or comparable != want):
                    state["deployments"].setdefault(endpoint, {})[spec.name] = {
                        **want, "model_path": path, "updated": now(),
                        "created": (have or {}).get("created") or now(),
                        "tags": dict((have or {}).get("tags") or {})}
                if set_default:
                    ep["default_deployment"] = spec.name
        if not dry_run and action != NO_OP and path:
            _warn_environment(path, progress)
        return Change("deployment", spec.name, action, detail)

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        state = self._read_state()
        default = (state["endpoints"].get(endpoint) or {}).get("default_deployment", "")
        return [Deployment(name=name, model=dep.get("model", ""),
                           created=dep.get("created") or dep.get("updated", ""),
                           is_default=name == default, tags=dict(dep.get("tags") or {}))
                for name, dep in sorted(state["deployments"].get(endpoint, {}).items())]

    def set_default_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                               progress: Progress | None = None) -> Change:
        with self._state(write=not dry_run) as state:
            ep = state["endpoints"].get(endpoint)
            if ep is None:
                raise LocalNotFound(f"Endpoint '{endpoint}' does not exist.",
                                    "Run `python -m deployer register-and-deploy` first.")
            if name not in state["deployments"].get(endpoint, {}):
                raise LocalNotFound(f"Deployment '{name}' does not exist on endpoint '{endpoint}'.",
                                    "See `python -m deployer status` for the deployments.")
            old = ep.get("default_deployment") or ""
            if old == name:
                return Change("default-deployment", endpoint, NO_OP, name)
            if not dry_run:
                ep["default_deployment"] = name
        return Change("default-deployment", endpoint, UPDATE, f"{old or '(none)'} → {name}")

    def delete_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                          progress: Progress | None = None) -> Change:
        with self._state(write=not dry_run) as state:
            deployments = state["deployments"].get(endpoint, {})
            if name not in deployments:
                return Change("deployment", name, NO_OP, "does not exist")
            if (state["endpoints"].get(endpoint) or {}).get("default_deployment") == name:
                raise LocalError(f"Deployment '{name}' is the default of endpoint '{endpoint}'; "
                                 "it cannot be deleted.",
                                 "Make another deployment the default first (rollback --to).")
            model = deployments[name].get("model", "")
            if not dry_run:
                del deployments[name]
        return Change("deployment", name, DELETE, f"model {model}")

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
               overrides: JobOverrides | None = None) -> JobSummary:
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
        if progress:
            progress(f"job {job_name}: Queued ({name} on {endpoint})")
        if not wait:
            return self._summary(read_record(job_dir), job_dir)
        summary = self.wait(job_name, progress=progress)
        if summary.status == "Completed" and settings.get("output_action", "append_row") != "summary_only":
            self.download_output(summary, output_dir or Path("outputs") / job_name, progress)
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
        job_dir = self.jobs_dir / (name or f"batchjob-{uuid.uuid4()}")
        try:
            job_dir.mkdir(parents=True)
        except FileExistsError:
            raise ConfigError(f"A job named '{name}' already exists.",
                              "Job names are unique in a workspace; pick another --job-name.")
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

    def wait(self, job_name: str, *, progress: Progress | None = None, poll: float = 0.1,
             timeout: float | None = None) -> JobSummary:
        """Follow a job until it ends, telling progress what changes."""
        job_dir = self._job_dir(job_name)
        last = None
        started = time.monotonic()
        while True:
            for child in getattr(self, "_children", []):
                child.poll()  # reap a finished runner so it is not seen as alive
            record = self._fresh_record(job_dir)
            line = _progress_line(record)
            key = (line, record.get("rows_in_progress"), record.get("files_done"))
            if progress and key != last:
                progress(JobProgressLine(line, record))
            last = key
            if record["status"] in TERMINAL:
                return self._summary(record, job_dir)
            if timeout is not None and time.monotonic() - started > timeout:
                return self._summary(record, job_dir)
            time.sleep(poll)

    def download_output(self, job: JobSummary, output_dir: Path,
                        progress: Progress | None = None) -> Path:
        summary = job
        record = read_record(self._job_dir(summary.name))
        blob = record.get("output_datastore_path")
        if not blob:
            raise LocalError(f"Job '{summary.name}' has no output file.",
                             f"See its logs in {summary.logs_path}.")
        target = Path(output_dir) / Path(blob).name
        if progress:
            progress(f"downloading {self.settings.datastore_uri(blob)} → {target}")
        if not self._copy_published_output(record, blob, target):
            self.datastore.download_file(blob, target)
        summary.output_path = str(target)
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
        if not re.fullmatch(r"[A-Za-z0-9][-A-Za-z0-9_.]*", name or ""):
            raise ConfigError(f"'{name}' is not a job name.", "See `python -m deployer status`.")
        job_dir = self.jobs_dir / name
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
        local_output = job_dir / "outputs" / record.get("settings", {}).get(
            "output_file_name", "predictions.csv")
        blob = record.get("output_datastore_path")
        return JobSummary(
            name=record["name"], status=record["status"], endpoint=record.get("endpoint", ""),
            deployment=record.get("deployment", ""), input=record.get("input", ""),
            created=record.get("created", ""), finished=record.get("finished", ""),
            rows_scored=record.get("rows_scored"), files_total=record.get("files_total"),
            files_failed=record.get("files_failed"), error=record.get("error", ""),
            # Only a completed job has output: nothing else is ever shown as predictions.
            output_path="" if record["status"] != "Completed" else (
                self.settings.datastore_uri(blob) if blob else (
                    str(local_output) if local_output.exists() else "")),
            logs_path=str(job_dir / "logs"),
            mini_batches_total=record.get("mini_batches_total"),
            mini_batches_done=record.get("mini_batches_done"),
            duration_seconds=record.get("duration_seconds"),
            failed_files=list(record.get("failed_files") or []),
            predictions=record.get("predictions"),
            experiment=record.get("experiment") or record.get("endpoint", ""))

    def get_job(self, name: str) -> JobSummary:
        job_dir = self._job_dir(name)
        return self._summary(self._fresh_record(job_dir), job_dir)

    def list_jobs(self, endpoint: str, limit: int = 10) -> list[JobSummary]:
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
        return [self._summary(r, d) for r, d in records[:max(limit, 0)]]

    # ------------------------------------------------------------------ status and teardown

    def describe(self, endpoint: str) -> dict:
        state = self._read_state()
        ep = state["endpoints"].get(endpoint)
        deployments = state["deployments"].get(endpoint, {})
        result = {"backend": self.name, "registry": self.registry_uri,
                  "endpoint": None, "deployments": [], "models": [], "computes": []}
        for name, compute in sorted(state["computes"].items()):
            result["computes"].append({"name": name, **{k: v for k, v in compute.items()
                                                        if k != "updated"}})
        if ep is not None:
            result["endpoint"] = {"name": endpoint, "default_deployment": ep.get("default_deployment", ""),
                                  "description": ep.get("description", ""),
                                  "scoring_uri": f"local://{endpoint}",
                                  "provisioning_state": "Succeeded"}
        names = set()
        for name, dep in sorted(deployments.items()):
            result["deployments"].append({"name": name, **{k: v for k, v in dep.items()
                                                           if k not in ("environment_variables",)},
                                          "provisioning_state": "Succeeded"})
            names.add(dep["model"].split(":")[0])
        if (self.root / "mlflow.db").exists():
            for model_name in sorted(names or self._model_names()):
                for version in self._versions(model_name):
                    result["models"].append({"name": model_name, "version": version.version,
                                             "tags": dict(version.tags)})
        return result

    def teardown(self, endpoint: str, compute: str, *, dry_run: bool = False) -> list[Change]:
        changes: list[Change] = []
        with self._state(write=not dry_run) as state:
            deployments = state["deployments"].get(endpoint, {})
            for name in sorted(deployments):
                changes.append(Change("deployment", name, DELETE))
            if endpoint in state["endpoints"]:
                changes.append(Change("endpoint", endpoint, DELETE))
            else:
                changes.append(Change("endpoint", endpoint, NO_OP, "does not exist"))
            if compute in state["computes"]:
                changes.append(Change("compute", compute, DELETE))
            else:
                changes.append(Change("compute", compute, NO_OP, "does not exist"))
            if not dry_run:
                state["deployments"].pop(endpoint, None)
                state["endpoints"].pop(endpoint, None)
                state["computes"].pop(compute, None)
        return changes


# ---------------------------------------------------------------------- helpers


def validate_endpoint_name(name: str) -> None:
    if not isinstance(name, str) or not 3 <= len(name) <= 32 or not ENDPOINT_NAME.match(name):
        raise ConfigError(
            f"Endpoint name '{name}' is invalid.",
            "Use 3-32 characters: letters, digits and dashes, starting with a letter and not "
            "ending with a dash (endpoint names are unique per Azure region).")


def _diff(have: dict, want: dict) -> str:
    return ", ".join(f"{k}: {have.get(k)!r} → {want[k]!r}" for k in want if have.get(k) != want[k])


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


class JobProgressLine(str):
    """A progress line that also carries the job record it was made from, for a display
    that shows more than text (rows/s, files done)."""

    record: dict

    def __new__(cls, text: str, record: dict) -> "JobProgressLine":
        line = super().__new__(cls, text)
        line.record = record
        return line


def _progress_line(record: dict) -> str:
    status = record["status"]
    total = record.get("mini_batches_total")
    if not total:
        return f"job {record['name']}: {status}"
    done = (record.get("mini_batches_done") or 0) + (record.get("mini_batches_failed") or 0)
    text = (f"job {record['name']}: {status}, mini-batches {done}/{total}, "
            f"rows {record.get('rows_scored') or 0}, failed files {record.get('files_failed') or 0}")
    if record.get("retries"):
        text += f", retries {record['retries']}"
    return text
