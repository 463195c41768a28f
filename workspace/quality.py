"""What a run's test accuracy is worth: the one rule of the deployer's quality gate and of
the sweep leaderboards (`adf sweep status|list`, `deployer register-and-deploy --sweep`).

An accuracy measured on n test rows moves in steps of 1/n, and a perfect score on n rows
still leaves the error rate unknown up to about 3/n (the "rule of three": with no error
in n trials, the 95 % upper confidence bound on the error rate is 3/n). A split with
`test_size=0.001` holds out 3 Iris rows: accuracy 1.000 there bounds the error rate only
below 100 %, yet it would rank first and pass a gate of 0.9. From 30 rows on, a perfect
score bounds the error rate at 10 %, the margin the default gate (accuracy >= 0.9)
allows; it is also what the trainer's default split holds out of Iris (20 % of 150).
So a run needs at least MIN_TEST_ROWS test rows to be ranked or to pass the gate; the
trainer records the number as the metric `test_rows` in its manifest and outputs.
"""
from __future__ import annotations

QUALITY_METRIC = "test_accuracy"
TEST_ROWS_METRIC = "test_rows"
MIN_TEST_ROWS = 30


def test_rows_problem(metrics: dict, minimum: int = MIN_TEST_ROWS) -> str:
    """'' if the accuracy was measured on at least `minimum` test rows, else how it was
    measured ("on only 3 test rows"), to follow the accuracy in a message."""
    rows = metrics.get(TEST_ROWS_METRIC)
    if rows is None:
        return f"with no {TEST_ROWS_METRIC} metric (the size of its test set)"
    if float(rows) < minimum:
        return f"on only {int(float(rows))} test rows"
    return ""


def accuracy_text(metrics: dict) -> str:
    accuracy = metrics.get(QUALITY_METRIC)
    return f"{QUALITY_METRIC} {'n/a' if accuracy is None else f'{float(accuracy):.3f}'}"


def rank_key(metrics: dict, line: int) -> tuple:
    """Best first: runs with enough test rows, then test accuracy, macro-F1, the earlier line."""
    return (bool(test_rows_problem(metrics)), -float(metrics.get(QUALITY_METRIC, 0.0)),
            -float(metrics.get("test_f1_macro", 0.0)), line)
