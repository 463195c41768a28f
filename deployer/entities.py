"""What the deployer manages (entities), separate from how each backend does it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deployer.azureml_rules import DEPLOYMENT_DEFAULTS, HISTORY_TAGS_MAX

CREATE, UPDATE, NO_OP, DELETE = "create", "update", "no-op", "delete"


@dataclass(frozen=True)
class Change:
    """One line of a plan or of the summary: what happens (or happened) to a resource."""

    kind: str  # model | compute | endpoint | deployment | default-deployment
    name: str
    action: str  # create | update | no-op | delete
    detail: str = ""


@dataclass(frozen=True)
class ModelSource:
    """A complete training run to register (from the trainer's manifest)."""

    name: str
    datastore_path: str  # <prefix>/<experiment>/<run>/artifacts/model
    local_dir: Path | None  # downloaded, hash-verified copy
    tags: dict = field(default_factory=dict)  # run_id, data_sha256, metrics, git_commit
    content_sha256: str = ""  # digest over the manifest's file hashes: same content, same model
    description: str = ""
    # The published run (workspace.published.PublishedRun): the local backend imports it into
    # its tracking store and links the model version to it.
    run: object | None = None


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    tags: dict = field(default_factory=dict)


@dataclass
class JobSummary:
    """A batch scoring job as `invoke`, `status` and `jobs show` report it."""

    name: str
    status: str  # Queued | Running | Completed | Failed | Canceled
    endpoint: str
    deployment: str
    input: str
    created: str = ""
    finished: str = ""
    rows_scored: int | None = None
    files_total: int | None = None
    files_failed: int | None = None
    error: str = ""
    # Where the job stored its predictions: locally the datastore URI, on Azure the job
    # output's azureml://jobs/... URI (known once downloaded). "" when it has none: not
    # Completed, or output_action summary_only.
    output_uri: str = ""
    # The downloaded copy (`invoke` waiting, `jobs download`), at predictions_target().
    predictions_file: str = ""
    logs_path: str = ""
    # Optional detail (the local backend fills them; None/empty when unknown).
    mini_batches_total: int | None = None
    mini_batches_done: int | None = None
    duration_seconds: float | None = None
    failed_files: list = field(default_factory=list)  # [{"file": ..., "message": ...}]
    # Rows per prediction and per file, counted by the job as it wrote them (local backend):
    # {"rows": n, "per_class": {label: n}, "per_file": {file: n}}.
    prediction_counts: dict | None = None
    experiment: str = ""  # Azure ML's experiment of the job (default: the endpoint's name)
    model: str = ""  # name:version of the model the job scored with ("" when unknown)

    @property
    def predictions_at(self) -> str:
        """Where to find the predictions: the downloaded file, else the stored output."""
        return self.predictions_file or self.output_uri


DEFAULT_OUTPUT_FILE = DEPLOYMENT_DEFAULTS["output_file_name"]
OUTPUTS_DIR = Path("outputs")


def job_output_dir(job_name: str, output_dir: Path | None = None) -> Path:
    """The folder a job's predictions are downloaded to: output_dir, else outputs/<job>/."""
    return Path(output_dir) if output_dir is not None else OUTPUTS_DIR / job_name


# Written beside a downloaded predictions file: which job it is. A second download of that
# job into the folder is then a no-op, and any other job's is refused.
DOWNLOAD_RECORD = "job.json"


def recorded_download(output_dir: Path) -> dict:
    """The job recorded with the predictions file in output_dir ({} when none is):
    {"job": name, "file": file name, "bytes": size, "output_uri": ..., "downloaded": ...}."""
    import json

    try:
        record = json.loads((Path(output_dir) / DOWNLOAD_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("job"), str) else {}


def downloaded_copy(job_name: str, output_dir: Path) -> Path | None:
    """The predictions file of job `job_name` already downloaded to output_dir, as the
    record beside it says (None: not downloaded there). A recorded file whose size changed
    since is not the job's any more: refused, as another job's file is."""
    from workspace.errors import ConfigError

    record = recorded_download(output_dir)
    if record.get("job") != job_name or not isinstance(record.get("file"), str):
        return None
    path = Path(output_dir) / Path(record["file"]).name
    if not path.is_file():
        return None
    if path.stat().st_size != record.get("bytes"):
        raise ConfigError(f"'{path}' was downloaded from job {job_name} and has changed since "
                          f"({path.stat().st_size} bytes, {record.get('bytes')} downloaded).",
                          "Pass another --output-dir, or move that file away first.")
    return path


def record_download(job: "JobSummary", path: Path) -> Path:
    """Write DOWNLOAD_RECORD beside a job's downloaded predictions file (atomically)."""
    import datetime as _dt
    import json

    path = Path(path)
    record = {"job": job.name, "file": path.name, "bytes": path.stat().st_size,
              "output_uri": job.output_uri, "endpoint": job.endpoint,
              "deployment": job.deployment, "model": job.model,
              "downloaded": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    target = path.parent / DOWNLOAD_RECORD
    partial = target.with_name(f".{DOWNLOAD_RECORD}.part")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(target)
    return target


def predictions_target(output_dir: Path, file_name: str = DEFAULT_OUTPUT_FILE) -> Path:
    """Where a download puts a job's predictions file on every target: <output_dir>/<the
    job's output file name>. A file already there is another job's: never overwritten
    (a second download of the same job stops earlier, at `downloaded_copy`)."""
    from workspace.errors import ConfigError

    target = Path(output_dir) / file_name
    if target.exists():
        owner = recorded_download(output_dir).get("job")
        whose = f"job {owner}'s predictions" if owner else "another job's predictions"
        raise ConfigError(f"'{target}' exists: the output folder holds {whose}.",
                          "Pass another --output-dir, or move that file away first.")
    return target


JOB_ENDED = ("Completed", "Failed", "Canceled")


@dataclass(frozen=True)
class JobUpdate:
    """A scoring job's state while a backend waits on it, for a display that shows more
    than a line. The counts are the local engine's; Azure ML's job API reports none
    while a job runs, so on Azure they are None and `text` says what the job waits on."""

    job: str
    status: str  # Queued | Running | Completed | Failed | Canceled
    text: str  # one line for a log: "job <name>: <state>, ..."
    mini_batches_total: int | None = None
    mini_batches_done: int | None = None  # succeeded (as JobSummary's)
    mini_batches_failed: int | None = None  # failed for good
    files_total: int | None = None
    files_done: int | None = None  # files of settled mini-batches
    files_failed: int | None = None
    rows_scored: int | None = None  # rows of succeeded mini-batches
    rows_in_progress: int | None = None  # rows of mini-batches still running
    retries: int | None = None

    @property
    def ended(self) -> bool:
        return self.status in JOB_ENDED


# The history of an endpoint's defaults, kept in the endpoint's own tags on both targets
# (why tags, and their limits: azureml_rules.HISTORY_TAGS_MAX).
HISTORY_PREFIX = "rollout."
PREVIOUS_TAG = HISTORY_PREFIX + "previous."  # .1 the newest previous default
ROLLED_BACK_TAG = HISTORY_PREFIX + "rolled_back."  # .1 the newest a rollback moved away from
HISTORY_MAX = HISTORY_TAGS_MAX


@dataclass(frozen=True)
class DefaultHistory:
    """Which deployments were the endpoint's default before, newest first (`previous`), and
    which a `rollback` moved the default away from (`rolled_back`). A name is in one list
    at most, never the current default's."""

    previous: tuple[str, ...] = ()
    rolled_back: tuple[str, ...] = ()

    @classmethod
    def from_tags(cls, tags: dict | None) -> "DefaultHistory":
        def numbered(prefix: str) -> tuple[str, ...]:
            found = {int(k[len(prefix):]): str(v) for k, v in (tags or {}).items()
                     if k.startswith(prefix) and k[len(prefix):].isdigit() and v}
            return tuple(found[n] for n in sorted(found))

        return cls(numbered(PREVIOUS_TAG), numbered(ROLLED_BACK_TAG))

    def to_tags(self) -> dict[str, str]:
        """The history as tags: the newest HISTORY_MAX entries, previous defaults first."""
        previous = self.previous[:HISTORY_MAX]
        rolled_back = self.rolled_back[:HISTORY_MAX - len(previous)]
        return {**{f"{PREVIOUS_TAG}{n}": name for n, name in enumerate(previous, 1)},
                **{f"{ROLLED_BACK_TAG}{n}": name for n, name in enumerate(rolled_back, 1)}}

    def switched(self, old: str | None, new: str, *, rollback: bool) -> "DefaultHistory":
        """The history once the default moves from `old` to `new`: `old` becomes the newest
        previous default, or, moved away from by a rollback, the newest rolled back from."""
        previous = [n for n in self.previous if n not in (old, new)]
        rolled_back = [n for n in self.rolled_back if n not in (old, new)]
        if old and old != new:
            (rolled_back if rollback else previous).insert(0, old)
        return DefaultHistory(tuple(previous), tuple(rolled_back))

    def only(self, names) -> "DefaultHistory":
        """The entries of deployments in `names` (a deleted one leaves the history)."""
        names = set(names)
        return DefaultHistory(tuple(n for n in self.previous if n in names),
                              tuple(n for n in self.rolled_back if n in names))


def with_history(tags: dict | None, history: DefaultHistory) -> dict[str, str]:
    """An endpoint's tags with its default history replaced by `history`."""
    kept = {str(k): str(v) for k, v in (tags or {}).items() if not str(k).startswith(HISTORY_PREFIX)}
    return {**kept, **history.to_tags()}


def history_tags(tags: dict | None) -> dict[str, str]:
    """The default history among an endpoint's tags."""
    return {str(k): str(v) for k, v in (tags or {}).items() if str(k).startswith(HISTORY_PREFIX)}


@dataclass(frozen=True)
class Deployment:
    """One deployment of an endpoint as the rollout sees it (from `list_deployments`)."""

    name: str
    model: str  # name:version
    created: str = ""  # ISO 8601
    is_default: bool = False
    tags: dict = field(default_factory=dict)  # smoke result: smoke, smoke_job, smoke_detail
    provisioning_state: str = "Succeeded"

    @property
    def model_version(self) -> int:
        version = self.model.rsplit(":", 1)[-1]
        return int(version) if version.isdigit() else 0

    @property
    def smoke(self) -> str:
        """passed | failed | skipped | '' (never smoke-tested, e.g. made before rollouts)."""
        return str(self.tags.get("smoke", ""))


@dataclass(frozen=True)
class DeploymentStatus(Deployment):
    """A deployment as `status` shows it: what `list_deployments` says, and its settings.
    Both targets fill every field; a setting the service does not return is None.
    `role` is the application's ("default", "rollback candidate", "" for another candidate,
    or "no candidate: <why>"), not the backend's."""

    compute: str = ""
    instance_count: int | None = None
    mini_batch_size: int | None = None
    max_concurrency_per_instance: int | None = None
    max_retries: int | None = None
    retry_timeout: int | None = None  # seconds per mini-batch attempt
    error_threshold: int | None = None
    output_action: str = ""  # append_row | summary_only (the spec's words on both targets)
    output_file_name: str | None = None  # None with summary_only
    logging_level: str = ""
    role: str = ""


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    default_deployment: str = ""  # "" when it has none
    provisioning_state: str = "Succeeded"
    description: str = ""
    scoring_uri: str | None = None  # Azure only: local jobs start through the CLI, no URI
    tags: dict = field(default_factory=dict)  # with the history of defaults (DefaultHistory)


@dataclass(frozen=True)
class ComputeStatus:
    """A cluster (locally: the record of compute.yml; jobs run as local processes)."""

    name: str
    size: str = ""
    min_instances: int | None = None
    max_instances: int | None = None
    idle_time_before_scale_down: int | None = None  # seconds
    tier: str = ""
    provisioning_state: str = "Succeeded"
    subnet: str = ""  # resource id of its subnet (private networking); '' outside a VNet
    node_public_ip: bool = True  # whether its nodes get public IP addresses

    @property
    def network(self) -> str:
        """'private (subnet <vnet>/<subnet>, no public IP)' or 'public'."""
        if not self.subnet:
            return "public" if self.node_public_ip else "public (no public IP)"
        parts = self.subnet.rstrip("/").split("/")
        where = "/".join(parts[-3::2]) if len(parts) >= 4 else self.subnet
        return f"private (subnet {where}" + (")" if self.node_public_ip else ", no public IP)")


@dataclass(frozen=True)
class TargetStatus:
    """What `Backend.describe` reports, the same fields on every target. Where the target
    keeps things: `registry` is the local MLflow registry URI (None on Azure, whose
    models are in the workspace); `workspace` and `resource_group` are Azure's (None
    locally). `endpoint` is None when it does not exist (then `deployments` is empty).
    `models` are every version of the model asked about (model.yml's) and of each model
    a deployment serves; `computes` the cluster asked about (compute.yml's) and each one a
    deployment runs on, those that exist."""

    backend: str
    endpoint_name: str
    endpoint: EndpointStatus | None = None
    deployments: tuple[DeploymentStatus, ...] = ()
    models: tuple[RegisteredModel, ...] = ()
    computes: tuple[ComputeStatus, ...] = ()
    registry: str | None = None
    workspace: str | None = None
    resource_group: str | None = None


@dataclass(frozen=True)
class JobOverrides:
    """Settings of one scoring job that replace the deployment's (`az ml batch-endpoint
    invoke` options of the same names). None: the deployment's value."""

    mini_batch_size: int | None = None
    instance_count: int | None = None
    max_retries: int | None = None
    error_threshold: int | None = None
    output_path: str | None = None  # azureml://datastores/<ds>/paths/<dir>/<file>.csv
    job_name: str | None = None
    experiment_name: str | None = None

    @property
    def output_datastore(self) -> tuple[str, str] | None:
        """(datastore, path) of output_path."""
        if not self.output_path:
            return None
        rest = self.output_path.removeprefix("azureml://datastores/")
        datastore, _, path = rest.partition("/paths/")
        return datastore, path
