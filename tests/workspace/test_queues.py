"""A sweep's queues on Azurite and on Azurite answering as Azure Storage does
(tests/support/azure_storage_proxy.py)."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from tests.conftest import isolated_settings
from workspace.queues import SweepQueues, queue_service


@pytest.fixture(params=["azurite", "as-azure"])
def service(request):
    """The queue endpoint: Azurite itself, or Azurite answering as Azure does."""
    return request.getfixturevalue("azurite_queue" if request.param == "azurite"
                                   else "azure_queue")


@pytest.fixture
def queues(service, azurite, tmp_path):
    settings = replace(isolated_settings(azurite, tmp_path),
                       azurite_queue_port=str(service.port))
    queues = SweepQueues(queue_service(settings), f"sw-{uuid.uuid4().hex[:12]}")
    queues.create()
    yield queues
    queues.delete()


def receive_again(queues: SweepQueues, kind: str):
    """The drain that receives the messages once the first receipt's visibility ended."""
    while True:
        again = list(queues.drain(kind, visibility_timeout=30))
        if again:
            return again


def test_an_ack_with_a_receipt_gone_stale_is_not_an_error(queues, service):
    """A collector whose message became visible again and was received by a later drain
    holds a stale pop receipt: Azure answers its delete 404 MessageNotFound, Azurite 400
    PopReceiptMismatch. The message is the later receipt's to delete (the ledger records a
    line once), so the stale ack goes quietly, and the later one deletes it."""
    queues.send("results", {"line": 1})
    [(body, stale_ack)] = list(queues.drain("results", visibility_timeout=1))
    [(again, ack)] = receive_again(queues, "results")
    assert body == again == {"line": 1}
    stale_ack()
    ack()
    assert list(queues.drain("results")) == []
    assert queues.counts().results == 0
    if hasattr(service, "rewritten"):  # the service did answer as Azure does
        assert [code for _, _, code in service.rewritten
                if queues.clients["results"].queue_name in _] == ["MessageNotFound"]
