"""Does this Python environment satisfy a model's requirements? Checked once, when the
local target deploys the model (Azure ML builds the model's environment instead), so
that scoring jobs load the model without repeating the check."""
from __future__ import annotations

import platform
from pathlib import Path


def environment_mismatches(model_dir: Path) -> list[str]:
    """One line per requirement of the model (requirements.txt, python_env.yaml) that the
    running environment does not meet; empty when it meets them all."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    found = []
    requirements = Path(model_dir) / "requirements.txt"
    lines = requirements.read_text().splitlines() if requirements.is_file() else []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue  # a URL or a path: nothing to compare a version with
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            found.append(f"{requirement.name}: required {requirement.specifier or 'any version'}, "
                         "not installed")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            found.append(f"{requirement.name}: required {requirement.specifier}, installed {installed}")
    python = _model_python(Path(model_dir))
    running = platform.python_version()
    if python and python.split(".")[:2] != running.split(".")[:2]:
        found.append(f"python: the model was saved with {python}, running {running}")
    return found


def _model_python(model_dir: Path) -> str | None:
    import yaml

    env = model_dir / "python_env.yaml"
    try:
        # BaseLoader keeps every scalar a string: `python: 3.10` is not the number 3.1.
        data = yaml.load(env.read_text(), Loader=yaml.BaseLoader)
    except (OSError, yaml.YAMLError):
        return None
    value = data.get("python") if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None
