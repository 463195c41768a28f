"""The workspace blob datastore: one container, on Azurite locally or Azure Storage in Azure.

Locally it authenticates with Azurite's well-known key; in Azure with Entra ID
(DefaultAzureCredential), never with an account key. Every storage failure is turned into
a DatastoreUnavailable/DatastoreError that says what to do.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterator

from workspace.errors import DatastoreError, DatastoreUnavailable
from workspace.settings import Settings, azurite_connection_string

# Bounded retries: a dead endpoint fails in seconds, not minutes.
RETRY = {"initial_backoff": 0.5, "increment_base": 2, "retry_total": 3}
LEASE_SECONDS = 60  # the longest finite blob lease the service grants (15-60 s)
LEASE_POLL_SECONDS = 1.0


class ContainerMissing(DatastoreError):
    """The datastore's container does not exist."""


class AppendConflict(DatastoreError):
    """An append blob was not the length its writer expected: someone else appended."""


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    etag: str = ""  # changes whenever the blob is written again


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Datastore:
    """Blob operations on the datastore's container, with actionable errors."""

    def __init__(self, container_client, *, name: str = "workspaceblobstore",
                 unreachable_hint: str = "Check the storage URL and your network."):
        self.client = container_client
        self.name = name
        self.unreachable_hint = unreachable_hint

    @classmethod
    def from_settings(cls, settings: Settings, credential=None) -> "Datastore":
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        if settings.is_local:
            return cls.on_azurite(settings.azurite_blob_endpoint, settings.container,
                                  name=settings.datastore_name)
        settings.require("storage_blob_url", "container")
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        service = BlobServiceClient(settings.blob_endpoint, credential=credential,
                                    retry_policy=ExponentialRetry(**RETRY), connection_timeout=5)
        hint = (f"Storage at {settings.blob_endpoint} is not reachable; check "
                "AZURE_STORAGE_BLOB_URL in .env and your network (private networking "
                "allows only the set-up IP).")
        return cls(service.get_container_client(settings.container), name=settings.datastore_name,
                   unreachable_hint=hint)

    @classmethod
    def on_azurite(cls, blob_endpoint: str, container: str, *,
                   name: str = "workspaceblobstore") -> "Datastore":
        """A container of the local Azurite at blob_endpoint. Nothing listening there is
        final: it is said at once, not after the client's retries (about 15 s)."""
        from urllib.parse import urlsplit

        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        from workspace.azurite import is_listening

        if not is_listening(urlsplit(blob_endpoint).port):
            raise DatastoreUnavailable(f"The local datastore (Azurite) is not reachable at "
                                       f"{blob_endpoint}.", "Start it with `make local-up`.")
        service = BlobServiceClient.from_connection_string(
            azurite_connection_string(blob_endpoint), retry_policy=ExponentialRetry(**RETRY),
            connection_timeout=5)
        return cls(service.get_container_client(container), name=name, unreachable_hint=(
            f"The local datastore (Azurite) is not reachable at {blob_endpoint}; start it "
            "with `make local-up`."))

    # ------------------------------------------------------------------ errors

    @property
    def container(self) -> str:
        return self.client.container_name

    @contextmanager
    def _errors(self, what: str):
        from azure.core.exceptions import (ClientAuthenticationError, HttpResponseError,
                                           ResourceNotFoundError, ServiceRequestError)

        try:
            yield
        except ServiceRequestError as exc:
            raise DatastoreUnavailable(self.unreachable_hint) from exc
        except ClientAuthenticationError as exc:
            raise DatastoreError(f"Storage refused access while {what}.",
                                 "Sign in with `az login`; your identity needs 'Storage Blob "
                                 "Data Contributor' on the account.") from exc
        except ResourceNotFoundError as exc:
            code = getattr(exc, "error_code", None)
            if code == "ContainerNotFound":
                raise ContainerMissing(f"Container '{self.container}' does not exist.",
                                     "Run `make local-up` (local) or `make deploy-infra` "
                                     "(Azure), or fix DATASTORE_CONTAINER.") from exc
            raise DatastoreError(f"Not found while {what}: {_first_line(exc)}") from exc
        except HttpResponseError as exc:
            raise DatastoreError(f"Storage error while {what}: {_first_line(exc)}") from exc

    # ------------------------------------------------------------------ operations

    def check(self) -> None:
        """Fail with an actionable error unless the container is reachable and exists."""
        with self._errors("checking the container"):
            exists = self.client.exists()
        if not exists:
            raise DatastoreError(f"Container '{self.container}' does not exist.",
                                 "Run `make local-up` (local) or `make deploy-infra` (Azure), "
                                 "or fix DATASTORE_CONTAINER.")

    def ensure_container(self) -> bool:
        """Create the container if needed; True if it was created."""
        from azure.core.exceptions import ResourceExistsError

        with self._errors("creating the container"):
            try:
                self.client.create_container()
                return True
            except ResourceExistsError:
                return False

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._errors(f"listing '{prefix}'"):
            for blob in self.client.list_blobs(name_starts_with=prefix or None):
                yield BlobInfo(blob.name, blob.size, str(blob.etag or "").strip('"'))

    def exists(self, name: str) -> bool:
        with self._errors(f"checking '{name}'"):
            return self.client.get_blob_client(name).exists()

    def read_bytes(self, name: str) -> bytes:
        with self._errors(f"reading '{name}'"):
            return self.client.download_blob(name).readall()

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """`length` bytes of blob `name` from `offset` (one ranged Get Blob)."""
        with self._errors(f"reading '{name}'"):
            return self.client.download_blob(name, offset=offset, length=length).readall()

    def read_json(self, name: str):
        return json.loads(self.read_bytes(name))

    def download_file(self, name: str, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with self._errors(f"downloading '{name}'"):
            with tmp.open("wb") as handle:
                self.client.download_blob(name).readinto(handle)
        tmp.replace(path)
        return path

    def upload_file(self, path: Path, name: str, overwrite: bool = True,
                    metadata: dict[str, str] | None = None) -> None:
        # validate_content: each request carries its Content-MD5, checked by the service
        # (Azurite then hashes with MD5 instead of a much slower CRC64 of its own).
        with self._errors(f"uploading '{name}'"), Path(path).open("rb") as handle:
            self.client.upload_blob(name, handle, overwrite=overwrite, metadata=metadata,
                                    validate_content=True, max_concurrency=2)

    def block_upload(self, name: str) -> "BlockUpload":
        """A blob written as a sequence of blocks: nothing is visible until `commit`."""
        return BlockUpload(self, name)

    def _properties(self, name: str):
        """The blob's properties, or None if the blob does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._errors(f"reading the properties of '{name}'"):
            try:
                return self.client.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError:
                return None

    def metadata(self, name: str) -> dict[str, str] | None:
        """The blob's metadata, or None if the blob does not exist."""
        properties = self._properties(name)
        return None if properties is None else dict(properties.metadata)

    def leased(self, name: str) -> bool:
        """Whether blob `name` holds an active lease: someone holds its `lease_lock` (a lease
        whose holder died is 'expired' once its LEASE_SECONDS pass)."""
        properties = self._properties(name)
        return properties is not None and properties.lease.state == "leased"

    def size(self, name: str) -> int | None:
        """The blob's length in bytes, or None if the blob does not exist."""
        properties = self._properties(name)
        return None if properties is None else properties.size

    def create_append_blob(self, name: str) -> None:
        """An empty append blob `name`, unless a blob of that name exists (Put Blob with
        If-None-Match: *, which the service refuses with 409 BlobAlreadyExists)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError

        with self._errors(f"creating '{name}'"):
            try:
                self.client.get_blob_client(name).create_append_blob(
                    match_condition=MatchConditions.IfMissing)
            except ResourceExistsError:
                pass

    def append(self, name: str, data: bytes, position: int) -> None:
        """Append `data` to append blob `name` as one block, if the blob is still `position`
        bytes long: Append Block commits a block whole or not at all, and with
        x-ms-blob-condition-appendpos the service refuses it (412
        AppendPositionConditionNotMet, raised as AppendConflict) once another writer, or an
        earlier try of this one, appended first
        (learn.microsoft.com/rest/api/storageservices/append-block)."""
        from azure.core.exceptions import HttpResponseError

        with self._errors(f"appending to '{name}'"):
            try:
                self.client.get_blob_client(name).append_block(data, length=len(data),
                                                               appendpos_condition=position)
            except HttpResponseError as exc:
                if exc.status_code == 412 and exc.error_code == "AppendPositionConditionNotMet":
                    raise AppendConflict(f"'{name}' grew past {position} bytes while this "
                                         "process appended to it.") from None
                raise

    def sibling(self, container: str) -> "Datastore":
        """Container `container` of the same account, with the same credential."""
        if container == self.container:
            return self
        service = self.client._get_blob_service_client()
        return Datastore(service.get_container_client(container), name=self.name,
                         unreachable_hint=self.unreachable_hint)

    def upload_bytes(self, data: bytes, name: str, overwrite: bool = True) -> None:
        with self._errors(f"uploading '{name}'"):
            self.client.upload_blob(name, data, overwrite=overwrite)

    def delete_prefix(self, prefix: str) -> int:
        names = [b.name for b in self.list(prefix)]
        with self._errors(f"deleting '{prefix}'"):
            for name in names:
                self.client.delete_blob(name)
        return len(names)

    def uri(self, path: str) -> str:
        return f"azureml://datastores/{self.name}/paths/{path.strip('/')}"

    @contextmanager
    def lease_lock(self, name: str, *, purpose: str, wait_seconds: float = 600,
                   progress=lambda message: None):
        """Hold an exclusive lease on blob `name` for the block's duration.

        A blob lease is the storage service's own mutex, so one lock serves every target and
        every machine. The lease lasts LEASE_SECONDS and is renewed by a thread: if the
        holder dies, it expires by itself and the next caller goes on. While it holds the
        lease, the holder writes who it is (`purpose`, process, host, since when) into the
        blob's metadata, so that whoever waits for it can say what it waits for."""
        blob = self.client.get_blob_client(name)
        self._create_lock_blob(blob)
        lease = self._acquire_lease(blob, purpose, wait_seconds, progress)
        stop = threading.Event()
        renewer = threading.Thread(target=_renew_lease, args=(lease, stop),
                                   name=f"lease {name}", daemon=True)
        renewer.start()
        try:
            try:
                blob.set_blob_metadata(LockHolder.this_process(purpose).metadata(), lease=lease)
            except Exception:  # noqa: BLE001 - only the waiters' message needs it
                pass
            yield
        finally:
            stop.set()
            renewer.join()
            try:
                blob.set_blob_metadata({}, lease=lease)  # the next holder is someone else
                lease.release()
            except Exception:  # noqa: BLE001 - it expires by itself within LEASE_SECONDS
                pass

    def _create_lock_blob(self, blob) -> None:
        """Create the lock's (empty) blob unless it exists. Put Blob with If-None-Match: *
        on a blob that exists is refused with 409 BlobAlreadyExists (ResourceExistsError),
        but Azure checks the lease first: on a blob another caller holds leased it answers
        412 LeaseIdMissing (a plain HttpResponseError), which Azurite 3.37 does not
        (Azure/Azurite#2637; docs/azure.md). Either way the blob is there."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        with self._errors(f"creating the lock '{blob.blob_name}'"):
            try:
                blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass  # made by an earlier holder
            except HttpResponseError as exc:
                if exc.status_code != 412 or exc.error_code != "LeaseIdMissing":
                    raise  # (a 412 of another kind is a real refusal)

    def _acquire_lease(self, blob, purpose: str, wait_seconds: float, progress):
        from azure.core.exceptions import HttpResponseError

        deadline = time.monotonic() + wait_seconds
        told = None
        while True:
            with self._errors(f"locking '{blob.blob_name}'"):
                try:
                    return blob.acquire_lease(lease_duration=LEASE_SECONDS)
                except HttpResponseError as exc:
                    if exc.status_code != 409:  # 409 LeaseAlreadyPresent: someone holds it
                        raise
            holder = self._lock_holder(blob)
            if time.monotonic() >= deadline:
                raise DatastoreError(
                    f"Gave up the {purpose} after {wait_seconds:g} s: the lock "
                    f"'{blob.blob_name}' in container '{self.container}' is still held by "
                    f"{holder}.",
                    "Wait for it to finish and run again; if its process died, the lock "
                    f"expires by itself within {LEASE_SECONDS} s.")
            if holder != told:  # said once per holder, not every poll
                progress(f"waiting for the lock '{blob.blob_name}', held by {holder}")
                told = holder
            time.sleep(LEASE_POLL_SECONDS)

    def _lock_holder(self, blob) -> "LockHolder":
        """Who holds the lock now, as its holder wrote it (unknown if it has not yet)."""
        from azure.core.exceptions import AzureError

        try:
            return LockHolder.from_metadata(blob.get_blob_properties().metadata)
        except AzureError:  # the next poll asks again
            return LockHolder()


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lease lock, kept in the lock blob's metadata while they hold it."""

    purpose: str = ""
    pid: str = ""
    host: str = ""
    since: str = ""

    # Metadata names must be C# identifiers; values are HTTP header values (ASCII), so the
    # purpose, which names user-chosen things, is percent-encoded.
    PREFIX = "holder_"

    @classmethod
    def this_process(cls, purpose: str) -> "LockHolder":
        import os
        import socket
        from datetime import datetime, timezone

        return cls(purpose, str(os.getpid()), socket.gethostname(),
                   datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))

    def metadata(self) -> dict[str, str]:
        from urllib.parse import quote

        return {f"{self.PREFIX}{key}": quote(value, safe=" '():/-_.,")
                for key, value in asdict(self).items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> "LockHolder":
        from urllib.parse import unquote

        return cls(**{f.name: unquote(metadata.get(f"{cls.PREFIX}{f.name}", ""))
                      for f in fields(cls)})

    def __str__(self) -> str:
        if not self.purpose:
            return "another process (the lock does not name it)"
        return f"{self.purpose} (process {self.pid} on {self.host}, since {self.since})"


class BlockUpload:
    """Stage a blob block by block while it is being produced, then commit it at once
    (Put Block + Put Block List): readers see the whole blob or none of it. Blocks that
    are staged but left out of the commit are discarded by the service."""

    MAX_BLOCKS = 50_000  # the service's limit of committed blocks per blob

    def __init__(self, store: Datastore, name: str):
        self.store = store
        self.name = name
        self.blob = store.client.get_blob_client(name)
        self.staged = 0

    def stage(self, data: bytes) -> str:
        """Upload one block (its MD5 checked by the service); returns its id."""
        import base64

        # Every id of a blob has the same length.
        block_id = base64.b64encode(f"block-{self.staged:010d}".encode()).decode()
        with self.store._errors(f"uploading '{self.name}'"):
            self.blob.stage_block(block_id, data, length=len(data), validate_content=True)
        self.staged += 1
        return block_id

    def stage_file(self, path: Path, block_bytes: int = 8 << 20) -> list[str]:
        """Stage a whole file; returns its block ids, in order. Blocks staged earlier for
        the blob are replaced or left out, never mixed in (same id length, as the service
        requires of a blob's uncommitted blocks)."""
        ids = []
        with open(path, "rb") as handle:
            while data := handle.read(block_bytes):
                ids.append(self.stage(data))
        return ids

    def commit(self, block_ids: list[str], metadata: dict[str, str] | None = None) -> None:
        """Make the blob these blocks, in this order (replacing any blob of that name)."""
        from azure.storage.blob import BlobBlock

        if len(block_ids) > self.MAX_BLOCKS:
            raise DatastoreError(f"'{self.name}' would have {len(block_ids)} blocks, more than "
                                 f"the {self.MAX_BLOCKS} a blob can hold.",
                                 "Stage larger blocks.")
        with self.store._errors(f"committing '{self.name}'"):
            self.blob.commit_block_list([BlobBlock(block_id=b) for b in block_ids],
                                        metadata=metadata)


def _renew_lease(lease, stop: threading.Event) -> None:
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            lease.renew()
        except Exception:  # noqa: BLE001 - a transient failure; the next renewal may pass
            pass


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
