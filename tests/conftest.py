"""Shared fixtures: a real Azurite on a free loopback port for the whole session, and a
fresh datastore container per test."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
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


# The files that take longest, longest first (seconds of one test process, measured as in
# docs/performance.md). `make test` keeps each file in one of its test processes; these go
# first so that the processes finish together instead of one running a long file alone.
LONGEST_FILES = (
    "tests/deployer/test_rollout_local.py",  # ~360 s on a busy machine (load 4)
    "tests/adf/test_sweep.py",  # ~260 s
    "tests/deployer/test_local_cli.py",  # ~210 s
    "tests/deployer/engine/test_job.py",  # ~155 s
    "tests/adf/test_local_runner.py",  # ~150 s
    "tests/adf/test_sweep_control.py",  # ~145 s
    "tests/trainer/test_main.py",  # ~80 s
    "tests/deployer/test_quality_gate.py",  # two trainings of their own
    "tests/test_make_ui.py",  # ~65 s
    "tests/deployer/engine/test_faults.py",  # ~60 s
    "tests/adf/test_sweep_checks.py",  # two real sweeps
    "tests/bicep/test_scan.py",
    "tests/deployer/test_concurrency.py",
    "tests/deployer/test_azure_backend.py",
    "tests/workspace/test_local_services.py",  # ~20 s; the rest take less
)


# The packages whose modules the tests' processes import.
SOURCE_DIRS = ("adf", "bench", "bicep", "deployer", "scripts", "terraform", "tests", "trainer", "workspace")


def pytest_configure(config):
    # xdist would hand out files by their number of tests, most first: the long files
    # with few tests would start last. They go in collection order instead (see below).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    if not hasattr(config, "workerinput"):  # once, in the main process
        compile_sources()


def compile_sources() -> None:
    """Write the repo's bytecode once. The suite starts a few hundred Python processes; where
    PYTHONDONTWRITEBYTECODE is set, each would otherwise compile every module it imports
    again (about 35 s of the suite's time). A stale file is never used: Python checks
    each source's size and time."""
    import compileall

    for name in SOURCE_DIRS:
        compileall.compile_dir(REPO_ROOT / name, quiet=2)


def pytest_collection_modifyitems(items):
    """Tests that need Azurite (directly or through a fixture) carry the `azurite` marker,
    so `make test-fast` can leave them out. The longest files are collected first."""
    for item in items:
        if "azurite" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.azurite)
    rank = {path: n for n, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    log = tmp_path_factory.mktemp("azurite") / "azurite.log"
    with AzuriteProcess(log_path=log) as process:
        yield process


def isolated_settings(azurite, tmp_path: Path) -> Settings:
    """Local-target settings on a fresh container, isolated from .env and the environment."""
    return Settings.load(env_file=tmp_path / "no.env", environ={},
                         azurite_port=str(azurite.port),
                         container=f"t{uuid.uuid4().hex[:16]}",
                         local_dir=str(tmp_path / "local"))


def container_datastore(settings: Settings) -> Datastore:
    store = Datastore.from_settings(settings)
    store.ensure_container()
    return store


@pytest.fixture(scope="session")
def azure_storage(azurite):
    """The session's Azurite behind a proxy that answers as Azure Storage does where
    Azurite differs (tests/support/azure_storage_proxy.py): its port stands in for
    Azurite's, e.g. `isolated_settings(azure_storage, tmp_path)`."""
    from tests.support.azure_storage_proxy import AzureStorageProxy

    with AzureStorageProxy(azurite.port) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def azurite_queue(tmp_path_factory):
    """Azurite's queue service (sweeps), beside the blob service."""
    from workspace.queues import AzuriteQueueProcess

    log = tmp_path_factory.mktemp("azurite-queue") / "azurite-queue.log"
    with AzuriteQueueProcess(log_path=log) as process:
        yield process


@pytest.fixture(scope="session")
def azure_queue(azurite_queue):
    """The session's Azurite queue service behind a proxy that answers as Azure Storage
    does where Azurite differs: its port stands in for AZURITE_QUEUE_PORT."""
    from tests.support.azure_storage_proxy import QUEUE_RULES, AzureStorageProxy

    with AzureStorageProxy(azurite_queue.port, rules=QUEUE_RULES) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def trained_source(azurite, tmp_path_factory):
    """The session's one training run (the trainer as a process, as the Batch node runs it):
    (settings, datastore, completed process, node folder). Treat it as read-only; a module
    that needs a container of its own takes a `published_copy`.

    With several test processes (`make test`), the first to get here trains and leaves the
    run in their shared folder; the others upload that run to their own Azurite."""
    tmp = tmp_path_factory.mktemp("trained")
    settings = isolated_settings(azurite, tmp)
    store = container_datastore(settings)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        result = train_iris(azurite, settings, tmp / "node")
        assert result.returncode == 0, result.stderr
        return settings, store, result, tmp / "node"
    shared = tmp_path_factory.getbasetemp().parent / "trained-run"
    shared.mkdir(exist_ok=True)
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the first one's run
        if (shared / "result.json").is_file():
            result = _load_training(shared, store, tmp / "node")
        else:
            result = train_iris(azurite, settings, tmp / "node")
            assert result.returncode == 0, result.stderr
            _save_training(result, store, tmp / "node", shared)
    return settings, store, result, tmp / "node"


def _save_training(result: subprocess.CompletedProcess, store: Datastore, node: Path,
                   shared: Path) -> None:
    for blob in store.list():
        store.download_file(blob.name, shared / "blobs" / blob.name)
    shutil.copytree(node, shared / "node")
    (shared / "result.json").write_text(json.dumps(
        {"args": result.args, "returncode": result.returncode, "stdout": result.stdout,
         "stderr": result.stderr}))


def _load_training(shared: Path, store: Datastore, node: Path) -> subprocess.CompletedProcess:
    blobs = shared / "blobs"
    for path in sorted(p for p in blobs.rglob("*") if p.is_file()):
        store.upload_file(path, path.relative_to(blobs).as_posix())
    shutil.copytree(shared / "node", node)
    return subprocess.CompletedProcess(**json.loads((shared / "result.json").read_text()))


def published_copy(trained_source, settings: Settings) -> Datastore:
    """A fresh container for settings holding a copy of the session's training run."""
    _, source, _, _ = trained_source
    store = container_datastore(settings)
    for blob in source.list():
        store.upload_bytes(source.read_bytes(blob.name), blob.name)
    return store


@pytest.fixture
def published_run(trained_source, azurite, tmp_path):
    """(settings, datastore, PublishedRun): a copy of the session's run in a fresh container,
    with a LOCAL_DIR of its own."""
    from workspace.published import find_published_run

    settings = isolated_settings(azurite, tmp_path)
    store = published_copy(trained_source, settings)
    return settings, store, find_published_run(store, settings.model_prefix)


@pytest.fixture
def settings(azurite, tmp_path) -> Settings:
    return isolated_settings(azurite, tmp_path)


@pytest.fixture
def datastore(settings) -> Datastore:
    return container_datastore(settings)


def train_iris(azurite, settings: Settings, cwd: Path, *extra: str, csv: Path = IRIS_CSV,
               container: str | None = None) -> subprocess.CompletedProcess:
    """The ADF command's training run on the Iris data, publishing to settings' container."""
    return run_trainer(cwd, "--iris-csv", str(csv), "--epochs", "50", "--lr", "0.1",
                       "--containerName", f"{container or settings.container}/{settings.model_prefix}",
                       *extra, connection_string=azurite.connection_string)


def run_trainer(cwd: Path, *args: str, connection_string: str | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess:
    """Run trainer/main.py as a process, the way the Batch node runs it."""
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    if connection_string:
        env["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(TRAINER), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
