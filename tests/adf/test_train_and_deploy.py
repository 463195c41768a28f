"""`python -m adf trigger --pipeline train-and-deploy` on the local target, as a process from
a fresh state: one run stages, trains (train-iris), registers and deploys with a smoke test
(deploy-iris, the deployer run from the staged archive in a Custom-activity task directory)
and scores the staged sample (score-iris); the predictions are in the datastore."""
from __future__ import annotations

import json
import re

import pytest

from tests.adf.test_score_pipeline import Adf, run_json
from tests.conftest import container_datastore, isolated_settings
from tests.deployer.test_local_cli import ok

pytestmark = pytest.mark.slow


def test_one_trigger_trains_deploys_and_scores_the_sample(azurite, tmp_path):
    settings = isolated_settings(azurite, tmp_path)
    store = container_datastore(settings)
    adf = Adf(settings, tmp_path / "work")

    out = ok(adf("trigger", "--pipeline", "train-and-deploy", "--param", "epochs=30",
                 timeout=900))
    assert "iris-packages.zip" in out and "deploy_task.py" in out  # staged for deploy-iris
    run_id = re.search(r"Started run ([0-9a-f-]{36}) of pipeline 'train-and-deploy'", out).group(1)
    run = run_json(adf, run_id)
    assert run["status"] == "Succeeded"
    assert [a["name"] for a in run["activities"]] == [
        "Train", "RegisterAndDeploy", "ScoreSample", "ReturnScoring"]
    # each activity ran once: the summary numbers attempts per activity, not activity runs
    assert re.findall(r"Attempt (\d): (\w+) Succeeded", out) == [
        ("1", "Train"), ("1", "RegisterAndDeploy"), ("1", "ScoreSample"), ("1", "ReturnScoring")]
    returned = run["output"]["pipelineReturnValue"]

    # the deployment: the Custom activity's task ran register-and-deploy, smoke test passed
    deploy = run_json(adf, returned["deployRunId"])
    assert deploy["pipeline"] == "deploy-iris" and deploy["status"] == "Succeeded"
    assert deploy["activities"][0]["output"]["exitcode"] == 0
    logs = ok(adf("logs", returned["deployRunId"]))
    assert re.search(r"model\s+\S+ version 1\s", logs), logs
    assert re.search(r"smoke\s+job \S+: \d+ rows scored through iris-mlflow-v1", logs), logs
    train = run_json(adf, returned["trainRunId"])
    assert train["pipeline"] == "train-iris" and train["status"] == "Succeeded"
    model_run = train["activities"][0]["output"]["customOutput"]
    assert model_run["runId"] in logs  # the model trained by this run is the one deployed

    # the sample was scored by the new default deployment: predictions in the datastore
    blob = returned["output"].split("/paths/", 1)[1]
    predictions = store.read_bytes(blob).decode().splitlines()
    assert len(predictions) == 150
    assert json.dumps(returned["jobName"]) in json.dumps(run_json(adf, run_id))


def test_cancel_stops_the_loop_and_the_custom_child_it_runs(azurite, tmp_path):
    import time

    settings = isolated_settings(azurite, tmp_path)
    container_datastore(settings)
    adf = Adf(settings, tmp_path / "work")
    out = ok(adf("trigger", "--pipeline", "train-and-deploy", "--param", "epochs=3000",
                 "--no-wait"))
    run_id = re.search(r"Started run ([0-9a-f-]{36})", out).group(1)
    child = None
    for _ in range(600):  # until train-iris's task is running
        runs = json.loads(ok(adf("runs", "list", "-o", "json")))["runs"]
        training = [r for r in runs if r["pipeline"] == "train-iris"
                    and r["status"] == "InProgress" and r["activities"]]
        if training:
            child = training[0]["run_id"]
            break
        time.sleep(0.5)
    assert child, runs
    cancelled = adf("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert run_json(adf, run_id)["status"] == "Cancelled"
    assert run_json(adf, child)["status"] == "Cancelled"  # its task was stopped with it
    assert [a["name"] for a in run_json(adf, run_id)["activities"]] == ["Train"]
