"""Sweeps under faults, driven as a user drives them: runners that stop once every line is
accounted for, `sweep start` stopped by signals, `sweep cancel`, corrupted sweep blobs, and
a queue service that goes away while `start` follows the sweep."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import pytest

from adf.sweep import LEDGER_NAME, RECORD_NAME, START_LOCK, SWEEPS_PREFIX, SweepRecord, Sweeps
from tests.adf.test_sweep import cli, queue_names, start_runner, sweep_env, sweep_settings  # noqa: F401
from tests.conftest import container_datastore, isolated_settings
from workspace.datastore import Datastore
from workspace.errors import ExitCode
from workspace.queues import SweepQueues, queue_service
from workspace.settings import REPO_ROOT


def make_sweeps(settings) -> Sweeps:
    from adf.local_runner import LocalBackend

    return Sweeps(LocalBackend(settings), Datastore.from_settings(settings),
                  queue_service(settings))


def start_process(settings, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "adf", "sweep", "start", *args],
                            cwd=REPO_ROOT, env=sweep_env(settings), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def new_work_queue(settings, before: set[str], timeout: float = 120) -> str:
    """The work queue a `sweep start` is filling, once it holds two messages (so that its
    count of lines sent, which follows each send's answer, is above 0)."""
    service = queue_service(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in queue_names(settings) - before:
            if name.endswith("-work") and \
                    service.get_queue_client(name).get_queue_properties() \
                    .approximate_message_count > 1:
                return name
        time.sleep(0.05)
    raise AssertionError("`sweep start` queued nothing")


def big_grid(tmp_path, lines: int = 3000):
    grid = tmp_path / "big.csv"
    grid.write_text("epochs,seed\n" + "".join(f"{1 + n % 50},{n}\n" for n in range(lines)))
    return grid


# ------------------------------------------------------------------ done when the work is done


@pytest.mark.slow
def test_runners_stop_once_every_line_is_accounted_for(sweep_settings, azurite, tmp_path):
    """A queue marked as fully queued: once its last line is reported, both runners stop at
    once, though the grace period (for queues without the mark) is far longer."""
    sweep_id = f"sw-{uuid.uuid4().hex[:12]}"
    queues = SweepQueues(queue_service(sweep_settings), sweep_id)
    queues.create()
    for line in (2, 3):
        queues.send("work", {"sweep": sweep_id, "line": line, "params": {"epochs": 10}})
    queues.mark_queued(2)
    runners = [start_runner(sweep_settings, azurite, sweep_id, tmp_path / name, name, 30,
                            grace_period=900) for name in ("runner-a", "runner-b")]
    try:
        outs = [runner.communicate(timeout=240)[0] for runner in runners]
    finally:
        for runner in runners:
            runner.kill()
    assert [runner.returncode for runner in runners] == [0, 0], outs
    for out in outs:
        assert "all 2 line(s) of the sweep are accounted for (done or failed); stopping" in out
        assert "has been empty for" not in out
    done = sum(json.loads((tmp_path / n / "outputs.json").read_text())["done"]
               for n in ("runner-a", "runner-b"))
    assert done == 2
    queues.delete()


# ------------------------------------------------------------------ corrupted blobs


def test_a_corrupted_sweep_blob_is_skipped_by_list_and_named_by_status(sweep_settings):
    sweeps = make_sweeps(sweep_settings)
    store = sweeps.store
    good = SweepRecord("sw-20250101-000003-0003", "2025-01-01T00:00:03+00:00", "g.csv",
                       "local", 1, [{"line": 2, "params": {"epochs": 10}}])
    sweeps.save(good)
    store.create_append_blob(f"sweeps/{good.sweep_id}/{LEDGER_NAME}")
    bad_record, bad_ledger = "sw-20250101-000002-0002", "sw-20250101-000001-0001"
    store.upload_bytes(b'{"sweep_id": "sw-2025', f"sweeps/{bad_record}/{RECORD_NAME}")
    sweeps.save(replace(good, sweep_id=bad_ledger))
    store.upload_bytes(b'["not", "a ledger"]', f"sweeps/{bad_ledger}/{LEDGER_NAME}")

    listed = cli(sweep_settings, "adf", "sweep", "list")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert re.search(rf"^{good.sweep_id}\s+\S+\s+1\s+0\s+0\s", listed.stdout, re.M), listed.stdout
    for sweep_id, blob in ((bad_record, RECORD_NAME), (bad_ledger, LEDGER_NAME)):
        named = f"{sweep_settings.container}/sweeps/{sweep_id}/{blob}"
        assert f"warning: skipped sweep {sweep_id}: Blob '{named}' is corrupted" in \
            listed.stderr, listed.stderr
        assert sweep_id not in listed.stdout
        status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
        assert status.returncode == ExitCode.FAILED, status.stdout + status.stderr
        assert f"error: Blob '{named}' is corrupted" in status.stderr
        assert "Traceback" not in status.stderr


# ------------------------------------------------------------------ interrupted start, cancel


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_start_interrupted_while_queueing_cancels_its_sweep(sweep_settings, tmp_path, signum):
    before = queue_names(sweep_settings)
    start = start_process(sweep_settings, "--grid", str(big_grid(tmp_path)), "--no-wait")
    try:
        work = new_work_queue(sweep_settings, before)
        start.send_signal(signum)
        out, err = start.communicate(timeout=120)
    finally:
        start.kill()
    sweep_id = work[:-len("-work")]
    assert start.returncode == ExitCode.RUN_FAILED, out + err
    queued = int(re.search(rf"Sweep {sweep_id} canceled: `sweep start` was interrupted after "
                           r"queueing (\d+) of 3000 lines", err).group(1))
    assert 0 < queued < 3000 and "Traceback" not in err
    assert not {q for q in queue_names(sweep_settings) if q.startswith(sweep_id)}
    assert not (sweep_settings.local_path / "adf" / "runs").exists()   # no run was started

    status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
    assert status.returncode == ExitCode.RUN_FAILED, status.stdout + status.stderr
    assert "its `sweep start` was interrupted while queueing" in status.stdout
    assert f"Sweep {sweep_id} was canceled at" in status.stderr
    again = cli(sweep_settings, "adf", "sweep", "cancel", sweep_id)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Sweep {sweep_id} was already canceled at" in again.stdout


@pytest.mark.slow
def test_a_killed_start_leaves_a_stranded_sweep_that_cancel_cleans_up(sweep_settings, tmp_path):
    before = queue_names(sweep_settings)
    start = start_process(sweep_settings, "--grid", str(big_grid(tmp_path)), "--no-wait")
    try:
        work = new_work_queue(sweep_settings, before)
    finally:
        start.kill()
        start.wait()
    sweep_id = work[:-len("-work")]

    # Its lease on start.lock outlives it by at most LEASE_SECONDS: until then it is queueing
    # as far as anyone can tell, and cancel leaves it to its start.
    busy = cli(sweep_settings, "adf", "sweep", "cancel", sweep_id)
    assert busy.returncode == ExitCode.FAILED, busy.stdout + busy.stderr
    assert "is being queued by a `sweep start` that is still running" in busy.stderr
    status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
    assert status.returncode == 0 and "Queueing:" in status.stdout, status.stdout
    # The lease ends as it would LEASE_SECONDS after the kill: broken with no break period
    # (Lease Blob, action=break, x-ms-lease-break-period: 0), not waited for.
    from azure.storage.blob import BlobLeaseClient

    lock = Datastore.from_settings(sweep_settings).client.get_blob_client(
        f"{SWEEPS_PREFIX}/{sweep_id}/{START_LOCK}")
    BlobLeaseClient(lock).break_lease(lease_break_period=0)
    status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
    assert "Stranded" in status.stdout, status.stdout
    assert status.returncode == ExitCode.RUN_FAILED, status.stdout + status.stderr
    assert f"Sweep {sweep_id} is stranded" in status.stderr
    assert f"python -m adf sweep cancel {sweep_id}" in status.stderr

    cancel = cli(sweep_settings, "adf", "sweep", "cancel", sweep_id)
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert f"deleted 1 queue(s) of {sweep_id}" in cancel.stdout
    assert f"Sweep {sweep_id} canceled." in cancel.stdout
    assert not {q for q in queue_names(sweep_settings) if q.startswith(sweep_id)}
    again = cli(sweep_settings, "adf", "sweep", "cancel", sweep_id)
    assert again.returncode == 0 and "was already canceled" in again.stdout, again.stdout
    status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
    assert status.returncode == ExitCode.RUN_FAILED and "was canceled at" in status.stderr


@pytest.mark.slow
def test_cancel_stops_a_running_sweep(sweep_settings, tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs\n" + "".join(f"{e}\n" for e in range(100, 112)))
    started = cli(sweep_settings, "adf", "sweep", "start", "--grid", str(grid), "--workers",
                  "2", "--no-wait")
    assert started.returncode == 0, started.stdout + started.stderr
    sweep_id = re.search(r"Started sweep ([\w-]+):", started.stdout).group(1)
    run_id = re.search(r"pipeline run (\S+) \(local\)", started.stdout).group(1)

    cancel = cli(sweep_settings, "adf", "sweep", "cancel")          # the newest sweep
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    assert f"pipeline run {run_id} Cancelled" in cancel.stdout
    assert f"deleted 1 queue(s) of {sweep_id}" in cancel.stdout
    run = json.loads((sweep_settings.local_path / "adf" / "runs" / run_id / "run.json")
                     .read_text())
    assert run["status"] == "Cancelled"
    status = cli(sweep_settings, "adf", "sweep", "status", sweep_id)
    assert status.returncode == ExitCode.RUN_FAILED, status.stdout + status.stderr
    assert f"Sweep {sweep_id} was canceled at" in status.stderr
    again = cli(sweep_settings, "adf", "sweep", "cancel", sweep_id)
    assert again.returncode == 0 and "was already canceled" in again.stdout


# ------------------------------------------------------------------ the queue service goes away


@pytest.mark.slow
def test_start_rides_out_a_queue_service_outage_while_following(azurite, tmp_path):
    """The queue service (persisting its data) stops while `sweep start` follows the sweep
    and comes back on the same port: start reports it, waits, and ends as usual."""
    from workspace.queues import AzuriteQueueProcess

    service = AzuriteQueueProcess(location=tmp_path / "queue-data").start()
    try:
        settings = replace(isolated_settings(azurite, tmp_path),
                           azurite_queue_port=str(service.port))
        container_datastore(settings)
        grid = tmp_path / "grid.csv"
        grid.write_text("epochs,seed\n20,1\n20,2\n")
        start = start_process(settings, "--grid", str(grid), "--workers", "1", "--poll", "0.2")
        seen = []
        for text in start.stdout:
            seen.append(text)
            if text.startswith("Started sweep"):
                service.stop()
            if "storage unreachable, retrying" in text:
                break
        service = AzuriteQueueProcess(port=service.port, location=tmp_path / "queue-data").start()
        rest, err = start.communicate(timeout=300)
        out = "".join(seen) + rest
        assert start.returncode == 0, out + err
        assert "Traceback" not in err and "storage reachable again after" in out
        assert "done 2 + failed 0 = 2 == total 2" in out
    finally:
        service.stop()
