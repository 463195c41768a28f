"""The local runner for pipelines with control flow (adf/score-pipeline.json, ...): the worker
process side of `LocalBackend` for them, in `<LOCAL_DIR>/adf/runs/<run id>/`.

Before the run (`plan_flow`, in the CLI's process): every activity, dependency, variable
and expression is checked (`adf.control_flow.check_pipeline`), for the pipeline and every
pipeline it runs through Execute Pipeline, and the plan is written to `flow.json`.

The worker (`python -m adf.local_runner <run dir>`, detached) starts the local batch-endpoint
API (`python -m deployer api`, a child that dies with the worker), points the pipeline's
Azure ML parameters at it (`invocationUri`, `workspaceUri`, `historyUri`; `endpoint` when
empty: the endpoint of deployer/specs/endpoint.yml) and runs the activities
(`adf.control_flow.FlowRunner`). A Web activity with MSI authentication presents the API's
local token. Execute Pipeline runs the child pipeline in this process as a run of its own
(its own run folder: `status`/`logs` show it). SIGTERM (`python -m adf cancel`) stops the run
where it is and cancels every scoring job the run started (Jobs - Cancel), then the run ends
Cancelled.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from adf.control_flow import (FlowHooks, FlowResult, FlowRunner, check_pipeline,
                              is_control_flow)
from adf.definitions import Definitions, Document, effective_parameters, executed_pipelines
from adf.expressions import UNKNOWN
from adf.runs import (PID_FILE, RUN_FILE, ActivityRun, PipelineRun, batch_job_started, now,
                      run_from_dict, write_json)
from workspace.errors import ConfigError
from workspace.processes import die_with
from workspace.settings import REPO_ROOT, Settings

FLOW_FILE = "flow.json"
API_READY_FILE = "api.json"
API_LOG = "api.log"
API_START_SECONDS = 60
# Parameters of a scoring pipeline that name where Azure ML is: the deployment's on Azure
# (filled from .env), the local API's here.
SERVICE_PARAMETERS = ("invocationUri", "workspaceUri", "historyUri")
# Azure ML settings the pipelines' defaults name (score-iris's, deploy-iris's) that the
# local target leaves empty: the local API and the local deployer stand for them.
FLOW_LOCAL_EMPTY = frozenset({"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AML_WORKSPACE",
                              "AZURE_LOCATION", "BATCH_ENDPOINT_NAME"})


def plan_flow(definitions, pipelines: dict[str, dict], values: dict, settings: Settings,
              run_id: str) -> dict:
    """The checked plan of a control-flow run (raises ConfigError naming what is refused)."""
    where = definitions.pipeline.display_path
    check_pipeline(definitions.pipeline.body, values, where, pipelines)
    for name, body in pipelines.items():
        if name != definitions.pipeline.name and is_control_flow(body):
            declared = body["properties"].get("parameters") or {}
            check_pipeline(body, {n: spec.get("defaultValue", UNKNOWN)
                                  for n, spec in declared.items()},
                           f"pipeline '{name}'", pipelines)
    for name in executed_pipelines(definitions.pipeline.body, pipelines):
        if not is_control_flow(pipelines[name]):  # train-iris, deploy-iris: as the runner plans them
            from adf.activity_plan import local_parameters, plan_activity

            child = Definitions(definitions.directory,
                                Document(Path(f"pipeline '{name}'"), pipelines[name]), {}, {})
            plan_activity(child, effective_parameters(child, local_parameters(child, settings)),
                          run_id, settings)
    return {"run_id": run_id, "pipeline": definitions.pipeline.name, "parameters": values,
            "pipelines": pipelines,
            "settings": {f.name: getattr(settings, f.name) for f in fields(Settings)}}


class FlowWorker:
    """Executes one planned control-flow run; the only writer of its run.json (and of its
    children's)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.plan = json.loads((run_dir / FLOW_FILE).read_text())
        self.run = run_from_dict(json.loads((run_dir / RUN_FILE).read_text()))
        self.settings = Settings(**self.plan["settings"])
        self.cancelled = threading.Event()
        self.started_jobs: list[str] = []
        self.api: dict = {}
        self.api_process: subprocess.Popen | None = None
        self.lock = threading.RLock()

    def on_sigterm(self, signum, frame) -> None:
        self.cancelled.set()

    def execute(self) -> None:
        self.run.status = "InProgress"
        self.save(self.run, self.run_dir)
        try:
            self.start_api()
            result = self.run_pipeline(self.run, self.run_dir)
        except ConfigError as exc:
            result = FlowResult("Failed", f"{exc.message} {exc.hint or ''}".strip())
        finally:
            if self.cancelled.is_set():
                self.cancel_jobs()
            self.stop_api()
        self.finish(self.run, self.run_dir, result)

    # --------------------------------------------------------------- runs

    def run_pipeline(self, run: PipelineRun, run_dir: Path) -> FlowResult:
        body = self.plan["pipelines"][run.pipeline]
        run.parameters = self.local_parameters(body, run.parameters)
        self.save(run, run_dir)

        def record(activity: ActivityRun) -> None:
            with self.lock:
                for index, known in enumerate(run.activities):
                    if known.activity_run_id == activity.activity_run_id:
                        run.activities[index] = activity
                        break
                else:
                    run.activities.append(activity)
                self.save(run, run_dir)

        hooks = FlowHooks(record=record, http=_http, token=self.token,
                          run_child=self.run_child, cancelled=self.cancelled,
                          on_web_output=self.note_job)
        result = FlowRunner(body, run.parameters, run.run_id, hooks,
                            trigger_time=run.start).run()
        if self.cancelled.is_set():
            result.status = "Cancelled"
        return result

    def run_child(self, pipeline: str, given: dict) -> tuple[str, FlowResult]:
        body = self.plan["pipelines"][pipeline]
        definitions = Definitions(Path("."), Document(Path(f"{pipeline}.json"), body), {}, {})
        if not is_control_flow(body):
            return self.run_custom_child(definitions, given)
        values = effective_parameters(definitions, given)
        child = PipelineRun(str(uuid.uuid4()), pipeline, "InProgress", start=now(),
                            parameters=values)
        child_dir = self.run_dir.parent / child.run_id
        child_dir.mkdir(parents=True)
        # the same runner runs it: while it lives, the child is not taken for a dead run
        shutil.copyfile(self.run_dir / PID_FILE, child_dir / PID_FILE)
        self.save(child, child_dir)
        try:
            result = self.run_pipeline(child, child_dir)
        except ConfigError as exc:
            result = FlowResult("Failed", exc.message)
        self.finish(child, child_dir, result)
        return child.run_id, result

    def run_custom_child(self, definitions, given: dict) -> tuple[str, FlowResult]:
        """A pipeline of Custom activities (train-iris, deploy-iris) executed by this run: a
        run of its own, planned and run by the Custom-activity runner (its own process, as
        `trigger` starts it), followed here; a cancel of this run is passed on (SIGTERM)."""
        from dataclasses import asdict as plain

        from adf.activity_plan import PLAN_FILE, RUNNER_LOG, local_parameters, plan_activity
        from workspace.processes import write_pid_file

        values = effective_parameters(definitions, {**local_parameters(definitions, self.settings),
                                                    **given})
        child_id = str(uuid.uuid4())
        plan = plan_activity(definitions, values, child_id, self.settings)
        child_dir = self.run_dir.parent / child_id
        child_dir.mkdir(parents=True)
        write_json(child_dir / PLAN_FILE, plain(plan))
        self.save(PipelineRun(child_id, definitions.pipeline.name, "Queued", start=now(),
                              parameters=values), child_dir)
        env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
        with open(child_dir / RUNNER_LOG, "ab") as log:
            runner = subprocess.Popen([sys.executable, "-m", "adf.local_runner", str(child_dir)],
                                      cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=die_with(os.getpid()))
        write_pid_file(child_dir / PID_FILE, runner.pid)
        signalled = False
        while runner.poll() is None:
            if self.cancelled.wait(0.2) and not signalled:
                runner.send_signal(signal.SIGTERM)  # it stops its task, records Cancelled
                signalled = True
        child = run_from_dict(json.loads((child_dir / RUN_FILE).read_text()))
        return child_id, FlowResult(child.status if child.is_terminal else "Failed",
                                    child.message or f"see {child_dir / RUNNER_LOG}")

    def finish(self, run: PipelineRun, run_dir: Path, result: FlowResult) -> None:
        from datetime import datetime, timezone

        run.status = result.status
        run.message = "" if result.status == "Succeeded" else (
            "Cancelled (python -m adf cancel)." if result.status == "Cancelled" else result.message)
        run.output = {"pipelineReturnValue": result.return_value} if result.return_value else {}
        for activity in run.activities:
            if activity.status == "InProgress":
                activity.status, activity.end = "Cancelled", now()
        run.end = now()
        started = datetime.fromisoformat(run.start.replace("Z", "+00:00"))
        run.duration_ms = int((datetime.now(timezone.utc) - started).total_seconds() * 1000)
        self.save(run, run_dir)

    @staticmethod
    def save(run: PipelineRun, run_dir: Path) -> None:
        write_json(run_dir / RUN_FILE, asdict(run))

    # --------------------------------------------------------------- the local API

    def local_parameters(self, body: dict, values: dict) -> dict:
        """The pipeline's Azure ML parameters pointed at the local API."""
        declared = body["properties"].get("parameters") or {}
        if not any(name in declared for name in SERVICE_PARAMETERS):
            return values
        values = dict(values)
        if "endpoint" in declared and not values.get("endpoint"):
            values["endpoint"] = self.api["endpoint"]
        base, workspace = self.api["base_url"], self.api["workspace_path"]
        local = {"invocationUri": f"{base}/endpoints/{values.get('endpoint', '')}/jobs",
                 "workspaceUri": f"{base}{workspace}",
                 "historyUri": f"{base}/history/v1.0{workspace}"}
        values.update({k: v for k, v in local.items() if k in declared})
        return values

    def start_api(self) -> None:
        if not any(any(n in (b["properties"].get("parameters") or {}) for n in SERVICE_PARAMETERS)
                   for b in self.plan["pipelines"].values()):
            return
        ready = self.run_dir / API_READY_FILE
        env = {k: v for k, v in os.environ.items()}
        env.update({f.metadata["env"]: getattr(self.settings, f.name)
                    for f in fields(Settings) if getattr(self.settings, f.name)})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(self.run_dir / API_LOG, "ab") as log:
            self.api_process = subprocess.Popen(
                [sys.executable, "-m", "deployer", "api", "--ready-file", str(ready)],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=die_with(os.getpid()))
        deadline = time.monotonic() + API_START_SECONDS
        while not ready.is_file():
            if self.api_process.poll() is not None or time.monotonic() > deadline:
                log_text = (self.run_dir / API_LOG).read_text(errors="replace").strip()
                raise ConfigError(f"The local batch-endpoint API did not start: "
                                  f"{log_text.splitlines()[-1] if log_text else 'no output'}",
                                  f"See {self.run_dir / API_LOG}.")
            time.sleep(0.05)
        self.api = json.loads(ready.read_text())

    def stop_api(self) -> None:
        if self.api_process is not None and self.api_process.poll() is None:
            self.api_process.send_signal(signal.SIGTERM)
            try:
                self.api_process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.api_process.kill()
                self.api_process.wait()

    def token(self, resource: str) -> str:
        """The local stand-in for a managed identity's token (any resource)."""
        return Path(self.api["token_file"]).read_text().strip()

    def note_job(self, output: dict) -> None:
        """A Web activity's response that is a batch job the run started (invoke)."""
        name = batch_job_started(output)
        if name:
            self.started_jobs.append(name)

    def cancel_jobs(self) -> None:
        """Jobs - Cancel for every scoring job the run started (a finished one is a no-op)."""
        if not self.api:
            return
        for name in self.started_jobs:
            url = f"{self.api['base_url']}{self.api['workspace_path']}/jobs/{name}/cancel"
            try:
                _http("POST", url, {"Authorization": f"Bearer {self.token('')}"}, b"", 30)
            except OSError:
                pass  # the job's own runner settles it; the run is cancelled either way
        for name in self.started_jobs:  # until each has stopped, so nothing outlives the run
            self.wait_job_ended(name)

    def wait_job_ended(self, name: str, seconds: float = 60) -> None:
        url = f"{self.api['base_url']}{self.api['workspace_path']}/jobs/{name}"
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                status, _, body = _http("GET", url, {"Authorization": f"Bearer {self.token('')}"},
                                        None, 30)
                if status != 200 or json.loads(body)["properties"]["status"] in (
                        "Completed", "Failed", "Canceled"):
                    return
            except (OSError, ValueError, KeyError):
                return
            time.sleep(0.2)


def _http(method: str, url: str, headers: dict, data: bytes | None,
          timeout: float) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def main(run_dir: Path) -> int:
    worker = FlowWorker(run_dir)
    signal.signal(signal.SIGTERM, worker.on_sigterm)
    worker.execute()
    return 0

