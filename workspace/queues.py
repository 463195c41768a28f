"""Storage queues of a sweep: Azurite's queue service locally, the account's in Azure.

A sweep has one queue, named from its id: `<id>-work`, one message per grid line (JSON, as
the runner on the node reads it). Its runners report results and failures in blobs, not
queue messages (adf/sweep.py).

Azurite's queue service runs beside blob (`azurite-queue`, loopback only): as a child
process for tests (`AzuriteQueueProcess`) or as the `make local-up` service.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from workspace.azurite import AzuriteProcess, is_listening, start_background, stop_background
from workspace.errors import ConfigError, DatastoreUnavailable
from workspace.settings import AZURITE_ACCOUNT, AZURITE_KEY, LOCAL_HOST, Settings

QUEUE_KINDS = ("work",)
# Work-queue metadata set once every line is queued: the sweep's line count. Runners stop as
# soon as a marked queue is empty (trainer/node_runner.py reads the same name).
QUEUED_METADATA = "sweeplines"


class AzuriteQueueProcess(AzuriteProcess):
    """Azurite's queue service as a child process (tests)."""

    service = "queue"

    @property
    def queue_endpoint(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}/{AZURITE_ACCOUNT}"


def start_background_queue(state_dir: Path, port: int, timeout: float = 30) -> tuple[int, bool]:
    """The `make local-up` queue service, data under state_dir/azurite-queue."""
    return start_background(state_dir, port, timeout, service="queue")


def stop_background_queue(state_dir: Path) -> int | None:
    return stop_background(state_dir, service="queue")


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


class SweepQueues:
    """The queues of one sweep."""

    def __init__(self, service, sweep_id: str):
        self.service = service
        self.sweep_id = sweep_id
        self.sent = 0
        self.clients = {kind: service.get_queue_client(queue_name(sweep_id, kind))
                        for kind in QUEUE_KINDS}

    def create(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        for client in self.clients.values():
            try:
                client.create_queue()
            except ResourceExistsError:
                pass

    def delete(self) -> int:
        """Delete the queues (and their messages); the number that existed."""
        from azure.core.exceptions import ResourceNotFoundError

        deleted = 0
        for client in self.clients.values():
            try:
                client.delete_queue()
                deleted += 1
            except ResourceNotFoundError:
                pass
        return deleted

    def send(self, kind: str, body: dict) -> None:
        self.clients[kind].send_message(json.dumps(body, sort_keys=True))
        self.sent += 1

    def mark_queued(self, lines: int) -> None:
        """Every line is on the work queue: from now on, an empty work queue means every line
        is accounted for."""
        self.clients["work"].set_queue_metadata({QUEUED_METADATA: str(lines)})

    def counts(self) -> QueueCounts:
        """Approximate message counts (work includes messages being processed); a deleted
        queue (a canceled sweep) counts 0."""
        from azure.core.exceptions import ResourceNotFoundError

        def count(kind: str) -> int:
            try:
                return self.clients[kind].get_queue_properties().approximate_message_count
            except ResourceNotFoundError:
                return 0

        return QueueCounts(*map(count, QUEUE_KINDS))
