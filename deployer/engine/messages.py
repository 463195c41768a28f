"""What the job runner and a scoring process tell each other over their socket.

Runner → process: a `Task` (or None: stop). Process → runner: `Ready` once the model is
loaded (or `LoadFailed`), then per task `Rows` while it scores and `Done` or `Failed`.
The worker pool keeps `Ready` and `Rows` for itself and passes the rest on, with
`Exited` or `TimedOut` when it has stopped a process (and started another in its place).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    index: int  # mini-batch
    attempt: int
    piece: int
    items: list  # file paths, or (path, byte start, byte end, first row) ranges
    part_path: str


@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class Rows:
    count: int  # rows of the running piece scored since the last report


@dataclass(frozen=True)
class Done:
    index: int
    attempt: int
    piece: int
    part_path: str
    rows: int
    per_file: dict
    per_class: dict


@dataclass(frozen=True)
class Failed:
    index: int
    attempt: int
    piece: int
    part_path: str
    file_name: str  # "" when no one file is to blame
    message: str


@dataclass(frozen=True)
class Exited:
    task: Task | None  # what the process was running, if anything
    code: int | None  # its exit code, if known yet


@dataclass(frozen=True)
class TimedOut:
    task: Task
    seconds: float  # the timeout it ran past
    node: int  # the process's place, which names its log files
    process_no: int
