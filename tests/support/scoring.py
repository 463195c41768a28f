"""A local batch endpoint serving the session's model, with inputs to score in the datastore:
the Iris file (`incoming/iris.csv`) and a file the model cannot read (`incoming/notes.txt`)."""
from __future__ import annotations

from pathlib import Path

from tests.conftest import IRIS_CSV, isolated_settings, published_copy
from tests.deployer.test_local_cli import Cli, ok


def deploy_local_endpoint(tmp: Path, azurite, trained_source):
    """(settings, datastore, deployer Cli) after `register-and-deploy --no-smoke`."""
    settings = isolated_settings(azurite, tmp)
    store = published_copy(trained_source, settings)
    deployer = Cli(settings, tmp / "work")
    ok(deployer("register-and-deploy", "--no-smoke"))
    store.upload_file(IRIS_CSV, "incoming/iris.csv")
    store.upload_bytes(b"not a table\n", "incoming/notes.txt")
    return settings, store, deployer
