"""The processes of a job: who they are, and scoring processes that die with the runner.

A process is named by its pid and its start time (`workspace.processes.ProcessId`), so
that a pid the system has given to another program since is never taken for one of ours.

Scoring processes are forked by `ForkedProcess` rather than `multiprocessing`: right
after the fork the child asks the kernel for SIGKILL when its parent exits (Linux
`PR_SET_PDEATHSIG`) and closes every descriptor it does not own. Without that, each
process holds its siblings' ends of the runner's sockets, so when the runner is killed
no process ever sees end-of-file and they all wait forever.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback

from workspace.processes import die_with


def close_descriptors_except(keep: set[int]) -> None:
    """Close every open descriptor of this process but `keep` (and 0, 1, 2)."""
    keep = set(keep) | {0, 1, 2}
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024))
    for fd in open_fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, already closed


class ForkedProcess:
    """A child forked from this process that runs `target(*args)` and exits; the parts of
    `multiprocessing.Process` the job runner uses (start, is_alive, join, kill, exitcode,
    sentinel). The child keeps only `keep_fds` and its end of the sentinel pipe."""

    def __init__(self, target, args: tuple = (), keep_fds: tuple = ()):
        self.target, self.args, self.keep_fds = target, args, tuple(keep_fds)
        self.pid: int | None = None
        self.sentinel: int | None = None  # readable once the child has exited
        self.exitcode: int | None = None

    def start(self) -> None:
        parent = os.getpid()
        orphan_guard = die_with(parent)  # prepared here: the child must not load libraries
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._child(orphan_guard, read_end, write_end)
        os.close(write_end)
        self.pid, self.sentinel = pid, read_end

    def _child(self, orphan_guard, read_end: int, write_end: int) -> None:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the runner's cancel handler
            orphan_guard()
            os.close(read_end)
            close_descriptors_except({write_end, *self.keep_fds})
            self.target(*self.args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - the child's log has the traceback
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001
                    pass
            os._exit(code)

    def _reap(self, block: bool) -> None:
        if self.exitcode is not None or self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.exitcode = -signal.SIGKILL
            return
        if pid:
            self.exitcode = os.waitstatus_to_exitcode(status)

    def is_alive(self) -> bool:
        self._reap(block=False)
        return self.pid is not None and self.exitcode is None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is not None or self.pid is None:
            return
        from multiprocessing.connection import wait

        if wait([self.sentinel], timeout):  # the child has exited: reap it
            self._reap(block=True)

    def kill(self) -> None:
        if self.is_alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None
