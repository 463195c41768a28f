"""`python -m workspace up/status/down`: the background Azurite behind `make local-up`."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workspace.azurite import free_port, is_listening
from workspace.datastore import Datastore
from workspace.errors import DatastoreUnavailable, ExitCode
from workspace.settings import REPO_ROOT, Settings


def _cli(*args, env):
    return subprocess.run([sys.executable, "-m", "workspace", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_up_is_idempotent_persists_and_down_stops(tmp_path):
    port, queue_port = free_port(), free_port()
    env = {**os.environ, "LOCAL_DIR": str(tmp_path / "state"), "AZURITE_BLOB_PORT": str(port),
           "AZURITE_QUEUE_PORT": str(queue_port), "DATASTORE_CONTAINER": "persisted",
           "TARGET": "local"}
    try:
        first = _cli("up", env=env)
        assert first.returncode == 0, first.stderr
        assert "started" in first.stdout and "created" in first.stdout
        assert "queue service started" in first.stdout and is_listening(queue_port)  # sweeps
        again = _cli("up", env=env)
        assert "already running" in again.stdout and "ready" in again.stdout
        assert _cli("status", env=env).returncode == 0

        settings = Settings.load(env_file=tmp_path / "none.env", environ=env)
        store = Datastore.from_settings(settings)
        store.upload_bytes(b"kept", "a/b.txt")
        assert (tmp_path / "state" / "azurite").is_dir()
    finally:
        down = _cli("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not is_listening(port) and not is_listening(queue_port)
    status = _cli("status", env=env)
    assert status.returncode == ExitCode.UNREACHABLE and "make local-up" in status.stdout

    # Data persisted under LOCAL_DIR survives a restart.
    try:
        assert _cli("up", env=env).returncode == 0
        assert store.read_bytes("a/b.txt") == b"kept"
    finally:
        _cli("down", env=env)


def test_cli_pointed_at_a_stopped_azurite_says_how_to_start_it(tmp_path):
    settings = Settings.load(env_file=tmp_path / "none.env", environ={},
                             azurite_port=str(free_port()))
    with pytest.raises(DatastoreUnavailable) as err:
        Datastore.from_settings(settings).check()
    assert "not reachable at http://127.0.0.1:" in str(err.value)
    assert "make local-up" in str(err.value)


def test_down_with_a_stale_pid_file_signals_no_stranger(tmp_path):
    """A pid file left behind names a pid that now belongs to another program."""
    state = tmp_path / "state"
    state.mkdir()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                                start_new_session=True)
    try:
        for content in (f"{stranger.pid}\n", f"{stranger.pid} 12345.0\n"):  # old and new format
            (state / "azurite.pid").write_text(content)
            env = {**os.environ, "LOCAL_DIR": str(state), "AZURITE_BLOB_PORT": str(free_port()),
                   "TARGET": "local"}
            down = _cli("down", env=env)
            assert down.returncode == 0, down.stderr
            assert "Azurite was not running" in down.stdout
            assert stranger.poll() is None, "local-down killed a process that is not Azurite"
            assert not (state / "azurite.pid").exists()
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("kind", ["AzuriteProcess", "AzuriteQueueProcess"])
def test_an_azurite_child_dies_with_its_killed_parent(kind):
    """A process holding an AzuriteProcess (tests, the bench) killed with SIGKILL runs no
    clean-up: the kernel stops its Azurite (PR_SET_PDEATHSIG), which would otherwise keep
    its port and memory until someone finds it."""
    import psutil

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from workspace.azurite import AzuriteProcess\n"
         "from workspace.queues import AzuriteQueueProcess\n"
         f"azurite = {kind}().start()\n"
         "print(azurite.process.pid, azurite.port, flush=True)\n"
         "time.sleep(600)\n"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pid, port = map(int, holder.stdout.readline().split())
        child = psutil.Process(pid)
        assert is_listening(port) and "azurite" in " ".join(child.cmdline())
        holder.kill()
        holder.wait(10)
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert not alive, f"Azurite {pid} outlived its killed parent"
    finally:
        holder.kill()
        holder.wait()
        if psutil.pid_exists(pid) and "azurite" in " ".join(psutil.Process(pid).cmdline()):
            psutil.Process(pid).kill()
