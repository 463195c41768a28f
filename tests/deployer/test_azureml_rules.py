"""deployer/azureml_rules.py judged against its sources, read at test time: azure-ai-ml's own
validators, entities, schemas and documented defaults (the installed SDK), and the
Microsoft.MachineLearningServices 2024-10-01 REST types (tests/fixtures/azure_types.json,
from Azure/bicep-types-az). Then the instance-count check both targets make before anything
is created."""
from __future__ import annotations

import io
import json
import re

import pytest
import yaml

from deployer import azureml_rules as rules
from deployer.app import Deployer, validate_specs
from deployer.backends.local import LocalBackend
from deployer.entities import JobOverrides
from deployer.spec import load_specs
from tests.deployer.test_azure_backend import azure_settings, backend, fake, sleeps  # noqa: F401
from tests.support.fake_azureml import rest_name_pattern
from workspace.errors import ConfigError
from workspace.settings import Settings

ENDPOINT_NAMES = ["abc", "iris-batch", "A1-b2", "Iris9", "a-1", "x" * 32, "ab", "x" * 33, "1iris",
                  "iris_batch", "iris-", "-iris", "iris batch", "iris.batch", "iris--batch", ""]
ARM_NAMES = ["iris-mlflow-v3", "iris_mlflow", "1blue", "a", "A_-9", "x" * 255, "x" * 256, "blue.v2",
             "-blue", "_blue", "blue v2", "blau-ü", ""]


def sdk_accepts_endpoint_name(name: str) -> bool:
    """azure-ai-ml's check of every batch endpoint name (entities/_endpoint/_endpoint_helpers.py)."""
    from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name
    from azure.ai.ml.exceptions import ValidationException

    try:
        validate_endpoint_or_deployment_name(name)
    except ValidationException:
        return False
    return True


def deployment_entity(settings: dict, name: str = "iris-mlflow"):
    """A model batch deployment loaded by azure-ai-ml from YAML, as the Azure backend loads it."""
    from azure.ai.ml.entities._load_functions import load_model_batch_deployment

    data = {"name": name, "endpoint_name": "iris-batch", "type": "model",
            "model": "azureml:iris-classifier:1", "compute": "azureml:cpu-cluster", **settings}
    return load_model_batch_deployment(io.StringIO(yaml.safe_dump(data)))


def documented_defaults(documented) -> dict:
    """{keyword: value} of each ':keyword x: ... defaults to <number or "text">' in the
    docstring of an azure-ai-ml class or function."""
    found = {}
    for keyword, text in re.findall(r":keyword (\w+):(.*?):paramtype", documented.__doc__, re.S):
        match = re.search(r"defaults to (-?\d+|\"[^\"]*\")", text, re.I)
        if match:
            found[keyword] = json.loads(match.group(1))
    return found


# ---------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ENDPOINT_NAMES)
def test_endpoint_names_follow_the_sdks_own_check(name):
    assert rules.is_endpoint_name(name) == sdk_accepts_endpoint_name(name)
    if not rules.is_endpoint_name(name):
        with pytest.raises(ConfigError, match="3-32 characters"):
            rules.validate_endpoint_name(name, "endpoint.yml")


def test_the_endpoint_rule_is_the_sdks_and_narrower_than_the_rest_pattern():
    from azure.ai.ml.constants._endpoint import EndpointConfigurations

    assert rules.ENDPOINT_NAME.pattern == EndpointConfigurations.NAME_REGEX_PATTERN
    assert rules.ENDPOINT_NAME_LENGTH == (EndpointConfigurations.MIN_NAME_LENGTH,
                                          EndpointConfigurations.MAX_NAME_LENGTH)
    rest = rest_name_pattern("batchEndpoints")
    assert all(rest.match(n) for n in ENDPOINT_NAMES if rules.is_endpoint_name(n))


@pytest.mark.parametrize("name", ARM_NAMES)
@pytest.mark.parametrize("kind", ["batchEndpoints/deployments", "jobs"])
def test_deployment_and_job_names_follow_the_rest_pattern(kind, name):
    assert rules.is_arm_name(name) == bool(rest_name_pattern(kind).match(name))


def test_the_longest_deployment_name_is_the_rest_patterns():
    rest = rest_name_pattern("batchEndpoints/deployments")
    assert rest.match("x" * rules.ARM_NAME_MAX) and not rest.match("x" * (rules.ARM_NAME_MAX + 1))


def test_the_sdk_leaves_batch_deployment_names_to_the_service():
    """Why a batch deployment name follows the REST pattern, not the endpoint rule: the SDK
    applies that rule to online deployments only and sends this batch deployment as it is."""
    from azure.ai.ml.entities._endpoint._endpoint_helpers import validate_endpoint_or_deployment_name
    from azure.ai.ml.exceptions import ValidationException

    with pytest.raises(ValidationException):
        validate_endpoint_or_deployment_name("1_blue", is_deployment=True)
    assert deployment_entity({}, name="1_blue")._to_rest_object(location="westeurope")
    rules.validate_deployment_name("1_blue")
    with pytest.raises(ConfigError, match="Deployment name 'blue.v2' is invalid"):
        rules.validate_deployment_name("blue.v2", "deployment.yml")


# ---------------------------------------------------------------------- deployment settings


def test_deployment_defaults_are_the_sdks_documented_defaults():
    from azure.ai.ml.entities import BatchDeployment, BatchRetrySettings, ModelBatchDeploymentSettings
    from azure.ai.ml.parallel import parallel_run_function

    documented = {**documented_defaults(BatchDeployment), **documented_defaults(BatchRetrySettings),
                  "instance_count": documented_defaults(parallel_run_function)["instance_count"]}
    assert {key: documented[key] for key in rules.DEPLOYMENT_DEFAULTS} == rules.DEPLOYMENT_DEFAULTS
    # the settings entity of a model deployment documents the same ones
    settings = documented_defaults(ModelBatchDeploymentSettings)
    assert settings == {k: v for k, v in rules.DEPLOYMENT_DEFAULTS.items() if k in settings}


def test_the_schema_writes_the_default_output_action():
    from azure.ai.ml._schema._deployment.batch.batch_deployment import BatchDeploymentSchema

    field = BatchDeploymentSchema._declared_fields["output_action"]
    assert field.dump_default == rules.DEPLOYMENT_DEFAULTS["output_action"]


def test_each_setting_sits_where_the_sdks_schema_reads_it():
    """A deployment.yml written from SPEC_KEYS, loaded and dumped by azure-ai-ml, keeps every
    value at its path: the SDK reads the settings where we do."""
    values = dict(zip(rules.SPEC_KEYS, [7, 11, 12, 13, 14, 15, "append_row", "p.csv", "debug"]))
    data: dict = {}
    for key, path in rules.SPEC_KEYS.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = values[key]
    dumped = deployment_entity(data)._to_dict()
    assert rules.spec_settings(json.loads(json.dumps(dumped))) == values


def test_output_actions_are_the_sdks_and_the_services():
    from azure.ai.ml.constants._deployment import BatchDeploymentOutputAction
    from azure.ai.ml.entities import BatchDeployment
    from bicep.schema_check import Schema

    assert rules.OUTPUT_ACTIONS == (BatchDeploymentOutputAction.APPEND_ROW,
                                    BatchDeploymentOutputAction.SUMMARY_ONLY)
    schema = Schema.load()
    props = schema.get(schema.body("Microsoft.MachineLearningServices/workspaces/batchEndpoints/"
                                   "deployments@2024-10-01")["properties"]["properties"]["type"])
    union = schema.get(props["properties"]["outputAction"]["type"])
    rest = {schema.get(e).get("value") for e in union["elements"]} - {None}
    assert rest == {BatchDeployment._yaml_output_action_to_rest_output_action(a)
                    for a in rules.OUTPUT_ACTIONS}
    for value in rest:  # what the service answers reads back as the YAML spelling
        assert rules.output_action(value) == BatchDeployment._rest_output_action_to_yaml_output_action(value)


@pytest.mark.parametrize("action", ["append_row", "summary_only"])
@pytest.mark.parametrize("file_name", [None, "p.csv"])
def test_summary_only_refuses_an_output_file_as_the_sdk_does(action, file_name):
    from azure.ai.ml.exceptions import ValidationException

    settings = {"settings": {"mini_batch_size": 10, "output_action": action,
                             **({"output_file_name": file_name} if file_name else {})}}
    try:
        deployment_entity(settings)._to_rest_object(location="westeurope")
        sdk_refuses = False
    except ValidationException:
        sdk_refuses = True
    if sdk_refuses:
        with pytest.raises(ConfigError, match="summary_only cannot have an output_file_name"):
            rules.validate_deployment_settings(settings, "deployment.yml")
    else:
        assert rules.validate_deployment_settings(settings, "deployment.yml")["output_action"] == action
    assert rules.writes_output(action) == (action == "append_row")


def test_a_settings_block_needs_mini_batch_size_as_the_sdk_loads_it():
    with pytest.raises(TypeError, match="mini_batch_size"):
        deployment_entity({"settings": {"max_concurrency_per_instance": 2}})
    with pytest.raises(ConfigError, match="`settings` has no mini_batch_size"):
        rules.validate_deployment_settings({"settings": {"max_concurrency_per_instance": 2}},
                                           "deployment.yml")
    assert deployment_entity({}).settings.mini_batch_size is None  # no block: the default
    assert rules.validate_deployment_settings({}, "deployment.yml") == rules.DEPLOYMENT_DEFAULTS


def test_error_threshold_starts_at_the_documented_lower_bound():
    from azure.ai.ml.entities import BatchDeployment

    lower = re.search(r"Range is \[(-?\d+), int\.MaxValue\]", BatchDeployment.__doc__).group(1)
    assert rules.MINIMUM["error_threshold"] == int(lower)
    with pytest.raises(ConfigError, match="settings.error_threshold is -2"):
        rules.validate_deployment_settings({"settings": {"mini_batch_size": 10, "error_threshold": -2}},
                                           "deployment.yml")


# ---------------------------------------------------------------------- cluster


def test_cluster_defaults_are_what_the_sdk_loads_and_sends():
    from azure.ai.ml import load_compute
    from azure.ai.ml.constants._compute import ComputeDefaults

    bare = load_compute(io.StringIO("name: cpu\ntype: amlcompute\n"))
    sent = bare._to_rest_object().properties.properties
    assert rules.CLUSTER_DEFAULTS == {
        "size": sent.vm_size, "min_instances": bare.min_instances,
        "max_instances": bare.max_instances,
        "idle_time_before_scale_down": bare.idle_time_before_scale_down,
        "tier": ComputeDefaults.PRIORITY.lower()}  # no vmPriority sent: the service's default


# ---------------------------------------------------------------------- instances vs the cluster


def many(instance_count: int = 3):
    """The shipped specs with another resources.instance_count (the cluster has 2 nodes)."""
    return load_specs(overrides={"deployment": {"resources": {"instance_count": instance_count}}})


@pytest.fixture
def targets(azure_settings, backend, fake, tmp_path):  # noqa: F811
    """A Deployer on each target, with what it has written so far (nothing, it must be)."""
    local = LocalBackend(Settings.load(env_file=tmp_path / "no.env", environ={}, target="local",
                                       local_dir=str(tmp_path / "local")))
    return [(Deployer(azure_settings, backend=backend, specs=many()), lambda: fake.requests),
            (Deployer(local.settings, backend=local, specs=many()),
             lambda: sorted(p.name for p in local.root.rglob("*")))]


def test_a_deployment_asking_more_nodes_than_the_cluster_is_refused_first(targets):
    for deployer, writes in targets:
        with pytest.raises(ConfigError) as err:
            deployer.register_and_deploy()
        text = str(err.value)
        assert ("deployment.yml: resources.instance_count is 3, more than max_instances 2 of "
                "cluster 'cpu-cluster'") in text and "compute.yml" in text
        assert err.value.hint == ("Lower resources.instance_count in deployment.yml to 2 or less, "
                                  "or raise max_instances in compute.yml.")
        assert writes() == []


def test_a_job_asking_more_nodes_than_the_cluster_is_refused_first(targets):
    for deployer, writes in targets:
        deployer._specs = many(2)
        with pytest.raises(ConfigError) as err:
            deployer.invoke("azureml://datastores/workspaceblobstore/paths/x.csv",
                            overrides=JobOverrides(instance_count=3))
        assert ("--instance-count is 3, more than max_instances 2 of cluster 'cpu-cluster'"
                in str(err.value))
        assert err.value.hint.startswith("Pass --instance-count 2 or less, or raise max_instances "
                                         "in compute.yml")
        assert writes() == []


def test_a_cluster_without_max_instances_allows_the_sdks_default():
    specs = load_specs(overrides={"compute": {"max_instances": None},
                                  "deployment": {"resources": {"instance_count": 4}}})
    validate_specs(specs)  # AmlCompute's default max_instances: 4
    specs.deployment.data["resources"]["instance_count"] = 5
    with pytest.raises(ConfigError, match="more than max_instances 4"):
        validate_specs(specs)


def test_the_history_of_defaults_goes_where_azure_lets_it_change():
    """Endpoint tags are writable strings (REST type TrackedResourceTags) that the SDK sends
    with the endpoint; its `properties` may only be added to. One deployment name per tag
    fits the 256 characters of a tag value."""
    from azure.ai.ml._restclient.arm_ml_service.models import _models
    from azure.ai.ml.entities import BatchEndpoint
    from bicep.schema_check import Schema

    schema = Schema.load()
    body = schema.body("Microsoft.MachineLearningServices/workspaces/batchEndpoints@2024-10-01")
    tags = body["properties"]["tags"]
    assert not tags.get("flags", 0) & 2  # not ReadOnly
    tag_type = schema.get(tags["type"])
    assert tag_type["name"] == "TrackedResourceTags"
    assert schema.get(tag_type["additionalProperties"])["$type"] == "StringType"
    assert "Properties can be added, but not removed or altered" in \
        _models.EndpointPropertiesBase.__doc__
    sent = BatchEndpoint(name="iris-batch", tags={"rollout.previous.1": "iris-mlflow-v1"},
                         defaults={"deployment_name": "iris-mlflow-v2"})
    rest = sent._to_rest_batch_endpoint("westeurope").as_dict()
    assert rest["tags"] == {"rollout.previous.1": "iris-mlflow-v1"}
    assert rules.ARM_NAME_MAX <= 256 and rules.HISTORY_TAGS_MAX < rules.ENDPOINT_TAGS_MAX
