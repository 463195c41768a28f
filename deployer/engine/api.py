"""The local batch-endpoint invocation API: Azure ML's invoke and job REST calls on loopback.

The same requests a Data Factory Web activity (or `curl`) sends to Azure ML, answered by
the local backend (`deployer.backends.local`) over HTTP on 127.0.0.1, with a bearer token:

| Azure ML | here |
|---|---|
| `POST https://<endpoint>.<region>.inference.ml.azure.com/jobs` (the endpoint's invocation URI, `scoring_uri`) | `POST /endpoints/<endpoint>/jobs` |
| `GET https://management.azure.com<workspace id>/jobs/<name>` (Jobs - Get) | `GET <WORKSPACE_PATH>/jobs/<name>` |
| `POST https://management.azure.com<workspace id>/jobs/<name>/cancel` (Jobs - Cancel) | `POST <WORKSPACE_PATH>/jobs/<name>/cancel` |
| `GET https://<region>.api.azureml.ms/history/v1.0<workspace id>/runs/<name>/details` (run history) | `GET /history/v1.0<WORKSPACE_PATH>/runs/<name>/details` |

Where each shape comes from:
- invoke request: the body is `{"properties": <BatchJob>}` with `inputData` (each input
  `{"jobInputType": "UriFile"|"UriFolder", "uri": ...}`), `outputData`, `compute.instanceCount`,
  `retrySettings.maxRetries`, `errorThreshold`, `miniBatchSize`, `outputFileName`, `name`,
  `properties.experimentName`, and the deployment in the `azureml-model-deployment` header
  (azure-ai-ml 1.35, operations/_batch_endpoint_operations.py `invoke` and
  _schema/_deployment/batch/batch_job.py `BatchJobSchema.make`, which builds the wire body
  "byte-identical to the legacy v2020_09 BatchJob"). Microsoft's REST examples write the
  same keys capitalised (`"InputData"`, `"JobInputType"`, `"Uri"`: "Run batch endpoints
  from Azure Data Factory" and "Create jobs and input data for batch endpoints", MicrosoftDocs
  azure-docs, articles/machine-learning): keys are matched without regard to case.
- invoke response: a BatchJobResource, `{"id", "name", "type", "properties": {"status", ...}}`
  (what `BatchJob._from_rest_object` reads: name, id, type, properties.status).
- Jobs - Get: a JobBase resource whose `properties.status` is a REST `JobStatus`, with the
  lower-case batch keys the service puts on a batch job (`azureml.endpointname`,
  `azureml.deploymentname`; design brief, "Facts checked from outside") and `outputs`
  (JobOutput: `jobOutputType`, `uri`); JobBase has no error field.
- run history details: RunDetails, the error in `error.error.{code,message}` (azure-ai-ml
  _restclient/runhistory models RunDetails, ErrorResponse, RootError).
- Errors: `{"error": {"code", "message"}}` (ARM's error envelope); 401 with
  `WWW-Authenticate: Bearer` without a valid token.

The token is the local stand-in for a managed identity's token: a random value kept in
`<LOCAL_DIR>/deployer/api-token` (mode 0600), which the local ADF runner presents for a
Web activity's MSI authentication. `python -m deployer api` serves the API in the foreground
and prints how to call it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from workspace.errors import ConfigError, NotFound, ProjectError
from workspace.settings import LOCAL_HOST, Settings

PROVIDER = "Microsoft.MachineLearningServices"
# The local workspace's resource id: the path Jobs - Get takes after the ARM host.
WORKSPACE_PATH = f"/subscriptions/local/resourceGroups/local/providers/{PROVIDER}/workspaces/local"
TOKEN_FILE = "api-token"
# The api-version of Jobs - Get in this repo's pinned REST types (tests/fixtures/azure_types.json,
# Microsoft.MachineLearningServices/workspaces/jobs@2024-10-01).
JOBS_API_VERSION = "2024-10-01"
# The local backend's job states are REST JobStatus values already (deployer.engine.records).
_INPUT_TYPES = {"urifile": "UriFile", "urifolder": "UriFolder"}
_INVOKE = re.compile(r"^/endpoints/([^/]+)/jobs/?$")
_JOB = re.compile(rf"^{re.escape(WORKSPACE_PATH)}/jobs/([^/]+)(/cancel)?$", re.IGNORECASE)
_DETAILS = re.compile(rf"^/history/v1\.0{re.escape(WORKSPACE_PATH)}/runs/([^/]+)/details$",
                      re.IGNORECASE)


class ApiError(ProjectError):
    """A request the API refuses: its HTTP status and Azure ML's error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


def token_path(settings: Settings) -> Path:
    return settings.local_path / "deployer" / TOKEN_FILE


def local_token(settings: Settings) -> str:
    """The API's bearer token, created (0600) the first time it is asked for."""
    path = token_path(settings)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile: theirs counts
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
        return token


def _lower_keys(value: Any) -> Any:
    """Keys matched without regard to case (the docs write InputData, the SDK inputData)."""
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


@dataclass
class InvokeRequest:
    """An invoke body in the local backend's terms."""

    input_uri: str
    overrides: Any  # deployer.entities.JobOverrides

    @classmethod
    def parse(cls, body: Any) -> "InvokeRequest":
        from deployer.entities import JobOverrides

        if not isinstance(body, dict) or not isinstance(_lower_keys(body).get("properties"), dict):
            raise ApiError(400, "UserError", "The body must be {\"properties\": {\"inputData\": ...}}.")
        props = _lower_keys(body)["properties"]
        inputs = props.get("inputdata") or {}
        if not isinstance(inputs, dict) or len(inputs) != 1:
            raise ApiError(400, "UserError", "properties.inputData must hold exactly one input "
                           "(a model deployment takes one).")
        (item,) = inputs.values()
        kind = _INPUT_TYPES.get(str((item or {}).get("jobinputtype", "")).lower())
        uri = (item or {}).get("uri")
        if kind is None or not isinstance(uri, str) or not uri:
            raise ApiError(400, "UserError", "An input needs jobInputType UriFile or UriFolder "
                           "and a uri.")
        if not uri.startswith("azureml://datastores/"):
            raise ApiError(400, "UserError", f"Input uri '{uri}': the local target reads "
                           "azureml://datastores/<datastore>/paths/<path> only.")
        return cls(uri, JobOverrides(
            mini_batch_size=_int(props, "minibatchsize"),
            instance_count=_int(props.get("compute") or {}, "instancecount"),
            max_retries=_int(props.get("retrysettings") or {}, "maxretries"),
            error_threshold=_int(props, "errorthreshold"),
            output_path=_output_uri(props),
            job_name=props.get("name") or None,
            experiment_name=(props.get("properties") or {}).get("experimentname") or None))


def _int(props: dict, key: str) -> int | None:
    value = props.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "UserError", f"{key} must be an integer, not {value!r}.")
    return value


def _output_uri(props: dict) -> str | None:
    outputs = props.get("outputdata") or {}
    if not outputs:
        return None
    if not isinstance(outputs, dict) or len(outputs) != 1:
        raise ApiError(400, "UserError", "properties.outputData holds at most one output.")
    (item,) = outputs.values()
    if str((item or {}).get("joboutputtype", "")).lower() != "urifile":
        raise ApiError(400, "UserError", "A custom output location must be of type UriFile.")
    return (item or {}).get("uri")


class LocalMlApi:
    """The routes over one local backend."""

    def __init__(self, settings: Settings, backend=None):
        self.settings = settings
        self._backend = backend
        self.token = local_token(settings)

    @property
    def backend(self):
        if self._backend is None:
            from deployer.backends.local import LocalBackend

            self._backend = LocalBackend(self.settings)
        return self._backend

    def handle(self, method: str, path: str, headers: dict, body: Any) -> tuple[int, Any]:
        match = _INVOKE.match(path)
        if match and method == "POST":
            return self.invoke(match.group(1), headers.get("azureml-model-deployment") or None, body)
        match = _JOB.match(path)
        if match and method == "GET" and not match.group(2):
            return 200, self.job_resource(self._job(match.group(1)))
        if match and method == "POST" and match.group(2):
            return self.cancel(match.group(1))
        match = _DETAILS.match(path)
        if match and method == "GET":
            return 200, self.run_details(self._job(match.group(1)))
        raise ApiError(404, "NotFound", f"No route {method} {path} (the local API answers "
                       "invoke, Jobs - Get, Jobs - Cancel and run details).")

    def invoke(self, endpoint: str, deployment: str | None, body: Any) -> tuple[int, dict]:
        request = InvokeRequest.parse(body)
        try:
            job = self.backend.invoke(endpoint, request.input_uri, deployment=deployment,
                                      wait=False, overrides=request.overrides)
        except NotFound as exc:
            raise ApiError(404, "UserError", str(exc)) from None
        except ConfigError as exc:
            raise ApiError(400, "UserError", str(exc)) from None
        return 200, {
            "id": f"{WORKSPACE_PATH}/batchEndpoints/{endpoint}/deployments/{job.deployment}"
                  f"/jobs/{job.name}",
            "name": job.name,
            "type": f"{PROVIDER}/workspaces/batchEndpoints/deployments/jobs",
            "properties": {"status": job.status, "inputData": body["properties"].get(
                "inputData", body["properties"].get("InputData"))},
        }

    def _job(self, name: str):
        from workspace.names import JOB_NAME

        if not JOB_NAME.is_valid(name):
            raise ApiError(400, "UserError", f"'{name}' is not a job name.")
        try:
            return self.backend.get_job(name)
        except NotFound:
            raise ApiError(404, "UserError", f"Job {name} does not exist.") from None

    def job_resource(self, job) -> dict:
        outputs = {}
        if job.output_uri:
            outputs["score"] = {"jobOutputType": "uri_file", "uri": job.output_uri}
        return {
            "id": f"{WORKSPACE_PATH}/jobs/{job.name}", "name": job.name,
            "type": f"{PROVIDER}/workspaces/jobs",
            "properties": {
                "jobType": "Pipeline", "status": job.status,
                "experimentName": job.experiment or job.endpoint, "displayName": job.name,
                "properties": {"azureml.endpointname": job.endpoint,
                               "azureml.deploymentname": job.deployment,
                               "runSource": "BatchDeployment"},
                "tags": {"azureml.batchrun": "true", "azureml.deploymentname": job.deployment},
                "inputs": {}, "outputs": outputs,
            },
        }

    @staticmethod
    def run_details(job) -> dict:
        details = {"runId": job.name, "status": job.status, "warnings": [], "properties": {},
                   "tags": {}, "logFiles": {}}
        if job.status == "Failed":
            files = "; ".join(f"{f.get('file')}: {f.get('message')}" for f in job.failed_files[:3])
            message = " ".join(filter(None, [job.error or "The job failed.", files]))
            details["error"] = {"error": {"code": "UserError", "message": message}}
        return details

    def cancel(self, name: str) -> tuple[int, None]:
        job = self._job(name)
        if job.status in ("Completed", "Failed", "Canceled"):
            return 200, None
        threading.Thread(target=self.backend.cancel_job, args=(name,), daemon=True).start()
        return 202, None


class _Handler(BaseHTTPRequestHandler):
    api: LocalMlApi  # set on the server's handler class

    def log_message(self, format, *args):  # noqa: A002 - quiet; the caller reports
        pass

    def _reply(self, status: int, body: Any, headers: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, method: str) -> None:
        auth = self.headers.get("Authorization", "")
        if not secrets.compare_digest(auth, f"Bearer {self.api.token}"):
            return self._reply(401, {"error": {"code": "InvalidAuthenticationToken",
                                               "message": "A bearer token is required (the "
                                               "local API's token, as the local runner presents "
                                               "it for MSI)."}},
                               {"WWW-Authenticate": "Bearer"})
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null") if length else None
        except ValueError:
            return self._reply(400, {"error": {"code": "UserError", "message": "The body is not JSON."}})
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, payload = self.api.handle(method, urlsplit(self.path).path, headers, body)
        except ApiError as exc:
            status, payload = exc.status, {"error": {"code": exc.code, "message": str(exc)}}
        except ProjectError as exc:
            status, payload = 500, {"error": {"code": "InternalError", "message": str(exc)}}
        self._reply(status, payload)

    def do_GET(self):  # noqa: N802 - http.server's names
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")


class ApiServer:
    """The API on 127.0.0.1 in a thread of this process (port 0: any free port)."""

    def __init__(self, settings: Settings, port: int = 0, backend=None):
        handler = type("Handler", (_Handler,), {"api": LocalMlApi(settings, backend)})
        self.httpd = ThreadingHTTPServer((LOCAL_HOST, port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def token(self) -> str:
        return self.httpd.RequestHandlerClass.api.token

    def invocation_uri(self, endpoint: str) -> str:
        return f"{self.base_url}/endpoints/{endpoint}/jobs"

    @property
    def workspace_uri(self) -> str:
        return f"{self.base_url}{WORKSPACE_PATH}"

    def __enter__(self) -> "ApiServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
