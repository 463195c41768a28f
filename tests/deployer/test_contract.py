"""The contract between the application layer and the backends (deployer/backends/base.py,
deployer/entities.py), checked without a service."""
from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from deployer.backends.base import Backend
from deployer.entities import JobSummary, JobUpdate, job_output_dir, predictions_target
from workspace.errors import ConfigError


@pytest.mark.parametrize("missing", ["cancel_job", "download_output"])
def test_a_backend_without_a_job_operation_cannot_be_made(missing):
    """Every job operation is part of the interface: a backend that lacks one fails when it
    is made, not when a user first cancels or downloads."""
    from deployer.backends.local import LocalBackend

    members = {k: v for k, v in vars(LocalBackend).items() if k != missing}
    incomplete = type("Incomplete", (Backend,), {
        name: member for name, member in members.items()
        if name in Backend.__abstractmethods__})
    with pytest.raises(TypeError, match=missing):
        incomplete()


# ---------------------------------------------------------------------- predictions


def test_a_jobs_predictions_go_to_one_place_and_never_over_another_jobs(tmp_path):
    assert job_output_dir("j1") == Path("outputs") / "j1"
    assert job_output_dir("j1", tmp_path / "res") == tmp_path / "res"
    target = predictions_target(tmp_path / "res", "scores.csv")
    assert target == tmp_path / "res" / "scores.csv"
    target.parent.mkdir()
    target.write_text("0,a,x.csv\n")
    with pytest.raises(ConfigError, match="holds another job's predictions") as err:
        predictions_target(tmp_path / "res", "scores.csv")
    assert "--output-dir" in err.value.hint


def test_predictions_are_shown_as_the_download_else_the_stored_output():
    job = JobSummary(name="j", status="Completed", endpoint="e", deployment="d", input="i",
                     output_uri="azureml://datastores/ds/paths/batch-jobs/j/p.csv")
    assert job.predictions_at == job.output_uri
    job.predictions_file = "outputs/j/p.csv"
    assert job.predictions_at == "outputs/j/p.csv"


# ---------------------------------------------------------------------- job updates


def display():
    from rich.console import Console

    from deployer.cli import _JobProgress

    out, lines = io.StringIO(), []
    return _JobProgress(Console(file=out, force_terminal=True, width=160), lines.append), out, lines


def test_the_local_job_record_becomes_a_typed_update():
    from deployer.backends.local import job_update

    record = {"name": "j", "status": "Running", "mini_batches_total": 4, "mini_batches_done": 2,
              "mini_batches_failed": 1, "files_total": 4, "files_done": 3, "files_failed": 1,
              "rows_scored": 100, "rows_in_progress": 20, "retries": 2}
    update = job_update(record)
    assert update == JobUpdate(
        job="j", status="Running", mini_batches_total=4, mini_batches_done=2,
        mini_batches_failed=1, files_total=4, files_done=3, files_failed=1, rows_scored=100,
        rows_in_progress=20, retries=2,
        text="job j: Running, mini-batches 3/4, rows 100, failed files 1, retries 2")
    assert not update.ended and job_update({**record, "status": "Failed"}).ended


def test_the_live_bar_ends_with_the_jobs_rows_and_their_rate():
    from deployer.backends.local import job_update

    progress, out, lines = display()
    running = {"name": "j", "status": "Running", "files_total": 1, "files_done": 0, "rows_scored": 0}
    progress.update(job_update(running))
    time.sleep(0.2)
    progress.update(job_update({**running, "status": "Completed", "files_done": 1,
                                "rows_scored": 150}))
    assert lines == ["job j: Running", "job j: Completed"]  # the state lines around the bar
    # Rows that arrived only with the final update still give a rate, not "0 rows/s".
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out.getvalue())
    assert re.search(r"1/1 files · 150 rows · [1-9][\d,]* rows/s", shown)


def test_updates_without_counts_are_lines_and_other_steps_print_above_the_bar():
    progress, out, lines = display()
    progress.update(JobUpdate("j", "Queued", "job j: Queued (queued for nodes)"))
    progress.update(JobUpdate("j", "Running", "job j: Running (scoring)"))  # Azure: no counts
    assert lines == ["job j: Queued (queued for nodes)", "job j: Running (scoring)"]
    assert progress.bar is None and out.getvalue() == ""
    progress.update(JobUpdate("k", "Running", "job k: Running", files_total=2, files_done=0))
    progress.say("uploading logs")
    progress.stop()
    assert lines[-1] == "job k: Running" and "uploading logs" in out.getvalue()
