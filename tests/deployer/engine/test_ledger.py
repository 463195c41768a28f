"""The ledger of mini-batches and attempts, without processes or files."""
from __future__ import annotations

from deployer.engine.ledger import FAILED, IGNORED, RETRY, FailedForGood, Ledger, Succeeded
from deployer.engine.messages import Done


def done(index, attempt, piece, rows=1, name="a.csv"):
    return Done(index, attempt, piece, f"p{index}.{attempt}.{piece}", rows, {name: rows}, {"x": rows})


def drain(ledger):
    tasks = []
    while (task := ledger.next_task()) is not None:
        tasks.append(task)
    return tasks


def test_every_piece_of_every_mini_batch_runs_once_in_order():
    ledger = Ledger([["a"], ["b", "c"]], max_retries=0)
    assert drain(ledger) == [(0, 1, 0), (1, 1, 0), (1, 1, 1)]
    assert not ledger.complete


def test_a_mini_batch_succeeds_when_all_its_pieces_are_done_with_parts_in_piece_order():
    ledger = Ledger([["a", "b"]], max_retries=0)
    drain(ledger)
    assert ledger.piece_done(done(0, 1, 1, rows=2)) is None
    result = ledger.piece_done(done(0, 1, 0, rows=3))
    assert result == Succeeded(["p0.1.0", "p0.1.1"], 5, [({"a.csv": 3}, {"x": 3}),
                                                         ({"a.csv": 2}, {"x": 2})])
    assert ledger.complete


def test_successes_are_handed_out_in_mini_batch_order_only():
    ledger = Ledger([["a"], ["b"], ["c"]], max_retries=0)
    drain(ledger)
    ledger.piece_done(done(1, 1, 0))
    assert list(ledger.ready_to_write()) == []  # mini-batch 0 still runs
    ledger.piece_done(done(0, 1, 0))
    assert [r.parts for r in ledger.ready_to_write()] == [["p0.1.0"], ["p1.1.0"]]
    assert list(ledger.ready_to_write()) == []  # handed out once


def test_a_failed_attempt_is_retried_whole_and_its_finished_parts_dropped():
    ledger = Ledger([["a", "b"]], max_retries=1)
    drain(ledger)
    ledger.piece_done(done(0, 1, 0))
    assert ledger.attempt_failed(0, 1, "b.csv", "bad") == (RETRY, ["p0.1.0"])
    assert ledger.is_late(0, 1)  # the other piece's answer comes too late
    assert ledger.attempt_failed(0, 1, "", "again") == (IGNORED, [])
    assert drain(ledger) == [(0, 2, 0), (0, 2, 1)]


def test_a_mini_batch_that_fails_beyond_its_retries_settles_as_failed():
    ledger = Ledger([["a"], ["b"]], max_retries=1)
    drain(ledger)
    assert ledger.attempt_failed(0, 1, "a.csv", "bad")[0] == RETRY
    assert ledger.attempt_failed(0, 2, "a.csv", "bad")[0] == FAILED
    ledger.piece_done(done(1, 1, 0))
    written = list(ledger.ready_to_write())
    assert written[0] == FailedForGood("a.csv", "bad") and isinstance(written[1], Succeeded)
    assert ledger.complete
    assert drain(ledger) == []  # the retry still queued is skipped: its mini-batch settled
