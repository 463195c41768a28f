"""Shared fixtures: a real Azurite on a free loopback port for the whole session, and a
fresh datastore container per test."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from workspace.azurite import AzuriteProcess
from workspace.datastore import Datastore
from workspace.settings import REPO_ROOT, Settings

TRAINER = REPO_ROOT / "trainer" / "main.py"
IRIS_CSV = REPO_ROOT / "data" / "iris_csv.csv"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with AzuriteProcess(log_path=log) as process:
        yield process


@pytest.fixture
def settings(azurite, tmp_path) -> Settings:
    """Local-target settings isolated from the developer's .env and environment."""
    return Settings.load(env_file=tmp_path / "no.env", environ={},
                         azurite_port=str(azurite.port),
                         container=f"t{uuid.uuid4().hex[:16]}",
                         local_dir=str(tmp_path / "local"))


@pytest.fixture
def datastore(settings) -> Datastore:
    store = Datastore.from_settings(settings)
    store.ensure_container()
    return store


def run_trainer(cwd: Path, *args: str, connection_string: str | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """Run trainer/main.py as a process, the way the Batch node runs it."""
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    if connection_string:
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(TRAINER), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
