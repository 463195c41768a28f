"""A datastore lease lock held by a thread until released: another holder, as a
concurrent `register-and-deploy` or sweep collector would be."""
from __future__ import annotations

import threading


class HeldLock:
    """`HeldLock(store, name, purpose)` returns once the lock is held (or failing to take it
    failed); `release()` lets it go and reports that failure, if any."""

    def __init__(self, store, name: str, purpose: str):
        self.held, self.done = threading.Event(), threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._hold, args=(store, name, purpose))
        self.thread.start()
        assert self.held.wait(30), "the lock was neither taken nor refused"
        assert self.error is None, self.error

    def _hold(self, store, name: str, purpose: str) -> None:
        try:
            with store.lease_lock(name, purpose=purpose):
                self.held.set()
                self.done.wait(120)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self.held.set()

    def release(self) -> None:
        self.done.set()
        self.thread.join(60)
        assert self.error is None, self.error

    def __enter__(self) -> "HeldLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def break_lock(store, name: str) -> None:
    """End the lease of a holder that was killed as it would end LEASE_SECONDS later: broken
    with no break period (Lease Blob, action=break, x-ms-lease-break-period: 0), so that the
    next holder of the lock does not wait it out."""
    from azure.storage.blob import BlobLeaseClient

    BlobLeaseClient(store.client.get_blob_client(name)).break_lease(lease_break_period=0)
