"""The processes of a job: who they are, and scoring processes that die with the runner.

A process is named by its pid and its start time, so that a pid the system has given to
another program since is never taken for one of ours (`ProcessId`).

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
from dataclasses import dataclass

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class ProcessId:
    pid: int
    started: float | None  # seconds since the epoch, as the system reports it

    @classmethod
    def of(cls, pid: int) -> "ProcessId":
        return cls(int(pid), start_time(pid))

    @classmethod
    def from_record(cls, value) -> "ProcessId | None":
        """From `[pid, started]` (a job record) or a bare pid (older records)."""
        if isinstance(value, (list, tuple)) and value:
            return cls(int(value[0]), value[1] if len(value) > 1 else None)
        if isinstance(value, int) and value > 0:
            return cls(value, None)
        return None

    def to_record(self) -> list:
        return [self.pid, self.started]

    def alive(self) -> bool:
        """Running (not a zombie) and the very process recorded, not a later one."""
        import psutil

        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return self.started is None or abs(process.create_time() - self.started) < 0.05
        except psutil.Error:
            return False

    def kill(self) -> bool:
        """SIGKILL it if it is still this process; True if a signal was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
            return True
        except OSError:
            return False

    def signal(self, signum: int) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
            return True
        except OSError:
            return False


def start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(int(pid)).create_time()
    except psutil.Error:
        return None


def die_with_parent(parent_pid: int) -> None:
    """Ask for SIGKILL when the parent exits, then make sure it has not already: a parent
    that died before the request was made is never signalled (then the parent is init)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the runner's own cleanup and `status` still find this process
    if os.getppid() != parent_pid:
        os._exit(1)


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
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            self._child(parent, read_end, write_end)
        os.close(write_end)
        self.pid, self.sentinel = pid, read_end

    def _child(self, parent: int, read_end: int, write_end: int) -> None:
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the runner's cancel handler
            die_with_parent(parent)
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
