"""The ledger of a job's mini-batches: their pieces and attempts, what is still to run,
what has settled (succeeded, or failed for good), and the order successes are written in.
It decides nothing about processes and touches no file."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from deployer.engine.messages import Done


@dataclass
class Succeeded:
    parts: list[str]  # part files in piece order
    rows: int
    stats: list[tuple[dict, dict]]  # (rows per file, rows per class) per piece


@dataclass
class FailedForGood:
    file_name: str
    message: str


@dataclass
class _Attempt:
    parts: dict = field(default_factory=dict)  # piece -> Done
    failed: bool = False


RETRY, FAILED, IGNORED = "retry", "failed", "ignored"


class Ledger:
    def __init__(self, plans: list[list], max_retries: int):
        self.plans = plans
        self.max_retries = max_retries
        self.pending: collections.deque = collections.deque(
            (i, 1, k) for i in range(len(plans)) for k in range(len(plans[i])))
        self.settled: dict[int, Succeeded | FailedForGood] = {}
        self._attempts: dict[tuple, _Attempt] = collections.defaultdict(_Attempt)
        self._next_write = 0

    @property
    def complete(self) -> bool:
        return len(self.settled) == len(self.plans)

    def next_task(self) -> tuple[int, int, int] | None:
        """(mini-batch, attempt, piece) to run next, skipping pieces of settled attempts."""
        while self.pending:
            index, attempt, piece = self.pending.popleft()
            if index not in self.settled and not self._attempts[(index, attempt)].failed:
                return index, attempt, piece
        return None

    def is_late(self, index: int, attempt: int) -> bool:
        """An answer for a mini-batch or attempt that has already settled or failed."""
        return index in self.settled or self._attempts[(index, attempt)].failed

    def piece_done(self, done: Done) -> Succeeded | None:
        """Record a finished piece; the mini-batch's success once all its pieces are in."""
        state = self._attempts[(done.index, done.attempt)]
        state.parts[done.piece] = done
        if len(state.parts) < len(self.plans[done.index]):
            return None
        pieces = [state.parts[k] for k in range(len(self.plans[done.index]))]
        result = Succeeded([p.part_path for p in pieces], sum(p.rows for p in pieces),
                           [(p.per_file, p.per_class) for p in pieces])
        self.settled[done.index] = result
        return result

    def attempt_failed(self, index: int, attempt: int, file_name: str,
                       message: str) -> tuple[str, list[str]]:
        """(RETRY | FAILED | IGNORED, part files of the attempt to drop)."""
        if self.is_late(index, attempt):  # another piece of it failed first
            return IGNORED, []
        state = self._attempts[(index, attempt)]
        state.failed = True
        drop = [done.part_path for done in state.parts.values()]
        if attempt <= self.max_retries:
            self.pending.extend((index, attempt + 1, k) for k in range(len(self.plans[index])))
            return RETRY, drop
        self.settled[index] = FailedForGood(file_name, message)
        return FAILED, drop

    def ready_to_write(self):
        """The settled mini-batches not yet handed out, in mini-batch order, up to the first
        one still running."""
        while self._next_write in self.settled:
            result = self.settled[self._next_write]
            self._next_write += 1
            yield result
