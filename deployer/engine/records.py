"""The job record: `<LOCAL_DIR>/deployer/jobs/<job name>/job.json`, written atomically by
the job runner and read by `invoke` (progress), `status` and `jobs show`."""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

RECORD = "job.json"
TERMINAL = {"Completed", "Failed", "Canceled"}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def read_record(job_dir: Path) -> dict:
    return json.loads((Path(job_dir) / RECORD).read_text())


def write_record(job_dir: Path, record: dict) -> None:
    path = Path(job_dir) / RECORD
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)


def update_record(job_dir: Path, **changes) -> dict:
    record = read_record(job_dir)
    record.update(changes)
    write_record(job_dir, record)
    return record


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError, ValueError):
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
