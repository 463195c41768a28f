"""A fake of just the Azure ML REST operations the deployer calls, plugged into the real
`MLClient` as its azure-core transport (every sub-client of MLClient receives it).

It keeps state (models, data assets, computes, batch endpoints and deployments, jobs,
two datastores), answers long-running PUT/DELETE/POST the ARM way (201/202 +
Azure-AsyncOperation, a 1 ms `x-ms-retry-after-ms`, `op_polls` "InProgress" polls), and
records every request so tests can assert paths, api-versions and bodies. A request it does
not implement gets a 404 with code `FakeRouteMissing`.

What it checks and returns follows Azure's definitions (each noted where it is done):
- resources pass through provisioningState Creating/Updating (Deleting) until their
  operation ends, and a PUT/DELETE meanwhile gets 409 (ARM async-operation guidelines);
- a deployment PUT naming a model version or compute that does not exist gets 404, and one
  asking for more instances than the cluster's maxNodeCount gets 400;
- resource names are checked against the REST spec's patterns;
- jobs report only REST `JobStatus` values, carry their properties with the lower-case keys
  the service uses, and a failed job's error is in its run details (run history).
"""
from __future__ import annotations

import itertools
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from tests.support.fake_http import Recorded, RecordingTransport, missing

ARM = "management.azure.com"
PROVIDER = "Microsoft.MachineLearningServices"
# REST `JobStatus` (azure-ai-ml _restclient/arm_ml_service/models/_enums.py, from the
# machinelearningservices REST spec), without the SDK-only Null/Spot.
JOB_STATUSES = ("NotStarted", "Starting", "Provisioning", "Preparing", "Queued", "Running",
                "Finalizing", "CancelRequested", "Completed", "Failed", "Canceled",
                "NotResponding", "Paused", "Unknown")
# The workspace's default datastore: account-key credentials, reached through listSecrets
# (AccountKeyDatastoreCredentials / AccountKeyDatastoreSecrets in the SDK's rest models).
DEFAULT_DATASTORE = "workspaceblobstore"
_CLOCK = itertools.count()


def rest_name_pattern(kind: str) -> re.Pattern:
    """The name pattern of workspaces/<kind> in the REST types (Azure/bicep-types-az,
    Microsoft.MachineLearningServices 2024-10-01; tests/fixtures/azure_types.json)."""
    from bicep.schema_check import Schema

    schema = Schema.load()
    body = schema.body(f"{PROVIDER}/workspaces/{kind}@2024-10-01")
    return re.compile(schema.get(body["properties"]["name"]["type"])["pattern"])


# What the service accepts as names: the REST patterns; endpoint names also obey the
# service's 3-32 character rule (azure-ai-ml EndpointConfigurations and the batch endpoint docs).
ARM_ENDPOINT_NAME = rest_name_pattern("batchEndpoints")
ARM_DEPLOYMENT_NAME = rest_name_pattern("batchEndpoints/deployments")


@dataclass
class FakeJob:
    name: str
    endpoint: str
    deployment: str
    input: dict
    statuses: list = field(default_factory=lambda: ["Queued", "Running", "Completed"])
    polls: int = 0
    child: str = ""
    # RootError of run history (code, message) reported when the job is Failed
    error: tuple = ("UserError", "Execution failed. User process '/bin/bash' exited with status "
                                 "code 1. Please check log file 'user_logs/std_log.txt' for error details.")
    completed: bool = False
    created: str = ""

    def __post_init__(self):
        unknown = [s for s in self.statuses if s not in JOB_STATUSES]
        assert not unknown, f"not a REST JobStatus: {unknown}"
        # distinct, increasing creation times (one second apart) so listings can be ordered
        stamp = datetime.now(timezone.utc) + timedelta(seconds=next(_CLOCK))
        self.created = self.created or stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @property
    def status(self) -> str:
        return self.statuses[min(self.polls, len(self.statuses) - 1)]


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
        self.data: dict[str, dict[str, dict]] = {}  # data assets: name → version → resource
        self.operations: dict[str, list] = {}  # op id → [polls left, on_done, error, resource id]
        self.busy: dict[str, str] = {}  # resource id → its running operation
        self.op_polls = 1  # "InProgress" answers before an operation ends
        self.job_statuses = ["Queued", "Running", "Completed"]
        self.lro_errors: list[tuple[str, str]] = []  # (code, message) for the next operations
        self.on_complete = None  # called with the FakeJob when it first reports Completed
        self.job_page_size = 100  # jobs per page of an endpoint's job listing
        # As in a workspace made by make deploy-infra: the identity-based datastore over the
        # data container (inputs, models) ...
        self.datastore = {"name": "irisdata", "account": "stirisdata", "container": "azureml",
                          "endpoint": "core.windows.net", "protocol": "https"}
        # ... and the workspace's own account-key default store, where jobs write outputs.
        self.default_store = {"name": DEFAULT_DATASTORE, "account": "stirisws",
                              "container": "azureml-blobstore-00000000-0000-0000-0000-00000000aaaa",
                              "endpoint": "core.windows.net", "protocol": "https",
                              "key": "ZmFrZS1hY2NvdW50LWtleQ=="}

    # ------------------------------------------------------------------ test helpers

    @property
    def ws_path(self) -> str:
        return (f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/{PROVIDER}"
                f"/workspaces/{self.ws}")

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("PUT", "PATCH", "DELETE", "POST")]

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
        if r.host == ARM and "/mfeoperationresults/" in low:
            return self._operation_result(path.rsplit("/", 1)[-1])
        if r.host == f"{self.location}.api.azureml.ms" and low.endswith("/discovery"):
            # service URLs by name (what azure-ai-ml's _get_mfe_base_url_from_discovery_service reads)
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
        """Workspace (arm_ml_service rest model): the properties MLClient reads."""
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
        """ModelContainer (latestVersion, nextVersion) and ModelVersion (arm_ml_service rest models)."""
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

    def _lro(self, r: Recorded, status: int, resource: dict | None, on_done=None, rid: str = ""):
        op = uuid.uuid4().hex
        self.operations[op] = [self.op_polls, on_done,
                               self.lro_errors.pop(0) if self.lro_errors else None, rid]
        if rid:
            self.busy[rid] = op
        status_url = (f"https://{ARM}/subscriptions/{self.sub}/providers/{PROVIDER}/locations/"
                      f"{self.location}/mfeOperationsStatus/{op}?api-version={r.api_version}")
        headers = {"Azure-AsyncOperation": status_url, "x-ms-retry-after-ms": "1"}
        if r.method in ("DELETE", "POST"):
            headers["Location"] = status_url.replace("mfeOperationsStatus", "mfeOperationResults")
        return status, resource, headers

    def _finish(self, op: str) -> dict | None:
        """Run the operation's end once: its error (or None) after the on_done/Failed state."""
        entry = self.operations[op]
        if entry[3]:
            self.busy.pop(entry[3], None)
        if entry[1]:
            entry[1](entry[2])
            entry[1] = None
        return entry[2]

    def _operation_status(self, op: str):
        entry = self.operations.get(op)
        if entry is None:
            return _not_found(f"Operation {op}")
        if entry[0] > 0:
            entry[0] -= 1
            return 200, {"status": "InProgress"}, {"x-ms-retry-after-ms": "1"}
        error = self._finish(op)
        if error:
            code, message = error
            return 200, {"status": "Failed", "error": {"code": code, "message": message}}, {}
        return 200, {"status": "Succeeded"}, {}

    def _operation_result(self, op: str):
        """The Location of a DELETE/POST: 202 while running, then 200 (ARM LRO guidelines)."""
        entry = self.operations.get(op)
        if entry is None:
            return _not_found(f"Operation {op}")
        if entry[0] > 0:
            entry[0] -= 1
            return 202, None, {"Location": f"https://{ARM}/x/mfeOperationResults/{op}",
                               "x-ms-retry-after-ms": "1"}
        self._finish(op)
        return 200, None, {}

    def _conflict(self, rid: str):
        """ARM answers a write on a resource whose operation is still running with 409."""
        if rid in self.busy:
            return 409, {"error": {"code": "Conflict", "message": (
                f"There is already an operation in progress on {rid.rsplit('/', 1)[-1]}; "
                "wait for it to complete and try again.")}}, {}
        return None

    def _put_resource(self, store: dict, key, r: Recorded, rid: str, rtype: str, extra=None):
        body = json.loads(json.dumps(r.body))
        created = key not in store
        resource = {"id": rid, "name": rid.rsplit("/", 1)[-1], "type": rtype,
                    "systemData": {"createdAt": _now(), "createdBy": "tester"}, **body}
        resource.setdefault("properties", {})
        # ProvisioningState (REST spec): Creating/Updating until the operation ends
        resource["properties"]["provisioningState"] = "Creating" if created else "Updating"
        _normalize(resource["properties"])
        if extra:
            extra(resource)
        store[key] = resource

        def done(error):
            resource["properties"]["provisioningState"] = "Failed" if error else "Succeeded"
        return self._lro(r, 201 if created else 200, resource, done, rid)

    def _delete_resource(self, r: Recorded, store: dict, key, rid: str, drop=None):
        if key not in store:
            return 204, None, {}
        store[key]["properties"]["provisioningState"] = "Deleting"

        def done(error):
            if not error:
                store.pop(key, None)
                if drop:
                    drop()
        return self._lro(r, 202, None, done, rid)

    def _computes(self, r: Recorded, parts: list[str]):
        name = parts[0]
        if len(parts) != 1:
            return missing(r)
        rid = self._id("computes", name)
        if r.method == "GET":
            return (200, self.computes[name], {}) if name in self.computes else \
                _not_found(f"Compute {name}")
        if r.method in ("PUT", "DELETE") and self._conflict(rid):
            return self._conflict(rid)
        if r.method == "PUT":
            refused = self._compute_change_refused(name, r.body or {})
            if refused:
                return refused
            return self._put_resource(self.computes, name, r, rid, f"{PROVIDER}/workspaces/computes")
        if r.method == "DELETE":
            return self._delete_resource(r, self.computes, name, rid)
        return missing(r)

    def _compute_change_refused(self, name: str, body: dict):
        """Type, VM size and priority of a cluster are fixed at creation (AmlCompute docs:
        they cannot be changed); the service refuses the PUT (message paraphrased)."""
        have = self.computes.get(name)
        if have is None:
            return None
        old, new = have["properties"], body.get("properties") or {}
        if old.get("computeType") != new.get("computeType"):
            return _bad_request(f"Compute {name} already exists with type {old.get('computeType')}.")
        for key in ("vmSize", "vmPriority"):
            was = (old.get("properties") or {}).get(key)
            if str(was).lower() != str((new.get("properties") or {}).get(key)).lower():
                return _bad_request(f"Updating {key} of an existing cluster is not supported.")
        return None

    def add_compute(self, name: str, compute_type: str = "AmlCompute", **properties) -> None:
        """A compute made outside the deployer (e.g. a compute instance of the same name)."""
        self.computes[name] = {
            "id": self._id("computes", name), "name": name, "type": f"{PROVIDER}/workspaces/computes",
            "location": self.location,
            "properties": {"computeType": compute_type, "provisioningState": "Succeeded",
                           "properties": properties}}

    def _endpoints(self, r: Recorded, parts: list[str]):
        name = parts[0]
        rid = self._id("batchEndpoints", name)
        if len(parts) == 1:
            if r.method == "GET":
                return (200, self.endpoints[name], {}) if name in self.endpoints else \
                    _not_found(f"Batch endpoint {name}")
            if r.method in ("PUT", "DELETE") and self._conflict(rid):
                return self._conflict(rid)
            if r.method == "PUT":
                if not (_sdk_endpoint_name(name) and ARM_ENDPOINT_NAME.match(name)):
                    return _bad_request(f"Endpoint name '{name}' is invalid: 3-32 characters, "
                                        "letters, digits and dashes, starting with a letter.")

                def uris(resource):
                    props = resource["properties"]
                    props["scoringUri"] = (f"https://{name}.{self.location}.inference.ml.azure.com/jobs")
                    props["swaggerUri"] = props["scoringUri"] + "/swagger.json"
                return self._put_resource(self.endpoints, name, r, rid,
                                          f"{PROVIDER}/workspaces/batchEndpoints", uris)
            if r.method == "DELETE":
                def drop():
                    for key in [k for k in self.deployments if k[0] == name]:
                        del self.deployments[key]
                return self._delete_resource(r, self.endpoints, name, rid, drop)
            return missing(r)
        if parts[1] == "deployments":
            if name not in self.endpoints:
                return _not_found(f"Batch endpoint {name}")
            if len(parts) == 2 and r.method == "GET":
                return 200, {"value": [v for k, v in self.deployments.items() if k[0] == name]}, {}
            if len(parts) == 3:
                return self._deployment(r, name, parts[2])
        return missing(r)

    def _deployment(self, r: Recorded, endpoint: str, name: str):
        key = (endpoint, name)
        rid = self._id("batchEndpoints", endpoint, "deployments", name)
        if r.method == "GET":
            return (200, self.deployments[key], {}) if key in self.deployments else \
                _not_found(f"Deployment {name}")
        if r.method in ("PUT", "DELETE") and self._conflict(rid):
            return self._conflict(rid)
        if r.method == "PUT":
            if not ARM_DEPLOYMENT_NAME.match(name):
                return _bad_request(f"Deployment name '{name}' does not match "
                                    f"{ARM_DEPLOYMENT_NAME.pattern}.")
            refused = self._references_refused(r.body.get("properties") or {})
            if refused:
                return refused
            return self._put_resource(self.deployments, key, r, rid,
                                      f"{PROVIDER}/workspaces/batchEndpoints/deployments")
        if r.method == "DELETE":
            default = (self.endpoints[endpoint]["properties"].get("defaults") or {}).get("deploymentName")
            if name == default:
                return _bad_request("Cannot delete the default deployment.")
            return self._delete_resource(r, self.deployments, key, rid)
        return missing(r)

    def _references_refused(self, props: dict):
        """The model version and compute a deployment names must exist (404), and its
        instanceCount may not exceed the cluster's maxNodeCount (400)."""
        asset = (props.get("model") or {}).get("assetId") or ""
        match = re.search(r"/models/([^/]+)/versions/([^/]+)$", asset)
        if match and match.group(2) not in self.models.get(match.group(1), {}):
            return _not_found(f"Model {match.group(1)}:{match.group(2)}")
        compute = (props.get("compute") or "").rsplit("/", 1)[-1]
        if compute and compute not in self.computes:
            return _not_found(f"Compute {compute}")
        scale = ((self.computes.get(compute) or {}).get("properties", {}).get("properties") or {}) \
            .get("scaleSettings") or {}
        wanted = (props.get("resources") or {}).get("instanceCount") or 1
        if scale.get("maxNodeCount") is not None and wanted > scale["maxNodeCount"]:
            return _bad_request(f"Instance count {wanted} is greater than the maximum node count "
                                f"{scale['maxNodeCount']} of compute {compute}.")
        return None

    def _datastores(self, r: Recorded, parts: list[str]):
        stores = {d["name"]: d for d in (self.datastore, self.default_store)}
        if len(parts) == 0 and r.method == "GET":
            return 200, {"value": [self._datastore_resource(d) for d in stores.values()]}, {}
        store = stores.get(parts[0])
        if store is None:
            return _not_found(f"Datastore {parts[0]}")
        if len(parts) == 1 and r.method == "GET":
            return 200, self._datastore_resource(store), {}
        if len(parts) == 2 and parts[1].lower() == "listsecrets" and r.method == "POST":
            if "key" not in store:  # identity-based: nothing to list
                return _bad_request(f"Datastore {parts[0]} has no secrets.")
            # AccountKeyDatastoreSecrets (SDK rest models)
            return 200, {"secretsType": "AccountKey", "key": store["key"]}, {}
        return missing(r)

    def _datastore_resource(self, store: dict) -> dict:
        """AzureBlobDatastore as the REST spec describes it: identity-based (credentials None,
        the workspace identity reads the data) or account key (secrets via listSecrets)."""
        default = store["name"] == DEFAULT_DATASTORE
        credentials = ({"credentialsType": "AccountKey"} if "key" in store
                       else {"credentialsType": "None"})
        return {"id": self._id("datastores", store["name"]), "name": store["name"],
                "type": f"{PROVIDER}/workspaces/datastores",
                "properties": {"datastoreType": "AzureBlob", "accountName": store["account"],
                               "containerName": store["container"],
                               "endpoint": store["endpoint"], "protocol": store["protocol"],
                               "credentials": credentials, "isDefault": default,
                               "serviceDataAccessAuthIdentity":
                                   "None" if default else "WorkspaceSystemAssignedIdentity"}}

    def add_data_asset(self, name: str, version: str, data_type: str, uri: str) -> None:
        """A registered data asset (DataVersionBase: dataType uri_file | uri_folder, dataUri)."""
        self.data.setdefault(name, {})[version] = {
            "id": self._id("data", name, "versions", version), "name": version,
            "type": f"{PROVIDER}/workspaces/data/versions",
            "properties": {"dataType": data_type, "dataUri": uri, "isArchived": False}}

    def _data(self, r: Recorded, parts: list[str]):
        versions = self.data.get(parts[0])
        if r.method != "GET":
            return missing(r)
        if not versions:
            return _not_found(f"Data container {parts[0]}")
        if len(parts) == 1:  # DataContainer: latestVersion is what @latest resolves to
            latest = max(versions, key=lambda v: int(v) if v.isdigit() else 0)
            return 200, {"id": self._id("data", parts[0]), "name": parts[0],
                         "properties": {"dataType": versions[latest]["properties"]["dataType"],
                                        "latestVersion": latest, "isArchived": False}}, {}
        if len(parts) == 3 and parts[1] == "versions":
            found = versions.get(parts[2])
            return (200, found, {}) if found else _not_found(f"Data {parts[0]}:{parts[2]}")
        return missing(r)

    def output_path(self, job: "FakeJob") -> str:
        """Where the service writes the scoring child's `score` output (in workspaceblobstore)."""
        return f"azureml/{job.child}/score/"

    # ------------------------------------------------------------------ jobs

    def _invoke(self, r: Recorded):
        """POST <scoringUri>: a BatchJobResource (2020-09-01-dataplanepreview) that starts
        NotStarted; the "No valid deployments" text is the service's, as the SDK docs quote it."""
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

    @staticmethod
    def _batch_marks(job: FakeJob) -> tuple[dict, dict]:
        """(properties, tags) the service puts on a batch-endpoint job, as in the sample
        output of the azure.azcollection Ansible collection (ansible-collections/azure,
        plugins/modules/azure_rm_ml_batch_endpoint_info.py, RETURN: a job of
        `batch_endpoints.list_jobs`): lower-case keys, the deployment in both."""
        return ({"azureml.endpointname": job.endpoint, "azureml.deploymentname": job.deployment,
                 "azureml.runLineageType": "batchDeployment", "runSource": "BatchDeployment",
                 "runType": "HTTP"},
                {"azureml.batchrun": "true", "azureml.deploymentname": job.deployment,
                 "azureml.jobtype": "azureml.pipelinejob"})

    def _job_resource(self, job: FakeJob, status: str) -> dict:
        """A batch job's JobBase: a Pipeline job with the properties and tags the service
        puts on a batch-endpoint job (_batch_marks); no error field (JobBase has none in the
        REST spec: a failure is in run history, see _run_details)."""
        properties, tags = self._batch_marks(job)
        return {
            "id": self._id("jobs", job.name), "name": job.name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "systemData": {"createdAt": job.created, "createdBy": "tester"},
            "properties": {
                "jobType": "Pipeline", "status": status, "experimentName": job.endpoint,
                "displayName": job.name, "tags": tags, "properties": properties,
                "inputs": {}, "outputs": {}, "jobs": {}, "settings": {},
            },
        }

    def _listed_job(self, job: FakeJob) -> dict:
        """A BatchJobResource of the endpoint's job listing, shaped as the Ansible sample
        (_batch_marks) shows it: status, inputData, properties and tags under `properties`,
        the creation time in systemData. Listing a job does not advance its state."""
        properties, tags = self._batch_marks(job)
        return {"id": self._id("batchEndpoints", job.endpoint, "deployments", job.deployment,
                               "jobs", job.name),
                "name": job.name,
                "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments/jobs",
                "systemData": {"createdAt": job.created, "createdBy": "tester"},
                "properties": {"status": job.status, "inputData": job.input,
                               "properties": properties, "tags": tags}}

    def _run_details(self, job: FakeJob) -> dict:
        """RunDetails of run history (runhistory rest models RunDetails/ErrorResponse/RootError):
        `error.error` holds a failed run's code and message."""
        details = {"runId": job.name, "status": job.status, "target": "cpu-cluster",
                   "createdTimeUtc": job.created, "warnings": [], "properties": {}, "tags": {},
                   "logFiles": {}}
        if job.status == "Failed":
            code, message = job.error
            details["error"] = {"error": {"code": code, "message": message, "severity": None,
                                          "messageFormat": "", "details": []},
                                "time": _now(), "componentName": "execution"}
        return details

    def _child(self, name: str) -> "FakeJob | None":
        return next((j for j in self.jobs.values() if j.child == name), None)

    def _jobs(self, r: Recorded, parts: list[str]):
        if len(parts) == 2 and parts[1].lower() == "cancel" and r.method == "POST":
            job = self.jobs.get(parts[0])
            if job is None:
                return _not_found(f"Job {parts[0]}")
            if job.status in ("Completed", "Failed", "Canceled"):
                return 200, None, {}

            def stop(error):
                job.statuses, job.polls = ["CancelRequested", "Canceled"], 0
            return self._lro(r, 202, None, stop)
        if len(parts) == 1 and r.method == "GET":
            job = self.jobs.get(parts[0])
            if job is None and self._child(parts[0]) is not None:
                # pipeline step jobs come back without properties; clients go to run history
                return 200, {"id": self._id("jobs", parts[0]), "name": parts[0],
                             "type": f"{PROVIDER}/workspaces/jobs"}, {}
            if job is None:
                return _not_found(f"Job {parts[0]}")
            status = job.status
            job.polls += 1
            if status == "Completed" and not job.completed:
                job.completed = True
                if self.on_complete:
                    self.on_complete(job)
            return 200, self._job_resource(job, status), {}
        return missing(r)

    def _run(self, job: "FakeJob") -> dict:
        """Run of run history (runhistory rest models Run): the scoring step of a batch job."""
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
            # paged (`nextLink`, ARM paging) in the order jobs were created, oldest first:
            # the order is not documented, so the client may not rely on one
            jobs = [j for j in self.jobs.values() if j.endpoint == endpoint]
            start = int(r.query.get("$skipToken", 0))
            page = jobs[start:start + self.job_page_size]
            body = {"value": [self._listed_job(j) for j in page]}
            if start + self.job_page_size < len(jobs):
                body["nextLink"] = (f"https://{r.host}{r.path}?api-version={r.api_version}"
                                    f"&$skipToken={start + self.job_page_size}")
            return 200, body, {}
        match = re.search(r"/history/v1.0/.*/runs/([^/]+)/details$", r.path)
        if match and r.method == "GET":
            job = self.jobs.get(match.group(1))
            return (200, self._run_details(job), {}) if job else _not_found(f"Run {match.group(1)}")
        match = re.search(r"/history/v1.0/.*/runs/([^/]+)$", r.path)
        if match and r.method == "GET":
            job = self._child(match.group(1))
            return (200, self._run(job), {}) if job else _not_found(f"Run {match.group(1)}")
        if r.path.endswith("/rundata") and r.method == "POST":
            # GetRunDataResult (runhistory): the step's outputs as data asset ids
            job = self._child((r.body or {}).get("runId", ""))
            if job is None:
                return _not_found("Run")
            asset = (f"azureml://locations/{self.location}/workspaces/00000000-0000-0000-0000-00000000aaaa"
                     f"/data/azureml_{job.child}_output_data_score/versions/1")
            return 200, {"runMetadata": {**self._run(job),
                                         "outputs": {"score": {"assetId": asset, "type": "uri_folder"}}}}, {}
        if r.path.endswith("/dataversion/batchGetResolvedUris") and r.method == "POST":
            # BatchGetResolvedURIs (dataset_dataplane rest models): asset id → datastore URI;
            # outputs of batch jobs are in workspaceblobstore
            values = {}
            for asset in (r.body or {}).get("values", []):
                m = re.search(r"/data/azureml_(.+)_output_data_score/", asset)
                job = self._child(m.group(1)) if m else None
                if job is not None:
                    values[asset] = {"type": "UriFolder", "uri": (
                        f"azureml://subscriptions/{self.sub}/resourcegroups/{self.rg}/workspaces/"
                        f"{self.ws}/datastores/{DEFAULT_DATASTORE}/paths/{self.output_path(job)}")}
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


def _sdk_endpoint_name(name: str) -> bool:
    from azure.ai.ml.constants._endpoint import EndpointConfigurations as rule

    return (rule.MIN_NAME_LENGTH <= len(name) <= rule.MAX_NAME_LENGTH
            and re.match(rule.NAME_REGEX_PATTERN, name) is not None)


def _bad_request(message: str):
    return 400, {"error": {"code": "BadRequest", "message": message}}, {}


def _not_found(what: str):
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{what} was not found."}}, {}
