"""Pipeline runs: the entity, the one backend interface, and following a run to its end.

A backend is where runs happen: `LocalBackend` (the Custom-activity runner on this
machine, Azurite as storage) or `AzureBackend` (Data Factory + Batch). Nothing here
branches on the target.
"""
from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse

from workspace.errors import ConfigError, NotFound, OperationFailed, ProjectError
from workspace.settings import Settings

RUN_FILE = "run.json"  # a local run's record in its folder
PID_FILE = "runner.pid"  # the process that runs it (pid and start time)
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
LOGS_CONTAINER = "adfjobs"
Progress = Callable[[str], None]


class RunNotFound(NotFound):
    """No run with that id."""


class RunFailed(OperationFailed):
    """The pipeline run ended Failed or Cancelled."""


@dataclass
class ActivityRun:
    """One attempt of the Custom activity (ADF makes a new activity run per retry)."""

    activity_run_id: str
    name: str
    status: str
    output: dict = field(default_factory=dict)
    error: dict = field(default_factory=dict)
    start: str = ""
    end: str = ""

    @property
    def custom_output(self) -> Any:
        return self.output.get("customOutput")

    @property
    def exit_code(self) -> int | None:
        return self.output.get("exitcode")

    @property
    def error_message(self) -> str:
        return (self.error or {}).get("message", "")

    @property
    def log_urls(self) -> list[str]:
        return list(self.output.get("outputs") or [])


@dataclass
class PipelineRun:
    run_id: str
    pipeline: str
    status: str
    message: str = ""
    start: str = ""
    end: str = ""
    duration_ms: int | None = None
    parameters: dict = field(default_factory=dict)
    activities: list[ActivityRun] = field(default_factory=list)
    # What the run returned: {"pipelineReturnValue": {...}} (a Set Variable activity's
    # pipelineReturnValue, what an Execute Pipeline activity reads); {} when none.
    output: dict = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def last_activity(self) -> ActivityRun | None:
        return self.activities[-1] if self.activities else None


@dataclass
class TaskLogs:
    """stdout/stderr of one activity run, read from the `adfjobs` container."""

    activity_run_id: str
    stdout: str = ""
    stderr: str = ""
    missing: list[str] = field(default_factory=list)


class Backend(ABC):
    """The one interface of a run target."""

    target: str = "abstract"
    poll_interval: float = 2.0
    pipeline_file: str = "pipeline.json"  # the file of adf/ this backend runs

    def __init__(self, settings: Settings):
        self.settings = settings

    @abstractmethod
    def definitions(self):
        """The definitions of adf/ with this target's placeholders filled."""

    @abstractmethod
    def staging_datastore(self):
        """(Datastore over the folderPath's container, prefix inside it)."""

    @abstractmethod
    def prepare(self, progress: Progress) -> None:
        """Make the definitions in adf/ the ones that run (Azure: publish them)."""

    @abstractmethod
    def start(self, parameters: dict[str, Any]) -> str:
        """Start a run with these typed parameter values; returns the run id."""

    @abstractmethod
    def get_run(self, run_id: str) -> PipelineRun:
        """The run and its activity runs (RunNotFound if unknown)."""

    @abstractmethod
    def list_runs(self, limit: int) -> list[PipelineRun]:
        """The most recent runs of every pipeline, newest first, at most `limit` (their
        activity runs are not read: `get_run` has them)."""

    @abstractmethod
    def cancel(self, run_id: str) -> PipelineRun:
        """Stop the run and its task; returns the run as it stands after the request."""

    @abstractmethod
    def logs_datastore(self):
        """A Datastore over the `adfjobs` container of the staging storage."""

    def task_slots(self) -> tuple[int | None, str]:
        """How many tasks the pool runs at once (None: unknown here), and why."""
        return None, "the pool's size is unknown"

    def waiting_reason(self, run: PipelineRun) -> str | None:
        """Why the run is not done yet, if the backend can tell (Azure: the Batch pool)."""
        return None

    # ------------------------------------------------------------------ shared

    def logs(self, activity: ActivityRun) -> TaskLogs:
        """stdout.txt/stderr.txt of the activity run, from its output's URLs."""
        logs = TaskLogs(activity.activity_run_id)
        urls = activity.log_urls
        if not urls:
            logs.missing.append("the activity output lists no log files (the task never ran)")
            return logs
        store = self.logs_datastore()
        for url in urls:
            name = blob_name_in(url, store.container)
            stream = "stderr" if name.endswith("stderr.txt") else "stdout"
            if not store.exists(name):
                logs.missing.append(f"{store.container}/{name}")
                continue
            setattr(logs, stream, store.read_bytes(name).decode("utf-8", errors="replace"))
        return logs

    @property
    def last_run_file(self) -> Path:
        return self.settings.local_path / "adf" / f"last-run-{self.target}"

    def remember(self, run_id: str) -> None:
        self.last_run_file.parent.mkdir(parents=True, exist_ok=True)
        self.last_run_file.write_text(run_id)

    def last_run_id(self) -> str:
        try:
            return self.last_run_file.read_text().strip()
        except FileNotFoundError:
            raise RunNotFound(f"No run of the {self.target} target is known on this machine.",
                              "Start one with `python -m adf trigger`, or pass a RUN_ID.") from None


def batch_job_started(output: dict) -> str | None:
    """The name of the batch-endpoint job an activity's output is (the answer of an invoke:
    a BatchJobResource under `.../batchEndpoints/<endpoint>/.../jobs/<name>`), else None."""
    if not isinstance(output, dict):
        return None
    if str(output.get("type", "")).endswith("/jobs") and "/batchEndpoints/" in str(
            output.get("id", "")) and output.get("name"):
        return str(output["name"])
    return None


def blob_name_in(url: str, container: str) -> str:
    """The blob name of an `https://<host>/[<account>/]<container>/<name>` URL."""
    path = unquote(urlparse(url).path).lstrip("/")
    marker = f"{container}/"
    index = path.find(marker)
    if index < 0:
        raise ProjectError(f"Log URL {url} is not in container '{container}'.")
    return path[index + len(marker):]


def follow(backend: Backend, run_id: str, *, on_status: Callable[[PipelineRun], None],
           on_reason: Callable[[str], None], poll_seconds: float = 2.0,
           timeout_seconds: float | None = None) -> PipelineRun:
    """Poll the run until it is terminal, reporting each status change and waiting reason."""
    last_status, last_reason = None, None
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    while True:
        run = backend.get_run(run_id)
        if run.status != last_status:
            on_status(run)
            last_status = run.status
        if run.is_terminal:
            return run
        reason = backend.waiting_reason(run)
        if reason and reason != last_reason:
            on_reason(reason)
            last_reason = reason
        if deadline is not None and time.monotonic() > deadline:
            raise OperationFailed(f"Run {run_id} is still {run.status} after {timeout_seconds:.0f} s.",
                                  f"Follow it with `python -m adf status {run_id}`.")
        time.sleep(poll_seconds)


def tail(text: str, lines: int) -> str:
    kept = text.rstrip("\n").splitlines()[-lines:] if lines > 0 else text.splitlines()
    return "\n".join(kept)

def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timespan(text: str, where: str) -> float:
    """ADF's `d.hh:mm:ss` (days optional) in seconds."""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})", str(text).strip())
    if not match:
        raise ConfigError(f"{where} is '{text}', not a timespan d.hh:mm:ss.",
                          "Example: 0.01:00:00 for one hour.")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def run_from_dict(data: dict) -> PipelineRun:
    activities = [ActivityRun(**a) for a in data.pop("activities", [])]
    return PipelineRun(**data, activities=activities)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
