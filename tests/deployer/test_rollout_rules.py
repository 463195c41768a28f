"""The rollout's own rules, without a backend: deployment names within Azure ML's limits,
the rollback candidate, and the invoke overrides checked as Azure ML checks them."""
from __future__ import annotations

import pytest

from deployer.entities import HISTORY_MAX, DefaultHistory, Deployment, JobOverrides, with_history
from deployer.rollout import (deployment_name, not_a_candidate, rollback_candidate,
                              validate_overrides)
from tests.support.fake_azureml import rest_name_pattern
from workspace.errors import ConfigError


@pytest.mark.parametrize("base, version, expected", [
    ("iris-mlflow", "3", "iris-mlflow-v3"),
    ("iris_mlflow", "3", "iris_mlflow-v3"),
    ("a" * 260, "12", "a" * 251 + "-v12"),
    ("x" * 251 + "-yy", "7", "x" * 251 + "-v7"),  # cut before a dash: no '--'
])
def test_a_version_deployment_name_keeps_the_version_and_azure_mls_rules(base, version, expected):
    name = deployment_name(base, version)
    assert name == expected
    # the service's pattern for deployment names (REST types, tests/fixtures/azure_types.json)
    assert rest_name_pattern("batchEndpoints/deployments").match(name)


def dep(name, version, default=False, smoke="passed", created="2026-01-01"):
    return Deployment(name=name, model=f"iris-classifier:{version}", created=created,
                      is_default=default, tags={"smoke": smoke} if smoke else {})


def test_the_rollback_candidate_is_the_most_recent_previous_default_that_passed():
    history = DefaultHistory(previous=("v1", "v0"))
    assert rollback_candidate([dep("v3", 3, default=True), dep("v2", 2, smoke="failed"),
                               dep("v1", 1), dep("v0", 0)], history).name == "v1"
    # what served before, not the newest model version: v3 never was the default
    assert rollback_candidate([dep("v3", 3), dep("v1", 1, default=True), dep("v0", 0)],
                              DefaultHistory(previous=("v0",))).name == "v0"
    assert rollback_candidate([dep("v1", 1, default=True), dep("v2", 2, smoke="failed")],
                              DefaultHistory(previous=("v2",))) is None


def test_a_deployment_rolled_back_from_is_never_the_candidate():
    """rollback v2 → v1, then v3 deployed: the candidate is v1 (what served before v3),
    not v2; a second rollback does not toggle back to v2."""
    deployed_v2 = DefaultHistory().switched("v1", "v2", rollback=False)
    assert deployed_v2 == DefaultHistory(previous=("v1",))
    rolled = deployed_v2.switched("v2", "v1", rollback=True)
    assert rolled == DefaultHistory(previous=(), rolled_back=("v2",))
    listing = [dep("v1", 1, default=True), dep("v2", 2)]
    assert rollback_candidate(listing, rolled) is None
    assert not_a_candidate(dep("v2", 2), rolled) == "rolled back from"
    deployed_v3 = rolled.switched("v1", "v3", rollback=False)
    assert deployed_v3 == DefaultHistory(previous=("v1",), rolled_back=("v2",))
    listing = [dep("v3", 3, default=True), dep("v2", 2), dep("v1", 1)]
    assert rollback_candidate(listing, deployed_v3).name == "v1"
    again = deployed_v3.switched("v3", "v1", rollback=True)
    assert rollback_candidate([dep("v1", 1, default=True), dep("v2", 2), dep("v3", 3)],
                              again) is None
    # named with --to it serves again, and is a previous default like any other after that
    named = again.switched("v1", "v2", rollback=True).switched("v2", "v4", rollback=False)
    assert named.previous == ("v2",) and "v2" not in named.rolled_back


def test_keep_keeps_the_most_recent_previous_defaults_that_are_candidates():
    from deployer.rollout import candidates

    history = DefaultHistory(previous=("v4", "v3", "v2", "v1"), rolled_back=("v5",))
    listing = [dep("v6", 6, default=True), dep("v5", 5), dep("v4", 4, smoke="skipped"),
               dep("v3", 3), dep("v2", 2), dep("v1", 1)]
    assert [d.name for d in candidates(listing, history)] == ["v3", "v2", "v1"]
    assert not_a_candidate(dep("v4", 4, smoke="skipped"), history) == (
        "served without a smoke test (deployed with --no-smoke)")


def test_the_history_is_kept_in_tags_azure_allows():
    """One deployment name per tag (Azure: at most 256 characters a value, 50 tags a
    resource); other tags of the endpoint stay as they are."""
    long = "d" * 251 + "-v12"
    history = DefaultHistory(previous=tuple(f"p{n}" for n in range(30)) + (long,),
                             rolled_back=("r1",))
    tags = with_history({"team": "iris", "rollout.previous.40": "old"}, history)
    assert tags["team"] == "iris" and "rollout.previous.40" not in tags
    assert len(tags) == 1 + HISTORY_MAX and max(len(v) for v in tags.values()) <= 256
    assert DefaultHistory.from_tags(tags).previous == history.previous[:HISTORY_MAX]
    assert DefaultHistory.from_tags({**tags, "rollout.previous.x": "y"}) == \
        DefaultHistory.from_tags(tags)
    assert DefaultHistory.from_tags(with_history({}, DefaultHistory(("a",), ("b", "c")))) == \
        DefaultHistory(("a",), ("b", "c"))


def test_only_a_tested_previous_default_is_a_candidate():
    """A deployment whose smoke test never ended (the run was killed during it), or one
    --no-smoke created, has never scored a known input; one never the default never served."""
    untested, skipped = dep("v3", 3, smoke=""), dep("v3", 3, smoke="skipped")
    none = DefaultHistory()
    assert rollback_candidate([dep("v2", 2, default=True), untested], none) is None
    assert rollback_candidate([dep("v2", 2, default=True), skipped], none) is None
    assert not_a_candidate(untested, none) == "untested, never the default"
    assert not_a_candidate(skipped, none) == "deployed with --no-smoke, never the default"
    assert not_a_candidate(dep("v1", 1), none) == "never the default"
    assert not_a_candidate(dep("v2", 2, smoke="failed"), none) == "smoke test failed"
    assert not_a_candidate(untested, DefaultHistory(previous=("v3",))) == \
        "served without a smoke test (untested)"


@pytest.mark.parametrize("overrides", [
    JobOverrides(mini_batch_size=1, instance_count=1, max_retries=0, error_threshold=-1),
    JobOverrides(output_path="azureml://datastores/workspaceblobstore/paths/out/p.csv",
                 job_name="Nightly_2026-01-01", experiment_name="nightly"),
])
def test_valid_overrides_pass(overrides):
    assert validate_overrides(overrides) is overrides


@pytest.mark.parametrize("overrides, message", [
    (JobOverrides(mini_batch_size=True), "--mini-batch-size is True"),
    (JobOverrides(output_path="azureml://datastores/workspaceblobstore/paths/out"),
     "is not a valid datastore file path: its last segment is not a file name"),
    (JobOverrides(output_path="azureml://datastores/workspaceblobstore/paths/out/p.csv/"),
     "is not a valid datastore file path: its path 'out/p.csv/': it has an empty segment"),
    # a segment '..' would take the output out of its folder (and a URL resolves it)
    (JobOverrides(output_path="azureml://datastores/workspaceblobstore/paths/../../other/p.csv"),
     "is not a valid datastore file path: its path '../../other/p.csv': its segment '..'"),
    (JobOverrides(output_path="azureml://datastores/a.b/paths/p.csv"),
     "is not a valid datastore file path: its datastore 'a.b'"),
    (JobOverrides(job_name="x" * 256), "--job-name 'xxx"),
    (JobOverrides(job_name="a/b"), "--job-name 'a/b' is not a valid Azure ML job name"),
    (JobOverrides(experiment_name="../x"),
     "--experiment-name '../x' is not a valid Azure ML experiment name"),
])
def test_invalid_overrides_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_overrides(overrides)
