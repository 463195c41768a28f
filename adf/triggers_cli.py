"""`python -m adf triggers list|start|stop`: the triggers of adf/triggers/ (Data Factory's
on Azure, deployed stopped by Bicep; a foreground watcher on the local target)."""
from __future__ import annotations

import click

from workspace.cli_support import target_option
from workspace.output import output_option, print_json


def _definitions_option(function):
    return click.option(
        "--definitions", "definitions_dir", type=click.Path(file_okay=False), default=None,
        help="Directory holding triggers/ and the pipelines (default: adf/ of this repo).")(function)


@click.group()
def triggers():
    """Triggers as code: adf/triggers/*.json (a storage event on incoming/, a schedule).

    \b
    Examples:
      python -m adf triggers list
      python -m adf triggers start                       # local: watch until Ctrl-C
      python -m adf triggers start score-iris-on-upload --target azure
      python -m adf triggers stop --target azure
    """


def _selected(found: dict, names: tuple[str, ...]) -> dict:
    from workspace.errors import ConfigError

    unknown = [n for n in names if n not in found]
    if unknown:
        raise ConfigError(f"No trigger named {', '.join(unknown)} in adf/triggers/.",
                          f"Triggers: {', '.join(sorted(found))}.")
    return {n: d for n, d in found.items() if not names or n in names}


def _load(target, definitions_dir):
    from adf.local_triggers import load_triggers
    from workspace.settings import Settings

    settings = Settings.load().with_target(target)
    return settings, load_triggers(settings, definitions_dir)


@triggers.command("list")
@target_option
@_definitions_option
@output_option
def list_(target, definitions_dir, output_format):
    """Each trigger: its state (Started/Stopped), type, pipeline and what it reacts to.

    \b
    Examples:
      python -m adf triggers list
      python -m adf triggers list --target azure -o json | jq -r '.triggers[].state'
    """
    from adf.local_triggers import describe, trigger_pipelines, watched

    settings, found = _load(target, definitions_dir)
    if settings.is_local:
        started = watched(settings)
        states = {n: "Started" if n in started else "Stopped" for n in found}
    else:
        states = _azure(settings, definitions_dir).trigger_states()
    rows = [{"name": n, "state": states.get(n, "NotDeployed"), "type": d.properties.get("type"),
             "pipelines": [p for p, _ in trigger_pipelines(d)], "on": describe(d)}
            for n, d in sorted(found.items())]
    if output_format == "json":
        return print_json("adf.triggers", {"target": settings.target, "triggers": rows})
    for row in rows:
        click.echo(f"{row['name']:<24} {row['state']:<11} {row['type']:<18} "
                   f"{', '.join(row['pipelines'])}: {row['on']}")


@triggers.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--poll", "poll_seconds", type=click.FloatRange(min=0.1), default=2.0,
              show_default=True, metavar="SECONDS",
              help="Local target: how often the watcher looks for new blobs and due schedules.")
@target_option
@_definitions_option
def start(names, poll_seconds, target, definitions_dir):
    """Start triggers (default: all). Azure: Data Factory starts them. Local: watches in the
    foreground until Ctrl-C or `triggers stop`, starting each trigger's pipeline once per new
    blob under incoming/ (blobs already there start nothing) and at each scheduled time.

    \b
    Examples:
      python -m adf triggers start
      python -m adf triggers start score-iris-on-upload --poll 1
      python -m adf triggers start --target azure
    """
    import signal

    from adf.local_triggers import Watcher

    settings, found = _load(target, definitions_dir)
    chosen = _selected(found, names)
    if not settings.is_local:
        backend = _azure(settings, definitions_dir)
        for name in chosen:
            backend.start_trigger(name)
            click.echo(f"Trigger {name} Started.")
        return

    def start_run(pipeline: str, parameters: dict) -> str:
        from adf.definitions import effective_parameters
        from adf.parameters import check_parameters
        from adf.targets import make_backend

        backend = make_backend("local", definitions_dir, pipeline)
        definitions = backend.definitions()
        check_parameters(definitions, effective_parameters(definitions, parameters),
                         names=list(parameters))
        return backend.start(parameters)

    watcher = Watcher(settings, chosen, start_run, lambda line: click.echo(line, err=True),
                      poll_seconds)
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop.set())
    click.echo(f"Watching {', '.join(sorted(chosen))} (local); Ctrl-C or "
               "`python -m adf triggers stop` ends it.", err=True)
    try:
        watcher.run()
    except KeyboardInterrupt:
        pass
    click.echo("Triggers stopped.", err=True)


@triggers.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@target_option
@_definitions_option
def stop(names, target, definitions_dir):
    """Stop triggers (default: all). Local: ends the watcher (all of its triggers).

    \b
    Examples:
      python -m adf triggers stop
      python -m adf triggers stop score-iris-nightly --target azure
    """
    from adf.local_triggers import stop_watcher

    settings, found = _load(target, definitions_dir)
    chosen = _selected(found, names)
    if settings.is_local:
        click.echo("Watcher stopped." if stop_watcher(settings) else "No watcher was running.")
        return
    backend = _azure(settings, definitions_dir)
    for name in chosen:
        backend.stop_trigger(name)
        click.echo(f"Trigger {name} Stopped.")


def _azure(settings, definitions_dir):
    from adf.azure_backend import AzureBackend

    return AzureBackend(settings, definitions_dir)
