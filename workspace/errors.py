"""Typed errors with an actionable hint; CLIs print them as one line and exit non-zero."""
from __future__ import annotations


class ProjectError(Exception):
    """A problem the user can act on. `hint` says what to do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(ProjectError):
    """A setting is missing or invalid."""

    exit_code = 2


class DatastoreUnavailable(ProjectError):
    """The datastore (Azurite or Azure Storage) cannot be reached."""

    exit_code = 3


class DatastoreError(ProjectError):
    """The datastore answered with an error (missing container, denied access, ...)."""

    exit_code = 3


class LocalServiceError(ProjectError):
    """A local service (Azurite) could not be installed, started or stopped."""

    exit_code = 3
