"""The backend of a target: the local Custom-activity runner or Data Factory + Batch.

The one place that picks a backend from the settings, so that the CLIs (`adf/cli.py`,
`adf/sweep_cli.py`) and readers of published models (the deployer) share it without
importing each other, and the backends (adf/local_runner.py, adf/azure_backend.py) are
imported only here, lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from workspace.settings import Settings


def make_backend(target: str | None, definitions_dir: Path | None,
                 pipeline: str | None = None):
    """The backend of `target` (default: TARGET of .env), running `pipeline` (a pipeline's
    name in the definitions folder; default: train-iris, adf/pipeline.json)."""
    settings = Settings.load().with_target(target)
    if settings.is_local:
        from adf.local_runner import LocalBackend

        backend = LocalBackend(settings, definitions_dir)
    else:
        from adf.azure_backend import AzureBackend

        backend = AzureBackend(settings, definitions_dir)
    if pipeline is not None:
        backend.pipeline_file = pipeline_file(definitions_dir, pipeline)
    return backend


def pipeline_file(definitions_dir: Path | None, name: str) -> str:
    """The file of the pipeline named `name` (ConfigError listing the names there are)."""
    from adf.definitions import pipeline_files
    from workspace.errors import ConfigError

    files = pipeline_files(definitions_dir)
    if name not in files:
        raise ConfigError(f"--pipeline {name}: no pipeline of that name in "
                          f"{definitions_dir or 'adf/'}.",
                          f"Pipelines: {', '.join(sorted(files))}.")
    return files[name]


def model_provenance_check(settings: Settings) -> Callable[[dict], str | None] | None:
    """For readers of published models: given a manifest's `adf` entry, why its model must
    not be used (its pipeline run or attempt did not succeed), or None. Local target only:
    its runs are on this machine; on Azure a failed activity's Batch task is ended by Batch."""
    if not settings.is_local:
        return None
    from adf.local_runner import LocalBackend

    return LocalBackend(settings).provenance_problem
