"""Streaming a job's output to the datastore (Azurite) as blocks while it is scored:
nothing visible before the commit, output order kept, failed attempts left out."""
from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from deployer.engine.publish import OutputPublisher, PublishError

BLOB = "batch-jobs/j/named-outputs/score/predictions.csv"


def part(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def committed_blocks(datastore, name: str) -> list:
    committed, _ = datastore.client.get_blob_client(name).get_block_list("committed")
    return committed


def open_parts(folder: Path) -> list[str]:
    """This process's open files under folder (a deleted part still shows its path)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


class CountingUpload:
    """The real block upload, counting the blocks staged so a test can wait for them."""

    def __init__(self, upload):
        self.upload, self.staged = upload, 0

    def stage(self, data: bytes) -> str:
        block_id = self.upload.stage(data)
        self.staged += 1
        return block_id

    def commit(self, block_ids) -> None:
        self.upload.commit(block_ids)

    def wait_for(self, blocks: int) -> None:
        deadline = time.monotonic() + 30
        while self.staged < blocks and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.staged == blocks


def test_parts_become_one_blob_in_output_order_only_when_finished(datastore, tmp_path):
    upload = CountingUpload(datastore.block_upload(BLOB))
    publisher = OutputPublisher(upload, block_bytes=64, early_part_bytes=100)
    big_a = part(tmp_path, "a", b"A" * 150)  # staged as soon as written: 64 + 64 + 22
    small_b = part(tmp_path, "b", b"b" * 40)  # gathered once its mini-batch succeeded
    small_c = part(tmp_path, "c", b"c" * 40)
    big_d = part(tmp_path, "d", b"D" * 120)
    # Pieces finish out of order; mini-batches succeed in order.
    for path in (big_d, small_b, big_a, small_c):
        publisher.part_written(path)
    big_a.unlink()  # opened when staged: the runner may delete a part at any time after
    big_d.unlink()
    publisher.mini_batch_succeeded([str(big_a), str(small_b)])
    assert not datastore.exists(BLOB)
    publisher.mini_batch_succeeded([str(small_c), str(big_d)])
    upload.wait_for(6)  # every block is staged, the blob is still not there
    assert not datastore.exists(BLOB)

    size = publisher.finish()

    expected = b"A" * 150 + b"b" * 40 + b"c" * 40 + b"D" * 120
    assert datastore.read_bytes(BLOB) == expected and size == len(expected)
    sizes = [block.size for block in committed_blocks(datastore, BLOB)]
    assert sizes == [64, 64, 22, 80, 64, 56]  # b+c gathered into one block


def test_blocks_of_a_failed_attempt_are_not_committed(datastore, tmp_path):
    publisher = OutputPublisher(datastore.block_upload(BLOB), block_bytes=64, early_part_bytes=10)
    failed = part(tmp_path, "attempt1", b"X" * 100)
    retried = part(tmp_path, "attempt2", b"Y" * 30)
    publisher.part_written(failed)  # staged, then its mini-batch attempt fails
    failed.unlink()
    publisher.part_written(retried)
    publisher.mini_batch_succeeded([str(retried)])
    publisher.finish()
    assert datastore.read_bytes(BLOB) == b"Y" * 30
    assert len(committed_blocks(datastore, BLOB)) == 1


def test_an_empty_output_is_an_empty_blob(datastore):
    publisher = OutputPublisher(datastore.block_upload(BLOB))
    assert publisher.finish() == 0
    assert datastore.read_bytes(BLOB) == b""


def test_abandoning_leaves_no_blob(datastore, tmp_path):
    publisher = OutputPublisher(datastore.block_upload(BLOB), early_part_bytes=1)
    publisher.part_written(part(tmp_path, "a", b"a" * 10))
    publisher.mini_batch_succeeded([str(part(tmp_path, "b", b"b" * 10))])
    publisher.abandon()
    assert not datastore.exists(BLOB)
    assert open_parts(tmp_path) == []


class FailingUpload:
    def __init__(self, fail_on: int):
        self.fail_on, self.calls = fail_on, 0

    def stage(self, data: bytes) -> str:
        self.calls += 1
        if self.calls == self.fail_on:
            raise OSError("connection reset")
        return f"b{self.calls}"

    def commit(self, block_ids) -> None:
        raise AssertionError("a failed upload is never committed")


def test_a_storage_failure_is_reported_at_finish_and_nothing_is_committed(tmp_path):
    publisher = OutputPublisher(FailingUpload(fail_on=1), block_bytes=8, early_part_bytes=1)
    first = part(tmp_path, "a", b"a" * 20)
    second = part(tmp_path, "b", b"b" * 20)
    publisher.part_written(first)
    publisher.part_written(second)  # queued after the failure: drained, its file closed
    publisher.mini_batch_succeeded([str(first), str(second), str(part(tmp_path, "c", b"c"))])
    with pytest.raises(PublishError, match="connection reset"):
        publisher.finish()
    assert open_parts(tmp_path) == []


def test_a_part_that_cannot_be_opened_is_reported_at_finish(datastore, tmp_path, monkeypatch):
    publisher = OutputPublisher(datastore.block_upload(BLOB), early_part_bytes=1 << 20)
    first = part(tmp_path, "a", b"a" * 10)
    second = part(tmp_path, "b", b"b" * 10)
    real_open = os.open

    def open_or_run_out(path, *args, **kwargs):
        if str(path) == str(second):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_or_run_out)
    publisher.mini_batch_succeeded([str(first), str(second)])  # the runner goes on
    monkeypatch.undo()
    with pytest.raises(PublishError, match="Too many open files"):
        publisher.finish()
    assert not datastore.exists(BLOB)
    assert open_parts(tmp_path) == []


class BlockingUpload:
    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def stage(self, data: bytes) -> str:
        self.entered.set()
        assert self.release.wait(30)
        return "b"

    def commit(self, block_ids) -> None:
        pass


def test_a_process_is_forked_between_two_uploads_and_told_which_parts_to_close(tmp_path):
    upload = BlockingUpload()
    publisher = OutputPublisher(upload, early_part_bytes=1)
    publisher.part_written(part(tmp_path, "a", b"a" * 10))  # the thread starts staging it
    assert upload.entered.wait(30)
    publisher.part_written(part(tmp_path, "b", b"b" * 10))  # queued, open for the thread
    entered = threading.Event()
    held: list = []

    def fork_point():
        with publisher.quiescent() as fds:
            # Resolve the numbers while they are held: once released, a number may be
            # reused by any other file of this process.
            held.extend(os.readlink(f"/proc/self/fd/{fd}") for fd in fds)
            entered.set()

    forker = threading.Thread(target=fork_point)
    forker.start()
    assert not entered.wait(0.3)  # not while a block is half-way up
    upload.release.set()
    forker.join(30)
    assert entered.is_set()
    # Part a's file was closed after staging it; part b's is still open for the thread,
    # unless the thread had already staged it too.
    assert all(target == str(tmp_path / "b") for target in held), held
    publisher.finish()


def test_a_part_that_vanished_before_its_mini_batch_succeeded_is_an_error(datastore, tmp_path):
    publisher = OutputPublisher(datastore.block_upload(BLOB), early_part_bytes=1 << 20)
    small = part(tmp_path, "a", b"a" * 10)
    publisher.part_written(small)  # small: not staged early
    small.unlink()
    publisher.mini_batch_succeeded([str(small)])
    with pytest.raises(PublishError, match="missing"):
        publisher.finish()
    assert not datastore.exists(BLOB)


# ---------------------------------------------------------------------- the job runner's side


def finished_job(tmp_path: Path, output: bytes) -> Path:
    from deployer.engine.records import write_record

    job_dir = tmp_path / "batchjob-1"
    (job_dir / "work").mkdir(parents=True)
    (job_dir / "logs" / "user").mkdir(parents=True)
    write_record(job_dir, {"name": "batchjob-1", "status": "Finalizing", "settings": {}})
    (job_dir / "work" / "predictions.csv.partial").write_bytes(output)  # as the runner writes it
    return job_dir


class BrokenPublisher:
    def __init__(self, size: int | None = None):
        self.size = size

    def finish(self) -> int:
        if self.size is None:
            raise PublishError("connection reset")
        return self.size


@pytest.mark.parametrize("publisher, logged", [
    (BrokenPublisher(), "streaming the output to the datastore failed (connection reset)"),
    (BrokenPublisher(size=3), "the streamed output has 3 bytes, the output file 33; uploading"),
])
def test_the_runner_uploads_the_whole_output_when_streaming_fell_short(
        datastore, tmp_path, publisher, logged):
    from deployer.engine.job import JobRunner

    output = b"0,setosa,a.csv\n1,virginica,a.csv\n"
    job_dir = finished_job(tmp_path, output)
    runner = JobRunner(job_dir, datastore_factory=lambda: datastore)
    runner.publisher = publisher
    runner._publish(complete=True)
    assert datastore.read_bytes(runner.record["output_datastore_path"]) == output
    assert runner.record["output_bytes"] == len(output)
    assert logged in (job_dir / "logs" / "user" / "error.txt").read_text()
    assert datastore.exists("batch-jobs/batchjob-1/logs/job_progress_overview.txt")


def test_the_whole_upload_replaces_blocks_the_stream_left_staged(datastore, tmp_path):
    from deployer.engine.job import JobRunner

    output = b"0,setosa,a.csv\n" * 3
    job_dir = finished_job(tmp_path, output)
    runner = JobRunner(job_dir, datastore_factory=lambda: datastore)
    publisher = OutputPublisher(datastore.block_upload(runner._output_blob()), early_part_bytes=1)
    staged = part(tmp_path, "p1", b"stale bytes of a part\n")
    publisher.part_written(staged)  # staged as a block, then its part goes missing
    publisher.mini_batch_succeeded([str(tmp_path / "p0"), str(staged)])
    runner.publisher = publisher
    runner._publish(complete=True)
    assert datastore.read_bytes(runner.record["output_datastore_path"]) == output
    assert "part p0 is missing" in (job_dir / "logs" / "user" / "error.txt").read_text()
    assert [b.size for b in committed_blocks(datastore, runner._output_blob())] == [len(output)]


def test_the_output_of_a_job_that_did_not_complete_is_never_committed(datastore, tmp_path):
    from deployer.engine.job import JobRunner

    job_dir = finished_job(tmp_path, b"0,setosa,a.csv\n")
    runner = JobRunner(job_dir, datastore_factory=lambda: datastore)
    publisher = OutputPublisher(datastore.block_upload(runner._output_blob()), early_part_bytes=1)
    done = part(tmp_path, "p0", b"0,setosa,a.csv\n")
    publisher.part_written(done)
    publisher.mini_batch_succeeded([str(done)])  # staged: a committed blob would show it
    runner.publisher = publisher
    runner._publish(complete=False)  # canceled or failed
    assert not datastore.exists(runner._output_blob())
    assert "output_datastore_path" not in runner.record
    assert not (job_dir / "outputs" / "predictions.csv").exists()
    assert datastore.exists("batch-jobs/batchjob-1/logs/job_progress_overview.txt")
