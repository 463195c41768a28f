"""How many runners a sweep starts: never more than can take a line at once.

A runner is one ForEach iteration, i.e. one Batch task, and it stops only once the work
queue has been empty for its grace period. Runners beyond the lines, beyond the ForEach's
`batchCount` (ADF runs the other iterations later, after the queue is empty) or beyond the
pool's task slots (they wait for a node) only idle: `--workers` is lowered to the smallest
of these limits, and the sweep says which one.
"""
from __future__ import annotations

from dataclasses import dataclass

from adf.definitions import Definitions, for_each_batch_count
from workspace.errors import ConfigError


@dataclass(frozen=True)
class Runners:
    requested: int
    count: int
    note: str = ""      # why count < requested, or what could not be checked


def runner_count(requested: int, lines: int, definitions: Definitions,
                 task_slots: tuple[int | None, str]) -> Runners:
    """--workers, lowered to the lines, the ForEach's batchCount and the pool's task slots."""
    if requested < 1:
        raise ConfigError(f"--workers is {requested}; it must be at least 1.")
    limits = [(lines, f"the grid has {lines} line(s)")]
    if definitions.for_each is not None:
        batch = for_each_batch_count(definitions.for_each)
        limits.append((batch, f"the ForEach of {definitions.pipeline.display_path} runs {batch} "
                              "iteration(s) at once (batchCount; Data Factory allows at most 50)"))
    slots, why = task_slots
    if slots is not None:
        limits.append((slots, why))
    count = min(requested, *(limit for limit, _ in limits))
    reasons = [reason for limit, reason in limits if limit == count < requested]
    note = (f"--workers {requested} lowered to {count}: {'; '.join(reasons)}." if reasons
            else "")
    if slots is None and count > 1:
        note = " ".join(filter(None, (note, f"Not checked against the pool: {why}.")))
    return Runners(requested, count, note)
