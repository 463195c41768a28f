"""Storage queues of a sweep: Azurite's queue service locally, the account's in Azure.

A sweep has three queues, named from its id: `<id>-work` (one message per grid line),
`<id>-results` (one per completed line) and `<id>-failures` (one per line that failed
`max_attempts` times). Message bodies are JSON; the runner on the node writes the same.

Azurite's queue service runs beside blob (`azurite-queue`, loopback only): as a child
process for tests (`AzuriteQueueProcess`) or as the `make local-up` service.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from workspace.azurite import AzuriteProcess, _wait_until_listening, is_listening, running_pid
from workspace.errors import ConfigError, DatastoreUnavailable, LocalServiceError
from workspace.settings import AZURITE_ACCOUNT, AZURITE_KEY, LOCAL_HOST, REPO_ROOT, Settings

AZURITE_QUEUE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-queue"
QUEUE_KINDS = ("work", "results", "failures")
PEEK_MAX = 32  # the service returns at most 32 messages per call


def azurite_queue_command(port: int, location: Path | None) -> list[str]:
    if not AZURITE_QUEUE_BIN.exists():
        raise LocalServiceError(f"Azurite is not installed ({AZURITE_QUEUE_BIN} is missing).",
                                "Run `make setup` (npm ci installs it into the repo).")
    cmd = [str(AZURITE_QUEUE_BIN), "--queueHost", LOCAL_HOST, "--queuePort", str(port),
           "--skipApiVersionCheck", "--disableTelemetry", "--loose"]
    return cmd + (["--inMemoryPersistence"] if location is None else ["--location", str(location)])


class AzuriteQueueProcess(AzuriteProcess):
    """Azurite's queue service as a child process (tests)."""

    @property
    def queue_endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/{AZURITE_ACCOUNT}"

    def start(self, timeout: float = 30) -> "AzuriteQueueProcess":
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(azurite_queue_command(self.port, self.location),
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        _wait_until_listening(self.port, self.process, self.log_path, timeout)
        return self


def start_background_queue(state_dir: Path, port: int, timeout: float = 30) -> tuple[int, bool]:
    """The `make local-up` queue service, data under state_dir/azurite-queue."""
    pid_dir = state_dir / "queue"
    pid = running_pid(pid_dir)
    if pid is not None and is_listening(port):
        return pid, False
    if is_listening(port):
        raise LocalServiceError(f"Port {port} on {LOCAL_HOST} is taken by another program.",
                                "Stop it, or set AZURITE_QUEUE_PORT in .env to a free port.")
    pid_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "azurite-queue.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(azurite_queue_command(port, state_dir / "azurite-queue"),
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_until_listening(port, process, log_path, timeout)
    (pid_dir / "azurite.pid").write_text(str(process.pid))
    return process.pid, True


def stop_background_queue(state_dir: Path) -> int | None:
    from workspace.azurite import stop_background

    return stop_background(state_dir / "queue")


# ---------------------------------------------------------------- clients


def queue_service(settings: Settings, credential=None, **options):
    """A QueueServiceClient: Azurite's well-known key locally, Entra ID in Azure."""
    from azure.storage.queue import ExponentialRetry, QueueServiceClient

    from workspace.datastore import RETRY

    options = {"retry_policy": ExponentialRetry(**RETRY), "connection_timeout": 5, **options}
    if settings.is_local:
        if not is_listening(int(settings.azurite_queue_port)):  # fail fast, not after retries
            raise DatastoreUnavailable(f"The local queue service (Azurite) is not reachable at "
                                       f"{settings.queue_endpoint}.",
                                       "Start it with `make local-up`.")
        credential = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    elif credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    return QueueServiceClient(settings.queue_endpoint, credential=credential, **options)


def queue_name(sweep_id: str, kind: str) -> str:
    if kind not in QUEUE_KINDS:
        raise ValueError(kind)
    name = f"{sweep_id}-{kind}"
    # Queue names: 3-63 lowercase letters, digits and single dashes.
    if not (3 <= len(name) <= 63) or name != name.lower() or "--" in name:
        raise ConfigError(f"Sweep id '{sweep_id}' makes an invalid queue name '{name}'.")
    return name


@dataclass
class QueueCounts:
    work: int
    results: int
    failures: int


class SweepQueues:
    """The three queues of one sweep."""

    def __init__(self, service, sweep_id: str):
        self.service = service
        self.sweep_id = sweep_id
        self.clients = {kind: service.get_queue_client(queue_name(sweep_id, kind))
                        for kind in QUEUE_KINDS}

    def create(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for client in self.clients.values():
            try:
                client.create_queue()
            except ResourceExistsError:
                pass

    def delete(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for client in self.clients.values():
            try:
                client.delete_queue()
            except ResourceNotFoundError:
                pass

    def send(self, kind: str, body: dict) -> None:
        self.clients[kind].send_message(json.dumps(body, sort_keys=True))

    def counts(self) -> QueueCounts:
        """Approximate message counts (work includes messages being processed)."""
        return QueueCounts(*(self.clients[k].get_queue_properties().approximate_message_count
                             for k in QUEUE_KINDS))

    def drain(self, kind: str, visibility_timeout: int = 30):
        """Yield (body, ack) for messages of kind; ack() deletes the message once recorded."""
        client = self.clients[kind]
        while True:
            batch = list(client.receive_messages(messages_per_page=PEEK_MAX,
                                                 max_messages=PEEK_MAX,
                                                 visibility_timeout=visibility_timeout))
            if not batch:
                return
            for message in batch:
                yield json.loads(message.content), (lambda m=message: client.delete_message(m))
