"""Checks both targets' typed status must pass for the same specs (deployment.yml and
compute.yml of deployer/specs, instance_count set to 2 by the tests)."""
from __future__ import annotations


def assert_deployment_follows_the_spec(dep, specs) -> None:
    wanted = specs.deployment.data["settings"]
    assert (dep.instance_count, dep.mini_batch_size, dep.max_concurrency_per_instance) == (
        2, wanted["mini_batch_size"], wanted["max_concurrency_per_instance"])
    assert (dep.max_retries, dep.retry_timeout) == (3, wanted["retry_settings"]["timeout"])
    # the spec's words on both targets (the Azure SDK's entity says AppendRow)
    assert (dep.output_action, dep.output_file_name, dep.logging_level) == (
        "append_row", "predictions.csv", "info")
