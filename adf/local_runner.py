"""The local target: a Custom-activity runner that executes `adf/pipeline.json` as Batch does.

`LocalBackend.start` evaluates the activity's expressions (so a bad expression fails before
anything runs), writes the run's state under `<LOCAL_DIR>/adf/runs/<run_id>/` and hands the
run to a detached worker process (`python -m adf.local_runner <run dir>`), so a run goes on
and `status`/`logs` keep working after the CLI exits. For every attempt (policy `retry`,
`retryIntervalInSeconds`) the worker:

1. downloads every blob under `folderPath` from Azurite, flattened, into a fresh working dir;
2. writes `activity.json`, `linkedServices.json`, `datasets.json` there;
3. runs the command without a shell (its own process group), killed at the policy timeout;
4. uploads stdout/stderr to `adfjobs/<activity run id>/output/` in Azurite;
5. reads `outputs.json` (at most 2 MB) into the activity output's `customOutput`.

The task's environment gets Azurite's well-known connection string as
AZURE_STORAGE_CONNECTION_STRING; it never appears on the command line.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adf.definitions import (LOCAL_ONLY_EMPTY, Definitions, effective_parameters, fill,
                             filled, load_definitions, placeholder_values, references)
from adf.expressions import PipelineContext, evaluate
from adf.runs import (LOGS_CONTAINER, ActivityRun, Backend, PipelineRun, Progress, RunNotFound)
from adf.staging import split_folder_path
from workspace.datastore import RETRY, Datastore
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT, Settings, azurite_connection_string

RUN_FILE = "run.json"
PLAN_FILE = "plan.json"
PID_FILE = "runner.pid"
RUNNER_LOG = "runner.log"
OUTPUTS_FILE = "outputs.json"
OUTPUTS_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT = "0.12:00:00"  # ADF's default activity timeout
DEFAULT_RETRY_INTERVAL = 30
# Tasks the local "pool" runs at once (a ForEach's batchCount is capped here, as a Batch
# pool caps it at its nodes' task slots).
LOCAL_POOL_SLOTS = max(2, os.cpu_count() or 1)
# Parameters the local runner sets: this machine's interpreter, Azurite instead of a URL
# with a managed identity (the connection string is in the task environment).
LOCAL_PARAMETERS = {"python": sys.executable, "storageAccountUrl": "", "poolIdentityClientId": ""}


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


@dataclass
class ActivityPlan:
    """The activity with its expressions evaluated: what the worker executes."""

    run_id: str
    pipeline: str
    activity_name: str
    command: str
    folder_path: str
    activity: dict            # written as activity.json
    linked_services: list     # written as linkedServices.json (full resources)
    datasets: list            # written as datasets.json
    timeout_seconds: float
    retry: int
    retry_interval_seconds: float
    azurite_blob_endpoint: str
    iterations: int = 0       # ForEach iterations; 0: the activity is not in a ForEach
    batch_count: int = 1      # ForEach iterations running at once


def plan_activity(definitions: Definitions, parameters: dict[str, Any], run_id: str,
                  settings: Settings) -> ActivityPlan:
    activity = definitions.activity
    where = f"{definitions.pipeline.display_path} activity '{activity.get('name')}'"
    context = PipelineContext(definitions.pipeline.name, run_id, parameters,
                              trigger_time=now())
    type_properties = evaluate(activity.get("typeProperties", {}), context,
                               f"{where} typeProperties")
    command = type_properties.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"{where}: typeProperties.command is empty or not a string.")
    if bool(type_properties.get("folderPath")) != bool(type_properties.get("resourceLinkedService")):
        raise ConfigError(f"{where}: folderPath and resourceLinkedService go together (both or "
                          "neither).")
    policy = activity.get("policy", {})
    reference_objects = type_properties.get("referenceObjects") or {}
    if reference_objects.get("datasets"):
        raise ConfigError(f"{where}: referenceObjects.datasets is not supported by the local "
                          "runner (the trainer reads its data from folderPath).")
    linked = _referenced_linked_services(definitions, reference_objects, settings, where)
    evaluated = {**{k: v for k, v in activity.items() if k != "typeProperties"},
                 "typeProperties": type_properties}
    return ActivityPlan(
        run_id=run_id, pipeline=definitions.pipeline.name, activity_name=activity["name"],
        command=command, folder_path=type_properties.get("folderPath", ""), activity=evaluated,
        linked_services=linked, datasets=[],
        timeout_seconds=parse_timespan(policy.get("timeout", DEFAULT_TIMEOUT), f"{where} policy.timeout"),
        retry=int(policy.get("retry", 0)),
        retry_interval_seconds=float(policy.get("retryIntervalInSeconds", DEFAULT_RETRY_INTERVAL)),
        azurite_blob_endpoint=settings.azurite_blob_endpoint,
        **_plan_for_each(definitions.for_each, context, definitions.pipeline.display_path))


def _plan_for_each(for_each: dict | None, context: PipelineContext, where: str) -> dict:
    """How many iterations of the ForEach, and how many at once (at most the local slots)."""
    if for_each is None:
        return {}
    where = f"{where} ForEach '{for_each.get('name')}'"
    properties = for_each.get("typeProperties", {})
    items = evaluate(properties.get("items"), context, f"{where} items")
    if not isinstance(items, list):
        raise ConfigError(f"{where}: items evaluates to {type(items).__name__}, not an array.")
    if not items:
        raise ConfigError(f"{where}: items is empty; nothing would run.")
    parallel = 1 if properties.get("isSequential") else int(properties.get("batchCount", 20))
    return {"iterations": len(items), "batch_count": max(1, min(parallel, LOCAL_POOL_SLOTS))}


def _referenced_linked_services(definitions: Definitions, reference_objects: dict,
                                settings: Settings, where: str) -> list[dict]:
    names = references(reference_objects.get("linkedServices", []), "LinkedServiceReference")
    if not names:
        return []
    every = load_definitions(definitions.directory).linked_services
    resources = []
    for name in names:
        if name not in every:
            raise ConfigError(f"{where}: referenceObjects names linked service '{name}', which "
                              "has no file in adf/linkedServices/.")
        resources.append(fill(every[name], placeholder_values(settings)).body)
    return resources


# ------------------------------------------------------------------ backend


class LocalBackend(Backend):
    target = "local"

    def __init__(self, settings: Settings, definitions_dir: Path | None = None,
                 poll_interval: float = 0.5):
        super().__init__(settings)
        self.definitions_dir = definitions_dir
        self.poll_interval = poll_interval
        self._workers: dict[str, subprocess.Popen] = {}

    @property
    def runs_dir(self) -> Path:
        return self.settings.local_path / "adf" / "runs"

    def definitions(self) -> Definitions:
        return filled(load_definitions(self.definitions_dir, self.pipeline_file), self.settings,
                      pipeline_only=True,
                      allow_empty=LOCAL_ONLY_EMPTY)

    def folder_path(self) -> str:
        return self.definitions().folder_path

    def staging_datastore(self) -> tuple[Datastore, str]:
        container, prefix = split_folder_path(self.folder_path())
        return Datastore.from_settings(replace(self.settings, container=container)), prefix

    def logs_datastore(self) -> Datastore:
        return Datastore.from_settings(replace(self.settings, container=LOGS_CONTAINER))

    def prepare(self, progress: Progress) -> None:
        self.definitions()  # a missing setting or broken JSON fails here, before staging
        Datastore.from_settings(self.settings)  # fails fast if Azurite is not running

    def start(self, parameters: dict[str, Any]) -> str:
        definitions = self.definitions()
        local = {k: v for k, v in LOCAL_PARAMETERS.items() if k in definitions.parameters}
        values = effective_parameters(definitions, {**local, **parameters})
        run_id = str(uuid.uuid4())
        plan = plan_activity(definitions, values, run_id, self.settings)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True)
        _write_json(run_dir / PLAN_FILE, asdict(plan))
        _write_json(run_dir / RUN_FILE, asdict(PipelineRun(
            run_id, definitions.pipeline.name, "Queued", start=now(), parameters=values)))
        env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(run_dir / RUNNER_LOG, "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "adf.local_runner", str(run_dir)],
                                      cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        (run_dir / PID_FILE).write_text(str(worker.pid))
        self._workers[run_id] = worker
        self.remember(run_id)
        return run_id

    def get_run(self, run_id: str) -> PipelineRun:
        run_dir = self.runs_dir / run_id
        try:
            data = json.loads((run_dir / RUN_FILE).read_text())
        except FileNotFoundError:
            raise RunNotFound(f"No local run '{run_id}' (looked in {self.runs_dir}).",
                              "List runs with `ls` there, or start one with "
                              "`python -m adf trigger`.") from None
        run = _run_from_dict(data)
        if not run.is_terminal and not self._worker_alive(run_id, run_dir):
            run.status = "Failed"
            run.message = (f"The local runner stopped before the run finished; see "
                           f"{run_dir / RUNNER_LOG}.")
        return run

    def _worker_alive(self, run_id: str, run_dir: Path) -> bool:
        worker = self._workers.get(run_id)
        if worker is not None:
            return worker.poll() is None
        try:
            os.kill(int((run_dir / PID_FILE).read_text()), 0)
            return True
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return False
        except PermissionError:
            return True


def _run_from_dict(data: dict) -> PipelineRun:
    activities = [ActivityRun(**a) for a in data.pop("activities", [])]
    return PipelineRun(**data, activities=activities)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


# ------------------------------------------------------------------ worker


class _Worker:
    """Executes one planned run; the only writer of its run.json."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.plan = ActivityPlan(**json.loads((run_dir / PLAN_FILE).read_text()))
        self.run = _run_from_dict(json.loads((run_dir / RUN_FILE).read_text()))
        self.connection_string = azurite_connection_string(self.plan.azurite_blob_endpoint)
        self.lock = threading.RLock()  # ForEach iterations share run.json

    def save(self) -> None:
        with self.lock:
            _write_json(self.run_dir / RUN_FILE, asdict(self.run))

    def container(self, name: str) -> Datastore:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        service = BlobServiceClient.from_connection_string(
            self.connection_string, retry_policy=ExponentialRetry(**RETRY), connection_timeout=5)
        return Datastore(service.get_container_client(name))

    def execute(self) -> None:
        self.run.status = "InProgress"
        self.save()
        if self.plan.iterations:  # a ForEach: each iteration is a task of its own, in parallel
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.plan.batch_count) as pool:
                outcomes = list(pool.map(lambda _: self.run_activity(), range(self.plan.iterations)))
        else:
            outcomes = [self.run_activity()]
        failed = [a for a in outcomes if a.status != "Succeeded"]
        self.run.status = failed[0].status if failed else "Succeeded"
        if failed:
            self.run.message = (f"Operation on target {self.plan.activity_name} failed: "
                                f"{failed[0].error_message}")
        self.run.end = now()
        started = datetime.fromisoformat(self.run.start.replace("Z", "+00:00"))
        self.run.duration_ms = int((datetime.now(timezone.utc) - started).total_seconds() * 1000)
        self.save()

    def run_activity(self) -> ActivityRun:
        """The activity with its policy's retries; returns its last attempt."""
        for attempt in range(self.plan.retry + 1):
            if attempt:
                time.sleep(self.plan.retry_interval_seconds)
            activity = ActivityRun(str(uuid.uuid4()), self.plan.activity_name, "InProgress",
                                   start=now())
            with self.lock:
                self.run.activities.append(activity)
                self.save()
            try:
                self.attempt(activity)
            except Exception as exc:  # the run must end in a state, whatever happened
                traceback.print_exc()
                activity.status = "Failed"
                activity.error = _error(f"The local runner failed: {exc}", "SystemError",
                                        self.plan.activity_name)
            activity.end = now()
            with self.lock:
                self.save()
            if activity.status == "Succeeded":
                break
        return activity

    def attempt(self, activity: ActivityRun) -> None:
        workdir = self.run_dir / activity.activity_run_id / "wd"
        workdir.mkdir(parents=True)
        if self.plan.folder_path:
            self.download_folder(workdir)
        for name, content in (("activity.json", self.plan.activity),
                              ("linkedServices.json", self.plan.linked_services),
                              ("datasets.json", self.plan.datasets)):
            (workdir / name).write_text(json.dumps(content, indent=2))
        stdout_path = workdir.parent / "stdout.txt"
        stderr_path = workdir.parent / "stderr.txt"
        exit_code, failure = self.run_command(workdir, activity, stdout_path, stderr_path)
        urls = self.upload_logs(activity, stdout_path, stderr_path)
        activity.output = {"exitcode": exit_code, "outputs": urls,
                           "effectiveIntegrationRuntime": "local"}
        if failure is None and exit_code == 0:
            custom, failure = self.read_outputs(workdir)
            if custom is not None:
                activity.output["customOutput"] = custom
        if failure is None and exit_code != 0:
            last_line = _last_line(stderr_path)
            failure = (f"Task exited with code {exit_code}."
                       + (f" Last line of stderr: {last_line}" if last_line else ""))
        if failure is None:
            activity.status = "Succeeded"
        else:
            activity.status = "Failed"
            activity.error = _error(failure, "UserError", self.plan.activity_name)

    def download_folder(self, workdir: Path) -> None:
        container, prefix = split_folder_path(self.plan.folder_path)
        store = self.container(container)
        start = f"{prefix}/" if prefix else ""
        blobs = list(store.list(start))
        if not blobs:
            raise RuntimeError(f"folderPath '{self.plan.folder_path}' holds no files; stage them "
                               "with `python -m adf stage`.")
        for blob in sorted(blobs, key=lambda b: b.name):  # flattened, as on a Batch node
            store.download_file(blob.name, workdir / blob.name.rsplit("/", 1)[-1])

    def run_command(self, workdir: Path, activity: ActivityRun, stdout_path: Path,
                    stderr_path: Path) -> tuple[int | None, str | None]:
        try:
            argv = shlex.split(self.plan.command)
        except ValueError as exc:
            return None, f"The command cannot be split into arguments ({exc}): {self.plan.command}"
        shared = self.run_dir.parent.parent / "node"
        shared.mkdir(parents=True, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(shared),
               "AZ_BATCH_TASK_WORKING_DIR": str(workdir), "AZ_BATCH_NODE_SHARED_DIR": str(shared),
               "AZ_BATCH_TASK_ID": activity.activity_run_id,
               "AZ_BATCH_JOB_ID": f"adfv2-{self.plan.pipeline}",
               "AZURE_STORAGE_CONNECTION_STRING": self.connection_string}
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            try:
                process = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=err, start_new_session=True)
            except OSError as exc:
                err.write(f"{exc}\n".encode())
                return None, f"The command could not start: {argv[0]}: {exc.strerror}."
            try:
                return process.wait(timeout=self.plan.timeout_seconds), None
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return None, (f"Activity timed out after {self.plan.timeout_seconds:.0f} s "
                              "(policy.timeout); the task was killed.")

    def upload_logs(self, activity: ActivityRun, *paths: Path) -> list[str]:
        store = self.container(LOGS_CONTAINER)
        store.ensure_container()
        urls = []
        for path in paths:
            name = f"{activity.activity_run_id}/output/{path.name}"
            store.upload_file(path, name)
            urls.append(f"{self.plan.azurite_blob_endpoint}/{LOGS_CONTAINER}/{name}")
        return urls

    @staticmethod
    def read_outputs(workdir: Path) -> tuple[Any, str | None]:
        path = workdir / OUTPUTS_FILE
        if not path.is_file():
            return None, None
        size = path.stat().st_size
        if size > OUTPUTS_MAX_BYTES:
            return None, (f"{OUTPUTS_FILE} is {size} bytes; the limit of customOutput is "
                          f"{OUTPUTS_MAX_BYTES} bytes.")
        try:
            return json.loads(path.read_text()), None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return None, f"{OUTPUTS_FILE} is not valid JSON ({exc})."


def _error(message: str, failure_type: str, target: str) -> dict:
    return {"errorCode": "2500", "message": message, "failureType": failure_type,
            "target": target}


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m adf.local_runner <run directory>", file=sys.stderr)
        return 2
    worker = _Worker(Path(argv[0]))
    try:
        worker.execute()
    except Exception as exc:
        traceback.print_exc()
        worker.run.status = "Failed"
        worker.run.message = f"The local runner failed: {exc}"
        worker.run.end = now()
        worker.save()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
