"""The local runner's control flow: Web, Until, Wait, SetVariable, IfCondition, Fail and
ExecutePipeline activities with Data Factory's semantics, and nothing else silently.

`check_pipeline` runs before a run starts: every activity type must be one of SUPPORTED
(anything else is refused, naming the activity and its type), names are unique, every
`dependsOn` names an activity of the same container with a known condition, every variable
is declared, and every expression parses with supported functions only (adf/expressions.py).

`FlowRunner` executes a pipeline's activities. The semantics, from Microsoft's docs
(MicrosoftDocs azure-docs, articles/data-factory/):
- dependencies (tutorial-pipeline-failure-error-handling.md): an activity runs when every
  activity it depends on ended with one of the listed conditions, `Succeeded`, `Failed`,
  `Skipped` or `Completed` (succeeded or failed); otherwise it is Skipped;
- the outcome of a pipeline (and of the activities of an If Condition branch or an Until
  iteration, same file): "Evaluate outcome for all leaves activities. If a leaf activity was
  skipped, we evaluate its parent activity instead. Pipeline result is success if and only if
  all nodes evaluated succeed";
- Until (control-flow-until-activity.md): the expression is evaluated after the inner
  activities ran ("do-until"); an inner activity that fails does not stop the loop;
  `timeout` `d.hh:mm:ss`, 7 days by default; past it the activity fails;
- Wait (control-flow-wait-activity.md): `waitTimeInSeconds`;
- Set Variable (control-flow-set-variable-activity.md): a declared variable, or with
  `setSystemVariable` the `pipelineReturnValue` (`key` → `{type, content}`), which a calling
  Execute Pipeline activity reads as `output.pipelineReturnValue`;
- If Condition (control-flow-if-condition-activity.md): `ifTrueActivities` or
  `ifFalseActivities`;
- Fail (control-flow-fail-activity.md): fails with its `message` and `errorCode`;
- Execute Pipeline (control-flow-execute-pipeline-activity.md): runs the named pipeline with
  the given parameters; its output holds `pipelineName`, `pipelineRunId` and
  `pipelineReturnValue`; `waitOnCompletion` defaults to false, which this runner does not
  support (it is refused before the run: set it true);
- Web (control-flow-web-activity.md): `method`, `url`, `headers`, `body`, `authentication`
  (`MSI` with a `resource`), `httpRequestTimeout` (1 minute by default); the output is the
  JSON response (at most 4 MB) with `ADFWebActivityResponseHeaders`; a response that is not a
  success fails the activity. Locally a Web activity reaches only 127.0.0.1 (the local
  batch-endpoint API), and MSI authentication presents that API's local token.
- activity policy `retry` / `retryIntervalInSeconds` / `timeout` (concepts-pipelines-activities.md).
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

from adf.expressions import PipelineContext, check, evaluate
from adf.runs import ActivityRun, now, parse_timespan
from workspace.errors import ConfigError

SUPPORTED = ("WebActivity", "Until", "Wait", "SetVariable", "IfCondition", "Fail",
             "ExecutePipeline")
CONDITIONS = ("Succeeded", "Failed", "Skipped", "Completed")
RETURN_VALUE = "pipelineReturnValue"
UNTIL_DEFAULT_TIMEOUT = 7 * 24 * 3600.0
WEB_DEFAULT_TIMEOUT = 60.0
WEB_OUTPUT_MAX_BYTES = 4 * 1024 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _timespan(text: Any, where: str) -> float:
    return parse_timespan(str(text), where)


def inner_containers(activity: dict) -> list[tuple[str, list]]:
    """The activity lists an activity holds (Until's, If Condition's branches)."""
    props = activity.get("typeProperties") or {}
    kind = activity.get("type")
    if kind == "Until":
        return [("activities", props.get("activities") or [])]
    if kind == "IfCondition":
        return [(key, props.get(key) or []) for key in ("ifTrueActivities", "ifFalseActivities")]
    return []


def all_activities(activities: list) -> list[dict]:
    found = []
    for activity in activities:
        found.append(activity)
        for _, inner in inner_containers(activity):
            found += all_activities(inner)
    return found


def is_control_flow(pipeline_body: dict) -> bool:
    """True when the pipeline has an activity this module runs (the training and sweep
    pipelines have one Custom activity, alone or in a ForEach, and run as before)."""
    return any(a.get("type") in SUPPORTED
               for a in all_activities(pipeline_body["properties"].get("activities") or []))


def check_pipeline(body: dict, parameters: dict, where: str,
                   pipelines: dict[str, dict]) -> None:
    """Refuse, before anything runs, what the local runner would not run as Data Factory
    does: an unsupported activity, a broken dependency, an undeclared variable, an
    unsupported expression, an Execute Pipeline of an unknown pipeline."""
    props = body["properties"]
    activities = all_activities(props.get("activities") or [])
    names: list[str] = [a.get("name") for a in activities]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: activity names must be unique in a pipeline; "
                          f"{', '.join(duplicates)} appear more than once.")
    for activity in activities:
        kind = activity.get("type")
        if kind not in SUPPORTED:
            raise ConfigError(f"{where}: activity '{activity.get('name')}' is of type '{kind}', "
                              "which the local runner does not run.",
                              f"The local runner runs {', '.join(SUPPORTED)} (and a pipeline "
                              "of one Custom activity, alone or in a ForEach).")
    declared = dict(props.get("variables") or {})
    context = PipelineContext(body["name"], "check", parameters,
                              activities={n: None for n in names},
                              variables={n: None for n in declared})
    _check_container(props.get("activities") or [], context, declared, where, pipelines)


def _check_container(activities: list, context: PipelineContext, declared: dict, where: str,
                     pipelines: dict[str, dict]) -> None:
    here = {a.get("name") for a in activities}
    for activity in activities:
        name = activity.get("name")
        at = f"{where} activity '{name}'"
        for dependency in activity.get("dependsOn") or []:
            if dependency.get("activity") not in here:
                raise ConfigError(f"{at}: dependsOn names '{dependency.get('activity')}', which "
                                  "is not an activity of the same container.")
            unknown = [c for c in dependency.get("dependencyConditions") or []
                       if c not in CONDITIONS]
            if unknown or not dependency.get("dependencyConditions"):
                raise ConfigError(f"{at}: dependencyConditions {unknown or '[]'} are not among "
                                  f"{', '.join(CONDITIONS)}.")
        props = activity.get("typeProperties") or {}
        kind = activity.get("type")
        if kind == "SetVariable":
            variable = props.get("variableName")
            if props.get("setSystemVariable"):
                if variable != RETURN_VALUE:
                    raise ConfigError(f"{at}: the only system variable is {RETURN_VALUE}.")
                for entry in props.get("value") or []:
                    check(_return_content(entry), context, f"{at} value '{entry.get('key')}'")
                continue
            if variable not in declared:
                raise ConfigError(f"{at}: variable '{variable}' is not declared "
                                  f"(declared: {', '.join(sorted(declared)) or 'none'}).")
        if kind == "ExecutePipeline":
            target = (props.get("pipeline") or {}).get("referenceName")
            if target not in pipelines:
                raise ConfigError(f"{at}: pipeline '{target}' is not in adf/ (pipelines: "
                                  f"{', '.join(sorted(pipelines))}).")
            if props.get("waitOnCompletion") is not True:
                raise ConfigError(f"{at}: waitOnCompletion is not true; the local runner runs "
                                  "a child pipeline only to its end.",
                                  "Set \"waitOnCompletion\": true.")
        if kind == "WebActivity":
            auth = props.get("authentication") or {}
            if auth and auth.get("type") != "MSI":
                raise ConfigError(f"{at}: authentication type '{auth.get('type')}' is not "
                                  "supported locally (MSI is).")
        if kind == "Fail" and not props.get("errorCode"):
            raise ConfigError(f"{at}: a Fail activity needs an errorCode.")
        containers = inner_containers(activity)
        plain = {k: v for k, v in props.items()
                 if k not in ("activities", "ifTrueActivities", "ifFalseActivities", "value")
                 or (k == "value" and kind == "SetVariable")}
        check(plain, context, f"{at} typeProperties")
        for key, inner in containers:
            _check_container(inner, context, declared, f"{at} {key}", pipelines)


def _return_content(entry: dict) -> Any:
    value = entry.get("value") or {}
    if value.get("type") == "Expression":
        return value.get("content")
    return None


# ------------------------------------------------------------------ execution


class FlowCancelled(Exception):
    """The run is being cancelled."""


@dataclass
class Outcome:
    status: str  # Succeeded | Failed | Cancelled
    error: dict = field(default_factory=dict)


@dataclass
class FlowHooks:
    """What the runner needs from its surroundings."""

    record: Callable[[ActivityRun], None]           # an activity run started or changed
    http: Callable[..., tuple[int, dict, bytes]]    # (method, url, headers, body, timeout)
    token: Callable[[str], str]                     # MSI resource → bearer token
    run_child: Callable[[str, dict], tuple[str, "FlowResult"]]  # pipeline, parameters → run id, result
    cancelled: threading.Event
    on_web_output: Callable[[dict], None] = lambda output: None


@dataclass
class FlowResult:
    status: str
    message: str = ""
    return_value: dict = field(default_factory=dict)


class FlowRunner:
    def __init__(self, body: dict, parameters: dict, run_id: str, hooks: FlowHooks,
                 trigger_time: str = ""):
        self.body, self.hooks = body, hooks
        props = body["properties"]
        self.variables = {name: spec.get("defaultValue")
                          for name, spec in (props.get("variables") or {}).items()}
        self.outputs: dict[str, dict | None] = {
            a.get("name"): None for a in all_activities(props.get("activities") or [])}
        self.return_value: dict = {}
        self.context = PipelineContext(body["name"], run_id, parameters,
                                       trigger_time=trigger_time, activities=self.outputs,
                                       variables=self.variables)

    def run(self) -> FlowResult:
        outcome = self.container(self.body["properties"].get("activities") or [], None)
        message = ""
        if outcome.status == "Failed":
            message = (f"Operation on target {outcome.error.get('target', '?')} failed: "
                       f"{outcome.error.get('message', '')}")
        return FlowResult(outcome.status, message, self.return_value)

    # --------------------------------------------------------------- containers

    def container(self, activities: list, deadline: float | None) -> Outcome:
        """Run the activities of one container in dependency order; its outcome by the
        leaf rule."""
        state: dict[str, str] = {}
        errors: dict[str, dict] = {}
        pending = list(activities)
        while pending:
            ready = [a for a in pending
                     if all(d["activity"] in state for d in a.get("dependsOn") or [])]
            if not ready:
                raise ConfigError(f"Activities {[a['name'] for a in pending]} depend on each "
                                  "other in a cycle.")
            for activity in ready:
                pending.remove(activity)
                name = activity["name"]
                if all(_met(state[d["activity"]], d["dependencyConditions"])
                       for d in activity.get("dependsOn") or []):
                    outcome = self.activity(activity, deadline)
                    state[name], errors[name] = outcome.status, outcome.error
                    if outcome.status == "Cancelled":
                        return outcome
                else:
                    state[name] = "Skipped"
        return _leaf_outcome(activities, state, errors)

    # --------------------------------------------------------------- one activity

    def activity(self, activity: dict, deadline: float | None) -> Outcome:
        """One activity with its policy's retries; its output recorded for activity()."""
        policy = activity.get("policy") or {}
        retries = int(policy.get("retry", 0))
        interval = float(policy.get("retryIntervalInSeconds", 30))
        for attempt in range(retries + 1):
            if attempt:
                self.sleep(interval, deadline)
            outcome = self.attempt(activity, deadline)
            if outcome.status != "Failed" or activity["type"] in ("Fail", "Until", "IfCondition",
                                                                   "ExecutePipeline"):
                break
        return outcome

    def attempt(self, activity: dict, deadline: float | None) -> Outcome:
        name, kind = activity["name"], activity["type"]
        run = ActivityRun(str(uuid.uuid4()), name, "InProgress", start=_now(),
                          output={}, error={})
        self.hooks.record(run)
        try:
            if self.hooks.cancelled.is_set():
                raise FlowCancelled()
            output = getattr(self, f"run_{kind.lower()}")(activity, run, deadline)
            run.status, run.output = "Succeeded", output if output is not None else {}
        except FlowCancelled:
            run.status = "Cancelled"
            run.error = _error("Cancelled (python -m adf cancel).", "UserError", name)
        except _ActivityFailed as failed:
            run.status, run.output = "Failed", failed.output
            run.error = _error(failed.message, failed.failure_type, name, failed.code)
        except ConfigError as exc:  # an expression that fails at run time
            run.status = "Failed"
            run.error = _error(exc.message, "UserError", name)
        run.end = _now()
        self.outputs[name] = {"output": run.output, "status": run.status, "error": run.error or None}
        self.hooks.record(run)
        return Outcome(run.status, run.error)

    def eval(self, value: Any, activity: dict, what: str) -> Any:
        return evaluate(value, self.context, f"activity '{activity['name']}' {what}")

    def sleep(self, seconds: float, deadline: float | None) -> None:
        end = time.monotonic() + max(0.0, seconds)
        if deadline is not None:
            end = min(end, deadline)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.hooks.cancelled.wait(min(left, 0.5)):
                raise FlowCancelled()

    # --------------------------------------------------------------- the activity types

    def run_wait(self, activity, run, deadline):
        seconds = self.eval((activity["typeProperties"]).get("waitTimeInSeconds"), activity,
                            "waitTimeInSeconds")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise _ActivityFailed(f"waitTimeInSeconds is {seconds!r}, not a number of seconds.")
        self.sleep(float(seconds), deadline)
        return {}

    def run_setvariable(self, activity, run, deadline):
        props = activity["typeProperties"]
        if props.get("setSystemVariable"):
            for entry in props.get("value") or []:
                value = entry.get("value") or {}
                content = value.get("content")
                self.return_value[entry["key"]] = (
                    self.eval(content, activity, f"value '{entry['key']}'")
                    if value.get("type") == "Expression" else content)
            return {"name": RETURN_VALUE, "value": dict(self.return_value)}
        value = self.eval(props.get("value"), activity, "value")
        self.variables[props["variableName"]] = value
        return {"name": props["variableName"], "value": value}

    def run_fail(self, activity, run, deadline):
        props = activity["typeProperties"]
        message = self.eval(props.get("message"), activity, "message")
        code = self.eval(props.get("errorCode"), activity, "errorCode")
        raise _ActivityFailed(str(message), code=str(code), failure_type="UserError")

    def run_ifcondition(self, activity, run, deadline):
        props = activity["typeProperties"]
        verdict = self.eval(props.get("expression"), activity, "expression")
        if not isinstance(verdict, bool):
            raise _ActivityFailed(f"expression evaluates to {verdict!r}, not true or false.")
        branch = props.get("ifTrueActivities" if verdict else "ifFalseActivities") or []
        outcome = self.container(branch, deadline)
        if outcome.status == "Cancelled":
            raise FlowCancelled()
        if outcome.status == "Failed":
            raise _inner_failed(outcome)
        return {"ifCondition": verdict}

    def run_until(self, activity, run, deadline):
        props = activity["typeProperties"]
        timeout = (_timespan(props["timeout"], f"activity '{activity['name']}' timeout")
                   if props.get("timeout") else UNTIL_DEFAULT_TIMEOUT)
        own = time.monotonic() + timeout
        until = own if deadline is None else min(own, deadline)
        iterations = 0
        while True:
            outcome = self.container(props.get("activities") or [], until)
            iterations += 1
            if outcome.status == "Cancelled":
                raise FlowCancelled()
            if self.eval(props.get("expression"), activity, "expression") is True:
                if outcome.status == "Failed":
                    raise _inner_failed(outcome)
                return {"iterations": iterations}
            if time.monotonic() >= until:
                raise _ActivityFailed(f"The Until activity timed out after {timeout:.0f} s "
                                      f"({iterations} iterations) before its expression was "
                                      "true.", code="ActivityTimedOut")

    def run_executepipeline(self, activity, run, deadline):
        props = activity["typeProperties"]
        pipeline = props["pipeline"]["referenceName"]
        parameters = self.eval(props.get("parameters") or {}, activity, "parameters")
        child_id, result = self.hooks.run_child(pipeline, parameters)
        output = {"pipelineName": pipeline, "pipelineRunId": child_id,
                  RETURN_VALUE: result.return_value}
        if result.status == "Cancelled":
            raise FlowCancelled()
        if result.status != "Succeeded":
            raise _ActivityFailed(f"Operation on target {pipeline} failed: {result.message}",
                                  output=output)
        return output

    def run_webactivity(self, activity, run, deadline):
        props = self.eval({k: v for k, v in activity["typeProperties"].items()}, activity,
                          "typeProperties")
        url, method = str(props.get("url") or ""), str(props.get("method") or "GET").upper()
        if urlsplit(url).hostname not in LOOPBACK:
            raise _ActivityFailed(f"The local runner calls only 127.0.0.1 (the local API), "
                                  f"not {url}.", failure_type="UserError")
        headers = {str(k): str(v) for k, v in (props.get("headers") or {}).items()}
        auth = props.get("authentication") or {}
        if auth.get("type") == "MSI":
            headers["Authorization"] = f"Bearer {self.hooks.token(str(auth.get('resource', '')))}"
        body = props.get("body")
        data = None if body is None or method == "GET" else (
            body if isinstance(body, str) else json.dumps(body)).encode()
        timeout = (_timespan(props["httpRequestTimeout"], "httpRequestTimeout")
                   if props.get("httpRequestTimeout") else WEB_DEFAULT_TIMEOUT)
        try:
            status, response_headers, payload = self.hooks.http(method, url, headers, data, timeout)
        except OSError as exc:
            raise _ActivityFailed(f"{method} {url} failed: {exc}.") from None
        if len(payload) > WEB_OUTPUT_MAX_BYTES:
            raise _ActivityFailed(f"The response is {len(payload)} bytes; a Web activity's "
                                  f"output is at most {WEB_OUTPUT_MAX_BYTES}.")
        try:
            output = json.loads(payload) if payload else {}
        except ValueError:
            output = {"Response": payload.decode("utf-8", errors="replace")}
        if not isinstance(output, dict):
            output = {"Response": output}
        output["ADFWebActivityResponseHeaders"] = response_headers
        if not 200 <= status < 300:
            raise _ActivityFailed(f"{method} {url} answered {status}: "
                                  f"{payload.decode('utf-8', errors='replace')[:500]}",
                                  output=output, code=str(status))
        self.hooks.on_web_output(output)
        return output


class _ActivityFailed(Exception):
    def __init__(self, message: str, code: str = "2500", failure_type: str = "UserError",
                 output: dict | None = None):
        super().__init__(message)
        self.message, self.code, self.failure_type = message, code, failure_type
        self.output = output or {}


def _inner_failed(outcome: Outcome) -> _ActivityFailed:
    """A container activity failed by one of its own: Data Factory's wording, which names the
    inner activity and carries its error code."""
    error = outcome.error
    return _ActivityFailed(f"Activity failed because an inner activity failed; Inner activity "
                           f"name: {error.get('target', '?')}, Error: {error.get('message', '')}",
                           code=error.get("errorCode", "2500"),
                           failure_type=error.get("failureType", "UserError"))


def _met(status: str, conditions: list) -> bool:
    return any(status == c or (c == "Completed" and status in ("Succeeded", "Failed"))
               for c in conditions)


def _leaf_outcome(activities: list, state: dict, errors: dict) -> Outcome:
    """ADF's rule: every leaf, or for a skipped leaf its parents (recursively), must have
    succeeded; the first that did not gives the error."""
    by_name = {a["name"]: a for a in activities}
    parents = {a["name"]: [d["activity"] for d in a.get("dependsOn") or []] for a in activities}
    depended = {p for names in parents.values() for p in names}
    leaves = [a["name"] for a in activities if a["name"] not in depended]

    def evaluated(name: str, seen: set) -> list[str]:
        if state.get(name) != "Skipped":
            return [name]
        found = []
        for parent in parents[name]:
            if parent not in seen:
                found += evaluated(parent, seen | {parent})
        return found

    for name in [n for leaf in leaves for n in evaluated(leaf, {leaf})]:
        if state.get(name) != "Succeeded" and name in by_name:
            return Outcome("Failed", errors.get(name) or _error(
                f"Activity '{name}' was {state.get(name)}.", "UserError", name))
    return Outcome("Succeeded")


def _error(message: str, failure_type: str, target: str, code: str = "2500") -> dict:
    return {"errorCode": code, "message": message, "failureType": failure_type,
            "target": target}


def _now() -> str:
    return now()
