"""The application layer of `python -m deployer`: what to do, for any backend.

- register-and-deploy: find the newest complete training run (or the one asked for) through
  the trainer's manifests, download and verify it, apply the quality gate, register it with
  lineage tags (idempotent by a content digest over the manifest's file hashes), ensure the
  cluster, endpoint and deployment (default), optionally smoke-test it; or only plan.
- invoke: start a scoring job, follow it, summarise predictions.csv (rows, classes).
- status, jobs show / cancel, teardown.

Nothing here branches on the target: the backend comes from `get_backend(settings)` or is
injected. Heavy imports (mlflow, the Azure SDK, pyarrow) stay in the backends and helpers.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from deployer.azureml_rules import (validate_deployment_name, validate_deployment_settings,
                                    validate_endpoint_name, validate_instances)
from deployer.backends.base import JobProgress, Progress
from deployer.entities import (HISTORY_MAX, JOB_ENDED, NO_OP, Change, DefaultHistory,
                               JobOverrides, JobSummary, ModelSource, RegisteredModel,
                               TargetStatus, downloaded_copy, job_output_dir, predictions_target,
                               record_download)
from deployer.plan import plan_line
from deployer.rollout import (Rollout, RollbackRefused, SmokeResult, SmokeTestError,  # noqa: F401
                              not_a_candidate, refuse_nested_folder,
                              rollback_candidate, validate_overrides)
from deployer.spec import SPEC_DIR, DeploymentSpecs, load_specs
from workspace.errors import ConfigError, ExitCode, NotEnded, OperationFailed, ProjectError
from workspace.quality import (MIN_TEST_ROWS, QUALITY_METRIC, TEST_ROWS_METRIC,
                               AccuracyComparison, compare_accuracy, test_rows_problem)
from workspace.settings import REPO_ROOT, Settings

DEFAULT_MIN_ACCURACY = 0.9


class QualityGateError(ProjectError):
    """The model is not good enough to deploy."""

    exit_code = ExitCode.QUALITY_GATE


class DowngradeRefused(QualityGateError):
    """The candidate measured lower than the model serving the endpoint."""


@dataclass(frozen=True)
class ServingComparison:
    """The candidate against the model the endpoint's default serves."""

    deployment: str  # the default deployment
    model: str  # name:version it serves
    metrics: dict  # its run's, from its manifest (else its registered version's tags)
    source: str  # where they were read: the manifest's datastore path, or "registry tags"
    result: AccuracyComparison | str  # str: why the two cannot be compared
    forced: bool = False

    @property
    def text(self) -> str:
        found = self.result.text if isinstance(self.result, AccuracyComparison) else \
            f"not compared: {self.result}"
        return f"{self.model} (deployment {self.deployment}) serving; {found}" + (
            " (deployed anyway: --force)" if self.forced else "")


class JobFailed(OperationFailed):
    """A batch scoring job ended in Failed or Canceled."""


def job_failed(job: JobSummary) -> JobFailed:
    """The error of a job that ended without completing, the same for every command."""
    return JobFailed(f"Job {job.name} {job.status.lower()}: {job.error or 'no error message'}",
                     f"Details: python -m deployer jobs show {job.name}"
                     + (f" (logs in {job.logs_path})" if job.logs_path else ""))


@dataclass
class DeployResult:
    dry_run: bool
    run_id: str
    model_path: str
    metrics: dict
    model: RegisteredModel | None
    endpoint: str
    deployment: str
    changes: list[Change] = field(default_factory=list)
    smoke: SmokeResult | None = None
    serving: ServingComparison | None = None  # None: no model serves the endpoint yet

    @property
    def changed(self) -> bool:
        return any(c.action != NO_OP for c in self.changes)


@dataclass(frozen=True)
class StatusReport:
    """`status`: what the backend describes, with the deployments' roles; recent jobs."""

    target: TargetStatus
    jobs: tuple[JobSummary, ...] = ()


@dataclass
class InvokeResult:
    job: JobSummary
    stats: "PredictionStats | None"  # deployer.report.PredictionStats
    seconds: float
    predictions: Path | None = None  # the downloaded predictions file (job.predictions_file)
    already_downloaded: bool = False  # `jobs download` found the job's file there: no download


def content_digest(model_files: dict) -> str:
    """sha256 over the model folder's manifest entries: same files, same digest."""
    digest = hashlib.sha256()
    for rel in sorted(model_files):
        digest.update(f"{rel}\0{model_files[rel]['sha256']}\n".encode())
    return digest.hexdigest()


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The commit of the deploying checkout (with '-dirty' if it has changes), '' if unknown."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "deployer/specs"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


# A subnet's resource id; the SDK rewrites anything else (a name, a subscription that is not a
# GUID: validate_arm_str and get_subnet_str in azure/ai/ml/_schema/_utils/utils.py) as a subnet
# name under the workspace's resource group, with the VNet name "None".
SUBNET_ID = re.compile(r"/subscriptions/[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}/resourceGroups/[^/]+"
                       r"/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+", re.IGNORECASE)


def spec_overrides(settings) -> dict[str, dict]:
    """Spec values that come from settings: the region-unique endpoint name, the identity
    the scoring cluster runs as, and in private mode the subnet it runs in without public
    node IPs (all written by make deploy-infra)."""
    overrides: dict[str, dict] = {}
    if settings.batch_endpoint_name:
        overrides["endpoint"] = {"name": settings.batch_endpoint_name}
        overrides["deployment"] = {"endpoint_name": settings.batch_endpoint_name}
    compute: dict = {}
    if settings.aml_compute_identity_id:
        compute["identity"] = {
            "type": "user_assigned",
            "user_assigned_identities": [{"resource_id": settings.aml_compute_identity_id}]}
    if settings.aml_compute_subnet_id:
        if not SUBNET_ID.fullmatch(settings.aml_compute_subnet_id):
            raise ConfigError(
                f"AML_COMPUTE_SUBNET_ID {settings.aml_compute_subnet_id!r} is not a subnet resource id "
                "(/subscriptions/<subscription id>/resourceGroups/<group>/providers/Microsoft.Network/"
                "virtualNetworks/<vnet>/subnets/<subnet>); make deploy-infra PRIVATE_NETWORKING=true "
                "writes it to .env (empty outside private mode).")
        # The `az ml compute` YAML keys of AmlCompute (azure/ai/ml/_schema/compute/aml_compute.py);
        # a full subnet id passes get_subnet_str unchanged. Azure ML allows no public IP with a
        # workspace private endpoint, which private mode deploys (docs/azure.md).
        compute["network_settings"] = {"subnet": settings.aml_compute_subnet_id}
        compute["enable_node_public_ip"] = False
    if compute:
        overrides["compute"] = compute
    return overrides


def _counted_by_job(job: JobSummary):
    """The job's own per-class and per-file counts, when it reported them (the local
    target does, as it writes the output): no second pass over a large file."""
    from deployer.report import PredictionStats

    counted = job.prediction_counts
    if not counted or counted.get("rows") != job.rows_scored:
        return None
    return PredictionStats(rows=int(counted["rows"]), per_class=dict(counted.get("per_class") or {}),
                           per_file=dict(counted.get("per_file") or {}))


def prediction_stats(path: Path):
    """Rows per class and per file of a predictions.csv (streamed; see deployer.report)."""
    from deployer.report import summarize_predictions

    return summarize_predictions(path)


class Deployer:
    """register-and-deploy, invoke, status, jobs and teardown over one backend."""

    def __init__(self, settings: Settings, *, backend=None, datastore=None,
                 specs: DeploymentSpecs | None = None, spec_dir: Path | None = None,
                 progress: Progress | None = None, job_progress: JobProgress | None = None,
                 timeout_seconds: float | None = None):
        """`progress` takes lines of text; `job_progress`, when given, the JobUpdates of a
        job `invoke` waits on (otherwise their text goes to `progress`). `timeout_seconds`
        bounds the backend's waits (None: its default)."""
        self.settings = settings
        self._backend = backend
        self._datastore = datastore
        self._specs = specs
        self.spec_dir = Path(spec_dir) if spec_dir else SPEC_DIR
        self.progress = progress or (lambda message: None)
        self.job_progress = job_progress
        self.timeout_seconds = timeout_seconds

    @property
    def backend(self):
        if self._backend is None:
            from deployer.backends import get_backend

            self._backend = get_backend(self.settings)
        if self.timeout_seconds is not None:
            self._backend.timeout_seconds = self.timeout_seconds
        return self._backend

    @property
    def datastore(self):
        if self._datastore is None:
            from workspace.datastore import Datastore

            self._datastore = Datastore.from_settings(self.settings)
        return self._datastore

    @property
    def specs(self) -> DeploymentSpecs:
        if self._specs is None:
            self._specs = load_specs(self.spec_dir, spec_overrides(self.settings))
        return self._specs

    @property
    def endpoint_name(self) -> str:
        return self.specs.endpoint.name

    # ------------------------------------------------------------------ find the model

    def find_run(self, model_path: str | None = None, run_id: str | None = None):
        """The newest complete run, the one with run_id, or the one publishing model_path."""
        from adf.targets import model_provenance_check
        from workspace.published import ModelNotFound, find_published_run, list_published_runs

        prefix = self.settings.model_prefix
        check = model_provenance_check(self.settings)  # never a model of a failed run
        if model_path and run_id:
            raise ConfigError("Pass --model or --run-id, not both.")
        if not model_path:
            self.progress(f"looking for the newest complete run under "
                          f"{self.settings.container}/{prefix}" if not run_id else
                          f"looking for run {run_id} under {self.settings.container}/{prefix}")
            return find_published_run(self.datastore, prefix, run_id, check=check)
        wanted = _datastore_path(model_path, self.settings.datastore_name).rstrip("/")
        runs = list_published_runs(self.datastore, _search_prefix(wanted, prefix), check=check)
        for run in runs:
            if wanted in (run.model_path, run.run_prefix, run.manifest_path):
                return run
        raise ModelNotFound(f"No complete training run publishes '{wanted}' in container "
                            f"'{self.settings.container}'.",
                            "Pass the model folder of a run that has a manifest.json, e.g. "
                            f"{prefix}/<experiment>/<run>/artifacts/model, or use --run-id.")

    def sweep_run_id(self, sweep_id: str, given: str | None = None) -> str:
        """The run id of the best complete run of a sweep ('latest': the newest sweep)."""
        from workspace.sweep_runs import best_sweep_run

        if given:
            raise ConfigError("Pass --sweep alone, without --model or --run-id.")
        best = best_sweep_run(self.datastore, self.settings.model_prefix, sweep_id)
        self.progress(f"sweep {best.sweep_id}: best complete run {best.run.run_id} (line "
                      f"{best.line}, {QUALITY_METRIC} "
                      f"{float(best.run.metrics.get(QUALITY_METRIC, 0)):.3f})")
        return best.run.run_id

    def model_source(self, run, workdir: Path) -> ModelSource:
        """Download the run's model (every file checked against the manifest) and describe it."""
        from workspace.published import download_model

        self.progress(f"downloading {run.model_path} and verifying {len(run.model_files)} "
                      "file hashes")
        model_dir = download_model(self.datastore, run, Path(workdir) / "model")
        tags = {"run_id": run.run_id, "experiment_id": run.experiment_id,
                "training_created": run.created, "model_path": run.model_path,
                "model_uri": self.settings.datastore_uri(run.model_path),
                "data_file": run.data.get("file", ""), "data_sha256": run.data.get("sha256", ""),
                "data_rows": run.data.get("rows", "")}
        tags.update({f"metric.{k}": v for k, v in sorted(run.metrics.items())})
        tags.update({f"param.{k}": v for k, v in sorted(run.params.items())})
        commit = git_commit()
        if commit:
            tags["git_commit"] = commit
        sweep = self.datastore.read_json(run.manifest_path).get("sweep")
        if isinstance(sweep, dict):  # lineage of a sweep's run: which sweep, which grid line
            tags.update({"sweep_id": sweep.get("id", ""), "sweep_line": sweep.get("line", "")})
        spec = self.specs.model.data
        return ModelSource(name=self.specs.model.name, datastore_path=run.model_path,
                           local_dir=model_dir, tags={k: v for k, v in tags.items() if v != ""},
                           content_sha256=content_digest(run.model_files),
                           description=spec.get("description", "") or "", run=run)

    @staticmethod
    def quality_gate(run, min_accuracy: float, force: bool,
                     min_test_rows: int = MIN_TEST_ROWS) -> str:
        """'' if the model passes; raises QualityGateError otherwise (a note if forced).
        The accuracy counts only if measured on at least min_test_rows rows
        (workspace/quality.py says why)."""
        accuracy = run.metrics.get(QUALITY_METRIC)
        too_few = test_rows_problem(run.metrics, min_test_rows)
        hint = "Retrain (e.g. more epochs), lower the gate with --min-accuracy"
        if accuracy is None:
            problem = f"Run {run.run_id} reports no {QUALITY_METRIC} metric"
        elif float(accuracy) < min_accuracy:
            problem = (f"Run {run.run_id} has {QUALITY_METRIC} {float(accuracy):.3f}, below the "
                       f"quality gate of {min_accuracy:g}")
        elif too_few:
            problem = (f"Run {run.run_id} has {QUALITY_METRIC} {float(accuracy):.3f} {too_few}: "
                       f"the quality gate needs at least {min_test_rows}")
            hint = ("Retrain with a larger --test-size (0.2 holds out 30 Iris rows), lower "
                    "--min-test-rows")
        else:
            return ""
        if force:
            return problem + " (deployed anyway: --force)."
        raise QualityGateError(problem + "; it was not deployed.",
                               hint + ", or pass --force to deploy it anyway.")

    # ------------------------------------------------------------------ register and deploy

    def register_and_deploy(self, *, model_path: str | None = None, run_id: str | None = None,
                            dry_run: bool = False, force: bool = False,
                            min_accuracy: float = DEFAULT_MIN_ACCURACY,
                            min_test_rows: int = MIN_TEST_ROWS,
                            smoke: bool = True, keep: int = 1,
                            cleanup_failed: bool = False) -> DeployResult:
        """Plan and apply under the endpoint's lock (not for a dry run, which changes
        nothing): concurrent runs for one endpoint are serialised, so the second one sees
        the first one's model version and deployment and changes nothing. The whole
        rollout (create, smoke test, switch the default, delete old) is inside the lock."""
        validate_specs(self.specs)
        if isinstance(keep, bool) or not isinstance(keep, int) or not 0 <= keep <= HISTORY_MAX:
            raise ConfigError(f"--keep is {keep!r}; it must be a whole number from 0 to "
                              f"{HISTORY_MAX} (the endpoint's history of defaults holds "
                              f"{HISTORY_MAX}).")
        rollout = dict(smoke=smoke, keep=keep, cleanup_failed=cleanup_failed)
        gate = dict(min_accuracy=min_accuracy, min_test_rows=min_test_rows)
        if dry_run:
            return self._register_and_deploy(model_path, run_id, dry_run, force, gate, rollout)
        with self._lock("register-and-deploy"):
            return self._register_and_deploy(model_path, run_id, dry_run, force, gate, rollout)

    def _lock(self, what: str):
        return self.datastore.lease_lock(deploy_lock_blob(self.endpoint_name),
                                         purpose=f"{what} of endpoint '{self.endpoint_name}'",
                                         progress=self.progress)

    @property
    def rollout(self) -> Rollout:
        return Rollout(self.backend, self.endpoint_name, self.progress)

    def _register_and_deploy(self, model_path, run_id, dry_run, force, gate: dict,
                             rollout: dict) -> DeployResult:
        specs = self.specs
        run = self.find_run(model_path, run_id)
        accuracy = run.metrics.get(QUALITY_METRIC)
        self.progress(f"run {run.run_id} (created {run.created}), {QUALITY_METRIC} "
                      + (f"{float(accuracy):.3f}" if accuracy is not None else "n/a"))
        note = self.quality_gate(run, force=force, **gate)
        if note:
            self.progress(note)
        result = DeployResult(dry_run=dry_run, run_id=run.run_id, model_path=run.model_path,
                              metrics=dict(run.metrics), model=None,
                              endpoint=specs.endpoint.name, deployment=specs.deployment.name)
        result.serving = self.compare_with_serving(run, force)
        with tempfile.TemporaryDirectory(prefix="deployer-model-") as tmp:
            source = self.model_source(run, Path(tmp))
            self.progress(f"{'planning' if dry_run else 'registering'} model {source.name} "
                          f"(content {source.content_sha256[:12]})")
            model, change = self.backend.register_model(source, dry_run=dry_run, spec=specs.model)
        result.model = model
        result.changes.append(change)
        self.progress(plan_line(change, dry_run))
        for ensure, spec in ((self.backend.ensure_compute, specs.compute),
                             (self.backend.ensure_endpoint, specs.endpoint)):
            change = ensure(spec, dry_run=dry_run, progress=self.progress)
            result.changes.append(change)
            self.progress(plan_line(change, dry_run))
        changes, result.smoke = self.rollout.deploy(
            specs.deployment, model, dry_run=dry_run, min_accuracy=gate["min_accuracy"],
            check_accuracy=not note, **rollout)
        result.changes += changes
        result.deployment = next(c.name for c in changes if c.kind == "deployment")
        return result

    def compare_with_serving(self, run, force: bool) -> ServingComparison | None:
        """The candidate run against the model the endpoint serves (None when none serves,
        or it is the same run); a worse one is refused (DowngradeRefused, exit 5) unless
        forced. workspace/quality.py says what "worse" is and why."""
        target = self.backend.describe(self.endpoint_name, model=self.specs.model.name)
        default = next((d for d in target.deployments if d.is_default), None)
        if default is None:
            return None
        name, _, version = default.model.rpartition(":")
        tags = next((dict(m.tags) for m in target.models
                     if m.name == name and m.version == version), {})
        if tags.get("run_id") == run.run_id:
            return None
        metrics, source = self._serving_metrics(tags)
        comparison = ServingComparison(default.name, default.model, metrics, source,
                                       compare_accuracy(run.metrics, metrics))
        if isinstance(comparison.result, AccuracyComparison) and comparison.result.worse:
            if not force:
                raise DowngradeRefused(
                    f"Run {run.run_id} is worse than the model serving endpoint "
                    f"'{self.endpoint_name}': {comparison.text}; it was not deployed.",
                    "Deploy a better run (see `python -m adf sweep status`), or pass --force "
                    "to replace the serving model anyway.")
            comparison = replace(comparison, forced=True)
        self.progress(f"compared with the serving model: {comparison.text}")
        return comparison

    def _serving_metrics(self, tags: dict) -> tuple[dict, str]:
        """The serving model's run metrics: from its manifest (the registered version's
        model_path tag names the run's folder), else from the version's metric.* tags."""
        from workspace.published import MANIFEST_NAME, ManifestError, PublishedRun, _read_manifest

        model_path = tags.get("model_path", "")
        if model_path:
            manifest = _search_prefix(model_path, "") + "/" + MANIFEST_NAME
            try:
                if self.datastore.exists(manifest):
                    run = PublishedRun.from_manifest(manifest, _read_manifest(self.datastore, manifest))
                    return dict(run.metrics), manifest
            except ManifestError as exc:
                self.progress(f"the serving model's manifest is not usable ({exc.message}); "
                              "its registered tags are used")
        metrics = {k.removeprefix("metric."): v for k, v in tags.items()
                   if k in (f"metric.{QUALITY_METRIC}", f"metric.{TEST_ROWS_METRIC}")}
        return metrics, "registry tags"

    def rollback(self, *, to: str | None = None, to_version: int | None = None,
                 dry_run: bool = False) -> list[Change]:
        """Make the previous (or the named) deployment the default again, under the
        endpoint's lock unless only planning."""
        if to is not None and to_version is not None:
            raise ConfigError("Pass --to or --to-version, not both.")
        if dry_run:
            return self.rollout.rollback(to=to, to_version=to_version, dry_run=True)
        with self._lock("rollback"):
            return self.rollout.rollback(to=to, to_version=to_version)

    # ------------------------------------------------------------------ invoke and jobs

    def invoke(self, input_path: str, *, deployment: str | None = None,
               output_dir: Path | None = None, wait: bool = True,
               overrides: JobOverrides | None = None) -> InvokeResult:
        overrides = validate_overrides(overrides or JobOverrides())
        compute = self.specs.compute
        validate_instances(overrides.instance_count, compute, "--instance-count",
                           f"Pass --instance-count {{maximum}} or less, or raise max_instances in "
                           f"{compute.path.name} and run register-and-deploy.")
        refuse_nested_folder(input_path)
        started = time.monotonic()
        if wait and output_dir is not None:
            predictions_target(Path(output_dir))  # refused before the job runs, not after
        job = self.backend.invoke(self.endpoint_name, input_path, deployment=deployment,
                                  output_dir=Path(output_dir) if output_dir else None, wait=wait,
                                  progress=self.progress, overrides=overrides,
                                  job_progress=self.job_progress)
        path = Path(job.predictions_file) if job.predictions_file else None
        if path is not None:
            record_download(job, path)
        stats = (_counted_by_job(job) or prediction_stats(path)) if path else None
        return InvokeResult(job=job, stats=stats, seconds=time.monotonic() - started,
                            predictions=path)

    def job(self, name: str) -> JobSummary:
        return self.backend.get_job(name)

    def wait(self, name: str) -> JobSummary:
        """Follow a job until it ends (`jobs show --wait`), telling job_progress (else
        progress) as `invoke` does; JobTimeout at the timeout."""
        return self.backend.wait(name, progress=self.progress, job_progress=self.job_progress)

    def cancel(self, name: str) -> JobSummary:
        """Cancel a job; a job that has already ended stays as it ended."""
        return self.backend.cancel_job(name)

    def download(self, name: str, output_dir: Path | None = None) -> InvokeResult:
        """Download the predictions of a finished job (e.g. one started with --no-wait).
        A job already downloaded to that folder (the record beside its file says so) is not
        downloaded again; a job still queued or running is refused (NotEnded); one that
        failed or was canceled has no predictions (`predictions` None)."""
        started = time.monotonic()
        job = self.backend.get_job(name)
        if job.status not in JOB_ENDED:
            raise NotEnded(f"Job {name} is {job.status}: its predictions exist once it has "
                           "completed.",
                           f"Wait for it with `python -m deployer jobs show {name} --wait`, then "
                           "download again.")
        if job.status != "Completed":
            return InvokeResult(job=job, stats=_counted_by_job(job),
                                seconds=time.monotonic() - started)
        folder = job_output_dir(name, output_dir)
        path = downloaded_copy(name, folder)
        already = path is not None
        if path is None:
            path = Path(self.backend.download_output(job, folder, progress=self.progress))
            record_download(job, path)
        job.predictions_file = str(path)
        return InvokeResult(job=job, stats=prediction_stats(path),
                            seconds=time.monotonic() - started, predictions=path,
                            already_downloaded=already)

    def write_report(self, result: InvokeResult, output_dir: Path | None = None,
                     label_column: str | None = None) -> Path:
        """report.html beside the job's predictions (or, for a job without any, in its
        output folder): its counts, its failed files, the model, and the accuracy against
        the input's label column when the input has one and can be read from here."""
        from deployer.report import (DEFAULT_LABEL_COLUMN, LabelCheck, PredictionStats,
                                     check_labels, failed_files_of, write_report)

        job = result.job
        folder = (result.predictions.parent if result.predictions is not None
                  else job_output_dir(job.name, output_dir))
        if not job.model:
            job.model = self._model_of(job)
        stats = result.stats or PredictionStats(rows=0)
        labels = None
        if result.predictions is not None and stats.rows:
            column = label_column or DEFAULT_LABEL_COLUMN
            with tempfile.TemporaryDirectory(prefix="deployer-input-") as tmp:
                inputs = self._input_files(job.input, Path(tmp))
                labels = (check_labels(result.predictions, inputs, column) if inputs else
                          LabelCheck(column, note=f"the input {job.input or '(unknown)'} "
                                     "cannot be read from here"))
        return write_report(folder / "report.html", stats, job, result.seconds,
                            failed_files_of(job), labels=labels)

    def _model_of(self, job: JobSummary) -> str:
        """name:version the job's deployment serves, '' when that is not known any more."""
        try:
            deployments = self.backend.list_deployments(job.endpoint or self.endpoint_name)
        except ProjectError:
            return ""
        return next((d.model for d in deployments if d.name == job.deployment), "")

    def _input_files(self, input_uri: str, workdir: Path) -> dict[str, Path]:
        """The job's input files by the name predictions.csv gives them: a local file or
        folder as it is, a path in the configured datastore downloaded to workdir; {} for
        anything else (a data asset, another storage account)."""
        from deployer.engine.reader import folder_files

        local = Path(input_uri) if input_uri and "://" not in input_uri else None
        if local is not None and local.is_file():
            return {local.name: local}
        if local is not None and local.is_dir():
            return {p.name: p for p in folder_files(local)[0]}
        prefix = f"azureml://datastores/{self.settings.datastore_name}/paths/"
        if not input_uri.startswith(prefix):
            return {}
        folder = input_uri.removeprefix(prefix).rstrip("/") + "/"
        try:  # a folder's top-level files, else the file itself
            blobs = [b.name for b in self.datastore.list(folder)
                     if "/" not in b.name[len(folder):]] or [folder.rstrip("/")]
            return {Path(b).name: self.datastore.download_file(b, workdir / Path(b).name)
                    for b in blobs}
        except ProjectError:
            return {}

    def status(self, jobs: int = 5) -> StatusReport:
        """describe() of the specs' endpoint, cluster and model, each deployment with its
        role (default / rollback candidate), newest model first; the recent jobs."""
        target = self.backend.describe(self.endpoint_name, compute=self.specs.compute.name,
                                       model=self.specs.model.name)
        history = DefaultHistory.from_tags(target.endpoint.tags if target.endpoint else None)
        candidate = rollback_candidate(list(target.deployments), history)
        roles = [replace(d, role=_role(d, candidate, history)) for d in target.deployments]
        roles.sort(key=lambda d: (d.model_version, d.created), reverse=True)
        return StatusReport(target=replace(target, deployments=tuple(roles)),
                            jobs=tuple(self.backend.list_jobs(self.endpoint_name, limit=jobs)))

    def teardown(self, *, dry_run: bool = False) -> list[Change]:
        return self.backend.teardown(self.endpoint_name, self.specs.compute.name, dry_run=dry_run)


# ---------------------------------------------------------------------- helpers

def _role(dep, candidate, history: DefaultHistory) -> str:
    """default, rollback candidate, '' (another candidate) or why it is none."""
    if dep.is_default:
        return "default"
    if candidate is not None and dep.name == candidate.name:
        return "rollback candidate"
    why = not_a_candidate(dep, history)
    return f"no candidate: {why}" if why else ""


def deploy_lock_blob(endpoint_name: str) -> str:
    """The datastore blob whose lease serialises register-and-deploy of one endpoint."""
    return f"locks/register-and-deploy/{endpoint_name}.lock"


def validate_specs(specs: DeploymentSpecs) -> None:
    """Check the specs against each other and Azure ML's rules before changing anything."""
    endpoint, deployment, compute = specs.endpoint, specs.deployment, specs.compute
    name = str(endpoint.name)
    validate_endpoint_name(name, str(endpoint.path))
    validate_deployment_name(deployment.name, str(deployment.path))
    data = deployment.data
    if data.get("endpoint_name") != name:
        raise ConfigError(f"{deployment.path}: endpoint_name '{data.get('endpoint_name')}' is not "
                          f"the endpoint of {endpoint.path.name} ('{name}').",
                          "Make them the same.")
    wanted_compute = str(data.get("compute", "")).removeprefix("azureml:")
    if wanted_compute != compute.name:
        raise ConfigError(f"{deployment.path}: compute '{data.get('compute')}' is not the cluster "
                          f"of {compute.path.name} ('{compute.name}').",
                          f"Set compute: azureml:{compute.name}.")
    settings = validate_deployment_settings(data, str(deployment.path))
    validate_instances(settings["instance_count"], compute,
                       f"{deployment.path}: resources.instance_count",
                       f"Lower resources.instance_count in {deployment.path.name} to {{maximum}} "
                       f"or less, or raise max_instances in {compute.path.name}.")


def _datastore_path(value: str, datastore_name: str) -> str:
    """azureml://datastores/<ds>/paths/<p> or <p> → <p>."""
    import re

    match = re.fullmatch(r"azureml://datastores/([^/]+)/paths/(.+)", value.strip())
    if match:
        if match.group(1) != datastore_name:
            raise ConfigError(f"--model names datastore '{match.group(1)}'; the configured "
                              f"datastore is '{datastore_name}'.",
                              "Use a path in that datastore or set DATASTORE_NAME.")
        return match.group(2)
    if "://" in value:
        raise ConfigError(f"--model '{value}' is not a datastore path.",
                          "Pass <prefix>/<experiment>/<run>/artifacts/model or "
                          "azureml://datastores/<ds>/paths/<that path>.")
    return value.strip().strip("/")


def _search_prefix(wanted: str, default: str) -> str:
    """The run folder to list: <prefix>/<exp>/<run> when the path has that shape."""
    if "/artifacts/" in wanted + "/":
        return wanted.split("/artifacts", 1)[0]
    if wanted.endswith("/manifest.json"):
        return wanted.rsplit("/", 1)[0]
    return wanted or default


