"""The ADF expression subset of the local runner, with ADF's documented semantics."""
from __future__ import annotations

import pytest

from adf.expressions import ExpressionError, PipelineContext, evaluate

CONTEXT = PipelineContext("train-iris", "run-1", {
    "epochs": 50, "lr": "0.1", "flag": True, "empty": "", "tags": ["a", "b"],
    "cfg": {"name": "x", "n": 2}})


@pytest.mark.parametrize("value, expected", [
    ("plain text", "plain text"),
    ("@pipeline().parameters.epochs", 50),                       # whole expression keeps its type
    ("@{pipeline().parameters.epochs}", "50"),                   # interpolation is text
    ("--epochs @{pipeline().parameters.epochs} --lr @{pipeline().parameters.lr}",
     "--epochs 50 --lr 0.1"),
    ("@pipeline().RunId", "run-1"),
    ("@pipeline().runid", "run-1"),                              # system properties: any case
    ("@concat('a', 'b', string(pipeline().parameters.epochs))", "ab50"),
    ("@string(pipeline().parameters.flag)", "True"),
    ("@string(pipeline().parameters.cfg)", '{"name":"x","n":2}'),
    ("@{pipeline().parameters.flag}", "True"),
    ("@@", "@"),
    ("@@pipeline()", "@pipeline()"),
    ("mail me @ home", "mail me @ home"),
    ("Answer: @@{pipeline().parameters.epochs}", "Answer: @{pipeline().parameters.epochs}"),
    ("@concat('it''s ', '{}')", "it's {}"),
    ("@{concat('}', pipeline().parameters.lr)}", "}0.1"),        # a brace inside a literal
    ("@pipeline().parameters.tags[1]", "b"),
    ("@pipeline().parameters['cfg'].name", "x"),
    ("@pipeline().parameters.cfg?.missing", None),
    ("x=@{pipeline().parameters.empty}.", "x=."),
    ("@concat(pipeline().parameters.tags, pipeline().parameters.tags)", ["a", "b", "a", "b"]),
    ({"value": "@pipeline().parameters.epochs", "type": "Expression"}, 50),
    ({"runId": {"value": "@pipeline().RunId", "type": "Expression"}, "n": 3}, {"runId": "run-1", "n": 3}),
    (["@{pipeline().parameters.lr}", 4], ["0.1", 4]),
    ("@true", True),
    ("@12.5", 12.5),
])
def test_evaluates_like_adf(value, expected):
    assert evaluate(value, CONTEXT) == expected


@pytest.mark.parametrize("value, message", [
    ("@utcnow()", r"function 'utcnow' is not supported"),
    ("@{formatDateTime(pipeline().TriggerTime, 'yyyy')}", r"function 'formatDateTime' is not supported"),
    ("@pipeline().parameters.nope", r"pipeline parameter 'nope' is not declared \(declared: cfg, empty, epochs"),
    ("@pipeline().Nope", r"pipeline\(\) has no property 'Nope'"),
    ("@{pipeline().parameters.epochs", r"expected '\}' to close '@\{'"),
    ("@concat('a'", r"expected '\)'"),
    ("@concat('a)", r"unterminated string literal"),
    ("@variables('x')", r"variables\(\) cannot be used here"),
    ("@activity('Train').output", r"activity\(\) cannot be used here"),
    ("@pipeline().parameters.epochs extra", r"unexpected"),
    ("@activity", r"'activity' is not a function call or literal"),
])
def test_unsupported_or_broken_expressions_are_clear_errors(value, message):
    with pytest.raises(ExpressionError, match=message) as info:
        evaluate(value, CONTEXT, "command")
    assert "ADF expression in command" in info.value.message
    assert "fix adf/pipeline.json" in info.value.hint


RUN = PipelineContext("score-iris", "run-2", {"input": "incoming/a.csv", "n": ""},
                      activities={"Invoke": {"output": {"name": "job-1", "properties": {
                          "status": "Completed"}}, "status": "Succeeded", "error": None},
                          "Later": None},
                      variables={"jobStatus": "Running"})


@pytest.mark.parametrize("value, expected", [
    ("@activity('Invoke').output.name", "job-1"),
    ("@activity('Invoke').output.properties.status", "Completed"),
    ("@activity('Invoke').output?.properties?.outputs?.score", None),
    ("@variables('jobStatus')", "Running"),
    ("@or(equals(variables('jobStatus'), 'Completed'), equals(variables('jobStatus'), 'Failed'))", False),
    ("@and(true, not(false))", True),
    ("@if(startsWith(pipeline().parameters.input, 'AZUREML://'), 'uri', 'path')", "path"),
    ("@if(startsWith('azureml://x', 'AZUREML://'), 'uri', 'path')", "uri"),      # ignores case
    ("@empty(pipeline().parameters.n)", True),
    ("@empty(json('{}'))", True),
    ("@coalesce(activity('Invoke').output?.missing, 'fallback')", "fallback"),
    ("@union(json('{\"a\": 1, \"b\": 1}'), json('{\"b\": 2}'))", {"a": 1, "b": 2}),
    ("@string(union(json('{\"a\":1}'), json('{}')))", '{"a":1}'),
    ("@greater(int('5'), 3)", True),
    ("@contains('a,b', 'b')", True),
    ("@join(skip(split('azureml/incoming/sub/a.csv', '/'), 1), '/')", "incoming/sub/a.csv"),
])
def test_control_flow_functions_evaluate_like_adf(value, expected):
    assert evaluate(value, RUN) == expected


@pytest.mark.parametrize("value, message", [
    ("@activity('Nope').output", r"activity 'Nope' is not in the pipeline \(activity names: Invoke, Later\)"),
    ("@variables('nope')", r"variable 'nope' is not in the pipeline"),
    ("@activity('Later').output", r"activity 'Later' has not run"),
    ("@if(true, 'a')", r"if\(\) takes 3 argument\(s\), got 2"),
    ("@not('yes')", r"not\(\): expects a boolean"),
    ("@toUpper('a')", r"function 'toUpper' is not supported"),
])
def test_control_flow_errors_name_the_problem(value, message):
    with pytest.raises(ExpressionError, match=message):
        evaluate(value, RUN, "url")


def test_a_storage_events_body_gives_the_blobs_datastore_path():
    """The storage trigger's input: the blob's path inside its container, subfolders kept
    (folderPath is '<container>/<folder>', fileName the blob's last segment)."""
    from adf.definitions import DEFINITIONS_DIR
    import json as _json

    trigger = _json.loads((DEFINITIONS_DIR / "triggers" / "score-iris-on-upload.json").read_text())
    expression = trigger["properties"]["pipelines"][0]["parameters"]["input"]
    event = PipelineContext("score-iris", "t", {}, trigger_body={
        "folderPath": "azureml/incoming/2026/12", "fileName": "a.csv"})
    assert evaluate(expression, event) == "incoming/2026/12/a.csv"
    with pytest.raises(ExpressionError, match="triggerBody\\(\\) exists only in a storage event"):
        evaluate(expression, RUN)


def test_check_parses_without_run_time_values():
    """`check` runs before the run: names and functions are checked, outputs are unknown."""
    from adf.expressions import check

    before = PipelineContext("score-iris", "run-3", {"input": "a"},
                             activities={"Invoke": None}, variables={"jobStatus": None})
    check("@concat('x', activity('Invoke').output.name, variables('jobStatus'))", before)
    check("@or(equals(activity('Invoke').output.properties.status, 'Failed'), false)", before)
    with pytest.raises(ExpressionError, match="function 'utcNow' is not supported"):
        check("@concat(activity('Invoke').output.name, utcNow())", before)
    with pytest.raises(ExpressionError, match="activity 'Other' is not in the pipeline"):
        check("@activity('Other').output", before)
