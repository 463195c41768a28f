"""Streaming a job's output to the datastore (Azurite) as blocks while it is scored:
nothing visible before the commit, output order kept, failed attempts left out."""
from __future__ import annotations

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


def test_parts_become_one_blob_in_output_order_only_when_finished(datastore, tmp_path):
    publisher = OutputPublisher(datastore.block_upload(BLOB), block_bytes=64, early_part_bytes=100)
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
    publisher.abandon()
    assert not datastore.exists(BLOB)


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
    publisher.mini_batch_succeeded([str(first), str(second)])
    with pytest.raises(PublishError, match="connection reset"):
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
    (job_dir / "outputs").mkdir(parents=True)
    (job_dir / "logs" / "user").mkdir(parents=True)
    write_record(job_dir, {"name": "batchjob-1", "status": "Finalizing", "settings": {}})
    (job_dir / "outputs" / "predictions.csv").write_bytes(output)
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
    runner._publish()
    assert datastore.read_bytes(runner.record["output_datastore_path"]) == output
    assert runner.record["output_bytes"] == len(output)
    assert logged in (job_dir / "logs" / "user" / "error.txt").read_text()
    assert datastore.exists("batch-jobs/batchjob-1/logs/job_progress_overview.txt")
