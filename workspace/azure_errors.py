"""One translator from Azure SDK failures to the project's typed errors.

Every Azure backend (Data Factory + Batch in `adf`, Azure ML in `deployer`) wraps its calls
in `translated(...)`: the same failure gets the same class, exit code and kind of hint
whichever CLI met it. A backend says only what is its own: the role that grants access,
where a missing resource comes from, and any service-specific `rules` checked first.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from workspace.errors import AccessDenied, ExitCode, NotFound, OperationFailed, ProjectError


class AzureError(ProjectError):
    """Azure refused or failed a call; the hint says what to do."""


class AzureRefused(AzureError):
    """Azure answered 4xx to what we sent (a spec, a setting or an input)."""

    exit_code = ExitCode.USAGE


class AzureUnreachable(AzureError):
    """Azure could not be reached, or answered 5xx after the SDK's retries."""

    exit_code = ExitCode.UNREACHABLE


class AzureAuthError(AzureError, AccessDenied):
    """No usable sign-in, or the identity lacks a role (the hint names it)."""

    exit_code = ExitCode.ACCESS_DENIED


class AzureNotFound(AzureError, NotFound):
    """A resource the command needs does not exist."""

    exit_code = ExitCode.NOT_FOUND


class AzureTimeout(AzureError, OperationFailed):
    """A wait reached its deadline; the work goes on in Azure."""

    exit_code = ExitCode.RUN_FAILED


Rule = Callable[[Exception, str, str, str], "ProjectError | None"]


@dataclass(frozen=True)
class AzureHints:
    """What a backend knows that the translator does not."""

    access: str  # which role on which scope grants access
    not_found: str  # where the resource should come from
    refused: str = "Fix the settings in .env or the input and run again."
    login: str = "Run `az login` (or set up a managed identity) and try again."
    busy: str = "Wait for it to end and run the command again."  # on 409
    rules: tuple[Rule, ...] = field(default=())  # (exc, what, code, first line) -> error


def service_message(exc: Exception) -> tuple[str, str]:
    """(error code, first line of the service message) of an azure-core error."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or getattr(exc, "error_code", None) or ""
    message = getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if first.startswith("(") and ")" in first:  # "(Code) message" from azure-core
        first = first.split(")", 1)[1].strip() or first
    return str(code), first


def translate(exc: Exception, what: str, hints: AzureHints) -> ProjectError | None:
    """One actionable error for an Azure failure; None when `exc` is not from Azure."""
    from azure.core.exceptions import (AzureError as CoreAzureError, ClientAuthenticationError,
                                       HttpResponseError, ResourceNotFoundError,
                                       ServiceRequestError)

    status = getattr(exc, "status_code", None)
    if _is_missing_login(exc) or (isinstance(exc, ClientAuthenticationError) and status is None):
        return AzureAuthError(f"No Azure sign-in while {what}.", hints.login)
    code, first = service_message(exc)
    for rule in hints.rules:
        found = rule(exc, what, code, first)
        if found is not None:
            return found
    if code in ("AuthorizationFailed", "LinkedAuthorizationFailed") or status == 403:
        return AzureAuthError(f"Access denied while {what}: {first}", hints.access)
    if isinstance(exc, ClientAuthenticationError) or status == 401:
        return AzureAuthError(f"Azure rejected the sign-in while {what}: {first}",
                              "Run `az login` again (the token may have expired or be for "
                              "another tenant).")
    if status == 409:
        return AzureError(f"Another operation on the resource is still running while {what}: "
                          f"{first}", hints.busy)
    if isinstance(exc, ResourceNotFoundError) or status == 404:
        return AzureNotFound(f"Not found while {what}: {first}", hints.not_found)
    if isinstance(exc, ServiceRequestError):
        return AzureUnreachable(f"Azure is not reachable while {what}: {first}",
                                "Check your network or proxy settings; transient failures "
                                "were already retried.")
    if isinstance(exc, HttpResponseError):
        label = f" ({code})" if code else ""
        if status is not None and status >= 500:
            return AzureUnreachable(f"Azure failed{label} while {what}: {first}",
                                    "A service-side failure, already retried: try again later.")
        return AzureRefused(f"Azure refused{label} while {what}: {first}", hints.refused)
    if isinstance(exc, CoreAzureError):
        return AzureError(f"Azure call failed while {what}: {first}")
    return None


@contextmanager
def translated(what: str, hints: AzureHints):
    """Raise Azure failures inside the block as the project's typed errors."""
    try:
        yield
    except ProjectError:
        raise
    except Exception as exc:  # translated when it comes from Azure; re-raised otherwise
        error = translate(exc, what, hints)
        if error is None:
            raise
        raise error from exc


def _is_missing_login(exc: Exception) -> bool:
    try:
        from azure.identity import CredentialUnavailableError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, CredentialUnavailableError)


__all__ = ["AzureAuthError", "AzureError", "AzureHints", "AzureNotFound", "AzureRefused",
           "AzureTimeout", "AzureUnreachable", "service_message", "translate",
           "translated"]
