"""The local runner's control flow (adf/control_flow.py) with Data Factory's documented
semantics: dependency conditions, the leaf rule, Until, If Condition, Set Variable, Fail,
Execute Pipeline and Web over real HTTP; and what it refuses before a run starts."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adf.control_flow import FlowHooks, FlowRunner, check_pipeline
from adf.local_flow import _http
from workspace.errors import ConfigError


def act(name, kind, props=None, after=(), **extra):
    activity = {"name": name, "type": kind, "typeProperties": props or {}}
    if after:
        activity["dependsOn"] = [{"activity": a, "dependencyConditions": list(c)} for a, *c in after]
    activity.update(extra)
    return activity


def wait(name, seconds=0, after=()):
    return act(name, "Wait", {"waitTimeInSeconds": seconds}, after)


def fail(name, message="boom", after=()):
    return act(name, "Fail", {"message": message, "errorCode": "E1"}, after)


def setvar(name, variable, value, after=()):
    return act(name, "SetVariable", {"variableName": variable, "value": value}, after)


def pipeline(activities, variables=None, parameters=None, name="p"):
    return {"name": name, "properties": {"activities": activities,
                                         "variables": variables or {},
                                         "parameters": parameters or {}}}


class Recorder:
    def __init__(self, pipelines=None, token="tok"):
        self.runs, self.pipelines, self.token_value = {}, pipelines or {}, token
        self.cancelled = threading.Event()

    def hooks(self):
        return FlowHooks(record=lambda run: self.runs.setdefault(run.name, []).append(run.status),
                         http=_http, token=lambda resource: self.token_value,
                         run_child=self.child, cancelled=self.cancelled)

    def child(self, name, parameters):
        result = FlowRunner(self.pipelines[name], parameters, "child-1", self.hooks()).run()
        return "child-1", result

    def ran(self):
        """name → final status of each activity that ran (skipped ones never run)."""
        return {name: statuses[-1] for name, statuses in self.runs.items()}


def run(body, parameters=None, recorder=None):
    recorder = recorder or Recorder()
    result = FlowRunner(body, parameters or {}, "run-1", recorder.hooks()).run()
    return result, recorder


@pytest.mark.parametrize("conditions, runs", [
    (["Succeeded"], False), (["Failed"], True), (["Completed"], True), (["Skipped"], False),
])
def test_a_dependency_condition_decides_whether_an_activity_runs(conditions, runs):
    body = pipeline([fail("A"), act("B", "Wait", {"waitTimeInSeconds": 0}, [("A", *conditions)])])
    _, recorder = run(body)
    assert ("B" in recorder.ran()) is runs


def test_upon_skip_runs_after_a_skipped_activity():
    body = pipeline([fail("A"), wait("B", after=[("A", "Succeeded")]),
                     wait("C", after=[("B", "Skipped")])])
    result, recorder = run(body)
    assert recorder.ran() == {"A": "Failed", "C": "Succeeded"}


def test_the_leaf_rule_decides_the_outcome():
    """Try-Catch succeeds; Do-If-Else fails (the skipped leaf's parent failed) — the two
    examples of ADF's 'Pipeline failure and error handling'."""
    try_catch = pipeline([fail("Do"), wait("Catch", after=[("Do", "Failed")])])
    assert run(try_catch)[0].status == "Succeeded"
    do_if_else = pipeline([fail("Do"), wait("Catch", after=[("Do", "Failed")]),
                           wait("Then", after=[("Do", "Succeeded")])])
    result, _ = run(do_if_else)
    assert result.status == "Failed"
    assert result.message == "Operation on target Do failed: boom"


def test_until_loops_until_its_expression_and_sees_variables_set_inside():
    body = pipeline([act("Loop", "Until", {
        "expression": {"value": "@equals(variables('n'), 'xxx')", "type": "Expression"},
        "activities": [setvar("Grow", "n", "@concat(variables('n'), 'x')")]})],
        variables={"n": {"type": "String", "defaultValue": ""}})
    result, recorder = run(body)
    assert result.status == "Succeeded"
    assert recorder.runs["Grow"].count("Succeeded") == 3


def test_until_goes_on_after_an_inner_failure_and_times_out():
    body = pipeline([act("Loop", "Until", {
        "expression": "@equals(1, 2)", "timeout": "00:00:01",
        "activities": [fail("Inner"), wait("Pause", 0.2, after=[("Inner", "Completed")])]})])
    result, recorder = run(body)
    assert result.status == "Failed"
    assert "timed out" in result.message and "Until" in result.message
    assert recorder.runs["Inner"].count("Failed") >= 2  # the loop did not stop at the first


def test_if_condition_runs_one_branch_and_fail_carries_its_message():
    body = pipeline([act("If", "IfCondition", {
        "expression": "@equals(pipeline().parameters.x, 'a')",
        "ifTrueActivities": [wait("Yes")],
        "ifFalseActivities": [fail("No", "@concat('x was ', pipeline().parameters.x)")]})],
        parameters={"x": {"type": "String"}})
    assert run(body, {"x": "a"})[1].ran() == {"Yes": "Succeeded", "If": "Succeeded"}
    result, recorder = run(body, {"x": "b"})
    assert result.status == "Failed" and result.message == (
        "Operation on target If failed: Activity failed because an inner activity failed; "
        "Inner activity name: No, Error: x was b")
    assert "Yes" not in recorder.ran()


def test_execute_pipeline_returns_the_child_pipelines_return_value():
    child = pipeline([act("Return", "SetVariable", {
        "variableName": "pipelineReturnValue", "setSystemVariable": True,
        "value": [{"key": "doubled", "value": {"type": "Expression",
                                               "content": "@concat(pipeline().parameters.v, pipeline().parameters.v)"}}]})],
        parameters={"v": {"type": "String"}}, name="child")
    parent = pipeline([
        act("Run", "ExecutePipeline", {"pipeline": {"referenceName": "child", "type": "PipelineReference"},
                                       "parameters": {"v": "ab"}, "waitOnCompletion": True}),
        setvar("Keep", "got", "@activity('Run').output.pipelineReturnValue.doubled",
               after=[("Run", "Succeeded")])],
        variables={"got": {"type": "String"}})
    recorder = Recorder({"child": child})
    runner = FlowRunner(parent, {}, "run-1", recorder.hooks())
    assert runner.run().status == "Succeeded"
    assert runner.variables["got"] == "abab"


@pytest.fixture
def service():
    """A loopback HTTP service that answers JSON and records what it was sent."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
            seen.append((self.path, dict(self.headers), body))
            status = 500 if self.path == "/broken" else 200
            data = json.dumps({"name": "job-7", "echo": body}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_a_web_activity_posts_its_body_with_the_msi_token_and_outputs_the_response(service):
    base, seen = service
    body = pipeline([
        act("Call", "WebActivity", {"method": "POST", "url": f"{base}/jobs",
                                    "headers": {"Content-Type": "application/json"},
                                    "body": {"value": "@json('{\"a\": 1}')", "type": "Expression"},
                                    "authentication": {"type": "MSI", "resource": "https://ml.azure.com"}}),
        setvar("Name", "name", "@activity('Call').output.name", after=[("Call", "Succeeded")])],
        variables={"name": {"type": "String"}})
    recorder = Recorder(token="local-token")
    runner = FlowRunner(body, {}, "run-1", recorder.hooks())
    assert runner.run().status == "Succeeded"
    path, headers, sent = seen[0]
    assert (path, sent, headers["Authorization"]) == ("/jobs", {"a": 1}, "Bearer local-token")
    assert runner.variables["name"] == "job-7"


def test_a_failed_response_fails_the_web_activity_after_its_retries(service):
    base, seen = service
    body = pipeline([act("Call", "WebActivity", {"method": "POST", "url": f"{base}/broken", "body": {}},
                         policy={"retry": 1, "retryIntervalInSeconds": 0})])
    result, recorder = run(body)
    assert result.status == "Failed" and "answered 500" in result.message
    assert len(seen) == 2 and recorder.runs["Call"].count("Failed") == 2


def test_the_local_runner_calls_no_host_but_loopback():
    body = pipeline([act("Call", "WebActivity", {"method": "GET", "url": "https://example.org/x"})])
    result, _ = run(body)
    assert result.status == "Failed" and "calls only 127.0.0.1" in result.message


@pytest.mark.parametrize("activities, message", [
    ([act("Copy", "Copy", {})], "activity 'Copy' is of type 'Copy', which the local runner does not run"),
    ([act("L", "Until", {"expression": "@true", "activities": [act("Look", "Lookup", {})]})],
     "activity 'Look' is of type 'Lookup'"),
    ([wait("A"), wait("A")], "A appear more than once"),
    ([wait("B", after=[("Nope", "Succeeded")])], "dependsOn names 'Nope'"),
    ([wait("A"), wait("B", after=[("A", "Done")])], "dependencyConditions ['Done']"),
    ([setvar("S", "undeclared", "x")], "variable 'undeclared' is not declared"),
    ([act("W", "Wait", {"waitTimeInSeconds": "@utcNow()"})], "function 'utcNow' is not supported"),
    ([act("W", "Wait", {"waitTimeInSeconds": "@activity('Nope').output"})], "activity 'Nope' is not in the pipeline"),
    ([act("E", "ExecutePipeline", {"pipeline": {"referenceName": "missing"}, "waitOnCompletion": True})],
     "pipeline 'missing' is not in adf/"),
    ([act("E", "ExecutePipeline", {"pipeline": {"referenceName": "p"}})], "waitOnCompletion is not true"),
])
def test_what_the_runner_cannot_run_is_refused_before_the_run(activities, message):
    body = pipeline(activities)
    with pytest.raises(ConfigError) as error:
        check_pipeline(body, {}, "adf/x.json", {"p": body})
    assert message in error.value.message


def test_the_pipelines_of_adf_pass_the_check():
    from adf.definitions import DEFINITIONS_DIR, pipeline_files
    from adf.control_flow import is_control_flow

    bodies = {name: json.loads((DEFINITIONS_DIR / file).read_text())
              for name, file in pipeline_files().items()}
    flows = [name for name, body in bodies.items() if is_control_flow(body)]
    assert "score-iris" in flows
    for name in flows:
        declared = bodies[name]["properties"].get("parameters") or {}
        check_pipeline(bodies[name], {n: s.get("defaultValue", "x") for n, s in declared.items()},
                       name, bodies)
