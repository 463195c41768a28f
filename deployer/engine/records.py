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


def write_overview(job_dir: Path, record: dict) -> None:
    """`logs/job_progress_overview.txt` (Azure ML's name) from the record's counts."""
    done, failed = record.get("mini_batches_done") or 0, record.get("mini_batches_failed") or 0
    text = (f"Job: {record['name']}\n"
            f"Status: {record['status']}\n"
            + (f"Reason: {record['error']}\n" if record.get("error") else "")
            + f"Total number of mini batches: {record.get('mini_batches_total') or 0}\n"
            f"Number of mini batches processed: {done + failed}\n"
            f"Number of mini batches succeeded: {done}\n"
            f"Number of mini batches failed: {failed}\n"
            f"Number of mini batch retries: {record.get('retries') or 0}\n"
            f"Total number of items: {record.get('files_total') or 0}\n"
            f"Number of failed items: {record.get('files_failed') or 0}\n"
            f"Number of rows scored: {record.get('rows_scored') or 0}\n"
            f"Error threshold: {(record.get('settings') or {}).get('error_threshold', -1)}\n"
            f"Updated: {now()}\n")
    logs = Path(job_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / "job_progress_overview.txt").write_text(text)


def append_user_error(job_dir: Path, line: str) -> None:
    """A line of `logs/user/error.txt`, the job's list of what failed or was not scored."""
    path = Path(job_dir) / "logs" / "user" / "error.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(line.rstrip() + "\n")
