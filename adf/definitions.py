"""The ADF definitions in `adf/` (ARM JSON): loading, placeholder filling, parameters.

Placeholders are written `__KEY__`, KEY being a setting of `.env` (see .env.example); the
same files are deployed by Bicep with the same replacement, so nothing can drift. Every
placeholder must be filled: an empty setting is an error that names the file and the key.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from workspace.errors import ConfigError
from workspace.names import CONTAINER_PATH
from workspace.settings import REPO_ROOT, Settings

DEFINITIONS_DIR = Path(__file__).resolve().parent
PIPELINE_FILE = "pipeline.json"
SWEEP_PIPELINE_FILE = "sweep-pipeline.json"
LINKED_SERVICES_DIR = "linkedServices"
CREDENTIALS_DIR = "credentials"
PLACEHOLDER = re.compile(r"__([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)__")
# Pipeline parameters the local runner always sets itself; their Azure defaults may stay empty.
LOCAL_ONLY_EMPTY = frozenset({"AZURE_STORAGE_BLOB_URL", "POOL_IDENTITY_CLIENT_ID"})
# A ForEach's batchCount: 20 when absent, at most 50 ("batchCount ... Integer (maximum 50)",
# https://learn.microsoft.com/azure/data-factory/control-flow-for-each-activity; the REST
# type has maxValue 50, tests/fixtures/azure_types.json ForEachActivityTypeProperties).
DEFAULT_BATCH_COUNT = 20
MAX_BATCH_COUNT = 50


@dataclass(frozen=True)
class Document:
    """One ARM JSON resource and the file it came from."""

    path: Path
    body: dict

    @property
    def name(self) -> str:
        return self.body["name"]

    @property
    def properties(self) -> dict:
        return self.body["properties"]

    @property
    def display_path(self) -> str:
        try:
            return str(self.path.relative_to(REPO_ROOT))
        except ValueError:
            return str(self.path)


@dataclass(frozen=True)
class Definitions:
    """The pipeline, its linked services and credentials, as read from a directory."""

    directory: Path
    pipeline: Document
    linked_services: dict[str, Document]
    credentials: dict[str, Document]

    @property
    def activity(self) -> dict:
        """The pipeline's single Custom activity (directly, or the one inside its ForEach)."""
        for_each = self.for_each
        activities = (for_each["typeProperties"].get("activities", []) if for_each
                      else self.pipeline.properties.get("activities", []))
        custom = [a for a in activities if a.get("type") == "Custom"]
        if len(activities) != 1 or not custom:
            raise ConfigError(f"{self.pipeline.display_path} must hold exactly one activity of "
                              f"type Custom, alone or in one ForEach (found: "
                              f"{[a.get('type') for a in activities]}).")
        return custom[0]

    @property
    def for_each(self) -> dict | None:
        """The ForEach activity around the Custom activity, if the pipeline has one."""
        activities = self.pipeline.properties.get("activities", [])
        if len(activities) == 1 and activities[0].get("type") == "ForEach":
            return activities[0]
        return None

    @property
    def parameters(self) -> dict[str, dict]:
        return self.pipeline.properties.get("parameters", {})

    @property
    def folder_path(self) -> str:
        return self.activity.get("typeProperties", {}).get("folderPath", "")

    def documents(self) -> list[Document]:
        return [self.pipeline, *self.linked_services.values(), *self.credentials.values()]

    def linked_services_in_order(self) -> list[Document]:
        """Linked services with every referenced one before the one that references it."""
        ordered: list[Document] = []

        def visit(name: str, trail: tuple[str, ...]) -> None:
            if any(d.name == name for d in ordered):
                return
            if name in trail:
                raise ConfigError(f"Linked services reference each other in a cycle: "
                                  f"{' → '.join(trail + (name,))}.")
            document = self.linked_services[name]
            for ref in references(document.body, "LinkedServiceReference"):
                if ref in self.linked_services:
                    visit(ref, trail + (name,))
            ordered.append(document)

        for name in sorted(self.linked_services):
            visit(name, ())
        return ordered


def _read(path: Path) -> Document:
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing.", "Restore it from git (adf/ is the only "
                          "definition of the pipeline).") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    if not isinstance(body, dict) or "name" not in body or "properties" not in body:
        raise ConfigError(f"{path} is not an ARM resource (needs 'name' and 'properties').")
    return Document(path, body)


def load_definitions(directory: Path | None = None, pipeline_file: str = PIPELINE_FILE) -> Definitions:
    """Read the raw definitions (placeholders unfilled)."""
    directory = Path(directory) if directory else DEFINITIONS_DIR
    pipeline = _read(directory / pipeline_file)
    linked = {d.name: d for d in map(_read, sorted((directory / LINKED_SERVICES_DIR).glob("*.json")))}
    creds = {d.name: d for d in map(_read, sorted((directory / CREDENTIALS_DIR).glob("*.json")))}
    return Definitions(directory, pipeline, linked, creds)


def pipeline_files(directory: Path | None = None) -> dict[str, str]:
    """Pipeline name → file name of every pipeline in the definitions folder (its *.json
    files with `properties.activities`)."""
    directory = Path(directory) if directory else DEFINITIONS_DIR
    found: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and "activities" in (body.get("properties") or {}):
            found[body.get("name", path.stem)] = path.name
    return found


def for_each_batch_count(for_each: dict) -> int:
    """Iterations of a ForEach that run at once: 1 if sequential, else its batchCount."""
    properties = for_each.get("typeProperties", {})
    if properties.get("isSequential"):
        return 1
    return max(1, min(int(properties.get("batchCount", DEFAULT_BATCH_COUNT)), MAX_BATCH_COUNT))


def references(node: Any, kind: str) -> list[str]:
    """Names of every `{"referenceName": ..., "type": kind}` inside node."""
    found: list[str] = []
    if isinstance(node, dict):
        if node.get("type") == kind and "referenceName" in node:
            found.append(node["referenceName"])
        for value in node.values():
            found += references(value, kind)
    elif isinstance(node, list):
        for value in node:
            found += references(value, kind)
    return found


def placeholders(node: Any) -> set[str]:
    return set(PLACEHOLDER.findall(json.dumps(node)))


def placeholder_values(settings: Settings) -> dict[str, str]:
    """Every setting by its .env key."""
    return {f.metadata["env"]: getattr(settings, f.name) for f in fields(Settings)}


def fill(document: Document, values: dict[str, str],
         allow_empty: frozenset[str] = frozenset()) -> Document:
    """The document with every `__KEY__` replaced; unknown or empty keys are one error."""
    unknown = sorted(k for k in placeholders(document.body) if k not in values)
    if unknown:
        raise ConfigError(f"{document.display_path} uses placeholder(s) "
                          f"{', '.join(f'__{k}__' for k in unknown)} that are not settings.",
                          "Use a key of .env.example, written __KEY__.")
    empty = sorted(k for k in placeholders(document.body) if not values[k] and k not in allow_empty)
    if empty:
        raise ConfigError(f"{document.display_path} needs setting(s) {', '.join(empty)}, "
                          "which are empty.",
                          "Run `make deploy-infra` (it writes .env) or set them in .env.")

    def replace(node: Any) -> Any:
        if isinstance(node, str):
            return PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
        if isinstance(node, dict):
            return {k: replace(v) for k, v in node.items()}
        if isinstance(node, list):
            return [replace(v) for v in node]
        return node

    return Document(document.path, replace(copy.deepcopy(document.body)))


def filled(definitions: Definitions, settings: Settings, *, pipeline_only: bool = False,
           allow_empty: frozenset[str] = frozenset()) -> Definitions:
    values = placeholder_values(settings)
    pipeline = fill(definitions.pipeline, values, allow_empty)
    if pipeline_only:
        return Definitions(definitions.directory, pipeline, {}, {})
    return Definitions(
        definitions.directory, pipeline,
        {n: fill(d, values, allow_empty) for n, d in definitions.linked_services.items()},
        {n: fill(d, values, allow_empty) for n, d in definitions.credentials.items()})


# ------------------------------------------------------------------ parameters

_PARAMETER_TYPES = {"string": "String", "securestring": "SecureString", "int": "Int",
                    "float": "Float", "bool": "Bool", "array": "Array", "object": "Object",
                    "secureobject": "SecureObject"}


def parse_param_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--param name=value` options into a dict (the value may contain '=')."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param '{pair}' is not name=value.",
                              "Example: --param epochs=20 --param lr=0.05")
        parsed[name.strip()] = value
    return parsed


# Pipeline parameters that are not the caller's to set (`--param` refuses them), and who
# sets them: the activity's command passes them to the trainer or runner, but what they
# point at (the interpreter, the account, the identity, the sweep's queues) is the
# deployment's, not a run's.
NOT_CALLER_PARAMETERS = {
    "python": "the runner's interpreter (the pool's virtualenv; locally this virtualenv's)",
    "storageAccountUrl": "the deployment's storage account (AZURE_STORAGE_BLOB_URL in .env)",
    "poolIdentityClientId": "the pool's managed identity (POOL_IDENTITY_CLIENT_ID in .env)",
    "datastoreName": "the deployment's Azure ML datastore (DATASTORE_NAME in .env)",
    "sweepId": "set by `python -m adf sweep start` for each sweep",
    "workers": "set by `python -m adf sweep start` from --workers",
    "queueAccountUrl": "set by `python -m adf sweep start` (the account's queue service)",
    "workspaceUri": "the deployment's Azure ML workspace (Jobs - Get; locally the local API)",
    "historyUri": "the deployment's Azure ML run history (a job's error; locally the local API)",
    "invocationUri": "the endpoint's invocation URI (from endpoint and the region; locally "
                     "the local API)",
    "location": "the deployment's region (AZURE_LOCATION in .env)",
    "target": "the deployer's target (azure on the pool; the local runner sets local)",
    "localDir": "the local target's state folder (set by the local runner)",
    "azuritePort": "the local Azurite's blob port (set by the local runner)",
}
# Former names of run parameters, still accepted by --param: each → the name it now has.
# `lr` is the trainer's option (--lr), the sweep grid's column and the MLflow param.
PARAMETER_ALIASES = {"learningRate": "lr"}
# Parameters whose value names blobs: the name rule (workspace/names.py) the value follows.
NAMED_PARAMETERS = {"containerPath": CONTAINER_PATH}


def caller_parameters(definitions: Definitions) -> list[str]:
    """The parameters a caller may pass with --param, in the pipeline's order."""
    return [n for n in definitions.parameters if n not in NOT_CALLER_PARAMETERS]


def coerce_parameters(definitions: Definitions, given: dict[str, str],
                      note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Given values typed as the pipeline declares them (only the given ones); a parameter
    that is not the caller's, or a blob path that breaks the Storage naming rules, is
    refused before anything runs. A former name (PARAMETER_ALIASES) stands for its new one,
    with one `note` per name used."""
    declared = definitions.parameters
    where = definitions.pipeline.display_path
    accepted = ", ".join(caller_parameters(definitions))
    typed: dict[str, Any] = {}
    for name, text in _resolve_aliases(declared, given, note).items():
        if name in declared and name in NOT_CALLER_PARAMETERS:
            raise ConfigError(f"--param {name}: '{name}' is not a run's parameter; it is "
                              f"{NOT_CALLER_PARAMETERS[name]}.",
                              f"Parameters you can pass: {accepted}.")
        if name not in declared:
            raise ConfigError(f"--param {name}: pipeline '{definitions.pipeline.name}' has no "
                              f"parameter '{name}' ({where} accepts: {accepted}).")
        kind = _PARAMETER_TYPES.get(str(declared[name].get("type", "String")).lower(), "String")
        typed[name] = _coerce(name, kind, text)
        if name in NAMED_PARAMETERS:
            NAMED_PARAMETERS[name].check(text, f"--param {name}")
    return typed


def _resolve_aliases(declared: dict, given: dict[str, str],
                     note: Callable[[str], None] | None) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for name, text in given.items():
        new = PARAMETER_ALIASES.get(name)
        if new in declared and name not in declared:
            if new in given:
                raise ConfigError(f"--param {name} and --param {new} are the same parameter.",
                                  f"Pass only --param {new}.")
            if note is not None:
                note(f"note: --param {name} is now --param {new}, the trainer's and the sweep "
                     f"grid's name; {name} is still accepted.")
            name = new
        resolved[name] = text
    return resolved


def effective_parameters(definitions: Definitions, typed: dict[str, Any]) -> dict[str, Any]:
    """Defaults of the pipeline overridden by typed values; a parameter without either is an error."""
    values = {}
    for name, spec in definitions.parameters.items():
        if name in typed:
            values[name] = typed[name]
        elif "defaultValue" in spec:
            values[name] = spec["defaultValue"]
        else:
            raise ConfigError(f"Pipeline parameter '{name}' has no default value.",
                              f"Pass it: --param {name}=<value>.")
    return values


def _coerce(name: str, kind: str, text: str) -> Any:
    try:
        if kind == "Int":
            return int(text)
        if kind == "Float":
            return float(text)
        if kind == "Bool":
            lowered = text.strip().lower()
            if lowered not in ("true", "false"):
                raise ValueError
            return lowered == "true"
        if kind in ("Array", "Object", "SecureObject"):
            value = json.loads(text)
            if not isinstance(value, list if kind == "Array" else dict):
                raise ValueError
            return value
    except ValueError:
        examples = {"Int": "a whole number", "Float": "a number", "Bool": "true or false",
                    "Array": "a JSON array", "Object": "a JSON object",
                    "SecureObject": "a JSON object"}
        raise ConfigError(f"--param {name}={text}: '{name}' is {'an' if kind[0] in 'AEIOU' else 'a'} {kind} parameter; pass "
                          f"{examples[kind]}.") from None
    return text


def executed_pipelines(body: dict, pipelines: dict[str, dict]) -> list[str]:
    """The pipelines of `pipelines` that `body` runs through Execute Pipeline, directly or
    through those it runs (each once, in the order first met)."""
    found: list[str] = []

    def walk(activities: list) -> None:
        for activity in activities:
            props = activity.get("typeProperties") or {}
            name = (props.get("pipeline") or {}).get("referenceName")
            if activity.get("type") == "ExecutePipeline" and name in pipelines \
                    and name not in found and name != body.get("name"):
                found.append(name)
                walk(pipelines[name]["properties"].get("activities") or [])
            for key in ("activities", "ifTrueActivities", "ifFalseActivities"):
                walk(props.get(key) or [])

    walk(body["properties"].get("activities") or [])
    return found


def _custom_folder_paths(activities: list) -> set[str]:
    found: set[str] = set()
    for activity in activities:
        props = activity.get("typeProperties") or {}
        if activity.get("type") == "Custom" and props.get("folderPath"):
            found.add(props["folderPath"])
        for key in ("activities", "ifTrueActivities", "ifFalseActivities"):
            found |= _custom_folder_paths(props.get(key) or [])
    return found


def executed_folder_path(body: dict, pipelines: dict[str, dict], where: str = "") -> str:
    """The folderPath of the Custom activities a control-flow pipeline runs through Execute
    Pipeline (train-and-deploy: train-iris's and deploy-iris's, one folder staged for both);
    "" when it runs none. Several different folders are refused: one staging serves a run."""
    found: set[str] = set()
    for name in executed_pipelines(body, pipelines):
        found |= _custom_folder_paths(pipelines[name]["properties"].get("activities") or [])
    if len(found) > 1:
        raise ConfigError(f"{where or body.get('name')}: the pipelines it runs stage into "
                          f"different folders ({', '.join(sorted(found))}).",
                          "Give their Custom activities one folderPath.")
    return next(iter(found), "")
