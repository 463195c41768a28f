"""The datastore's blob-lease mutex (`Datastore.lease_lock`), on Azurite and on Azurite
answering as Azure Storage does (tests/support/azure_storage_proxy.py): a second holder
waits for the first, whichever answer the service gives, and is told who holds the lock."""
from __future__ import annotations

import os
import queue
import socket
import threading
from dataclasses import replace

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from tests.conftest import container_datastore, isolated_settings
from tests.support.held_lock import HeldLock
from workspace.datastore import Datastore, LockHolder
from workspace.errors import DatastoreError

LOCK = "locks/register-and-deploy/ep.lock"


@pytest.fixture(params=["azurite", "as-azure"])
def service(request):
    """The storage endpoint: Azurite itself, or Azurite answering as Azure does."""
    return request.getfixturevalue("azurite" if request.param == "azurite" else "azure_storage")


@pytest.fixture
def store(service, tmp_path):
    return container_datastore(isolated_settings(service, tmp_path))


@pytest.fixture
def hold(store):
    """hold(purpose): the lock held by a thread until its `release()` (or the test's end)."""
    holders: list[HeldLock] = []

    def start(purpose: str) -> HeldLock:
        holders.append(HeldLock(store, LOCK, purpose))
        return holders[-1]

    yield start
    for holder in holders:
        holder.done.set()
        holder.thread.join(60)


def test_the_proxy_answers_a_put_on_a_leased_blob_as_azure_does(azurite, azure_storage,
                                                                 tmp_path):
    """The difference itself (Azure/Azurite#2637): Azurite 3.37 says 409 BlobAlreadyExists,
    Azure 412 LeaseIdMissing (the SDK's plain HttpResponseError)."""
    settings = isolated_settings(azurite, tmp_path)
    store = container_datastore(settings)
    blob = store.client.get_blob_client("leased")
    blob.upload_blob(b"")
    blob.acquire_lease(lease_duration=15)
    with pytest.raises(ResourceExistsError):
        blob.upload_blob(b"", overwrite=False)
    as_azure = Datastore.from_settings(replace(settings, azurite_port=str(azure_storage.port)))
    with pytest.raises(HttpResponseError) as err:
        as_azure.client.get_blob_client("leased").upload_blob(b"", overwrite=False)
    assert not isinstance(err.value, ResourceExistsError)
    assert (err.value.status_code, err.value.error_code) == (412, "LeaseIdMissing")


def test_a_second_holder_waits_for_the_first_then_goes_on(store, service, hold):
    first = hold("register-and-deploy of endpoint 'ep'")
    waiting = threading.Event()
    outcome: queue.Queue = queue.Queue()

    def second():
        try:
            with store.lease_lock(LOCK, purpose="register-and-deploy of endpoint 'ep'",
                                  wait_seconds=60, progress=lambda message: waiting.set()):
                outcome.put("held")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome.put(exc)

    thread = threading.Thread(target=second)
    thread.start()
    assert waiting.wait(30) or not outcome.empty(), "the second holder neither waited nor ended"
    assert outcome.empty(), f"the second holder did not wait: {outcome.get()}"
    first.release()
    thread.join(60)
    assert outcome.get(timeout=1) == "held"
    if hasattr(service, "rewritten"):  # the service did answer as Azure does
        assert any(path.endswith(LOCK) and code == "LeaseIdMissing"
                   for _, path, code in service.rewritten), service.rewritten


def test_the_wait_message_and_the_error_name_the_current_holder(store, hold):
    hold("register-and-deploy of endpoint 'ep'")
    messages: list[str] = []
    with pytest.raises(DatastoreError) as err:
        with store.lease_lock(LOCK, purpose="rollback of endpoint 'ep'", wait_seconds=1.5,
                              progress=messages.append):
            pass
    who = f"register-and-deploy of endpoint 'ep' (process {os.getpid()} on {socket.gethostname()}"
    assert len(messages) == 1 and who in messages[0], messages
    assert "rollback" not in messages[0]  # the waiter is not the holder
    assert who in str(err.value) and LOCK in str(err.value)
    assert "expires by itself" in str(err.value)


def test_each_holder_is_named_as_itself(store, hold):
    """The holder's name goes with its lease: a waiter is told of the holder of the moment,
    not of one before it."""
    hold("sweep collector").release()
    hold("register-and-deploy of endpoint 'ep'")
    messages: list[str] = []
    with pytest.raises(DatastoreError):
        with store.lease_lock(LOCK, purpose="rollback of endpoint 'ep'", wait_seconds=1.5,
                              progress=messages.append):
            pass
    assert len(messages) == 1, messages
    assert "held by register-and-deploy of endpoint 'ep' (process" in messages[0], messages
    assert "sweep collector" not in messages[0]


def test_a_holder_name_outside_ascii_survives_the_metadata():
    """Metadata values travel as HTTP header values: the purpose is percent-encoded."""
    holder = LockHolder("rollback of endpoint 'é'\n", "12", "host", "2026-01-01 00:00:00 UTC")
    metadata = holder.metadata()
    assert all(value.isascii() and "\n" not in value for value in metadata.values())
    assert LockHolder.from_metadata(metadata) == holder
