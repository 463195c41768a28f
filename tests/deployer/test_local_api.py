"""The local batch-endpoint invocation API over real HTTP: the invoke body azure-ai-ml builds,
Jobs - Get until the job ends, run details of a failed job, and the bearer token."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from deployer.engine.api import WORKSPACE_PATH, ApiServer, local_token
from tests.support.scoring import deploy_local_endpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, azurite, trained_source):
    """A local endpoint serving the session's model (no smoke test: the API is tested here),
    and the Iris file plus a file the model cannot read in the datastore."""
    settings, store, cli = deploy_local_endpoint(tmp_path_factory.mktemp("api"), azurite,
                                                 trained_source)
    settings = replace(settings, local_dir=str(cli.local_dir))
    with ApiServer(settings) as server:
        yield settings, store, server


def call(server: ApiServer, method: str, path: str, body=None, token: str | None = "ok",
         headers: dict | None = None):
    """(status, headers, JSON body) of a request, as curl would send it."""
    url = path if path.startswith("http") else server.base_url + path
    request = urllib.request.Request(url, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {server.token if token == 'ok' else token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return response.status, dict(response.headers), json.loads(data) if data else None
    except urllib.error.HTTPError as error:
        data = error.read()
        return error.code, dict(error.headers), json.loads(data) if data else None


def sdk_invoke_body(uri: str, input_type: str = "uri_file", **params) -> dict:
    """The body azure-ai-ml's `batch_endpoints.invoke(endpoint, input=Input(...), ...)` posts
    to the invocation URI: the same BatchJobSchema load over params_override, wrapped in
    `properties` (azure/ai/ml/operations/_batch_endpoint_operations.py, invoke)."""
    from azure.ai.ml import Input
    from azure.ai.ml._schema._deployment.batch.batch_job import BatchJobSchema
    from azure.ai.ml.constants._common import BASE_PATH_CONTEXT_KEY, PARAMS_OVERRIDE_KEY

    key = "UriFile" if input_type == "uri_file" else "UriFolder"
    overrides = [{"input_data": {key: Input(type=input_type, path=uri)}}]
    overrides += [{k: v} for k, v in params.items()]
    wire = BatchJobSchema(context={BASE_PATH_CONTEXT_KEY: Path("."),
                                   PARAMS_OVERRIDE_KEY: overrides}).load(data={})
    return {"properties": wire}


def wait_for(server: ApiServer, name: str) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, _, job = call(server, "GET", f"{WORKSPACE_PATH}/jobs/{name}?api-version=2024-10-01")
        assert status == 200, job
        if job["properties"]["status"] in ("Completed", "Failed", "Canceled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {name} did not end")


def test_invoke_and_jobs_get_answer_as_azure_ml_does(deployed):
    settings, store, server = deployed
    uri = f"azureml://datastores/{settings.datastore_name}/paths/incoming/iris.csv"
    body = sdk_invoke_body(uri, mini_batch_size=5, job_name="api-iris-1")
    assert body["properties"]["inputData"] == {"UriFile": {"jobInputType": "UriFile", "uri": uri}}
    status, _, job = call(server, "POST", "/endpoints/iris-batch/jobs", body)
    assert status == 200, job
    assert job["name"] == "api-iris-1"
    assert job["properties"]["status"] == "Queued"
    assert job["id"].startswith(f"{WORKSPACE_PATH}/batchEndpoints/iris-batch/deployments/")

    done = wait_for(server, "api-iris-1")
    assert done["properties"]["status"] == "Completed"
    assert done["properties"]["properties"]["azureml.endpointname"] == "iris-batch"
    output = done["properties"]["outputs"]["score"]["uri"]
    blob = output.split("/paths/", 1)[1]
    assert len(store.read_bytes(blob).decode().splitlines()) == 150


def test_the_documented_capitalised_body_works_and_a_failed_job_has_its_error(deployed):
    """Microsoft's REST examples write InputData/JobInputType/Uri; a job that fails reports
    Failed in Jobs - Get and its error in the run details."""
    settings, _, server = deployed
    uri = f"azureml://datastores/{settings.datastore_name}/paths/incoming/notes.txt"
    body = {"properties": {"InputData": {"input": {"JobInputType": "UriFile", "Uri": uri}},
                           "ErrorThreshold": 0}}  # one failed file fails the job
    status, _, job = call(server, "POST", "/endpoints/iris-batch/jobs", body)
    assert status == 200, job
    assert wait_for(server, job["name"])["properties"]["status"] == "Failed"
    status, _, details = call(server, "GET",
                              f"/history/v1.0{WORKSPACE_PATH}/runs/{job['name']}/details")
    assert status == 200
    assert details["status"] == "Failed"
    assert "not supported" in details["error"]["error"]["message"]


def test_a_request_without_the_token_is_refused(deployed):
    settings, _, server = deployed
    body = sdk_invoke_body(f"azureml://datastores/{settings.datastore_name}/paths/incoming/iris.csv")
    for token in (None, "wrong"):
        status, headers, error = call(server, "POST", "/endpoints/iris-batch/jobs", body, token=token)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert error["error"]["code"] == "InvalidAuthenticationToken"
    assert local_token(settings) == server.token  # the one token, kept in LOCAL_DIR


def test_bad_requests_get_azure_ml_errors(deployed):
    settings, _, server = deployed
    uri = f"azureml://datastores/{settings.datastore_name}/paths/incoming/iris.csv"
    status, _, error = call(server, "POST", "/endpoints/nope/jobs", sdk_invoke_body(uri))
    assert status == 404 and "nope" in error["error"]["message"]
    status, _, error = call(server, "POST", "/endpoints/iris-batch/jobs", sdk_invoke_body(uri),
                            headers={"azureml-model-deployment": "missing"})
    assert status == 404 and "missing" in error["error"]["message"]
    status, _, error = call(server, "POST", "/endpoints/iris-batch/jobs", {"properties": {}})
    assert status == 400 and error["error"]["code"] == "UserError"
    status, _, error = call(server, "GET", f"{WORKSPACE_PATH}/jobs/batchjob-unknown")
    assert status == 404
