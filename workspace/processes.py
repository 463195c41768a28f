"""Our own processes, told apart from strangers, and children that die with their parent.

A process is named by its pid and its start time (`ProcessId`, and pid files holding both):
a pid that now belongs to another program (the process died, the number was reused, the
machine rebooted) does not match and is never signalled. Every part that starts processes
(Azurite, the ADF local runner and its task, the batch engine) uses this one module.
"""
from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(int(pid)).create_time()
    except (psutil.Error, ValueError):
        return None


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

    def alive(self, command_contains: str | None = None) -> bool:
        """Running (not a zombie), the very process recorded and not a later one, and (if
        given) with a command line containing `command_contains`."""
        import psutil

        try:
            process = psutil.Process(self.pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            if self.started is not None and abs(process.create_time() - self.started) > 0.05:
                return False
            return not command_contains or command_contains in " ".join(process.cmdline())
        except psutil.Error:
            return False

    def signal(self, signum: int) -> bool:
        """Signal it if it is still this process; True if a signal was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, signum)
            return True
        except OSError:
            return False

    def kill(self) -> bool:
        return self.signal(signal.SIGKILL)


def write_pid_file(path: Path, pid: int) -> None:
    """`<pid> <start time>` (the start time left out when the system does not say it)."""
    who = ProcessId.of(pid)
    path.write_text(f"{who.pid} {who.started!r}\n" if who.started else f"{who.pid}\n")


def read_pid_file(path: Path) -> ProcessId | None:
    try:
        fields = Path(path).read_text().split()
        return ProcessId(int(fields[0]), float(fields[1]) if len(fields) > 1 else None)
    except (FileNotFoundError, ValueError, IndexError):
        return None


def live_pid(path: Path, command_contains: str | None = None) -> int | None:
    """The pid named by the file if that very process is still running (same start time and,
    if given, a command line containing `command_contains`); else None."""
    who = read_pid_file(path)
    return who.pid if who is not None and who.alive(command_contains) else None


@lru_cache(maxsize=1)
def _libc():
    """libc for prctl, loaded in the parent: a child between fork and exec must not dlopen."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def die_with_parent(parent_pid: int, exit_code: int = 1) -> None:
    """In a child right after fork: ask the kernel for SIGKILL when the parent exits (Linux
    `PR_SET_PDEATHSIG`), then make sure it has not already (the parent would be init by
    then, and the request never fires). Elsewhere the parent's own cleanup still finds it."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(exit_code)


def die_with(parent_pid: int, exit_code: int = 1):
    """`die_with_parent` as a subprocess preexec_fn (libc loaded now, before the fork)."""
    _libc()
    return lambda: die_with_parent(parent_pid, exit_code)


def kill_group(pid: int, signum: int = signal.SIGKILL) -> bool:
    """Signal the process group led by pid; False if it is gone already."""
    try:
        os.killpg(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
