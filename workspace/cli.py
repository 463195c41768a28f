"""Local services: `up` starts Azurite (data under .local/) and creates the datastore
container, `down` stops it and runs the clean-ups registered in workspace/cleanups.py (the
deployer's: settle scoring jobs whose runner had died), `status` tells whether it answers,
`ui` imports the published training runs into the local tracking store and serves MLflow's
UI over it (`make ui`)."""
from __future__ import annotations

import sys

import click

from workspace.cli_support import ProjectGroup
from workspace.errors import ExitCode
from workspace.settings import Settings


@click.group(cls=ProjectGroup)
def cli():
    """Local services of the embedded default target (Azurite on 127.0.0.1).

    \b
    Examples:
      python -m workspace up        # what `make local-up` runs
      python -m workspace status    # does the local datastore answer? (`make local-status`)
      python -m workspace down      # what `make local-down` runs

    {exit_codes}
    """


@cli.command()
def up():
    """Start Azurite in the background (idempotent) and create the datastore container.

    \b
    Example:
      python -m workspace up
    """
    from workspace import azurite
    from workspace.datastore import Datastore

    settings = Settings.load().with_target("local")
    pid, started = azurite.start_background(settings.local_path, int(settings.azurite_port))
    state = "started" if started else "already running"
    click.echo(f"Azurite {state} (pid {pid}) on {settings.azurite_blob_endpoint}, "
               f"data in {settings.local_path / 'azurite'}")
    _queue_up(settings)
    created = Datastore.from_settings(settings).ensure_container()
    click.echo(f"Datastore container '{settings.container}' "
               f"{'created' if created else 'ready'}.")


def _queue_up(settings) -> None:
    """Azurite's queue service beside blob: the work queues of `python -m adf sweep`."""
    from workspace.queues import start_background_queue

    pid, started = start_background_queue(settings.local_path, int(settings.azurite_queue_port))
    click.echo(f"Azurite queue service {'started' if started else 'already running'} "
               f"(pid {pid}) on {settings.queue_endpoint}")


@cli.command()
def down():
    """Stop the background Azurite (its data stays under .local/).

    \b
    Example:
      python -m workspace down
    """
    from workspace import azurite

    settings = Settings.load().with_target("local")
    pid = azurite.stop_background(settings.local_path)
    click.echo(f"Azurite stopped (pid {pid})." if pid else "Azurite was not running.")
    from workspace.queues import stop_background_queue

    if stop_background_queue(settings.local_path):
        click.echo("Azurite queue service stopped.")
    from workspace.cleanups import run_cleanups

    run_cleanups(settings.local_path, click.echo)


@cli.command()
def status():
    """Say whether the local datastore answers.

    Ends with {exit:UNREACHABLE} if it does not.

    \b
    Example:
      python -m workspace status || make local-up
    """
    from workspace import azurite

    settings = Settings.load().with_target("local")
    pid = azurite.running_pid(settings.local_path)
    if azurite.is_listening(int(settings.azurite_port)):
        click.echo(f"Azurite answers on {settings.azurite_blob_endpoint}"
                   + (f" (pid {pid})." if pid else " (not started by make local-up)."))
    else:
        click.echo(f"Azurite is not running on {settings.azurite_blob_endpoint}; "
                   "start it with `make local-up`.")
        raise SystemExit(ExitCode.UNREACHABLE)


# One server process for one local user: mlflow's defaults (4 uvicorn workers, --workers in
# mlflow/utils/cli_args.py; a job runner with its huey consumers, MLFLOW_SERVER_ENABLE_JOB_EXECUTION
# in mlflow/environment_variables.py, for GenAI jobs this project has none of) start ten
# processes that each import the MLflow server. `mlflow demo` runs one worker too.
# MLflow 3's UI opens on its GenAI view unless the URL says `workflowType=machine_learning`
# (its workflow switch, kept in the browser's local storage; mlflow/server/js, the
# `mlflow.workflowType` key): the address printed opens the experiment's runs table.
UI_VIEW = "#/experiments/{experiment}?workflowType=machine_learning"


@cli.command()
@click.option("--port", default=None, help="Port on 127.0.0.1 (default: UI_PORT, 5000).")
@click.option("--sync-every", "sync_seconds", type=click.FloatRange(min=0), default=15.0,
              show_default=True,
              help="Seconds between imports of newly published runs while serving; 0: none.")
@click.option("--no-sync", is_flag=True,
              help="Serve the store as it is, without importing the published runs.")
def ui(port, sync_seconds, no_sync):
    """Import every published training run into the local tracking store, then serve
    MLflow's UI over it on 127.0.0.1 (runs, sweeps with their lines, registered models).
    Runs published while it serves are imported too (see --sync-every): reload the page.

    \b
    Examples:
      python -m workspace ui              # http://127.0.0.1:5000/#/experiments/1?workflowType=machine_learning
      python -m workspace ui --port 5050  # or UI_PORT=5050 in .env
      make ui UI_PORT=5050
    """
    import os
    import signal
    import subprocess

    settings = Settings.load() if port is None else Settings.load(ui_port=str(port))
    from workspace.tracking import DEFAULT_EXPERIMENT, TrackingStore

    tracking = TrackingStore(settings.local_path)
    sync = None if no_sync else _RunSync(settings, tracking)
    if sync:
        sync()
    experiment = tracking.experiment_id(DEFAULT_EXPERIMENT)
    url = f"http://127.0.0.1:{settings.ui_port}/" + UI_VIEW.format(experiment=experiment)
    click.echo(f"MLflow UI over {tracking.db_path}: open {url}", err=True)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--workers", "1", "--backend-store-uri",
         tracking.uri, "--host", "127.0.0.1", "--port", settings.ui_port],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        while True:
            try:
                raise SystemExit(server.wait(timeout=sync_seconds if sync and sync_seconds
                                             else None))
            except subprocess.TimeoutExpired:
                sync()
    except KeyboardInterrupt:  # Ctrl-C reached the server too: it stops, quietly
        raise SystemExit(130)
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()


class _RunSync:
    """Imports the runs published in the datastore; a datastore that does not answer is a
    warning, said once until it answers again (the UI still shows what the store holds)."""

    def __init__(self, settings: Settings, tracking) -> None:
        self.settings, self.tracking = settings, tracking
        self.first, self.failing = True, False

    def __call__(self) -> None:
        from workspace.datastore import Datastore
        from workspace.errors import ProjectError

        try:
            result = self.tracking.sync(Datastore.from_settings(self.settings),
                                        self.settings.model_prefix,
                                        progress=lambda line: click.echo(line, err=True))
        except ProjectError as exc:
            if not self.failing:
                click.secho(f"warning: the published runs were not imported: {exc.message}",
                            fg="yellow", err=True)
            self.failing = True
            return
        self.failing = False
        if self.first or result.imported:
            click.echo(f"tracking store: {len(result.imported)} run(s) imported, "
                       f"{result.present} already there", err=True)
        self.first = False
