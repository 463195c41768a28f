"""`make ui`: the MLflow UI on 127.0.0.1 over the local registry."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from workspace.azurite import free_port
from workspace.settings import REPO_ROOT

pytestmark = pytest.mark.slow


def test_make_ui_serves_the_local_registry_on_loopback(tmp_path):
    import mlflow

    local_dir = tmp_path / "local"
    local_dir.mkdir()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{local_dir / 'mlflow.db'}",
                                 registry_uri=f"sqlite:///{local_dir / 'mlflow.db'}")
    client.create_registered_model("iris-classifier", tags={"run_id": "abc"})

    port = free_port()
    env = {**os.environ, "LOCAL_DIR": str(local_dir)}
    # `-o setup`: installing is `make test`'s own first step, not this test's.
    server = subprocess.Popen(["make", "--no-print-directory", "-o", "setup", "ui", f"UI_PORT={port}"],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/registered-models/search"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    body = json.load(response)
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode(errors="replace")
                assert time.monotonic() < deadline, "the MLflow UI did not answer within 120 s"
                time.sleep(0.5)
        assert [m["name"] for m in body["registered_models"]] == ["iris-classifier"]
        # One server process: no pool of workers, no job runner, each importing MLflow.
        import psutil

        commands = [" ".join(p.cmdline()) for p in psutil.Process(server.pid).children(recursive=True)]
        assert sum("uvicorn" in c for c in commands) == 1, commands
        assert not [c for c in commands if "multiprocessing" in c or "job" in c or "huey" in c], \
            commands
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    command = subprocess.run(["make", "-n", "ui", f"UI_PORT={port}"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True).stdout
    assert "--host 127.0.0.1" in command
