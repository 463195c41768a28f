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
    ("@variables('x')", r"function 'variables' is not supported"),
    ("@pipeline().parameters.epochs extra", r"unexpected"),
    ("@activity", r"'activity' is not a function call or literal"),
])
def test_unsupported_or_broken_expressions_are_clear_errors(value, message):
    with pytest.raises(ExpressionError, match=message) as info:
        evaluate(value, CONTEXT, "command")
    assert "ADF expression in command" in info.value.message
    assert "fix adf/pipeline.json" in info.value.hint
