"""The local batch engine broken from outside: its runner killed (-9) or canceled while its
scoring processes work. No process may outlive the runner (checked in the process table),
and a job that did not complete shows no output anywhere."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.backends.local import LocalBackend
from deployer.engine.records import read_record, write_record
from tests.conftest import IRIS_CSV, container_datastore, isolated_settings
from workspace.published import download_model, find_published_run
from workspace.settings import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, trained_source):
    """The session's trained model, downloaded."""
    settings, store, _, _ = trained_source
    run = find_published_run(store, settings.model_prefix)
    return download_model(store, run, tmp_path_factory.mktemp("faults") / "model")


@pytest.fixture
def backend(azurite, tmp_path):
    settings = isolated_settings(azurite, tmp_path)
    container_datastore(settings)
    return LocalBackend(settings)


# ---------------------------------------------------------------------- the process table


def process_alive(pid: int, started: float) -> bool:
    """From the system's process table: running, not a zombie, and the same process."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            process = psutil.Process(pid)
            return process.status() != psutil.STATUS_ZOMBIE and \
                abs(process.create_time() - started) < 0.05
        except psutil.Error:
            return False
    try:  # /proc/<pid>/stat: state is field 3, start time (clock ticks) field 22
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[19]) == started


def start_identity(pid: int) -> float:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except ImportError:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def descendants(pid: int) -> list[tuple[int, float]]:
    """Every process below pid, found by parent pid in the process table."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in table.get(todo.pop(), []):
            found.append((child, start_identity(child)))
            todo.append(child)
    return found


def survivors(processes: list[tuple[int, float]], within: float = 30) -> list[int]:
    """The processes still alive after waiting up to `within` seconds for them to go."""
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid, started in processes if process_alive(pid, started)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def wait_for(condition, what: str, within: float = 180) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


# ---------------------------------------------------------------------- jobs


def slow_folder(tmp_path: Path, files: int) -> Path:
    folder = tmp_path / "input"
    folder.mkdir()
    for i in range(files):
        (folder / f"part{i}.csv").write_bytes(IRIS_CSV.read_bytes())
    return folder


def start_job(backend: LocalBackend, model_dir: Path, input_path: Path, **scoring) -> Path:
    """A job record written and its runner started the way `invoke` does it."""
    job_dir = backend._new_job_dir(None)  # as invoke makes it
    name = job_dir.name
    s = backend.settings
    write_record(job_dir, {
        "name": name, "status": "Queued", "endpoint": "iris-batch", "deployment": "d",
        "model_path": str(model_dir), "input": str(input_path), "created": "now",
        "settings": {"mini_batch_size": 1, "max_retries": 0, "timeout": 300, **scoring},
        "datastore": {"port": int(s.azurite_port), "container": s.container,
                      "name": s.datastore_name},
    })
    backend._start_runner(job_dir, {})
    return job_dir


def runner_pid(job_dir: Path) -> int:
    return int((job_dir / "runner.pid").read_text().split()[0])


def busy_job(backend, trained, tmp_path, processes: int) -> tuple[Path, list]:
    """A job whose scoring processes are all inside a 60 s predict; its processes. (The
    slow model wraps the petal-rule model: what is tested is the processes, not the model.)"""
    from tests.support.rule_model import save_rule_model
    from tests.support.slow_model import save_slow_model

    marker = tmp_path / "predicting"
    inner = save_rule_model(tmp_path / "rule-model", trained)
    slow = save_slow_model(tmp_path / "slow-model", inner, marker, mode="always", seconds=60)
    job_dir = start_job(backend, slow, slow_folder(tmp_path, processes),
                        max_concurrency_per_instance=processes)
    wait_for(marker.exists, "a scoring process to predict")
    wait_for(lambda: len(descendants(runner_pid(job_dir))) >= processes,
             "the scoring processes to start")
    return job_dir, descendants(runner_pid(job_dir))


@pytest.mark.filterwarnings("ignore::UserWarning")  # mlflow's advice on saving a PythonModel
@pytest.mark.parametrize("processes", [1, 3])  # one spawned process; processes forked
def test_scoring_processes_die_with_a_killed_runner_and_the_job_says_so(
        trained, backend, tmp_path, processes):
    job_dir, workers = busy_job(backend, trained, tmp_path, processes)

    os.kill(runner_pid(job_dir), signal.SIGKILL)
    backend._children[-1].wait()  # reaped: gone from the process table

    assert survivors(workers) == []
    job = backend.get_job(job_dir.name)  # what `jobs show` and `status` read
    assert job.status == "Failed"
    assert "ended without finishing" in job.error and str(runner_pid(job_dir)) in job.error
    assert (job.output_uri, job.predictions_at) == ("", "")  # no partial file passes for predictions
    assert not (job_dir / "outputs" / "predictions.csv").exists()
    assert not (job_dir / "work").exists()  # part files and the partial output removed
    overview = (job_dir / "logs" / "job_progress_overview.txt").read_text()
    assert "Status: Failed" in overview and "ended without finishing" in overview
    errors = (job_dir / "logs" / "user" / "error.txt").read_text()
    for i in range(processes):
        assert f"part{i}.csv: not in the output" in errors


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_canceled_job_stops_its_processes_and_commits_no_output(trained, backend, tmp_path):
    job_dir, workers = busy_job(backend, trained, tmp_path, 2)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TARGET": "local",
           "LOCAL_DIR": str(backend.root), "AZURITE_BLOB_PORT": backend.settings.azurite_port,
           "DATASTORE_CONTAINER": backend.settings.container}

    canceled = subprocess.run([sys.executable, "-m", "deployer", "jobs", "cancel", job_dir.name],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    assert canceled.returncode == 0, canceled.stdout + canceled.stderr
    assert "Canceled" in canceled.stdout and "predictions" not in canceled.stdout
    backend._children[-1].wait()
    assert survivors(workers) == []
    record = read_record(job_dir)
    assert record["status"] == "Canceled" and record["error"] == "The job was canceled."
    output_blob = f"batch-jobs/{job_dir.name}/named-outputs/score/predictions.csv"
    assert not backend.datastore.exists(output_blob)  # staged blocks are never committed
    assert backend.datastore.exists(f"batch-jobs/{job_dir.name}/logs/user/error.txt")
    assert record["logs_datastore_path"] == f"batch-jobs/{job_dir.name}/logs/"
    assert not (job_dir / "outputs" / "predictions.csv").exists()
    assert not (job_dir / "work").exists()
    assert "Status: Canceled" in (job_dir / "logs" / "job_progress_overview.txt").read_text()
    errors = (job_dir / "logs" / "user" / "error.txt").read_text()
    assert "part0.csv: not in the output: the job was canceled" in errors
    assert "part1.csv: not in the output: the job was canceled" in errors
    again = backend.cancel_job(job_dir.name)  # an ended job stays as it ended
    assert again.status == "Canceled"


# ---------------------------------------------------------------------- a dead job's leftovers


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                            start_new_session=True)


@pytest.fixture
def dead_job_with_leftovers(backend):
    """A job recorded as Running whose runner is gone, with one scoring process left and
    one recorded pid that now belongs to another process (a later start time)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left, stranger = sleeper(), sleeper()
    job_dir = backend._new_job_dir(None)  # as invoke makes it
    name = job_dir.name
    (job_dir / "input_files.txt").write_text("a.csv\nb.csv\n")
    (job_dir / "work").mkdir()
    (job_dir / "work" / "predictions.csv.partial").write_text("0,x,a.csv\n")
    write_record(job_dir, {
        "name": name, "status": "Running", "endpoint": "iris-batch", "input": "in",
        "created": "now", "settings": {}, "failed_files": [],
        "runner": [gone.pid, start_identity(os.getpid())],
        "workers": [[left.pid, start_identity(left.pid)],
                    [stranger.pid, start_identity(stranger.pid) - 100]],
    })
    yield job_dir, left, stranger
    for process in (left, stranger):
        process.kill()
        process.wait()


def workspace_down(backend, job_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LOCAL_DIR": str(backend.root),
           "AZURITE_BLOB_PORT": "1"}
    done = subprocess.run([sys.executable, "-m", "workspace", "down"], cwd=job_dir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"Job {job_dir.name}: its runner had died" in done.stdout


@pytest.mark.parametrize("notice", [
    lambda backend, job_dir: backend.get_job(job_dir.name),  # jobs show
    lambda backend, job_dir: backend.list_jobs("iris-batch"),  # status
    lambda backend, job_dir: backend.settle_dead_jobs(),  # a new invoke, before it starts
    workspace_down,  # make local-down
], ids=["jobs-show", "status", "invoke", "local-down"])
def test_whoever_notices_a_dead_job_stops_its_processes_and_marks_it(
        backend, dead_job_with_leftovers, notice):
    job_dir, left, stranger = dead_job_with_leftovers

    notice(backend, job_dir)

    assert left.wait(timeout=30) == -signal.SIGKILL
    assert stranger.poll() is None  # its pid was recorded, but it is not that process
    record = read_record(job_dir)
    assert record["status"] == "Failed" and "ended without finishing" in record["error"]
    assert not (job_dir / "work").exists()
    errors = (job_dir / "logs" / "user" / "error.txt").read_text()
    assert "a.csv: not in the output" in errors and "b.csv: not in the output" in errors
    assert "Status: Failed" in (job_dir / "logs" / "job_progress_overview.txt").read_text()


# ---------------------------------------------------------------------- storage gone


@pytest.fixture
def own_azurite(tmp_path):
    """An Azurite of this test alone, which it may stop or freeze."""
    from workspace.azurite import AzuriteProcess

    process = AzuriteProcess(log_path=tmp_path / "azurite.log").start()
    yield process
    if process.process is not None and process.process.poll() is None:
        process.process.send_signal(signal.SIGCONT)
    process.stop()


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_a_job_told_to_stop_while_its_datastore_is_unreachable_stops_and_is_canceled(
        trained, own_azurite, tmp_path, outage):
    settings = isolated_settings(own_azurite, tmp_path)
    container_datastore(settings)
    backend = LocalBackend(settings)
    job_dir, workers = busy_job(backend, trained, tmp_path, 2)
    runner = backend._children[-1]
    if outage == "stopped":  # nothing listens any more: connections are refused
        own_azurite.stop()
    else:  # still listening, never answering: requests wait for their timeout
        own_azurite.process.send_signal(signal.SIGSTOP)

    runner.send_signal(signal.SIGTERM)

    runner.wait(timeout=40)  # generous: it used to take minutes
    assert survivors(workers) == []
    record = read_record(job_dir)
    assert record["status"] == "Canceled", record
    assert not (job_dir / "work").exists()
    errors = (job_dir / "logs" / "user" / "error.txt").read_text()
    assert "part0.csv: not in the output: the job was canceled" in errors
    assert "The logs were not uploaded to the datastore" in errors  # and it says where they are
    assert str(job_dir / "logs") in errors and "logs_datastore_path" not in record
    assert "Status: Canceled" in (job_dir / "logs" / "job_progress_overview.txt").read_text()
    assert backend.get_job(job_dir.name).status == "Canceled"  # what `jobs show` says
