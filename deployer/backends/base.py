"""The one interface both backends implement.

Each `ensure_*` compares the desired spec with what exists and returns the `Change`; with
`dry_run=True` it only plans. Long-running work is named and waited on explicitly by the
backend (Azure: `begin_*().result()`); `progress` callbacks (one line of text each) let the
CLI show it. While `invoke` waits on a job, the job's state goes to `job_progress` as a
`JobUpdate` (counts for a live display), or, without one, its text to `progress`.
Every wait ends at `timeout_seconds` (`--timeout`); a job still running then raises
`JobTimeout` and goes on where it runs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from deployer.entities import (Change, DefaultHistory, Deployment, JobOverrides, JobSummary,
                               JobUpdate, ModelSource, RegisteredModel, TargetStatus)
from workspace.errors import OperationFailed

Progress = Callable[[str], None]
JobProgress = Callable[[JobUpdate], None]
DEFAULT_TIMEOUT_SECONDS = 60 * 60  # the CLI's --timeout default, 60 minutes


class JobTimeout(OperationFailed):
    """A job did not end within the wait's deadline; it goes on where it runs."""


def job_timeout(name: str, state: str, waiting_on: str, seconds: float,
                runs_on: str) -> JobTimeout:
    """The error of a wait that reached its deadline, the same on every target."""
    return JobTimeout(f"Job {name} is still {state} after {minutes(seconds)}: {waiting_on}.",
                      f"It goes on {runs_on}: follow it with `python -m deployer jobs show "
                      f"{name} --wait`, cancel it with `python -m deployer jobs cancel {name}`, or "
                      "pass a longer --timeout.")


def minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def newest(limit: int | None) -> slice:
    """The slice of a newest-first list that `list_jobs(limit=...)` returns."""
    return slice(None if limit is None else max(limit, 0))


def tell_job(update: JobUpdate, progress: Progress | None, job_progress: JobProgress | None) -> None:
    """A job's state to whoever follows it: the update itself, else its line of text."""
    if job_progress is not None:
        job_progress(update)
    elif progress is not None:
        progress(update.text)


class Backend(ABC):
    name: str = "abstract"
    # How long one wait lasts (`--timeout`): for a job `invoke` waits on (JobTimeout at
    # the deadline), and on Azure for each long-running operation.
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @abstractmethod
    def register_model(self, source: ModelSource, *, dry_run: bool = False,
                       spec=None) -> tuple[RegisteredModel | None, Change]:
        """Register the model unless a version with the same content exists (then no-op).
        `spec` is model.yml (description, type) when the caller has it."""

    @abstractmethod
    def ensure_compute(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        """Create or update the CPU cluster described by compute.yml."""

    @abstractmethod
    def ensure_endpoint(self, spec, *, dry_run: bool = False, progress: Progress | None = None) -> Change:
        """Create or update the batch endpoint described by endpoint.yml."""

    @abstractmethod
    def ensure_deployment(self, spec, model: RegisteredModel | None, *, dry_run: bool = False,
                          progress: Progress | None = None, set_default: bool = True) -> Change:
        """Create or update the model deployment; with set_default, make it the endpoint's
        default (a rollout sets the default only after the smoke test)."""

    @abstractmethod
    def list_deployments(self, endpoint: str) -> list[Deployment]:
        """Every deployment of the endpoint ([] if the endpoint does not exist)."""

    @abstractmethod
    def default_history(self, endpoint: str) -> DefaultHistory:
        """The history of the endpoint's defaults, from its tags (empty if it has none or
        the endpoint does not exist)."""

    @abstractmethod
    def set_default_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                               progress: Progress | None = None,
                               history: DefaultHistory | None = None) -> Change:
        """Route the endpoint's jobs to deployment `name` (no-op if it already is); with
        `history`, write it to the endpoint's tags in the same update (also when the
        default stays)."""

    @abstractmethod
    def delete_deployment(self, endpoint: str, name: str, *, dry_run: bool = False,
                          progress: Progress | None = None) -> Change:
        """Delete one deployment that is not the endpoint's default."""

    @abstractmethod
    def tag_deployment(self, endpoint: str, name: str, tags: dict, *,
                       progress: Progress | None = None) -> None:
        """Merge tags into the deployment's (the smoke test's result is kept there)."""

    @abstractmethod
    def invoke(self, endpoint: str, input_path: str, *, deployment: str | None = None,
               output_dir: Path | None = None, wait: bool = True,
               progress: Progress | None = None,
               overrides: JobOverrides | None = None,
               job_progress: JobProgress | None = None) -> JobSummary:
        """Start a batch scoring job; when waiting, tell `job_progress` (else `progress`)
        each change of its state and, if it completes with output, download it as
        `download_output` does into job_output_dir(job, output_dir). `overrides` replace
        the deployment's settings for this job only (validated by the caller)."""

    @abstractmethod
    def wait(self, name: str, *, progress: Progress | None = None,
             job_progress: JobProgress | None = None) -> JobSummary:
        """Follow a job (started earlier, e.g. with --no-wait) until it ends, telling
        `job_progress` (else `progress`) each change of its state, as `invoke` does; returns
        its state then (as `get_job`). JobTimeout at `timeout_seconds`. Downloads nothing."""

    @abstractmethod
    def download_output(self, job: JobSummary, output_dir: Path,
                        progress: Progress | None = None) -> Path:
        """Download a finished job's predictions file to predictions_target(output_dir,
        its file name), refusing to overwrite one; sets `job.predictions_file` (and
        `job.output_uri` when the target learns it then) and returns the path."""

    @abstractmethod
    def get_job(self, name: str) -> JobSummary:
        """The state of one scoring job."""

    @abstractmethod
    def cancel_job(self, name: str) -> JobSummary:
        """Cancel a scoring job; returns its state afterwards (as `get_job`). A job that
        has already ended is left as it is. A canceled job has no output."""

    @abstractmethod
    def list_jobs(self, endpoint: str, limit: int | None = 10) -> list[JobSummary]:
        """Recent scoring jobs of the endpoint, newest first (all of them if limit is None)."""

    @abstractmethod
    def describe(self, endpoint: str, *, compute: str | None = None,
                 model: str | None = None) -> TargetStatus:
        """The endpoint, its deployments, the versions of `model` and of the models they
        serve, `compute` and the clusters they run on (see TargetStatus)."""

    @abstractmethod
    def teardown(self, endpoint: str, compute: str, *, dry_run: bool = False) -> list[Change]:
        """Delete deployments, the endpoint and the cluster (models stay registered)."""
