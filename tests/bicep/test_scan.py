"""checkov's scan (`make scan`, its own virtualenv .venv-scan) of bicep/ and terraform/: zero
parsing errors and zero failed checks, and the gate really fails on either."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workspace.settings import REPO_ROOT

CHECKOV = REPO_ROOT / ".venv-scan" / "bin" / "checkov"
_spec = importlib.util.spec_from_file_location("bicep_scan", REPO_ROOT / "bicep" / "scan.py")
scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scan)


def _report(failed=(), parsing=(), resources=3, passed=2):
    return {"check_type": "bicep",
            "results": {"passed_checks": [{}] * passed, "failed_checks": list(failed),
                        "skipped_checks": [], "parsing_errors": list(parsing)},
            "summary": {"passed": passed, "failed": len(failed), "skipped": 0,
                        "parsing_errors": len(parsing), "resource_count": resources}}


def test_gate_passes_a_clean_report():
    assert scan.evaluate(_report(), Path("bicep")) == []


def test_gate_fails_on_parsing_errors_failed_checks_and_an_empty_scan():
    failed = {"check_id": "CKV_AZURE_3", "check_name": "Ensure secure transfer", "file_path": "/s.bicep",
              "resource": "Microsoft.Storage/storageAccounts.s"}
    assert scan.evaluate(_report(parsing=["/x/bad.bicep"]), Path("bicep")) == \
        ["parsing error (checkov skipped the file): /x/bad.bicep"]
    assert scan.evaluate(_report(failed=[failed]), Path("bicep")) == \
        ["CKV_AZURE_3 failed: Ensure secure transfer (/s.bicep, Microsoft.Storage/storageAccounts.s)"]
    assert scan.evaluate(_report(resources=0), Path("bicep"))
    assert scan.evaluate({"summary": {}}, Path("bicep"))


@pytest.fixture(scope="module")
def checkov() -> Path:
    """Install checkov into .venv-scan (pinned, once; about a minute on a fresh machine)."""
    result = subprocess.run(["make", "--no-print-directory", ".venv-scan/.installed"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"installing checkov failed:\n{result.stdout}\n{result.stderr}"
    return CHECKOV


def _scan(checkov: Path, directory: Path, framework: str = "bicep"):
    return subprocess.run([sys.executable, str(REPO_ROOT / "bicep" / "scan.py"), "--checkov", str(checkov),
                           "--framework", framework, "--dir", str(directory)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["bicep", "terraform"])
def test_the_stack_passes_the_checkov_scan(checkov, framework):
    result = _scan(checkov, REPO_ROOT / framework, framework)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "failed 0" in summary and "parsing errors 0" in summary
    # Every finding the templates accept is skipped inline with a reason.
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert skipped and all(len(line.split(": ", 1)[1].strip()) > 30 for line in skipped)


@pytest.mark.slow
def test_scan_fails_on_a_file_checkov_cannot_parse(checkov, tmp_path):
    directory = tmp_path / "bicep"
    directory.mkdir()  # one module that parses, beside the one that does not
    shutil.copy(REPO_ROOT / "bicep" / "modules" / "identities.bicep", directory)
    (directory / "modern.bicep").write_text("param names string[] = []\n\n"
                                            "output first string = names[0]\n")
    result = _scan(checkov, directory)
    assert result.returncode == 1
    assert "parsing error (checkov skipped the file):" in result.stderr and "modern.bicep" in result.stderr


# An insecure storage account in each language (HTTP allowed, TLS 1.0).
INSECURE = {
    "bicep": ("insecure.bicep",
              "resource s 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n"
              "  name: 'insecurestorage'\n  location: 'westeurope'\n  kind: 'StorageV2'\n"
              "  sku: {\n    name: 'Standard_LRS'\n  }\n"
              "  properties: {\n    supportsHttpsTrafficOnly: false\n    minimumTlsVersion: 'TLS1_0'\n  }\n}\n"),
    "terraform": ("insecure.tf",
                  'resource "azurerm_storage_account" "s" {\n  name = "insecurestorage"\n  resource_group_name = "rg"\n'
                  '  location = "westeurope"\n  account_tier = "Standard"\n  account_replication_type = "LRS"\n'
                  '  https_traffic_only_enabled = false\n  min_tls_version = "TLS1_0"\n}\n'),
}


@pytest.mark.slow
@pytest.mark.parametrize("framework", sorted(INSECURE))
def test_scan_fails_on_a_failed_check(checkov, tmp_path, framework):
    directory = tmp_path / framework
    directory.mkdir()
    name, text = INSECURE[framework]
    (directory / name).write_text(text)
    result = _scan(checkov, directory, framework)
    assert result.returncode == 1
    assert "failed:" in result.stderr
