"""How the local runner plans a Custom activity: its expressions evaluated, its policy, its
ForEach and the linked services it references, before anything runs. Shared by the
Custom-activity runner (`adf/local_runner.py`) and the control-flow runner
(`adf/local_flow.py`), which plans the Custom pipelines it executes."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from adf.definitions import (Definitions, fill, for_each_batch_count, load_definitions,
                             placeholder_values, references)
from adf.expressions import PipelineContext, evaluate
from adf.parameters import check_parameters
from adf.runs import now, parse_timespan
from workspace.errors import ConfigError
from workspace.settings import Settings

PLAN_FILE = "plan.json"
RUNNER_LOG = "runner.log"
DEFAULT_TIMEOUT = "0.12:00:00"  # ADF's default activity timeout
DEFAULT_RETRY_INTERVAL = 30
# Tasks the local "pool" runs at once (a ForEach's batchCount is capped here, as a Batch
# pool caps it at its nodes' task slots).
LOCAL_POOL_SLOTS = max(2, os.cpu_count() or 1)
# Parameters the local runner sets: this machine's interpreter, Azurite instead of a URL
# with a managed identity (the connection string is in the task environment).
LOCAL_PARAMETERS = {"python": sys.executable, "storageAccountUrl": "", "poolIdentityClientId": ""}


def local_parameters(definitions: Definitions, settings: Settings) -> dict[str, Any]:
    """The LOCAL_PARAMETERS the pipeline declares, and for deploy-iris the local target, its
    state folder and Azurite's port (the deployer's settings on this machine)."""
    values = {**LOCAL_PARAMETERS, "target": "local", "localDir": str(settings.local_path),
              "azuritePort": settings.azurite_port}
    return {k: v for k, v in values.items() if k in definitions.parameters}


@dataclass
class ActivityPlan:
    """The activity with its expressions evaluated: what the worker executes."""

    run_id: str
    pipeline: str
    activity_name: str
    command: str
    folder_path: str
    activity: dict            # written as activity.json
    linked_services: list     # written as linkedServices.json (full resources)
    datasets: list            # written as datasets.json
    timeout_seconds: float
    retry: int
    retry_interval_seconds: float
    azurite_blob_endpoint: str
    iterations: int = 0       # ForEach iterations; 0: the activity is not in a ForEach
    batch_count: int = 1      # ForEach iterations running at once


def plan_activity(definitions: Definitions, parameters: dict[str, Any], run_id: str,
                  settings: Settings) -> ActivityPlan:
    check_parameters(definitions, parameters)  # also for callers other than the CLI
    activity = definitions.activity
    where = f"{definitions.pipeline.display_path} activity '{activity.get('name')}'"
    context = PipelineContext(definitions.pipeline.name, run_id, parameters,
                              trigger_time=now())
    type_properties = evaluate(activity.get("typeProperties", {}), context,
                               f"{where} typeProperties")
    command = type_properties.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ConfigError(f"{where}: typeProperties.command is empty or not a string.")
    if bool(type_properties.get("folderPath")) != bool(type_properties.get("resourceLinkedService")):
        raise ConfigError(f"{where}: folderPath and resourceLinkedService go together (both or "
                          "neither).")
    policy = activity.get("policy", {})
    reference_objects = type_properties.get("referenceObjects") or {}
    if reference_objects.get("datasets"):
        raise ConfigError(f"{where}: referenceObjects.datasets is not supported by the local "
                          "runner (the trainer reads its data from folderPath).")
    linked = _referenced_linked_services(definitions, reference_objects, settings, where)
    evaluated = {**{k: v for k, v in activity.items() if k != "typeProperties"},
                 "typeProperties": type_properties}
    return ActivityPlan(
        run_id=run_id, pipeline=definitions.pipeline.name, activity_name=activity["name"],
        command=command, folder_path=type_properties.get("folderPath", ""), activity=evaluated,
        linked_services=linked, datasets=[],
        timeout_seconds=parse_timespan(policy.get("timeout", DEFAULT_TIMEOUT), f"{where} policy.timeout"),
        retry=int(policy.get("retry", 0)),
        retry_interval_seconds=float(policy.get("retryIntervalInSeconds", DEFAULT_RETRY_INTERVAL)),
        azurite_blob_endpoint=settings.azurite_blob_endpoint,
        **_plan_for_each(definitions.for_each, context, definitions.pipeline.display_path))


def _plan_for_each(for_each: dict | None, context: PipelineContext, where: str) -> dict:
    """How many iterations of the ForEach, and how many at once (at most the local slots)."""
    if for_each is None:
        return {}
    where = f"{where} ForEach '{for_each.get('name')}'"
    properties = for_each.get("typeProperties", {})
    items = evaluate(properties.get("items"), context, f"{where} items")
    if not isinstance(items, list):
        raise ConfigError(f"{where}: items evaluates to {type(items).__name__}, not an array.")
    if not items:
        raise ConfigError(f"{where}: items is empty; nothing would run.")
    return {"iterations": len(items),
            "batch_count": min(for_each_batch_count(for_each), LOCAL_POOL_SLOTS)}


def _referenced_linked_services(definitions: Definitions, reference_objects: dict,
                                settings: Settings, where: str) -> list[dict]:
    names = references(reference_objects.get("linkedServices", []), "LinkedServiceReference")
    if not names:
        return []
    every = load_definitions(definitions.directory).linked_services
    resources = []
    for name in names:
        if name not in every:
            raise ConfigError(f"{where}: referenceObjects names linked service '{name}', which "
                              "has no file in adf/linkedServices/.")
        resources.append(fill(every[name], placeholder_values(settings)).body)
    return resources
