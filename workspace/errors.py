"""Typed errors with an actionable hint; CLIs print them as one line and exit non-zero.

Every CLI of the project (`adf`, `deployer`, `workspace`, the trainer) exits with the same
codes; each error class takes its code from this table, never a number of its own.
"""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # anything not below
    USAGE = 2  # a bad setting, spec, option or input file
    UNREACHABLE = 3  # a service (Azurite, Azure Storage, Azure) unreachable or failing
    NOT_FOUND = 4  # a run, model, endpoint, deployment, job or resource does not exist,
    #               or a model fails its manifest's verification
    QUALITY_GATE = 5  # the model is below the quality gate
    SMOKE_TEST = 6  # the new deployment failed its smoke test
    RUN_FAILED = 7  # a pipeline run or scoring job ended Failed or Canceled, or timed out
    ACCESS_DENIED = 8  # no Azure sign-in, or the identity lacks a role
    NOT_ENDED = 9  # a scoring job has not ended yet, so it has no output to give: wait for it


# What each code means, in the words help texts use (`exit_help`, `EXIT_CODES_HELP`).
EXIT_CODE_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "any other failure",
    ExitCode.USAGE: "bad setting, spec, option or input",
    ExitCode.UNREACHABLE: "service unreachable or failing",
    ExitCode.NOT_FOUND: "not found, or fails its verification",
    ExitCode.QUALITY_GATE: "below the quality gate, or lower than the serving model",
    ExitCode.SMOKE_TEST: "smoke test failed",
    ExitCode.RUN_FAILED: "run or job failed, canceled or timed out",
    ExitCode.ACCESS_DENIED: "no sign-in, or a role missing",
    ExitCode.NOT_ENDED: "the job has not ended yet: wait for it with jobs show --wait",
}

EXIT_CODES_HELP = "\b\nExit codes:\n" + "\n".join(f"  {code.value}  {EXIT_CODE_MEANINGS[code]}"
                                                  for code in ExitCode)


def exit_help(code: ExitCode) -> str:
    """How a help text names an exit code: `exit 7 (run or job failed, ...)`."""
    return f"exit {code.value} ({EXIT_CODE_MEANINGS[code]})"


class ProjectError(Exception):
    """A problem the user can act on. `hint` says what to do."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class ConfigError(ProjectError):
    """A setting is missing or invalid."""

    exit_code = ExitCode.USAGE


class DatastoreUnavailable(ProjectError):
    """The datastore (Azurite or Azure Storage) cannot be reached."""

    exit_code = ExitCode.UNREACHABLE


class DatastoreError(ProjectError):
    """The datastore answered with an error (missing container, denied access, ...)."""

    exit_code = ExitCode.UNREACHABLE


class LocalServiceError(ProjectError):
    """A local service (Azurite) could not be installed, started or stopped."""

    exit_code = ExitCode.UNREACHABLE


class NotFound(ProjectError):
    """A run, model, endpoint, deployment, job or cloud resource does not exist."""

    exit_code = ExitCode.NOT_FOUND


class AccessDenied(ProjectError):
    """No usable sign-in, or the identity lacks a role; the hint names the role and scope."""

    exit_code = ExitCode.ACCESS_DENIED


class NotEnded(ProjectError):
    """What was asked needs a job to have ended, and it is still queued or running."""

    exit_code = ExitCode.NOT_ENDED


class OperationFailed(ProjectError):
    """A pipeline run or scoring job ended Failed or Canceled, or did not end in time."""

    exit_code = ExitCode.RUN_FAILED
