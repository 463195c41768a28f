"""Local services: `up` starts Azurite (data under .local/) and creates the datastore
container, `down` stops it and runs the clean-ups registered in workspace/cleanups.py (the
deployer's: settle scoring jobs whose runner had died), `status` tells whether it answers."""
from __future__ import annotations

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
