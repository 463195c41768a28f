"""Safe rollout, rollback and job overrides: application rules over any backend.

A model version gets a deployment of its own (`<deployment spec name>-v<version>`). The
new deployment is smoke-tested by a job routed to it (not to the endpoint's default) on
`deployer/smoke/smoke.csv`, whose labels are known; only then does it become the default.
The endpoint keeps the history of its defaults (DefaultHistory, in its tags): `rollback`
goes back to the most recent previous default that passed its smoke test, never to one a
rollback moved away from; the `keep` most recent such ones stay (batch deployments cost
nothing while idle, the cluster scales to zero). Backends only list, create, tag, route
and delete.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from deployer import plan
from deployer.azureml_rules import ARM_NAME_MAX, MINIMUM
from deployer.entities import (NO_OP, Change, DefaultHistory, Deployment, JobOverrides,
                               JobSummary)
from deployer.plan import plan_line
from deployer.spec import Spec
from workspace.errors import ConfigError, ExitCode, NotFound, ProjectError
from workspace.names import DATASTORE_FILE_PATH, EXPERIMENT_NAME, JOB_NAME

SMOKE_DIR = Path(__file__).resolve().parent / "smoke"
SMOKE_INPUT = SMOKE_DIR / "smoke.csv"
SMOKE_LABELS = SMOKE_DIR / "expected.txt"
ACTIVE = ("Queued", "Running")

Progress = Callable[[str], None]


class SmokeTestError(ProjectError):
    """The new deployment did not score the smoke input correctly; the default is unchanged."""

    exit_code = ExitCode.SMOKE_TEST


class RollbackRefused(ProjectError):
    """The deployment asked for cannot serve as the default."""

    exit_code = ExitCode.USAGE


@dataclass
class SmokeResult:
    job: JobSummary
    rows: int
    seconds: float
    accuracy: float = 0.0
    deployment: str = ""


def deployment_name(base: str, version: str) -> str:
    """The deployment of one model version: '<base>-v<version>', cut to the length Azure ML
    allows at the base (never at the version)."""
    suffix = f"-v{version}"
    return base[: ARM_NAME_MAX - len(suffix)].rstrip("-") + suffix


def for_version(spec: Spec, name: str) -> Spec:
    """The deployment spec under the name of one model version."""
    return replace(spec, data={**spec.data, "name": name})


def validate_overrides(overrides: JobOverrides) -> JobOverrides:
    """Check each override as Azure ML does before a job is submitted."""
    for key in ("mini_batch_size", "instance_count", "max_retries", "error_threshold"):
        value, minimum = getattr(overrides, key), MINIMUM[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < minimum):
            raise ConfigError(f"--{key.replace('_', '-')} is {value!r}; it must be a whole number "
                              f"of at least {minimum}.")
    for option, value, rule in (("--job-name", overrides.job_name, JOB_NAME),
                                ("--experiment-name", overrides.experiment_name, EXPERIMENT_NAME),
                                ("--output-path", overrides.output_path, DATASTORE_FILE_PATH)):
        if value is not None:
            rule.check(value, option)
    return overrides


def refuse_nested_folder(input_path: str) -> None:
    """Azure ML scores the top-level files of a folder only: a local folder with
    subfolders would be scored in part, so it is refused before anything is uploaded."""
    path = Path(input_path)
    if "://" in input_path or input_path.startswith("azureml:") or not path.is_dir():
        return
    nested = sorted(p.name for p in path.iterdir() if p.is_dir())
    if nested:
        raise ConfigError(f"Input folder '{input_path}' has subfolders ({', '.join(nested[:3])}"
                          f"{', ...' if len(nested) > 3 else ''}); a batch job scores only the "
                          "top-level files of a folder.",
                          "Move the files to the top level, or invoke once per subfolder.")


class Rollout:
    """Create, smoke-test, switch, prune and roll back the deployments of one endpoint."""

    def __init__(self, backend, endpoint: str, progress: Progress | None = None):
        self.backend = backend
        self.endpoint = endpoint
        self.progress = progress or (lambda message: None)

    # ------------------------------------------------------------------ rollout

    def deploy(self, spec: Spec, model, *, dry_run: bool, smoke: bool = True, keep: int = 1,
               cleanup_failed: bool = False, min_accuracy: float = 0.9,
               check_accuracy: bool = True) -> tuple[list[Change], SmokeResult | None]:
        """The model's deployment, made the default only after its smoke test; then the
        deployments beyond the `keep` most recent previous defaults are deleted. Returns
        the changes (the plan)."""
        # A dry run of a new model does not know the number the registry will give it.
        name = deployment_name(spec.name, model.version if model else "next")
        before = {d.name: d for d in self.backend.list_deployments(self.endpoint)}
        change = self.backend.ensure_deployment(for_version(spec, name), model, dry_run=dry_run,
                                                progress=self.progress, set_default=False)
        changes, result = [change], None
        self.progress(plan_line(change, dry_run))
        serving = name in before and before[name].is_default
        if serving and change.action == NO_OP:
            changes.append(Change("smoke", name, NO_OP, "already the default"))
        elif not smoke:
            changes.append(Change("smoke", name, "skip", "--no-smoke: switching without a test"))
            self.progress(plan_line(changes[-1], dry_run))
            if not dry_run:
                self.backend.tag_deployment(self.endpoint, name, {"smoke": "skipped"})
        elif dry_run:
            changes.append(Change("smoke", name, "run", f"score {SMOKE_INPUT.name} through {name}"))
        else:
            result = self.smoke_test(name, min_accuracy, check_accuracy, cleanup_failed)
            changes.append(Change("smoke", name, "passed", _smoke_detail(result)))
        current = next((d for d in before.values() if d.is_default), None)
        history = self.history().switched(current.name if current else None, name, rollback=False)
        # What goes is planned before the switch, so the history written with it names
        # only deployments that stay.
        listed = self.backend.list_deployments(self.endpoint) if not dry_run else list(before.values())
        doomed = self._to_delete(listed, name, keep, history)
        if dry_run:
            changes.append(plan.default_change(self.endpoint, current.name if current else "", name))
        else:
            gone = {d.name for d, busy in doomed if not busy}
            changes.append(self.backend.set_default_deployment(
                self.endpoint, name, progress=self.progress,
                history=history.only({d.name for d in listed} - gone)))
        self.progress(plan_line(changes[-1], dry_run))
        changes += self._delete(doomed, dry_run)
        return changes, result

    def history(self) -> DefaultHistory:
        return self.backend.default_history(self.endpoint)

    def smoke_test(self, name: str, min_accuracy: float, check_accuracy: bool = True,
                   cleanup_failed: bool = False) -> SmokeResult:
        """Score the smoke input through deployment `name`; record the result on it. On
        failure the deployment stays for inspection (or goes, with cleanup_failed)."""
        try:
            result = run_smoke(self.backend, self.endpoint, name, min_accuracy, check_accuracy,
                               self.progress)
        except SmokeTestError as exc:
            job = getattr(exc, "job", None)
            self.backend.tag_deployment(self.endpoint, name, {
                "smoke": "failed", "smoke_job": job or "", "smoke_detail": exc.message[:250]})
            if cleanup_failed:
                self.progress(plan_line(self.backend.delete_deployment(
                    self.endpoint, name, progress=self.progress), False) + " (--cleanup-failed)")
            raise
        self.backend.tag_deployment(self.endpoint, name, {
            "smoke": "passed", "smoke_job": result.job.name, "smoke_detail": _smoke_detail(result)})
        return result

    def _to_delete(self, deployments: list[Deployment], default: str, keep: int,
                   history: DefaultHistory) -> list[tuple[Deployment, str]]:
        """(deployment, the queued or running job using it, '' if none) for each one to
        delete: all but `default` and the `keep` most recent previous defaults that are
        rollback candidates (`history` is the one after the switch to `default`)."""
        kept = {d.name for d in candidates(deployments, history, default)[:keep]}
        doomed = [d for d in deployments if d.name != default and d.name not in kept]
        doomed.sort(key=lambda d: (d.model_version, d.created), reverse=True)
        busy = self._busy() if doomed else {}
        return [(d, busy.get(d.name, "")) for d in doomed]

    def _delete(self, doomed: list[tuple[Deployment, str]], dry_run: bool) -> list[Change]:
        """Delete the deployments `_to_delete` chose, never one a job is using. A dry run
        plans it from the listing (the backend would refuse the current default, which
        the run has switched away from by then)."""
        changes = []
        for dep, job in doomed:
            if job:
                changes.append(Change("deployment", dep.name, NO_OP, f"kept: job {job} is using it"))
            elif dry_run:
                changes.append(plan.delete_change("deployment", dep.name, True, f"model {dep.model}"))
            else:
                changes.append(self.backend.delete_deployment(self.endpoint, dep.name,
                                                              progress=self.progress))
            self.progress(plan_line(changes[-1], dry_run))
        return changes

    def _busy(self) -> dict[str, str]:
        """deployment → a queued or running job routed to it, of all the endpoint's jobs: an
        active job can be an old one, and the listing costs a request per page, not per job."""
        jobs = self.backend.list_jobs(self.endpoint, limit=None)
        return {j.deployment: j.name for j in jobs if j.status in ACTIVE and j.deployment}

    # ------------------------------------------------------------------ rollback

    def rollback(self, *, to: str | None = None, to_version: int | None = None,
                 dry_run: bool = False) -> list[Change]:
        """Make the rollback candidate (or the deployment named) the default. The default
        it moves away from is recorded as rolled back from: no candidate from then on."""
        deployments = self.backend.list_deployments(self.endpoint)
        history = self.history()
        target = self.choose(deployments, history, to=to, to_version=to_version)
        if target.smoke == "failed":
            raise RollbackRefused(
                f"Deployment '{target.name}' (model {target.model}) failed its last smoke test"
                + (f" (job {target.tags['smoke_job']})" if target.tags.get("smoke_job") else "")
                + "; it is not made the default.",
                "Pick another with --to, or deploy a model that passes (register-and-deploy).")
        current = next((d for d in deployments if d.is_default), None)
        after = history.switched(current.name if current else None, target.name, rollback=True)
        return [self.backend.set_default_deployment(
            self.endpoint, target.name, dry_run=dry_run, progress=self.progress,
            history=after.only(d.name for d in deployments))]

    def choose(self, deployments: list[Deployment], history: DefaultHistory, *,
               to: str | None = None, to_version: int | None = None) -> Deployment:
        """The deployment asked for, else the rollback candidate."""
        if not deployments:
            raise NotFound(f"Endpoint '{self.endpoint}' has no deployments.",
                           "Run `python -m deployer register-and-deploy` first.")
        names = ", ".join(d.name for d in deployments)
        if to is not None:
            found = [d for d in deployments if d.name == to]
            if not found:
                raise NotFound(f"Deployment '{to}' does not exist on endpoint '{self.endpoint}' "
                               f"(it has {names}).", "See `python -m deployer status`.")
            return found[0]
        if to_version is not None:
            found = sorted((d for d in deployments if d.model_version == to_version),
                           key=lambda d: d.created, reverse=True)
            if not found:
                raise NotFound(f"No deployment of endpoint '{self.endpoint}' serves model version "
                               f"{to_version} (it has {names}).", "See `python -m deployer status`.")
            return found[0]
        candidate = rollback_candidate(deployments, history)
        if candidate is None:
            why = "; ".join(f"{d.name}: {not_a_candidate(d, history)}" for d in deployments
                            if not d.is_default and not_a_candidate(d, history))
            raise NotFound(f"Endpoint '{self.endpoint}' has no earlier deployment to roll back to "
                           f"(it has {names}" + (f"; no candidate: {why}" if why else "") + ").",
                           "Deploy with --keep 1 or more to keep one, or name one with --to "
                           "(a deployment named there is made the default without a smoke test).")
        return candidate


def not_a_candidate(dep: Deployment, history: DefaultHistory) -> str:
    """Why `dep`, were it not the default, may not become the default by `rollback` without
    --to ('' when it may). Only a previous default that passed its smoke test may, and not
    one a rollback moved the default away from: one never the default has not served, one
    never tested (a run killed during its smoke test, --no-smoke) never scored a known input."""
    if dep.smoke == "failed":
        return "smoke test failed"
    if dep.name in history.rolled_back:
        return "rolled back from"
    untested = {"passed": "", "skipped": "deployed with --no-smoke"}.get(dep.smoke, "untested")
    if dep.name not in history.previous:
        return ", ".join(part for part in (untested, "never the default") if part)
    return f"served without a smoke test ({untested})" if untested else ""


def rollback_candidate(deployments: list[Deployment],
                       history: DefaultHistory) -> Deployment | None:
    """What `rollback` without --to picks: the most recent previous default that passed its
    smoke test and was not rolled back from (`not_a_candidate`)."""
    return next(iter(candidates(deployments, history)), None)


def candidates(deployments: list[Deployment], history: DefaultHistory,
               default: str | None = None) -> list[Deployment]:
    """The rollback candidates, most recent previous default first; `default` (else the
    one listed as the default) is none."""
    by_name = {d.name: d for d in deployments}
    default = default if default is not None else next(
        (d.name for d in deployments if d.is_default), "")
    return [by_name[n] for n in history.previous
            if n in by_name and n != default and not not_a_candidate(by_name[n], history)]


# ---------------------------------------------------------------------- the smoke test


def run_smoke(backend, endpoint: str, name: str, min_accuracy: float, check_accuracy: bool,
              progress: Progress) -> SmokeResult:
    """Invoke deployment `name` on the smoke input; it passes when the job completes,
    every row is scored in Azure ML's format and the accuracy reaches the gate."""
    expected = SMOKE_LABELS.read_text().split()
    started = time.monotonic()
    progress(f"smoke test: scoring {len(expected)} rows of {SMOKE_INPUT.name} through "
             f"deployment {name}")
    with tempfile.TemporaryDirectory(prefix="deployer-smoke-") as tmp:
        job = backend.invoke(endpoint, str(SMOKE_INPUT), deployment=name,
                             output_dir=Path(tmp) / "out", wait=True, progress=progress)
        if job.status != "Completed":
            _fail(job, name, f"the job ended {job.status}: {job.error or 'no error message'}")
        lines = Path(job.predictions_file).read_text().splitlines() if job.predictions_file else []
    rows = [line.split(",") for line in lines]
    if len(rows) != len(expected) or [r[0] for r in rows] != [str(i) for i in range(len(expected))] \
            or any(r[-1] != SMOKE_INPUT.name for r in rows):
        failed = "; ".join(f"{f['file']}: {f['message']}" for f in (job.failed_files or [])[:2])
        _fail(job, name, f"{len(rows)} of {len(expected)} rows were scored"
              + (f" ({failed})" if failed else " in the row,prediction,file_name format"))
    accuracy = sum(r[1] == label for r, label in zip(rows, expected)) / len(expected)
    if check_accuracy and accuracy < min_accuracy:
        _fail(job, name, f"accuracy {accuracy:.3f} on the {len(expected)} known rows is below "
              f"the quality gate of {min_accuracy:g}")
    return SmokeResult(job=job, rows=len(rows), seconds=time.monotonic() - started,
                       accuracy=accuracy, deployment=name)


def _fail(job: JobSummary, name: str, reason: str):
    error = SmokeTestError(f"Smoke test of deployment {name} failed (job {job.name}): {reason}. "
                           "The endpoint's default deployment was not changed.",
                           f"See the job: python -m deployer jobs show {job.name}; remove the "
                           "deployment with --cleanup-failed, or pass --no-smoke to switch anyway.")
    error.job = job.name
    raise error


def _smoke_detail(result: SmokeResult) -> str:
    return (f"job {result.job.name}: {result.rows} rows, accuracy {result.accuracy:.3f}, "
            f"{result.seconds:.1f} s")
