"""The local batch engine's scoring semantics, run the real way: the job runner as a
process (`python -m deployer.engine <job dir>`), scoring in worker processes with the
trainer's MLflow model (a small rule model where the model is not what is tested: retries,
thresholds, links, timeouts), output and logs published to Azurite."""
from __future__ import annotations

import csv
import json
import os
import shutil
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from deployer.engine.records import read_record, write_record
from tests.conftest import IRIS_CSV, isolated_settings, published_copy
from workspace.published import download_model, find_published_run
from workspace.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.slow

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, azurite, trained_source):
    """The session's training run in a container of this module; its model downloaded
    and loaded once."""
    import mlflow.pyfunc

    tmp = tmp_path_factory.mktemp("engine")
    settings = isolated_settings(azurite, tmp)
    store = published_copy(trained_source, settings)
    run = find_published_run(store, settings.model_prefix)
    model_dir = download_model(store, run, tmp / "model")
    return settings, store, model_dir, mlflow.pyfunc.load_model(str(model_dir))


@pytest.fixture(scope="module")
def rule_model(trained, tmp_path_factory):
    """The petal-rule model (tests/support/rule_model.py) with the trained model's signature,
    and loaded: it scores in the tests of the engine's mechanics, where the model is not
    what is tested and the trainer's would cost each job seconds of loading."""
    import mlflow.pyfunc

    from tests.support.rule_model import save_rule_model

    path = save_rule_model(tmp_path_factory.mktemp("rule") / "model", trained[2])
    return path, mlflow.pyfunc.load_model(str(path))


def run_job(tmp_path: Path, settings: Settings, model_dir: Path, input_path: str, *,
            process_timeout: float = 120, **scoring) -> tuple[dict, Path]:
    """Write a job record the way the local backend does and run the job runner process."""
    name = f"batchjob-{uuid.uuid4()}"
    job_dir = tmp_path / name
    job_dir.mkdir(parents=True)
    write_record(job_dir, {
        "name": name, "status": "Queued", "endpoint": "iris-batch", "deployment": "d",
        "model_path": str(model_dir), "input": input_path, "created": "now",
        "settings": {"mini_batch_size": 1, "instance_count": 1, "max_concurrency_per_instance": 1,
                     "max_retries": 0, "timeout": 60, "error_threshold": -1, **scoring},
        "datastore": {"port": int(settings.azurite_port), "container": settings.container,
                      "name": settings.datastore_name},
    })
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "deployer.engine", str(job_dir)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=process_timeout)
    record = read_record(job_dir)
    assert proc.returncode == (0 if record["status"] == "Completed" else 1), proc.stderr
    return record, job_dir


def predictions(job_dir: Path) -> list[list[str]]:
    with (job_dir / "outputs" / "predictions.csv").open(newline="") as handle:
        return list(csv.reader(handle))


def expected_lines(model, frame: pd.DataFrame, file_name: str) -> list[list[str]]:
    predicted = model.predict(frame[FEATURES])
    return [[str(i), str(p), file_name] for i, p in enumerate(predicted)]


def iris(n: int | None = None, start: int = 0) -> pd.DataFrame:
    frame = pd.read_csv(IRIS_CSV)
    return frame.iloc[start:start + n if n else None].reset_index(drop=True)


def error_log(job_dir: Path) -> str:
    return (job_dir / "logs" / "user" / "error.txt").read_text()


# ---------------------------------------------------------------------- a mixed folder


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Good CSVs, a parquet file, and files that must fail with a named reason."""
    folder = tmp_path_factory.mktemp("mixed")
    iris(40).to_csv(folder / "a_good.csv", index=False)
    # Extra columns and another column order: the extra columns are ignored.
    shuffled = iris(30, start=60)
    shuffled["note"] = "x"
    shuffled[["note", "petal_width", "species", "sepal_length", "petal_length",
              "sepal_width"]].to_csv(folder / "b_extra_columns.csv", index=False)
    iris(25, start=100)[FEATURES].to_parquet(folder / "c_rows.parquet", index=False)
    (folder / "d_notes.txt").write_text("not a table\n")
    iris(10)[["sepal_length", "sepal_width", "petal_length"]].to_csv(folder / "e_missing.csv",
                                                                      index=False)
    bad = iris(10, start=20)[FEATURES].astype(str)
    bad.loc[2, "sepal_width"] = "abc"
    bad.to_csv(folder / "f_not_numeric.csv", index=False)
    (folder / "g_empty.csv").write_text("")
    (folder / "h_header_only.csv").write_text(",".join(FEATURES) + "\n")
    (folder / "sub").mkdir()  # folders inside the input are not read (top-level files only)
    iris(5).to_csv(folder / "sub" / "ignored.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def mixed_job(trained, mixed_folder, tmp_path_factory):
    settings, _, model_dir, _ = trained
    return run_job(tmp_path_factory.mktemp("jobs"), settings, model_dir, str(mixed_folder),
                   instance_count=1, max_concurrency_per_instance=2)


def test_good_files_are_scored_in_azure_ml_format_and_input_order(trained, mixed_job):
    _, _, _, model = trained
    record, job_dir = mixed_job
    assert record["status"] == "Completed"  # error_threshold -1 ignores failed files
    lines = predictions(job_dir)
    expected = (expected_lines(model, iris(40), "a_good.csv")
                + expected_lines(model, iris(30, start=60), "b_extra_columns.csv")
                + expected_lines(model, iris(25, start=100), "c_rows.parquet"))
    assert lines == expected
    raw = (job_dir / "outputs" / "predictions.csv").read_bytes()
    assert raw.count(b"\n") == 95 and not raw.startswith(b"row,")  # no header
    assert all(re.fullmatch(rb"\d+,[a-z]+,[a-z_]+\.(csv|parquet)", line)
               for line in raw.splitlines())
    assert record["rows_scored"] == 95 and record["files_total"] == 8


def test_each_bad_file_is_named_with_its_reason(mixed_job):
    record, job_dir = mixed_job
    errors = error_log(job_dir)
    reasons = {f["file"]: f["message"] for f in record["failed_files"]}
    assert set(reasons) == {"d_notes.txt", "e_missing.csv", "f_not_numeric.csv", "g_empty.csv"}
    assert "File type '.txt' is not supported" in reasons["d_notes.txt"]
    assert "column 'petal_width' is missing" in reasons["e_missing.csv"]
    assert re.search(r"column 'sepal_width' has the value 'abc' in data row 2, which is not a "
                     r"double", reasons["f_not_numeric.csv"])
    assert "empty" in reasons["g_empty.csv"]
    for name, message in reasons.items():
        assert f"{name}: {message}" in errors
    assert record["files_failed"] == 4


def test_every_input_row_is_scored_or_its_file_is_in_the_error_log(mixed_folder, mixed_job):
    record, job_dir = mixed_job
    scored: dict[str, int] = {}
    for _, _, file_name in predictions(job_dir):
        scored[file_name] = scored.get(file_name, 0) + 1
    errors = error_log(job_dir)
    for path in mixed_folder.iterdir():
        if path.is_dir():
            continue
        if path.name in scored:
            assert scored[path.name] == len(pd.read_csv(path) if path.suffix == ".csv"
                                            else pd.read_parquet(path))
        elif path.name == "h_header_only.csv":
            assert path.name not in errors  # no rows, nothing failed
        else:
            assert f"{path.name}:" in errors, path.name
    assert "ignored.csv" not in scored and "ignored.csv" not in errors


def test_logs_follow_azure_ml_layout_and_are_published(trained, mixed_job):
    _, store, _, _ = trained
    record, job_dir = mixed_job
    logs = job_dir / "logs"
    assert (logs / "job_progress_overview.txt").read_text().count("Total number of mini batches: 8")
    assert list((logs / "user" / "stdout").glob("node-0/process00[01].stdout.txt"))
    process_errors = "".join(p.read_text() for p in (logs / "user" / "error").glob("*/*.txt"))
    assert "d_notes.txt" in process_errors
    blob = record["output_datastore_path"]
    assert blob == f"batch-jobs/{record['name']}/named-outputs/score/predictions.csv"
    assert store.read_bytes(blob) == (job_dir / "outputs" / "predictions.csv").read_bytes()
    assert record["output_bytes"] == (job_dir / "outputs" / "predictions.csv").stat().st_size
    assert store.exists(f"batch-jobs/{record['name']}/logs/user/error.txt")


def counted_by_reading(job_dir: Path) -> dict:
    from deployer.report import summarize_predictions

    stats = summarize_predictions(job_dir / "outputs" / "predictions.csv")
    return {"rows": stats.rows, "per_class": stats.per_class, "per_file": stats.per_file}


def test_the_job_counts_rows_per_class_and_file_as_it_writes_them(mixed_job):
    record, job_dir = mixed_job
    assert record["predictions"] == counted_by_reading(job_dir)
    assert list(record["predictions"]["per_file"]) == ["a_good.csv", "b_extra_columns.csv",
                                                        "c_rows.parquet"]


# ---------------------------------------------------------------------- mini-batches, threshold


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    iris(10).to_csv(folder / "a.csv", index=False)
    (folder / "b.txt").write_text("x")
    iris(10, start=50)[["sepal_length"]].to_csv(folder / "c.csv", index=False)
    iris(10, start=100).to_csv(folder / "d.csv", index=False)
    return folder


def test_error_threshold_exceeded_fails_the_job(trained, rule_model, small_folder, tmp_path):
    settings, _, _, _ = trained
    model_dir, _ = rule_model
    record, job_dir = run_job(tmp_path, settings, model_dir, str(small_folder), error_threshold=1)
    assert record["status"] == "Failed"
    assert "2 file(s) failed, more than error_threshold 1" in record["error"]
    errors = error_log(job_dir)
    assert "error_threshold 1" in errors
    # A failed job has no output: a.csv (scored) and d.csv (not reached) are named.
    assert not (job_dir / "outputs" / "predictions.csv").exists()
    assert "output_datastore_path" not in record and not record.get("predictions")
    for name in ("a.csv", "d.csv"):
        assert re.search(rf"{name}: not in the output: the job failed \(2 file\(s\) failed", errors)


def test_failures_within_error_threshold_complete_and_a_failing_file_fails_its_mini_batch(
        trained, rule_model, small_folder, tmp_path):
    settings, _, _, _ = trained
    model_dir, _ = rule_model
    # Mini-batches of 2 files: [a.csv, b.txt] fails as a whole because of b.txt.
    record, job_dir = run_job(tmp_path, settings, model_dir, str(small_folder), error_threshold=4,
                              mini_batch_size=2, max_retries=1)
    assert record["status"] == "Completed", record["error"]
    assert record["mini_batches_total"] == 2 and record["mini_batches_failed"] == 2
    assert record["retries"] == 2  # each failed mini-batch was retried once
    errors = error_log(job_dir)
    assert "a.csv: not scored: its mini-batch 0 failed on 'b.txt'" in errors
    assert "b.txt: File type '.txt' is not supported" in errors
    assert "c.csv: column 'sepal_width', 'petal_length', 'petal_width' is missing" in errors
    assert "d.csv: not scored: its mini-batch 1 failed on 'c.csv'" in errors
    assert predictions(job_dir) == []


def test_a_link_that_leads_nowhere_or_loops_is_a_failed_file_named_with_its_reason(trained, rule_model,
                                                                                 tmp_path):
    settings, _, _, _ = trained
    model_dir, model = rule_model
    folder = tmp_path / "links"
    folder.mkdir()
    iris(10).to_csv(folder / "a.csv", index=False)
    (folder / "b_dangling.csv").symlink_to(tmp_path / "removed.csv")
    (folder / "c_loop.csv").symlink_to(folder / "d_loop.csv")
    (folder / "d_loop.csv").symlink_to(folder / "c_loop.csv")
    record, job_dir = run_job(tmp_path, settings, model_dir, str(folder), error_threshold=3)
    assert record["status"] == "Completed", record["error"]
    assert predictions(job_dir) == expected_lines(model, iris(10), "a.csv")
    reasons = {f["file"]: f["message"] for f in record["failed_files"]}
    assert set(reasons) == {"b_dangling.csv", "c_loop.csv", "d_loop.csv"}
    assert f"'{tmp_path / 'removed.csv'}', which does not exist" in reasons["b_dangling.csv"]
    assert "loops" in reasons["c_loop.csv"] and "loops" in reasons["d_loop.csv"]
    assert record["files_total"] == 4 and record["files_failed"] == 3
    for name, message in reasons.items():
        assert f"{name}: {message}" in error_log(job_dir)


def test_a_fifo_and_a_link_out_of_the_input_folder_are_failed_files_never_read(
        trained, rule_model, tmp_path):
    """Every entry of an input folder is scored or named as failed: a named pipe is not a
    file to read, and a link to a file outside the folder is not followed (Azure ML sees
    only the folder's files; the job must not echo another file's first line)."""
    settings, _, _, _ = trained
    model_dir, model = rule_model
    folder = tmp_path / "input"
    folder.mkdir()
    iris(10).to_csv(folder / "a.csv", index=False)
    os.mkfifo(folder / "b_pipe.csv")
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-FIRST-LINE\nhunter2\n")
    (folder / "c_outside.csv").symlink_to(secret)
    (folder / "d_inside.csv").symlink_to(folder / "a.csv")  # inside the folder: read

    record, job_dir = run_job(tmp_path, settings, model_dir, str(folder), error_threshold=2)

    assert record["status"] == "Completed", record["error"]
    reasons = {f["file"]: f["message"] for f in record["failed_files"]}
    assert set(reasons) == {"b_pipe.csv", "c_outside.csv"}
    assert reasons["b_pipe.csv"] == "a named pipe (FIFO), not a regular file; it was not read"
    assert f"a symbolic link to '{secret}', outside the input folder" in reasons["c_outside.csv"]
    assert (record["files_total"], record["files_failed"]) == (4, 2)
    for name, message in reasons.items():
        assert f"{name}: {message}" in error_log(job_dir)
    logged = "".join(p.read_text() for p in (job_dir / "logs").rglob("*") if p.is_file())
    assert "TOP-SECRET" not in logged and "TOP-SECRET" not in json.dumps(record)
    assert predictions(job_dir) == (expected_lines(model, iris(10), "a.csv")
                                    + expected_lines(model, iris(10), "d_inside.csv"))


def test_an_input_that_is_a_named_pipe_fails_the_job_saying_so(trained, rule_model, tmp_path):
    settings, _, _, _ = trained
    model_dir, _ = rule_model
    os.mkfifo(tmp_path / "pipe.csv")
    record, _ = run_job(tmp_path, settings, model_dir, str(tmp_path / "pipe.csv"))
    assert record["status"] == "Failed"
    assert record["error"] == (f"Input '{tmp_path / 'pipe.csv'}': a named pipe (FIFO), not a "
                               "regular file; it was not read.")


def test_more_broken_links_than_error_threshold_fail_the_job(trained, rule_model, tmp_path):
    settings, _, _, _ = trained
    model_dir, _ = rule_model
    folder = tmp_path / "links"
    folder.mkdir()
    iris(10).to_csv(folder / "a.csv", index=False)
    (folder / "b.csv").symlink_to(tmp_path / "removed.csv")
    record, job_dir = run_job(tmp_path, settings, model_dir, str(folder), error_threshold=0)
    assert record["status"] == "Failed"
    assert "1 file(s) failed, more than error_threshold 0" in record["error"]
    assert "a.csv: not in the output" in error_log(job_dir)


def split_iris(folder: Path, model, *, parts: int, rows: int) -> tuple[Path, list[str]]:
    """Iris in `parts` files of `rows` rows (part0.csv, ...), and the output lines the
    model gives for them, in input order."""
    folder.mkdir()
    expected = []
    for i in range(parts):
        part = iris(rows, start=i * rows)
        part.to_csv(folder / f"part{i}.csv", index=False)
        expected += expected_lines(model, part, f"part{i}.csv")
    return folder, expected


def test_parallel_workers_keep_the_output_in_input_order(trained, tmp_path):
    settings, _, model_dir, model = trained
    folder, expected = split_iris(tmp_path / "many", model, parts=6, rows=25)
    record, job_dir = run_job(tmp_path, settings, model_dir, str(folder), mini_batch_size=2,
                              instance_count=1, max_concurrency_per_instance=2)
    assert record["status"] == "Completed"
    assert predictions(job_dir) == expected


# ---------------------------------------------------------------------- timeouts and retries


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's advice on saving a PythonModel
def test_a_mini_batch_that_times_out_is_retried(trained, rule_model, tmp_path):
    from tests.support.slow_model import save_slow_model

    settings, _, _, _ = trained
    model_dir, model = rule_model
    marker = tmp_path / "slept-once"
    slow = save_slow_model(tmp_path / "slow-model", model_dir, marker, mode="once", seconds=60)
    record, job_dir = run_job(tmp_path, settings, slow, str(IRIS_CSV), max_retries=2,
                              timeout=2)
    assert marker.exists()
    assert record["status"] == "Completed", record["error"]
    assert record["retries"] == 1
    assert predictions(job_dir) == expected_lines(model, iris(), "iris_csv.csv")
    assert record["predictions"] == counted_by_reading(job_dir)  # the retry counted once
    process_errors = "".join(p.read_text() for p in (job_dir / "logs/user/error").glob("*/*.txt"))
    assert "mini-batch 0 attempt 1: timed out after 2 s" in process_errors
    assert "mini-batch 0 attempt 1 failed, retrying: timed out after 2 s" in error_log(job_dir)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_process_forked_from_the_runner_that_times_out_is_replaced_and_the_mini_batch_retried(
        trained, rule_model, tmp_path):
    from tests.support.slow_model import save_slow_model

    settings, _, _, _ = trained
    model_dir, model = rule_model
    folder, expected = split_iris(tmp_path / "two", model, parts=2, rows=75)
    slow = save_slow_model(tmp_path / "slow-model", model_dir, tmp_path / "slept", mode="once",
                           seconds=60)
    record, job_dir = run_job(tmp_path, settings, slow, str(folder), max_retries=2, timeout=2,
                              instance_count=1, max_concurrency_per_instance=2)
    assert record["status"] == "Completed", record["error"]
    assert record["retries"] >= 1
    assert predictions(job_dir) == expected
    assert "failed, retrying: timed out after 2 s" in error_log(job_dir)
    stdout = "".join(p.read_text() for p in (job_dir / "logs/user/stdout").glob("*/*.txt"))
    assert "started with the model loaded by the job runner" in stdout


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_mini_batch_that_always_times_out_fails_its_files(trained, rule_model, tmp_path):
    from tests.support.slow_model import save_slow_model

    settings, _, _, _ = trained
    model_dir, _ = rule_model
    slow = save_slow_model(tmp_path / "slow-model", model_dir, tmp_path / "m", mode="always",
                           seconds=60)
    record, job_dir = run_job(tmp_path, settings, slow, str(IRIS_CSV), max_retries=1,
                              error_threshold=0, timeout=2)
    assert record["status"] == "Failed"
    assert record["retries"] == 1
    assert "iris_csv.csv: timed out after 2 s" in error_log(job_dir)
    assert not (job_dir / "outputs" / "predictions.csv").exists()


# ---------------------------------------------------------------------- datastore inputs


def test_a_datastore_file_is_read_from_azurite(trained, rule_model, tmp_path):
    settings, store, _, _ = trained
    model_dir, model = rule_model
    store.upload_file(IRIS_CSV, "inputs/one/iris.csv")
    store.upload_bytes(b"x", "inputs/one/iris.csv.extra")  # a neighbour is not read
    record, job_dir = run_job(tmp_path, settings, model_dir,
                              settings.datastore_uri("inputs/one/iris.csv"))
    assert record["status"] == "Completed" and record["files_total"] == 1
    assert predictions(job_dir) == expected_lines(model, iris(), "iris.csv")
    assert not (job_dir / "inputs").exists()  # downloaded inputs are removed after the job


@pytest.mark.parametrize("uri, message", [
    ("azureml://datastores/workspaceblobstore/paths/nothing/here/",
     "has no files in datastore 'workspaceblobstore'"),
    ("azureml://datastores/otherstore/paths/x.csv", "names datastore 'otherstore'"),
])
def test_a_datastore_input_that_cannot_be_read_fails_the_job_clearly(trained, tmp_path, uri, message):
    settings, _, model_dir, _ = trained
    record, job_dir = run_job(tmp_path, settings, model_dir, uri)
    assert record["status"] == "Failed" and message in record["error"]
    assert message in error_log(job_dir)


# ---------------------------------------------------------------------- one large file


def test_a_large_csv_is_scored_in_pieces_and_streamed_to_the_datastore_in_order(trained, tmp_path):
    """Large enough to be cut into pieces whose parts are staged as blocks while the
    other pieces run: the committed blob is the output, byte for byte, in input order."""
    from bench.data import write_csv

    settings, store, model_dir, model = trained
    path = write_csv(tmp_path / "large.csv", 600_000, seed=3)
    record, job_dir = run_job(tmp_path, settings, model_dir, str(path),
                              max_concurrency_per_instance=2)
    assert record["status"] == "Completed", record["error"]
    output = (job_dir / "outputs" / "predictions.csv").read_bytes()
    frame = pd.read_csv(path)
    expected = "".join(f"{i},{p},large.csv\n" for i, p in enumerate(model.predict(frame)))
    assert output == expected.encode()
    assert store.read_bytes(record["output_datastore_path"]) == output
    blocks, _ = store.client.get_blob_client(record["output_datastore_path"]).get_block_list()
    assert len(blocks) >= 2  # staged part by part, not uploaded whole at the end
    stdout = "".join(p.read_text() for p in (job_dir / "logs/user/stdout").glob("*/*.txt"))
    assert "piece 1:" in stdout
    assert record["predictions"] == counted_by_reading(job_dir)


@pytest.mark.parametrize("processes,output_action", [
    (1, "append_row"), (2, "append_row"), (2, "summary_only")])
def test_a_missing_output_container_fails_the_job_before_scoring(trained, rule_model, tmp_path, processes,
                                                                 output_action):
    settings, _, _, _ = trained
    model_dir, _ = rule_model
    missing = Settings.load(env_file=tmp_path / "no.env", environ={},
                            azurite_port=settings.azurite_port, container="no-such-container",
                            local_dir=str(tmp_path / "local"))
    folder = tmp_path / "input"
    folder.mkdir()
    for name in ("a.csv", "b.csv"):  # two mini-batches: two processes forked after the load
        shutil.copy(IRIS_CSV, folder / name)
    record, job_dir = run_job(tmp_path, missing, model_dir, str(folder),
                              max_concurrency_per_instance=processes, output_action=output_action)
    assert record["status"] == "Failed"
    assert "Container 'no-such-container' does not exist" in record["error"]
    assert record["rows_scored"] == 0 and "scoring" not in record["timings"]
    # Two processes: the runner loaded the model and checked the container meanwhile.
    assert ("model_load" in record["timings"]) == (processes == 2)


def test_the_engine_loads_a_model_as_mlflow_does(trained, rule_model):
    """skops is imported first for a model saved with skops (it is faster so); the loaded
    model is MLflow's pyfunc either way."""
    from deployer.engine.model import load_model, serialization_format

    _, _, model_dir, model = trained
    assert serialization_format(str(model_dir)) == "skops"  # as mlflow.sklearn.save_model wrote it
    assert serialization_format(str(rule_model[0])) is None
    assert serialization_format(str(model_dir / "no-such-folder")) is None
    frame = iris()[FEATURES]
    assert list(load_model(str(model_dir)).predict(frame)) == list(model.predict(frame))
    assert list(load_model(str(rule_model[0])).predict(frame)) == list(rule_model[1].predict(frame))
