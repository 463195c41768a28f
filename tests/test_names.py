"""Every name a user passes is checked with its kind's rule (workspace/names.py) before a
file or blob path is built from it: the CLIs run as processes, one test per kind of name.
No test here needs Azurite: each name is refused before any service is called."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from workspace.errors import ExitCode
from workspace.settings import REPO_ROOT


def cli(module: str, local_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> ...` on the local target, with no .env and no service running
    (port 1 answers nothing)."""
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(TARGET="local", LOCAL_DIR=str(local_dir), AZURITE_BLOB_PORT="1",
               AZURITE_QUEUE_PORT="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_refused(result: subprocess.CompletedProcess, where: str, kind: str) -> None:
    """Exit 2 (usage), one error line naming the option or argument, then the rule."""
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: {where} "), result.stderr
    assert f"is not a valid {kind}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------- ADF run ids


def _a_run_folder_outside(root: Path) -> Path:
    """A folder outside the runs folder that looks like a run in progress whose runner is
    gone: run.json, and an attempt with a scratch folder (`tmp`) that a dead run's clean-up
    removes."""
    outside = root / "outside"
    (outside / "attempt-1" / "tmp").mkdir(parents=True)
    (outside / "attempt-1" / "tmp" / "keep.txt").write_text("not the runner's to delete")
    run = {"run_id": "x", "pipeline": "train-iris", "status": "InProgress",
           "activities": [{"activity_run_id": "attempt-1", "name": "Train",
                           "status": "InProgress"}]}
    (outside / "run.json").write_text(json.dumps(run))
    return outside


@pytest.mark.parametrize("command", ["status", "cancel", "logs"])
def test_a_run_id_cannot_reach_outside_the_runs_folder(tmp_path, command):
    local = tmp_path / "local"
    (local / "adf" / "runs").mkdir(parents=True)
    outside = _a_run_folder_outside(tmp_path)
    before = (outside / "run.json").read_text()
    escape = os.path.relpath(outside, local / "adf" / "runs")  # ../../../outside

    result = cli("adf", local, command, escape)

    assert_refused(result, "RUN_ID", "ADF pipeline run id")
    assert "GUID" in result.stderr  # the rule
    assert (outside / "run.json").read_text() == before  # not rewritten as Failed
    assert (outside / "attempt-1" / "tmp" / "keep.txt").is_file()  # not removed


def test_a_run_id_in_a_published_manifest_cannot_reach_outside_the_runs_folder(tmp_path):
    """The run id of a model's manifest (from the datastore) is a name too: the provenance
    check reads only runs of this machine's runs folder."""
    from adf.local_runner import LocalBackend
    from workspace.settings import Settings

    local = tmp_path / "local"
    (local / "adf" / "runs").mkdir(parents=True)
    outside = _a_run_folder_outside(tmp_path)
    before = (outside / "run.json").read_text()
    settings = Settings.load(env_file=tmp_path / "no.env", environ={}, local_dir=str(local))
    backend = LocalBackend(settings)

    escape = os.path.relpath(outside, backend.runs_dir)
    assert backend.provenance_problem({"pipeline_run_id": escape}) is None  # not a run here

    assert (outside / "run.json").read_text() == before
    assert (outside / "attempt-1" / "tmp" / "keep.txt").is_file()


def test_a_well_formed_run_id_that_is_unknown_is_not_found(tmp_path):
    result = cli("adf", tmp_path / "local", "status", str(uuid.uuid4()))
    assert result.returncode == ExitCode.NOT_FOUND, result.stderr


# ---------------------------------------------------------------------- sweep ids


@pytest.mark.parametrize("module, args, where", [
    ("adf", ["sweep", "status"], "SWEEP_ID"),
    ("deployer", ["register-and-deploy", "--dry-run", "--sweep"], "--sweep"),
])
@pytest.mark.parametrize("sweep_id", ["../other/x", "SW-1", "sw-" + "1" * 60])
def test_a_sweep_id_is_the_stem_of_queue_names(tmp_path, module, args, where, sweep_id):
    result = cli(module, tmp_path / "local", *args, sweep_id)
    assert_refused(result, where, "sweep id")
    assert "storage queues" in result.stderr


# ---------------------------------------------------------------------- Azure ML names


@pytest.mark.parametrize("command", ["show", "cancel", "download"])
@pytest.mark.parametrize("name", ["j" * 256, "../../adf/runs/x", "a.b"])
def test_a_job_name_follows_azure_mls_rule(tmp_path, command, name):
    """A name over 255 characters was an OSError traceback (File name too long)."""
    result = cli("deployer", tmp_path / "local", "jobs", command, name)
    assert_refused(result, "NAME", "Azure ML job name")
    assert "1-255 letters, digits" in result.stderr


def test_a_deployment_name_follows_azure_mls_rule(tmp_path):
    result = cli("deployer", tmp_path / "local", "rollback", "--dry-run", "--to", "../x")
    assert_refused(result, "--to", "Azure ML batch deployment name")


# ---------------------------------------------------------------------- pipeline parameters


@pytest.mark.parametrize("param, message", [
    ("containerPath=models/../../other", "error: --param containerPath 'models/../../other' is "
                                         "not a valid container path: its folder"),
    ("containerPath=../x", "error: --param containerPath '../x' is not a valid container path"),
    ("python=/bin/sh", "error: --param python: 'python' is not a run's parameter"),
])
def test_trigger_refuses_a_blob_path_outside_the_rules_and_the_runners_interpreter(
        tmp_path, param, message):
    result = cli("adf", tmp_path / "local", "trigger", "--no-stage", "--param", param)
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert "epochs, lr, containerPath" in result.stderr or "Storage" in result.stderr
    assert not (tmp_path / "local" / "adf" / "runs").exists()


def test_a_sweep_record_under_a_name_that_is_not_a_sweep_id_is_left_out_of_the_list(datastore):
    """Sweep ids are read back from blob names too: one that breaks the rule (written by
    something else) is skipped, not the end of `sweep list` for every sweep."""
    from types import SimpleNamespace

    from adf.sweep import Sweeps, new_sweep_id

    good = new_sweep_id()
    for name in (good, "Not A Sweep", "SW-UPPER"):
        datastore.upload_bytes(b"{}", f"sweeps/{name}/sweep.json")
    sweeps = Sweeps(SimpleNamespace(pipeline_file=""), datastore, queue_service=None)
    assert sweeps.ids() == [good]
