"""Sweeps: many training configurations fanned out over the pool through a storage queue.

`start` validates the whole grid, creates the sweep's queues, queues one message per line,
stages the runner and triggers `adf/sweep-pipeline.json` (a ForEach of runners). The
sweep's record lives in the datastore, `sweeps/<id>/sweep.json`, so `status` and `list`
work from any machine and on both targets.

Results and failures arrive as queue messages (at least once). A collector moves them into
`sweeps/<id>/ledger.json` under a blob lease, writing the ledger before deleting the
messages: a line is counted once (its first result wins; a result beats a failure), and
every line ends in exactly one of done or failed.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from adf.definitions import SWEEP_PIPELINE_FILE, coerce_parameters
from adf.parameters import check_given_parameters
from adf.staging import STAGED_FILES, stage
from adf.sweep_grid import GridLine, load_grid
from adf.sweep_runners import Runners, runner_count
from workspace.errors import ConfigError, NotFound, OperationFailed
from workspace.names import SWEEP_ID
from workspace.quality import MIN_TEST_ROWS, accuracy_text, rank_key, test_rows_problem
from workspace.queues import SweepQueues
from workspace.settings import REPO_ROOT

SWEEPS_PREFIX = "sweeps"
RECORD_NAME = "sweep.json"
LEDGER_NAME = "ledger.json"
RUNNER_FILES = (*STAGED_FILES, REPO_ROOT / "trainer" / "node_runner.py")
# Pipeline parameters the sweep sets itself (the rest may be passed with --param).
OWN_PARAMETERS = ("sweepId", "workers", "queueAccountUrl")
Progress = Callable[[str], None]


class SweepIncomplete(OperationFailed):
    """Some line failed, or the runners stopped before every line was accounted for."""


@dataclass
class SweepRecord:
    sweep_id: str
    created: str
    grid: str
    target: str
    workers: int
    lines: list[dict]                 # [{"line": n, "params": {...}}]
    parameters: dict = field(default_factory=dict)
    pipeline_run_id: str = ""

    @property
    def total(self) -> int:
        return len(self.lines)


@dataclass
class Ledger:
    done: dict[str, dict] = field(default_factory=dict)     # line → result message
    failed: dict[str, dict] = field(default_factory=dict)   # line → failure message

    def record(self, kind: str, body: dict) -> None:
        line = str(body["line"])
        if kind == "results":
            self.done.setdefault(line, body)  # the first complete run of a line wins
            self.failed.pop(line, None)
        elif line not in self.done:
            self.failed[line] = body

    def leaderboard(self) -> list[dict]:
        """Complete runs with enough test rows to rank (workspace/quality.py), best first:
        test accuracy, then macro-F1, then the earlier line."""
        return sorted((r for r in self.done.values() if not test_rows_problem(r["metrics"])),
                      key=lambda r: rank_key(r["metrics"], r["line"]))

    def unranked(self) -> list[tuple[dict, str]]:
        """Complete runs left out of the leaderboard, by line, with the reason."""
        return [(r, f"{accuracy_text(r['metrics'])} {test_rows_problem(r['metrics'])}; a run "
                    f"needs at least {MIN_TEST_ROWS} test rows to be ranked")
                for r in sorted(self.done.values(), key=lambda r: r["line"])
                if test_rows_problem(r["metrics"])]


@dataclass
class SweepStatus:
    record: SweepRecord
    ledger: Ledger
    queued: int                 # messages left in the work queue, in flight included
    pipeline_status: str = ""
    pipeline_message: str = ""

    @property
    def done(self) -> int:
        return len(self.ledger.done)

    @property
    def failed(self) -> int:
        return len(self.ledger.failed)

    @property
    def accounted(self) -> bool:
        return self.done + self.failed == self.record.total

    @property
    def missing_lines(self) -> list[int]:
        seen = set(self.ledger.done) | set(self.ledger.failed)
        return [entry["line"] for entry in self.record.lines if str(entry["line"]) not in seen]


def new_sweep_id() -> str:
    """Sortable by time and a valid queue-name stem: sw-YYYYMMDD-HHMMSS-xxxx."""
    return f"sw-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Sweeps:
    """The application: start, collect, status and list, over one backend and datastore."""

    def __init__(self, backend, store, queue_service):
        self.backend = backend
        self.backend.pipeline_file = SWEEP_PIPELINE_FILE
        self.store = store
        self.queue_service = queue_service

    def queues(self, sweep_id: str) -> SweepQueues:
        return SweepQueues(self.queue_service, sweep_id)

    # ------------------------------------------------------------------ start

    def plan(self, grid: Path, workers: int,
             params: dict[str, str]) -> tuple[list[GridLine], dict, Runners]:
        """Every check that needs no service: the grid, the workers, the parameters (with
        the runner's own option types, so no runner exits on one)."""
        lines = load_grid(grid)
        definitions = self.backend.definitions()
        runners = runner_count(workers, len(lines), definitions, self.backend.task_slots())
        own = sorted(set(params) & set(OWN_PARAMETERS))
        if own:
            raise ConfigError(f"--param {own[0]} is set by the sweep itself.",
                              "Use --workers for the number of runners.")
        typed = coerce_parameters(definitions, params)
        check_given_parameters(definitions, typed)
        return lines, typed, runners

    def start(self, grid: Path, workers: int, params: dict[str, str],
              progress: Progress) -> SweepRecord:
        lines, typed, runners = self.plan(grid, workers, params)
        if runners.note:
            progress(runners.note)
        self.backend.prepare(progress)
        self.store.check()
        record = SweepRecord(new_sweep_id(), _now(), str(grid), self.backend.target,
                             runners.count,
                             [{"line": g.line, "params": g.params} for g in lines], typed)
        queues = self.queues(record.sweep_id)
        queues.create()
        try:
            self._queue_stage_and_run(record, queues, typed, progress)
        except BaseException:  # a sweep that never ran leaves no queue and no record behind
            queues.delete()
            self.store.delete_prefix(f"{SWEEPS_PREFIX}/{record.sweep_id}/")
            raise
        return record

    def _queue_stage_and_run(self, record: SweepRecord, queues: SweepQueues, typed: dict,
                             progress: Progress) -> None:
        self.save(record)
        self.save_ledger(record.sweep_id, Ledger())
        for entry in record.lines:
            queues.send("work", {"sweep": record.sweep_id, **entry})
        progress(f"Queued {record.total} lines on {record.sweep_id}-work.")
        container, prefix = self.backend.staging_datastore()
        staged = stage(container, prefix, files=RUNNER_FILES)
        progress(f"Staged {len(staged)} files ({sum(f.uploaded for f in staged)} uploaded) to "
                 f"{container.container}/{prefix}.")
        record.pipeline_run_id = self.backend.start({
            **typed, "sweepId": record.sweep_id, "workers": record.workers,
            "queueAccountUrl": self.queue_service.url.rstrip("/")})
        self.save(record)

    # ------------------------------------------------------------------ records

    def _blob(self, sweep_id: str, name: str) -> str:
        return f"{SWEEPS_PREFIX}/{SWEEP_ID.check(sweep_id, 'sweep id')}/{name}"

    def save(self, record: SweepRecord) -> None:
        self.store.upload_bytes(json.dumps(asdict(record), indent=2).encode(),
                                self._blob(record.sweep_id, RECORD_NAME))

    def load(self, sweep_id: str | None) -> SweepRecord:
        sweep_id = sweep_id or self.latest_id()
        name = self._blob(sweep_id, RECORD_NAME)
        if not self.store.exists(name):
            raise NotFound(f"No sweep '{sweep_id}' in container '{self.store.container}'.",
                           "List sweeps with `python -m adf sweep list`.")
        return SweepRecord(**self.store.read_json(name))

    def ids(self) -> list[str]:
        """Every sweep id, newest first (ids sort by their start time)."""
        suffix = "/" + RECORD_NAME
        ids = (b.name[len(SWEEPS_PREFIX) + 1:-len(suffix)]
               for b in self.store.list(SWEEPS_PREFIX + "/") if b.name.endswith(suffix))
        return sorted((i for i in ids if SWEEP_ID.is_valid(i)), reverse=True)  # not ours: skipped

    def latest_id(self) -> str:
        ids = self.ids()
        if not ids:
            raise NotFound(f"No sweep in container '{self.store.container}'.",
                           "Start one with `python -m adf sweep start --grid data/sweep.csv`.")
        return ids[0]

    def load_ledger(self, sweep_id: str) -> Ledger:
        name = self._blob(sweep_id, LEDGER_NAME)
        return Ledger(**self.store.read_json(name)) if self.store.exists(name) else Ledger()

    def save_ledger(self, sweep_id: str, ledger: Ledger) -> None:
        self.store.upload_bytes(json.dumps(asdict(ledger), indent=2).encode(),
                                self._blob(sweep_id, LEDGER_NAME))

    # ------------------------------------------------------------------ progress

    def collect(self, sweep_id: str) -> Ledger:
        """Move result and failure messages into the ledger; messages go only once recorded."""
        queues = self.queues(sweep_id)
        with self.store.lease_lock(self._blob(sweep_id, "ledger.lock"), purpose="sweep collector"):
            ledger = self.load_ledger(sweep_id)
            acks = []
            for kind in ("results", "failures"):
                for body, ack in queues.drain(kind):
                    ledger.record(kind, body)
                    acks.append(ack)
            if acks:
                self.save_ledger(sweep_id, ledger)
            for ack in acks:
                ack()
        return ledger

    def status(self, sweep_id: str | None = None) -> SweepStatus:
        record = self.load(sweep_id)
        ledger = self.collect(record.sweep_id)
        queued = self.queues(record.sweep_id).counts().work
        state = SweepStatus(record, ledger, queued)
        if record.pipeline_run_id:
            from adf.runs import RunNotFound

            try:
                run = self.backend.get_run(record.pipeline_run_id)
                state.pipeline_status, state.pipeline_message = run.status, run.message
            except RunNotFound:  # a local run started on another machine: counts still hold
                state.pipeline_status = "unknown here"
        return state

    def wait(self, sweep_id: str, on_tick: Callable[[SweepStatus], None],
             poll_seconds: float) -> SweepStatus:
        """Follow the sweep until its pipeline run ends; the last status collects everything."""
        while True:
            state = self.status(sweep_id)
            on_tick(state)
            if state.pipeline_status in ("Succeeded", "Failed", "Cancelled"):
                return state
            time.sleep(poll_seconds)


def check_complete(state: SweepStatus) -> None:
    """Exit status of a finished sweep: every line done, and done + failed == total."""
    if not state.accounted:
        raise SweepIncomplete(
            f"Sweep {state.record.sweep_id}: done {state.done} + failed {state.failed} != total "
            f"{state.record.total}; lines not accounted for: "
            f"{', '.join(map(str, state.missing_lines))}.",
            f"Pipeline run {state.record.pipeline_run_id} is {state.pipeline_status}"
            + (f" ({state.pipeline_message})" if state.pipeline_message else "")
            + "; start the runners again by re-running the sweep's lines.")
    if state.failed:
        raise SweepIncomplete(f"Sweep {state.record.sweep_id}: {state.failed} of "
                              f"{state.record.total} lines failed.",
                              "See the failures above; fix the lines and start a new sweep.")


def describe_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())
