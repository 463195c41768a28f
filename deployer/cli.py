"""`python -m deployer`: thin click commands over `deployer.app.Deployer`.

Start-up stays fast: rich, mlflow, pyarrow and the Azure SDK are imported inside the
commands that need them, never at module level.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from deployer.azureml_rules import HISTORY_TAGS_MAX
from workspace.cli_support import ProjectGroup, checked, name_argument, target_option
from workspace.names import DEPLOYMENT_NAME, JOB_NAME, SWEEP_ID
from workspace.output import output_option, print_json
from workspace.quality import MIN_TEST_ROWS

MIN_ACCURACY_ENV = "DEPLOYER_MIN_ACCURACY"
MIN_TEST_ROWS_ENV = "DEPLOYER_MIN_TEST_ROWS"

spec_dir_option = click.option(
    "--spec-dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
    help="Folder with model.yml, compute.yml, endpoint.yml and deployment.yml "
    "(default: deployer/specs/).")


# The job's name: an argument, or -n/--name as `az ml job show|download|cancel` take it
# (https://learn.microsoft.com/cli/azure/ml/job: `--name -n`).
job_name_argument = name_argument(JOB_NAME)

timeout_option = click.option(
    "--timeout", "timeout_minutes", type=click.FloatRange(min=0, min_open=True), default=60,
    show_default=True, metavar="MINUTES",
    help="How long to wait for a scoring job or an Azure operation; then stop waiting (the "
    "work goes on, locally in the job's runner) and say what it was waiting on: "
    "{exit:RUN_FAILED}.")


report_option = click.option(
    "--report", is_flag=True,
    help="Also write report.html beside predictions.csv: the model, class distribution chart, "
    "accuracy when the input has the label column, rows/s, failed files (a failed job's "
    "report lists its failures).")

label_column_option = click.option(
    "--label-column", default=None, metavar="NAME",
    help="With --report: the input's column of true labels the report scores the predictions "
    "against (default: species, the trainer's).")


def _console(stderr: bool = False):
    from workspace.output import console

    return console(stderr)


def _make(target: str | None, spec_dir: Path | None, quiet: bool = False,
          timeout_minutes: float | None = None):
    from deployer.app import Deployer
    from workspace.settings import Settings

    settings = Settings.load().with_target(target)
    err = _console(stderr=True)

    def progress(message: str) -> None:
        if not quiet:
            err.print(f"[dim]·[/dim] {message}", markup=True, highlight=False)

    deployer = Deployer(settings, spec_dir=spec_dir, progress=progress,
                        timeout_seconds=None if timeout_minutes is None else timeout_minutes * 60)
    return deployer, settings


@click.group(cls=ProjectGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Register the trained model and serve it from a batch endpoint.

    \b
    The desired state is the YAML in deployer/specs/ (az ml schema): model.yml,
    compute.yml, endpoint.yml, deployment.yml. Local by default (MLflow registry in
    .local/mlflow.db, a local batch engine over Azurite); Azure ML when .env says
    TARGET=azure or with --target azure.

    \b
    Examples:
      python -m deployer register-and-deploy --dry-run   # the plan, nothing changes
      python -m deployer register-and-deploy             # newest model → new deployment, smoke, default
      python -m deployer register-and-deploy --run-id 4f2c... --force
      python -m deployer invoke --input data/iris_csv.csv
      python -m deployer invoke --input azureml://datastores/workspaceblobstore/paths/scoring/
      python -m deployer status
      python -m deployer rollback --dry-run
      python -m deployer jobs show batchjob-... --wait
      python -m deployer jobs download batchjob-... --report
      python -m deployer teardown --yes

    {exit_codes}
    """


# ---------------------------------------------------------------------- register-and-deploy


@cli.command("register-and-deploy")
@click.option("--model", "model_path", metavar="DATASTORE_PATH", default=None,
              help="Model folder of a published run, e.g. models/<exp>/<run>/artifacts/model or "
              "azureml://datastores/<ds>/paths/... (default: the newest complete run).")
@click.option("--run-id", default=None, help="Deploy the published run with this MLflow run id.")
@click.option("--sweep", "sweep_id", metavar="SWEEP_ID|latest", default=None,
              callback=checked(SWEEP_ID, also=("latest",)),
              help="Deploy the best complete run of this sweep (test accuracy, then macro-F1, "
              f"then the earlier line; runs with fewer than {MIN_TEST_ROWS} test rows last); "
              "'latest' is the newest sweep.")
@click.option("--dry-run", is_flag=True, help="Print the plan (create/update/no-op per resource); "
              "change nothing.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              envvar=MIN_ACCURACY_ENV, show_envvar=True,
              help="Quality gate: refuse a model whose test_accuracy is lower.")
@click.option("--min-test-rows", type=click.IntRange(1), default=MIN_TEST_ROWS,
              show_default=True, envvar=MIN_TEST_ROWS_ENV, show_envvar=True,
              help="Quality gate: refuse a model whose test_accuracy was measured on fewer test "
              "rows (on 3 rows, 1.000 says little; see docs/architecture.md).")
@click.option("--force", is_flag=True, help="Deploy even if the model fails the quality gate "
              "or measured lower than the model serving the endpoint ({exit:QUALITY_GATE} "
              "otherwise).")
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="Smoke-test the new deployment (deployer/smoke/smoke.csv, known labels) "
              "before it becomes the default; --no-smoke switches without a test.")
@click.option("--keep", type=click.IntRange(0, HISTORY_TAGS_MAX), default=1, show_default=True,
              help="How many of the most recent previous defaults (that passed their smoke "
              "test and were not rolled back from) stay as rollback candidates; the other "
              "deployments are deleted (never the default, never one a running job uses).")
@click.option("--cleanup-failed", is_flag=True,
              help="Delete the new deployment if its smoke test fails (default: keep it for "
              "inspection).")
@timeout_option
@target_option
@spec_dir_option
def register_and_deploy(model_path, run_id, sweep_id, dry_run, min_accuracy, min_test_rows, force,
                        smoke, keep, cleanup_failed, timeout_minutes, target, spec_dir):
    """Register the newest complete model and roll it out as the endpoint's default.

    \b
    1. finds the newest run published by the trainer (manifest.json) unless --model or
       --run-id says which, and verifies every file hash of its manifest;
    2. quality gate: test_accuracy must reach --min-accuracy, measured on at least
       --min-test-rows test rows, and must not be lower than the serving model's (the
       refusal says whether the drop may be noise; or --force; docs/architecture.md);
    3. registers it with lineage tags; the same content again makes no new version;
    4. ensures the CPU cluster and the batch endpoint, and a deployment of this model
       version (<deployment name>-v<version>);
    5. smoke-tests that deployment (not the default): the job must complete, score every
       row and reach the quality gate; otherwise the default stays: {exit:SMOKE_TEST};
    6. makes it the default, recording the one it replaces in the endpoint's history of
       defaults, and deletes the deployments beyond the --keep most recent previous
       defaults.
    A second run with the same model changes nothing.

    \b
    Examples:
      python -m deployer register-and-deploy --dry-run
      python -m deployer register-and-deploy --keep 2
      python -m deployer register-and-deploy --cleanup-failed
      python -m deployer register-and-deploy --model models/1/<run>/artifacts/model
      python -m deployer register-and-deploy --sweep latest
      python -m deployer register-and-deploy --min-test-rows 50
      python -m deployer register-and-deploy --run-id 4f2c... --force   # even if lower than the serving model
      DEPLOYER_MIN_ACCURACY=0.95 python -m deployer register-and-deploy
    """
    deployer, settings = _make(target, spec_dir, timeout_minutes=timeout_minutes)
    if sweep_id:
        run_id = deployer.sweep_run_id(sweep_id, given=model_path or run_id)
    result = deployer.register_and_deploy(model_path=model_path, run_id=run_id, dry_run=dry_run,
                                          force=force, min_accuracy=min_accuracy,
                                          min_test_rows=min_test_rows, smoke=smoke,
                                          keep=keep, cleanup_failed=cleanup_failed)
    _print_deploy(result, settings)


def _print_changes(changes, dry_run: bool, title: str) -> None:
    from rich.table import Table

    colors = {"create": "green", "update": "yellow", "delete": "red", "no-op": "dim",
              "passed": "green", "run": "green", "skip": "yellow"}
    table = Table(title="Plan (dry run: nothing was changed)" if dry_run else title,
                  title_justify="left")
    for column in ("resource", "name", "action"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for change in changes:
        action = f"would {change.action}" if dry_run and change.action != "no-op" else change.action
        table.add_row(change.kind, change.name,
                      f"[{colors.get(change.action, 'white')}]{action}[/]", change.detail)
    _console().print(table)


def _print_deploy(result, settings) -> None:
    console = _console()
    _print_changes(result.changes, result.dry_run,
                   f"register-and-deploy on the {settings.target} target")
    accuracy = result.metrics.get("test_accuracy")
    version = result.model.version if result.model else "(new version)"
    rows = result.metrics.get("test_rows")
    console.print(f"model     {result.changes[0].name} version {version}  "
                  f"(run {result.run_id}, test_accuracy "
                  f"{accuracy if accuracy is None else f'{accuracy:.3f}'}"
                  + (f" on {int(rows)} test rows" if rows is not None else "") + ")")
    if result.serving is not None:
        console.print(f"serving   {result.serving.text}")
    console.print(f"endpoint  {result.endpoint}  default deployment {result.deployment}")
    if result.smoke:
        console.print(f"smoke     job {result.smoke.job.name}: {result.smoke.rows} rows scored "
                      f"through {result.smoke.deployment}, accuracy {result.smoke.accuracy:.3f} "
                      f"({result.smoke.seconds:.1f} s)")
    if not result.dry_run:
        console.print("changed   " + ("yes" if result.changed else "nothing (already up to date)"))
        console.print("next      python -m deployer invoke --input data/iris_csv.csv")


# ---------------------------------------------------------------------- invoke


@cli.command()
@click.option("--input", "input_path", required=True, metavar="PATH|azureml://...",
              help="A .csv/.parquet file, a folder of them (top-level files only), or a "
              "datastore path azureml://datastores/<ds>/paths/<file or folder>.")
# --deployment-name/-d: `az ml batch-endpoint invoke`'s names for it ("Use the argument
# --deployment-name or -d to indicate the name of the deployment",
# https://learn.microsoft.com/azure/machine-learning/how-to-access-data-batch-endpoints-jobs).
@click.option("--deployment", "--deployment-name", "-d", "deployment", default=None,
              help="Deployment to use (default: the endpoint's default).")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to download predictions.csv (default: outputs/<job name>/).")
@click.option("--no-wait", is_flag=True, help="Start the job and return; follow it with "
              "`python -m deployer jobs show NAME --wait`.")
@report_option
@label_column_option
@click.option("--mini-batch-size", type=int, default=None,
              help="Files per mini-batch for this job (the deployment's otherwise).")
@click.option("--instance-count", type=int, default=None,
              help="Nodes for this job (locally: groups of worker processes).")
@click.option("--max-retries", type=int, default=None,
              help="Retries of a failed or timed-out mini-batch for this job.")
@click.option("--error-threshold", type=int, default=None,
              help="Failed files the job tolerates (-1: all) for this job.")
@click.option("--output-path", default=None, metavar="azureml://datastores/<ds>/paths/<file>",
              help="Where the job writes its predictions file in the datastore (a file path).")
@click.option("--job-name", default=None, help="The job's name (unique in the workspace).")
@click.option("--experiment-name", default=None,
              help="Experiment the job is filed under (default: the endpoint's name).")
@timeout_option
@target_option
@spec_dir_option
def invoke(input_path, deployment, output_dir, no_wait, report, label_column, mini_batch_size,
           instance_count, max_retries, error_threshold, output_path, job_name, experiment_name,
           timeout_minutes, target, spec_dir):
    """Start a batch scoring job, follow it, and download predictions.csv.

    \b
    predictions.csv is Azure ML's format: no header, one line per input row,
    `row,prediction,file_name`, rows of a file in input order. If the job fails:
    {exit:RUN_FAILED}; the failing files and why are in its logs/user/error.txt (--report
    writes them to report.html in the output folder too).

    \b
    The overrides (--mini-batch-size ... --experiment-name) are those of
    `az ml batch-endpoint invoke`, for this job only. On Azure, --input also takes a
    registered data asset (azureml:<name>:<version> or azureml:<name>@latest) and
    wasbs:// or abfss:// URLs. A local folder must have no subfolders.

    \b
    Examples:
      python -m deployer invoke --input data/iris_csv.csv
      python -m deployer invoke --input scoring/ --output-dir results/ --report
      python -m deployer invoke --input labelled.csv --report --label-column class
      python -m deployer invoke --input azureml://datastores/workspaceblobstore/paths/scoring/ --no-wait
      python -m deployer invoke --input scoring/ --mini-batch-size 1 --error-threshold 5
      python -m deployer invoke --input azureml:iris-scoring@latest --target azure \\
          --output-path azureml://datastores/workspaceblobstore/paths/results/iris.csv
    """
    from deployer.entities import JobOverrides

    _report_options(report, label_column)
    overrides = JobOverrides(mini_batch_size=mini_batch_size, instance_count=instance_count,
                             max_retries=max_retries, error_threshold=error_threshold,
                             output_path=output_path, job_name=job_name,
                             experiment_name=experiment_name)
    deployer, _ = _make(target, spec_dir, timeout_minutes=timeout_minutes)
    result = _following(deployer, lambda: deployer.invoke(
        input_path, deployment=deployment, output_dir=output_dir, wait=not no_wait,
        overrides=overrides))
    _print_job(result.job, result.stats, None if no_wait else result.seconds)
    if no_wait:
        if report:
            click.echo("report    not written: the job has not ended. Write it with `python -m "
                       f"deployer jobs download {result.job.name} --report` once it has.")
        click.echo(f"Follow it with: python -m deployer jobs show {result.job.name} --wait")
        return
    _print_throughput(result.job, result.seconds)
    _finish(deployer, result, report, output_dir, label_column)


def _following(deployer, follow):
    """Run `follow` (a call that waits on a job) with the live display of the job's
    progress; Ctrl-C stops following, not the job (exit 130)."""
    display = _JobProgress(_console(stderr=True), deployer.progress)
    deployer.progress, deployer.job_progress = display.say, display.update
    try:
        return follow()
    except KeyboardInterrupt:
        display.stop()
        click.echo("\nStopped following; the job keeps running. See it with "
                   "`python -m deployer status` and `python -m deployer jobs show NAME --wait`.",
                   err=True)
        sys.exit(130)
    finally:
        display.stop()


def _report_options(report: bool, label_column: str | None) -> None:
    """--label-column says how to write the report: without --report it would do nothing."""
    if label_column is not None and not report:
        raise click.UsageError("--label-column is for the report: pass --report too.")


def _finish(deployer, result, report: bool, output_dir, label_column) -> None:
    """After a job ended: its report when asked (a failed job's too, with its failures),
    then exit 7 unless it completed (JobFailed)."""
    from deployer.app import job_failed

    if report:
        path = deployer.write_report(result, output_dir, label_column)
        click.echo(f"report    {path}")
    if result.job.status != "Completed":
        error = job_failed(result.job)
        if not report:
            error.hint += f"; `python -m deployer jobs download {result.job.name} --report` " \
                          "writes a report of its failures"
        raise error


class _JobProgress:
    """invoke's live display while a job runs: a bar of files done, rows scored and rows/s,
    from the job's JobUpdates. A job without file counts (Azure ML reports none while a job
    runs) and every other line go to `fallback`, one line each."""

    def __init__(self, console, fallback):
        self.console = console
        self.fallback = fallback
        self.bar = None
        self.task = None
        self.running_since = None

    def say(self, message: str) -> None:
        """A line of another step: above the bar while it shows."""
        if self.bar is None:
            self.fallback(message)
        else:
            from rich.text import Text

            self.bar.console.print(Text.assemble(("· ", "dim"), message), highlight=False)

    def update(self, update) -> None:
        """One JobUpdate (deployer.entities) of the job being waited on."""
        import time

        if self.bar is not None and update.status != "Running":
            rows = update.rows_scored or 0  # the job has ended: its final counts
            elapsed = max(1e-6, time.monotonic() - self.running_since)
            self.bar.update(self.task, completed=update.files_done or 0, rows=rows,
                            rate=rows / elapsed)
            self.stop()
        if update.status != "Running" or not update.files_total:
            if self.bar is None:
                self.fallback(update.text)
            return
        if self.bar is None:
            self.fallback(update.text)  # the job's state line, then the live bar
            self._start(update.files_total)
        rows = (update.rows_scored or 0) + (update.rows_in_progress or 0)
        elapsed = max(1e-6, time.monotonic() - self.running_since)
        self.bar.update(self.task, total=update.files_total, completed=update.files_done or 0,
                        rows=rows, rate=rows / elapsed)

    def _start(self, files_total: int) -> None:
        import time

        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("files · {task.fields[rows]:,} rows · "
                                       "{task.fields[rate]:,.0f} rows/s"),
                            TimeElapsedColumn(), console=self.console)
        self.task = self.bar.add_task("scoring", total=files_total, rows=0, rate=0.0)
        self.running_since = time.monotonic()
        self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _print_throughput(job, seconds: float | None) -> None:
    rows = job.rows_scored or 0
    took = job.duration_seconds
    if not rows or not took:
        return
    line = f"throughput  {rows:,} rows in {took:.1f} s: {rows / took:,.0f} rows/s (job)"
    if seconds:
        line += f", {rows / seconds:,.0f} rows/s end to end ({seconds:.1f} s)"
    _console().print(line, markup=False, highlight=False)


def _print_job(job, stats=None, seconds: float | None = None) -> None:
    from rich.table import Table

    console = _console()
    color = {"Completed": "green", "Failed": "red", "Canceled": "red"}.get(job.status, "yellow")
    table = Table(title=f"job {job.name}", title_justify="left", show_header=False)
    table.add_column("", style="bold", no_wrap=True)
    table.add_column("", overflow="fold")
    table.add_row("status", f"[{color}]{job.status}[/]")
    table.add_row("endpoint", f"{job.endpoint} / {job.deployment}".strip(" /"))
    table.add_row("input", job.input)
    rows = stats.rows if stats is not None else job.rows_scored
    if rows is not None:
        table.add_row("rows scored", str(rows))
    if job.files_total is not None:
        table.add_row("files", f"{job.files_total} total, {job.files_failed or 0} failed")
    if job.mini_batches_total is not None:
        table.add_row("mini-batches", f"{job.mini_batches_done or 0}/{job.mini_batches_total} succeeded")
    took = job.duration_seconds if job.duration_seconds is not None else seconds
    if took is not None:
        table.add_row("time", f"{took:.1f} s" + (f" (job), {seconds:.1f} s (total)"
                                                 if seconds is not None and job.duration_seconds
                                                 is not None else ""))
    if job.experiment:
        table.add_row("experiment", job.experiment)
    if job.created:
        table.add_row("created", job.created)
    if job.predictions_at:
        table.add_row("predictions", job.predictions_at)
    if job.logs_path:
        table.add_row("logs", job.logs_path)
    if job.error:
        table.add_row("error", f"[red]{job.error}[/]")
    for failed in (job.failed_files or [])[:10]:
        table.add_row("failed file", f"{failed['file']}: {failed['message']}")
    if len(job.failed_files or []) > 10:
        table.add_row("", f"... {len(job.failed_files) - 10} more in logs/user/error.txt")
    console.print(table)
    if stats is not None:
        from deployer.report import format_class_summary

        console.print("\n".join(format_class_summary(stats)), markup=False, highlight=False)


# ---------------------------------------------------------------------- status and jobs


@cli.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(0, 100), default=5, show_default=True,
              help="How many recent jobs to list.")
@target_option
@spec_dir_option
@output_option
def status(n_jobs, target, spec_dir, output_format):
    """Show the registered model, the endpoint, its deployments, the cluster and recent jobs.

    \b
    Examples:
      python -m deployer status --jobs 10
      python -m deployer status -o json | jq -r '.target.endpoint.default_deployment'
    """
    deployer, settings = _make(target, spec_dir, quiet=True)
    report = deployer.status(jobs=n_jobs)
    if output_format == "json":
        return print_json("deployer.status", report)
    console = _console()
    console.print(_where(report.target))
    for table in (_models_table(report.target), _endpoint_line(report.target),
                  *_deployment_tables(report.target), _computes_table(report.target),
                  _jobs_table(report.jobs)):
        console.print(table)


def _where(target) -> str:
    """The target and where it keeps things (the registry locally, the workspace on Azure)."""
    line = f"target    {target.backend}"
    if target.registry:
        line += (f"  (registry {target.registry}; browse it with `mlflow ui "
                 f"--backend-store-uri {target.registry}`)")
    if target.workspace:
        line += f"  (workspace {target.workspace}, resource group {target.resource_group})"
    return line


def _models_table(target):
    from rich.table import Table

    models = Table(title="registered models", title_justify="left")
    for column in ("name", "version", "run_id", "test_accuracy", "data_sha256"):
        models.add_column(column)
    for model in target.models:
        tags = model.tags
        models.add_row(model.name, model.version, tags.get("run_id", ""),
                       str(tags.get("metric.test_accuracy", ""))[:6],
                       str(tags.get("data_sha256", ""))[:12])
    return models


def _endpoint_line(target) -> str:
    endpoint = target.endpoint
    if endpoint is None:
        return (f"endpoint  {target.endpoint_name} does not exist; create it with "
                "`python -m deployer register-and-deploy`.")
    return (f"endpoint  {endpoint.name}  default deployment "
            f"{endpoint.default_deployment or '(none)'}  ({endpoint.provisioning_state})")


def _deployment_tables(target):
    from rich.table import Table

    deployments = Table(title="deployments (newest model first)", title_justify="left")
    for column in ("name", "model", "role", "smoke", "smoke job", "created", "state"):
        deployments.add_column(column, no_wrap=True)
    settings = Table(title="deployment settings", title_justify="left")
    for column in ("name", "compute", "instances", "mini_batch_size", "concurrency",
                   "retries/timeout", "error_threshold", "output"):
        settings.add_column(column)
    for dep in target.deployments:
        deployments.add_row(dep.name, dep.model, dep.role, dep.smoke or "-",
                            dep.tags.get("smoke_job", ""), dep.created[:19],
                            dep.provisioning_state)
        settings.add_row(dep.name, dep.compute, _cell(dep.instance_count),
                         _cell(dep.mini_batch_size), _cell(dep.max_concurrency_per_instance),
                         f"{_cell(dep.max_retries)}/{_cell(dep.retry_timeout)}s",
                         _cell(dep.error_threshold),
                         dep.output_file_name or dep.output_action)
    return deployments, settings


def _computes_table(target):
    from rich.table import Table

    computes = Table(title="clusters", title_justify="left")
    for column in ("name", "size", "nodes", "idle before scale-down", "tier", "network", "state"):
        computes.add_column(column)
    for compute in target.computes:
        computes.add_row(compute.name, compute.size,
                         f"{_cell(compute.min_instances)}-{_cell(compute.max_instances)}",
                         f"{_cell(compute.idle_time_before_scale_down)}s", compute.tier,
                         compute.network, compute.provisioning_state)
    return computes


def _jobs_table(jobs):
    from rich.table import Table

    table = Table(title="recent jobs", title_justify="left")
    for column in ("name", "status", "created", "rows", "files failed", "input"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job.name, job.status, job.created, _cell(job.rows_scored),
                      _cell(job.files_failed), job.input)
    return table


def _cell(value) -> str:
    """A table cell: '' for a value the target does not know (None)."""
    return "" if value is None else str(value)


@cli.group(cls=ProjectGroup)
def jobs():
    """Inspect batch scoring jobs: show, cancel, download, list.

    \b
    Examples:
      python -m deployer jobs list
      python -m deployer jobs show batchjob-0b9c...
      python -m deployer jobs download batchjob-0b9c... --output-dir results/
    """


@jobs.command("show")
@job_name_argument
@click.option("--wait", is_flag=True,
              help="Follow the job until it ends, with the live progress of `invoke` (as "
              "`az ml job stream`); the exit code is then the job's: 0 Completed, 7 Failed or "
              "Canceled (or still running at --timeout).")
@timeout_option
@target_option
@spec_dir_option
@output_option
def jobs_show(name, wait, timeout_minutes, target, spec_dir, output_format):
    """Show one job: state, counts, failed files, where its output and logs are.

    \b
    Examples:
      python -m deployer jobs show batchjob-0b9c...
      python -m deployer jobs show batchjob-0b9c... --wait
      python -m deployer jobs show batchjob-0b9c... -o json
    """
    from deployer.app import job_failed

    deployer, _ = _make(target, spec_dir, quiet=not wait, timeout_minutes=timeout_minutes)
    job = _following(deployer, lambda: deployer.wait(name)) if wait else deployer.job(name)
    if output_format == "json":
        print_json("deployer.job", {"job": job})
    else:
        _print_job(job)
    if wait and job.status != "Completed":
        raise job_failed(job)


@jobs.command("cancel")
@job_name_argument
@target_option
@spec_dir_option
def jobs_cancel(name, target, spec_dir):
    """Cancel a running job: its processes stop and it writes no output.

    \b
    A job that has already ended is shown as it ended.

    \b
    Example:
      python -m deployer jobs cancel batchjob-0b9c...
    """
    deployer, _ = _make(target, spec_dir, quiet=True)
    _print_job(deployer.cancel(name))


@jobs.command("download")
@job_name_argument
# --download-path/-p: `az ml job download`'s name for it
# (https://learn.microsoft.com/cli/azure/ml/job#az-ml-job-download).
@click.option("--output-dir", "--download-path", "-p", "output_dir",
              type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to put predictions.csv (default: outputs/<job name>/).")
@report_option
@label_column_option
@target_option
@spec_dir_option
def jobs_download(name, output_dir, report, label_column, target, spec_dir):
    """Download the predictions of a completed job (e.g. started with --no-wait).

    \b
    The folder gets the job's predictions file and job.json, which records the job: a
    second download of the same job there does nothing and says so; another job's
    download there is refused: {exit:USAGE}. A job still queued or running has no
    predictions yet: {exit:NOT_ENDED}. A failed or canceled job has none either:
    {exit:RUN_FAILED}, after its report with --report.

    \b
    Examples:
      python -m deployer jobs download batchjob-0b9c... --output-dir results/
      python -m deployer jobs download batchjob-0b9c... --report
    """
    _report_options(report, label_column)
    deployer, _ = _make(target, spec_dir)
    result = deployer.download(name, output_dir)
    _print_job(result.job, result.stats, None)
    if result.already_downloaded:
        click.echo(f"Already downloaded: {result.predictions} holds job {name}'s predictions "
                   "(as job.json beside it records); nothing was downloaded.")
    _finish(deployer, result, report, output_dir, label_column)


@jobs.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=10, show_default=True)
@target_option
@spec_dir_option
@output_option
def jobs_list(limit, target, spec_dir, output_format):
    """List the endpoint's recent jobs, newest first.

    \b
    Examples:
      python -m deployer jobs list --limit 20
      python -m deployer jobs list -o json | jq -r '.jobs[] | select(.status == "Failed") | .name'
    """
    deployer, _ = _make(target, spec_dir, quiet=True)
    found = deployer.backend.list_jobs(deployer.endpoint_name, limit=limit)
    if output_format == "json":
        return print_json("deployer.jobs", {"jobs": found})
    for job in found:
        click.echo(f"{job.name}  {job.status:<9}  {job.created}  rows={job.rows_scored}  "
                   f"failed_files={job.files_failed}  {job.input}")


# ---------------------------------------------------------------------- rollback


@cli.command()
@click.option("--to", "to", default=None, metavar="DEPLOYMENT", callback=checked(DEPLOYMENT_NAME),
              help="The deployment to make the default (default: the rollback candidate).")
@click.option("--to-version", type=click.IntRange(1), default=None, metavar="N",
              help="Make the deployment of model version N the default.")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@target_option
@spec_dir_option
def rollback(to, to_version, dry_run, target, spec_dir):
    """Make the previous deployment (or the named one) the endpoint's default again.

    \b
    The previous one is the most recent previous default (the endpoint keeps the history)
    that passed its smoke test; the default a rollback moves away from is recorded as
    rolled back from and is never the candidate again unless named with --to (`status`
    marks the candidate "rollback candidate" and says why others are none). A deployment
    that does not exist, or whose last smoke test failed, is refused.

    \b
    Examples:
      python -m deployer rollback --dry-run
      python -m deployer rollback
      python -m deployer rollback --to-version 3
      python -m deployer rollback --to iris-mlflow-v3
    """
    deployer, settings = _make(target, spec_dir)
    changes = deployer.rollback(to=to, to_version=to_version, dry_run=dry_run)
    _print_changes(changes, dry_run, f"rollback on the {settings.target} target")


# ---------------------------------------------------------------------- teardown


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted.")
@timeout_option
@target_option
@spec_dir_option
def teardown(yes, dry_run, timeout_minutes, target, spec_dir):
    """Delete the deployments, the endpoint and the cluster (registered models stay).

    \b
    Examples:
      python -m deployer teardown --dry-run
      python -m deployer teardown --yes
    """
    deployer, settings = _make(target, spec_dir, timeout_minutes=timeout_minutes)
    plan = deployer.teardown(dry_run=True)
    to_delete = [c for c in plan if c.action == "delete"]
    if not to_delete:
        click.echo("Nothing to delete: " + "; ".join(f"{c.kind} {c.name} {c.detail}" for c in plan))
        return
    click.echo(f"On the {settings.target} target this deletes: "
               + ", ".join(f"{c.kind} {c.name}" for c in to_delete))
    if dry_run:
        click.echo("(dry run: nothing was deleted)")
        return
    if not yes:
        if not sys.stdin.isatty() and not os.environ.get("DEPLOYER_ASSUME_TTY"):
            raise click.UsageError("Refusing to delete without confirmation; pass --yes.")
        click.confirm("Delete them?", abort=True)
    changes = deployer.teardown(dry_run=False)
    for change in changes:
        click.echo(f"{change.kind} {change.name}: {change.action}"
                   + (f" ({change.detail})" if change.detail else ""))


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--ready-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Once serving, write where (base URL, workspace path, token file, the "
              "spec's endpoint name) to this JSON file; the local ADF runner reads it.")
@spec_dir_option
def api(port, ready_file, spec_dir):
    """Serve the local batch-endpoint invocation API on 127.0.0.1 until Ctrl-C or SIGTERM:
    the invoke and job REST calls of Azure ML (local target only), with a bearer token.

    \b
    Example:
      python -m deployer api --port 8765
      curl -H "Authorization: Bearer $(cat .local/deployer/api-token)" \\
           -H "Content-Type: application/json" -X POST http://127.0.0.1:8765/endpoints/iris-batch/jobs \\
           -d '{"properties": {"inputData": {"input": {"jobInputType": "UriFile",
                "uri": "azureml://datastores/workspaceblobstore/paths/incoming/iris.csv"}}}}'
    """
    import json
    import signal
    import threading

    from deployer.engine.api import WORKSPACE_PATH, ApiServer, token_path

    deployer, settings = _make(None, spec_dir, quiet=True)
    if not settings.is_local:
        raise click.UsageError("`api` serves the local target; Azure ML answers these calls itself.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ApiServer(settings, port) as server:
        if ready_file is not None:
            partial = ready_file.with_name(ready_file.name + ".part")
            partial.write_text(json.dumps({
                "base_url": server.base_url, "workspace_path": WORKSPACE_PATH,
                "token_file": str(token_path(settings)), "endpoint": deployer.endpoint_name}))
            partial.replace(ready_file)
        click.echo(f"Invocation URI:  {server.invocation_uri(deployer.endpoint_name)}")
        click.echo(f"Jobs - Get:      {server.workspace_uri}/jobs/<job name>")
        click.echo(f"Bearer token in: {token_path(settings)}", err=False)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
