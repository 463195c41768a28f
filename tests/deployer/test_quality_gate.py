"""The quality gate on a real training run that held out only 3 rows (test_size 0.001)."""
from __future__ import annotations

import pytest

from tests.conftest import container_datastore, isolated_settings, train_iris
from tests.deployer.test_local_cli import Cli
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
