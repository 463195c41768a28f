"""A fake of just the Azure ML REST operations the deployer calls, plugged into the real
`MLClient` as its azure-core transport (every sub-client of MLClient receives it).

It keeps state (models, computes, batch endpoints and deployments, jobs), answers
long-running PUT/DELETE the ARM way (201/202 + Azure-AsyncOperation, a 1 ms
`x-ms-retry-after-ms`, one "InProgress" poll), and records every request so tests can assert paths, api-versions
and bodies. A request it does not implement gets a 404 with code `FakeRouteMissing`.
"""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tests.support.fake_http import Recorded, RecordingTransport, missing

ARM = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"


@dataclass
class FakeJob:
    name: str
    endpoint: str
    deployment: str
    input: dict
    statuses: list = field(default_factory=lambda: ["Queued", "Running", "Completed"])
    polls: int = 0
    child: str = ""
    error: str = ""
    completed: bool = False


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeAzureML(RecordingTransport):
    def __init__(self, subscription: str, resource_group: str, workspace: str,
                 location: str = "westeurope"):
        super().__init__()
        self.sub, self.rg, self.ws, self.location = subscription, resource_group, workspace, location
        self.models: dict[str, dict[str, dict]] = {}
        self.computes: dict[str, dict] = {}
        self.endpoints: dict[str, dict] = {}
        self.deployments: dict[tuple[str, str], dict] = {}
        self.jobs: dict[str, FakeJob] = {}
        self.data: dict[str, dict[str, dict]] = {}  # registered data assets: name → version → resource
        self.operations: dict[str, list] = {}  # async operation id → [polls left, on_done]
        self.job_statuses = ["Queued", "Running", "Completed"]
        self.lro_errors: list[tuple[str, str]] = []  # (code, message) for the next operations
        self.on_complete = None  # called with the FakeJob when it first reports Completed
        # the workspace's default blob datastore (identity-based, as make deploy-infra sets it up)
        self.datastore = {"name": "workspaceblobstore", "account": "stirisdata", "container": "azureml"}

    # ------------------------------------------------------------------ test helpers

    @property
    def ws_path(self) -> str:
        return (f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/{PROVIDER}"
                f"/workspaces/{self.ws}")

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("PUT", "PATCH", "DELETE", "POST")]

    def add_data(self, name: str, version: str, data_type: str, uri: str) -> dict:
        """Register a data asset (uri_file | uri_folder | mltable) as `az ml data create` would."""
        resource = {"id": self._id("data", name, "versions", version), "name": version,
                    "type": f"{PROVIDER}/workspaces/data/versions",
                    "systemData": {"createdAt": _now(), "createdBy": "tester"},
                    "properties": {"dataType": data_type, "dataUri": uri, "isArchived": False,
                                   "isAnonymous": False, "tags": {}, "properties": {}}}
        self.data.setdefault(name, {})[version] = resource
        return resource

    def find(self, method: str, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests
                if r.method == method and r.path.lower().endswith(path_suffix.lower())]

    # ------------------------------------------------------------------ routing

    def _route(self, r: Recorded):
        path = r.path.rstrip("/")
        ws = self.ws_path.lower()
        low = path.lower()
        if r.host == ARM and low == ws and r.method == "GET":
            return 200, self._workspace(), {}
        if r.host == ARM and "/mfeoperationsstatus/" in low:
            return self._operation_status(path.rsplit("/", 1)[-1])
        if r.host == f"{self.location}.api.azureml.ms" and low.endswith("/discovery"):
            base = f"https://{self.location}.api.azureml.ms"
            return 200, {"api": base, "catalog": base, "experimentation": base, "history": base,
                         "hyperdrive": base, "labeling": base, "modelmanagement": base,
                         "pipelines": base, "studiocoreservices": base}, {}
        if r.host.endswith(".inference.ml.azure.com") and low == "/jobs" and r.method == "POST":
            return self._invoke(r)
        if r.host == ARM and low.startswith(ws + "/"):
            rest = path[len(self.ws_path) + 1:]
            parts = rest.split("/")
            kind = parts[0].lower()
            handler = {"models": self._models, "computes": self._computes,
                       "batchendpoints": self._endpoints, "jobs": self._jobs,
                       "datastores": self._datastores, "data": self._data}.get(kind)
            if handler:
                return handler(r, parts[1:])
        if r.host == f"{self.location}.api.azureml.ms":
            return self._dataplane(r)
        return missing(r)

    # ------------------------------------------------------------------ resources

    def _id(self, *parts: str) -> str:
        return "/".join([self.ws_path, *parts])

    def _workspace(self) -> dict:
        return {
            "id": self.ws_path, "name": self.ws, "location": self.location,
            "type": f"{PROVIDER}/workspaces", "kind": "Default",
            "properties": {
                "discoveryUrl": f"https://{self.location}.api.azureml.ms/discovery",
                "workspaceId": "00000000-0000-0000-0000-00000000aaaa",
                "mlFlowTrackingUri": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0"
                                     f"{self.ws_path}",
                "provisioningState": "Succeeded",
            },
        }

    def _models(self, r: Recorded, parts: list[str]):
        name = parts[0]
        versions = self.models.get(name)
        if len(parts) == 1:  # container
            if r.method == "GET":
                if not versions:
                    return _not_found(f"Model container {name}")
                latest = max(versions, key=lambda v: int(v) if v.isdigit() else 0)
                return 200, {"id": self._id("models", name), "name": name,
                             "properties": {"latestVersion": latest, "nextVersion": str(int(latest) + 1),
                                            "isArchived": False}}, {}
            return missing(r)
        if len(parts) == 2 and parts[1] == "versions" and r.method == "GET":
            if not versions:
                return _not_found(f"Model container {name}")
            return 200, {"value": list(versions.values())}, {}
        if len(parts) == 3 and parts[1] == "versions":
            version = parts[2]
            if r.method == "GET":
                if not versions or version not in versions:
                    return _not_found(f"Model {name}:{version}")
                return 200, versions[version], {}
            if r.method == "PUT":
                resource = {"id": self._id("models", name, "versions", version), "name": version,
                            "type": f"{PROVIDER}/workspaces/models/versions",
                            "systemData": {"createdAt": _now(), "createdBy": "tester"},
                            **json.loads(json.dumps(r.body))}
                resource["properties"]["provisioningState"] = "Succeeded"
                # the service reads the flavors from the folder's MLmodel file
                resource["properties"].setdefault("flavors", {
                    "python_function": {"data": {"loader_module": "mlflow.sklearn"}},
                    "sklearn": {"data": {"serialization_format": "skops"}}})
                self.models.setdefault(name, {})[version] = resource
                return 201, resource, {}
        return missing(r)

    def _data(self, r: Recorded, parts: list[str]):
        versions = self.data.get(parts[0]) if parts else None
        if r.method != "GET" or not parts:
            return missing(r)
        if not versions:
            return _not_found(f"Data container {parts[0]}")
        if len(parts) == 1:
            latest = max(versions, key=lambda v: int(v) if v.isdigit() else 0)
            return 200, {"id": self._id("data", parts[0]), "name": parts[0],
                         "properties": {"latestVersion": latest, "isArchived": False}}, {}
        if len(parts) == 3 and parts[1] == "versions":
            return (200, versions[parts[2]], {}) if parts[2] in versions else \
                _not_found(f"Data {parts[0]}:{parts[2]}")
        return missing(r)

    def _lro(self, r: Recorded, status: int, resource: dict | None, on_done=None):
        op = uuid.uuid4().hex
        self.operations[op] = [1, on_done, self.lro_errors.pop(0) if self.lro_errors else None]
        status_url = (f"https://{ARM}/subscriptions/{self.sub}/providers/{PROVIDER}/locations/"
                      f"{self.location}/mfeOperationsStatus/{op}?api-version={r.api_version}")
        headers = {"Azure-AsyncOperation": status_url, "x-ms-retry-after-ms": "1"}
        if r.method == "DELETE":
            headers["Location"] = status_url.replace("mfeOperationsStatus", "mfeOperationResults")
        return status, resource, headers

    def _operation_status(self, op: str):
        entry = self.operations.get(op)
        if entry is None:
            return _not_found(f"Operation {op}")
        if entry[0] > 0:
            entry[0] -= 1
            return 200, {"status": "InProgress"}, {"x-ms-retry-after-ms": "1"}
        if entry[2]:
            code, message = entry[2]
            return 200, {"status": "Failed", "error": {"code": code, "message": message}}, {}
        if entry[1]:
            entry[1]()
            entry[1] = None
        return 200, {"status": "Succeeded"}, {}

    def _put_resource(self, store: dict, key, r: Recorded, rid: str, rtype: str, extra=None):
        body = json.loads(json.dumps(r.body))
        created = key not in store
        resource = {"id": rid, "name": rid.rsplit("/", 1)[-1], "type": rtype,
                    "systemData": {"createdAt": _now(), "createdBy": "tester"}, **body}
        resource.setdefault("properties", {})
        resource["properties"]["provisioningState"] = "Failed" if self.lro_errors else "Succeeded"
        _normalize(resource["properties"])
        if extra:
            extra(resource)
        store[key] = resource
        return self._lro(r, 201 if created else 200, resource)

    def _computes(self, r: Recorded, parts: list[str]):
        name = parts[0]
        if len(parts) != 1:
            return missing(r)
        if r.method == "GET":
            return (200, self.computes[name], {}) if name in self.computes else \
                _not_found(f"Compute {name}")
        if r.method == "PUT":
            return self._put_resource(self.computes, name, r, self._id("computes", name),
                                      f"{PROVIDER}/workspaces/computes")
        if r.method == "DELETE":
            if name not in self.computes:
                return 204, None, {}
            return self._lro(r, 202, None, lambda: self.computes.pop(name, None))
        return missing(r)

    def _endpoints(self, r: Recorded, parts: list[str]):
        name = parts[0]
        if len(parts) == 1:
            if r.method == "GET":
                return (200, self.endpoints[name], {}) if name in self.endpoints else \
                    _not_found(f"Batch endpoint {name}")
            if r.method == "PUT":
                def uris(resource):
                    props = resource["properties"]
                    props["scoringUri"] = (f"https://{name}.{self.location}.inference.ml.azure.com/jobs")
                    props["swaggerUri"] = props["scoringUri"] + "/swagger.json"
                return self._put_resource(self.endpoints, name, r, self._id("batchEndpoints", name),
                                          f"{PROVIDER}/workspaces/batchEndpoints", uris)
            if r.method == "DELETE":
                if name not in self.endpoints:
                    return 204, None, {}

                def drop():
                    self.endpoints.pop(name, None)
                    for key in [k for k in self.deployments if k[0] == name]:
                        del self.deployments[key]
                return self._lro(r, 202, None, drop)
            return missing(r)
        if parts[1] == "deployments":
            if name not in self.endpoints:
                return _not_found(f"Batch endpoint {name}")
            if len(parts) == 2 and r.method == "GET":
                return 200, {"value": [v for k, v in self.deployments.items() if k[0] == name]}, {}
            if len(parts) == 3:
                key = (name, parts[2])
                if r.method == "GET":
                    return (200, self.deployments[key], {}) if key in self.deployments else \
                        _not_found(f"Deployment {parts[2]}")
                if r.method == "PUT":
                    return self._put_resource(
                        self.deployments, key, r, self._id("batchEndpoints", name, "deployments", parts[2]),
                        f"{PROVIDER}/workspaces/batchEndpoints/deployments")
                if r.method == "DELETE":
                    default = (self.endpoints[name]["properties"].get("defaults") or {}).get("deploymentName")
                    if parts[2] == default:
                        return 400, {"error": {"code": "BadRequest", "message":
                                               "Cannot delete the default deployment."}}, {}
                    if key not in self.deployments:
                        return 204, None, {}
                    return self._lro(r, 202, None, lambda: self.deployments.pop(key, None))
        return missing(r)

    def _datastores(self, r: Recorded, parts: list[str]):
        if len(parts) == 1 and r.method == "GET":
            if parts[0] != self.datastore["name"]:
                return _not_found(f"Datastore {parts[0]}")
            return 200, self._datastore_resource(), {}
        if len(parts) == 0 and r.method == "GET":
            return 200, {"value": [self._datastore_resource()]}, {}
        return missing(r)

    def _datastore_resource(self) -> dict:
        return {"id": self._id("datastores", self.datastore["name"]), "name": self.datastore["name"],
                "type": f"{PROVIDER}/workspaces/datastores",
                "properties": {"datastoreType": "AzureBlob", "accountName": self.datastore["account"],
                               "containerName": self.datastore["container"],
                               "endpoint": "core.windows.net", "protocol": "https",
                               "credentials": {"credentialsType": "None"}, "isDefault": True,
                               "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity"}}

    def output_path(self, job: "FakeJob") -> str:
        """Where the service writes the scoring child's `score` output (datastore path)."""
        return f"azureml/{job.child}/score/"

    # ------------------------------------------------------------------ jobs

    def _invoke(self, r: Recorded):
        endpoint = r.host.split(".")[0]
        if endpoint not in self.endpoints:
            return _not_found(f"Batch endpoint {endpoint}")
        default = (self.endpoints[endpoint]["properties"].get("defaults") or {}).get("deploymentName")
        deployment = r.headers.get("azureml-model-deployment") or default
        if not deployment:
            return 400, {"error": {"code": "UserError",
                                   "message": "No valid deployments to route to. Please check that the "
                                              "endpoint has at least one deployment with positive weight "
                                              "values or use a deployment specific header to route."}}, {}
        name = f"batchjob-{uuid.uuid4()}"
        job = FakeJob(name, endpoint, deployment, r.body["properties"].get("inputData") or {},
                      statuses=list(self.job_statuses), child=f"{name}-child")
        self.jobs[name] = job
        return 200, {"id": self._id("batchEndpoints", endpoint, "jobs", name), "name": name,
                     "type": "Microsoft.MachineLearningServices/workspaces/batchEndpoints/jobs",
                     "properties": {"status": "NotStarted", "inputData": job.input}}, {}

    def _job_resource(self, job: FakeJob, status: str) -> dict:
        return {
            "id": self._id("jobs", job.name), "name": job.name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "systemData": {"createdAt": _now(), "createdBy": "tester"},
            "properties": {
                "jobType": "Pipeline", "status": status, "experimentName": job.endpoint,
                "displayName": job.name,
                "tags": {"azureml.batchrun": "true", "azureml.jobtype": "azureml.batchjob"},
                "properties": {"azureml.endpointName": job.endpoint,
                               "azureml.deploymentName": job.deployment},
                "inputs": {}, "outputs": {}, "jobs": {}, "settings": {},
            },
        }

    def _child(self, name: str) -> "FakeJob | None":
        return next((j for j in self.jobs.values() if j.child == name), None)

    def _jobs(self, r: Recorded, parts: list[str]):
        if len(parts) == 1 and r.method == "GET":
            job = self.jobs.get(parts[0])
            if job is None and self._child(parts[0]) is not None:
                # pipeline step jobs come back without properties; clients go to run history
                return 200, {"id": self._id("jobs", parts[0]), "name": parts[0],
                             "type": f"{PROVIDER}/workspaces/jobs"}, {}
            if job is None:
                return _not_found(f"Job {parts[0]}")
            status = job.statuses[min(job.polls, len(job.statuses) - 1)]
            job.polls += 1
            if status == "Completed" and not job.completed:
                job.completed = True
                if self.on_complete:
                    self.on_complete(job)
            return 200, self._job_resource(job, status), {}
        return missing(r)

    def _run(self, job: "FakeJob") -> dict:
        return {"runId": job.child, "parentRunId": job.name, "rootRunId": job.name,
                "status": "Completed", "runType": "azureml.StepRun", "name": "batchscoring",
                "displayName": "batchscoring", "experimentId": "0", "properties": {}, "tags": {},
                "createdUtc": _now(), "endTimeUtc": _now()}

    def _dataplane(self, r: Recorded):
        match = re.search(r"/mferp/managementfrontend/.*/batchEndpoints/([^/]+)/jobs$", r.path, re.I)
        if match and r.method == "GET":
            endpoint = match.group(1)
            if endpoint not in self.endpoints:
                return _not_found(f"Batch endpoint {endpoint}")
            return 200, {"value": [
                {"id": self._id("batchEndpoints", endpoint, "jobs", j.name), "name": j.name,
                 "properties": {"status": j.statuses[min(j.polls, len(j.statuses) - 1)]}}
                for j in self.jobs.values() if j.endpoint == endpoint]}, {}
        match = re.search(r"/history/v1.0/.*/runs/([^/]+)$", r.path)
        if match and r.method == "GET":
            job = self._child(match.group(1))
            return (200, self._run(job), {}) if job else _not_found(f"Run {match.group(1)}")
        if r.path.endswith("/rundata") and r.method == "POST":
            job = self._child((r.body or {}).get("runId", ""))
            if job is None:
                return _not_found("Run")
            asset = (f"azureml://locations/{self.location}/workspaces/00000000-0000-0000-0000-00000000aaaa"
                     f"/data/azureml_{job.child}_output_data_score/versions/1")
            return 200, {"runMetadata": {**self._run(job),
                                         "outputs": {"score": {"assetId": asset, "type": "uri_folder"}}}}, {}
        if r.path.endswith("/dataversion/batchGetResolvedUris") and r.method == "POST":
            values = {}
            for asset in (r.body or {}).get("values", []):
                m = re.search(r"/data/azureml_(.+)_output_data_score/", asset)
                job = self._child(m.group(1)) if m else None
                if job is not None:
                    values[asset] = {"type": "UriFolder", "uri": (
                        f"azureml://subscriptions/{self.sub}/resourcegroups/{self.rg}/workspaces/"
                        f"{self.ws}/datastores/{self.datastore['name']}/paths/{self.output_path(job)}")}
            return 200, {"values": values}, {}
        match = re.search(r"/runs/([^/]+)/children$", r.path)
        if match and r.method in ("GET", "POST"):
            job = self.jobs.get(match.group(1))
            if job is None:
                return _not_found(f"Run {match.group(1)}")
            return 200, {"value": [{"runId": job.child, "parentRunId": job.name, "status": "Completed",
                                    "runType": "azureml.StepRun", "name": "batchscoring",
                                    "experimentId": "0", "properties": {}, "tags": {}}],
                         "continuationToken": None}, {}
        return missing(r)


def _normalize(props: dict) -> None:
    """Spell enum values the way the service returns them (not as the client sent them)."""
    spelled = {"authMode": {"aadtoken": "AADToken", "key": "Key"},
               "loggingLevel": {"info": "Info", "warning": "Warning", "debug": "Debug"},
               "outputAction": {"appendrow": "AppendRow", "summaryonly": "SummaryOnly"}}
    for key, values in spelled.items():
        if isinstance(props.get(key), str):
            props[key] = values.get(props[key].lower(), props[key])


def _not_found(what: str):
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} was not found."}}, {}
