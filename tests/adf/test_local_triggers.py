"""`python -m adf triggers start` on the local target, as a process against Azurite: a blob
created under incoming/ starts the trigger's pipeline once, with the blob as its input; blobs
there before the watch, empty blobs and blobs outside incoming/ start nothing; after a
stop and a restart no blob is run twice. The pipeline is a stand-in named score-iris that
returns its input (the scoring itself: tests/adf/test_score_pipeline.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adf.definitions import Document
from adf.local_triggers import next_time
from tests.conftest import container_datastore
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT

pytestmark = pytest.mark.azurite

STAND_IN = {
    "name": "score-iris",
    "properties": {
        "parameters": {"input": {"type": "String"}, "inputType": {"type": "String", "defaultValue": "UriFile"}},
        "activities": [{"name": "Return", "type": "SetVariable", "typeProperties": {
            "variableName": "pipelineReturnValue", "setSystemVariable": True,
            "value": [{"key": "input", "value": {"type": "Expression",
                                                 "content": "@pipeline().parameters.input"}}]}}]}}


@pytest.fixture
def definitions(tmp_path) -> Path:
    folder = tmp_path / "adf"
    (folder / "triggers").mkdir(parents=True)
    (folder / "score-pipeline.json").write_text(json.dumps(STAND_IN))
    for name in ("score-iris-on-upload.json", "score-iris-nightly.json"):
        shutil.copy(REPO_ROOT / "adf" / "triggers" / name, folder / "triggers" / name)
    return folder


class Adf:
    def __init__(self, settings, definitions: Path):
        self.definitions = definitions
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AML_"))}
        self.env.update({"PYTHONPATH": str(REPO_ROOT), "TARGET": "local",
                         "AZURITE_BLOB_PORT": settings.azurite_port,
                         "DATASTORE_CONTAINER": settings.container,
                         "LOCAL_DIR": settings.local_dir})

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "adf", *args], env=self.env, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def watch(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "adf", "triggers", "start", "score-iris-on-upload",
             "--poll", "0.2", "--definitions", str(self.definitions)],
            env=self.env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while "Started" not in self.run("triggers", "list", "--definitions",
                                        str(self.definitions)).stdout.split("score-iris-on-upload", 1)[-1][:20]:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the watcher did not start"
            time.sleep(0.2)
        return process

    def inputs(self) -> list[str]:
        """The input of every finished run of the stand-in, oldest first."""
        listed = json.loads(self.run("runs", "list", "-o", "json").stdout)["runs"]
        return [r["parameters"]["input"] for r in reversed(listed)]


def wait_for(condition, what: str, seconds: float = 60, watcher=None):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            if watcher is not None:
                watcher.terminate()
                what += f"\n{watcher.args} rc={watcher.poll()}\n" + "\n".join(watcher.communicate(timeout=30))
            raise AssertionError(what)
        time.sleep(0.2)


def test_each_new_blob_in_incoming_is_scored_once_even_across_a_restart(settings, definitions):
    store = container_datastore(settings)
    store.upload_bytes(b"x\n", "incoming/before.csv")        # there before the watch: no event
    adf = Adf(settings, definitions)
    watcher = adf.watch()
    try:
        store.upload_bytes(b"a\n", "incoming/a.csv")
        store.upload_bytes(b"", "incoming/empty.csv")         # ignoreEmptyBlobs
        store.upload_bytes(b"o\n", "elsewhere/o.csv")         # not under incoming/
        wait_for(lambda: adf.inputs() == ["incoming/a.csv"], "a.csv was not run", watcher=watcher)
        stopped = adf.run("triggers", "stop")
        assert stopped.returncode == 0 and "Watcher stopped." in stopped.stdout
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        assert "started score-iris run" in err and "for " in err and "incoming/a.csv" in err
    finally:
        if watcher.poll() is None:
            watcher.kill()

    watcher = adf.watch()                                    # restarted: nothing runs again
    try:
        store.upload_bytes(b"b\n", "incoming/b.csv")
        wait_for(lambda: len(adf.inputs()) == 2, "b.csv was not run")
        time.sleep(1)  # a few more polls: still one run per blob
        assert adf.inputs() == ["incoming/a.csv", "incoming/b.csv"]
        second = subprocess.run([sys.executable, "-m", "adf", "triggers", "start",
                                 "--definitions", str(definitions)], env=adf.env, cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "being watched already" in second.stderr
    finally:
        watcher.terminate()
        watcher.communicate(timeout=30)
    assert "Stopped" in adf.run("triggers", "list", "--definitions", str(definitions)).stdout
    ledger = json.loads((Path(settings.local_dir) / "adf" / "triggers" /
                         "score-iris-on-upload.json").read_text())["events"]
    assert {k.split("@")[0] for k, v in ledger.items() if v.get("run_id")} == {
        "incoming/a.csv", "incoming/b.csv"}


def _schedule(**recurrence) -> Document:
    return Document(Path("t.json"), {"name": "t", "properties": {
        "type": "ScheduleTrigger", "typeProperties": {"recurrence": recurrence}}})


def test_schedule_times_follow_the_recurrence():
    utc = timezone.utc
    nightly = _schedule(frequency="Day", interval=1, startTime="2026-01-01T02:00:00Z",
                        timeZone="UTC", schedule={"hours": [2], "minutes": [0]})
    assert next_time(nightly, datetime(2026, 3, 5, 1, 0, tzinfo=utc), "t") == datetime(2026, 3, 5, 2, 0, tzinfo=utc)
    assert next_time(nightly, datetime(2026, 3, 5, 2, 0, tzinfo=utc), "t") == datetime(2026, 3, 6, 2, 0, tzinfo=utc)
    every_15 = _schedule(frequency="Minute", interval=15, startTime="2026-01-01T00:00:00Z")
    assert next_time(every_15, datetime(2026, 1, 1, 0, 20, tzinfo=utc), "t") == datetime(2026, 1, 1, 0, 30, tzinfo=utc)
    with pytest.raises(ConfigError, match="frequency 'Month' is not run locally"):
        next_time(_schedule(frequency="Month", interval=1), datetime(2026, 1, 1, tzinfo=utc), "t")
