"""What the job runner and a scoring process tell each other over their socket.

Runner → process: a `Task` (or None: stop). Process → runner: `Ready` once the model is
loaded (or `LoadFailed`), then per task `Rows` while it scores and `Done` or `Failed`.
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
