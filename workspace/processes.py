"""Our own background processes, told apart from strangers.

A pid file holds the pid and the process's start time; a pid that now belongs to another
program (the process died, the number was reused, the machine rebooted) does not match and
is never signalled.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path


def _start_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, ValueError):
        return None


def write_pid_file(path: Path, pid: int) -> None:
    path.write_text(f"{pid} {_start_time(pid) or 0!r}\n")


def live_pid(path: Path, command_contains: str | None = None) -> int | None:
    """The pid named by the file if that very process is still running (same start time and,
    if given, a command line containing `command_contains`); else None."""
    import psutil

    try:
        fields = path.read_text().split()
        pid = int(fields[0])
        started = float(fields[1]) if len(fields) > 1 else None
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if started is not None and abs(process.create_time() - started) > 0.01:
            return None
        if command_contains and command_contains not in " ".join(process.cmdline()):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return pid


def kill_group(pid: int, signum: int = signal.SIGKILL) -> bool:
    """Signal the process group led by pid; False if it is gone already."""
    try:
        os.killpg(pid, signum)
        return True
    except (ProcessLookupError, PermissionError):
        return False
