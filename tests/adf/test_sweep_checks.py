"""What `sweep start` checks before it queues a line (the runner's parameters, with the
runner's own option types, and how many runners can work at once), and which lines a
sweep ranks (enough test rows)."""
from __future__ import annotations

import argparse
import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from adf.azure_backend import AzureBackend
from adf.definitions import SWEEP_PIPELINE_FILE, Document, load_definitions
from adf.activity_plan import LOCAL_POOL_SLOTS, plan_activity
from adf.local_runner import LocalBackend
from adf.parameters import script_parser
from adf.sweep import Ledger, Sweeps
from adf.sweep_runners import runner_count
from tests.adf.test_azure_backend import AZURE_VALUES
from tests.adf.test_sweep import cli, queue_names, sweep_settings  # noqa: F401 - fixtures
from tests.conftest import container_datastore, isolated_settings
from tests.support.fake_http import StaticTokenCredential
from workspace.errors import ConfigError, ExitCode
from workspace.settings import Settings
from workspace.sweep_runs import sweep_runs


def _grid(tmp_path: Path, lines: int) -> Path:
    grid = tmp_path / "grid.csv"
    grid.write_text("epochs,seed\n" + "".join(f"5,{seed}\n" for seed in range(lines)))
    return grid


def _local(tmp_path: Path) -> Sweeps:
    settings = Settings.load(env_file=tmp_path / "none.env", environ={},
                             local_dir=str(tmp_path / "local"))
    return Sweeps(LocalBackend(settings), store=None, queue_service=None)


def _azure(tmp_path: Path, **values: str) -> Sweeps:
    settings = Settings.load(env_file=tmp_path / "none.env", environ={},
                             local_dir=str(tmp_path / "local"), **{**AZURE_VALUES, **values})
    return Sweeps(AzureBackend(settings, credential=StaticTokenCredential()), store=None,
                  queue_service=None)


# ------------------------------------------------------------------ runner parameters

BAD_PARAMETERS = {
    "maxAttempts=0": ("--max-attempts", "must be between 1 and 1000000, got 0"),
    "visibilityTimeoutSeconds=0": ("--visibility-timeout", "must be between 1 and 604800, got 0"),
    "visibilityTimeoutSeconds=604801": ("--visibility-timeout",
                                        "must be between 1 and 604800, got 604801"),
    "gracePeriodSeconds=-1": ("--grace-period", "must be between 0 and 3600, got -1"),
    "gracePeriodSeconds=86400": ("--grace-period", "must be between 0 and 3600, got 86400"),
}


@pytest.mark.parametrize("pair", sorted(BAD_PARAMETERS))
def test_a_runner_parameter_the_runner_refuses_is_refused_first(pair, tmp_path):
    name, value = pair.split("=")
    option, why = BAD_PARAMETERS[pair]
    with pytest.raises(ConfigError) as error:
        _local(tmp_path).plan(_grid(tmp_path, 2), 2, {name: value})
    assert error.value.message == (f"--param {pair}: passed to the sweep runner as {option}, "
                                   f"which {why}.")
    # The same rule as the runner's own parser: it would exit 2 on that value.
    with pytest.raises(SystemExit) as exited:
        script_parser("node_runner.py").parse_args(
            ["--sweep-id", "s", "--queue-url", "u", "--containerName", "c", option, value])
    assert exited.value.code == 2


def test_good_runner_parameters_pass_and_the_local_runner_applies_the_same_rule(tmp_path):
    sweeps = _local(tmp_path)
    _, typed, _ = sweeps.plan(_grid(tmp_path, 2), 2, {
        "maxAttempts": "1", "visibilityTimeoutSeconds": "604800", "gracePeriodSeconds": "0"})
    assert typed == {"maxAttempts": 1, "visibilityTimeoutSeconds": 604800,
                     "gracePeriodSeconds": 0}
    definitions = sweeps.backend.definitions()
    values = {name: spec.get("defaultValue") for name, spec in definitions.parameters.items()}
    values.update(sweepId="sw-x", visibilityTimeoutSeconds=0)
    with pytest.raises(ConfigError, match="as --visibility-timeout, which must be between 1"):
        plan_activity(definitions, values, "run-1", sweeps.backend.settings)


def test_loading_the_runners_parser_leaves_no_trace_in_this_process():
    import sys

    before_path, had_main = list(sys.path), "main" in sys.modules
    script_parser.cache_clear()
    parser = script_parser("node_runner.py")
    assert isinstance(parser, argparse.ArgumentParser) and parser.prog == "node_runner.py"
    assert sys.path == before_path and ("main" in sys.modules) == had_main


def test_a_bad_runner_parameter_queues_nothing(sweep_settings, tmp_path):
    before = queue_names(sweep_settings)
    result = cli(sweep_settings, "adf", "sweep", "start", "--grid", str(_grid(tmp_path, 2)),
                 "--param", "visibilityTimeoutSeconds=0")
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert ("error: --param visibilityTimeoutSeconds=0: passed to the sweep runner as "
            "--visibility-timeout, which must be between 1 and 604800, got 0.") in result.stderr
    assert "Traceback" not in result.stderr
    assert queue_names(sweep_settings) == before
    assert not (Path(sweep_settings.local_dir) / "adf" / "runs").exists()


# ------------------------------------------------------------------ how many runners


def test_workers_are_capped_at_the_lines(tmp_path):
    _, _, runners = _local(tmp_path).plan(_grid(tmp_path, 1), 1000, {})
    assert runners.count == 1
    assert runners.note == "--workers 1000 lowered to 1: the grid has 1 line(s)."


def test_workers_are_capped_at_the_local_pool(tmp_path):
    lines = LOCAL_POOL_SLOTS + 3
    _, _, runners = _local(tmp_path).plan(_grid(tmp_path, lines), lines, {})
    assert runners.count == LOCAL_POOL_SLOTS
    assert runners.note == (f"--workers {lines} lowered to {LOCAL_POOL_SLOTS}: the local pool "
                            f"runs {LOCAL_POOL_SLOTS} tasks at once (this machine's cores).")


def test_workers_are_capped_at_the_pools_max_nodes_on_azure(tmp_path):
    _, _, runners = _azure(tmp_path, batch_pool_max_nodes="4").plan(_grid(tmp_path, 30), 10, {})
    assert runners.count == 4
    assert runners.note == ("--workers 10 lowered to 4: pool dsvm-pool autoscales to at most 4 "
                            "node(s), one task each (BATCH_POOL_MAX_NODES).")


def test_workers_are_capped_at_the_foreach_batch_count_and_an_unknown_pool_is_said(tmp_path):
    _, _, runners = _azure(tmp_path).plan(_grid(tmp_path, 60), 1000, {})
    assert runners.count == 20   # adf/sweep-pipeline.json's batchCount
    assert runners.note.startswith("--workers 1000 lowered to 20: the ForEach of "
                                   "adf/sweep-pipeline.json runs 20 iteration(s) at once")
    assert runners.note.endswith("Not checked against the pool: the size of pool dsvm-pool is "
                                 "unknown (BATCH_POOL_MAX_NODES is not set; make deploy-infra "
                                 "writes it).")


def test_a_batch_count_over_data_factorys_limit_counts_as_50():
    definitions = load_definitions(None, SWEEP_PIPELINE_FILE)
    body = copy.deepcopy(definitions.pipeline.body)
    body["properties"]["activities"][0]["typeProperties"]["batchCount"] = 80
    changed = replace(definitions, pipeline=Document(definitions.pipeline.path, body))
    assert runner_count(1000, 500, changed, (None, "unknown")).count == 50
    body["properties"]["activities"][0]["typeProperties"]["isSequential"] = True
    assert runner_count(1000, 500, changed, (None, "unknown")).count == 1


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_bad_pool_size_setting_is_refused(value, tmp_path):
    with pytest.raises(ConfigError, match=f"BATCH_POOL_MAX_NODES is '{value}'"):
        Settings.load(env_file=tmp_path / "none.env", environ={"BATCH_POOL_MAX_NODES": value})


# ------------------------------------------------------------------ a real sweep


@pytest.fixture(scope="module")
def small_sweep(azurite, azurite_queue, tmp_path_factory):
    """Two lines, one holding out 3 Iris rows (test_size 0.001), the other 30 (0.2), started
    with --workers 1000."""
    tmp = tmp_path_factory.mktemp("small-sweep")
    settings = replace(isolated_settings(azurite, tmp), azurite_queue_port=str(azurite_queue.port))
    container_datastore(settings)
    grid = tmp / "grid.csv"
    grid.write_text("epochs,test_size\n50,0.001\n50,0.2\n")
    result = cli(settings, "adf", "sweep", "start", "--grid", str(grid), "--workers", "1000",
                 "--param", "gracePeriodSeconds=1", "--poll", "0.5", timeout=240)
    return settings, result


@pytest.mark.slow
def test_a_local_sweep_with_1000_workers_on_two_lines_starts_two_runners(small_sweep):
    settings, result = small_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--workers 1000 lowered to 2: the grid has 2 line(s)" in result.stdout
    assert re.search(r"Started sweep [\w-]+: 2 lines, 2 runner\(s\)", result.stdout)
    run_dir = next((Path(settings.local_dir) / "adf" / "runs").iterdir())
    assert len(json.loads((run_dir / "run.json").read_text())["activities"]) == 2


@pytest.mark.slow
def test_a_line_on_three_test_rows_is_not_ranked_nor_deployed_as_the_best(small_sweep):
    settings, result = small_sweep
    out = result.stdout
    board = re.findall(r"^\s+(\d+)\s+(\d)\s+([0-9a-f]{32})\s+([\d.]+)", out, re.M)
    assert [(rank, line) for rank, line, *_ in board] == [("1", "3")], out
    tiny = re.search(r"^line 2 not ranked \(epochs=50 test_size=0.001\): run ([0-9a-f]{32}): "
                     r"test_accuracy [\d.]+ on only 3 test rows; a run needs at least 30 test "
                     r"rows to be ranked\.$", out, re.M)
    assert tiny, out
    assert "done 2 + failed 0 = 2 == total 2" in out

    from workspace.datastore import Datastore

    runs = sweep_runs(Datastore.from_settings(settings), settings.model_prefix, "latest")
    assert [(r.line, r.run.metrics["test_rows"]) for r in runs] == [(3, 30.0), (2, 3.0)]
    best = cli(settings, "deployer", "register-and-deploy", "--sweep", "latest", "--dry-run",
               "--force")
    said = best.stdout + best.stderr
    assert best.returncode == 0 and f"best complete run {board[0][2]} (line 3," in said, said
    listed = cli(settings, "adf", "sweep", "list").stdout
    assert re.search(r"\s2\s+0\s+[\d.]+ \(line 3\)$", listed, re.M), listed
    # Asked for by id, the run of line 2 is refused by the gate.
    refused = cli(settings, "deployer", "register-and-deploy", "--run-id", tiny.group(1),
                  "--dry-run")
    assert refused.returncode == ExitCode.QUALITY_GATE, refused.stdout + refused.stderr
    assert "on only 3 test rows: the quality gate needs at least 30" in refused.stderr


def test_the_ledger_ranks_only_lines_with_enough_test_rows():
    ledger = Ledger()
    for line, accuracy, rows in ((2, 1.0, 3.0), (3, 0.967, 30.0), (4, 0.9, 45.0), (5, 1.0, None)):
        metrics = {"test_accuracy": accuracy, "test_f1_macro": accuracy}
        if rows is not None:
            metrics["test_rows"] = rows
        ledger.record("results", {"line": line, "runId": f"r{line}", "params": {},
                                  "metrics": metrics})
    assert [r["line"] for r in ledger.leaderboard()] == [3, 4]
    assert [(r["line"], why) for r, why in ledger.unranked()] == [
        (2, "test_accuracy 1.000 on only 3 test rows; a run needs at least 30 test rows to be "
            "ranked"),
        (5, "test_accuracy 1.000 with no test_rows metric (the size of its test set); a run "
            "needs at least 30 test rows to be ranked")]
