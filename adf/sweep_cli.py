"""`python -m adf sweep`: start a sweep over a grid, follow it, show its leaderboard."""
from __future__ import annotations

import time
from pathlib import Path

import click

from workspace.cli_support import target_option

DEFAULT_GRID = "data/sweep.csv"


def make_sweeps(target: str | None, definitions_dir: Path | None):
    from adf.cli import make_backend
    from adf.sweep import Sweeps
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


@click.group()
def sweep():
    """Hyperparameter sweeps: one queue message per grid line, runners on the pool.

    \b
    Examples:
      python -m adf sweep start --grid data/sweep.csv --workers 2
      python -m adf sweep start --grid data/sweep.csv --param maxAttempts=2 --no-wait
      python -m adf sweep status               # the newest sweep
      python -m adf sweep list
      python -m adf sweep cancel SWEEP_ID      # stop its run, delete its queues
    """


@sweep.command()
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_GRID,
              show_default=True, help="CSV of trainer options (epochs, lr, seed, test_size), "
              "one line per run.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Runners (Batch tasks) taking lines from the queue in parallel.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A sweep pipeline parameter (repeatable): maxAttempts, "
              "visibilityTimeoutSeconds, gracePeriodSeconds, containerPath, ...")
@click.option("--no-wait", is_flag=True, help="Start the sweep and return its id.")
@click.option("--poll", "poll_seconds", type=float, default=None, metavar="SECONDS",
              help="Seconds between progress checks (default: 0.5 local, 10 Azure).")
@target_option
@definitions_option
def start(grid, workers, params, no_wait, poll_seconds, target, definitions_dir):
    """Validate the grid, queue its lines, start the runners and follow them to the end.

    Returns once every line is accounted for (done or failed); the runners stop then too.
    Exits 0 only if every line succeeded; otherwise lists the failed lines and why.
    Ctrl-C or SIGTERM while the lines are being queued cancels the sweep.
    """
    from adf.definitions import parse_param_options
    from adf.sweep import TERMINAL, check_complete
    from adf.sweep_grid import load_grid

    load_grid(grid)  # a bad grid fails before any service is touched
    sweeps = make_sweeps(target, definitions_dir)
    record = sweeps.start(grid, workers, parse_param_options(params), click.echo)
    click.echo(f"Started sweep {record.sweep_id}: {record.total} lines, {workers} runner(s), "
               f"pipeline run {record.pipeline_run_id} ({sweeps.backend.target}).")
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
@click.argument("sweep_id", required=False)
@target_option
@definitions_option
def status(sweep_id, target, definitions_dir):
    """Counts, leaderboard and failures of a sweep (default: the newest).

    Exits non-zero when the sweep can account for no more lines (its run ended, or it was
    canceled or stranded) and some are not accounted for.
    """
    from adf.sweep import check_status

    state = make_sweeps(target, definitions_dir).status(sweep_id)
    _show(state)
    check_status(state)


@sweep.command()
@click.argument("sweep_id", required=False)
@target_option
@definitions_option
def cancel(sweep_id, target, definitions_dir):
    """Cancel a sweep (default: the newest): stop its pipeline run, delete its queues and
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
def list_(target, definitions_dir):
    """Every sweep in the datastore, newest first, with its counts."""
    sweeps = make_sweeps(target, definitions_dir)
    ids = sweeps.ids()
    if not ids:
        click.echo("No sweeps yet; start one with `python -m adf sweep start`.")
        return
    click.echo(f"{'sweep':<26} {'created':<26} {'total':>5} {'done':>5} {'failed':>6}  best")
    from adf.sweep import SweepBlobCorrupt

    for sweep_id in ids:
        try:
            record, ledger = sweeps.load(sweep_id), sweeps.collect(sweep_id)
        except SweepBlobCorrupt as exc:  # one broken sweep does not hide the others
            click.secho(f"warning: skipped sweep {sweep_id}: {exc.message}", fg="yellow",
                        err=True)
            continue
        board = ledger.leaderboard()
        best = f"{board[0]['metrics']['test_accuracy']:.3f} (line {board[0]['line']})" if board else "-"
        click.echo(f"{sweep_id:<26} {record.created:<26} {record.total:>5} "
                   f"{len(ledger.done):>5} {len(ledger.failed):>6}  {best}")


# ------------------------------------------------------------------ output


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
    for line, failure in sorted(state.ledger.failed.items(), key=lambda kv: int(kv[0])):
        click.secho(f"line {line} failed after {failure['attempts']} attempt(s) "
                    f"({describe_params(failure['params'])}): {failure['error']}", fg="red")
    ok = state.accounted
    click.secho(f"done {state.done} + failed {state.failed} = {state.done + state.failed} "
                f"{'==' if ok else '!='} total {record.total}"
                + ("" if ok else f" ({state.queued} still queued)"),
                fg="green" if ok and not state.failed else ("yellow" if ok else "red"))
