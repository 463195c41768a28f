"""Backends implement `deployer.backends.base.Backend`; `get_backend` picks one by target
and imports the Azure SDK only when the Azure backend is chosen."""
from __future__ import annotations

from deployer.backends.base import Backend
from workspace.settings import Settings


def get_backend(settings: Settings) -> Backend:
    if settings.is_local:
        from deployer.backends.local import LocalBackend

        return LocalBackend(settings)
    from deployer.backends.azure import AzureBackend

    return AzureBackend(settings)
