"""Concurrent register-and-deploy of one endpoint, as processes on the local target: the
runs are serialised by a lease on a datastore blob, so the same content is registered once
and the deployment never flips between versions. A dry run changes and creates nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.deployer.test_local_cli import Cli, actions, registered_versions, trained  # noqa: F401
from tests.support.held_lock import HeldLock
from workspace.errors import DatastoreError

pytestmark = pytest.mark.slow


def test_three_concurrent_deploys_register_the_content_once(trained, azure_storage, tmp_path):
    """On storage answering as Azure does, where creating the lock blob while another run
    holds its lease is refused with 412 LeaseIdMissing (Azurite 3.37 answers 409)."""
    settings, _, _, _ = trained
    cli = Cli(replace(settings, azurite_port=str(azure_storage.port)), tmp_path / "work")
    procs = [subprocess.Popen([sys.executable, "-m", "deployer", "register-and-deploy"],
                              cwd=cli.workdir, env=cli.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for _ in range(3)]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"{out}\n{err}"
    assert [int(v.version) for v in registered_versions(cli.local_dir)] == [1]
    # One run created everything; the others found it done.
    created = [actions(out) for out, _ in outputs]
    assert sorted(a["model"] for a in created) == ["create", "no-op", "no-op"]
    assert sorted(a["deployment"] for a in created) == ["create", "no-op", "no-op"]
    state = json.loads((cli.local_dir / "deployer" / "state.json").read_text())
    deployments = state["deployments"]
    assert [d["model"] for ep in deployments.values() for d in ep.values()] == \
        ["iris-classifier:1"]


def test_a_dry_run_creates_no_file(trained, tmp_path):
    settings, store, _, _ = trained
    cli = Cli(settings, tmp_path / "work")
    before = sorted(b.name for b in store.list())
    result = cli("register-and-deploy", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not cli.local_dir.exists() or not any(cli.local_dir.rglob("*")), \
        sorted(map(str, cli.local_dir.rglob("*")))
    assert sorted(b.name for b in store.list()) == before


def test_the_lock_waits_for_its_holder_then_names_it(datastore):
    from deployer.app import deploy_lock_blob

    blob = deploy_lock_blob("ep-lock")
    holder = HeldLock(datastore, blob, "test")
    messages: list[str] = []
    with pytest.raises(DatastoreError, match="Gave up the deploy of x after 1.5 s") as err:
        with datastore.lease_lock(blob, purpose="deploy of x", wait_seconds=1.5,
                                  progress=messages.append):
            pass
    assert blob in str(err.value) and "expires by itself" in str(err.value)
    assert "held by test (process" in str(err.value)
    assert messages and "held by test (process" in messages[0]
    # Once released, the next caller gets it at once.
    holder.release()
    with datastore.lease_lock(blob, purpose="deploy of x", wait_seconds=30,
                              progress=messages.append):
        pass
    assert len(messages) == 1, messages  # it did not have to wait again
