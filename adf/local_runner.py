"""The local target: a Custom-activity runner that executes `adf/pipeline.json` as Batch does.

`LocalBackend.start` evaluates the activity's expressions (so a bad expression fails before
anything runs), writes the run's state under `<LOCAL_DIR>/adf/runs/<run_id>/` and hands the
run to a detached worker process (`python -m adf.local_runner <run dir>`), so a run goes on
and `status`/`logs` keep working after the CLI exits. For every attempt (policy `retry`,
`retryIntervalInSeconds`) the worker:

1. downloads every blob under `folderPath` from Azurite, flattened, into a fresh working dir;
2. writes `activity.json`, `linkedServices.json`, `datasets.json` there;
3. runs the command without a shell (its own process group), killed at the policy timeout,
   with the runner (parent-death signal; the group is killed whenever the runner exits) and
   on `python -m adf cancel` (SIGTERM to the runner);
4. uploads stdout/stderr to `adfjobs/<activity run id>/output/` in Azurite;
5. reads `outputs.json` (at most 2 MB) into the activity output's `customOutput`.

The task's environment gets Azurite's well-known connection string as
AZURE_STORAGE_CONNECTION_STRING; it never appears on the command line. TMPDIR is a folder of
the attempt, removed when the task ends however it ends.

A runner killed outright (SIGKILL, OOM) cannot record anything: the next look at the run
(`status`, `cancel`) finds the runner gone, kills what is left of its task and records the
run as Failed.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adf.activity_plan import (LOCAL_POOL_SLOTS, PLAN_FILE, RUNNER_LOG, ActivityPlan,
                               local_parameters, plan_activity)
from adf.definitions import (DEFINITIONS_DIR, LOCAL_ONLY_EMPTY, Definitions, effective_parameters,
                             executed_folder_path, fill, filled, load_definitions,
                             placeholder_values)
from adf.runs import (LOGS_CONTAINER, PID_FILE, RUN_FILE, ActivityRun, Backend, PipelineRun,
                      Progress, RunNotFound, now)
from adf.runs import run_from_dict as _run_from_dict
from adf.runs import write_json as _write_json
from adf.staging import split_folder_path
from workspace.datastore import Datastore
from workspace.errors import ProjectError
from workspace.names import PIPELINE_RUN_ID
from workspace.processes import die_with, kill_group, live_pid, write_pid_file
from workspace.settings import REPO_ROOT, Settings, azurite_connection_string

TASK_PID_FILE = "task.pid"
CANCEL_GRACE_SECONDS = 10
OUTPUTS_FILE = "outputs.json"
OUTPUTS_MAX_BYTES = 2 * 1024 * 1024


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

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run: only a run id (a GUID) names one, never a path."""
        return self.runs_dir / PIPELINE_RUN_ID.check(run_id, "run id")

    def definitions(self) -> Definitions:
        from adf.local_flow import FLOW_LOCAL_EMPTY

        raw = load_definitions(self.definitions_dir, self.pipeline_file)
        return filled(raw, self.settings, pipeline_only=True,
                      allow_empty=LOCAL_ONLY_EMPTY | FLOW_LOCAL_EMPTY)

    def pipelines(self) -> dict[str, dict]:
        """Every pipeline of the definitions folder by name, filled (Execute Pipeline's targets)."""
        from adf.definitions import pipeline_files
        from adf.local_flow import FLOW_LOCAL_EMPTY

        directory = self.definitions_dir or DEFINITIONS_DIR
        values = placeholder_values(self.settings)
        return {name: fill(load_definitions(directory, file).pipeline, values,
                           LOCAL_ONLY_EMPTY | FLOW_LOCAL_EMPTY).body
                for name, file in pipeline_files(directory).items()}

    def folder_path(self) -> str:
        """The folder staged for a run: the Custom activity's, or for a control-flow pipeline
        that of the pipelines it executes ("" if it runs no Custom activity)."""
        from adf.control_flow import is_control_flow

        definitions = self.definitions()
        if not is_control_flow(definitions.pipeline.body):
            return definitions.folder_path
        return executed_folder_path(definitions.pipeline.body, self.pipelines(),
                                    definitions.pipeline.display_path)

    def task_slots(self) -> tuple[int, str]:
        return LOCAL_POOL_SLOTS, (f"the local pool runs {LOCAL_POOL_SLOTS} tasks at once "
                                  "(this machine's cores)")

    def staging_datastore(self) -> tuple[Datastore, str]:
        container, prefix = split_folder_path(self.folder_path())
        return Datastore.from_settings(replace(self.settings, container=container)), prefix

    def logs_datastore(self) -> Datastore:
        return Datastore.from_settings(replace(self.settings, container=LOGS_CONTAINER))

    def prepare(self, progress: Progress) -> None:
        self.definitions()  # a missing setting or broken JSON fails here, before staging
        Datastore.from_settings(self.settings)  # fails fast if Azurite is not running

    def start(self, parameters: dict[str, Any]) -> str:
        from adf.control_flow import is_control_flow

        definitions = self.definitions()
        values = effective_parameters(definitions, {**local_parameters(definitions, self.settings),
                                                    **parameters})
        run_id = str(uuid.uuid4())
        if is_control_flow(definitions.pipeline.body):
            from adf.local_flow import FLOW_FILE, plan_flow

            plan_file, plan = FLOW_FILE, plan_flow(definitions, self.pipelines(), values,
                                                   self.settings, run_id)
        else:
            plan_file, plan = PLAN_FILE, asdict(plan_activity(definitions, values, run_id,
                                                              self.settings))
        run_dir = self.run_dir(run_id)
        run_dir.mkdir(parents=True)
        _write_json(run_dir / plan_file, plan)
        _write_json(run_dir / RUN_FILE, asdict(PipelineRun(
            run_id, definitions.pipeline.name, "Queued", start=now(), parameters=values)))
        env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(run_dir / RUNNER_LOG, "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "adf.local_runner", str(run_dir)],
                                      cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        write_pid_file(run_dir / PID_FILE, worker.pid)
        self._workers[run_id] = worker
        self.remember(run_id)
        return run_id

    def get_run(self, run_id: str) -> PipelineRun:
        run_dir = self.run_dir(run_id)
        try:
            data = json.loads((run_dir / RUN_FILE).read_text())
        except FileNotFoundError:
            raise RunNotFound(f"No local run '{run_id}' (looked in {self.runs_dir}).",
                              "List runs with `python -m adf runs list`, or start one "
                              "with `python -m adf trigger`.") from None
        run = _run_from_dict(data)
        if not run.is_terminal and not self._worker_alive(run_id, run_dir):
            self._bury(run, run_dir)
        return run

    def list_runs(self, limit: int) -> list[PipelineRun]:
        """Every run under runs_dir, newest first; a run whose runner died is recorded as
        Failed on the way (as `get_run` does)."""
        found = []
        for run_file in self.runs_dir.glob(f"*/{RUN_FILE}") if self.runs_dir.is_dir() else ():
            try:
                found.append(_run_from_dict(json.loads(run_file.read_text())))
            except (OSError, ValueError, TypeError):
                continue  # a run being created, or not a run folder
        found.sort(key=lambda run: run.start, reverse=True)
        return [self.get_run(run.run_id) if not run.is_terminal else run
                for run in found[:limit]]

    def _bury(self, run: PipelineRun, run_dir: Path) -> None:
        """The runner died without recording an end: stop what is left of its task, clean the
        task's scratch space and record the run as Failed (nobody else writes run.json now)."""
        for activity in run.activities:
            _stop_task(run_dir / activity.activity_run_id, signal.SIGKILL)
            if activity.status in ("InProgress", "Queued"):
                activity.status, activity.end = "Failed", now()
                activity.error = _error("The local runner stopped; the task was killed.",
                                        "SystemError", activity.name)
        run.status, run.end = "Failed", now()
        run.message = (f"The local runner stopped before the run finished; see "
                       f"{run_dir / RUNNER_LOG}.")
        _write_json(run_dir / RUN_FILE, asdict(run))

    def _worker_alive(self, run_id: str, run_dir: Path) -> bool:
        worker = self._workers.get(run_id)
        if worker is not None:
            return worker.poll() is None
        return live_pid(run_dir / PID_FILE, "adf.local_runner") is not None

    def cancel(self, run_id: str) -> PipelineRun:
        run = self.get_run(run_id)
        if run.is_terminal:
            return run
        run_dir = self.run_dir(run_id)
        pid = live_pid(run_dir / PID_FILE, "adf.local_runner")
        if pid is not None:
            os.kill(pid, signal.SIGTERM)  # the runner stops its task and records Cancelled
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS + 20
        while not run.is_terminal and time.monotonic() < deadline:
            time.sleep(0.1)
            run = self.get_run(run_id)
        if not run.is_terminal:
            raise ProjectError(f"Run {run_id} did not stop within {deadline:.0f} s of the cancel.",
                               f"See {run_dir / RUNNER_LOG}.")
        return run

    def provenance_problem(self, adf: dict) -> str | None:
        """Why a model made by this pipeline run and attempt must not be used, or None."""
        run_id = adf.get("pipeline_run_id")
        if not PIPELINE_RUN_ID.is_valid(run_id) or not (self.run_dir(run_id) / RUN_FILE).exists():
            return None  # not a run of this machine's local target
        run = self.get_run(run_id)
        if run.status != "Succeeded":
            return f"its pipeline run {run_id} is {run.status}"
        task = adf.get("batch_task_id")
        last = run.last_activity
        if task and last is not None and task != last.activity_run_id:
            attempt = next((a for a in run.activities if a.activity_run_id == task), None)
            return (f"it was made by attempt {task} of pipeline run {run_id}, which "
                    f"{'was ' + attempt.status if attempt else 'is not one of its attempts'}")
        return None


def _stop_task(attempt_dir: Path, signum: int) -> None:
    """Signal the task's process group if the pid file names that very task, and remove the
    task's scratch space once it is gone."""
    pid = live_pid(attempt_dir / TASK_PID_FILE)
    if pid is not None:
        kill_group(pid, signum)
    if signum == signal.SIGKILL:
        shutil.rmtree(attempt_dir / "tmp", ignore_errors=True)


# ------------------------------------------------------------------ worker


class Cancelled(Exception):
    """Raised in the runner by SIGTERM (`python -m adf cancel`)."""


class _Worker:
    """Executes one planned run; the only writer of its run.json."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.plan = ActivityPlan(**json.loads((run_dir / PLAN_FILE).read_text()))
        self.run = _run_from_dict(json.loads((run_dir / RUN_FILE).read_text()))
        self.connection_string = azurite_connection_string(self.plan.azurite_blob_endpoint)
        self.lock = threading.RLock()  # ForEach iterations share run.json
        self.outcomes: list[ActivityRun] = []  # the last attempt of each task that ended
        self.cancelled = False

    def on_sigterm(self, signum, frame) -> None:
        if not self.cancelled:  # once: a second SIGTERM must not break the clean-up
            self.cancelled = True
            raise Cancelled()

    def save(self) -> None:
        with self.lock:
            _write_json(self.run_dir / RUN_FILE, asdict(self.run))

    def container(self, name: str) -> Datastore:
        return Datastore.on_azurite(self.plan.azurite_blob_endpoint, name)

    def execute(self) -> None:
        self.run.status = "InProgress"
        self.save()
        try:
            if self.plan.iterations:  # a ForEach: each iteration is a task of its own
                self.run_for_each()
            else:
                self.outcomes.append(self.run_activity())
        except Cancelled:
            pass
        self.finish()

    def run_activity(self) -> ActivityRun:
        """The activity with its policy's retries; returns its last attempt."""
        for attempt in range(self.plan.retry + 1):
            if attempt:
                time.sleep(self.plan.retry_interval_seconds)
            activity = self.attempt_once()
            if activity.status == "Succeeded":
                break
        return activity

    def run_for_each(self) -> None:
        """The iterations in parallel, at most batch_count at once. SIGTERM arrives in this
        (the main) thread: every running task is stopped, then the threads end."""
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(self.plan.batch_count)
        try:
            futures = [pool.submit(self.run_activity) for _ in range(self.plan.iterations)]
            for future in futures:
                self.outcomes.append(future.result())
        finally:
            if self.cancelled:
                for activity in list(self.run.activities):
                    if activity.status == "InProgress":
                        _stop_task(self.run_dir / activity.activity_run_id, signal.SIGTERM)
            pool.shutdown(wait=True, cancel_futures=True)

    def attempt_once(self) -> ActivityRun:
        activity = ActivityRun(str(uuid.uuid4()), self.plan.activity_name, "InProgress",
                               start=now())
        with self.lock:
            self.run.activities.append(activity)
            self.save()
        try:
            self.attempt(activity)
        except Cancelled:
            self.cancel_activity(activity)
            raise
        except Exception as exc:  # the run must end in a state, whatever happened
            traceback.print_exc()
            activity.status = "Failed"
            activity.error = _error(f"The local runner failed: {exc}", "SystemError",
                                    self.plan.activity_name)
        finally:
            activity.end = now()
            self.save()
        if self.cancelled:
            self.cancel_activity(activity)
            raise Cancelled()
        return activity

    def cancel_activity(self, activity: ActivityRun) -> None:
        activity.status = "Cancelled"
        activity.error = _error("Cancelled (python -m adf cancel); the task was stopped.",
                                "UserError", self.plan.activity_name)

    def finish(self) -> None:
        for activity in self.run.activities:
            if activity.status == "InProgress":  # SIGTERM hit between steps
                self.cancel_activity(activity)
                activity.end = activity.end or now()
        ends = self.outcomes or self.run.activities[-1:]
        last = next((a for a in ends if a.status != "Succeeded"), ends[-1] if ends else None)
        self.run.status = "Cancelled" if self.cancelled else last.status
        if self.run.status != "Succeeded":
            reason = last.error_message if last else "cancelled before the activity started"
            self.run.message = f"Operation on target {self.plan.activity_name} " \
                               f"{'was cancelled' if self.cancelled else 'failed'}: {reason}"
        self.run.end = now()
        started = datetime.fromisoformat(self.run.start.replace("Z", "+00:00"))
        self.run.duration_ms = int((datetime.now(timezone.utc) - started).total_seconds() * 1000)
        self.save()

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
        if failure is None and exit_code != 0 and not self.cancelled:
            last_line = _last_line(stderr_path)
            failure = (f"Task exited with code {exit_code}."
                       + (f" Last line of stderr: {last_line}" if last_line else ""))
        activity.output = {"exitcode": exit_code, "outputs": [],
                           "effectiveIntegrationRuntime": "local"}
        try:
            activity.output["outputs"] = self.upload_logs(activity, stdout_path, stderr_path)
        except ProjectError as exc:  # the task's own error stays the headline
            failure = (f"{failure} " if failure else "") + (
                f"Its logs could not be uploaded ({exc}); they are in {workdir.parent}.")
        if failure is None and exit_code == 0:
            custom, failure = self.read_outputs(workdir)
            if custom is not None:
                activity.output["customOutput"] = custom
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
        scratch = workdir.parent / "tmp"
        scratch.mkdir()
        env["TMPDIR"] = str(scratch)
        with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
            try:
                process = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                           stdout=out, stderr=err, start_new_session=True,
                                           preexec_fn=die_with(os.getpid(), exit_code=137))
            except OSError as exc:
                err.write(f"{exc}\n".encode())
                return None, f"The command could not start: {argv[0]}: {exc.strerror}."
            write_pid_file(workdir.parent / TASK_PID_FILE, process.pid)
            try:
                return process.wait(timeout=self.plan.timeout_seconds), None
            except subprocess.TimeoutExpired:
                return None, (f"Activity timed out after {self.plan.timeout_seconds:.0f} s "
                              "(policy.timeout); the task was killed.")
            except Cancelled:
                kill_group(process.pid, signal.SIGTERM)  # the task may clean up
                try:
                    process.wait(timeout=CANCEL_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    pass
                return process.returncode, None
            finally:  # whatever ended the wait, nothing of the task outlives it
                kill_group(process.pid, signal.SIGKILL)
                process.wait()
                shutil.rmtree(scratch, ignore_errors=True)

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
    from adf.local_flow import FLOW_FILE

    if (Path(argv[0]) / FLOW_FILE).is_file():
        from adf.local_flow import main as flow_main

        return flow_main(Path(argv[0]))
    worker = _Worker(Path(argv[0]))
    signal.signal(signal.SIGTERM, worker.on_sigterm)
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
