"""The local target end to end: `python -m adf` as a process, the Custom-activity runner
against a real Azurite, the trainer as the task."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from adf.definitions import DEFINITIONS_DIR
from adf.expressions import ExpressionError
from adf.local_runner import TASK_PID_FILE, LocalBackend
from adf.runs import LOGS_CONTAINER, follow
from workspace.datastore import Datastore
from workspace.errors import ConfigError, ExitCode
from workspace.published import MANIFEST_NAME, ModelNotFound, download_model, find_published_run
from workspace.settings import AZURITE_KEY, REPO_ROOT


def adf(settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `python -m adf` the way a user does, with the test's settings in the environment."""
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(TARGET="local", AZURITE_BLOB_PORT=settings.azurite_port,
               DATASTORE_CONTAINER=settings.container, LOCAL_DIR=settings.local_dir,
               MODEL_PREFIX=settings.model_prefix, STAGING_PREFIX=settings.staging_prefix)
    return subprocess.run([sys.executable, "-m", "adf", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_id_of(output: str) -> str:
    match = re.search(r"^Run id:\s+(\S+)$", output, re.M) or re.search(r"Started run (\S+)", output)
    assert match, output
    return match.group(1)


def definitions_copy(tmp_path: Path, *, command: str | None = None, policy: dict | None = None,
                     parameters: dict | None = None) -> Path:
    """adf/ copied, with the activity's command/policy/parameters changed."""
    target = tmp_path / "definitions"
    shutil.copytree(DEFINITIONS_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    pipeline = json.loads((target / "pipeline.json").read_text())
    activity = pipeline["properties"]["activities"][0]
    if command is not None:
        activity["typeProperties"]["command"] = {"value": command, "type": "Expression"}
    activity["policy"].update(policy or {})
    pipeline["properties"]["parameters"].update(parameters or {})
    (target / "pipeline.json").write_text(json.dumps(pipeline, indent=2))
    return target


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_trigger_trains_and_publishes_a_complete_model(settings, datastore, tmp_path):
    result = adf(settings, "trigger", "--param", "epochs=20")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Staged 5 files (5 uploaded, 0 unchanged)" in out
    assert re.search(r"Queued\n.*InProgress\n.*Succeeded", out), out
    run_id = run_id_of(out)

    # customOutput names the published MLflow run, whose manifest is complete and verifies.
    custom = json.loads(out.split("customOutput:\n", 1)[1].split("\nstdout", 1)[0])
    published = find_published_run(datastore, settings.model_prefix)
    assert custom["runId"] == published.run_id
    assert custom["manifestPath"] == published.manifest_path
    assert published.manifest_path.endswith(MANIFEST_NAME) and published.params["epochs"] == 20
    download_model(datastore, published, tmp_path / "model")  # every sha256 checked
    assert f"[trainer] published run {published.run_id}" in out  # stdout tail shown

    # The run's state and logs outlive the process.
    run_dir = Path(settings.local_dir) / "adf" / "runs" / run_id
    state = json.loads((run_dir / "run.json").read_text())
    assert state["status"] == "Succeeded" and state["parameters"]["epochs"] == 20
    (activity,) = state["activities"]
    logs = Datastore.from_settings(replace(settings, container=LOGS_CONTAINER))
    stdout = logs.read_bytes(f"{activity['activity_run_id']}/output/stdout.txt").decode()
    assert f"published run {published.run_id}" in stdout
    assert activity["output"]["outputs"][0].endswith(f"/{LOGS_CONTAINER}/"
                                                     f"{activity['activity_run_id']}/output/stdout.txt")

    # The node's working directory: staged files flattened + the three ADF files.
    workdir = run_dir / activity["activity_run_id"] / "wd"
    names = {p.name for p in workdir.iterdir()}
    assert {"main.py", "requirements.txt", "iris_csv.csv", "activity.json",
            "linkedServices.json", "datasets.json", "outputs.json"} <= names
    activity_json = json.loads((workdir / "activity.json").read_text())
    assert activity_json["type"] == "Custom"
    assert activity_json["typeProperties"]["extendedProperties"]["runId"] == run_id
    assert json.loads((workdir / "linkedServices.json").read_text()) == []
    assert AZURITE_KEY not in json.dumps(activity_json)  # key only in the task environment

    status = adf(settings, "status")
    assert status.returncode == 0 and run_id in status.stdout and "Succeeded" in status.stdout
    assert published.run_id in status.stdout
    log_output = adf(settings, "logs", run_id, "--tail", "3")
    assert log_output.returncode == 0
    assert f"published run {published.run_id}" in log_output.stdout
    restage = adf(settings, "stage")
    assert "Staged 5 files (0 uploaded, 5 unchanged)" in restage.stdout


def _missing_csv_command() -> str:
    """The pipeline's command with an input file the node does not have."""
    command = json.loads((DEFINITIONS_DIR / "pipeline.json").read_text())["properties"][
        "activities"][0]["typeProperties"]["command"]["value"]
    return command.replace("--iris-csv iris_csv.csv", "--iris-csv missing.csv")


def test_failing_task_fails_the_run_and_shows_stderr(settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command=_missing_csv_command(),
                                   policy={"retry": 1, "retryIntervalInSeconds": 0})
    result = adf(settings, "trigger", "--param", "epochs=3", "--definitions", str(definitions))
    assert result.returncode == ExitCode.RUN_FAILED, result.stdout + result.stderr
    assert re.search(r"Status:\s+Failed", result.stdout)
    # retry: 1 → two activity runs, each with its exit code
    assert re.findall(r"Attempt (\d): TrainIrisModel Failed, exit code 2", result.stdout) == ["1", "2"]
    assert "[trainer] error: Input file 'missing.csv' not found" in result.stdout
    assert "Failed: Operation on target TrainIrisModel failed: Task exited with code 2" in result.stderr
    assert "python -m adf logs" in result.stderr
    with pytest.raises(ModelNotFound):
        find_published_run(datastore, settings.model_prefix)


def test_a_missing_container_fails_the_run_on_its_first_attempt_with_its_exit_code(
        settings, datastore):
    """A failure that cannot succeed is not retried: the pipeline as committed (no copy)
    runs one attempt, and the trainer's exit code says what is missing."""
    result = adf(settings, "trigger", "--param", "containerPath=no-such-container/models")
    assert result.returncode == ExitCode.RUN_FAILED, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    shown = json.loads(adf(settings, "status", run_id, "-o", "json").stdout)
    attempts = shown["run"]["activities"]
    assert [(a["status"], a["output"]["exitcode"]) for a in attempts] == \
        [("Failed", ExitCode.NOT_FOUND)], attempts
    assert "Storage container 'no-such-container' does not exist" in result.stdout


def test_runs_list_lists_the_runs_of_this_machine_newest_first(settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command=_missing_csv_command(), policy={"retry": 0})
    started = [run_id_of(adf(settings, "trigger", "--no-wait", "--param", f"epochs={epochs}",
                             "--definitions", str(definitions)).stdout) for epochs in (3, 4)]
    adf(settings, "status", started[-1], "--wait", "--definitions", str(definitions))

    listed = adf(settings, "runs", "list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    shown = json.loads(listed.stdout)
    assert (shown["kind"], shown["target"]) == ("adf.runs", "local")
    assert [run["run_id"] for run in shown["runs"]] == started[::-1]
    assert shown["runs"][0]["parameters"]["epochs"] == 4 and shown["runs"][0]["status"] == "Failed"
    table = adf(settings, "runs", "list", "--limit", "1").stdout.splitlines()
    assert len(table) == 1 and table[0].startswith(f"{started[1]}  Failed")
    assert "train-iris" in table[0] and "epochs=4" in table[0] and "python=" not in table[0]
    unknown = adf(settings, "status", str(uuid.uuid4()))
    assert "python -m adf runs list" in unknown.stderr and "`ls`" not in unknown.stderr


def test_no_wait_returns_and_status_follows_from_another_process(settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command=_missing_csv_command(), policy={"retry": 0})
    started = adf(settings, "trigger", "--no-wait", "--param", "learningRate=0.05",
                  "--definitions", str(definitions))
    assert started.returncode == 0, started.stderr
    assert started.stderr.count("note: --param learningRate is now --param lr") == 1  # the alias
    assert "parameters: lr=0.05)" in started.stdout
    run_id = run_id_of(started.stdout)
    assert f"python -m adf status {run_id}" in started.stdout
    status = adf(settings, "status", run_id, "--wait", "--definitions", str(definitions))
    assert status.returncode == ExitCode.RUN_FAILED
    assert "Input file 'missing.csv' not found" in status.stdout
    unknown = str(uuid.uuid4())
    missing = adf(settings, "status", unknown)
    assert missing.returncode == 4 and f"No local run '{unknown}'" in missing.stderr


def test_status_as_json_is_one_document_for_scripts_with_the_same_exit_code(
        settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command=_missing_csv_command(), policy={"retry": 0})
    run_id = run_id_of(adf(settings, "trigger", "--no-wait", "--definitions", str(definitions)).stdout)

    followed = adf(settings, "status", run_id, "--wait", "-o", "json", "--definitions",
                   str(definitions))

    assert followed.returncode == ExitCode.RUN_FAILED, followed.stdout + followed.stderr
    shown = json.loads(followed.stdout)  # the whole of stdout; following went to stderr
    assert (shown["schema_version"], shown["kind"], shown["target"]) == (1, "adf.run", "local")
    assert re.search(r"^\s+\d\d:\d\d:\d\d\s+Failed$", followed.stderr, re.M), followed.stderr
    assert "Failed" in followed.stderr and "python -m adf logs" in followed.stderr
    run = shown["run"]
    assert (run["run_id"], run["status"], run["pipeline"]) == (run_id, "Failed", "train-iris")
    assert "Task exited with code 2" in run["message"] and shown["waiting_reason"] is None
    (activity,) = run["activities"]
    assert (activity["name"], activity["status"], activity["output"]["exitcode"]) == (
        "TrainIrisModel", "Failed", 2)
    again = adf(settings, "status", "--output", "json")  # the last run of this machine
    assert json.loads(again.stdout)["run"] == run
    missing = adf(settings, "status", str(uuid.uuid4()), "-o", "json")  # well-formed, unknown
    assert missing.returncode == ExitCode.NOT_FOUND and missing.stdout == ""


def test_unknown_parameter_is_refused_before_anything_runs(settings, datastore):
    result = adf(settings, "trigger", "--param", "epoch=3")
    assert result.returncode == 2
    assert result.stderr.startswith("error: --param epoch: pipeline 'train-iris' has no parameter")
    assert not (Path(settings.local_dir) / "adf" / "runs").exists()


def test_unreachable_datastore_is_one_line(settings, tmp_path):
    from workspace.azurite import free_port

    result = adf(replace(settings, azurite_port=str(free_port())), "trigger")
    assert result.returncode == 3
    assert "The local datastore (Azurite) is not reachable" in result.stderr
    assert "make local-up" in result.stderr


# ------------------------------------------------------------------ runner fidelity

PROBE = textwrap.dedent("""\
    import json, os, sys
    print("probe stdout")
    print("probe stderr", file=sys.stderr)
    files = sorted(os.listdir("."))
    json.dump({"argv": sys.argv[1:], "files": files,
               "activity": json.load(open("activity.json")),
               "linkedServices": json.load(open("linkedServices.json")),
               "datasets": json.load(open("datasets.json")),
               "connection_string_in_env": "AZURE_STORAGE_CONNECTION_STRING" in os.environ,
               "workdir_env": os.environ.get("AZ_BATCH_TASK_WORKING_DIR") == os.getcwd()},
              open("outputs.json", "w"))
""")


def _run(backend: LocalBackend, parameters=None):
    run_id = backend.start(parameters or {})
    return follow(backend, run_id, on_status=lambda r: None, on_reason=lambda r: None,
                  poll_seconds=0.1, timeout_seconds=60)


def _stage_blobs(settings, blobs: dict[str, bytes]) -> None:
    store = Datastore.from_settings(settings)
    for name, content in blobs.items():
        store.upload_bytes(content, f"{settings.staging_prefix}/{name}")


def test_runner_flattens_folder_writes_adf_files_and_runs_without_a_shell(settings, datastore, tmp_path):
    definitions = definitions_copy(
        tmp_path, command="@{pipeline().parameters.python} probe.py $HOME "
                          "\"@{pipeline().parameters.greeting}\" @@literal",
        parameters={"greeting": {"type": "String", "defaultValue": "hello world"}})
    _stage_blobs(settings, {"nested/deeper/probe.py": PROBE.encode(), "data.txt": b"x"})
    backend = LocalBackend(settings, definitions)
    run = _run(backend)
    assert run.status == "Succeeded", run.message
    custom = run.last_activity.custom_output
    assert custom["argv"] == ["$HOME", "hello world", "@literal"]  # no shell: nothing expanded
    assert {"probe.py", "data.txt", "activity.json", "linkedServices.json",
            "datasets.json"} <= set(custom["files"])
    assert "nested" not in custom["files"]
    assert custom["activity"]["typeProperties"]["extendedProperties"] == {"runId": run.run_id}
    assert custom["activity"]["typeProperties"]["command"].endswith('probe.py $HOME "hello world" @literal')
    assert custom["linkedServices"] == [] and custom["datasets"] == []
    assert custom["connection_string_in_env"] and custom["workdir_env"]
    logs = backend.logs(run.last_activity)
    assert (logs.stdout, logs.stderr, logs.missing) == ("probe stdout\n", "probe stderr\n", [])
    assert run.last_activity.exit_code == 0


def test_runner_kills_the_task_at_the_policy_timeout(settings, datastore, tmp_path):
    definitions = definitions_copy(
        tmp_path, command="@{pipeline().parameters.python} -c \"import time; time.sleep(60)\"",
        policy={"timeout": "0.00:00:01", "retry": 0})
    _stage_blobs(settings, {"placeholder.txt": b"x"})
    run = _run(LocalBackend(settings, definitions))
    assert run.status == "Failed"
    assert "timed out after 1 s (policy.timeout)" in run.message


def test_runner_enforces_the_outputs_json_limit(settings, datastore, tmp_path):
    definitions = definitions_copy(
        tmp_path, command="@{pipeline().parameters.python} -c "
                          "\"open('outputs.json','w').write('\\\"' + 'x' * 2097152 + '\\\"')\"",
        policy={"retry": 0})
    _stage_blobs(settings, {"placeholder.txt": b"x"})
    run = _run(LocalBackend(settings, definitions))
    assert run.status == "Failed"
    assert "the limit of customOutput is 2097152 bytes" in run.message
    assert run.last_activity.exit_code == 0 and run.last_activity.custom_output is None


def test_runner_reports_a_missing_program_and_an_empty_folder(settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command="no-such-program-on-this-node --x",
                                   policy={"retry": 0})
    backend = LocalBackend(settings, definitions)
    empty = _run(backend)
    assert empty.status == "Failed"
    assert f"folderPath '{settings.container}/{settings.staging_prefix}' holds no files; " \
           "stage them with `python -m adf stage`" in empty.message
    _stage_blobs(settings, {"placeholder.txt": b"x"})
    missing = _run(backend)
    assert missing.status == "Failed"
    assert "The command could not start: no-such-program-on-this-node" in missing.message
    assert "No such file or directory" in backend.logs(missing.last_activity).stderr


def test_unsupported_expression_fails_before_a_run_exists(settings, datastore, tmp_path):
    definitions = definitions_copy(tmp_path, command="python main.py --at @{utcnow()}")
    backend = LocalBackend(settings, definitions)
    with pytest.raises(ExpressionError, match=r"function 'utcnow' is not supported"):
        backend.start({})
    assert not backend.runs_dir.exists()


def test_a_runner_that_dies_leaves_a_failed_run_not_a_hanging_one(settings, datastore, tmp_path):
    definitions, backend, run_id, runner, task = _start_a_sleeping_task(settings, tmp_path)
    runner.kill()
    assert _gone(task), f"task {task.pid} outlived its runner"
    run = follow(backend, run_id, on_status=lambda r: None, on_reason=lambda r: None,
                 poll_seconds=0.1, timeout_seconds=10)
    assert run.status == "Failed"
    assert "The local runner stopped before the run finished" in run.message
    assert "runner.log" in run.message
    assert run.last_activity.status == "Failed"
    assert LocalBackend(settings, definitions).get_run(run_id).status == "Failed"  # recorded


# ------------------------------------------------------------------ parameters


@pytest.mark.parametrize("param, message", [
    ("epochs=-1", "--param epochs=-1: passed to the trainer as --epochs, which must be between 1"),
    ("epochs=0", "--param epochs=0: passed to the trainer as --epochs, which must be between 1"),
    (f"epochs={2**63}", f"--param epochs={2**63}: passed to the trainer as --epochs, which must"),
    ("lr=abc", "--param lr=abc: passed to the trainer as --lr, which must be a number"),
    ("lr=-1", "--param lr=-1: passed to the trainer as --lr, which must be greater than 0"),
    ("lr=0", "--param lr=0: passed to the trainer as --lr, which must be greater than 0"),
    ("lr=nan", "--param lr=nan: passed to the trainer as --lr, which must be a finite"),
    ("lr=inf", "--param lr=inf: passed to the trainer as --lr, which must be a finite"),
    ("lr=0.1 --evil", "--param lr=0.1 --evil: passed to the trainer as --lr"),
    ('containerPath=models/a" --evil "b', "quotes, backslashes"),
])
def test_bad_parameter_value_is_refused_before_anything_runs(settings, param, message):
    result = adf(settings, "trigger", "--no-stage", "--param", param)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --param ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (Path(settings.local_dir) / "adf" / "runs").exists()


def test_no_value_adds_an_argument_to_the_command(settings, datastore, tmp_path):
    quoted = definitions_copy(
        tmp_path / "quoted", command="\"@{pipeline().parameters.python}\" probe.py "
                                     "--x \"@{pipeline().parameters.greeting}\"",
        parameters={"greeting": {"type": "String", "defaultValue": "hi"}}, policy={"retry": 0})
    _stage_blobs(settings, {"probe.py": PROBE.encode()})
    run = _run(LocalBackend(settings, quoted), {"greeting": "0.1 --evil"})
    assert run.status == "Succeeded", run.message
    assert run.last_activity.custom_output["argv"] == ["--x", "0.1 --evil"]

    # A command that forgot the quotes is refused before a run exists, not run with --evil.
    bare = definitions_copy(
        tmp_path / "bare", command="@{pipeline().parameters.python} probe.py "
                                   "--x @{pipeline().parameters.greeting}",
        parameters={"greeting": {"type": "String", "defaultValue": "hi"}}, policy={"retry": 0})
    backend = LocalBackend(settings, bare)
    before = set(backend.runs_dir.iterdir())
    with pytest.raises(ConfigError, match=r"--param greeting='0.1 --evil' would change the "
                                          r"arguments"):
        backend.start({"greeting": "0.1 --evil"})
    assert set(backend.runs_dir.iterdir()) == before


# ------------------------------------------------------------------ faults


def _start_a_sleeping_task(settings, tmp_path: Path):
    """A run whose task sleeps for two minutes, no retry: (definitions, backend, run id,
    runner process, task process) once the task runs."""
    definitions = definitions_copy(
        tmp_path, command="\"@{pipeline().parameters.python}\" -c \"import time; time.sleep(120)\"",
        policy={"retry": 0})
    _stage_blobs(settings, {"placeholder.txt": b"x"})
    backend = LocalBackend(settings, definitions)
    run_id = backend.start({})
    runner, task = _wait_for_task(backend, run_id)
    return definitions, backend, run_id, runner, task


def _wait_for_task(backend: LocalBackend, run_id: str):
    import psutil

    run_dir = backend.runs_dir / run_id
    runner = psutil.Process(int((run_dir / "runner.pid").read_text().split()[0]))

    def task_child() -> list:
        """The child its pid file names (the runner has other, short-lived children)."""
        from workspace.processes import read_pid_file

        named = {who.pid for who in map(read_pid_file, run_dir.glob(f"*/{TASK_PID_FILE}")) if who}
        return [child for child in runner.children() if child.pid in named]

    started = time.monotonic()
    deadline = started + 120  # generous: the runner downloads the folder first
    while not task_child() and runner.is_running() \
            and runner.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.1)
    task = task_child()
    if not task:  # say as much as can be seen: which step the runner was at, and for how long
        alive = runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE
        task_pids = {p.parent.name: p.read_text().strip() for p in run_dir.glob(f"*/{TASK_PID_FILE}")}
        files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))
        raise AssertionError(
            f"the task is not running after {time.monotonic() - started:.1f} s; runner alive: "
            f"{alive} (status {runner.status() if alive else 'gone'}); task pid files: "
            f"{task_pids}; files: {files}\nrun.json: {(run_dir / 'run.json').read_text()}\n"
            f"runner.log: {(run_dir / 'runner.log').read_text()}")
    return runner, task[0]


def _gone(process, timeout: float = 30) -> bool:
    import psutil

    try:
        process.wait(timeout)
    except psutil.TimeoutExpired:
        return False
    return True


@pytest.mark.slow
def test_kill_9_of_the_runner_kills_the_trainer_and_its_model_is_never_picked(
        settings, datastore, tmp_path):
    """The real trainer, long enough to be killed mid-training; then `register-and-deploy`."""
    adf(settings, "stage")
    backend = LocalBackend(settings)
    run_id = backend.start({"epochs": 10000})
    runner, trainer = _wait_for_task(backend, run_id)
    assert "main.py" in " ".join(trainer.cmdline())
    attempt_dir = next(p for p in (backend.runs_dir / run_id).iterdir() if p.is_dir())
    scratch = attempt_dir / "tmp"
    deadline = time.monotonic() + 120
    while not list(scratch.glob("iris-trainer-*")) and time.monotonic() < deadline:
        time.sleep(0.1)  # training has started: its scratch folder exists
    runner.kill()
    assert _gone(trainer), f"trainer {trainer.pid} outlived its runner: {trainer.status()}"
    run = backend.get_run(run_id)
    assert run.status == "Failed" and "local runner stopped" in run.message
    assert not scratch.exists(), "the dead task's scratch folder was left behind"
    assert not any(b.name.endswith(MANIFEST_NAME) for b in datastore.list())

    deploy = _deployer(settings, "register-and-deploy", "--dry-run")
    assert deploy.returncode != 0 and "No published model" in deploy.stderr, deploy.stdout + deploy.stderr


def _deployer(settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(TARGET="local", AZURITE_BLOB_PORT=settings.azurite_port,
               DATASTORE_CONTAINER=settings.container, LOCAL_DIR=settings.local_dir,
               MODEL_PREFIX=settings.model_prefix, STAGING_PREFIX=settings.staging_prefix)
    return subprocess.run([sys.executable, "-m", "deployer", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_model_published_by_a_failed_run_is_not_picked(settings, datastore, tmp_path):
    # The trainer publishes, then cannot write outputs.json: the run fails with a manifest.
    command = json.loads((DEFINITIONS_DIR / "pipeline.json").read_text())["properties"][
        "activities"][0]["typeProperties"]["command"]["value"] + " --outputs-json no/such/dir.json"
    definitions = definitions_copy(tmp_path, command=command, policy={"retry": 0})
    result = adf(settings, "trigger", "--param", "epochs=3", "--definitions", str(definitions))
    assert result.returncode == ExitCode.RUN_FAILED, result.stdout + result.stderr
    run_id = run_id_of(result.stdout)
    manifests = [b.name for b in datastore.list() if b.name.endswith(MANIFEST_NAME)]
    assert len(manifests) == 1
    manifest = json.loads(datastore.read_bytes(manifests[0]))
    assert manifest["adf"]["pipeline_run_id"] == run_id
    assert manifest["adf"]["batch_task_id"]

    deploy = _deployer(settings, "register-and-deploy", "--dry-run")
    assert deploy.returncode != 0, deploy.stdout + deploy.stderr
    assert f"its pipeline run {run_id} is Failed" in deploy.stderr
    assert "No published model" in deploy.stderr
    asked = _deployer(settings, "register-and-deploy", "--dry-run", "--run-id",
                      manifests[0].split("/")[-2])
    assert asked.returncode != 0 and f"its pipeline run {run_id} is Failed" in asked.stderr


def test_cancel_stops_the_runner_and_its_task(settings, datastore, tmp_path):
    definitions, backend, run_id, runner, task = _start_a_sleeping_task(settings, tmp_path)
    result = adf(settings, "cancel", run_id, "--definitions", str(definitions))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Cancelled" in result.stdout
    assert _gone(task) and _gone(runner)
    run = backend.get_run(run_id)
    assert run.status == "Cancelled" and run.last_activity.status == "Cancelled"
    again = adf(settings, "cancel", run_id, "--definitions", str(definitions))
    assert again.returncode == 0 and "already Cancelled" in again.stdout


def test_storage_outage_during_the_task_keeps_the_task_error_and_says_make_local_up(tmp_path):
    from tests.conftest import isolated_settings
    from workspace.azurite import AzuriteProcess

    # An Azurite of its own, stopped while the task runs; the task then fails on its own. The
    # task waits for the test's word (a file), so it is still running when the test looks.
    go = tmp_path / "go"
    with AzuriteProcess() as own:
        settings = isolated_settings(own, tmp_path)
        Datastore.from_settings(settings).ensure_container()
        definitions = definitions_copy(
            tmp_path, command="\"@{pipeline().parameters.python}\" -c \"import os, sys, time; "
                              f"[time.sleep(0.1) for _ in range(600) if not os.path.exists('{go}')]; "
                              "print('disk full', file=sys.stderr); sys.exit(3)\"",
            policy={"retry": 0})
        _stage_blobs(settings, {"placeholder.txt": b"x"})
        backend = LocalBackend(settings, definitions)
        run_id = backend.start({})
        _wait_for_task(backend, run_id)
    go.touch()  # Azurite is gone: the task may end now
    run = follow(backend, run_id, on_status=lambda r: None, on_reason=lambda r: None,
                 poll_seconds=0.2, timeout_seconds=180)
    assert run.status == "Failed"
    assert "Task exited with code 3. Last line of stderr: disk full" in run.message
    assert "make local-up" in run.message
    assert "Check the storage URL and your network" not in run.message
