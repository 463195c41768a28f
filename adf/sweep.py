"""Sweeps: many training configurations fanned out over the pool through a storage queue.

`start` validates the whole grid, creates the sweep's queues, queues one message per line,
stages the runner and triggers `adf/sweep-pipeline.json` (a ForEach of runners). The
sweep's record lives in the datastore, `sweeps/<id>/sweep.json`, so `status` and `list`
work from any machine and on both targets.

Results and failures arrive as queue messages (at least once). A collector moves them into
`sweeps/<id>/ledger.json` under a blob lease, writing the ledger before deleting the
messages: a line is counted once (its first result wins; a result beats a failure), and
every line ends in exactly one of done or failed.

Once every line is queued, `start` marks the work queue with the line count: the runners
stop as soon as that queue is empty (every line accounted for), and `start` returns once
done + failed == total. `start` holds a lease on `sweeps/<id>/start.lock` until its
pipeline run is triggered; a sweep with neither a run nor that lease held is stranded (its
start was killed) and `cancel` cleans it up. SIGTERM or SIGINT while queueing cancels the
sweep.
"""
from __future__ import annotations

import json
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from adf.definitions import SWEEP_PIPELINE_FILE, coerce_parameters
from adf.parameters import check_given_parameters
from adf.staging import STAGED_FILES, stage
from adf.sweep_grid import GridLine, load_grid
from adf.sweep_runners import Runners, runner_count
from workspace.datastore import _first_line
from workspace.errors import ConfigError, DatastoreUnavailable, NotFound, OperationFailed, \
    ProjectError
from workspace.names import SWEEP_ID
from workspace.quality import MIN_TEST_ROWS, accuracy_text, rank_key, test_rows_problem
from workspace.queues import DRAIN_VISIBILITY_SECONDS, SweepQueues
from workspace.settings import REPO_ROOT

SWEEPS_PREFIX = "sweeps"
RECORD_NAME = "sweep.json"
LEDGER_NAME = "ledger.json"
START_LOCK = "start.lock"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
COLLECT_BATCH = 1000   # messages recorded per ledger write, at most; and at least every
COLLECT_FLUSH_SECONDS = DRAIN_VISIBILITY_SECONDS / 3  # so they are deleted before they come back
SETTLE_SECONDS = 1.0   # once every line is accounted for: how long `start` waits for the run
#                        to end (its runners stop at once) before it returns anyway
OUTAGE_SECONDS = 120.0  # how long following rides out an unreachable storage service
RUNNER_FILES = (*STAGED_FILES, REPO_ROOT / "trainer" / "node_runner.py")
# Pipeline parameters the sweep sets itself (the rest may be passed with --param).
OWN_PARAMETERS = ("sweepId", "workers", "queueAccountUrl")
Progress = Callable[[str], None]


class SweepIncomplete(OperationFailed):
    """Some line failed, or the runners stopped before every line was accounted for."""


class SweepInterrupted(OperationFailed):
    """`sweep start` was stopped by a signal before its pipeline run started: canceled."""


class SweepBusy(ProjectError):
    """The sweep's `start` is still queueing it."""


class SweepBlobCorrupt(ProjectError):
    """A sweep's record or ledger blob is not what this code wrote."""


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
    canceled: str = ""          # when `sweep cancel` (or an interrupted start) canceled it
    cancel_reason: str = ""

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
    stranded: bool = False      # no pipeline run and no `sweep start` queueing it any more

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

    @property
    def ended(self) -> bool:
        """Nothing will account for more lines: the run ended, or the sweep was canceled
        or stranded."""
        return bool(self.pipeline_status in TERMINAL or self.record.canceled or self.stranded)


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
        try:
            with interrupts_raise(), self.store.lease_lock(
                    self._blob(record.sweep_id, START_LOCK), purpose="sweep start"):
                queues.create()
                self._queue_stage_and_run(record, queues, typed, progress)
        except KeyboardInterrupt:  # SIGINT or SIGTERM: the sweep cancels itself
            with interrupts_ignored():
                self.cancel_record(record, "its `sweep start` was interrupted while queueing")
            raise SweepInterrupted(
                f"Sweep {record.sweep_id} canceled: `sweep start` was interrupted after "
                f"queueing {queues.sent} of {record.total} lines.",
                "Start it again with `python -m adf sweep start`.") from None
        except BaseException:  # a sweep that never ran leaves no queue and no record behind
            with interrupts_ignored():
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
        queues.mark_queued(record.total)
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
        return self._read(name, _record_from, "Its lines and settings are lost: delete the "
                          f"sweep's blobs under '{SWEEPS_PREFIX}/{sweep_id}/' to forget it.")

    def _read(self, name: str, build: Callable[[Any], Any], hint: str):
        """A sweep blob as `build` makes it, or SweepBlobCorrupt naming the blob."""
        try:
            return build(self.store.read_json(name))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SweepBlobCorrupt(f"Blob '{self.store.container}/{name}' is corrupted: "
                                   f"{type(exc).__name__}: {exc}.", hint) from None

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
        if not self.store.exists(name):
            return Ledger()
        return self._read(name, _ledger_from, "Restore it, or delete it to collect the "
                          "results still queued afresh (those collected into it are lost; "
                          "their runs stay published).")

    def save_ledger(self, sweep_id: str, ledger: Ledger) -> None:
        # Compact and without asdict's deep copy: json's C encoder serves only indent=None,
        # and a ledger is rewritten at every collect (2.8 MB at 10,000 lines).
        self.store.upload_bytes(json.dumps({"done": ledger.done, "failed": ledger.failed},
                                           separators=(",", ":")).encode(),
                                self._blob(sweep_id, LEDGER_NAME))

    # ------------------------------------------------------------------ progress

    def collect(self, sweep_id: str) -> Ledger:
        """Move result and failure messages into the ledger; messages go only once recorded."""
        queues = self.queues(sweep_id)
        with self.store.lease_lock(self._blob(sweep_id, "ledger.lock"), purpose="sweep collector"):
            ledger = self.load_ledger(sweep_id)
            acks: list[Callable[[], None]] = []
            since = time.monotonic()
            for kind in ("results", "failures"):
                for body, ack in queues.drain(kind):
                    ledger.record(kind, body)
                    acks.append(ack)
                    if len(acks) >= COLLECT_BATCH or \
                            time.monotonic() - since >= COLLECT_FLUSH_SECONDS:
                        self._record_and_ack(sweep_id, ledger, acks)
                        since = time.monotonic()
            self._record_and_ack(sweep_id, ledger, acks)
        return ledger

    def _record_and_ack(self, sweep_id: str, ledger: Ledger, acks: list) -> None:
        """Write the ledger, then delete the messages it now holds."""
        if acks:
            self.save_ledger(sweep_id, ledger)
        for ack in acks:
            ack()
        acks.clear()

    def status(self, sweep_id: str | None = None) -> SweepStatus:
        record = self.load(sweep_id)
        ledger = self.collect(record.sweep_id)
        queued = self.queues(record.sweep_id).counts().work
        state = SweepStatus(record, ledger, queued)
        if not (record.pipeline_run_id or record.canceled):
            state.stranded = not self.store.leased(self._blob(record.sweep_id, START_LOCK))
        if record.pipeline_run_id:
            from adf.runs import RunNotFound

            try:
                run = self.backend.get_run(record.pipeline_run_id)
                state.pipeline_status, state.pipeline_message = run.status, run.message
            except RunNotFound:  # a local run started on another machine: counts still hold
                state.pipeline_status = "unknown here"
        return state

    def wait(self, sweep_id: str, on_tick: Callable[[SweepStatus], None],
             poll_seconds: float, progress: Progress = lambda message: None,
             settle_seconds: float = SETTLE_SECONDS) -> SweepStatus:
        """Follow the sweep until every line is accounted for (then give its run
        settle_seconds to end) or until it ends; the last status collects everything.
        A storage service that stops answering is waited for, up to OUTAGE_SECONDS."""
        from azure.core.exceptions import AzureError

        accounted_at = outage_since = None
        delay = poll_seconds
        while True:
            try:
                state = self.status(sweep_id)
            except (AzureError, DatastoreUnavailable) as exc:
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > OUTAGE_SECONDS:
                    raise DatastoreUnavailable(
                        f"Storage was unreachable for {OUTAGE_SECONDS:g} s while following "
                        f"sweep {sweep_id}: {_first_line(exc)}",
                        "The sweep goes on without this command; follow it with `python -m "
                        f"adf sweep status {sweep_id}` once storage is back.") from None
                delay = min(max(delay, poll_seconds) * 2, 5.0)
                progress(f"  storage unreachable, retrying in {delay:.1f} s: {_first_line(exc)}")
                time.sleep(delay)
                continue
            if outage_since is not None:
                progress(f"  storage reachable again after "
                         f"{time.monotonic() - outage_since:.1f} s")
                outage_since, delay = None, poll_seconds
            on_tick(state)
            if state.ended:
                return state
            if state.accounted:
                accounted_at = accounted_at or time.monotonic()
                if time.monotonic() - accounted_at >= settle_seconds:
                    return state
            time.sleep(poll_seconds)

    # ------------------------------------------------------------------ cancel

    def cancel(self, sweep_id: str | None) -> tuple[SweepRecord, list[str]]:
        """Cancel a sweep (default: the newest): what was done, empty if it was already."""
        record = self.load(sweep_id)
        if not (record.pipeline_run_id or record.canceled) and \
                self.store.leased(self._blob(record.sweep_id, START_LOCK)):
            raise SweepBusy(f"Sweep {record.sweep_id} is being queued by a `sweep start` that "
                            "is still running.",
                            "Stop that command (Ctrl-C or SIGTERM cancels the sweep), or cancel "
                            "once its pipeline run has started.")
        return record, self.cancel_record(record, "canceled with `sweep cancel`")

    def cancel_record(self, record: SweepRecord, reason: str) -> list[str]:
        """Stop the pipeline run, collect what was reported, delete the queues and mark the
        sweep canceled. Each step is skipped when already done, so it can be repeated."""
        from adf.runs import RunNotFound

        done = []
        if record.pipeline_run_id:
            try:
                if not self.backend.get_run(record.pipeline_run_id).is_terminal:
                    run = self.backend.cancel(record.pipeline_run_id)
                    done.append(f"pipeline run {record.pipeline_run_id} {run.status}")
            except RunNotFound:  # a local run started on another machine
                done.append(f"pipeline run {record.pipeline_run_id} is not known here; "
                            "cancel it where it runs")
        self.collect(record.sweep_id)  # results already posted are kept in the ledger
        deleted = self.queues(record.sweep_id).delete()
        if deleted:
            done.append(f"deleted {deleted} queue(s) of {record.sweep_id}")
        if not record.canceled:
            record.canceled, record.cancel_reason = _now(), reason
            self.save(record)
            done.append(f"marked {record.sweep_id} canceled")
        return done


def _record_from(data: Any) -> SweepRecord:
    record = SweepRecord(**data)
    if not isinstance(record.lines, list) or not all("line" in e for e in record.lines):
        raise ValueError("'lines' is not a list of grid lines")
    return record


def _ledger_from(data: Any) -> Ledger:
    ledger = Ledger(**data)
    if not isinstance(ledger.done, dict) or not isinstance(ledger.failed, dict):
        raise ValueError("'done' and 'failed' must map lines to messages")
    return ledger


def check_status(state: SweepStatus) -> None:
    """Exit status of `sweep status`: non-zero once the sweep can account for no more lines
    (its run ended, or it was canceled or stranded) and some are not accounted for."""
    if state.accounted or not state.ended:
        return
    record = state.record
    counts = (f"done {state.done} + failed {state.failed} != total {record.total}; lines not "
              f"accounted for: {_some(state.missing_lines)}")
    if record.canceled:
        raise SweepIncomplete(f"Sweep {record.sweep_id} was canceled at {record.canceled} "
                              f"({record.cancel_reason}): {counts}.",
                              "Start a new sweep for the lines you still need.")
    if state.stranded:
        raise SweepIncomplete(
            f"Sweep {record.sweep_id} is stranded: its `sweep start` stopped before the "
            f"pipeline run started ({state.queued} of {record.total} lines queued).",
            f"Clean it up with `python -m adf sweep cancel {record.sweep_id}` and start it "
            "again.")
    raise SweepIncomplete(
        f"Sweep {record.sweep_id}: {counts}.",
        f"Pipeline run {record.pipeline_run_id} is {state.pipeline_status}"
        + (f" ({state.pipeline_message})" if state.pipeline_message else "")
        + "; start the runners again by re-running the sweep's lines.")


def _some(lines: list[int], shown: int = 20) -> str:
    more = f" and {len(lines) - shown} more" if len(lines) > shown else ""
    return ", ".join(map(str, lines[:shown])) + more


def check_complete(state: SweepStatus) -> None:
    """Exit status of a finished sweep: every line done, and done + failed == total."""
    check_status(state)  # `wait` returns once every line is accounted for, or it ended
    if state.failed:
        raise SweepIncomplete(f"Sweep {state.record.sweep_id}: {state.failed} of "
                              f"{state.record.total} lines failed.",
                              "See the failures above; fix the lines and start a new sweep.")


def describe_params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


# ------------------------------------------------------------------ signals


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _signals_handled_by(handler):
    """SIGTERM and SIGINT handled by `handler` for the block (in the main thread; elsewhere
    signals are not ours to handle)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def interrupts_raise():
    """SIGTERM raises KeyboardInterrupt as SIGINT does: both unwind into the clean-up."""
    return _signals_handled_by(_raise_interrupt)


def interrupts_ignored():
    """For a clean-up that a second SIGTERM or Ctrl-C must not cut short."""
    return _signals_handled_by(signal.SIG_IGN)
