"""A control-flow run of the local runner as processes: Execute Pipeline's child is a run of
its own, followed while the parent runs (not taken for a dead run), both recorded."""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.adf.test_local_triggers import Adf

pytestmark = pytest.mark.azurite

CHILD = {"name": "child", "properties": {
    "parameters": {"seconds": {"type": "Int"}},
    "activities": [{"name": "Pause", "type": "Wait",
                    "typeProperties": {"waitTimeInSeconds": "@pipeline().parameters.seconds"}}]}}
PARENT = {"name": "parent", "properties": {
    "activities": [{"name": "RunChild", "type": "ExecutePipeline", "typeProperties": {
        "pipeline": {"referenceName": "child", "type": "PipelineReference"},
        "parameters": {"seconds": 3}, "waitOnCompletion": True}}]}}


def test_execute_pipeline_runs_the_child_as_a_run_of_its_own(settings, tmp_path):
    from tests.conftest import container_datastore

    container_datastore(settings)
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "parent.json").write_text(json.dumps(PARENT))
    (folder / "child.json").write_text(json.dumps(CHILD))
    adf = Adf(settings, folder)
    started = adf.run("trigger", "--pipeline", "parent", "--no-wait", "--definitions", str(folder))
    assert started.returncode == 0, started.stdout + started.stderr
    parent_id = re.search(r"Started run ([0-9a-f-]{36})", started.stdout).group(1)

    def runs():
        return {r["pipeline"]: r for r in json.loads(adf.run("runs", "list", "-o", "json").stdout)["runs"]}

    deadline = time.monotonic() + 60
    while "child" not in runs():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert runs()["child"]["status"] == "InProgress"   # looked at while it runs: not buried
    while runs()["parent"]["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    final = runs()
    assert final["parent"]["status"] == final["child"]["status"] == "Succeeded"
    parent = json.loads(adf.run("status", parent_id, "-o", "json").stdout)["run"]
    assert parent["activities"][0]["output"]["pipelineRunId"] == final["child"]["run_id"]


def test_a_custom_pipeline_it_executes_is_checked_before_the_run(tmp_path):
    """train-and-deploy's Custom children are planned as the runner would before anything
    runs: an unsupported expression in deploy-iris's command is refused, naming it."""
    import json as _json
    import shutil as _shutil

    from adf.definitions import DEFINITIONS_DIR
    from adf.local_runner import LocalBackend
    from workspace.errors import ConfigError
    from workspace.settings import Settings

    copy = tmp_path / "adf"
    _shutil.copytree(DEFINITIONS_DIR, copy, ignore=_shutil.ignore_patterns("*.py", "__pycache__"))
    deploy = _json.loads((copy / "deploy-pipeline.json").read_text())
    deploy["properties"]["activities"][0]["typeProperties"]["command"]["value"] += \
        " @{utcNow()}"
    (copy / "deploy-pipeline.json").write_text(_json.dumps(deploy))
    settings = Settings.load(env_file=tmp_path / "no.env", environ={},
                             local_dir=str(tmp_path / "local"))
    backend = LocalBackend(settings, copy)
    backend.pipeline_file = "train-and-deploy-pipeline.json"
    with pytest.raises(ConfigError) as error:
        backend.start({})
    assert "utcNow" in error.value.message and "register-and-deploy" in error.value.message
    assert not list((tmp_path / "local").rglob("run.json"))  # nothing started
