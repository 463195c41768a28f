"""`make ui`: the MLflow UI on 127.0.0.1 over the local tracking store and registry (the
sweep's runs in a real browser: tests/adf/test_sweep.py)."""
from __future__ import annotations

import json
import os
import urllib.request

import pytest

from tests.support.mlflow_ui import make_ui
from workspace.azurite import free_port

pytestmark = pytest.mark.slow


def test_make_ui_serves_the_local_registry_on_loopback(tmp_path):
    import mlflow

    local_dir = tmp_path / "local"
    local_dir.mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{local_dir / 'mlflow.db'}",
                                 registry_uri=f"sqlite:///{local_dir / 'mlflow.db'}")
    client.create_registered_model("iris-classifier", tags={"run_id": "abc"})

    port = free_port()
    # No datastore answers: the runs are not imported (a warning), the store is served.
    env = {**os.environ, "LOCAL_DIR": str(local_dir), "TARGET": "local",
           "AZURITE_BLOB_PORT": str(free_port())}
    with make_ui(env, port) as (server, url):
        assert "warning: the published runs were not imported" in server.said
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        assert url.endswith("?workflowType=machine_learning")
        search = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/registered-models/search"
        with urllib.request.urlopen(search, timeout=5) as response:
            body = json.load(response)
        assert [m["name"] for m in body["registered_models"]] == ["iris-classifier"]
        # One server process on loopback: no pool of workers, no job runner.
        import psutil

        commands = [" ".join(p.cmdline()) for p in psutil.Process(server.pid).children(recursive=True)]
        commands.append(" ".join(psutil.Process(server.pid).cmdline()))
        assert sum("uvicorn" in c for c in commands) == 1, commands
        assert not [c for c in commands if "multiprocessing" in c or "job" in c or "huey" in c], \
            commands
        assert any("mlflow ui" in c and "--host 127.0.0.1" in c for c in commands), commands


def test_a_bad_ui_port_is_refused_naming_the_setting(tmp_path):
    import subprocess
    import sys

    from workspace.settings import REPO_ROOT

    done = subprocess.run([sys.executable, "-m", "workspace", "ui", "--no-sync"], cwd=REPO_ROOT,
                          env={**os.environ, "UI_PORT": "http", "LOCAL_DIR": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 2 and "UI_PORT is 'http'" in done.stderr, done.stderr


@pytest.mark.azurite
def test_a_run_published_while_the_ui_serves_is_imported(published_run, tmp_path):
    import sys
    import time
    from dataclasses import replace

    from tests.conftest import container_datastore
    from workspace.settings import REPO_ROOT
    from workspace.tracking import known_runs

    settings, store, run = published_run
    serving = replace(settings, container=f"{settings.container}ui")
    empty = container_datastore(serving)
    env = {**os.environ, **serving.as_environ()}
    command = (sys.executable, "-m", "workspace", "ui", "--sync-every", "0.5")
    with make_ui({**env, "PYTHONPATH": str(REPO_ROOT)}, free_port(), command) as (server, url):
        assert "tracking store: 0 run(s) imported" in server.said
        for blob in store.list():  # the trainer publishes while the UI serves
            empty.upload_bytes(store.read_bytes(blob.name), blob.name)
        deadline = time.monotonic() + 60
        while run.run_id not in known_runs(serving.local_path / "mlflow.db"):
            assert server.poll() is None and time.monotonic() < deadline, \
                "the run was not imported within 60 s"
            time.sleep(0.5)
