"""Triggers as code (adf/triggers/*.json) on the local target: `python -m adf triggers start`
watches in the foreground, as the factory would once a trigger is started.

- BlobEventsTrigger: a blob created under `blobPathBeginsWith` (`/<container>/blobs/<folder>`)
  after the trigger started starts the trigger's pipeline once, with the trigger's
  parameters evaluated against the event (`@triggerBody().fileName`, `.folderPath`); an
  empty blob is ignored with `ignoreEmptyBlobs`. A blob written again (a new ETag) is a new
  event, as a BlobCreated event is. Blobs already there when the watch starts (or that
  arrived while it was stopped) start nothing: a stopped trigger receives no events.
- ScheduleTrigger: a run at each time of `recurrence` (frequency Minute, Hour or Day with
  `interval`; for Day, `schedule.hours`/`minutes`), from the first one after the watch starts.

What each trigger started is kept in `<LOCAL_DIR>/adf/triggers/<trigger>.json`: a blob
event is claimed there before its run starts, so a watch stopped and started again (or
killed at any moment) never starts a second run for it. One watcher at a time
(`watcher.pid`); it runs in the foreground of `triggers start`, so nothing outlives it, and
`triggers stop` (another shell) or Ctrl-C ends it.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from adf.definitions import DEFINITIONS_DIR, Document, fill, placeholder_values
from adf.expressions import PipelineContext, evaluate
from adf.runs import now, write_json
from workspace.errors import ConfigError, ProjectError
from workspace.processes import live_pid, write_pid_file
from workspace.settings import Settings

TRIGGERS_DIR = "triggers"
WATCHER_PID = "watcher.pid"
WATCHING = "watching.json"  # the names of the triggers the running watcher watches
BLOB_TRIGGER, SCHEDULE_TRIGGER = "BlobEventsTrigger", "ScheduleTrigger"
SUPPORTED_TRIGGERS = (BLOB_TRIGGER, SCHEDULE_TRIGGER)
# Settings a trigger names that the local target has no value for (the storage account's
# resource id of a blob trigger's scope).
TRIGGER_LOCAL_EMPTY = frozenset({"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP",
                                 "AZURE_STORAGE_ACCOUNT"})


class WatcherRunning(ConfigError):
    """Another watcher watches already."""


def load_triggers(settings: Settings, directory: Path | None = None) -> dict[str, Document]:
    """The trigger definitions of adf/triggers/, placeholders filled, by name."""
    from adf.definitions import _read

    folder = (Path(directory) if directory else DEFINITIONS_DIR) / TRIGGERS_DIR
    values = placeholder_values(settings)
    allow = TRIGGER_LOCAL_EMPTY if settings.is_local else frozenset()
    found = {}
    for path in sorted(folder.glob("*.json")):
        document = fill(_read(path), values, allow)
        found[document.name] = document
    return found


def trigger_pipelines(document: Document) -> list[tuple[str, dict]]:
    """(pipeline name, parameters) of each pipeline the trigger starts."""
    return [((p.get("pipelineReference") or {}).get("referenceName"), p.get("parameters") or {})
            for p in document.properties.get("pipelines") or []]


def describe(document: Document) -> str:
    """What the trigger reacts to, in one line."""
    props = document.properties.get("typeProperties") or {}
    if document.properties.get("type") == BLOB_TRIGGER:
        return f"blobs created under {props.get('blobPathBeginsWith')}"
    recurrence = props.get("recurrence") or {}
    schedule = recurrence.get("schedule") or {}
    at = ""
    if schedule:
        at = " at " + ", ".join(f"{h:02d}:{m:02d}" for h in schedule.get("hours", [0])
                                for m in schedule.get("minutes", [0]))
    return (f"every {recurrence.get('interval', 1)} {str(recurrence.get('frequency', '')).lower()}"
            f"{at} {recurrence.get('timeZone', 'UTC')}")


@dataclass
class BlobPath:
    container: str
    prefix: str

    @classmethod
    def parse(cls, text: str, where: str) -> "BlobPath":
        """`/<container>/blobs/<folder>/` (how a BlobEventsTrigger names a path)."""
        parts = str(text).strip("/").split("/", 2)
        if len(parts) < 2 or parts[1] != "blobs":
            raise ConfigError(f"{where}: blobPathBeginsWith '{text}' is not "
                              "/<container>/blobs/<folder>/.")
        return cls(parts[0], parts[2] if len(parts) > 2 else "")


class Ledger:
    """What one trigger started: blob events by `<blob>@<etag>`, schedule slots by time."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text())
        except FileNotFoundError:
            self.data = {"events": {}, "slots": {}}

    def __contains__(self, key: str) -> bool:
        return key in self.data["events"] or key in self.data["slots"]

    def claim(self, key: str, kind: str = "events", **detail) -> None:
        self.data[kind][key] = {"at": now(), **detail}
        self.save()

    def settle(self, key: str, kind: str = "events", **detail) -> None:
        self.data[kind][key].update(detail)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)


class Watcher:
    """Watches the started triggers until `stop` is set; `start_run(pipeline, parameters)`
    starts a run and returns its id."""

    def __init__(self, settings: Settings, triggers: dict[str, Document],
                 start_run: Callable[[str, dict], str], say: Callable[[str], None],
                 poll_seconds: float = 2.0):
        self.settings, self.triggers, self.start_run = settings, triggers, start_run
        self.say, self.poll_seconds = say, poll_seconds
        self.stop = threading.Event()
        self.state_dir = settings.local_path / "adf" / TRIGGERS_DIR
        self.next_slot: dict[str, datetime] = {}
        for name, document in triggers.items():
            kind = document.properties.get("type")
            if kind not in SUPPORTED_TRIGGERS:
                raise ConfigError(f"Trigger '{name}' is a {kind}; the local target runs "
                                  f"{' and '.join(SUPPORTED_TRIGGERS)}.")

    def ledger(self, name: str) -> Ledger:
        return Ledger(self.state_dir / f"{name}.json")

    def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.state_dir / WATCHER_PID
        other = live_pid(pid_file, "adf")
        if other is not None and other != os.getpid():
            raise WatcherRunning(f"Triggers are being watched already (process {other}).",
                                 "Stop it with `python -m adf triggers stop`, or use that one.")
        write_pid_file(pid_file, os.getpid())
        watching = self.state_dir / WATCHING
        try:
            self.baseline()
            write_json(watching, sorted(self.triggers))  # Started once events count
            while not self.stop.is_set():
                self.tick()
                self.stop.wait(self.poll_seconds)
        finally:
            watching.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)

    def baseline(self) -> None:
        """Blobs there before the watch starts are no events; the first slot is the next one."""
        start = datetime.now(timezone.utc)
        for name, document in self.triggers.items():
            if document.properties["type"] == BLOB_TRIGGER:
                ledger = self.ledger(name)
                for blob in self.blobs(name, document):
                    key = f"{blob.name}@{blob.etag}"
                    if key not in ledger:
                        ledger.claim(key, run_id=None, note="there before the trigger started")
            else:
                self.next_slot[name] = next_time(document, start, name)

    def blobs(self, name: str, document: Document):
        from dataclasses import replace

        from workspace.datastore import Datastore

        props = document.properties["typeProperties"]
        path = BlobPath.parse(props.get("blobPathBeginsWith", ""), f"trigger '{name}'")
        store = Datastore.from_settings(replace(self.settings, container=path.container))
        for blob in store.list(path.prefix):
            if props.get("ignoreEmptyBlobs", True) and blob.size == 0:
                continue
            if blob.name.endswith("/"):
                continue
            yield blob

    def tick(self) -> None:
        for name, document in self.triggers.items():
            try:
                if document.properties["type"] == BLOB_TRIGGER:
                    self.blob_events(name, document)
                else:
                    self.schedule(name, document)
            except ProjectError as exc:  # storage away for a moment: say so, go on watching
                self.say(f"trigger {name}: {exc.message}")

    def blob_events(self, name: str, document: Document) -> None:
        ledger = self.ledger(name)
        container = BlobPath.parse(document.properties["typeProperties"]["blobPathBeginsWith"],
                                   name).container
        for blob in self.blobs(name, document):
            key = f"{blob.name}@{blob.etag}"
            if key in ledger:
                continue
            ledger.claim(key, run_id=None)  # claimed first: never a second run for it
            folder, _, file_name = blob.name.rpartition("/")
            body = {"folderPath": f"{container}/{folder}" if folder else container,
                    "fileName": file_name}
            ids = self.fire(name, document, body)
            ledger.settle(key, run_id=ids[0] if len(ids) == 1 else ids)

    def schedule(self, name: str, document: Document) -> None:
        due = self.next_slot[name]
        if datetime.now(timezone.utc) < due:
            return
        ledger, slot = self.ledger(name), due.isoformat()
        self.next_slot[name] = next_time(document, due, name)
        if slot in ledger:
            return
        ledger.claim(slot, "slots", run_id=None)
        ledger.settle(slot, "slots", run_id=self.fire(name, document, None))

    def fire(self, name: str, document: Document, body: dict | None) -> list[str]:
        ids = []
        for pipeline, parameters in trigger_pipelines(document):
            context = PipelineContext(pipeline, "trigger", {}, trigger_type=document.properties["type"],
                                      trigger_name=name, trigger_body=body)
            values = evaluate(parameters, context, f"trigger '{name}' parameters")
            try:
                run_id = self.start_run(pipeline, values)
            except ProjectError as exc:
                self.say(f"trigger {name}: {pipeline} did not start: {exc.message}")
                ids.append(None)
                continue
            what = f" for {body['folderPath']}/{body['fileName']}" if body else ""
            self.say(f"trigger {name}: started {pipeline} run {run_id}{what}")
            ids.append(run_id)
        return ids


def next_time(document: Document, after: datetime, name: str) -> datetime:
    """The first time of the trigger's recurrence strictly after `after` (UTC)."""
    recurrence = (document.properties.get("typeProperties") or {}).get("recurrence") or {}
    frequency = recurrence.get("frequency")
    interval = int(recurrence.get("interval", 1))
    if str(recurrence.get("timeZone", "UTC")) not in ("UTC", "Coordinated Universal Time"):
        raise ConfigError(f"Trigger '{name}': the local target keeps schedules in UTC "
                          f"(timeZone '{recurrence.get('timeZone')}').")
    start = datetime.fromisoformat(str(recurrence.get("startTime", "2000-01-01T00:00:00Z"))
                                   .replace("Z", "+00:00"))
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    if frequency in ("Minute", "Hour"):
        step = timedelta(minutes=interval) if frequency == "Minute" else timedelta(hours=interval)
        if after < start:
            return start
        return start + step * (int((after - start) / step) + 1)
    if frequency == "Day":
        schedule = recurrence.get("schedule") or {}
        hours = sorted(schedule.get("hours") or [start.hour])
        minutes = sorted(schedule.get("minutes") or [start.minute])
        day = max(after, start).date()
        while True:
            if (day - start.date()).days % interval == 0:
                for hour in hours:
                    for minute in minutes:
                        moment = datetime(day.year, day.month, day.day, hour, minute,
                                          tzinfo=timezone.utc)
                        if moment > after and moment >= start:
                            return moment
            day += timedelta(days=1)
    raise ConfigError(f"Trigger '{name}': recurrence frequency '{frequency}' is not run "
                      "locally (Minute, Hour and Day are).")


def stop_watcher(settings: Settings) -> bool:
    """SIGTERM to the running watcher; False if none runs."""
    pid = live_pid(settings.local_path / "adf" / TRIGGERS_DIR / WATCHER_PID, "adf")
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    return True


def watched(settings: Settings) -> set[str]:
    """The triggers the running watcher watches (none when no watcher runs)."""
    folder = settings.local_path / "adf" / TRIGGERS_DIR
    if live_pid(folder / WATCHER_PID, "adf") is None:
        return set()
    try:
        return set(json.loads((folder / WATCHING).read_text()))
    except (FileNotFoundError, ValueError):
        return set()
