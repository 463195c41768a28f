"""The desired state: YAML specs in `deployer/specs/` in the `az ml` schema.

Read here with PyYAML (fast, no Azure SDK); the Azure backend turns the same data into
azure-ai-ml entities with `azure.ai.ml.load_*`. Settings may override names, so one repo
can deploy uniquely named endpoints (endpoint names are unique per region).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

from workspace.errors import ConfigError

SPEC_DIR = Path(__file__).resolve().parent / "specs"
KINDS = ("model", "compute", "endpoint", "deployment")


@dataclass(frozen=True)
class Spec:
    kind: str  # one of KINDS
    path: Path  # the YAML file it came from (for az ml ... -f and azure.ai.ml.load_*)
    data: dict  # its content with overrides applied

    @property
    def name(self) -> str:
        return self.data["name"]


@dataclass(frozen=True)
class DeploymentSpecs:
    model: Spec
    compute: Spec
    endpoint: Spec
    deployment: Spec


def load_specs(spec_dir: Path = SPEC_DIR, overrides: dict[str, dict] | None = None) -> DeploymentSpecs:
    """Load the four specs; `overrides` maps kind → top-level keys to replace."""
    overrides = overrides or {}
    specs = {}
    for kind in KINDS:
        path = Path(spec_dir) / f"{kind}.yml"
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"Spec file '{path}' is missing.",
                              f"Restore it from git or point --spec-dir at a folder with {kind}.yml.")
        except yaml.YAMLError as exc:
            raise ConfigError(f"Spec file '{path}' is not valid YAML: {exc}")
        if not isinstance(data, dict) or not data.get("name"):
            raise ConfigError(f"Spec file '{path}' has no 'name'.", "Every spec needs a name.")
        data = copy.deepcopy(data)
        data.update(overrides.get(kind, {}))
        specs[kind] = Spec(kind, path, data)
    return DeploymentSpecs(**specs)
