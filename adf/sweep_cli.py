"""`python -m adf sweep`: start a sweep over a grid, follow it, show its leaderboard."""
from __future__ import annotations

import time
from pathlib import Path

import click

from workspace.cli_support import ProjectGroup, checked, target_option
from workspace.names import SWEEP_ID
from workspace.output import output_option, print_json

DEFAULT_GRID = "data/sweep.csv"


def make_sweeps(target: str | None, definitions_dir: Path | None):
    from adf.sweep import Sweeps
    from adf.targets import make_backend
    from workspace.datastore import Datastore
    from workspace.queues import queue_service

    backend = make_backend(target, definitions_dir)
    settings = backend.settings
    credential = None if settings.is_local else backend.credential
    return Sweeps(backend, Datastore.from_settings(settings, credential),
                  queue_service(settings, credential))


definitions_option = click.option(
    "--definitions", "definitions_dir", type=click.Path(file_okay=False, path_type=Path),
    default=None, help="Directory holding sweep-pipeline.json and linkedServices/ (default: adf/).")


@click.group(cls=ProjectGroup)
def sweep():
    """Hyperparameter sweeps: one queue message per grid line, runners on the pool.

    \b
    Examples:
      python -m adf sweep start --grid data/sweep.csv --workers 2
      python -m adf sweep start --grid data/sweep.csv --param maxAttempts=2 --no-wait
      python -m adf sweep start --grid data/sweep.csv --workers 50   # lowered to what can run
      python -m adf sweep status               # the newest sweep
      python -m adf sweep list
      python -m adf sweep cancel SWEEP_ID      # stop its run, delete its queue
    """


@sweep.command()
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_GRID,
              show_default=True, help="CSV of trainer options (epochs, lr, seed, test_size), "
              "one line per run.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Runners (Batch tasks) taking lines from the queue in parallel; lowered to "
              "the grid's lines, the ForEach's batchCount and the pool's task slots "
              "(BATCH_POOL_MAX_NODES on Azure, the cores locally).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A sweep pipeline parameter (repeatable): maxAttempts, "
              "visibilityTimeoutSeconds (1 to 604800), gracePeriodSeconds (0 to 3600), "
              "containerPath, ...; checked with the runner's own option types.")
@click.option("--no-wait", is_flag=True, help="Start the sweep and return its id.")
@click.option("--poll", "poll_seconds", type=float, default=None, metavar="SECONDS",
              help="Seconds between progress checks (default: 0.5 local, 10 Azure).")
@target_option
@definitions_option
def start(grid, workers, params, no_wait, poll_seconds, target, definitions_dir):
    """Validate the grid, queue its lines, start the runners and follow them to the end.

    Returns once every line is accounted for (done or failed); the runners stop then too.
    Ends with {exit:OK} only if every line succeeded; otherwise lists the failed lines
    and why, with {exit:RUN_FAILED}. Ctrl-C or SIGTERM while the lines are being queued
    cancels the sweep.

    \b
    Examples:
      python -m adf sweep start --grid data/sweep.csv --workers 2
      python -m adf sweep start --grid data/sweep.csv --param maxAttempts=2 --no-wait
    """
    from adf.definitions import parse_param_options
    from adf.sweep import TERMINAL, check_complete
    from adf.sweep_grid import load_grid

    load_grid(grid)  # a bad grid fails before any service is touched
    sweeps = make_sweeps(target, definitions_dir)
    record = sweeps.start(grid, workers, parse_param_options(params), click.echo)
    click.echo(f"Started sweep {record.sweep_id}: {record.total} lines, {record.workers} "
               f"runner(s), pipeline run {record.pipeline_run_id} ({sweeps.backend.target}).")
    if no_wait:
        click.echo(f"Follow it with: python -m adf sweep status {record.sweep_id}")
        return
    poll = sweeps.backend.poll_interval if poll_seconds is None else poll_seconds
    state = sweeps.wait(record.sweep_id, _Bar(), poll, click.echo)
    _show(state)
    if state.accounted and state.pipeline_status not in TERMINAL:
        click.echo(f"Pipeline run {record.pipeline_run_id} is {state.pipeline_status}: every "
                   "line is accounted for, so its runners are stopping.")
    check_complete(state)


@sweep.command()
@click.argument("sweep_id", required=False, callback=checked(SWEEP_ID))
@target_option
@definitions_option
@output_option
def status(sweep_id, target, definitions_dir, output_format):
    """Counts, leaderboard and failures of a sweep (default: the newest).

    \b
    Examples:
      python -m adf sweep status sw-20250101-120000-ab12
      python -m adf sweep status -o json | jq '.leaderboard[0]'

    Ends with {exit:RUN_FAILED} when the sweep can account for no more lines (its run
    ended, or it was canceled or stranded) and some are not accounted for.
    """
    from adf.sweep import check_status

    state = make_sweeps(target, definitions_dir).status(sweep_id)
    if output_format == "json":
        print_json("adf.sweep", status_data(state))
    else:
        _show(state)
    check_status(state)


@sweep.command()
@click.argument("sweep_id", required=False, callback=checked(SWEEP_ID))
@target_option
@definitions_option
def cancel(sweep_id, target, definitions_dir):
    """Cancel a sweep (default: the newest): stop its pipeline run, delete its queue and
    mark it canceled. Results already reported stay in its leaderboard. Repeating it is
    harmless; it also cleans up a sweep stranded by a killed `sweep start`.

    \b
    Example:
      python -m adf sweep cancel sw-20250101-120000-ab12
    """
    record, done = make_sweeps(target, definitions_dir).cancel(sweep_id)
    for step in done:
        click.echo(f"  {step}")
    if done:
        click.echo(f"Sweep {record.sweep_id} canceled.")
    else:
        click.echo(f"Sweep {record.sweep_id} was already canceled at {record.canceled}; "
                   "nothing left to do.")


@sweep.command(name="list")
@target_option
@definitions_option
@output_option
def list_(target, definitions_dir, output_format):
    """Every sweep in the datastore, newest first, with its counts.

    \b
    Examples:
      python -m adf sweep list
      python -m adf sweep list -o json | jq -r '.sweeps[].sweep_id'
    """
    from adf.sweep import SweepBlobCorrupt

    sweeps = make_sweeps(target, definitions_dir)
    entries = []
    for sweep_id in sweeps.ids():
        try:
            entries.append(list_entry(sweeps.load(sweep_id), sweeps.collect(sweep_id)))
        except SweepBlobCorrupt as exc:  # one broken sweep does not hide the others
            click.secho(f"warning: skipped sweep {sweep_id}: {exc.message}", fg="yellow",
                        err=True)
    if output_format == "json":
        return print_json("adf.sweeps", {"sweeps": entries})
    if not entries:
        click.echo("No sweeps yet; start one with `python -m adf sweep start`.")
        return
    click.echo(f"{'sweep':<26} {'created':<26} {'total':>5} {'done':>5} {'failed':>6}  best")
    for entry in entries:
        best = entry["best"]
        best = f"{best['test_accuracy']:.3f} (line {best['line']})" if best else "-"
        click.echo(f"{entry['sweep_id']:<26} {entry['created']:<26} {entry['total']:>5} "
                   f"{entry['done']:>5} {entry['failed']:>6}  {best}")


# ------------------------------------------------------------------ output


def status_data(state) -> dict:
    """`sweep status -o json`: the sweep's record (without its grid lines: `total`
    counts them), the counts, the leaderboard (best first) and the failures."""
    from workspace.output import to_data

    return {"sweep": {**to_data(state.record, exclude=("lines",)), "total": state.record.total},
            "pipeline_status": state.pipeline_status,
            "pipeline_message": state.pipeline_message,
            "done": state.done, "failed": state.failed, "queued": state.queued,
            "accounted": state.accounted, "missing_lines": state.missing_lines,
            "stranded": state.stranded,
            "leaderboard": [_result(rank, entry) for rank, entry
                            in enumerate(state.ledger.leaderboard(), 1)],
            "failures": [_failure(state.ledger.failed[line]) for line
                         in sorted(state.ledger.failed, key=int)]}


def list_entry(record, ledger) -> dict:
    """A sweep of `sweep list`: its id, when, its counts and its best line (or None)."""
    board = ledger.leaderboard()
    return {"sweep_id": record.sweep_id, "created": record.created, "target": record.target,
            "total": record.total, "done": len(ledger.done), "failed": len(ledger.failed),
            "best": _result(1, board[0]) if board else None}


def _result(rank: int, message: dict) -> dict:
    """A line's result as the runner reported it, in the JSON's words."""
    return {"rank": rank, "line": message["line"], "params": message.get("params", {}),
            "run_id": message.get("runId", ""), "metrics": message.get("metrics", {}),
            "test_accuracy": message["metrics"]["test_accuracy"],
            "seconds": message.get("seconds"), "attempt": message.get("attempt"),
            "manifest_path": message.get("manifestPath", ""), "runner": message.get("runner")}


def _failure(message: dict) -> dict:
    return {"line": message["line"], "params": message.get("params", {}),
            "error": message.get("error", ""), "attempts": message.get("attempts"),
            "runner": message.get("runner")}


class _Bar:
    """One progress line per change: done / failed / in flight / total and the rate."""

    def __init__(self):
        self.started = time.monotonic()
        self.last = None

    def __call__(self, state) -> None:
        total = state.record.total
        finished = state.done + state.failed
        in_flight = max(0, min(state.queued, state.record.workers)) if state.queued else 0
        shown = (state.done, state.failed, in_flight, state.pipeline_status)
        if shown == self.last:
            return
        self.last = shown
        width = 30
        filled = int(width * finished / total) if total else width
        rate = finished / max(time.monotonic() - self.started, 1e-9)
        click.echo(f"  [{'#' * filled}{'.' * (width - filled)}] {state.done} done, "
                   f"{state.failed} failed, {in_flight} in flight, {total} total  "
                   f"{rate:.2f} lines/s  ({state.pipeline_status})")


def _show(state) -> None:
    from adf.sweep import describe_params

    record = state.record
    click.echo("")
    click.echo(f"Sweep {record.sweep_id} ({record.target}), grid {record.grid}, "
               f"{record.workers} runner(s), created {record.created}")
    if record.pipeline_run_id:
        click.echo(f"Pipeline run {record.pipeline_run_id}: {state.pipeline_status or '?'}")
    if record.canceled:
        click.echo(f"Canceled at {record.canceled}: {record.cancel_reason}")
    elif state.stranded:
        click.echo(f"Stranded: no pipeline run, and no `sweep start` is queueing it "
                   f"({state.queued} of {record.total} lines queued)")
    elif not record.pipeline_run_id:
        click.echo(f"Queueing: {state.queued} of {record.total} lines queued so far")
    board = state.ledger.leaderboard()
    if board:
        click.echo(f"{'rank':>4} {'line':>4}  {'run id':<32}  {'accuracy':>8} {'macro-F1':>8} "
                   f"{'time s':>6}  parameters")
        for rank, entry in enumerate(board, 1):
            click.echo(f"{rank:>4} {entry['line']:>4}  {entry['runId']:<32}  "
                       f"{entry['metrics']['test_accuracy']:>8.3f} "
                       f"{entry['metrics']['test_f1_macro']:>8.3f} {entry['seconds']:>6.1f}  "
                       f"{describe_params(entry['params'])}")
    for entry, reason in state.ledger.unranked():
        click.secho(f"line {entry['line']} not ranked ({describe_params(entry['params'])}): "
                    f"run {entry['runId']}: {reason}.", fg="yellow")
    for line, failure in sorted(state.ledger.failed.items(), key=lambda kv: int(kv[0])):
        click.secho(f"line {line} failed after {failure['attempts']} attempt(s) "
                    f"({describe_params(failure['params'])}): {failure['error']}", fg="red")
    ok = state.accounted
    click.secho(f"done {state.done} + failed {state.failed} = {state.done + state.failed} "
                f"{'==' if ok else '!='} total {record.total}"
                + ("" if ok else f" ({state.queued} still queued)"),
                fg="green" if ok and not state.failed else ("yellow" if ok else "red"))
