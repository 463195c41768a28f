"""Uploading a job's output to the datastore while the job is still scoring.

The output blob is written as blocks (Put Block) and committed once at the end (Put Block
List), so nothing is visible before the job has finished and no reader ever sees part of
it. A part file of at least `EARLY_PART_BYTES` is staged as soon as its scoring process
has written it, even while other pieces of its mini-batch still run; smaller parts are
gathered into blocks once their mini-batch has succeeded. The commit lists the blocks of
the successful mini-batches in output order: blocks staged for an attempt that failed
later are never committed, and the storage service discards them.

A single thread does the uploads, in the order it is given work; the job runner only
queues work and never waits for storage until `finish`. A scoring process forked while
the thread runs is forked from `quiescent()`: between two uploads, and told which part
files the runner holds open so that it closes its copies.
"""
from __future__ import annotations

import contextlib
import os
import queue
import threading
from pathlib import Path

BLOCK_BYTES = 8 << 20
EARLY_PART_BYTES = 4 << 20


class PublishError(Exception):
    """Staging or committing the output failed; the caller uploads the whole file instead."""


class OutputPublisher:
    def __init__(self, upload, *, block_bytes: int = BLOCK_BYTES,
                 early_part_bytes: int = EARLY_PART_BYTES):
        """upload: a `workspace.datastore.BlockUpload` (stage(bytes) -> block id,
        commit(block ids))."""
        self.upload = upload
        self.block_bytes = block_bytes
        self.early_part_bytes = early_part_bytes
        self._queue: queue.Queue = queue.Queue()
        self._staged: dict[str, list] = {}  # early part -> [(block id, bytes)]
        self._order: list[str] = []  # block ids to commit, in output order
        self._size = 0  # bytes committed
        self._pending = bytearray()  # small parts not yet staged, in output order
        self._error: BaseException | None = None
        self._early: set[str] = set()  # parts queued for early staging (runner side)
        self._fds: set[int] = set()  # part files opened for the thread, not yet closed
        self._busy = threading.Lock()  # held by the thread while it works on an item
        self._thread = threading.Thread(target=self._run, name="publish", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ runner side

    def part_written(self, path: Path) -> None:
        """A scoring process has finished this part file: stage it now if it is large.
        The file is opened here, so the runner may delete it at any time after."""
        try:
            fd = self._open(path)
            if fd is None:
                return
            if os.fstat(fd).st_size < self.early_part_bytes:
                self._close(fd)
                return
        except OSError as exc:
            self._queue.put(("failed", exc))
            return
        self._early.add(str(path))
        self._queue.put(("stage", (str(path), fd)))

    def mini_batch_succeeded(self, paths: list[str]) -> None:
        """The parts of a successful mini-batch, in order: the next bytes of the output."""
        items = []
        try:
            for path in paths:
                early = str(path) in self._early
                fd = None if early else self._open(path)
                items.append((str(path), -1 if fd is None and not early else fd))
        except OSError as exc:  # e.g. too many open files: fall back to the whole upload
            self._queue.put(("failed", exc))
            self._queue.put(("append", items))  # the thread closes what was opened
            return
        self._queue.put(("append", items))

    @contextlib.contextmanager
    def quiescent(self):
        """Hold the thread between two uploads (no lock or request of it is half-way in a
        process forked now); yields the part files open for it, which such a process
        should close."""
        with self._busy:
            yield sorted(self._fds)

    def finish(self) -> int:
        """Stage what is left, commit the blob; returns its size. Raises PublishError."""
        self._queue.put(("finish", None))
        self._thread.join()
        if self._error is not None:
            raise PublishError(str(self._error)) from self._error
        return self._size

    def abandon(self) -> None:
        """Stop without committing (the staged blocks are dropped by the service)."""
        self._queue.put(("abandon", None))
        self._thread.join()

    # ------------------------------------------------------------------ thread side

    def _run(self) -> None:
        while True:
            kind, payload = self._queue.get()
            with self._busy:
                if kind in ("finish", "abandon"):
                    if kind == "finish" and self._error is None:
                        self._guard(self._commit)
                    return
                if kind == "failed":
                    self._error = self._error or payload
                elif self._error is not None:  # keep draining: close what was opened for us
                    self._close_all(kind, payload)
                elif kind == "stage":
                    path, fd = payload
                    self._guard(lambda: self._stage_part(path, fd))
                elif kind == "append":
                    self._guard(lambda: self._append(payload))

    def _guard(self, work) -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self._error = exc

    def _stage_part(self, path: str, fd: int) -> None:
        ids = []
        try:
            for data in _blocks(fd, self.block_bytes):
                ids.append((self.upload.stage(data), len(data)))
        finally:
            self._close(fd)
        self._staged[path] = ids

    def _append(self, items: list) -> None:
        remaining = list(items)
        try:
            while remaining:
                path, fd = remaining.pop(0)
                if fd == -1:
                    raise PublishError(f"part {Path(path).name} is missing")
                if fd is None:  # staged early: its blocks follow what is pending
                    self._flush()
                    if path not in self._staged:
                        raise PublishError(f"part {Path(path).name} was not staged")
                    for block_id, size in self._staged.pop(path):
                        self._order.append(block_id)
                        self._size += size
                    continue
                try:
                    for data in _blocks(fd, self.block_bytes):
                        self._pending += data
                        if len(self._pending) >= self.block_bytes:
                            self._flush()
                finally:
                    self._close(fd)
        finally:
            self._close_all("append", remaining)

    def _flush(self) -> None:
        if self._pending:
            self._order.append(self.upload.stage(bytes(self._pending)))
            self._size += len(self._pending)
            self._pending.clear()

    def _commit(self) -> None:
        self._flush()
        self.upload.commit(self._order)

    # ------------------------------------------------------------------ part files

    def _open(self, path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        self._fds.add(fd)
        return fd

    def _close(self, fd: int) -> None:
        self._fds.discard(fd)
        os.close(fd)

    def _close_all(self, kind: str, payload) -> None:
        if kind == "stage":
            self._close(payload[1])
        elif kind == "append":
            for _, fd in payload:
                if fd is not None and fd >= 0:
                    self._close(fd)


def _blocks(fd: int, size: int):
    offset = 0
    while True:
        data = os.pread(fd, size, offset)
        if not data:
            return
        offset += len(data)
        yield data


