"""Azurite, the Azure Storage emulator, as the local datastore.

Installed from the npm registry into the repo (package.json + lock). Two ways to run it:
- `AzuriteProcess`: a child process for tests (in-memory, a free port, stopped after, and
  killed by the kernel if its parent dies without stopping it);
- `start_background`/`stop_background`: the `make local-up`/`local-down` service, data
  persisted under `.local/azurite/`, its pid in `.local/azurite.pid`.
Always bound to 127.0.0.1, telemetry off.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from workspace.errors import LocalServiceError
from workspace.settings import LOCAL_HOST, REPO_ROOT, azurite_connection_string, AZURITE_ACCOUNT

AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
# The services this project runs, and the setting that moves each one's port.
PORT_SETTINGS = {"blob": "AZURITE_BLOB_PORT", "queue": "AZURITE_QUEUE_PORT"}


def azurite_command(port: int, location: Path | None, service: str = "blob") -> list[str]:
    binary = AZURITE_BIN.with_name(f"azurite-{service}")
    if not binary.exists():
        raise LocalServiceError(f"Azurite is not installed ({binary} is missing).",
                                "Run `make setup` (npm ci installs it into the repo).")
    cmd = [str(binary), f"--{service}Host", LOCAL_HOST, f"--{service}Port", str(port),
           # azure-storage-blob sends a newer API version than Azurite knows.
           "--skipApiVersionCheck", "--disableTelemetry", "--loose"]
    if location is None:
        cmd.append("--inMemoryPersistence")
    else:
        cmd += ["--location", str(location)]
    return cmd


def is_listening(port: int, host: str = LOCAL_HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]


def _wait_until_listening(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise LocalServiceError(f"Azurite exited with code {process.returncode} while "
                                    f"starting on port {port}. Its log ({log}):\n{tail}")
        if is_listening(port):
            return
        time.sleep(0.1)
    process.kill()
    raise LocalServiceError(f"Azurite did not listen on {LOCAL_HOST}:{port} within {timeout:.0f} s.",
                            f"See {log}.")


class AzuriteProcess:
    """Azurite as a child process (tests): `with AzuriteProcess() as azurite: ...`."""

    service = "blob"

    def __init__(self, port: int | None = None, location: Path | None = None,
                 log_path: Path | None = None):
        self.port = port or free_port()
        self.location = location
        self.log_path = log_path or Path(os.devnull)
        self.process: subprocess.Popen | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.blob_endpoint)

    def start(self, timeout: float = 30) -> "AzuriteProcess":
        """Start it; it dies with this process even when no clean-up runs (SIGKILL), as
        long as the thread that started it lives (Linux PR_SET_PDEATHSIG, workspace/processes.py)."""
        from workspace.processes import die_with

        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(azurite_command(self.port, self.location, self.service),
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL,
                                            preexec_fn=die_with(os.getpid()))
        _wait_until_listening(self.port, self.process, self.log_path, timeout)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "AzuriteProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- background service


def _layout(state_dir: Path, service: str) -> tuple[Path, Path, Path]:
    """(pid file, log, data folder) of a background service under state_dir."""
    if service == "blob":  # the first service, laid out before there were others
        return state_dir / "azurite.pid", state_dir / "azurite.log", state_dir / "azurite"
    return (state_dir / service / "azurite.pid", state_dir / f"azurite-{service}.log",
            state_dir / f"azurite-{service}")


def running_pid(state_dir: Path, service: str = "blob") -> int | None:
    """The pid of the background Azurite started by `local-up`, if that very process still
    runs: a pid file left by a crash or a reboot may name another program now."""
    from workspace.processes import live_pid

    return live_pid(_layout(state_dir, service)[0], command_contains="azurite")


def start_background(state_dir: Path, port: int, timeout: float = 30,
                     service: str = "blob") -> tuple[int, bool]:
    """Start an Azurite service detached, persisting under state_dir. Returns
    (pid, started_now)."""
    pid_file, log_path, data = _layout(state_dir, service)
    pid = running_pid(state_dir, service)
    if pid is not None and is_listening(port):
        return pid, False
    if is_listening(port):
        raise LocalServiceError(f"Port {port} on {LOCAL_HOST} is taken by another program.",
                                f"Stop it, or set {PORT_SETTINGS[service]} in .env to a free port.")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(azurite_command(port, data, service),
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_until_listening(port, process, log_path, timeout)
    from workspace.processes import write_pid_file

    write_pid_file(pid_file, process.pid)
    return process.pid, True


def stop_background(state_dir: Path, timeout: float = 10, service: str = "blob") -> int | None:
    """Stop a background Azurite service; returns the pid stopped, or None if none ran."""
    from workspace.processes import ProcessId

    pid = running_pid(state_dir, service)
    _layout(state_dir, service)[0].unlink(missing_ok=True)
    if pid is None:
        return None
    who = ProcessId.of(pid)
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not who.alive():  # gone, or a zombie its new parent has yet to reap
            return pid
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    return pid
