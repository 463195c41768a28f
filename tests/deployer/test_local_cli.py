"""`python -m deployer` on the local target, run as processes: trainer → register-and-deploy
→ invoke → status/jobs → teardown, against a real Azurite and a real MLflow registry."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import IRIS_CSV, isolated_settings, published_copy
from tests.support.status import assert_deployment_follows_the_spec
from workspace.published import download_model, find_published_run
from workspace.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.slow

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPEC_DIR = REPO_ROOT / "deployer" / "specs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, azurite, trained_source):
    """The session's training run in a container of this module; its model downloaded
    (loaded by the test that compares predictions)."""
    tmp = tmp_path_factory.mktemp("deployer")
    settings = isolated_settings(azurite, tmp)
    store = published_copy(trained_source, settings)
    run = find_published_run(store, settings.model_prefix)
    return settings, store, run, download_model(store, run, tmp / "model")


class Cli:
    """`python -m deployer` as a process with its own LOCAL_DIR and working directory."""

    def __init__(self, settings: Settings, workdir: Path):
        self.workdir = workdir
        self.local_dir = workdir / "local"
        workdir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AML_"))}
        self.env.update({"PYTHONPATH": str(REPO_ROOT), "TARGET": "local",
                         "AZURITE_BLOB_PORT": settings.azurite_port,
                         "DATASTORE_CONTAINER": settings.container,
                         "DATASTORE_NAME": settings.datastore_name,
                         "MODEL_PREFIX": settings.model_prefix,
                         "LOCAL_DIR": str(self.local_dir)})
        self.env.pop("COLUMNS", None)  # stdout is a pipe: tables are as wide as they need
        self.env.pop("DEPLOYER_MIN_ACCURACY", None)

    def __call__(self, *args: str, env: dict | None = None, timeout: float = 180):
        return subprocess.run([sys.executable, "-m", "deployer", *args], cwd=self.workdir,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def actions(stdout: str) -> dict[str, str]:
    """resource → action from the summary table."""
    found = {}
    for kind in ("model", "compute", "endpoint", "deployment"):
        match = re.search(rf"│ {kind}\s+│ \S+\s+│ (would \w+|[\w-]+)", stdout)
        found[kind] = match.group(1) if match else ""
    return found


def registered_versions(local_dir: Path) -> list:
    from mlflow import MlflowClient

    uri = f"sqlite:///{local_dir / 'mlflow.db'}"
    return MlflowClient(uri, uri).search_model_versions("name='iris-classifier'")


def test_train_deploy_invoke_redeploy_status_teardown(trained, tmp_path):
    import mlflow.pyfunc

    settings, store, run, model_dir = trained
    model = mlflow.pyfunc.load_model(str(model_dir))
    cli = Cli(settings, tmp_path / "work")

    # The plan first: everything would be created, and nothing is.
    plan = ok(cli("register-and-deploy", "--dry-run"))
    assert actions(plan) == {k: "would create" for k in ("model", "compute", "endpoint", "deployment")}
    assert "nothing was changed" in plan
    assert not (cli.local_dir / "mlflow.db").exists()
    assert not (cli.local_dir / "deployer" / "state.json").exists()

    deployed = ok(cli("register-and-deploy"))
    assert actions(deployed) == {k: "create" for k in ("model", "compute", "endpoint", "deployment")}
    assert "iris-classifier version 1" in deployed and run.run_id in deployed
    versions = registered_versions(cli.local_dir)
    assert len(versions) == 1
    tags = versions[0].tags
    assert tags["run_id"] == run.run_id and tags["data_sha256"] == run.data["sha256"]
    assert float(tags["metric.test_accuracy"]) == pytest.approx(run.metrics["test_accuracy"])
    assert re.fullmatch(r"[0-9a-f]{64}", tags["content_sha256"])
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["git_commit"])
    state = (cli.local_dir / "deployer" / "state.json").read_bytes()

    # Score the Iris file: 150 lines in Azure ML's format, equal to the model's own predict.
    started = time.monotonic()
    scored = cli("invoke", "--input", str(IRIS_CSV), "--report")
    invoke_seconds = time.monotonic() - started
    out = ok(scored)
    job = re.search(r"job (batchjob-[0-9a-f-]{36})", out).group(1)
    output = cli.workdir / "outputs" / job / "predictions.csv"
    lines = output.read_text().splitlines()
    assert len(lines) == 150
    iris = pd.read_csv(IRIS_CSV)
    expected = [f"{i},{p},iris_csv.csv" for i, p in enumerate(model.predict(iris[FEATURES]))]
    assert lines == expected
    assert re.search(r"rows scored\s+│ 150\s", out) and re.search(r"files\s+│ 1 total, 0 failed", out)
    counts = pd.Series([line.split(",")[1] for line in lines]).value_counts()
    for label, count in counts.items():  # the per-class summary below the table
        assert re.search(rf"^{label}\s+{count}\s+{count / 150:.1%}$", out, re.M), label
    report = (output.parent / "report.html").read_text()
    assert "<svg" in report and all(f'data-count="{c}"' in report for c in counts)
    assert "Running" in scored.stderr and "Completed" in scored.stderr  # progress was shown
    print(f"invoke on iris: {invoke_seconds:.1f} s")
    # The job's own copy was moved to the output folder; the datastore keeps the output.
    job_dir = cli.local_dir / "deployer" / "jobs" / job
    assert not (job_dir / "outputs" / "predictions.csv").exists()
    ok(cli("jobs", "download", job, "--output-dir", "again"))
    assert (cli.workdir / "again" / "predictions.csv").read_bytes() == output.read_bytes()
    # The same job again: nothing to do, and it says so (job.json records the job).
    assert json.loads((cli.workdir / "again" / "job.json").read_text())["job"] == job
    same = ok(cli("jobs", "download", job, "--output-dir", "again"))
    assert f"Already downloaded: again/predictions.csv holds job {job}'s predictions" in same
    # A second job's output never overwrites the first's: the same folder is refused.
    refused = cli("invoke", "--input", str(IRIS_CSV), "--output-dir", "again")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert (f"again/predictions.csv' exists: the output folder holds job {job}'s predictions"
            in refused.stderr and "--output-dir" in refused.stderr)
    assert (cli.workdir / "again" / "predictions.csv").read_bytes() == output.read_bytes()

    # Again: nothing changes, no new version, no smoke job (the deployment already serves).
    again = ok(cli("register-and-deploy"))
    assert actions(again) == {k: "no-op" for k in ("model", "compute", "endpoint", "deployment")}
    assert "changed   nothing" in again and "smoke     job" not in again
    assert len(registered_versions(cli.local_dir)) == 1
    assert (cli.local_dir / "deployer" / "state.json").read_bytes() == state

    status = ok(cli("status"))
    assert "iris-batch" in status and "iris-mlflow-v1" in status and job in status
    assert run.run_id in status
    shown = ok(cli("jobs", "show", job))
    assert "Completed" in shown and "150" in shown and "logs" in shown

    # A datastore folder as input: top-level files only, read from Azurite.
    for name, rows in (("a.csv", iris.iloc[:30]), ("b.csv", iris.iloc[100:120])):
        store.upload_bytes(rows.to_csv(index=False).encode(), f"scoring/{name}")
    store.upload_bytes(iris.iloc[:7].to_csv(index=False).encode(), "scoring/nested/c.csv")
    # ... started with --no-wait, followed with `jobs show --wait` (as invoke says to),
    # fetched with `jobs download`.
    started = ok(cli("invoke", "--input",
                     f"azureml://datastores/{settings.datastore_name}/paths/scoring/", "--no-wait"))
    remote_job = re.search(r"job (batchjob-[0-9a-f-]{36})", started).group(1)
    assert f"jobs show {remote_job} --wait" in started
    assert re.search(r"status\s+│ Completed", ok(cli("jobs", "show", remote_job, "--wait")))
    remote = ok(cli("jobs", "download", remote_job, "--output-dir", "remote-out"))
    remote_lines = (cli.workdir / "remote-out" / "predictions.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[1] for line in remote_lines] == ["a.csv"] * 30 + ["b.csv"] * 20
    assert re.search(r"files\s+│ 2 total, 0 failed", remote)

    # A deployment with error_threshold 0: a failing file fails the job, exit code 7.
    specs = tmp_path / "specs"
    shutil.copytree(SPEC_DIR, specs)
    dep = (specs / "deployment.yml").read_text().replace("error_threshold: -1", "error_threshold: 0")
    (specs / "deployment.yml").write_text(dep)
    updated = ok(cli("register-and-deploy", "--spec-dir", str(specs)))
    assert actions(updated)["deployment"] == "update" and actions(updated)["model"] == "no-op"
    assert "error_threshold: -1 → 0" in updated
    bad = cli.workdir / "notes.txt"
    bad.write_text("hello\n")
    failed = cli("invoke", "--input", str(bad))
    assert failed.returncode == 7, failed.stdout + failed.stderr
    assert "notes.txt: File type '.txt' is not supported" in failed.stdout
    assert re.search(r"error: Job batchjob-\S+ failed: 1 file\(s\) failed, more than "
                     r"error_threshold 0", failed.stderr)

    # New content (another run, published elsewhere): a new version, a deployment of its own.
    new_model = publish_changed_copy(store, run, "models-copy")
    moved = ok(cli("register-and-deploy", "--spec-dir", str(specs), "--model", new_model))
    assert actions(moved) == {"model": "create", "compute": "no-op", "endpoint": "no-op",
                              "deployment": "create"}
    assert "iris-mlflow-v1 → iris-mlflow-v2" in moved
    assert len(registered_versions(cli.local_dir)) == 2
    assert "iris-classifier:2" in ok(cli("status"))

    unknown = cli("invoke", "--input", str(IRIS_CSV), "--deployment", "nope")
    assert unknown.returncode == 4
    assert "Deployment 'nope' does not exist on endpoint 'iris-batch'" in unknown.stderr

    # Teardown shows what it would delete, asks (refuses without a terminal), deletes with --yes.
    planned = ok(cli("teardown", "--dry-run"))
    assert ("deployment iris-mlflow-v1, deployment iris-mlflow-v2, endpoint iris-batch, "
            "compute cpu-cluster") in planned
    assert "nothing was deleted" in planned
    assert '"iris-mlflow-v2"' in (cli.local_dir / "deployer" / "state.json").read_text()
    refused = cli("teardown")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    gone = ok(cli("teardown", "--yes"))
    assert "deployment iris-mlflow-v2: delete" in gone and "endpoint iris-batch: delete" in gone
    assert "compute cpu-cluster: delete" in gone
    assert "does not exist" in ok(cli("status"))
    after = cli("invoke", "--input", str(IRIS_CSV))
    assert after.returncode == 4 and "Endpoint 'iris-batch' does not exist" in after.stderr
    assert len(registered_versions(cli.local_dir)) == 2  # models stay registered
    assert ok(cli("teardown", "--yes")).startswith("Nothing to delete")


def test_status_on_the_local_target_fills_the_same_typed_fields(trained, tmp_path):
    """What `status` shows locally is the typed status the Azure target gives (see
    test_azure_backend.test_describe_fills_the_typed_status_from_the_service)."""
    import dataclasses

    from deployer.app import Deployer
    from deployer.spec import load_specs

    settings, _, run, _ = trained
    settings = dataclasses.replace(settings, local_dir=str(tmp_path / "local"))
    specs = load_specs()
    deployer = Deployer(settings, specs=specs)
    assert deployer.status().target.endpoint is None  # nothing yet, and nothing made
    assert not (tmp_path / "local" / "mlflow.db").exists()
    deployer.register_and_deploy(smoke=False)

    report = deployer.status()

    target = report.target
    assert (target.backend, target.workspace, target.resource_group) == ("local", None, None)
    assert target.registry == f"sqlite:///{tmp_path / 'local' / 'mlflow.db'}"
    assert target.endpoint.default_deployment == "iris-mlflow-v1"
    assert target.endpoint.scoring_uri is None  # local jobs start through the CLI
    assert target.endpoint.description == specs.endpoint.data["description"]
    (dep,) = target.deployments
    assert (dep.model, dep.role, dep.smoke, dep.compute) == (
        "iris-classifier:1", "default", "skipped", "cpu-cluster")
    assert_deployment_follows_the_spec(dep, specs)
    (model,) = target.models
    assert (model.name, model.version, model.tags["run_id"]) == ("iris-classifier", "1", run.run_id)
    (cluster,) = target.computes
    assert (cluster.name, cluster.size, cluster.min_instances, cluster.max_instances) == (
        "cpu-cluster", "Standard_DS3_v2", 0, 2)
    assert cluster.idle_time_before_scale_down == specs.compute.data["idle_time_before_scale_down"]


def test_listings_give_json_to_scripts_and_whole_names_to_a_pipe(trained, tmp_path):
    """`status`, `jobs list` and `jobs show` with `-o json`: one JSON document on stdout
    (nothing else there), the fields of the typed objects the tables show. Without it,
    a table piped on (stdout is a pipe here, and no COLUMNS) keeps every name whole."""
    settings, _, _, _ = trained
    cli = Cli(settings, tmp_path / "work")
    ok(cli("register-and-deploy", "--no-smoke"))
    scored = tmp_path / "a-rather-long-folder-name-for-the-scoring-input" / "iris-first-rows.csv"
    scored.parent.mkdir()
    pd.read_csv(IRIS_CSV).iloc[:7].to_csv(scored, index=False)
    job = re.search(r"job (batchjob-[0-9a-f-]{36})", ok(cli("invoke", "--input", str(scored)))).group(1)

    table = ok(cli("status"))
    for whole in ("iris-mlflow-v1", "iris-classifier:1", job, str(scored)):
        assert whole in table, table
    assert "…" not in table and "\x1b[" not in table  # nothing cut, no colour codes
    assert re.search(r"│ iris-mlflow-v1 +│ iris-classifier:1 +│ default", table), table

    status = cli("status", "-o", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)  # the whole of stdout: no progress, no table
    assert (report["schema_version"], report["kind"]) == (1, "deployer.status")
    target = report["target"]
    assert (target["backend"], target["endpoint_name"]) == ("local", "iris-batch")
    assert target["endpoint"]["default_deployment"] == "iris-mlflow-v1"
    (dep,) = target["deployments"]
    assert (dep["name"], dep["model"], dep["role"], dep["is_default"]) == (
        "iris-mlflow-v1", "iris-classifier:1", "default", True)
    assert dep["tags"]["smoke"] == "skipped" and isinstance(dep["instance_count"], int)
    assert [m["version"] for m in target["models"]] == ["1"]
    assert target["computes"][0]["name"] == "cpu-cluster"
    (listed_job,) = report["jobs"]
    assert (listed_job["name"], listed_job["status"], listed_job["rows_scored"]) == (job, "Completed", 7)

    listed = json.loads(ok(cli("jobs", "list", "--output", "json")))
    assert listed["kind"] == "deployer.jobs" and [j["name"] for j in listed["jobs"]] == [job]
    shown = json.loads(ok(cli("jobs", "show", job, "-o", "json")))
    assert shown["kind"] == "deployer.job"
    assert shown["job"] == {**listed["jobs"][0], **shown["job"]}
    assert (shown["job"]["input"], shown["job"]["files_total"], shown["job"]["failed_files"]) == (
        str(scored), 1, [])

    missing = cli("jobs", "show", "batchjob-nope", "-o", "json")
    assert missing.returncode == 4 and missing.stdout == ""  # the error is on stderr alone
    assert "Job 'batchjob-nope' does not exist" in missing.stderr


def publish_model_dir(store, run, model_dir: Path, prefix: str) -> str:
    """Publish `model_dir` as the model of a new complete run (manifest with its hashes),
    the run's other artifacts copied; returns the model's datastore path."""
    new_prefix = f"{prefix}/{run.experiment_id}/{uuid.uuid4().hex}"
    files = {}
    for rel in run.files:
        if not rel.startswith("artifacts/model/"):
            data = store.read_bytes(f"{run.run_prefix}/{rel}")
            store.upload_bytes(data, f"{new_prefix}/{rel}")
            files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = f"artifacts/model/{path.relative_to(model_dir).as_posix()}"
        data = path.read_bytes()
        store.upload_bytes(data, f"{new_prefix}/{rel}")
        files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = store.read_json(run.manifest_path)
    manifest.update(run_id=new_prefix.rsplit("/", 1)[1], files=files,
                    model_path=f"{new_prefix}/artifacts/model")
    store.upload_bytes(json.dumps(manifest).encode(), f"{new_prefix}/manifest.json")
    return f"{new_prefix}/artifacts/model"


def publish_changed_copy(store, run, prefix: str) -> str:
    """Publish the run again under prefix as a new run whose model differs by one harmless
    file, with a manifest that matches (what a retrained model looks like to the deployer)."""
    new_id = uuid.uuid4().hex
    new_prefix = f"{prefix}/{run.experiment_id}/{new_id}"
    files = {}
    for rel, entry in run.files.items():
        data = store.read_bytes(f"{run.run_prefix}/{rel}")
        if rel.endswith("model/conda.yaml"):
            data += b"# retrained\n"
        store.upload_bytes(data, f"{new_prefix}/{rel}")
        files[rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = store.read_json(run.manifest_path)
    manifest.update(run_id=new_id, files=files, model_path=f"{new_prefix}/artifacts/model")
    store.upload_bytes(json.dumps(manifest).encode(), f"{new_prefix}/manifest.json")
    return f"{new_prefix}/artifacts/model"


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's advice on saving a PythonModel
def test_a_job_past_the_timeout_ends_the_wait_as_on_azure_and_goes_on(trained, tmp_path):
    """`--timeout` bounds the wait on the local target as on Azure: the same message, hint
    and exit code (test_azure_backend: ..._stops_at_the_deadline_and_says_why); the job's
    detached runner goes on until it is canceled."""
    from tests.support.rule_model import save_rule_model
    from tests.support.slow_model import save_slow_model
    from workspace.errors import ExitCode

    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path / "work")
    inner = save_rule_model(tmp_path / "rule", download_model(store, run, tmp_path / "inner"))
    slow = save_slow_model(tmp_path / "slow", inner, tmp_path / "predicting", mode="always",
                           seconds=600)
    ok(cli("register-and-deploy", "--no-smoke",
           "--model", publish_model_dir(store, run, slow, "models-slow")))

    waited = cli("invoke", "--input", str(IRIS_CSV), "--timeout", "0.01")

    job = re.search(r"error: Job (batchjob-[0-9a-f-]{36}) ", waited.stderr)
    assert job, waited.stderr
    job = job.group(1)
    try:
        assert waited.returncode == ExitCode.RUN_FAILED, waited.stderr
        assert re.search(rf"^error: Job {job} is still (Queued|Running) after 0\.01 min: "
                         r"(its runner is starting|scoring)[^\n]*\.$", waited.stderr, re.M)
        assert (f"  → It goes on in its runner on this machine: follow it with `python -m "
                f"deployer jobs show {job} --wait`, cancel it with `python -m deployer jobs cancel "
                f"{job}`, or pass a longer --timeout.") in waited.stderr
        assert re.search(r"status\s+│ (Queued|Running)", ok(cli("jobs", "show", job)))
    finally:
        canceled = ok(cli("jobs", "cancel", job))
    assert re.search(r"status\s+│ Canceled", canceled)
    assert not (cli.workdir / "outputs" / job).exists()


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's advice on saving a PythonModel
def test_jobs_are_followed_downloaded_once_and_reported_like_az_ml_job(trained, tmp_path):
    """`jobs show --wait` follows a job to its end; `jobs download` of a running job says to
    wait (exit 9), of a downloaded one does nothing; `--report` reports a failed job too."""
    from tests.support.rule_model import save_rule_model
    from tests.support.slow_model import save_slow_model
    from workspace.errors import ExitCode

    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path / "work")
    release = tmp_path / "release"  # the job scores its rows once this file exists
    inner = save_rule_model(tmp_path / "rule", download_model(store, run, tmp_path / "inner"))
    gated = save_slow_model(tmp_path / "gated", inner, release, mode="gate", seconds=120)
    ok(cli("register-and-deploy", "--no-smoke",
           "--model", publish_model_dir(store, run, gated, "models-gated")))
    started = ok(cli("invoke", "--input", str(IRIS_CSV), "--no-wait"))
    job = re.search(r"job (batchjob-[0-9a-f-]{36})", started).group(1)
    assert f"jobs show {job} --wait" in started

    early = cli("jobs", "download", job)
    assert early.returncode == ExitCode.NOT_ENDED == 9, early.stdout + early.stderr
    assert re.search(rf"error: Job {job} is (Queued|Running): its predictions exist once it "
                     "has completed", early.stderr)
    assert f"python -m deployer jobs show {job} --wait" in early.stderr
    assert not (cli.workdir / "outputs" / job).exists()

    follow = subprocess.Popen([sys.executable, "-m", "deployer", "jobs", "show", job, "--wait"],
                              cwd=cli.workdir, env=cli.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    release.touch()
    out, err = follow.communicate(timeout=180)
    assert follow.returncode == 0, out + err
    assert re.search(r"status\s+│ Completed", out) and re.search(r"rows scored\s+│ 150", out)
    assert "scoring" in err and "150 rows" in err  # the live bar of invoke, at its end

    first = ok(cli("jobs", "download", job, "--report"))
    assert "Already downloaded" not in first
    predictions = cli.workdir / "outputs" / job / "predictions.csv"
    assert len(predictions.read_text().splitlines()) == 150
    again = ok(cli("jobs", "download", job))
    assert (f"Already downloaded: outputs/{job}/predictions.csv holds job {job}'s predictions "
            "(as job.json beside it records); nothing was downloaded.") in again
    report = (predictions.parent / "report.html").read_text()
    assert "iris-classifier version" in report and 'id="accuracy"' in report
    assert 'href="predictions.csv"' in report and IRIS_CSV.as_uri() in report

    # A job that fails (a file it cannot read, no failure tolerated): its report lists why.
    bad = cli.workdir / "notes.txt"
    bad.write_text("hello\n")
    failed = cli("invoke", "--input", str(bad), "--error-threshold", "0", "--report")
    assert failed.returncode == ExitCode.RUN_FAILED, failed.stdout + failed.stderr
    failed_job = re.search(r"job (batchjob-[0-9a-f-]{36})", failed.stdout).group(1)
    failed_report = cli.workdir / "outputs" / failed_job / "report.html"
    assert f"report    outputs/{failed_job}/report.html" in failed.stdout
    page = failed_report.read_text()
    assert 'class="status failed"' in page and "notes.txt" in page
    assert "File type &#x27;.txt&#x27; is not supported" in page
    failed_report.unlink()
    again = cli("jobs", "download", failed_job, "--report")
    assert again.returncode == ExitCode.RUN_FAILED and failed_report.is_file(), again.stderr


def test_quality_gate_refuses_then_force_overrides(trained, tmp_path):
    settings, _, run, _ = trained
    cli = Cli(settings, tmp_path)
    refused = cli("register-and-deploy", "--dry-run", "--min-accuracy", "0.99")
    assert refused.returncode == 5
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Run {run.run_id} has test_accuracy "
                      f"{run.metrics['test_accuracy']:.3f}, below the quality gate of 0.99; "
                      "it was not deployed."]
    assert "--force" in refused.stderr
    by_env = cli("register-and-deploy", "--dry-run", env={"DEPLOYER_MIN_ACCURACY": "0.995"})
    assert by_env.returncode == 5 and "quality gate of 0.995" in by_env.stderr
    forced = cli("register-and-deploy", "--dry-run", "--min-accuracy", "0.99", "--force")
    ok(forced)
    assert "below the quality gate of 0.99 (deployed anyway: --force)" in forced.stderr
    assert actions(forced.stdout)["model"] == "would create"
    assert not (cli.local_dir / "mlflow.db").exists()


def test_model_is_chosen_by_datastore_path_and_an_unknown_one_is_named(trained, tmp_path):
    settings, _, run, _ = trained
    cli = Cli(settings, tmp_path)
    uri = settings.datastore_uri(run.model_path)
    plan = ok(cli("register-and-deploy", "--dry-run", "--model", uri))
    assert run.run_id in plan and actions(plan)["model"] == "would create"
    by_run = ok(cli("register-and-deploy", "--dry-run", "--run-id", run.run_id))
    assert run.run_id in by_run
    missing = cli("register-and-deploy", "--dry-run", "--model", "models/1/nope/artifacts/model")
    assert missing.returncode == 4
    assert "No complete training run publishes 'models/1/nope/artifacts/model'" in missing.stderr


def test_a_tampered_model_is_never_registered(trained, tmp_path):
    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path)
    name = f"{run.model_path}/MLmodel"
    original = store.read_bytes(name)
    store.upload_bytes(original + b"\n# changed\n", name)
    try:
        refused = cli("register-and-deploy")
    finally:
        store.upload_bytes(original, name)
    assert refused.returncode == 4
    assert "does not match its manifest" in refused.stderr
    assert not (cli.local_dir / "deployer" / "state.json").exists()
    if (cli.local_dir / "mlflow.db").exists():
        assert registered_versions(cli.local_dir) == []


def test_help_is_fast_and_imports_no_heavy_package():
    # How fast it starts is measured by `make bench`; here: what it imports.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "deployer", "--help"], capture_output=True,
                            text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0 and "Examples:" in result.stdout
    for command in ("register-and-deploy", "invoke", "status", "jobs", "rollback", "teardown"):
        assert command in result.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, deployer.cli, deployer.app, deployer.backends; "
         "print(sorted({m.split('.')[0] for m in sys.modules} & "
         "{'mlflow', 'azure', 'pyarrow', 'pandas', 'rich', 'sklearn'}))"],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

