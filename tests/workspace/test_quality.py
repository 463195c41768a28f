"""When a candidate's test accuracy is worse than the serving model's: lower, and whether
beyond the sampling uncertainty of the two test sets (workspace/quality.py)."""
from __future__ import annotations

import pytest

from workspace.quality import AccuracyComparison, compare_accuracy, wilson_interval


def metrics(accuracy: float, rows: int) -> dict:
    return {"test_accuracy": accuracy, "test_rows": float(rows)}


def test_a_perfect_score_has_a_wilson_interval_below_one():
    """At 1.000 the normal interval is [1, 1]; Wilson's says what 30 rows allow (about the
    rule of three's 3/n)."""
    low, high = wilson_interval(1.0, 30)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.886, abs=0.001)
    assert wilson_interval(1.0, 3)[0] < 0.5
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


@pytest.mark.parametrize("candidate, serving, worse, beyond_noise", [
    (metrics(29 / 30, 30), metrics(1.0, 30), True, False),  # one error more on 30 rows: noise
    (metrics(26 / 30, 30), metrics(1.0, 30), True, False),
    (metrics(25 / 30, 30), metrics(1.0, 30), True, True),
    (metrics(146 / 150, 150), metrics(1.0, 150), True, False),
    (metrics(145 / 150, 150), metrics(1.0, 150), True, True),
    # different sizes: 0.967 on 150 rows against a perfect score on 30 is no evidence
    (metrics(145 / 150, 150), metrics(1.0, 30), True, False),
    (metrics(0.7, 150), metrics(29 / 30, 30), True, True),
    (metrics(1.0, 30), metrics(0.9, 300), False, False),  # better
    (metrics(28 / 30, 30), metrics(140 / 150, 150), False, False),  # the same, other sizes
])
def test_worse_means_lower_and_says_whether_beyond_the_sampling_uncertainty(
        candidate, serving, worse, beyond_noise):
    result = compare_accuracy(candidate, serving)
    assert isinstance(result, AccuracyComparison)
    assert (result.worse, result.beyond_noise) == (worse, beyond_noise)
    assert result.low <= serving["test_accuracy"] - candidate["test_accuracy"] <= result.high


def test_the_comparison_says_both_and_why():
    text = compare_accuracy(metrics(29 / 30, 30), metrics(1.0, 30)).text
    assert text.startswith("test_accuracy 0.967 on 30 test rows vs 1.000 on 30 serving: lower, "
                           "within the sampling uncertainty of the two test sets (it may be "
                           "noise) (95 % interval of the difference -0.083 to +")
    assert compare_accuracy(metrics(0.9, 30), {"test_accuracy": 1.0}) == (
        "the serving model reports no test_rows (the size of its test set)")
    assert compare_accuracy({}, metrics(1.0, 30)) == "the candidate reports no test_accuracy"
