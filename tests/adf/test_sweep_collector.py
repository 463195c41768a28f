"""The sweep's collector (runners' report blobs → ledger.jsonl) killed with SIGKILL around
its append: nothing reported is lost, nothing is counted twice, and the next collector
(another process) reads on from what the ledger recorded."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from adf.sweep import LEDGER_NAME, SweepRecord, reports_path
from tests.adf.test_sweep import report, sweep_env, sweep_settings  # noqa: F401
from tests.conftest import container_datastore
from workspace.settings import REPO_ROOT

SWEEP_ID = "sw-20260101-000000-dead"
KILLED = textwrap.dedent("""
    import os, signal, sys
    from adf.local_runner import LocalBackend
    from adf.sweep import Sweeps
    from workspace.datastore import Datastore
    from workspace.queues import queue_service
    from workspace.settings import Settings

    settings = Settings.load()
    store = Datastore.from_settings(settings)
    append = store.append

    def killed_around_append(name, data, position):
        if sys.argv[1] == "after":
            append(name, data, position)
        os.kill(os.getpid(), signal.SIGKILL)

    store.append = killed_around_append
    Sweeps(LocalBackend(settings), store, queue_service(settings)).collect(sys.argv[2])
""")


def result(line: int, run: str) -> dict:
    return {"line": line, "params": {}, "runId": run, "manifestPath": "m", "seconds": 1.0,
            "metrics": {"test_accuracy": 0.9, "test_f1_macro": 0.9}, "attempt": 1}


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_collector_killed_around_its_append_loses_and_doubles_nothing(sweep_settings, when):
    from adf.local_runner import LocalBackend
    from adf.sweep import Sweeps
    from workspace.queues import queue_service

    store = container_datastore(sweep_settings)
    sweeps = Sweeps(LocalBackend(sweep_settings), store, queue_service(sweep_settings))
    record = SweepRecord(SWEEP_ID, "", "grid.csv", "local", 2,
                         [{"line": n, "params": {}} for n in (1, 2, 3, 4)],
                         reports=reports_path(SWEEP_ID, store.container))
    sweeps.save(record)
    report(store, record.reports, "runner-1", ("results", result(1, "a")),
           ("failures", {"line": 2, "error": "boom"}))
    assert sorted(sweeps.collect(SWEEP_ID).done) == ["1"]
    report(store, record.reports, "runner-1", ("results", result(3, "c")))
    report(store, record.reports, "runner-2", ("results", result(2, "b")),
           ("results", result(1, "again")))

    killed = subprocess.run([sys.executable, "-c", KILLED, when, SWEEP_ID], cwd=REPO_ROOT,
                            env=sweep_env(sweep_settings), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ledger_blob = f"sweeps/{SWEEP_ID}/{LEDGER_NAME}"
    appended = store.read_bytes(ledger_blob).count(b'"b"') == 1
    assert appended == (when == "after")   # the killed collector's block is there, or not

    report(store, record.reports, "runner-2", ("results", result(4, "d")))
    fresh = Sweeps(LocalBackend(sweep_settings), store, queue_service(sweep_settings))
    ledger = fresh.collect(SWEEP_ID)
    assert {k: v["runId"] for k, v in ledger.done.items()} == \
        {"1": "a", "2": "b", "3": "c", "4": "d"}
    assert ledger.failed == {}
    # The earlier collector reads on from its own cache: the same ledger.
    assert sweeps.collect(SWEEP_ID).done == ledger.done
    lines = [json.loads(t) for t in store.read_bytes(ledger_blob).splitlines()]
    results = [e["body"]["line"] for e in lines if e.get("kind") == "results"]
    assert sorted(results) == [1, 2, 3, 4]   # each line's result recorded once
