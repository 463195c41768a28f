"""The scoring processes of a job as a pool of workers: it starts them, hands each idle
one a task, stops a process that dies or runs past the timeout and starts another in its
place, and stops them all at the end.

The pool knows processes, their sockets and the clock; what a task is, whether it is
retried and what its outcome means belong to the ledger and the runner. It hears a
worker's messages (`messages`) and passes on those the runner acts on: `Done`, `Failed`
and `LoadFailed` as received, `Exited` and `TimedOut` for a process it has replaced.
How a process is started is given to it (`start_process`), so it runs as well with
stand-ins that are not processes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Callable, Iterator

from deployer.engine.messages import Done, Exited, Failed, LoadFailed, Ready, Rows, Task, TimedOut

STARTING, IDLE, BUSY, LOAD_FAILED, DEAD = "starting", "idle", "busy", "load_failed", "dead"
MAX_FAILED_STARTS = 3  # processes that die while loading the model before the pool gives up
GRACE_SECONDS = 5  # a process asked to stop is killed after this


class PoolError(Exception):
    """The pool cannot go on (its processes keep dying before they are ready)."""


@dataclass
class Worker:
    number: int
    node: int  # instance, as Azure ML numbers them in the log layout
    process_no: int  # process on that instance
    process: object = None  # start, is_alive, join, kill, close, exitcode, pid, sentinel
    conn: object = None  # the runner's end of the process's socket
    state: str = DEAD
    task: Task | None = None
    started: float = 0.0  # when its task was sent (clock of the pool)
    failed_starts: int = 0
    reported: int = 0  # rows of its running task scored so far (progress only)


class WorkerPool:
    def __init__(self, size: int, concurrency: int, start_process: Callable, timeout: float,
                 on_started: Callable[[list[int]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        """`start_process(worker)` starts a process for that worker and returns it with the
        runner's end of its socket; `on_started(pids)` hears of every start."""
        concurrency = max(1, int(concurrency))
        self.workers = [Worker(k, k // concurrency, k % concurrency) for k in range(size)]
        self.timeout = timeout
        self._start_process, self._on_started, self._clock = start_process, on_started, clock

    # ------------------------------------------------------------------ start and stop

    def start(self) -> None:
        for worker in self.workers:
            self._start(worker)

    def stop(self, kill: bool = False) -> None:
        """Stop every process: asked to finish (a `None` task), or killed."""
        for worker in self.workers:
            self._stop(worker, kill)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None and w.process.pid]

    @property
    def rows_in_progress(self) -> int:
        return sum(worker.reported for worker in self.workers)

    def _start(self, worker: Worker) -> None:
        worker.process, worker.conn = self._start_process(worker)
        worker.state, worker.task, worker.reported = STARTING, None, 0
        if self._on_started is not None:
            self._on_started(self.pids())

    def _stop(self, worker: Worker, kill: bool = False) -> None:
        process = worker.process
        if process is not None and process.is_alive():
            if kill:
                process.kill()
            else:
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
            process.join(None if kill else GRACE_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        if worker.conn is not None:
            worker.conn.close()
        if process is not None:
            process.close()
        worker.process, worker.conn, worker.state, worker.reported = None, None, DEAD, 0

    # ------------------------------------------------------------------ tasks

    def dispatch(self, tasks: Iterator[Task]) -> None:
        """Send the next of `tasks` to each idle worker in turn; a task is taken from
        `tasks` only when there is a worker for it."""
        for worker in self.workers:
            if worker.state != IDLE:
                continue
            task = next(tasks, None)
            if task is None:
                return
            worker.conn.send(task)
            worker.state, worker.task, worker.started = BUSY, task, self._clock()

    def poll(self, longest: float = 0.5) -> list:
        """Wait for the workers (at most `longest` seconds, less when a task's timeout comes
        sooner), replace the processes that died or ran out of time, and return what the
        runner is to hear, in worker order."""
        live = [worker for worker in self.workers if worker.state != DEAD]
        if not live:
            raise PoolError("Every scoring process has exited; see logs/user/error/.")
        now = self._clock()
        deadline = min((w.started + self.timeout for w in live if w.state == BUSY),
                       default=now + longest)
        waitables = [w.conn for w in live] + [w.process.sentinel for w in live]
        ready = set(wait_any(waitables, timeout=max(0.01, min(longest, deadline - now))))
        heard = []
        for worker in live:
            heard.extend(self._collect(worker, ready))
        for worker in self.workers:
            if worker.state == BUSY and self._clock() - worker.started > self.timeout:
                heard.append(self._time_out(worker))
        return heard

    def _collect(self, worker: Worker, ready: set) -> list:
        if worker.conn in ready:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                message = None  # the process closed its end: it has exited
            if message is not None:
                return self._received(worker, message)
        if worker.process.sentinel in ready or worker.conn in ready:
            return [self._exited(worker)]
        return []

    def _received(self, worker: Worker, message) -> list:
        if isinstance(message, Ready):
            worker.state = IDLE
            return []
        if isinstance(message, Rows):
            worker.reported += message.count
            return []
        if isinstance(message, LoadFailed):
            worker.state = LOAD_FAILED
        elif isinstance(message, (Done, Failed)):
            worker.state, worker.task, worker.reported = IDLE, None, 0
        return [message]

    def _exited(self, worker: Worker) -> Exited:
        """A process that exited (crash, out of memory, killed from outside): replaced,
        unless it is the third in a row of this worker to die while loading the model."""
        code = worker.process.exitcode
        task, loading = worker.task, worker.state == STARTING
        self._stop(worker, kill=True)
        if loading:
            worker.failed_starts += 1
            if worker.failed_starts >= MAX_FAILED_STARTS:
                raise PoolError(
                    f"The scoring process exited with code {code} while loading the model, "
                    f"{MAX_FAILED_STARTS} times; see logs/user/stdout/ and logs/user/error/.")
        self._start(worker)
        return Exited(task, code)

    def _time_out(self, worker: Worker) -> TimedOut:
        timed_out = TimedOut(worker.task, self.timeout, worker.node, worker.process_no)
        self._stop(worker, kill=True)
        self._start(worker)
        return timed_out
