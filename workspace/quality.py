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

from dataclasses import dataclass

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


# ---------------------------------------------------------------------- a worse model
#
# `register-and-deploy` refuses a model that measured lower than the one serving (exit 5,
# unless --force): a release does not lower the measured quality unless the operator says
# so. The two accuracies are estimates from test sets of different sizes and, in general,
# different splits (another seed, another --test-size, other data): 0.967 on 30 rows (one
# error) after 1.000 on 30 rows may be noise, as each moves by 1/30 with one row more or
# less right. The refusal says which it is, so the operator can weigh --force: the 95 %
# confidence interval of the difference (serving - candidate), and whether it lies entirely
# above 0 ("beyond the sampling uncertainty"). The interval is Newcombe's hybrid score
# interval (Newcombe 1998, "Interval estimation for the difference between independent
# proportions", method 10), built from the two Wilson score intervals: unlike the textbook
# normal interval it stays sound at an accuracy of 1.000 and on small test sets, which is
# where these runs live (a perfect score on n rows is the "rule of three" case above). On
# 30 test rows each, against a serving 1.000, the difference is beyond noise at 0.833 and
# below (5 errors); on 150 rows each, at 0.967 and below.

Z_95 = 1.959963984540054  # two-sided 95 %


def wilson_interval(accuracy: float, rows: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of an accuracy measured on `rows` test rows."""
    if rows <= 0:
        return 0.0, 1.0
    p, n, z2 = float(accuracy), float(rows), z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * ((p * (1 - p) / n + z2 / (4 * n * n)) ** 0.5) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class AccuracyComparison:
    """A candidate's test accuracy against the serving model's, each on its own test set."""

    candidate: float
    candidate_rows: int
    serving: float
    serving_rows: int
    low: float  # the 95 % interval of serving - candidate
    high: float

    @property
    def worse(self) -> bool:
        """The candidate measured lower than the serving model: a release never lowers the
        measured quality unless the operator says so (--force), noise or not."""
        return self.candidate < self.serving - 1e-9

    @property
    def beyond_noise(self) -> bool:
        """Lower beyond the sampling uncertainty of the two estimates (the 95 % interval of
        serving - candidate lies above 0): what the operator weighs before --force."""
        return self.low > 0

    @property
    def text(self) -> str:
        if not self.worse:
            verdict = "not lower than the serving model's"
        elif self.beyond_noise:
            verdict = "lower, beyond the sampling uncertainty of the two test sets"
        else:
            verdict = ("lower, within the sampling uncertainty of the two test sets "
                       "(it may be noise)")
        return (f"{QUALITY_METRIC} {self.candidate:.3f} on {self.candidate_rows} test rows vs "
                f"{self.serving:.3f} on {self.serving_rows} serving: {verdict} (95 % interval "
                f"of the difference {self.low:+.3f} to {self.high:+.3f})")


def compare_accuracy(candidate: dict, serving: dict) -> AccuracyComparison | str:
    """The comparison of two runs' metrics, or why they cannot be compared."""
    for who, metrics in (("the candidate", candidate), ("the serving model", serving)):
        if metrics.get(QUALITY_METRIC) is None:
            return f"{who} reports no {QUALITY_METRIC}"
        if metrics.get(TEST_ROWS_METRIC) is None:
            return f"{who} reports no {TEST_ROWS_METRIC} (the size of its test set)"
    p1, n1 = float(serving[QUALITY_METRIC]), int(float(serving[TEST_ROWS_METRIC]))
    p2, n2 = float(candidate[QUALITY_METRIC]), int(float(candidate[TEST_ROWS_METRIC]))
    (l1, u1), (l2, u2) = wilson_interval(p1, n1), wilson_interval(p2, n2)
    difference = p1 - p2
    low = difference - ((p1 - l1) ** 2 + (u2 - p2) ** 2) ** 0.5
    high = difference + ((u1 - p1) ** 2 + (p2 - l2) ** 2) ** 0.5
    return AccuracyComparison(candidate=p2, candidate_rows=n2, serving=p1, serving_rows=n1,
                              low=low, high=high)
