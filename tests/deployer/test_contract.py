"""The contract between the application layer and the backends (deployer/backends/base.py,
deployer/entities.py), checked without a service."""
from __future__ import annotations

import pytest

from deployer.backends.base import Backend


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
