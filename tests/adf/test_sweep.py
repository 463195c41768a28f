"""Sweeps on the local target: the grid checked before anything is queued, runners as
processes taking lines from Azurite's queue service, at-least-once counted once."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from adf.sweep import Ledger, SweepRecord, Sweeps, reports_path
from adf.sweep_grid import load_grid
from tests.conftest import IRIS_CSV, container_datastore, isolated_settings
from workspace.errors import ConfigError, ExitCode
from workspace.queues import SweepQueues, queue_service
from workspace.settings import REPO_ROOT
from workspace.sweep_runs import sweep_runs

NODE_RUNNER = REPO_ROOT / "trainer" / "node_runner.py"


# ------------------------------------------------------------------ the grid

BAD_GRIDS = {
    "unknown column": ("epochs,lr,colour\n10,0.1,1\n", "line 1: unknown column 'colour'"),
    "non-numeric": ("epochs,lr\n10,0.1\n10,fast\n", "line 3: lr 'fast' must be a number"),
    "not whole": ("epochs,lr\n10,0.1\n2.5,0.1\n", "line 3: epochs '2.5' must be a whole number"),
    "out of range": ("epochs,lr\n10,0.1\n\n0,0.1\n", "line 4: epochs '0' must be between 1 "
                     "and 10000"),
    "lr out of range": ("lr,seed\n-1,3\n", "line 2: lr '-1' must be greater than 0 and at "
                        "most 10"),
    "seed out of range": ("seed\n-1\n", "line 2: seed '-1' must be between 0 and 4294967295"),
    "empty": ("", "is empty"),
    "header only": ("epochs,lr\n", "has a header but no lines"),
    "duplicate": ("epochs,lr\n10,0.1\n20,0.1\n10,0.10\n", "line 4 repeats line 2"),
    "short line": ("epochs,lr\n10\n", "line 2: 1 values for 2 columns"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_a_bad_grid_is_one_error_naming_the_line(case, tmp_path):
    text, expected = BAD_GRIDS[case]
    grid = tmp_path / "grid.csv"
    grid.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_grid(grid)
    assert expected in error.value.message and str(grid) in error.value.message


def test_the_shipped_grid_is_valid_and_typed():
    lines = load_grid(REPO_ROOT / "data" / "sweep.csv")
    assert 12 <= len(lines) <= 24
    assert lines[0].line == 2 and lines[0].params == {"epochs": 20, "lr": 0.01, "seed": 1}


def test_a_line_is_counted_once_and_a_result_beats_a_failure():
    ledger = Ledger()
    first = {"line": 2, "runId": "a", "metrics": {"test_accuracy": 0.9, "test_f1_macro": 0.9}}
    ledger.record("results", first)
    ledger.record("results", {**first, "runId": "b"})  # the line trained again, after a crash
    ledger.record("failures", {"line": 2, "error": "late"})
    ledger.record("failures", {"line": 3, "error": "boom"})
    ledger.record("results", {**first, "line": 3, "runId": "c"})
    assert {k: v["runId"] for k, v in ledger.done.items()} == {"2": "a", "3": "c"}
    assert ledger.failed == {}


# ------------------------------------------------------------------ end to end, as a user runs it


def sweep_env(settings) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    return {**env, **settings.as_environ()}


def cli(settings, module: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT,
                          env=sweep_env(settings), capture_output=True, text=True,
                          timeout=timeout)


def queue_names(settings) -> set[str]:
    return {q.name for q in queue_service(settings).list_queues()}


@pytest.fixture
def sweep_settings(azurite, azurite_queue, tmp_path):
    settings = replace(isolated_settings(azurite, tmp_path),
                       azurite_queue_port=str(azurite_queue.port))
    container_datastore(settings)
    return settings


def test_a_bad_grid_queues_and_triggers_nothing(sweep_settings, tmp_path):
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs,lr\n10,0.1\n10,0.1\n")
    before = queue_names(sweep_settings)
    result = cli(sweep_settings, "adf", "sweep", "start", "--grid", str(grid))
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert f"Grid file '{grid}' line 3 repeats line 2" in result.stderr
    assert queue_names(sweep_settings) == before
    assert not (Path(sweep_settings.local_dir) / "adf" / "runs").exists()


GRID = "epochs,lr,seed,test_size\n20,0.1,1,0.2\n20,0.2,1,0.2\n40,0.1,2,0.2\n20,0.1,1,0.99\n"
GRID_PARAMS = {2: (20, 0.1, 1), 3: (20, 0.2, 1), 4: (40, 0.1, 2)}


@pytest.fixture(scope="module")
def finished_sweep(azurite, azurite_queue, tmp_path_factory):
    """One sweep of 4 lines over 2 runners; line 5 always fails (test_size 0.99 leaves the
    trainer too few rows), so it is reported failed after maxAttempts=2. The grace
    period is far longer than the test's timeout: the runners and `start` must stop once
    every line is accounted for, not once the queue has been empty that long."""
    tmp = tmp_path_factory.mktemp("sweep")
    settings = replace(isolated_settings(azurite, tmp), azurite_queue_port=str(azurite_queue.port))
    container_datastore(settings)
    (tmp / "grid.csv").write_text(GRID)
    result = cli(settings, "adf", "sweep", "start", "--grid", str(tmp / "grid.csv"),
                 "--workers", "2", "--param", "maxAttempts=2", "--param", "gracePeriodSeconds=900",
                 "--param", "visibilityTimeoutSeconds=20", "--poll", "0.5")
    # `start` returns once every line is accounted for; its run ends as the runners stop.
    run_id = re.search(r"pipeline run (\S+) \(local\)", result.stdout)
    if run_id:
        cli(settings, "adf", "status", run_id.group(1), "--wait")
    return settings, result


@pytest.mark.slow
def test_a_local_sweep_trains_every_line_and_reports_the_poisoned_one(finished_sweep):
    settings, result = finished_sweep
    out = result.stdout
    assert result.returncode == ExitCode.RUN_FAILED, out + result.stderr  # a line failed
    sweep_id = re.search(r"Started sweep ([\w-]+): 4 lines, 2 runner\(s\)", out).group(1)
    assert "Queued 4 lines" in out
    assert re.search(r"Pipeline run \S+(: Succeeded| is InProgress: every line is accounted "
                     r"for, so its runners are stopping)", out), out
    assert "done 3 + failed 1 = 4 == total 4" in out
    assert re.search(r"line 5 failed after 2 attempt\(s\) \(epochs=20 lr=0.1 seed=1 "
                     r"test_size=0.99\): Input file 'iris_csv.csv' has too few rows", out), out
    assert f"Sweep {sweep_id}: 1 of 4 lines failed." in result.stderr
    board = re.findall(r"^\s+(\d+)\s+(\d)\s+([0-9a-f]{32})\s+([\d.]+)\s+([\d.]+)", out, re.M)
    assert [int(rank) for rank, *_ in board] == [1, 2, 3]
    assert sorted(int(line) for _, line, *_ in board) == [2, 3, 4]
    scores = [(-float(acc), -float(f1), int(line)) for _, line, _, acc, f1 in board]
    assert scores == sorted(scores)

    # Every complete run records its sweep and line; one per line.
    from workspace.datastore import Datastore

    runs = sweep_runs(Datastore.from_settings(settings), settings.model_prefix, sweep_id)
    assert sorted(r.line for r in runs) == [2, 3, 4]
    assert {r.run.run_id for r in runs} == {run_id for _, _, run_id, *_ in board}
    # The two runners were two tasks of one ForEach, each with its customOutput.
    run_dir = next((Path(settings.local_dir) / "adf" / "runs").iterdir())
    activities = json.loads((run_dir / "run.json").read_text())["activities"]
    outputs = [a["output"]["customOutput"] for a in activities]
    assert len(activities) == 2 and all(a["status"] == "Succeeded" for a in activities)
    assert sum(o["done"] for o in outputs) == 3 and sum(o["failed"] for o in outputs) == 1
    assert {o["sweepId"] for o in outputs} == {sweep_id}
    # Both runners stopped because every line was accounted for, not after the grace period.
    logs = [(run_dir / a["activity_run_id"] / "stdout.txt").read_text() for a in activities]
    assert all("all 4 line(s) of the sweep are accounted for (done or failed); stopping" in log
               for log in logs), logs
    assert not any("has been empty for" in log for log in logs)


@pytest.mark.slow
def test_status_list_and_deploying_the_best_run_of_the_latest_sweep(finished_sweep, tmp_path):
    settings, result = finished_sweep
    sweep_id = re.search(r"Started sweep ([\w-]+):", result.stdout).group(1)
    best_run = re.search(r"^\s+1\s+\d\s+([0-9a-f]{32})", result.stdout, re.M).group(1)

    status = cli(settings, "adf", "sweep", "status")
    assert status.returncode == 0, status.stderr
    assert f"Sweep {sweep_id}" in status.stdout and "done 3 + failed 1 = 4 == total 4" in status.stdout
    listed = cli(settings, "adf", "sweep", "list")
    assert re.search(rf"^{sweep_id}\s+\S+\s+4\s+3\s+1\s", listed.stdout, re.M), listed.stdout

    deploy = cli(settings, "deployer", "register-and-deploy", "--sweep", "latest", "--dry-run",
                 "--force")
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert f"sweep {sweep_id}: best complete run {best_run}" in deploy.stdout + deploy.stderr
    assert f"(run {best_run}," in deploy.stdout
    unknown = cli(settings, "deployer", "register-and-deploy", "--sweep", "sw-nope", "--dry-run")
    assert unknown.returncode != 0 and "Sweep 'sw-nope' has no complete run" in unknown.stderr

    # Registered with its lineage: the sweep, the grid line and the line's parameters.
    from deployer.app import Deployer
    from workspace.published import find_published_run

    deployer = Deployer(settings)
    run = find_published_run(deployer.datastore, settings.model_prefix, best_run)
    tags = deployer.model_source(run, tmp_path).tags
    line = int(re.search(rf"^\s+1\s+(\d)\s+{best_run}", result.stdout, re.M).group(1))
    assert tags["sweep_id"] == sweep_id and tags["sweep_line"] == line
    assert {k: tags[f"param.{k}"] for k in ("epochs", "lr", "seed")} == \
        dict(zip(("epochs", "lr", "seed"), GRID_PARAMS[line]))


@pytest.mark.slow
def test_make_ui_lists_the_sweeps_lines_under_its_run_in_a_real_browser(finished_sweep,
                                                                          tmp_path):
    """What a user sees: `make ui` imports the sweep's runs (under the trainer's run ids)
    and the address it prints opens the runs table, where the sweep's run expands to its
    lines. A screenshot of it is kept in the test's tmp folder (mlflow-ui.png)."""
    from tests.support.browser import Page, locate_chromium
    from tests.support.mlflow_ui import make_ui
    from workspace.azurite import free_port
    from workspace.tracking import known_runs, sweep_run_id

    chromium = locate_chromium()
    settings, result = finished_sweep
    sweep_id = re.search(r"Started sweep ([\w-]+):", result.stdout).group(1)
    board = set(re.findall(r"^\s+\d+\s+\d\s+([0-9a-f]{32})", result.stdout, re.M))
    with make_ui(sweep_env(settings), free_port()) as (server, url):
        assert "tracking store: 3 run(s) imported" in server.said, server.said
        assert board | {sweep_run_id(sweep_id)} <= known_runs(settings.local_path / "mlflow.db")
        with Page(chromium, tmp_path / "browser") as page:
            page.navigate(url)
            page.wait_for(f"document.body.innerText.includes({sweep_id!r})", "the sweep's run")
            assert "Run Name" in page.evaluate("document.body.innerText")  # the runs table, not GenAI
            # The lines are the sweep run's children: listed once its row is expanded.
            expanders = page.evaluate("""[...document.querySelectorAll(
                '[data-component-id$="runnamecellrenderer.tsx_46"]')].map(b => (b.click(), 1))
                .length""")
            assert expanders == 1
            shown = "['line-2', 'line-3', 'line-4'].every(n => document.body.innerText.includes(n))"
            page.wait_for(shown, "the sweep's lines line-2, line-3 and line-4")
            shot = page.screenshot(tmp_path / "mlflow-ui.png")
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


@pytest.mark.slow
def test_sweep_status_and_list_as_json_for_scripts(finished_sweep):
    settings, result = finished_sweep
    sweep_id = re.search(r"Started sweep ([\w-]+):", result.stdout).group(1)

    status = cli(settings, "adf", "sweep", "status", sweep_id, "-o", "json")
    listed = cli(settings, "adf", "sweep", "list", "--output", "json")

    assert status.returncode == 0 and listed.returncode == 0, status.stderr + listed.stderr
    shown = json.loads(status.stdout)
    assert (shown["schema_version"], shown["kind"]) == (1, "adf.sweep")
    assert shown["sweep"]["sweep_id"] == sweep_id and shown["sweep"]["total"] == 4
    assert shown["sweep"]["workers"] == 2 and "lines" not in shown["sweep"]
    assert (shown["done"], shown["failed"], shown["accounted"], shown["missing_lines"]) == (
        3, 1, True, [])
    assert shown["pipeline_status"] == "Succeeded"
    board = shown["leaderboard"]
    assert [entry["rank"] for entry in board] == [1, 2, 3]
    assert sorted(entry["line"] for entry in board) == [2, 3, 4]
    assert all(re.fullmatch(r"[0-9a-f]{32}", entry["run_id"]) for entry in board)
    scores = [(-e["metrics"]["test_accuracy"], -e["metrics"]["test_f1_macro"], e["line"])
              for e in board]
    assert scores == sorted(scores)
    for entry in board:  # as the table shows them
        assert re.search(rf"^\s+{entry['rank']}\s+{entry['line']}\s+{entry['run_id']}\s+"
                         rf"{entry['test_accuracy']:.3f}", result.stdout, re.M)
    (failure,) = shown["failures"]
    assert (failure["line"], failure["attempts"], failure["params"]["test_size"]) == (5, 2, 0.99)
    assert "too few rows" in failure["error"]

    entries = json.loads(listed.stdout)
    assert entries["kind"] == "adf.sweeps"
    (entry,) = [e for e in entries["sweeps"] if e["sweep_id"] == sweep_id]
    assert (entry["total"], entry["done"], entry["failed"]) == (4, 3, 1)
    assert entry["best"] == {**board[0], "rank": 1}


# ------------------------------------------------------------------ runners as processes


def report(store, reports: str, runner: str, *entries: tuple[str, dict]) -> None:
    """Append reports to a runner's report blob as trainer/node_runner.py's `Reports` does:
    one JSON line per Append Block, {"kind": "results"|"failures", "body": {...}}."""
    container, _, prefix = reports.partition("/")
    blob = store.sibling(container).client.get_blob_client(f"{prefix}/{runner}.jsonl")
    if not blob.exists():
        blob.create_append_blob()
    for kind, body in entries:
        blob.append_block((json.dumps({"kind": kind, "body": body}) + "\n").encode())


def collected(settings, sweep_id: str) -> Ledger:
    """What the sweep's collector folds from the reports of runners started with
    `start_runner` (a record made for it)."""
    from adf.local_runner import LocalBackend
    from workspace.datastore import Datastore

    sweeps = Sweeps(LocalBackend(settings), Datastore.from_settings(settings),
                    queue_service(settings))
    record = SweepRecord(sweep_id, "", "", "local", 1, [], reports=reports_path(
        sweep_id, f"{settings.container}/{settings.model_prefix}"))
    sweeps.save(record)
    return sweeps.collect(sweep_id, record)


def start_runner(settings, azurite, sweep_id: str, workdir: Path, name: str,
                 visibility: int, grace_period: float = 1) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env["AZURE_STORAGE_CONNECTION_STRING"] = azurite.connection_string
    return subprocess.Popen(
        [sys.executable, str(NODE_RUNNER), "--sweep-id", sweep_id,
         "--queue-url", settings.queue_endpoint, "--iris-csv", str(IRIS_CSV),
         "--containerName", f"{settings.container}/{settings.model_prefix}",
         "--visibility-timeout", str(visibility), "--grace-period", str(grace_period),
         "--poll-interval", "0.2",
         "--runner-id", name, "--outputs-json", str(workdir / "outputs.json")],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_runner_killed_mid_line_leaves_the_line_to_another_counted_once(
        sweep_settings, azurite, tmp_path):
    sweep_id = f"sw-{uuid.uuid4().hex[:12]}"
    queues = SweepQueues(queue_service(sweep_settings), sweep_id)
    queues.create()
    for line, epochs in ((2, 20), (3, 30), (4, 40)):
        queues.send("work", {"sweep": sweep_id, "line": line, "params": {"epochs": epochs}})

    # Both start together; the killed runner's line stays hidden longer than the survivor
    # needs for the other lines: the survivor must wait for it (the queue still counts it)
    # rather than stop once idle.
    doomed = start_runner(sweep_settings, azurite, sweep_id, tmp_path / "a", "runner-a", 20)
    survivor = start_runner(sweep_settings, azurite, sweep_id, tmp_path / "b", "runner-b", 4)
    for text in doomed.stdout:
        match = re.search(r"line (\d+) attempt 1: training", text)
        if match:
            break
    killed_line = int(match.group(1))
    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.wait(10) == -signal.SIGKILL
    assert not Path(f"/proc/{doomed.pid}").exists()   # reaped, nothing left behind

    out, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, out
    # The killed line came back after its visibility timeout and was trained again.
    assert f"line {killed_line} attempt 2: training" in out
    outputs = json.loads((tmp_path / "b" / "outputs.json").read_text())
    assert outputs["done"] == 3 and outputs["failed"] == 0

    ledger = collected(sweep_settings, sweep_id)
    assert sorted(ledger.done) == ["2", "3", "4"] and ledger.failed == {}
    assert queues.counts().work == 0
    from workspace.datastore import Datastore

    runs = sweep_runs(Datastore.from_settings(sweep_settings), sweep_settings.model_prefix,
                      sweep_id)
    assert sorted(r.line for r in runs) == [2, 3, 4]   # a twice-published line counts once
    queues.delete()


@pytest.mark.slow
def test_runners_ride_out_a_queue_service_restart(azurite, tmp_path):
    """The queue service (persisting its data) stops mid-sweep and comes back on the same
    port: the runner backs off and goes on; no line is lost or counted twice."""
    from workspace.queues import AzuriteQueueProcess

    service = AzuriteQueueProcess(location=tmp_path / "queue-data").start()
    try:
        settings = replace(isolated_settings(azurite, tmp_path), azurite_queue_port=str(service.port))
        container_datastore(settings)
        sweep_id = f"sw-{uuid.uuid4().hex[:12]}"
        queues = SweepQueues(queue_service(settings), sweep_id)
        queues.create()
        for line in (2, 3, 4, 5):
            queues.send("work", {"sweep": sweep_id, "line": line, "params": {"epochs": 10 * line}})
        runner = start_runner(settings, azurite, sweep_id, tmp_path / "r", "runner", 8)
        seen = []
        for text in runner.stdout:
            seen.append(text)
            if re.search(r"line \d+ done", text) and service.process is not None:
                service.stop()                     # mid-sweep
            if "queue service unreachable" in text:
                break
        service = AzuriteQueueProcess(port=service.port, location=tmp_path / "queue-data").start()
        rest, _ = runner.communicate(timeout=300)
        assert runner.returncode == 0, "".join(seen) + rest

        ledger = collected(settings, sweep_id)
        assert sorted(ledger.done) == ["2", "3", "4", "5"] and ledger.failed == {}
        from workspace.datastore import Datastore

        runs = sweep_runs(Datastore.from_settings(settings), settings.model_prefix, sweep_id)
        assert sorted(r.line for r in runs) == [2, 3, 4, 5]
    finally:
        service.stop()


# ------------------------------------------------------------------ pieces


def test_range_and_the_foreach_plan_of_the_sweep_pipeline(tmp_path):
    from adf.definitions import SWEEP_PIPELINE_FILE, effective_parameters
    from adf.expressions import ExpressionError, PipelineContext, evaluate
    from adf.activity_plan import LOCAL_POOL_SLOTS, plan_activity
    from adf.local_runner import LocalBackend
    from workspace.settings import Settings

    context = PipelineContext("p", "r", {"workers": 3})
    assert evaluate("@range(1, pipeline().parameters.workers)", context) == [1, 2, 3]
    with pytest.raises(ExpressionError, match="range\\(\\) takes two integers"):
        evaluate("@range(1, '3')", context)

    backend = LocalBackend(Settings.load(env_file=tmp_path / "none.env", environ={}))
    backend.pipeline_file = SWEEP_PIPELINE_FILE
    definitions = backend.definitions()
    assert definitions.activity["type"] == "Custom" and definitions.for_each["type"] == "ForEach"
    values = effective_parameters(definitions, {"sweepId": "sw-x", "workers": 5})
    plan = plan_activity(definitions, values, "run-1", backend.settings)
    assert plan.iterations == 5 and plan.batch_count == min(20, LOCAL_POOL_SLOTS)
    assert 'node_runner.py --sweep-id "sw-x"' in plan.command


def test_a_lease_keeps_a_line_hidden_while_it_trains(sweep_settings):
    """Received with a 2 s visibility timeout and held for 3 s: no other runner sees it."""
    sys.path.insert(0, str(REPO_ROOT / "trainer"))
    try:
        from node_runner import Lease
    finally:
        sys.path.remove(str(REPO_ROOT / "trainer"))
    queues = SweepQueues(queue_service(sweep_settings), f"sw-{uuid.uuid4().hex[:12]}")
    queues.create()
    work = queues.clients["work"]
    work.send_message(json.dumps({"line": 2}))
    message = work.receive_message(visibility_timeout=2)
    with Lease(work, message, 2) as lease:
        import time

        time.sleep(3)
        assert work.receive_message(visibility_timeout=2) is None   # renewed at half-time
        lease.delete()                                              # with the renewed receipt
    assert queues.counts().work == 0
    queues.delete()


@pytest.mark.slow
def test_killing_or_cancelling_the_sweep_run_leaves_no_runner_behind(sweep_settings, tmp_path):
    """The ForEach's runners are tasks of the local runner: SIGKILL of the runner takes them
    down (parent-death signal); `adf cancel` stops every one of them. Their lines stay queued."""
    import time

    from workspace.processes import live_pid

    grid = tmp_path / "grid.csv"
    grid.write_text("epochs\n" + "".join(f"{e}\n" for e in range(100, 106)))
    runs = Path(sweep_settings.local_dir) / "adf" / "runs"

    def start_and_wait_for_two_tasks() -> tuple[str, Path, list[int]]:
        started = cli(sweep_settings, "adf", "sweep", "start", "--grid", str(grid), "--workers",
                      "2", "--no-wait", "--param", "gracePeriodSeconds=30")
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = re.search(r"pipeline run (\S+) \(local\)", started.stdout).group(1)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pids = [live_pid(p) for p in (runs / run_id).glob("*/task.pid")]
            if len(pids) == 2 and all(pids):
                return run_id, runs / run_id, pids
            time.sleep(0.2)
        raise AssertionError(f"two runner tasks did not start: {list((runs / run_id).iterdir())}")

    # kill -9 the local runner: both runner processes go with it.
    run_id, run_dir, tasks = start_and_wait_for_two_tasks()
    os.kill(live_pid(run_dir / "runner.pid"), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in tasks if Path(f"/proc/{pid}").exists()]
    status = cli(sweep_settings, "adf", "sweep", "status")
    assert f"Pipeline run {run_id}: Failed" in status.stdout, status.stdout + status.stderr
    # The run ended with lines unaccounted for: status says so and exits non-zero.
    assert status.returncode == ExitCode.RUN_FAILED, status.stdout + status.stderr
    assert re.search(r"done \d \+ failed 0 != total 6; lines not accounted for: [\d, ]+\.",
                     status.stderr), status.stderr
    assert f"Pipeline run {run_id} is Failed (The local runner stopped" in status.stderr

    # adf cancel: the run ends Cancelled and no runner is left.
    run_id, run_dir, tasks = start_and_wait_for_two_tasks()
    cancelled = cli(sweep_settings, "adf", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert not [pid for pid in tasks if Path(f"/proc/{pid}").exists()]
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "Cancelled"
    assert {a["status"] for a in run["activities"]} == {"Cancelled"}


@pytest.mark.slow
def test_a_completed_line_is_published_complete_once(sweep_settings, azurite, tmp_path):
    """Line 3 came back after a runner died having completed it (its claim exists): reported,
    not retrained. Line 2 was completed by another runner while this one trained it: this
    runner's copy is withdrawn (no manifest), the first run is reported. Line 4 is new."""
    from workspace.datastore import Datastore

    store = Datastore.from_settings(sweep_settings)
    sweep_id = f"sw-{uuid.uuid4().hex[:12]}"
    queues = SweepQueues(queue_service(sweep_settings), sweep_id)
    queues.create()
    metrics = {"test_accuracy": 0.5, "test_f1_macro": 0.5}
    for line in (3, 2, 4):
        queues.send("work", {"sweep": sweep_id, "line": line, "params": {"epochs": 10 * line}})
    # Line 3 was received once by a runner that died (it is back with dequeue count 2).
    first = queues.clients["work"].receive_message(visibility_timeout=1)
    assert json.loads(first.content)["line"] == 3
    for line in (2, 3):
        store.upload_bytes(json.dumps({"line": line, "runId": f"first-{line}", "params": {},
                                       "metrics": metrics, "seconds": 1.0}).encode(),
                           f"{sweep_settings.model_prefix}/sweeps/{sweep_id}/line-{line}.json")

    runner = start_runner(sweep_settings, azurite, sweep_id, tmp_path / "r", "runner", 10)
    out, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, out
    assert "line 3 was completed already by run first-3; reporting it" in out
    assert "line 3 attempt" not in out
    assert "line 2 was completed first by run first-2;" in out and "withdrawn" in out

    ledger = collected(sweep_settings, sweep_id)
    assert {k: v["runId"] for k, v in ledger.done.items() if k in ("2", "3")} == \
        {"2": "first-2", "3": "first-3"} and sorted(ledger.done) == ["2", "3", "4"]
    runs = sweep_runs(store, sweep_settings.model_prefix, sweep_id)
    assert [r.line for r in runs] == [4]     # line 2's copy has no manifest: not complete
    queues.delete()
