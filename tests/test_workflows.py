"""The GitHub Actions workflows: valid YAML, only real make targets and commands, no secrets."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from workspace.settings import REPO_ROOT

WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))


def _make_targets() -> set[str]:
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, flags=re.M))


def _run_lines(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def test_there_are_ci_and_deploy_workflows():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_references_only_existing_targets_and_commands(path):
    workflow = yaml.safe_load(path.read_text())
    assert workflow["jobs"], path
    targets = _make_targets()
    for run in _run_lines(workflow):
        for target in re.findall(r"\bmake\s+([a-z][\w-]*)", run):
            assert target in targets, f"{path.name}: make {target} does not exist"
        for package, command in re.findall(r"python -m (\w+) ([a-z][\w-]*)", run):
            result = subprocess.run([sys.executable, "-m", package, command, "--help"],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, f"{path.name}: python -m {package} {command}: {result.stderr}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_holds_no_secret(path):
    text = path.read_text()
    assert not re.search(r"AccountKey=|client-secret|clientSecret|password:", text, re.I)
    assert "secrets." not in text, "OIDC needs no secret; ids are repository variables"


def test_deploy_logs_in_with_openid_connect():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    assert workflow["permissions"]["id-token"] == "write"
    steps = workflow["jobs"]["deploy"]["steps"]
    login = next(s for s in steps if s.get("uses", "").startswith("azure/login@"))
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    runs = " ".join(_run_lines(workflow))
    assert runs.index("make deploy-infra") < runs.index("adf trigger") < runs.index("register-and-deploy --target azure --smoke")
