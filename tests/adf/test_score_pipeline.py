"""`python -m adf trigger --pipeline score-iris` on the local target, as processes: the
pipeline invokes the local batch endpoint through the local API with the runner's MSI token,
polls the job to its end, returns the job and its output; a failed job fails the run with
the job's error; `cancel` stops the run and the scoring job it started."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deployer.test_local_cli import Cli, ok, publish_model_dir
from tests.support.scoring import deploy_local_endpoint
from workspace.errors import ExitCode
from workspace.published import download_model, find_published_run

pytestmark = pytest.mark.slow


class Adf(Cli):
    """`python -m adf` with the same environment as the deployer's Cli."""

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 240):
        return subprocess.run([sys.executable, "-m", "adf", *args], cwd=self.workdir,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, azurite, trained_source):
    tmp = tmp_path_factory.mktemp("score")
    settings, store, deployer = deploy_local_endpoint(tmp, azurite, trained_source)
    return settings, store, deployer, Adf(settings, tmp / "work")


def run_json(adf: Adf, run_id: str) -> dict:
    return json.loads(adf("status", run_id, "-o", "json").stdout)["run"]


def activity(run: dict, name: str) -> dict:
    return next(a for a in run["activities"] if a["name"] == name)


def test_score_iris_invokes_waits_and_returns_the_job_and_its_output(scoring):
    settings, store, _, adf = scoring
    result = adf("trigger", "--pipeline", "score-iris", "--param", "input=incoming/iris.csv",
                 "--param", "pollSeconds=1", "--param", "miniBatchSize=1")
    out = ok(result)
    run_id = re.search(r"Started run ([0-9a-f-]{36}) of pipeline 'score-iris'", out).group(1)
    run = run_json(adf, run_id)
    assert run["status"] == "Succeeded"
    returned = run["output"]["pipelineReturnValue"]
    assert returned["jobStatus"] == "Completed" and returned["jobName"].startswith("batchjob-")
    blob = returned["output"].split("/paths/", 1)[1]
    assert len(store.read_bytes(blob).decode().splitlines()) == 150
    names = [a["name"] for a in run["activities"]]
    assert names[:4] == ["BuildInvokeBody", "RouteInvoke", "InvokeBatchEndpoint", "SetJobName"]
    assert {"GetJob", "IfJobCompleted", "ReturnJob"} <= set(names)
    assert "FailScoring" not in names and "InvokeBatchDeployment" not in names
    invoke = activity(run, "InvokeBatchEndpoint")["output"]
    assert invoke["name"] == returned["jobName"]
    # the job was invoked with the override, through the local API's invocation URI
    assert run["parameters"]["invocationUri"].endswith("/endpoints/iris-batch/jobs")
    shown = json.loads(scoring[2]("jobs", "show", returned["jobName"], "-o", "json").stdout)
    assert shown["job"]["mini_batches_total"] == 1  # one file: one mini-batch of 1
    assert "pipelineReturnValue" in out and returned["jobName"] in out
    logs = ok(adf("logs", run_id))  # each activity's output: the job's resource as read
    assert "==> InvokeBatchEndpoint Succeeded" in logs and '"status": "Completed"' in logs

    # a named deployment goes in the routing header: the local API refuses one it lacks
    routed = adf("trigger", "--pipeline", "score-iris", "--param", "input=incoming/iris.csv",
                 "--param", "deployment=no-such-deployment")
    assert routed.returncode == ExitCode.RUN_FAILED
    assert re.search(r"InvokeBatchDeployment, Error: POST \S+ answered 404: .*no-such-deployment",
                     routed.stdout + routed.stderr), routed.stdout + routed.stderr


def test_a_failed_scoring_job_fails_the_run_with_the_jobs_error(scoring):
    _, _, _, adf = scoring
    result = adf("trigger", "--pipeline", "score-iris", "--param", "input=incoming/notes.txt",
                 "--param", "errorThreshold=0", "--param", "pollSeconds=1")
    assert result.returncode == ExitCode.RUN_FAILED, result.stdout + result.stderr
    run_id = re.search(r"Started run ([0-9a-f-]{36})", result.stdout).group(1)
    run = run_json(adf, run_id)
    assert run["status"] == "Failed"
    assert re.search(r"Operation on target IfJobCompleted failed: Activity failed because an "
                     r"inner activity failed; Inner activity name: FailScoring, Error: Scoring "
                     r"job batchjob-\S+ ended Failed: .*notes\.txt: File type '\.txt' is not "
                     r"supported", run["message"]), run["message"]
    fail = [a for a in run["activities"] if a["name"] == "FailScoring"][0]
    assert fail["error"]["errorCode"] == "BatchScoringJobFailed"
    assert "notes.txt" in result.stderr


def test_bad_parameters_are_refused_before_anything_runs(scoring):
    _, _, _, adf = scoring
    bad = adf("trigger", "--pipeline", "score-iris", "--param", "input=x.csv",
              "--param", "miniBatchSize=ten")
    assert bad.returncode == ExitCode.USAGE and "'miniBatchSize' is a whole number" in bad.stderr
    quoted = adf("trigger", "--pipeline", "score-iris", "--param", 'input=a"b.csv')
    assert quoted.returncode == ExitCode.USAGE and "may not contain quotes" in quoted.stderr
    unknown = adf("trigger", "--pipeline", "score-everything")
    assert unknown.returncode == ExitCode.USAGE and "Pipelines: " in unknown.stderr
    service = adf("trigger", "--pipeline", "score-iris", "--param", "input=a.csv",
                  "--param", "workspaceUri=http://elsewhere")
    assert service.returncode == ExitCode.USAGE and "not a run's parameter" in service.stderr


def test_cancel_stops_the_run_and_its_scoring_job(scoring, tmp_path):
    from tests.support.rule_model import save_rule_model
    from tests.support.slow_model import save_slow_model

    settings, store, deployer, adf = scoring
    run = find_published_run(store, settings.model_prefix)
    release = tmp_path / "release"  # never created: the job scores until it is cancelled
    inner = save_rule_model(tmp_path / "rule", download_model(store, run, tmp_path / "inner"))
    gated = save_slow_model(tmp_path / "gated", inner, release, mode="gate", seconds=120)
    ok(deployer("register-and-deploy", "--no-smoke", "--force",
                "--model", publish_model_dir(store, run, gated, "models-gated")))
    started = ok(adf("trigger", "--pipeline", "score-iris", "--param", "input=incoming/iris.csv",
                     "--param", "pollSeconds=1", "--no-wait"))
    run_id = re.search(r"Started run ([0-9a-f-]{36})", started).group(1)
    deadline = time.monotonic() + 60
    while not any(a["name"] == "GetJob" for a in run_json(adf, run_id)["activities"]):
        assert time.monotonic() < deadline, "the run never polled its job"
        time.sleep(0.2)
    job = activity(run_json(adf, run_id), "InvokeBatchEndpoint")["output"]["name"]
    cancelled = adf("cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert run_json(adf, run_id)["status"] == "Cancelled"
    shown = json.loads(deployer("jobs", "show", job, "-o", "json").stdout)
    assert shown["job"]["status"] == "Canceled"
    api = Path(adf.local_dir) / "adf" / "runs" / run_id / "api.json"
    assert api.is_file()  # the run's API answered; it stopped with the run (no process left)
