"""`python -m adf`: stage the trainer, trigger the pipeline, follow runs, read task logs."""
from __future__ import annotations

import json
from pathlib import Path

import click

from adf.targets import make_backend
from workspace.cli_support import ProjectGroup, checked, target_option
from workspace.names import PIPELINE_RUN_ID
from workspace.output import output_option, print_json

STDOUT_TAIL = 20
STDERR_TAIL = 40

run_id_argument = click.argument("run_id", required=False, callback=checked(PIPELINE_RUN_ID))

pipeline_option = click.option(
    "--pipeline", "pipeline", default=None, metavar="NAME",
    help="The pipeline to run, by name: train-iris (default, adf/pipeline.json), score-iris "
    "(adf/score-pipeline.json: scores --param input=<datastore path or azureml:// URI> with "
    "the batch endpoint), deploy-iris (register-and-deploy on the pool) or train-and-deploy "
    "(train, deploy, then score the staged sample: the whole loop).")

definitions_option = click.option(
    "--definitions", "definitions_dir", type=click.Path(file_okay=False, path_type=Path),
    default=None, help="Directory holding pipeline.json, linkedServices/ and credentials/ "
    "(default: adf/ of this repo). Handy to try a changed pipeline before committing it.")


@click.group(cls=ProjectGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """The ADF pipelines of adf/ as commands: training (pipeline.json), sweeps, scoring
    (score-pipeline.json) and its triggers (triggers/).

    \b
    Local by default (Azurite + a local Custom-activity runner); Azure when .env says
    TARGET=azure or with --target azure.

    \b
    Examples:
      python -m adf trigger                          # stage, run, follow, show the result
      python -m adf trigger --param epochs=20 --param lr=0.05
      python -m adf trigger --no-wait                # start and return; follow with `status`
      python -m adf status                           # the last run started from this machine
      python -m adf logs RUN_ID                      # the task's full stdout and stderr
      python -m adf cancel RUN_ID                    # stop the run and its task
      python -m adf trigger --pipeline score-iris --param input=incoming/new.csv
      python -m adf triggers start                   # score each new blob in incoming/

    {exit_codes}
    """


@cli.command()
@target_option
@definitions_option
def stage(target, definitions_dir):
    """Upload trainer/main.py, trainer/requirements.txt, data/iris_csv.csv, the deployer's
    adf/deploy_task.py and its packages as iris-packages.zip to the activity's folderPath
    (unchanged files are skipped by sha256).

    \b
    Example:
      python -m adf stage --target azure
    """
    _stage(make_backend(target, definitions_dir))


def _stage(backend) -> None:
    from adf.staging import stage as upload

    store, prefix = backend.staging_datastore()
    where = f"{store.container}/{prefix}"
    click.echo(f"Staging to {where} ({backend.target}):")

    def report(entry, index, total):
        state = "uploaded " if entry.uploaded else "unchanged"
        click.echo(f"  [{index}/{total}] {state} {entry.source.name} ({entry.size / 1024:.1f} KiB)")

    files = upload(store, prefix, progress=report)
    sent = sum(1 for f in files if f.uploaded)
    click.echo(f"Staged {len(files)} files ({sent} uploaded, {len(files) - sent} unchanged).")


@cli.command()
@pipeline_option
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter (repeatable): epochs, lr, containerPath "
              "(learningRate: the former name of lr); for score-iris input (a datastore path "
              "or azureml:// URI), inputType, endpoint, deployment, miniBatchSize, "
              "instanceCount, maxRetries, errorThreshold, outputPath, jobName, experimentName.")
@click.option("--no-stage", is_flag=True, help="Do not upload the trainer and data first.")
@click.option("--no-wait", is_flag=True, help="Start the run and return its id.")
@click.option("--poll", "poll_seconds", type=float, default=None, metavar="SECONDS",
              help="Seconds between status checks (default: 0.5 local, 10 Azure).")
@target_option
@definitions_option
def trigger(pipeline, params, no_stage, no_wait, poll_seconds, target, definitions_dir):
    """"Trigger now": stage, start a run of the pipeline, follow it to the end, then show
    the run id, the activity's customOutput and the tail of the task's stdout/stderr.

    Ends with {exit:OK} only if the run Succeeded; otherwise with {exit:RUN_FAILED},
    showing the task's stderr.

    \b
    Examples:
      python -m adf trigger
      python -m adf trigger --param epochs=100 --param lr=0.05
      python -m adf trigger --target azure --no-stage --no-wait
      python -m adf trigger --pipeline score-iris --param input=incoming/iris.csv
      python -m adf trigger --pipeline train-and-deploy   # train, deploy, score the sample
    """
    from adf.control_flow import is_control_flow
    from adf.definitions import coerce_parameters, effective_parameters, parse_param_options
    from adf.parameters import check_parameters

    backend = make_backend(target, definitions_dir, pipeline)
    definitions = backend.definitions()
    typed = coerce_parameters(definitions, parse_param_options(params),
                              note=lambda text: click.echo(text, err=True))
    check_parameters(definitions, effective_parameters(definitions, typed), names=list(typed))
    backend.prepare(lambda line: click.echo(line))
    if not no_stage and (not is_control_flow(definitions.pipeline.body) or backend.folder_path()):
        _stage(backend)  # a control-flow pipeline that executes Custom activities too
    run_id = backend.start(typed)
    shown = ", ".join(f"{k}={v}" for k, v in typed.items()) or "defaults"
    click.echo(f"Started run {run_id} of pipeline '{backend.definitions().pipeline.name}' "
               f"({backend.target}; parameters: {shown}).")
    if no_wait:
        click.echo(f"Follow it with: python -m adf status {run_id}")
        return
    run = _follow(backend, run_id, poll_seconds)
    _summarize(backend, run, show_logs=True)


@cli.command()
@run_id_argument
@click.option("--wait", is_flag=True, help="Follow the run until it ends.")
@target_option
@definitions_option
@output_option
def status(run_id, wait, target, definitions_dir, output_format):
    """Show a run: status, activity attempts, customOutput or error.

    Ends with {exit:RUN_FAILED} if the run Failed or was Cancelled.

    Without RUN_ID: the last run started from this machine.

    \b
    Examples:
      python -m adf status
      python -m adf status 3f2b... --wait
      python -m adf status -o json | jq -r .run.status
    """
    backend = make_backend(target, definitions_dir)
    run_id = run_id or backend.last_run_id()
    as_json = output_format == "json"
    run = _follow(backend, run_id, None, err=as_json) if wait else backend.get_run(run_id)
    reason = None if run.is_terminal else backend.waiting_reason(run)
    if as_json:
        print_json("adf.run", {"target": backend.target, "run": run, "waiting_reason": reason})
        return _check_ended_well(run)
    _summarize(backend, run, show_logs=False)
    if reason:
        click.echo(reason)


@cli.command()
@run_id_argument
@target_option
@definitions_option
def cancel(run_id, target, definitions_dir):
    """Cancel a run: its task is stopped and the run ends Cancelled; {exit:OK} once it is.

    Without RUN_ID: the last run started from this machine. Local: the runner stops the
    task (SIGTERM, then SIGKILL after a grace period). Azure: Data Factory's cancel, with
    its child runs (isRecursive).

    \b
    Examples:
      python -m adf cancel
      python -m adf cancel 3f2b... --target azure
    """
    backend = make_backend(target, definitions_dir)
    run_id = run_id or backend.last_run_id()
    before = backend.get_run(run_id)
    if before.is_terminal:
        click.echo(f"Run {run_id} is already {before.status}; nothing to cancel.")
        return
    run = backend.cancel(run_id)
    if not run.is_terminal:
        run = _follow(backend, run_id, None)
    click.echo(f"Run {run_id} {run.status}.")
    if run.status != "Cancelled":
        from adf.runs import RunFailed

        raise RunFailed(f"Run {run_id} ended {run.status} before the cancel took effect.",
                        f"See python -m adf status {run_id}")


@cli.command()
@run_id_argument
@click.option("--tail", "tail_lines", type=int, default=0, metavar="N",
              help="Only the last N lines of each stream (default: everything).")
@target_option
@definitions_option
def logs(run_id, tail_lines, target, definitions_dir):
    """Print the task's stdout and stderr of a run (its last attempt), from `adfjobs`; for a
    run of control-flow activities (score-iris), each activity run's output or error.

    \b
    Examples:
      python -m adf logs 3f2b...
      python -m adf logs --tail 50          # the last run started from this machine
    """
    from adf.runs import tail

    backend = make_backend(target, definitions_dir)
    run = backend.get_run(run_id or backend.last_run_id())
    activity = run.last_activity
    if activity is None:
        click.echo(f"Run {run.run_id} is {run.status}; its activity has not started yet.")
        return
    if not any(a.log_urls for a in run.activities) and any(a.output or a.error
                                                           for a in run.activities):
        # control flow (Web, Set Variable, ...): no task, so each activity run's output/error
        for each in run.activities:
            click.secho(f"==> {each.name} {each.status} (activity run {each.activity_run_id}) <==",
                        bold=True)
            click.echo(json.dumps(each.error or each.output, indent=2, sort_keys=True))
        return
    task_logs = backend.logs(activity)
    for stream in ("stdout", "stderr"):
        click.secho(f"==> {stream} of activity run {activity.activity_run_id} <==", bold=True)
        click.echo(tail(getattr(task_logs, stream), tail_lines))
    for missing in task_logs.missing:
        click.echo(f"(not available: {missing})", err=True)


@cli.group()
def runs():
    """Pipeline runs of the factory (local: of this machine's runner).

    \b
    Examples:
      python -m adf runs list
      python -m adf runs list --target azure --limit 50
    """


@runs.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="At most this many runs, newest first.")
@target_option
@definitions_option
@output_option
def runs_list(limit, target, definitions_dir, output_format):
    """Recent runs of every pipeline (training and sweeps), newest first: run id, status,
    start, duration, pipeline and the parameters it was given. Azure: Data Factory keeps
    runs 45 days.

    \b
    Examples:
      python -m adf runs list
      python -m adf runs list -o json | jq -r '.runs[] | select(.status == "Failed") | .run_id'
    """
    from adf.definitions import NOT_CALLER_PARAMETERS

    backend = make_backend(target, definitions_dir)
    found = backend.list_runs(limit)
    if output_format == "json":
        return print_json("adf.runs", {"target": backend.target, "runs": found})
    if not found:
        click.echo(f"No pipeline runs ({backend.target}); start one with `python -m adf trigger`.")
    for run in found:
        seconds = "" if run.duration_ms is None else f"{run.duration_ms / 1000:.1f} s"
        params = " ".join(f"{k}={v}" for k, v in sorted(run.parameters.items())
                          if k not in NOT_CALLER_PARAMETERS)
        click.echo(f"{run.run_id}  {run.status:<10}  {run.start:<27}  {seconds:>8}  "
                   f"{run.pipeline}  {params}".rstrip())


# ------------------------------------------------------------------ output


def _follow(backend, run_id: str, poll_seconds: float | None, err: bool = False):
    """Follow a run to its end, telling each change on stdout (stderr with err)."""
    from adf.runs import follow

    def on_status(run):
        click.echo(f"  {_clock()}  {run.status}", err=err)

    def on_reason(reason):
        first, *rest = reason.splitlines()
        click.echo(f"  {_clock()}    {first}", err=err)
        for line in rest:  # aligned under the first line
            click.echo(f"{'':14}{line}", err=err)

    try:
        return follow(backend, run_id, on_status=on_status, on_reason=on_reason,
                      poll_seconds=backend.poll_interval if poll_seconds is None else poll_seconds)
    except KeyboardInterrupt:
        click.echo(f"\nStopped following; the run goes on. Check it with: "
                   f"python -m adf status {run_id}", err=True)
        raise SystemExit(130) from None


def _clock() -> str:
    from datetime import datetime

    return datetime.now().strftime("%H:%M:%S")


def _summarize(backend, run, *, show_logs: bool) -> None:
    from adf.runs import tail

    color = {"Succeeded": "green", "Failed": "red"}.get(run.status, "yellow")
    click.echo("")
    click.echo(f"Run id:   {run.run_id}")
    click.echo(f"Pipeline: {run.pipeline} ({backend.target})")
    click.secho(f"Status:   {run.status}"
                + (f" in {run.duration_ms / 1000:.1f} s" if run.duration_ms else ""), fg=color)
    attempts: dict[str, int] = {}  # per activity: a retried activity has one run per attempt
    for activity in run.activities:
        attempts[activity.name] = index = attempts.get(activity.name, 0) + 1
        code = "" if activity.exit_code is None else f", exit code {activity.exit_code}"
        click.echo(f"Attempt {index}: {activity.name} {activity.status}{code} "
                   f"(activity run {activity.activity_run_id})")
    if run.output:
        click.echo("Output:")
        click.echo(_indent(json.dumps(run.output, indent=2, sort_keys=True)))
    activity = run.last_activity
    if activity is not None and activity.custom_output is not None:
        click.echo("customOutput:")
        click.echo(_indent(json.dumps(activity.custom_output, indent=2, sort_keys=True)))
    if run.status == "Failed" or (show_logs and run.is_terminal):
        if activity is not None and activity.log_urls:
            task_logs = backend.logs(activity)
            if show_logs and task_logs.stdout:
                click.echo(f"stdout (last {STDOUT_TAIL} lines):")
                click.echo(_indent(tail(task_logs.stdout, STDOUT_TAIL)))
            if task_logs.stderr.strip() and (show_logs or run.status == "Failed"):
                click.secho(f"stderr (last {STDERR_TAIL} lines):", fg="red" if run.status == "Failed" else None)
                click.echo(_indent(tail(task_logs.stderr, STDERR_TAIL)))
            for missing in task_logs.missing:
                click.echo(f"(log not available: {missing})")
    _check_ended_well(run)


def _check_ended_well(run) -> None:
    """A run that failed or was cancelled is an error (RunFailed, its exit code)."""
    from adf.runs import RunFailed

    if run.status in ("Failed", "Cancelled"):
        raise RunFailed(f"Run {run.run_id} {run.status}: {run.message or 'no message'}",
                        f"Full task logs: python -m adf logs {run.run_id}")


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _add_sweep_commands() -> None:
    from adf.sweep_cli import sweep  # light: click only at import time
    from adf.triggers_cli import triggers

    cli.add_command(sweep)
    cli.add_command(triggers)


_add_sweep_commands()
