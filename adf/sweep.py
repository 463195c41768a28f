"""Sweeps: many training configurations fanned out over the pool through a storage queue.

`start` validates the whole grid, creates the sweep's queues, queues one message per line,
stages the runner and triggers `adf/sweep-pipeline.json` (a ForEach of runners). The
sweep's record lives in the datastore, `sweeps/<id>/sweep.json`, so `status` and `list`
work from any machine and on both targets.

Results and failures are reported in blobs, not queue messages: each runner appends them
as JSON lines to an append blob of its own, `<containerPath>/sweeps/<id>/reports/<runner>.jsonl`
(at least once). A collector folds what the runners appended since it last read into
`sweeps/<id>/ledger.jsonl`, itself an append blob: each Append Block carries the records
that changed the ledger together with how far each report blob has been read, so a
collector killed at any point either recorded both or neither, and the next one reads on
from the last offsets recorded. A line is counted once (its first result wins; a result
beats a failure), and every line ends in exactly one of done or failed. Nothing is deleted
per result: a queue message costs one Delete Message call each (docs/performance.md).

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
from workspace.datastore import AppendConflict, ContainerMissing
from workspace.queues import SweepQueues
from workspace.settings import REPO_ROOT

SWEEPS_PREFIX = "sweeps"
RECORD_NAME = "sweep.json"
LEDGER_NAME = "ledger.jsonl"
OLD_LEDGER_NAME = "ledger.json"  # a JSON snapshot, rewritten whole (sweeps started before)
REPORTS = "reports"  # <containerPath>/sweeps/<id>/reports/: the runners' report blobs
# Append Block takes at most 4 MiB per block (100 MiB from version 2022-11-02): a collect
# that read more appends several blocks, each with its own offsets.
LEDGER_BLOCK_BYTES = 4 << 20
COLLECT_TRIES = 10  # collects in a row that another collector's append may send back
START_LOCK = "start.lock"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
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
    reports: str = ""           # <container>/<prefix>/sweeps/<id>/reports: where runners report

    @property
    def total(self) -> int:
        return len(self.lines)


@dataclass
class Ledger:
    done: dict[str, dict] = field(default_factory=dict)     # line → result
    failed: dict[str, dict] = field(default_factory=dict)   # line → failure
    read: dict[str, int] = field(default_factory=dict)      # report blob → bytes recorded
    size: int = 0  # bytes of ledger.jsonl folded into this (its next append position)

    def record(self, kind: str, body: dict) -> bool:
        """Fold one report in; whether it changed the ledger."""
        line = str(body["line"])
        if line in self.done:
            return False   # the first complete run of a line wins
        if kind == "results":
            self.done[line] = body
            self.failed.pop(line, None)
            return True
        changed = self.failed.get(line) != body
        self.failed[line] = body
        return changed

    def fold(self, data: bytes) -> None:
        """Fold in lines of ledger.jsonl: records and report offsets (ValueError if a line
        is neither)."""
        for text in data.splitlines():
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError("a line is not a JSON object")
            if "read" in entry:
                self.read.update({str(k): int(v) for k, v in entry["read"].items()})
            elif entry.get("kind") in ("results", "failures"):
                self.record(entry["kind"], entry["body"])
            else:
                raise ValueError("a line is neither a report nor report offsets")
        self.size += len(data)

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
        self._ledgers: dict[str, Ledger] = {}  # sweep id → its ledger as this process folded it

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
        record.reports = reports_path(record.sweep_id, str(
            typed.get("containerPath")
            or self.backend.definitions().parameters["containerPath"].get("defaultValue", "")))
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
        self.store.create_append_blob(self._blob(record.sweep_id, LEDGER_NAME))
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
        """The ledger as collected so far (read whole)."""
        return self._ledger_since(sweep_id, Ledger())

    def _ledger_since(self, sweep_id: str, ledger: Ledger) -> Ledger:
        """`ledger` with what was appended to ledger.jsonl after its `size` folded in."""
        name = self._blob(sweep_id, LEDGER_NAME)
        size = self.store.size(name)
        if size is None:
            old = self._blob(sweep_id, OLD_LEDGER_NAME)
            return self._read(old, _ledger_from, _LEDGER_HINT) if self.store.exists(old) \
                else Ledger()
        if size < ledger.size:  # replaced since it was read: read it whole
            ledger = Ledger()
        if size > ledger.size:
            tail = self.store.read_range(name, ledger.size, size - ledger.size)
            try:
                ledger.fold(tail)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise SweepBlobCorrupt(f"Blob '{self.store.container}/{name}' is corrupted: "
                                       f"{type(exc).__name__}: {exc}.", _LEDGER_HINT) from None
        return ledger

    # ------------------------------------------------------------------ progress

    def collect(self, sweep_id: str, record: SweepRecord | None = None) -> Ledger:
        """Fold what the runners reported since the last collect into the ledger.

        Read the ledger's tail (this process keeps what it folded before), list the report
        blobs, read each from the offset the ledger recorded to its current end (whole lines
        only), and append the records that change the ledger with the new offsets, as one
        block. No lock: the append is conditional on the ledger's length, so of collectors
        that run at once one appends and the others read its part and start over."""
        record = record or self.load(sweep_id)
        for _ in range(COLLECT_TRIES):
            ledger = self._ledgers.pop(sweep_id, None) or Ledger()
            try:
                ledger = self._ledger_since(sweep_id, ledger)
                if record.reports:
                    if not ledger.size:  # a new ledger, or one deleted to collect afresh
                        self.store.create_append_blob(self._blob(sweep_id, LEDGER_NAME))
                    self._fold_reports(sweep_id, record.reports, ledger)
            except AppendConflict:
                continue
            self._ledgers[sweep_id] = ledger  # kept only when it is what the blob says
            return ledger
        raise OperationFailed(f"The ledger of sweep {sweep_id} changed {COLLECT_TRIES} times "
                              "while it was collected.",
                              "Other collectors (`sweep status`, `sweep start`) of the sweep "
                              "run at the same time: run again.")

    def _fold_reports(self, sweep_id: str, reports: str, ledger: Ledger) -> None:
        container, _, prefix = reports.partition("/")
        store = self.store.sibling(container)
        block = LedgerBlock(self._blob(sweep_id, LEDGER_NAME))
        try:
            blobs = list(store.list(prefix + "/"))
        except ContainerMissing:  # (--param containerPath naming one): no runner reported
            return
        for blob in blobs:
            offset = ledger.read.get(blob.name, 0)
            if blob.size <= offset:
                continue
            data = store.read_range(blob.name, offset, blob.size - offset)
            data = data[:data.rfind(b"\n") + 1]  # whole lines: a block is a line or more
            for text in data.splitlines(keepends=True):
                offset += len(text)
                entry = _report(text, f"{container}/{blob.name}")
                block.add(text if ledger.record(entry["kind"], entry["body"]) else b"",
                          blob.name, offset)
                if block.size >= LEDGER_BLOCK_BYTES // 2:  # a line is far below the rest
                    block.append(self.store, ledger)
        block.append(self.store, ledger)


    def status(self, sweep_id: str | None = None) -> SweepStatus:
        record = self.load(sweep_id)
        ledger = self.collect(record.sweep_id, record)
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
        self.collect(record.sweep_id, record)  # results already reported are kept
        deleted = self.queues(record.sweep_id).delete()
        if deleted:
            done.append(f"deleted {deleted} queue(s) of {record.sweep_id}")
        if not record.canceled:
            record.canceled, record.cancel_reason = _now(), reason
            self.save(record)
            done.append(f"marked {record.sweep_id} canceled")
        return done


@dataclass
class LedgerBlock:
    """What one collect appends to ledger.jsonl: the records that changed the ledger, then
    one line with how far each report blob has now been read, in one Append Block."""
    name: str
    records: list[bytes] = field(default_factory=list)
    read: dict[str, int] = field(default_factory=dict)
    size: int = 0

    def add(self, record: bytes, report: str, offset: int) -> None:
        if record:
            self.records.append(record)
            self.size += len(record)
        self.read[report] = offset

    def append(self, store, ledger: Ledger) -> None:
        if not self.read:
            return
        data = b"".join(self.records) + json.dumps({"read": self.read}).encode() + b"\n"
        store.append(self.name, data, ledger.size)
        ledger.size += len(data)
        ledger.read.update(self.read)
        self.records, self.read, self.size = [], {}, 0


def _record_from(data: Any) -> SweepRecord:
    record = SweepRecord(**data)
    if not isinstance(record.lines, list) or not all("line" in e for e in record.lines):
        raise ValueError("'lines' is not a list of grid lines")
    return record


_LEDGER_HINT = ("Restore it, or delete it to collect the runners' reports afresh (they stay in "
                "the sweep's reports/ folder; the runs stay published).")


def _report(text: bytes, where: str) -> dict:
    """One line of a runner's report blob: {"kind": "results"|"failures", "body": {...}}."""
    try:
        entry = json.loads(text)
        if entry["kind"] in ("results", "failures") and "line" in entry["body"]:
            return entry
    except (ValueError, TypeError, KeyError):
        pass
    raise SweepBlobCorrupt(f"Blob '{where}' has a line that is not a runner's report: "
                           f"{text[:200]!r}.", "Only the sweep's runners write under reports/; "
                           "delete the blob (its lines are then not counted) and run again.")


def reports_path(sweep_id: str, container_path: str) -> str:
    """`<container>/<prefix>/sweeps/<id>/reports`: where the runners of a sweep that publish
    to `container_path` report (trainer/node_runner.py, `Reports`)."""
    container, _, prefix = container_path.strip("/").partition("/")
    return "/".join(p for p in (container, prefix.strip("/"), SWEEPS_PREFIX, sweep_id, REPORTS)
                    if p)


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
