"""The rollout's own rules, without a backend: deployment names within Azure ML's limits,
the rollback candidate, and the invoke overrides checked as Azure ML checks them."""
from __future__ import annotations

import pytest

from deployer.entities import Deployment, JobOverrides
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


def test_the_rollback_candidate_is_the_newest_earlier_version_that_passed():
    assert rollback_candidate([dep("v3", 3, default=True), dep("v2", 2, smoke="failed"),
                               dep("v1", 1)]).name == "v1"
    # a rollback to v1 made v1 the default: the candidate is then the newest other one
    assert rollback_candidate([dep("v3", 3), dep("v1", 1, default=True)]).name == "v3"
    assert rollback_candidate([dep("v1", 1, default=True), dep("v2", 2, smoke="failed")]) is None


def test_only_a_tested_deployment_or_an_earlier_default_is_a_candidate():
    """A deployment whose smoke test never ended (the run was killed during it), or one
    --no-smoke created that never became the default, has never scored a known input."""
    untested, skipped = dep("v3", 3, smoke=""), dep("v3", 3, smoke="skipped")
    assert rollback_candidate([dep("v2", 2, default=True), untested]) is None
    assert rollback_candidate([dep("v2", 2, default=True), skipped]) is None
    assert rollback_candidate([dep("v3", 3, default=True), untested, dep("v1", 1)]).name == "v1"
    assert not_a_candidate(untested) == "untested, never the default"
    assert not_a_candidate(skipped) == "deployed with --no-smoke, never the default"
    assert not_a_candidate(dep("v2", 2, smoke="failed")) == "smoke test failed"
    # one that served as the default before (tagged when the default moved away from it)
    served = Deployment(name="v1", model="iris-classifier:1", tags={"served": "default"})
    assert not_a_candidate(served) == ""
    assert rollback_candidate([dep("v2", 2, default=True), served]).name == "v1"


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
