"""A fake of just the Azure operations `python -m adf` uses, plugged into the real SDK
clients as their azure-core transport: Data Factory (ARM), Batch (data plane) and the
`adfjobs` blobs of the staging storage account.

Each pipeline run follows a scripted `RunPlan` (one status per `pipeline_runs.get`); once
the run is terminal its activity run carries the ADF output (`exitcode`, `outputs` URLs,
`customOutput`) or error, and stdout/stderr exist as blobs. Every request is recorded so
tests can assert URLs, api-versions and bodies. A request it does not implement gets a 404
with code `FakeRouteMissing`.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlparse

from tests.support.fake_http import Recorded, RecordingTransport, missing

ARM = "management.azure.com"


@dataclass
class RunPlan:
    """How the next pipeline run behaves."""

    statuses: list = field(default_factory=lambda: ["Queued", "InProgress", "Succeeded"])
    exitcode: int = 0
    custom_output: object = None
    stdout: bytes = b"[trainer] done\n"
    stderr: bytes = b""
    error_message: str = ""
    # A control-flow run's activity runs as Data Factory reports them (activityName,
    # activityType, status, output, ...); None: the one Custom activity of the training run.
    activities: list | None = None


@dataclass
class FakeRun:
    run_id: str
    pipeline: str
    parameters: dict
    plan: RunPlan
    activity_run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    polls: int = 0
    start: str = ""

    @property
    def status(self) -> str:
        return self.plan.statuses[min(self.polls, len(self.plan.statuses)) - 1] if self.polls \
            else self.plan.statuses[0]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAzure(RecordingTransport):
    def __init__(self, subscription: str, resource_group: str, factory: str,
                 batch_url: str, storage_url: str, pool_id: str = "dsvm-pool"):
        super().__init__()
        self.sub, self.rg, self.factory = subscription, resource_group, factory
        self.batch_host = urlparse(batch_url).hostname
        self.storage_url = storage_url.rstrip("/")
        self.storage_host = urlparse(storage_url).hostname
        self.pool_id = pool_id
        self.published: dict[tuple[str, str], dict] = {}
        # trigger name → runtime state ("Started" | "Stopped"); PUT creates one Stopped
        self.trigger_states: dict[str, str] = {}
        self.runs: dict[str, FakeRun] = {}
        self.next_plan = RunPlan()
        self.runs_page_size = 100  # runs per page of queryPipelineRuns
        self.blobs: dict[str, bytes] = {}  # "<container>/<name>" → content
        self.blob_metadata: dict[str, dict] = {}
        self.containers = {"adfjobs", "azureml"}
        self.pool = {"id": pool_id, "state": "active", "allocationState": "steady",
                     "currentDedicatedNodes": 0, "currentLowPriorityNodes": 0,
                     "targetDedicatedNodes": 0, "targetLowPriorityNodes": 0}
        self.nodes: list[dict] = []
        self.node_files: dict[tuple[str, str], bytes] = {}

    # ------------------------------------------------------------------ test helpers

    @property
    def factory_path(self) -> str:
        return (f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/"
                f"Microsoft.DataFactory/factories/{self.factory}")

    def find(self, method: str, path_regex: str) -> list[Recorded]:
        pattern = re.compile(path_regex, re.I)
        return [r for r in self.requests if r.method == method and pattern.search(r.path)]

    def error_payload(self, record: Recorded, code: str, message: str):
        if record.host == self.batch_host:  # Batch's own error shape
            return {"code": code, "message": {"lang": "en-US", "value": message}}
        return super().error_payload(record, code, message)

    # ------------------------------------------------------------------ routing

    def _route(self, r: Recorded):
        if r.host == ARM and r.path.lower().startswith(self.factory_path.lower() + "/"):
            return self._factory(r, r.path[len(self.factory_path) + 1:].split("/"))
        if r.host == self.batch_host:
            return self._batch(r)
        if r.host == self.storage_host:
            return self._blob(r)
        return missing(r)

    def _factory(self, r: Recorded, parts: list[str]):
        kind = parts[0].lower()
        if kind == "triggers":
            return self._triggers(r, parts)
        if kind in ("linkedservices", "credentials", "pipelines") and len(parts) == 2 \
                and r.method == "PUT":
            name = parts[1]
            self.published[(kind, name)] = r.body
            return 200, {"id": f"{self.factory_path}/{kind}/{name}", "name": name,
                         "type": f"Microsoft.DataFactory/factories/{kind}",
                         "etag": uuid.uuid4().hex, **r.body}, {}
        if kind == "pipelines" and len(parts) == 3 and parts[2] == "createRun" and r.method == "POST":
            if ("pipelines", parts[1]) not in self.published:
                return 404, {"error": {"code": "PipelineNotFound",
                                       "message": f"Pipeline {parts[1]} not found"}}, {}
            run = FakeRun(str(uuid.uuid4()), parts[1], r.body or {}, self.next_plan, start=_now())
            self.runs[run.run_id] = run
            return 200, {"runId": run.run_id}, {}
        if kind == "querypipelineruns" and len(parts) == 1 and r.method == "POST":
            # POST .../queryPipelineRuns with RunFilterParameters; answers
            # PipelineRunsQueryResponse {value, continuationToken} (azure-mgmt-datafactory).
            order = (r.body.get("orderBy") or [{}])[0]
            ordered = sorted(self.runs.values(), key=lambda run: run.start,
                             reverse=order.get("order") == "DESC")
            first = int(r.body.get("continuationToken") or 0)
            page = ordered[first:first + self.runs_page_size]
            after = first + len(page)
            return 200, {"value": [self._run_body(run) for run in page],
                         "continuationToken": str(after) if after < len(ordered) else None}, {}
        if kind == "pipelineruns" and len(parts) == 2 and r.method == "GET":
            run = self.runs.get(parts[1])
            if run is None:
                return 404, {"error": {"code": "PipelineRunNotFound",
                                       "message": f"Pipeline run {parts[1]} does not exist"}}, {}
            run.polls += 1
            return 200, self._run_body(run), {}
        if kind == "pipelineruns" and len(parts) == 3 and parts[2] == "cancel" \
                and r.method == "POST":
            # POST .../pipelineruns/{runId}/cancel[?isRecursive=]: 200 without a body, 404 for
            # an unknown run (azure-mgmt-datafactory build_pipeline_runs_cancel_request).
            run = self.runs.get(parts[1])
            if run is None:
                return 404, {"error": {"code": "PipelineRunNotFound",
                                       "message": f"Pipeline run {parts[1]} does not exist"}}, {}
            if run.status not in ("Succeeded", "Failed", "Cancelled"):
                run.plan = RunPlan(statuses=["Canceling", "Cancelled"], exitcode=None,
                                   error_message="Operation cancelled",
                                   activities=run.plan.activities)
                run.polls = 0
            return 200, None, {}
        if kind == "pipelineruns" and len(parts) == 3 and parts[2] == "queryActivityruns" \
                and r.method == "POST":
            run = self.runs.get(parts[1])
            if run is None:
                return 404, {"error": {"code": "PipelineRunNotFound", "message": "no run"}}, {}
            return 200, {"value": self._activity_runs(run)}, {}
        return missing(r)

    def _triggers(self, r: Recorded, parts: list[str]):
        """Triggers (azure-mgmt-datafactory 10.0.0 TriggersOperations): PUT creates one Stopped
        ("runtimeState" is read-only: the service sets it), GET lists them
        (TriggerListResponse {value}), POST .../start and .../stop change the state (long-running
        operations answered at once with 200), both 404 for an unknown trigger."""
        def body(name):
            return {"id": f"{self.factory_path}/triggers/{name}", "name": name,
                    "type": "Microsoft.DataFactory/factories/triggers", "etag": uuid.uuid4().hex,
                    "properties": {**self.published[("triggers", name)]["properties"],
                                   "runtimeState": self.trigger_states[name]}}
        if len(parts) == 1 and r.method == "GET":
            return 200, {"value": [body(n) for n in sorted(self.trigger_states)]}, {}
        if len(parts) == 2 and r.method == "PUT":
            if "runtimeState" in (r.body.get("properties") or {}):
                return 400, {"error": {"code": "BadRequest",
                                       "message": "runtimeState is read-only"}}, {}
            if self.trigger_states.get(parts[1]) == "Started":
                return 400, {"error": {"code": "TriggerEnabledCannotUpdate",
                                       "message": "Cannot update enabled Trigger; it needs to "
                                                  "be disabled first."}}, {}
            self.published[("triggers", parts[1])] = r.body
            self.trigger_states[parts[1]] = "Stopped"
            return 200, body(parts[1]), {}
        if len(parts) == 3 and parts[2] in ("start", "stop") and r.method == "POST":
            if parts[1] not in self.trigger_states:
                return 404, {"error": {"code": "TriggerNotFound",
                                       "message": f"Trigger {parts[1]} not found"}}, {}
            self.trigger_states[parts[1]] = "Started" if parts[2] == "start" else "Stopped"
            return 200, None, {}
        return missing(r)

    def _run_body(self, run: FakeRun) -> dict:
        """A PipelineRun as Data Factory answers it."""
        terminal = run.status in ("Succeeded", "Failed", "Cancelled")
        return {
            "runId": run.run_id, "pipelineName": run.pipeline, "parameters": {
                k: str(v) for k, v in run.parameters.items()},
            "runStart": run.start, "runEnd": _now() if terminal else None,
            "durationInMs": 1234 if terminal else None, "status": run.status,
            "message": (f"Operation on target TrainIrisModel failed: {run.plan.error_message}"
                        if run.status == "Failed" else ""),
            "invokedBy": {"name": "Manual", "invokedByType": "Manual"},
            "lastUpdated": _now()}

    def _activity_runs(self, run: FakeRun) -> list[dict]:
        if run.status == "Queued":
            return []
        if run.plan.activities is not None:
            return [{"activityRunId": str(uuid.uuid4()), "pipelineRunId": run.run_id,
                     "pipelineName": run.pipeline, "activityRunStart": run.start, "input": {},
                     "error": {}, **activity} for activity in run.plan.activities]
        activity = {"activityName": "TrainIrisModel", "activityType": "Custom",
                    "activityRunId": run.activity_run_id, "pipelineRunId": run.run_id,
                    "pipelineName": run.pipeline, "linkedServiceName": "AzureBatchLinkedService",
                    "activityRunStart": run.start, "status": "InProgress", "input": {},
                    "output": {}, "error": {}}
        if run.status in ("Succeeded", "Failed"):
            base = f"{self.storage_url}/adfjobs/{run.activity_run_id}/output"
            self.blobs[f"adfjobs/{run.activity_run_id}/output/stdout.txt"] = run.plan.stdout
            self.blobs[f"adfjobs/{run.activity_run_id}/output/stderr.txt"] = run.plan.stderr
            output = {"exitcode": run.plan.exitcode,
                      "outputs": [f"{base}/stdout.txt", f"{base}/stderr.txt"],
                      "effectiveIntegrationRuntime": "AutoResolveIntegrationRuntime (West Europe)"}
            if run.plan.custom_output is not None:
                output["customOutput"] = run.plan.custom_output
            activity.update(status=run.status, activityRunEnd=_now(), output=output)
            if run.status == "Failed":
                activity["error"] = {"errorCode": "2500", "message": run.plan.error_message,
                                     "failureType": "UserError", "target": "TrainIrisModel"}
        return [activity]

    def _batch(self, r: Recorded):
        parts = r.path.strip("/").split("/", 5)
        if parts[:2] != ["pools", self.pool_id] or r.method != "GET":
            return missing(r)
        if len(parts) == 2:
            return 200, self.pool, {}
        if len(parts) == 3 and parts[2] == "nodes":
            return 200, {"value": self.nodes}, {}
        if len(parts) == 6 and parts[2] == "nodes" and parts[4] == "files":
            content = self.node_files.get((parts[3], parts[5]))
            if content is None:
                # BatchError of the Batch REST spec: code + message {lang, value}
                return 404, {"code": "FileNotFound",
                             "message": {"lang": "en-US", "value": "The specified file does not exist."}}, {}
            return 200, content, {"Content-Type": "application/octet-stream"}
        return missing(r)

    def _blob(self, r: Recorded):
        name = r.path.lstrip("/")
        stamp = {"ETag": '"0x1"', "Last-Modified": "Sun, 22 Nov 2026 07:00:00 GMT"}
        if "/" not in name and r.query.get("restype") == "container" and r.method == "GET":
            if name not in self.containers:
                return 404, None, {"x-ms-error-code": "ContainerNotFound"}
            return 200, None, stamp
        if r.method == "PUT" and r.headers.get("x-ms-blob-type") == "BlockBlob":
            self.blobs[name] = r.raw
            self.blob_metadata[name] = {k[len("x-ms-meta-"):]: v for k, v in r.headers.items()
                                        if k.startswith("x-ms-meta-")}
            return 201, None, {**stamp, "x-ms-request-server-encrypted": "true"}
        content = self.blobs.get(name)
        if r.method not in ("HEAD", "GET"):
            return missing(r)
        if content is None:
            return 404, None, {"x-ms-error-code": "BlobNotFound"}
        headers = {"Content-Type": "application/octet-stream", "x-ms-blob-type": "BlockBlob",
                   **stamp, "Content-Length": str(len(content)),
                   **{f"x-ms-meta-{k}": v for k, v in self.blob_metadata.get(name, {}).items()}}
        if r.method == "HEAD":
            return 200, None, headers
        headers["Content-Range"] = f"bytes 0-{max(len(content) - 1, 0)}/{len(content)}"
        return 206, content, headers
