"""The quality gate on real training runs: one that held out only 3 rows (test_size
0.001), and a model worse than the one serving the endpoint."""
from __future__ import annotations

import re

import pytest

from tests.conftest import container_datastore, isolated_settings, train_iris
from tests.deployer.test_local_cli import Cli, ok, trained  # noqa: F401
from tests.deployer.test_rollout_local import publish_retrained
from workspace.errors import ExitCode
from workspace.published import find_published_run

pytestmark = pytest.mark.slow


def test_a_perfect_score_on_three_test_rows_does_not_pass_the_gate(azurite, tmp_path):
    settings = isolated_settings(azurite, tmp_path)
    store = container_datastore(settings)
    trained = train_iris(azurite, settings, tmp_path / "node", "--test-size", "0.001")
    assert trained.returncode == 0, trained.stderr
    run = find_published_run(store, settings.model_prefix)
    assert run.metrics["test_rows"] == 3.0 and run.metrics["test_accuracy"] == 1.0

    cli = Cli(settings, tmp_path / "cli")
    refused = cli("register-and-deploy", "--dry-run")
    assert refused.returncode == ExitCode.QUALITY_GATE, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: Run {run.run_id} has test_accuracy 1.000 on only 3 test rows: "
                      "the quality gate needs at least 30; it was not deployed."]
    assert "larger --test-size" in refused.stderr

    lowered = cli("register-and-deploy", "--dry-run", "--min-test-rows", "3")
    assert lowered.returncode == 0, lowered.stdout + lowered.stderr
    forced = cli("register-and-deploy", "--dry-run", "--force")
    assert forced.returncode == 0 and "(deployed anyway: --force)" in forced.stdout + forced.stderr


def test_a_model_worse_than_the_serving_one_is_refused_unless_forced(trained, tmp_path):
    """The session's trained model serves; a retrained copy whose manifest reports test
    accuracy 0.700 on 150 rows is worse beyond the sampling uncertainty of both test sets:
    exit 5, nothing changes; one error more on the same number of rows is lower too, and
    refused as such, saying it may be noise (the issue's 1.000 -> 0.967 second `make demo`);
    one as good is deployed, and the plan shows both models' accuracy."""
    settings, store, run, _ = trained
    cli = Cli(settings, tmp_path / "work")
    ok(cli("register-and-deploy", "--no-smoke"))
    serving = f"{run.metrics['test_accuracy']:.3f} on {int(run.metrics['test_rows'])}"
    before = (cli.local_dir / "deployer" / "state.json").read_bytes()

    worse = publish_retrained(store, run, "models-worse", metrics={
        **run.metrics, "test_accuracy": 0.7, "test_rows": 150.0})
    for extra in (["--dry-run"], []):
        refused = cli("register-and-deploy", "--model", worse, "--min-accuracy", "0.5", *extra)
        assert refused.returncode == ExitCode.QUALITY_GATE, refused.stdout + refused.stderr
        error = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert error == [f"error: Run {worse.split('/')[-3]} is worse than the model serving "
                         "endpoint 'iris-batch': iris-classifier:1 (deployment iris-mlflow-v1) "
                         f"serving; test_accuracy 0.700 on 150 test rows vs {serving} serving: "
                         "lower, beyond the sampling uncertainty of the two test sets (95 % "
                         "interval of the "
                         + error[0].split("interval of the ", 1)[1]], refused.stderr
        assert "--force" in refused.stderr
    assert (cli.local_dir / "deployer" / "state.json").read_bytes() == before
    forced = ok(cli("register-and-deploy", "--model", worse, "--min-accuracy", "0.5", "--force",
                    "--dry-run"))
    assert "(deployed anyway: --force)" in forced

    rows = int(run.metrics["test_rows"])
    close = publish_retrained(store, run, "models-close", metrics={
        **run.metrics, "test_accuracy": run.metrics["test_accuracy"] - 1 / rows})
    refused = cli("register-and-deploy", "--model", close, "--dry-run")
    assert refused.returncode == ExitCode.QUALITY_GATE, refused.stdout + refused.stderr
    assert re.search(rf"test_accuracy {run.metrics['test_accuracy'] - 1 / rows:.3f} on {rows} "
                     rf"test rows vs {re.escape(serving)} serving: lower, within the sampling "
                     r"uncertainty of the two test sets \(it may be noise\)", refused.stderr)
    as_good = publish_retrained(store, run, "models-as-good", metrics=dict(run.metrics))
    plan = ok(cli("register-and-deploy", "--model", as_good, "--dry-run"))
    assert re.search(r"serving\s+iris-classifier:1 \(deployment iris-mlflow-v1\) serving; "
                     rf"test_accuracy {run.metrics['test_accuracy']:.3f} on {rows} "
                     rf"test rows vs {re.escape(serving)} serving: not lower than the serving "
                     r"model's", plan), plan
    assert re.search(rf"model\s+iris-classifier version \(new version\)\s+\(run \S+, "
                     rf"test_accuracy \S+ on {rows} test rows\)", plan), plan
