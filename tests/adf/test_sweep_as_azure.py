"""A sweep's collectors against storage answering as Azure does
(tests/support/azure_storage_proxy.py): two collectors at once, each counting every line
once, and `sweep status` over what they recorded."""
from __future__ import annotations

import json
from dataclasses import replace

from adf.sweep import LEDGER_NAME, SweepRecord, Sweeps, reports_path
from tests.adf.test_sweep import cli, report
from tests.conftest import container_datastore, isolated_settings
from workspace.datastore import Datastore
from workspace.queues import SweepQueues, queue_service

SWEEP_ID = "sw-20260101-000000-abcd"


def result(line: int, run: str) -> dict:
    return {"line": line, "params": {"epochs": 10}, "runId": run * 32, "manifestPath": "m",
            "metrics": {"test_accuracy": 0.9, "test_f1_macro": 0.9}, "seconds": 1.0,
            "attempt": 1, "runner": 1}


def test_collectors_at_once_count_every_line_once_on_azure(azure_storage, azure_queue, tmp_path):
    """Collector A reads the ledger and the reports, then collector B appends before A does:
    the service refuses A's append (its position condition), A reads B's part and finds
    nothing left to add. Runners' repeats (a line trained twice, a block sent twice) and a
    failure before a result count once."""
    from adf.local_runner import LocalBackend

    settings = replace(isolated_settings(azure_storage, tmp_path),
                       azurite_queue_port=str(azure_queue.port))
    store = container_datastore(settings)
    record = SweepRecord(SWEEP_ID, "2026-01-01T00:00:00+00:00", "grid.csv", "local", 2,
                         [{"line": n, "params": {"epochs": 10}} for n in (1, 2, 3)],
                         reports=reports_path(SWEEP_ID, store.container))
    queues = SweepQueues(queue_service(settings), SWEEP_ID)
    queues.create()

    def collector() -> Sweeps:
        return Sweeps(LocalBackend(settings), Datastore.from_settings(settings),
                      queue_service(settings))

    a, b = collector(), collector()
    a.save(record)
    report(store, record.reports, "runner-1", ("results", result(1, "a")),
           ("failures", {"line": 2, "error": "boom", "attempts": 1}))
    assert sorted(a.collect(SWEEP_ID).done) == ["1"]
    report(store, record.reports, "runner-2", ("results", result(2, "b")),
           ("results", result(1, "c")))                               # line 1 trained again
    report(store, record.reports, "runner-1", ("results", result(3, "d")),
           ("results", result(3, "d")))                               # a block sent twice

    append, conflicts = a.store.append, []

    def b_appends_first(name, data, position):
        if not conflicts:
            conflicts.append(b.collect(SWEEP_ID))
        append(name, data, position)

    a.store.append = b_appends_first
    ledger = a.collect(SWEEP_ID)
    assert conflicts, "B did not collect in between"
    assert {k: v["runId"][0] for k, v in ledger.done.items()} == {"1": "a", "2": "b", "3": "d"}
    assert ledger.failed == {}
    assert b.load_ledger(SWEEP_ID).done == ledger.done
    lines = store.read_bytes(f"sweeps/{SWEEP_ID}/{LEDGER_NAME}").splitlines()
    records = [json.loads(text)["body"]["line"] for text in lines if b'"kind"' in text]
    assert sorted(records) == [1, 2, 2, 3]   # each result once (and line 2's failure)

    shown = cli(settings, "adf", "sweep", "status", SWEEP_ID)
    assert "done 3 + failed 0 = 3 == total 3" in shown.stdout, shown.stdout + shown.stderr
    queues.delete()
