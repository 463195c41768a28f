"""The trainer, run as a process against a real Azurite, the way the Batch node runs it."""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import IRIS_CSV, TRAINER, run_trainer, train_iris
from tests.support.tcp_proxy import CuttingProxy
from workspace.published import (MANIFEST_FORMAT, MANIFEST_NAME, ModelNotFound,
                                 download_model, find_published_run, list_published_runs)
from workspace.settings import REPO_ROOT, azurite_connection_string

pytestmark = pytest.mark.slow


def _train(tmp_path, settings, azurite, *extra, csv=IRIS_CSV, container=None):
    return train_iris(azurite, settings, tmp_path / "node", *extra, csv=csv, container=container)


@pytest.fixture(scope="module")
def published(trained_source):
    """The session's training run, shared by the read-only checks below."""
    return trained_source


def test_publishes_a_complete_verifiable_mlflow_model(published, tmp_path):
    import mlflow.pyfunc

    settings, store, result, node = published
    outputs = json.loads((node / "outputs.json").read_text())
    run = find_published_run(store, settings.model_prefix)
    assert run.run_id == outputs["runId"]
    # MLflow's layout under the prefix, manifest beside the artifacts.
    assert run.model_path == f"models/{run.experiment_id}/{run.run_id}/artifacts/model"
    assert outputs["modelUri"] == f"azureml://datastores/workspaceblobstore/paths/{run.model_path}"
    assert store.exists(f"{run.run_prefix}/artifacts/confusion_matrix.png")
    assert run.data["sha256"] and run.data["rows"] == 150

    model_dir = download_model(store, run, tmp_path / "model")  # verifies every sha256
    model = mlflow.pyfunc.load_model(str(model_dir))
    iris = pd.read_csv(IRIS_CSV)
    predicted = model.predict(iris.drop(columns="species"))
    assert (predicted == iris["species"]).mean() >= 0.9
    assert run.metrics["test_accuracy"] >= 0.9
    assert 0 < run.metrics["test_f1_macro"] <= 1
    assert outputs["metrics"] == run.metrics


def test_model_carries_signature_example_and_pinned_requirements(published, tmp_path):
    settings, store, _, _ = published
    run = find_published_run(store, settings.model_prefix)
    model_dir = download_model(store, run, tmp_path / "model")
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "signature:" in mlmodel and '"name": "petal_width"' in mlmodel
    assert (model_dir / "input_example.json").exists()
    requirements = (model_dir / "requirements.txt").read_text().split()
    assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][^ ]*", r) for r in requirements)
    assert not any(r.startswith("pytest") for r in requirements)


def test_phases_are_reported_with_timings(published):
    _, _, result, _ = published
    for phase in ("load", "connect", "train", "evaluate", "save", "upload"):
        assert re.search(rf"\[trainer\] {phase}\s+done in\s+\d+\.\d+ s", result.stdout), phase


def test_tampered_file_is_refused(published, tmp_path):
    from workspace.published import ModelIntegrityError

    settings, store, _, _ = published
    run = find_published_run(store, settings.model_prefix)
    original = store.read_bytes(f"{run.model_path}/MLmodel")
    store.upload_bytes(original + b"\n# changed\n", f"{run.model_path}/MLmodel")
    try:
        with pytest.raises(ModelIntegrityError, match="does not match its manifest"):
            download_model(store, run, tmp_path / "model")
    finally:
        store.upload_bytes(original, f"{run.model_path}/MLmodel")


# ------------------------------------------------------------------ bad input


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _iris_rows(n: int, classes=("setosa", "versicolor")) -> str:
    rows = ["sepal_length,sepal_width,petal_length,petal_width,species"]
    rows += [f"{5 + i * 0.1:.1f},3.0,{1 + i * 0.1:.1f},0.2,{classes[i % len(classes)]}"
             for i in range(n)]
    return "\n".join(rows) + "\n"


BAD_INPUTS = {
    "missing file": (lambda tmp: tmp / "nope.csv", r"Input file '.*nope\.csv' not found"),
    "no species column": (
        lambda tmp: _write(tmp, "x.csv", _iris_rows(20).replace("species", "kind")),
        r"has no 'species' column \(columns: .*kind\); add it or pass --label-column"),
    "non-numeric feature": (
        lambda tmp: _write(tmp, "x.csv", _iris_rows(20).replace("5.3,3.0", "5.3,abc")),
        r"line 5: column 'sepal_width' value 'abc' is not numeric"),
    "too few rows": (lambda tmp: _write(tmp, "x.csv", _iris_rows(4)),
                     r"has 4 data rows; at least 10 are needed"),
    "single class": (lambda tmp: _write(tmp, "x.csv", _iris_rows(20, classes=("setosa",))),
                     r"has a single class \('setosa'\)"),
    "empty file": (lambda tmp: _write(tmp, "x.csv", ""), r"is empty"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_clear_line_and_publishes_nothing(case, tmp_path, settings, datastore, azurite):
    make_csv, message = BAD_INPUTS[case]
    result = _train(tmp_path, settings, azurite, csv=make_csv(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("[trainer] error: "), result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert list(datastore.list()) == []
    assert not (tmp_path / "node" / "outputs.json").exists()


def test_unknown_container_is_named(tmp_path, settings, datastore, azurite):
    result = _train(tmp_path, settings, azurite, container="no-such-container")
    assert result.returncode == 4
    assert "Storage container 'no-such-container' does not exist" in result.stderr
    assert list(datastore.list()) == []
    assert not (tmp_path / "node" / "outputs.json").exists()


def test_unreachable_storage_fails_after_bounded_retries(tmp_path, settings):
    from workspace.azurite import free_port

    dead = azurite_connection_string(f"http://127.0.0.1:{free_port()}/devstoreaccount1")
    result = run_trainer(tmp_path / "node", "--iris-csv", str(IRIS_CSV), "--containerName",
                         "azureml/models", "--storage-retries", "1", connection_string=dead)
    assert result.returncode == 3
    assert re.search(r"Storage at http://127\.0\.0\.1:\d+/devstoreaccount1 is not reachable "
                     r"after 1 retries", result.stderr), result.stderr
    assert not (tmp_path / "node" / "outputs.json").exists()


def test_no_storage_given_says_how(tmp_path):
    result = run_trainer(tmp_path / "node", "--iris-csv", str(IRIS_CSV), "--containerName", "a/b")
    assert result.returncode == 2
    assert "pass --account-url (managed identity) or --connectionString" in result.stderr


def test_storage_cut_mid_upload_leaves_no_manifest_and_rerun_succeeds(tmp_path, settings,
                                                                     datastore, azurite):
    proxy = CuttingProxy(azurite.port, cut_after_puts=3)
    try:
        result = run_trainer(tmp_path / "cut", "--iris-csv", str(IRIS_CSV), "--containerName",
                             f"{settings.container}/{settings.model_prefix}",
                             "--storage-retries", "1",
                             connection_string=azurite_connection_string(proxy.endpoint()))
    finally:
        proxy.close()
    assert proxy.puts_forwarded == 3, "the cut must happen mid-upload"
    assert result.returncode == 3, result.stdout + result.stderr
    assert "nothing was published, re-run the trainer" in result.stderr
    assert not any(b.name.endswith(MANIFEST_NAME) for b in datastore.list())
    assert any("/artifacts/" in b.name for b in datastore.list()), "some blobs did land"
    with pytest.raises(ModelNotFound):
        find_published_run(datastore, settings.model_prefix)
    assert not (tmp_path / "cut" / "outputs.json").exists()

    rerun = _train(tmp_path, settings, azurite)
    assert rerun.returncode == 0, rerun.stderr
    runs = list_published_runs(datastore, settings.model_prefix)
    assert len(runs) == 1
    assert runs[0].run_id == json.loads((tmp_path / "node" / "outputs.json").read_text())["runId"]


# ------------------------------------------------------------------ contract


def test_help_explains_every_option():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, str(TRAINER), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--iris-csv", "--epochs", "--lr", "--connectionString", "--containerName",
                   "--account-url", "--client-id", "exit codes"):
        assert option in result.stdout


def test_trainer_is_self_contained():
    tree = ast.parse(TRAINER.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    project_packages = {p.name for p in REPO_ROOT.iterdir() if (p / "__init__.py").exists()}
    assert not imported & project_packages


def test_trainer_requirements_match_the_lock():
    lock = dict(line.split("==") for line in (REPO_ROOT / "requirements.lock").read_text().split()
                if "==" in line)
    lock = {k.lower().replace("_", "-"): v for k, v in lock.items()}
    for line in (REPO_ROOT / "trainer" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            assert lock[name.lower()] == version, name


def test_manifest_contract_is_shared():
    source = TRAINER.read_text()
    assert f'MANIFEST_FORMAT = "{MANIFEST_FORMAT}"' in source
    assert f'MANIFEST_NAME = "{MANIFEST_NAME}"' in source


# ------------------------------------------------------------------ arguments


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "inf", "argument --lr: must be a finite number, got 'inf'"),
    ("--lr", "nan", "argument --lr: must be a finite number, got 'nan'"),
    ("--lr", "abc", "argument --lr: must be a number, got 'abc'"),
    ("--lr", "0", "argument --lr: must be greater than 0"),
    ("--seed", "-5", "argument --seed: must be between 0 and 4294967295, got -5"),
    ("--epochs", "0", "argument --epochs: must be between 1 and"),
    ("--epochs", str(2**63), "argument --epochs: must be between 1 and"),
    ("--epochs", "1.5", "argument --epochs: must be a whole number, got '1.5'"),
])
def test_bad_argument_is_named_with_exit_2_and_no_traceback(tmp_path, option, value, message):
    result = run_trainer(tmp_path, "--iris-csv", str(IRIS_CSV), "--containerName", "a/b",
                         option, value)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "_" + "positive" not in result.stderr


# ------------------------------------------------------------------ managed identity

class _FakeImds:
    """The managed identity endpoint (IMDS) on loopback, reached through
    AZURE_POD_IDENTITY_AUTHORITY_HOST (azure-identity's override of the IMDS host, see
    azure/identity/_credentials/imds.py). For an unknown client id IMDS answers 400
    invalid_request "Identity not found" (Azure docs, managed identities: how to use them on
    a VM, error handling)."""

    def __init__(self, known_client_id: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        self.queries: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                fake.queries.append(query)
                if query.get("client_id") == known_client_id:
                    status, body = 200, {"access_token": "t", "expires_in": "3600",
                                         "expires_on": "9999999999", "token_type": "Bearer",
                                         "resource": query.get("resource")}
                else:
                    status, body = 400, {"error": "invalid_request",
                                         "error_description": "Identity not found"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_a_wrong_client_id_is_reported_as_such_not_as_a_missing_role(tmp_path, monkeypatch):
    imds = _FakeImds(known_client_id="11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
    try:
        result = run_trainer(tmp_path, "--iris-csv", str(IRIS_CSV), "--containerName", "a/b",
                             "--account-url", "https://account.blob.core.windows.net",
                             "--client-id", "22222222-2222-2222-2222-222222222222",
                             "--storage-retries", "0", timeout=120)
    finally:
        imds.close()
    assert result.returncode == 8, result.stdout + result.stderr
    assert "managed identity with client id 22222222-2222-2222-2222-222222222222" in result.stderr
    assert "Identity not found" in result.stderr
    assert "Storage Blob Data Contributor" not in result.stderr
    # Only the named identity was asked for, for storage.
    assert imds.queries and {q.get("client_id") for q in imds.queries} == \
        {"22222222-2222-2222-2222-222222222222"}
    assert {q.get("resource") for q in imds.queries} == {"https://storage.azure.com"}
    assert not (tmp_path / "outputs.json").exists()


# ------------------------------------------------------------------ signals


def test_sigterm_mid_training_removes_the_scratch_folder(tmp_path, settings, datastore, azurite):
    import signal
    import subprocess
    import sys
    import time

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string, TMPDIR=str(scratch))
    process = subprocess.Popen(
        [sys.executable, str(TRAINER), "--iris-csv", str(IRIS_CSV), "--epochs", "10000",
         "--containerName", f"{settings.container}/{settings.model_prefix}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(scratch.glob("iris-trainer-*")) and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(scratch.glob("iris-trainer-*")), "the trainer never made its scratch folder"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by signal" in stderr
    assert list(scratch.iterdir()) == []
    assert not any(b.name.endswith(MANIFEST_NAME) for b in datastore.list())


def test_the_trainer_repeats_the_projects_exit_codes():
    """The trainer imports no project package; its codes must still be the project's."""
    import importlib.util

    from workspace.errors import ExitCode

    spec = importlib.util.spec_from_file_location("trainer_main", TRAINER)
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    assert (trainer.EXIT_BAD_INPUT, trainer.EXIT_STORAGE, trainer.EXIT_NOT_FOUND,
            trainer.EXIT_ACCESS_DENIED) == \
        (ExitCode.USAGE, ExitCode.UNREACHABLE, ExitCode.NOT_FOUND, ExitCode.ACCESS_DENIED)
    # and its --help names exactly those
    codes_text = " ".join(trainer.EPILOG.split("exit codes:")[1].split())
    listed = re.findall(r"(?:^|,)\s*(\d+) ", codes_text)
    assert sorted(map(int, listed)) == [0, ExitCode.USAGE, ExitCode.UNREACHABLE,
                                        ExitCode.NOT_FOUND, ExitCode.ACCESS_DENIED], listed


def test_a_new_tracking_store_starts_from_an_empty_one_kept_on_the_machine(
        tmp_path, settings, datastore, azurite, monkeypatch):
    """A new MLflow store runs every schema migration (seconds per sweep runner): the first
    trainer on a machine keeps its empty store in a folder of its user's own, later ones
    copy it. Something else planted there (not a migrated store), or a folder open to
    others, is not used, and training goes on."""
    import sqlite3
    from contextlib import closing
    from importlib.metadata import version

    shared = tmp_path / "shared"
    monkeypatch.setenv("AZ_BATCH_NODE_SHARED_DIR", str(shared))
    folder = shared / f"iris-trainer-{os.getuid()}"
    folder.mkdir(parents=True, mode=0o700)
    template = folder / f"mlflow-{version('mlflow')}-empty.db"
    template.write_bytes(b"not a store")

    first = train_iris(azurite, settings, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    with closing(sqlite3.connect(f"{template.as_uri()}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()
        assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    second = train_iris(azurite, settings, tmp_path / "b")
    assert second.returncode == 0, second.stderr

    folder.chmod(0o777)
    template.write_bytes(b"planted")
    third = train_iris(azurite, settings, tmp_path / "c")
    assert third.returncode == 0, third.stderr
    assert template.read_bytes() == b"planted"   # neither read nor replaced
