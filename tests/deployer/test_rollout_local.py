"""Safe rollout on the local target, as processes, with the real engine, the MLflow
registry and Azurite: a deployment per model version, smoke-tested before it becomes the
default; a broken model leaves the previous default serving; rollback; --keep; and the
`invoke` overrides of `az ml batch-endpoint invoke`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import IRIS_CSV
from tests.deployer.test_local_cli import (Cli, ok, publish_changed_copy,  # noqa: F401
                                           publish_model_dir, trained)
from workspace.published import download_model

pytestmark = pytest.mark.slow


def state(cli: Cli) -> dict:
    return json.loads((cli.local_dir / "deployer" / "state.json").read_text())


def default_of(cli: Cli) -> str:
    return state(cli)["endpoints"]["iris-batch"]["default_deployment"]


def deployments(cli: Cli) -> dict:
    return state(cli)["deployments"].get("iris-batch", {})


def rows(stdout: str) -> list[tuple[str, str, str]]:
    """(resource, name, action) rows of a change table."""
    return re.findall(r"│ ([\w-]+)\s+│ ([\w<>-]+)\s+│ (would [\w-]+|[\w-]+)", stdout)


def publish_retrained(store, run, prefix: str, **manifest) -> str:
    """A retrained copy of the run (publish_changed_copy) whose model's content is its own
    (a comment naming `prefix` in conda.yaml) and whose manifest has `manifest`'s entries
    (e.g. other metrics); returns the model's datastore path."""
    model = publish_changed_copy(store, run, prefix)
    run_prefix = model.removesuffix("/artifacts/model")
    found = store.read_json(f"{run_prefix}/manifest.json")
    key = next(rel for rel in found["files"] if rel.endswith("model/conda.yaml"))
    conda = store.read_bytes(f"{run_prefix}/{key}") + f"# {prefix}\n".encode()
    store.upload_bytes(conda, f"{run_prefix}/{key}", overwrite=True)
    found["files"][key] = {
        "sha256": hashlib.sha256(conda).hexdigest(), "size": len(conda)}
    store.upload_bytes(json.dumps({**found, **manifest}).encode(), f"{run_prefix}/manifest.json",
                       overwrite=True)
    return model


def publish_sweep_copy(store, run, prefix: str) -> str:
    """A retrained copy of the run published as line 1 of a new sweep (its manifest says
    so, as a sweep's runner writes it)."""
    return publish_retrained(store, run, prefix, sweep={"id": "20261206T231500-rollback",
                                                        "line": 1})


@pytest.fixture
def broken_model(trained, tmp_path) -> str:
    from tests.support.broken_model import save_broken_model

    settings, store, run, _ = trained
    inner = download_model(store, run, tmp_path / "inner")
    model_dir = save_broken_model(tmp_path / "broken", inner)
    return publish_model_dir(store, run, model_dir, "models-broken")


def test_a_broken_model_leaves_the_default_then_rollback_keep_and_cleanup(trained, broken_model,
                                                                        tmp_path):
    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path / "work")

    plan = ok(cli("register-and-deploy", "--dry-run"))
    assert rows(plan)[3:] == [("deployment", "iris-mlflow-vnext", "would create"),
                              ("smoke", "iris-mlflow-vnext", "would run"),
                              ("default-deployment", "iris-batch", "would update")]
    first = ok(cli("register-and-deploy"))
    assert rows(first)[3:] == [("deployment", "iris-mlflow-v1", "create"),
                               ("smoke", "iris-mlflow-v1", "passed"),
                               ("default-deployment", "iris-batch", "update")]
    assert re.search(r"smoke\s+job batchjob-\S+: 15 rows scored through iris-mlflow-v1, "
                     r"accuracy 1\.000", first)
    assert default_of(cli) == "iris-mlflow-v1"
    assert deployments(cli)["iris-mlflow-v1"]["tags"]["smoke"] == "passed"
    before = (cli.local_dir / "deployer" / "state.json").read_bytes()

    # Re-running with the same model changes nothing and runs no job.
    again = ok(cli("register-and-deploy"))
    assert {action for _, _, action in rows(again)} == {"no-op"}
    assert "changed   nothing" in again
    assert (cli.local_dir / "deployer" / "state.json").read_bytes() == before
    jobs_before = set((cli.local_dir / "deployer" / "jobs").iterdir())

    # A model whose predict raises: its deployment fails the smoke test, the default stays.
    broken = cli("register-and-deploy", "--model", broken_model)
    assert broken.returncode == 6, broken.stdout + broken.stderr
    error = [line for line in broken.stderr.splitlines() if line.startswith("error:")][0]
    job = re.search(r"\(job (batchjob-[0-9a-f-]{36})\)", error).group(1)
    assert "Smoke test of deployment iris-mlflow-v2 failed" in error
    assert "0 of 15 rows were scored" in error and "broken on purpose" in error
    assert "default deployment was not changed" in error
    assert default_of(cli) == "iris-mlflow-v1"
    smoke_job = json.loads((cli.local_dir / "deployer" / "jobs" / job / "job.json").read_text())
    assert smoke_job["deployment"] == "iris-mlflow-v2"  # the new deployment was tested, not the default
    assert deployments(cli)["iris-mlflow-v2"]["tags"]["smoke"] == "failed"  # left for inspection
    scored = ok(cli("invoke", "--input", str(IRIS_CSV)))
    assert "iris-batch / iris-mlflow-v1" in scored and re.search(r"rows scored\s+│ 150\s", scored)
    status = ok(cli("status"))
    assert re.search(r"iris-mlflow-v2\s+│ iris-classifier:2\s+│ no candidate: smoke test failed\s+│ "
                     r"failed\s+│ " + job, status), status
    assert re.search(r"iris-mlflow-v1\s+│ iris-classifier:1\s+│ default\s+│ passed", status)
    assert len(set((cli.local_dir / "deployer" / "jobs").iterdir()) - jobs_before) == 2

    refused = cli("rollback", "--to", "iris-mlflow-v2")
    assert refused.returncode == 2
    assert f"'iris-mlflow-v2' (model iris-classifier:2) failed its last smoke test (job {job})" \
        in refused.stderr
    missing = cli("rollback", "--to-version", "9")
    assert missing.returncode == 4 and "serves model version 9" in missing.stderr

    # A good new model: its deployment becomes the default; --keep 1 keeps v1 (the newest
    # earlier one that passed) and deletes the failed v2.
    good = publish_changed_copy(store, run, "models-good")
    third = ok(cli("register-and-deploy", "--model", good))
    assert rows(third)[3:] == [("deployment", "iris-mlflow-v3", "create"),
                               ("smoke", "iris-mlflow-v3", "passed"),
                               ("default-deployment", "iris-batch", "update"),
                               ("deployment", "iris-mlflow-v2", "delete")]
    assert "iris-mlflow-v1 → iris-mlflow-v3" in third
    assert sorted(deployments(cli)) == ["iris-mlflow-v1", "iris-mlflow-v3"]
    assert re.search(r"iris-mlflow-v1\s+│ iris-classifier:1\s+│ rollback candidate", ok(cli("status")))

    # rollback: the plan first, then the previous deployment serves again.
    planned = ok(cli("rollback", "--dry-run"))
    assert rows(planned) == [("default-deployment", "iris-batch", "would update")]
    assert "iris-mlflow-v3 → iris-mlflow-v1" in planned
    assert default_of(cli) == "iris-mlflow-v3"
    ok(cli("rollback"))
    assert default_of(cli) == "iris-mlflow-v1"
    assert "iris-batch / iris-mlflow-v1" in ok(cli("invoke", "--input", str(IRIS_CSV)))
    # v3, rolled back from, is no candidate: a second rollback does not toggle back to it.
    toggle = cli("rollback", "--dry-run")
    assert toggle.returncode == 4 and "iris-mlflow-v3: rolled back from" in toggle.stderr
    assert re.search(r"iris-mlflow-v3\s+│ iris-classifier:3\s+│ no candidate: rolled back from",
                     ok(cli("status")))

    # After the rollback the best run of the newest sweep is deployed: it serves, v1 (what
    # served before it) stays as the candidate, v3 (rolled back from) goes.
    swept = publish_sweep_copy(store, run, settings.model_prefix)
    fourth = ok(cli("register-and-deploy", "--sweep", "latest"))
    assert rows(fourth)[3:] == [("deployment", "iris-mlflow-v4", "create"),
                                ("smoke", "iris-mlflow-v4", "passed"),
                                ("default-deployment", "iris-batch", "update"),
                                ("deployment", "iris-mlflow-v3", "delete")]
    assert "iris-mlflow-v1 → iris-mlflow-v4" in fourth
    assert sorted(deployments(cli)) == ["iris-mlflow-v1", "iris-mlflow-v4"]
    assert state(cli)["endpoints"]["iris-batch"]["tags"] == {"rollout.previous.1": "iris-mlflow-v1"}
    assert re.search(r"iris-mlflow-v1\s+│ iris-classifier:1\s+│ rollback candidate", ok(cli("status")))
    ok(cli("rollback"))
    assert default_of(cli) == "iris-mlflow-v1"
    toggle = cli("rollback")
    assert toggle.returncode == 4 and "iris-mlflow-v4: rolled back from" in toggle.stderr
    assert default_of(cli) == "iris-mlflow-v1"
    # named with --to (or --to-version), a deployment rolled back from serves again
    ok(cli("rollback", "--to-version", "4"))
    assert default_of(cli) == "iris-mlflow-v4"
    ok(cli("rollback", "--to", "iris-mlflow-v1"))
    assert default_of(cli) == "iris-mlflow-v1"

    # --keep 0 after a rollback: v4 is tested again and made the default, and v1, the
    # default it moves away from, goes. The plan says so and changes nothing; the run
    # does what it planned. Then nothing is left to do.
    before = (cli.local_dir / "deployer" / "state.json").read_bytes()
    plan = ok(cli("register-and-deploy", "--model", swept, "--keep", "0", "--dry-run"))
    assert rows(plan)[3:] == [("deployment", "iris-mlflow-v4", "no-op"),
                              ("smoke", "iris-mlflow-v4", "would run"),
                              ("default-deployment", "iris-batch", "would update"),
                              ("deployment", "iris-mlflow-v1", "would delete")]
    assert (cli.local_dir / "deployer" / "state.json").read_bytes() == before
    pruned = ok(cli("register-and-deploy", "--model", swept, "--keep", "0"))
    assert rows(pruned)[3:] == [("deployment", "iris-mlflow-v4", "no-op"),
                                ("smoke", "iris-mlflow-v4", "passed"),
                                ("default-deployment", "iris-batch", "update"),
                                ("deployment", "iris-mlflow-v1", "delete")]
    assert sorted(deployments(cli)) == ["iris-mlflow-v4"]
    assert {a for _, _, a in rows(ok(cli("register-and-deploy", "--model", swept, "--keep", "0")))} \
        == {"no-op"}
    nothing = cli("rollback")
    assert nothing.returncode == 4 and "no earlier deployment to roll back to" in nothing.stderr

    # --cleanup-failed: the broken model's new deployment is deleted after its failed smoke
    # test; the default stays. --no-smoke switches to it without a test.
    cleaned = cli("register-and-deploy", "--model", broken_model, "--cleanup-failed")
    assert cleaned.returncode == 6
    assert "deployment iris-mlflow-v2: delete" in cleaned.stderr
    assert sorted(deployments(cli)) == ["iris-mlflow-v4"] and default_of(cli) == "iris-mlflow-v4"
    unchecked = ok(cli("register-and-deploy", "--model", broken_model, "--no-smoke"))
    assert ("smoke", "iris-mlflow-v2", "skip") in rows(unchecked)
    assert "--no-smoke: switching without a test" in unchecked
    assert default_of(cli) == "iris-mlflow-v2"
    assert deployments(cli)["iris-mlflow-v2"]["tags"]["smoke"] == "skipped"


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's advice on saving a PythonModel
def test_a_deployment_whose_run_was_killed_during_its_smoke_test_is_no_candidate(trained, tmp_path):
    """register-and-deploy killed (-9) while its smoke job scores: the new deployment exists
    but was never tested and never served, so neither status nor rollback offers it."""
    from deployer.app import deploy_lock_blob
    from tests.support.held_lock import break_lock
    from tests.support.rule_model import save_rule_model
    from tests.support.slow_model import save_slow_model

    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path / "work")
    ok(cli("register-and-deploy"))
    inner = save_rule_model(tmp_path / "rule", download_model(store, run, tmp_path / "inner"))
    slow = save_slow_model(tmp_path / "slow", inner, tmp_path / "predicting", mode="always",
                           seconds=600)
    model = publish_model_dir(store, run, slow, "models-slow")
    process = subprocess.Popen([sys.executable, "-m", "deployer", "register-and-deploy",
                                "--model", model], cwd=cli.workdir, env=cli.env, text=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    job, seen = None, []
    try:
        for line in process.stderr:  # its progress: the smoke job's name once it is submitted
            seen.append(line)
            found = re.search(r"\b(batchjob-[0-9a-f-]{36})\b", line)
            if found and any("smoke test: scoring" in s for s in seen):
                job = found.group(1)
                break
        assert job, "".join(seen)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        process.kill()
        process.wait(timeout=30)
        process.stderr.close()
        if job:
            cli("jobs", "cancel", job)
            # It was killed holding the endpoint's lock (in the module's container): the next
            # register-and-deploy here would wait out its lease.
            break_lock(store, deploy_lock_blob("iris-batch"))
    assert sorted(deployments(cli)) == ["iris-mlflow-v1", "iris-mlflow-v2"]
    assert default_of(cli) == "iris-mlflow-v1"
    assert "smoke" not in deployments(cli)["iris-mlflow-v2"].get("tags", {})

    status = ok(cli("status"))
    assert re.search(r"iris-mlflow-v2\s+│ iris-classifier:2\s+│ no candidate: untested, "
                     r"never the default\s+│ -", status), status
    assert "rollback candidate" not in status
    refused = cli("rollback", "--dry-run")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert ("no earlier deployment to roll back to (it has iris-mlflow-v1, iris-mlflow-v2; no "
            "candidate: iris-mlflow-v2: untested, never the default)") in refused.stderr
    assert default_of(cli) == "iris-mlflow-v1"


# ---------------------------------------------------------------------- invoke overrides


@pytest.fixture(scope="module")
def deployed(trained, tmp_path_factory):
    """An endpoint serving the petal-rule model (tests/support/rule_model.py): the overrides
    are the engine's and the CLI's; the model is not what these tests test, and the trainer's
    would cost each scoring process seconds of loading."""
    from tests.support.rule_model import save_rule_model

    settings, store, run, model_dir = trained
    tmp = tmp_path_factory.mktemp("overrides")
    rule = save_rule_model(tmp / "rule", model_dir)
    cli = Cli(settings, tmp / "work")
    ok(cli("register-and-deploy", "--no-smoke",
           "--model", publish_model_dir(store, run, rule, "models-rule")))
    return cli, store, settings


def job_of(cli: Cli, stdout: str) -> dict:
    name = re.search(r"^job (\S+)", stdout, re.M).group(1)
    return json.loads((cli.local_dir / "deployer" / "jobs" / name / "job.json").read_text())


def job_count(cli: Cli) -> int:
    jobs = cli.local_dir / "deployer" / "jobs"
    return len(list(jobs.iterdir())) if jobs.is_dir() else 0


def test_mini_batch_size_1_fails_only_the_bad_file(deployed, tmp_path):
    cli, _, _ = deployed
    folder = tmp_path / "scoring"
    folder.mkdir()
    iris = pd.read_csv(IRIS_CSV)
    iris.iloc[:10].to_csv(folder / "a.csv", index=False)
    (folder / "b.txt").write_text("not a table\n")
    iris.iloc[50:60].to_csv(folder / "c.csv", index=False)

    # The deployment's mini_batch_size (10): one mini-batch, the bad file fails all three.
    whole = job_of(cli, ok(cli("invoke", "--input", str(folder))))
    assert (whole["files_failed"], whole["rows_scored"]) == (3, 0)
    # One file per mini-batch: only the bad file fails; the files beside it are scored.
    single = job_of(cli, ok(cli("invoke", "--input", str(folder), "--mini-batch-size", "1",
                                "--max-retries", "0")))
    assert single["settings"]["mini_batch_size"] == 1 and single["settings"]["max_retries"] == 0
    assert (single["files_failed"], single["rows_scored"]) == (1, 20)
    assert single["mini_batches_total"] == 3 and not single.get("retries")
    # --error-threshold 0: that one failed file fails the job.
    failed = cli("invoke", "--input", str(folder), "--mini-batch-size", "1",
                 "--error-threshold", "0", "--instance-count", "1")
    assert failed.returncode == 7
    assert "more than error_threshold 0" in failed.stderr


def test_job_name_experiment_and_output_path(deployed, tmp_path):
    cli, store, settings = deployed
    out = f"azureml://datastores/{settings.datastore_name}/paths/results/iris-scored.csv"
    shown = ok(cli("invoke", "--input", str(IRIS_CSV), "--job-name", "nightly-001",
                   "--experiment-name", "nightly", "--output-path", out, "--instance-count", "2",
                   "--output-dir", "res"))
    record = json.loads((cli.local_dir / "deployer" / "jobs" / "nightly-001" / "job.json").read_text())
    assert record["experiment"] == "nightly" and record["settings"]["instance_count"] == 2
    assert re.search(r"experiment\s+│ nightly", shown)
    # The job wrote its output to that file of the datastore, and invoke downloaded it.
    lines = store.read_bytes("results/iris-scored.csv").decode().splitlines()
    assert len(lines) == 150 and lines[0].endswith(",iris_csv.csv")
    assert (cli.workdir / "res" / "iris-scored.csv").read_text().splitlines() == lines
    assert not store.exists("batch-jobs/nightly-001/named-outputs/score/predictions.csv")
    # invoke shows the downloaded file; jobs show where the job stored it
    assert re.search(r"predictions\s+│ res/iris-scored\.csv", shown)
    assert re.search(r"predictions\s+│ " + re.escape(out), ok(cli("jobs", "show", "nightly-001")))

    again = cli("invoke", "--input", str(IRIS_CSV), "--job-name", "nightly-001")
    assert again.returncode == 2 and "A job named 'nightly-001' already exists" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--output-path", "azureml://datastores/workspaceblobstore/paths/results/"],
     "is not a valid datastore file path"),
    (["--output-path", "https://example.invalid/out.csv"], "is not a valid datastore file path"),
    (["--mini-batch-size", "0"], "--mini-batch-size is 0; it must be a whole number of at least 1"),
    (["--error-threshold", "-2"], "--error-threshold is -2"),
    (["--max-retries", "-1"], "--max-retries is -1"),
    (["--instance-count", "0"], "--instance-count is 0"),
    (["--job-name", "bad name"], "--job-name 'bad name' is not a valid Azure ML job name"),
    (["--experiment-name", "-x"], "--experiment-name '-x' is not a valid Azure ML experiment name"),
    (["--output-path", "azureml://datastores/other/paths/r/p.csv"], "names datastore 'other'"),
])
def test_invalid_overrides_are_refused_before_a_job(deployed, args, message):
    cli, _, _ = deployed
    jobs = job_count(cli)
    result = cli("invoke", "--input", str(IRIS_CSV), *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert job_count(cli) == jobs


def test_inputs_a_folder_with_subfolders_and_a_data_asset_are_refused(deployed, tmp_path):
    cli, _, _ = deployed
    jobs = job_count(cli)
    folder = tmp_path / "nested"
    (folder / "more").mkdir(parents=True)
    pd.read_csv(IRIS_CSV).to_csv(folder / "a.csv", index=False)
    nested = cli("invoke", "--input", str(folder))
    assert nested.returncode == 2
    assert "has subfolders (more); a batch job scores only the top-level files" in nested.stderr
    asset = cli("invoke", "--input", "azureml:iris-scoring:1")
    assert asset.returncode == 2 and "data assets exist only on the Azure target" in asset.stderr
    assert job_count(cli) == jobs
