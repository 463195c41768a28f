"""The worker pool, with stand-in processes: a socket pair per worker (the test plays the
scoring process at the other end), a pipe as the exit sentinel, and a clock the test moves."""
from __future__ import annotations

import os
from multiprocessing import Pipe

import pytest

from deployer.engine.messages import Done, Exited, Failed, LoadFailed, Ready, Rows, Task, TimedOut
from deployer.engine.pool import BUSY, DEAD, IDLE, STARTING, PoolError, WorkerPool


class StandIn:
    """A process as the pool sees it. `exit(code)` makes its sentinel readable, as a real
    process's is once it has exited; it obeys a `None` task when joined."""

    def __init__(self, pid: int, child):
        self.pid, self.child = pid, child
        self.sentinel, self._write_end = os.pipe()
        self.exitcode = None
        self.killed = self.closed = False

    def is_alive(self) -> bool:
        return self.exitcode is None

    def exit(self, code: int) -> None:
        if self.exitcode is None:
            self.exitcode = code
            os.close(self._write_end)

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)

    def join(self, timeout=None) -> None:
        if None in self.received():
            self.exit(0)

    def close(self) -> None:
        os.close(self.sentinel)
        self.closed = True

    def received(self) -> list:
        """What the pool has sent it (read once)."""
        self._seen = getattr(self, "_seen", [])
        try:
            while not self.child.closed and self.child.poll():
                self._seen.append(self.child.recv())
        except EOFError:  # the pool has closed its end
            pass
        return list(self._seen)

    def say(self, message) -> None:
        self.child.send(message)


class Starter:
    def __init__(self):
        self.started: list[StandIn] = []

    def __call__(self, worker):
        parent, child = Pipe()
        process = StandIn(1000 + len(self.started), child)
        self.started.append(process)
        return process, parent

    def cleanup(self) -> None:
        for process in self.started:
            process.exit(0)
            if not process.closed:
                process.close()
            process.child.close()


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def starter():
    starter = Starter()
    yield starter
    starter.cleanup()


def make_pool(starter, size=2, concurrency=1, timeout=10.0, on_started=None):
    clock = Clock()
    pool = WorkerPool(size, concurrency, starter, timeout, on_started=on_started, clock=clock)
    pool.start()
    return pool, clock


def task(index, attempt=1, piece=0):
    return Task(index, attempt, piece, [f"f{index}.csv"], f"part{index}.{attempt}.{piece}")


def done(t: Task, rows=1):
    return Done(t.index, t.attempt, t.piece, t.part_path, rows, {"f.csv": rows}, {"x": rows})


def ready_all(pool, starter):
    for process in starter.started[-len(pool.workers):]:
        process.say(Ready(process.pid))
    assert pool.poll(0) == []
    assert [w.state for w in pool.workers] == [IDLE] * len(pool.workers)


def test_it_starts_one_process_per_worker_numbered_by_instance_and_says_which(starter):
    seen = []
    pool, _ = make_pool(starter, size=4, concurrency=2, on_started=seen.append)
    assert [(w.node, w.process_no) for w in pool.workers] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [w.process for w in pool.workers] == starter.started
    assert seen[-1] == [1000, 1001, 1002, 1003] and len(seen) == 4
    assert all(w.state == STARTING for w in pool.workers)


def test_a_task_goes_to_one_ready_worker_and_is_taken_only_when_a_worker_is_free(starter):
    pool, _ = make_pool(starter, size=3)
    tasks = iter([task(0), task(1), task(2), task(3)])
    pool.dispatch(tasks)  # nobody is ready: nothing taken
    starter.started[0].say(Ready(1000))
    starter.started[2].say(Ready(1002))
    assert pool.poll(0) == []
    pool.dispatch(tasks)
    pool.dispatch(tasks)  # both busy now: nothing more is sent
    assert [p.received() for p in starter.started] == [[task(0)], [], [task(1)]]
    assert [w.state for w in pool.workers] == [BUSY, STARTING, BUSY]
    assert next(tasks) == task(2)  # left for later, not lost


def test_an_answer_frees_its_worker_for_the_next_task_and_reaches_the_runner(starter):
    pool, _ = make_pool(starter, size=2)
    ready_all(pool, starter)
    pool.dispatch(iter([task(0), task(1)]))
    failed = Failed(1, 1, 0, "part1.1.0", "f1.csv", "bad row")
    starter.started[0].say(done(task(0)))
    starter.started[1].say(failed)
    assert pool.poll(0) == [done(task(0)), failed]
    pool.dispatch(iter([task(2), task(3)]))
    assert [p.received() for p in starter.started] == [[task(0), task(2)], [task(1), task(3)]]


def test_rows_reported_are_in_progress_until_their_task_ends(starter):
    pool, _ = make_pool(starter, size=2)
    ready_all(pool, starter)
    pool.dispatch(iter([task(0), task(1)]))
    starter.started[0].say(Rows(5))
    starter.started[0].say(Rows(2))
    starter.started[1].say(Rows(4))
    for _ in range(3):
        assert pool.poll(0) == []  # one message per worker and poll
    assert pool.rows_in_progress == 11
    starter.started[0].say(done(task(0), rows=7))
    pool.poll(0)
    assert pool.rows_in_progress == 4


def test_a_worker_past_the_timeout_is_killed_replaced_and_its_task_not_sent_again(starter):
    pool, clock = make_pool(starter, size=2, concurrency=2, timeout=3.0)
    ready_all(pool, starter)
    pool.dispatch(iter([task(0), task(1)]))
    clock.now += 2.0
    starter.started[1].say(done(task(1)))
    assert pool.poll(0) == [done(task(1))]  # within its time: left alone
    clock.now += 1.5
    assert pool.poll(0) == [TimedOut(task(0), 3.0, node=0, process_no=0)]
    old, new = starter.started[0], starter.started[2]
    assert old.killed and old.closed
    assert pool.workers[0].process is new and pool.workers[0].state == STARTING
    pool.dispatch(iter([task(5)]))  # to the idle worker: the new process is not ready
    new.say(Ready(new.pid))
    pool.poll(0)
    pool.dispatch(iter([task(0, attempt=2)]))
    assert old.received() == [task(0)]
    assert new.received() == [task(0, attempt=2)]  # the retry is the runner's to send
    assert starter.started[1].received() == [task(1), task(5)]


def test_a_worker_that_dies_is_replaced_and_its_task_reported_lost(starter):
    pool, _ = make_pool(starter, size=2)
    ready_all(pool, starter)
    pool.dispatch(iter([task(0), task(1)]))
    starter.started[1].exit(137)
    assert pool.poll(0) == [Exited(task(1), 137)]
    assert len(starter.started) == 3 and starter.started[1].closed
    assert [w.process for w in pool.workers] == [starter.started[0], starter.started[2]]
    assert [w.state for w in pool.workers] == [BUSY, STARTING]
    assert starter.started[2].received() == []


def test_a_worker_that_closes_its_socket_counts_as_dead(starter):
    pool, _ = make_pool(starter, size=1)
    ready_all(pool, starter)
    starter.started[0].child.close()
    assert pool.poll(0) == [Exited(None, None)]
    assert pool.workers[0].process is starter.started[1]


def test_it_gives_up_when_a_worker_dies_while_loading_three_times(starter):
    pool, _ = make_pool(starter, size=1)
    for attempt in range(2):
        starter.started[-1].exit(1)
        assert pool.poll(0) == [Exited(None, 1)]
    starter.started[-1].exit(1)
    with pytest.raises(PoolError, match="exited with code 1 while loading the model, 3 times"):
        pool.poll(0)
    assert len(starter.started) == 3


def test_a_load_failure_reaches_the_runner(starter):
    pool, _ = make_pool(starter, size=1)
    starter.started[0].say(LoadFailed("ValueError: no model"))
    assert pool.poll(0) == [LoadFailed("ValueError: no model")]
    pool.dispatch(iter([task(0)]))
    assert starter.started[0].received() == []


def test_stop_asks_each_process_to_finish_and_kills_one_that_does_not(starter):
    pool, _ = make_pool(starter, size=2)
    ready_all(pool, starter)
    stubborn = starter.started[1]
    stubborn.join = lambda timeout=None: None  # ignores the request
    pool.stop()
    assert [p.received()[-1] for p in starter.started] == [None, None]
    assert not starter.started[0].killed and starter.started[0].exitcode == 0
    assert stubborn.killed
    assert all(w.state == DEAD and w.process is None and w.conn is None for w in pool.workers)
    assert all(p.closed for p in starter.started)
    with pytest.raises(PoolError, match="Every scoring process has exited"):
        pool.poll(0)


def test_stop_with_kill_sends_nothing(starter):
    pool, _ = make_pool(starter, size=2)
    pool.stop(kill=True)
    assert all(p.killed and p.received() == [] for p in starter.started)
