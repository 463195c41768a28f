"""The end of a job that did not end by itself: a runner found dead (killed, out of
memory) or one asked to stop (`cancel`).

A dead runner leaves its record saying Running. Whoever reads the record next (`status`,
`jobs show`, a new `invoke`, `python -m workspace down`) settles it here: its scoring
processes are stopped (named in the record by pid and start time), its part files and its
partial output are removed, every input file is named as not in the output in
`logs/user/error.txt`, and the record and `job_progress_overview.txt` say Failed with
the reason. Nothing of a job that did not complete is ever shown as its output.
"""
from __future__ import annotations

import shutil
import signal
import sys
import time
from pathlib import Path

from deployer.entities import DEFAULT_OUTPUT_FILE
from workspace.processes import ProcessId, read_pid_file, write_pid_file
from deployer.engine.records import (TERMINAL, append_user_error, now, read_record,
                                     write_overview, write_record)

INPUT_LIST = "input_files.txt"  # the job's input file names, one a line, in input order
RUNNER_PID = "runner.pid"  # "<pid> <start time>", written by whoever starts the runner


def runner_of(job_dir: Path, record: dict) -> ProcessId | None:
    """The job's runner, as the runner recorded itself or as it was started."""
    found = ProcessId.from_record(record.get("runner")) or ProcessId.from_record(record.get("pid"))
    return found or read_pid_file(Path(job_dir) / RUNNER_PID)


def write_runner_pid(job_dir: Path, pid: int) -> None:
    write_pid_file(Path(job_dir) / RUNNER_PID, pid)


def workers_of(record: dict) -> list[ProcessId]:
    return [p for p in (ProcessId.from_record(w) for w in record.get("workers") or []) if p]


def stop_workers(record: dict) -> int:
    """SIGKILL the job's scoring processes that are still the ones recorded."""
    return sum(worker.kill() for worker in workers_of(record))


def settle_if_dead(job_dir: Path) -> dict:
    """The job's record; a job whose runner is gone without finishing is settled first."""
    job_dir = Path(job_dir)
    record = read_record(job_dir)
    if record["status"] in TERMINAL:
        return record
    runner = runner_of(job_dir, record)
    if runner is None or runner.alive():
        return record
    time.sleep(0.2)  # the runner may have just written its last record
    record = read_record(job_dir)
    if record["status"] in TERMINAL:
        stop_workers(record)
        return record
    return settle(job_dir, record, "Failed",
                  f"The job runner (pid {runner.pid}) ended without finishing (killed, or out "
                  f"of memory); see {job_dir / 'runner.log'}.")


def settle(job_dir: Path, record: dict, status: str, reason: str) -> dict:
    """End a job whose runner is gone: stop its processes, remove what it left half-done,
    name what was not scored, and record why."""
    stop_workers(record)
    for scratch in ("work", "inputs"):
        shutil.rmtree(job_dir / scratch, ignore_errors=True)
    output = job_dir / "outputs" / (record.get("settings") or {}).get(
        "output_file_name", DEFAULT_OUTPUT_FILE)
    output.unlink(missing_ok=True)
    append_user_error(job_dir, reason)
    name_files_not_in_output(job_dir, record.get("failed_files") or [],
                             "the job ended without finishing")
    record.update(status=status, error=reason, finished=now(), rows_in_progress=0)
    write_record(job_dir, record)
    write_overview(job_dir, record)
    return record


def name_files_not_in_output(job_dir: Path, failed_files: list, why: str) -> None:
    """Name in logs/user/error.txt each input file not already named as failed: a job
    that did not complete has no output, so none of its rows is in one."""
    failed = {f.get("file") for f in failed_files}
    try:
        names = (Path(job_dir) / INPUT_LIST).read_text().splitlines()
    except FileNotFoundError:
        return
    for name in names:
        if name and name not in failed:
            append_user_error(job_dir, f"{name}: not in the output: {why}; a job writes its "
                                       "output only when it completes.")


def cancel(job_dir: Path, grace: float = 30.0) -> dict:
    """Ask the runner to stop (SIGTERM: it abandons its output, stops its processes, names
    what was not scored and records Canceled); if it has not within `grace` seconds, kill
    it and settle the job as Canceled here. Returns the final record."""
    job_dir = Path(job_dir)
    record = settle_if_dead(job_dir)
    if record["status"] in TERMINAL:
        return record
    runner = runner_of(job_dir, record)
    if runner is None or not runner.signal(signal.SIGTERM):
        return settle_if_dead(job_dir)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        record = read_record(job_dir)
        if record["status"] in TERMINAL and not runner.alive():
            return record
        if not runner.alive():
            return settle(job_dir, record, "Canceled", "The job was canceled.")
        time.sleep(0.1)
    runner.kill()
    return settle(job_dir, read_record(job_dir), "Canceled",
                  f"The job was canceled; its runner did not stop within {grace:g} s and was "
                  "killed.")


def settle_dead_jobs(jobs_dir: Path) -> tuple[list[str], list[str]]:
    """Settle every dead job under jobs_dir; returns (settled, still running) job names."""
    settled, running = [], []
    if not Path(jobs_dir).is_dir():
        return settled, running
    for job_dir in sorted(Path(jobs_dir).iterdir()):
        try:
            before = read_record(job_dir)["status"]
            after = settle_if_dead(job_dir)["status"]
        except (OSError, ValueError, KeyError):
            continue
        if before not in TERMINAL:
            (running if after not in TERMINAL else settled).append(job_dir.name)
    return settled, running


def main(argv: list[str]) -> int:
    """`python -m deployer.engine.lifecycle <jobs dir>`: the clean-up `python -m workspace
    down` runs (registered by the local backend): stop what is left of jobs whose runner
    died, mark them Failed, and say which jobs still run."""
    if len(argv) != 1:
        print("usage: python -m deployer.engine.lifecycle <jobs directory>", file=sys.stderr)
        return 2
    settled, running = settle_dead_jobs(Path(argv[0]))
    for name in settled:
        print(f"Job {name}: its runner had died; its processes are stopped and it is marked "
              "Failed.")
    for name in running:
        print(f"Job {name} is still running; stop it with "
              f"`python -m deployer jobs cancel {name}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
