"""Storage queues of a sweep: Azurite's queue service locally, the account's in Azure.

A sweep has three queues, named from its id: `<id>-work` (one message per grid line),
`<id>-results` (one per completed line) and `<id>-failures` (one per line that failed
`max_attempts` times). Message bodies are JSON; the runner on the node writes the same.

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

QUEUE_KINDS = ("work", "results", "failures")
PEEK_MAX = 32  # the service returns at most 32 messages per call


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
                yield json.loads(message.content), (lambda m=message: delete_received(client, m))


def delete_received(client, message) -> bool:
    """Delete a received message; False if its pop receipt is no longer valid: the message
    became visible again and was received since (the later receipt deletes it), or it is
    deleted already, with its queue or alone. Azure answers that 404 MessageNotFound (Delete Message, "If a message
    with a matching pop receipt isn't found, the service returns error code 404",
    learn.microsoft.com/rest/api/storageservices/delete-message2); Azurite 3.37 answers
    400 PopReceiptMismatch (docs/azure.md)."""
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    try:
        client.delete_message(message)
        return True
    except ResourceNotFoundError:  # (or the queue is gone: so is the message)
        return False
    except HttpResponseError as exc:
        if exc.status_code == 400 and exc.error_code == "PopReceiptMismatch":
            return False
        raise
