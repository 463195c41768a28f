"""A sweep on the Azure target: the sweep pipeline published and run through the real
DataFactoryManagementClient over the HTTP fake, the queues through the real
azure-storage-queue client against Azurite's queue service."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest

from adf.azure_backend import AzureBackend
from adf.definitions import SWEEP_PIPELINE_FILE, filled, load_definitions
from adf.sweep import SweepIncomplete, Sweeps, check_complete
from tests.conftest import container_datastore, isolated_settings
from tests.adf.test_azure_backend import azure_settings, fake  # noqa: F401 - the same fixtures
from tests.support.fake_http import StaticTokenCredential
from workspace.errors import ConfigError
from workspace.queues import queue_service
from workspace.settings import AZURITE_KEY


@pytest.fixture
def sweeps(azure_settings, fake, azurite, azurite_queue, tmp_path) -> Sweeps:
    backend = AzureBackend(azure_settings, credential=StaticTokenCredential(), transport=fake,
                           retry_backoff_factor=0)
    local = replace(isolated_settings(azurite, tmp_path), azurite_queue_port=str(azurite_queue.port))
    return Sweeps(backend, container_datastore(local), queue_service(local))


def test_the_queue_endpoint_is_the_datastore_accounts(azure_settings):
    client = queue_service(azure_settings, StaticTokenCredential())
    assert client.url.rstrip("/") == "https://stiris.queue.core.windows.net"


def test_start_publishes_the_foreach_pipeline_queues_the_lines_and_runs_it(
        sweeps, fake, azure_settings, tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs,lr\n10,0.1\n20,0.05\n")
    said = []
    record = sweeps.start(grid, 3, {"maxAttempts": "2"}, said.append)
    assert fake.missing_routes() == []

    # The pipeline is the JSON file, as a plain dict: ForEach of a Custom activity.
    expected = filled(load_definitions(None, SWEEP_PIPELINE_FILE), azure_settings)
    body = fake.published[("pipelines", "sweep-iris")]
    assert body == {"properties": expected.pipeline.properties}
    (for_each,) = body["properties"]["activities"]
    assert for_each["type"] == "ForEach"
    properties = for_each["typeProperties"]
    assert properties["isSequential"] is False and 1 <= properties["batchCount"] <= 50
    assert properties["items"]["value"] == "@range(1, pipeline().parameters.workers)"
    (custom,) = properties["activities"]
    assert custom["type"] == "Custom"   # not the SDK model's "Execution"
    command = custom["typeProperties"]["command"]["value"]
    assert "node_runner.py" in command and "--queue-url" in command
    assert "AccountKey" not in json.dumps(body) and AZURITE_KEY not in json.dumps(body)

    # Run with the sweep's own parameters; the runner staged beside main.py.
    (create,) = fake.find("POST", r"/pipelines/sweep-iris/createRun$")
    # --workers 3 on a 2-line grid: 2 runners, and the sweep says why.
    assert create.body == {"maxAttempts": 2, "sweepId": record.sweep_id, "workers": 2,
                           "queueAccountUrl": sweeps.queue_service.url.rstrip("/")}
    assert record.workers == 2 and "--workers 3 lowered to 2: the grid has 2 line(s)." in said[0]
    staged = {name.rsplit("/", 1)[-1] for name in fake.blobs if name.startswith("azureml/adf/")}
    assert staged == {"main.py", "node_runner.py", "requirements.txt", "iris_csv.csv"}

    # One message per line on the real queue.
    messages = sweeps.queues(record.sweep_id).clients["work"].peek_messages(max_messages=32)
    assert sorted(json.loads(m.content)["line"] for m in messages) == [2, 3]
    assert json.loads(messages[0].content)["params"] in ({"epochs": 10, "lr": 0.1},
                                                          {"epochs": 20, "lr": 0.05})

    # No runner took a line (the fake runs nothing): the run ends, the lines are missing.
    state = sweeps.wait(record.sweep_id, lambda s: None, poll_seconds=0)
    assert state.pipeline_status == "Succeeded" and state.queued == 2
    with pytest.raises(SweepIncomplete) as error:
        check_complete(state)
    assert "done 0 + failed 0 != total 2" in error.value.message
    assert "lines not accounted for: 2, 3" in error.value.message
    sweeps.queues(record.sweep_id).delete()


def test_a_parameter_the_sweep_sets_itself_is_refused_before_anything(sweeps, fake, tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs\n10\n")
    with pytest.raises(ConfigError, match="--param workers is set by the sweep itself"):
        sweeps.start(grid, 2, {"workers": "5"}, print)
    with pytest.raises(ConfigError, match="no parameter 'epochs'"):
        sweeps.start(grid, 2, {"epochs": "5"}, print)
    assert fake.requests == []


def test_a_sweep_that_cannot_start_leaves_no_queue_and_no_record(sweeps, fake, tmp_path,
                                                                  monkeypatch):
    from workspace.errors import ProjectError

    grid = tmp_path / "grid.csv"
    grid.write_text("epochs\n10\n")

    def refused(parameters):
        raise ProjectError("Azure refused access while starting pipeline 'sweep-iris'.")

    monkeypatch.setattr(sweeps.backend, "start", refused)
    before = {q.name for q in sweeps.queue_service.list_queues()}
    with pytest.raises(ProjectError, match="refused access"):
        sweeps.start(grid, 2, {}, print)
    assert {q.name for q in sweeps.queue_service.list_queues()} == before
    assert sweeps.ids() == []
