"""CI compiles and lints bicep/main.bicep with the Bicep CLI (not installable here), gated
by bicep/lint_gate.py: the gate's reading of compiler output, and the workflow's steps."""
from __future__ import annotations

import subprocess
import sys

import yaml

from bicep import lint_gate
from workspace.settings import REPO_ROOT

# Lines in the compiler's format (file(line,col) : Level code: message).
OUTPUT = """\
/home/runner/work/iris/iris/bicep/modules/storage-key-secret.bicep(36,8) : Warning outputs-should-not-contain-secrets: Outputs should not contain secrets.
/home/runner/work/iris/iris/bicep/modules/storage.bicep(12,7) : Warning no-unused-params: Parameter "x" is declared but never used.
/home/runner/work/iris/iris/bicep/main.bicep(3,1) : Info prefer-interpolation: Use string interpolation.
"""


def test_an_accepted_warning_passes_with_its_reason_and_any_other_fails():
    failures, notes = lint_gate.evaluate(OUTPUT, lint_gate.accepted())
    assert failures == ['modules/storage.bicep(12,7) Warning no-unused-params: Parameter "x" is declared but never used.']
    assert notes == ["accepted outputs-should-not-contain-secrets in modules/storage-key-secret.bicep: "
                     "The output is the secret's name (for the role assignment on it), never its value."]


def test_an_error_fails_even_when_its_code_is_accepted():
    output = "bicep/main.bicep(1,1) : Error BCP318: something.\n"
    failures, _ = lint_gate.evaluate(output, {("BCP318", "main.bicep"): "reason"})
    assert failures == ["main.bicep(1,1) Error BCP318: something."]


def test_every_accepted_entry_names_a_file_and_gives_a_reason():
    for (code, file), reason in lint_gate.accepted().items():
        assert (REPO_ROOT / "bicep" / file).is_file(), file
        assert len(reason.split()) >= 5, (code, reason)


def test_the_gate_exits_non_zero_on_an_unaccepted_warning():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "bicep" / "lint_gate.py")], input=OUTPUT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no-unused-params" in result.stderr
    clean = subprocess.run([sys.executable, str(REPO_ROOT / "bicep" / "lint_gate.py")], input="Build succeeded.\n",
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr


def test_ci_builds_and_lints_main_bicep_through_the_gate_and_keeps_the_scan():
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    text = "\n".join(runs)
    assert "az bicep build --file bicep/main.bicep" in text and "az bicep lint --file bicep/main.bicep" in text
    assert text.count("python3 bicep/lint_gate.py") == 2 and text.count("set -o pipefail") == 2
    assert "make scan" in text and "make test" in text
