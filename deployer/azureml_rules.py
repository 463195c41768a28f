"""Azure ML's rules for batch endpoints, their deployments and jobs: the one copy that the
application, the rollout, both backends and the local engine use.

None of these facts is ours. Each comment names its source: the installed azure-ai-ml
(paths under azure/ai/ml/) or the Microsoft.MachineLearningServices 2024-10-01 resource
types of Azure/bicep-types-az (generated from the REST spec; reduced into
tests/fixtures/azure_types.json). tests/deployer/test_azureml_rules.py runs the SDK's own
validators and reads its defaults and those types to check every value here.
"""
from __future__ import annotations

import re

from workspace.errors import ConfigError
from workspace.names import ARM_NAME_MAX, DEPLOYMENT_NAME

# Endpoint names: EndpointConfigurations (constants/_endpoint.py), enforced by
# validate_endpoint_or_deployment_name (entities/_endpoint/_endpoint_helpers.py) on every
# BatchEndpoint the SDK sends. Narrower than the REST pattern below, which the SDK never
# lets a batch endpoint name reach.
ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
ENDPOINT_NAME_LENGTH = (3, 32)

# Batch deployment and job names: the name pattern of workspaces/batchEndpoints/deployments
# and workspaces/jobs in the REST types (workspace/names.py, with every other name a user
# passes). azure-ai-ml checks deployment names with the endpoint rule above for online
# deployments only (OnlineDeployment); a batch deployment name goes to the service
# unchecked, so this pattern is the whole rule.

# Endpoint tags: TrackedResource.tags "can be added, removed, and updated", where the
# endpoint's `properties` "can be added, but not removed or altered" (azure-ai-ml,
# _restclient/arm_ml_service/models/_models.py: TrackedResource, EndpointPropertiesBase);
# the REST type's `tags` is TrackedResourceTags, string to string (azure_types.json).
# Azure Resource Manager allows 50 tags per resource, values of at most 256 characters
# (learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations).
# The endpoint's history of defaults (entities.DefaultHistory) takes one tag per
# deployment name (ARM_NAME_MAX = 255 characters fits) and at most this many tags,
# leaving the rest to the endpoint's own.
ENDPOINT_TAGS_MAX = 50
HISTORY_TAGS_MAX = 20

# What Azure ML applies to a batch deployment setting that deployment.yml leaves out (the
# SDK then sends none): the "defaults to" of the BatchDeployment and BatchRetrySettings
# docs (entities/_deployment/batch_deployment.py, deployment_settings.py; timeout in
# seconds); instance_count from parallel_run_function's (entities/_builders/parallel_func.py):
# a batch deployment's job is a parallel job. The order is the order of plan details.
DEPLOYMENT_DEFAULTS = {
    "instance_count": 1, "mini_batch_size": 10, "max_concurrency_per_instance": 1,
    "max_retries": 3, "timeout": 30, "error_threshold": -1,
    "output_action": "append_row", "output_file_name": "predictions.csv", "logging_level": "info",
}
# Where each setting sits in deployment.yml (azure-ai-ml's ModelBatchDeploymentSchema:
# `resources` and `settings`, retry_settings nested in settings).
SPEC_KEYS = {
    "instance_count": "resources.instance_count", "mini_batch_size": "settings.mini_batch_size",
    "max_concurrency_per_instance": "settings.max_concurrency_per_instance",
    "max_retries": "settings.retry_settings.max_retries", "timeout": "settings.retry_settings.timeout",
    "error_threshold": "settings.error_threshold", "output_action": "settings.output_action",
    "output_file_name": "settings.output_file_name", "logging_level": "settings.logging_level",
}
# The lowest value of each whole-number setting. error_threshold: "Range is [-1,
# int.MaxValue]", -1 ignoring every failure (BatchDeployment docs); max_retries counts
# retries (0: none); the others count nodes, processes, files and seconds.
MINIMUM = {"instance_count": 1, "mini_batch_size": 1, "max_concurrency_per_instance": 1,
           "max_retries": 0, "timeout": 1, "error_threshold": -1}

# output_action: BatchDeploymentOutputAction (constants/_deployment.py), REST BatchOutputAction
# AppendRow / SummaryOnly. output_file_name is "for append_row output action" only, and
# BatchDeployment._validate_output_action refuses one with summary_only.
APPEND_ROW, SUMMARY_ONLY = "append_row", "summary_only"
OUTPUT_ACTIONS = (APPEND_ROW, SUMMARY_ONLY)

# An AmlCompute cluster's settings that compute.yml leaves out: AmlCompute.__init__'s
# defaults (entities/_compute/aml_compute.py); the VM size the SDK sends for none and the
# priority: ComputeDefaults.VMSIZE and .PRIORITY (constants/_compute.py).
CLUSTER_DEFAULTS = {"size": "STANDARD_DS3_V2", "min_instances": 0, "max_instances": 4,
                    "idle_time_before_scale_down": 120, "tier": "dedicated"}


# ---------------------------------------------------------------------- names


def is_endpoint_name(name) -> bool:
    low, high = ENDPOINT_NAME_LENGTH
    return isinstance(name, str) and low <= len(name) <= high and bool(ENDPOINT_NAME.match(name))


def is_arm_name(name) -> bool:
    return DEPLOYMENT_NAME.is_valid(name)


def validate_endpoint_name(name, where: str = "") -> None:
    """Refuse an endpoint name Azure ML refuses, before any call; `where` names the file."""
    if not is_endpoint_name(name):
        raise ConfigError(
            f"{_prefix(where)}Endpoint name '{name}' is invalid.",
            "Use 3-32 characters: letters, digits and dashes, starting with a letter and not "
            "ending with a dash (endpoint names are unique per Azure region).")


def validate_deployment_name(name, where: str = "") -> None:
    if not is_arm_name(name):
        raise ConfigError(f"{_prefix(where)}Deployment name '{name}' is invalid.",
                          f"Use 1-{ARM_NAME_MAX} letters, digits, '-' and '_', starting with a "
                          "letter or digit.")


def _prefix(where) -> str:
    return f"{where}: " if where else ""


# ---------------------------------------------------------------------- deployment settings


def spec_settings(data: dict) -> dict:
    """deployment.yml's batch settings, flat (None: left to Azure ML's default)."""
    flat = {}
    for key, path in SPEC_KEYS.items():
        value = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        flat[key] = value
    return flat


def with_defaults(settings: dict) -> dict:
    """Flat settings with Azure ML's default for each one left out (None), in the YAML
    spelling (`AppendRow` from the service is `append_row`)."""
    full = {key: default if settings.get(key) is None else settings[key]
            for key, default in DEPLOYMENT_DEFAULTS.items()}
    full["output_action"] = output_action(full["output_action"])
    full["logging_level"] = str(getattr(full["logging_level"], "value", full["logging_level"])).lower()
    return full


def output_action(value) -> str:
    """'append_row' for append_row, AppendRow or APPEND_ROW (and likewise summary_only)."""
    text = str(getattr(value, "value", value)).lower().replace("_", "")
    return {a.replace("_", ""): a for a in OUTPUT_ACTIONS}.get(text, str(value).lower())


def writes_output(action) -> bool:
    """Whether a job writes an output file (only append_row does)."""
    return output_action(action) == APPEND_ROW


def validate_deployment_settings(data: dict, where: str) -> dict:
    """Check deployment.yml's settings as Azure ML does, before any call; returns them flat
    with the defaults. `where` names the file in the error."""
    raw = spec_settings(data)
    if isinstance(data.get("settings"), dict) and raw["mini_batch_size"] is None:
        # ModelBatchDeploymentSettings takes mini_batch_size as a required keyword
        # (entities/_deployment/model_batch_deployment_settings.py): without it azure-ai-ml
        # cannot load the deployment.
        raise ConfigError(f"{where}: `settings` has no mini_batch_size; Azure ML's client cannot "
                          "load a model deployment's settings without it.",
                          "Add settings.mini_batch_size (Azure ML's default is "
                          f"{DEPLOYMENT_DEFAULTS['mini_batch_size']}).")
    for key, minimum in MINIMUM.items():
        value = DEPLOYMENT_DEFAULTS[key] if raw[key] is None else raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{where}: {SPEC_KEYS[key]} is {value!r}; it must be a whole "
                              f"number of at least {minimum}.")
    action = str(raw["output_action"] or APPEND_ROW).lower()
    if action not in OUTPUT_ACTIONS:
        raise ConfigError(f"{where}: settings.output_action is '{action}'.",
                          "Use append_row or summary_only.")
    if action == SUMMARY_ONLY and raw["output_file_name"]:
        raise ConfigError(f"{where}: output_action summary_only cannot have an output_file_name.",
                          "Remove settings.output_file_name or use append_row.")
    return with_defaults(raw)


# ---------------------------------------------------------------------- cluster


def cluster_settings(data: dict) -> dict:
    """compute.yml's size, node counts, idle time and tier, with Azure ML's defaults."""
    return {key: default if data.get(key) is None else data[key]
            for key, default in CLUSTER_DEFAULTS.items()}


def validate_instances(instance_count: int, compute, asked: str, fix: str) -> None:
    """A deployment or job may not ask for more nodes than its cluster's max_instances:
    checked before anything is created, not left to the service's refusal of the
    deployment. `compute` is the compute.yml spec (AmlCompute's default max_instances when
    it sets none); `asked` names the setting or option, `fix` says what to change
    ({maximum} is filled in)."""
    maximum = cluster_settings(compute.data)["max_instances"]
    if instance_count is not None and instance_count > maximum:
        raise ConfigError(f"{asked} is {instance_count}, more than max_instances {maximum} of "
                          f"cluster '{compute.name}' ({compute.path}): a deployment or job "
                          "cannot use more nodes than its cluster has.",
                          fix.format(maximum=maximum))
