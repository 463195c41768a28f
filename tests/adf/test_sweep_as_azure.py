"""`sweep status` against storage answering as Azure does (tests/support/azure_storage_proxy.py):
while another collector holds a sweep's ledger lock, status waits for it instead of failing
on Azure's 412 LeaseIdMissing."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

from tests.adf.test_sweep import sweep_env
from tests.conftest import container_datastore, isolated_settings
from tests.support.held_lock import HeldLock
from workspace.queues import SweepQueues, queue_service
from workspace.settings import REPO_ROOT

SWEEP_ID = "sw-20260101-000000-abcd"
RESULT = {"line": 1, "params": {"epochs": 10}, "runId": "r" * 32, "manifestPath": "m",
          "metrics": {"test_accuracy": 0.9, "test_f1_macro": 0.9}, "seconds": 1.0,
          "attempt": 1, "runner": 1}


def test_status_waits_for_another_collector_on_azure(azure_storage, azure_queue, tmp_path):
    settings = replace(isolated_settings(azure_storage, tmp_path),
                       azurite_queue_port=str(azure_queue.port))
    store = container_datastore(settings)
    store.upload_bytes(json.dumps({
        "sweep_id": SWEEP_ID, "created": "2026-01-01T00:00:00+00:00", "grid": "grid.csv",
        "target": "local", "workers": 1, "lines": [{"line": 1, "params": {"epochs": 10}}],
    }).encode(), f"sweeps/{SWEEP_ID}/sweep.json")
    queues = SweepQueues(queue_service(settings), SWEEP_ID)
    queues.create()
    queues.send("results", RESULT)
    lock = f"sweeps/{SWEEP_ID}/ledger.lock"

    with HeldLock(store, lock, "sweep collector"):
        status = subprocess.Popen([sys.executable, "-m", "adf", "sweep", "status", SWEEP_ID],
                                  cwd=REPO_ROOT, env=sweep_env(settings), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # It met the lock as Azure answers it, then either waits or has already failed.
        while not any(path.endswith(lock) for _, path, _ in azure_storage.rewritten):
            assert status.poll() is None, status.communicate()
            time.sleep(0.1)
        assert status.poll() is None, status.communicate()
    out, err = status.communicate(timeout=120)
    assert status.returncode == 0, err
    assert "done 1 + failed 0 = 1 == total 1" in out
    queues.delete()
