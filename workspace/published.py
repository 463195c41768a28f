"""Reading what the trainer publishes: MLflow runs in the datastore, each complete only
once its manifest exists.

Layout (MLflow's): <prefix>/<experiment_id>/<run_id>/artifacts/model/MLmodel ...
and <prefix>/<experiment_id>/<run_id>/manifest.json, written last by trainer/main.py.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from workspace.datastore import Datastore, sha256_file
from workspace.errors import NotFound, ProjectError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-mlflow-run-manifest/v1"
LOGGED_KEYS = ("run_name", "start_time", "end_time")


class ModelNotFound(NotFound):
    """No complete published run matches."""


class ModelIntegrityError(NotFound):
    """A published model fails its manifest's verification (not the model that was published)."""


class ManifestError(ModelIntegrityError):
    """A manifest that cannot be trusted: not JSON, a key missing, or a path that leaves its run."""


# Given a manifest's `adf` entry (pipeline_run_id, batch_task_id), why its model must not be
# used (e.g. "pipeline run X is Failed"), or None when the run succeeded or is unknown.
ProvenanceCheck = Callable[[dict], Optional[str]]


@dataclass(frozen=True)
class PublishedRun:
    """One complete training run, as described by its manifest."""

    manifest_path: str
    run_id: str
    experiment_id: str
    created: str
    model_path: str
    metrics: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    adf: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)  # {"id", "line"} of a sweep's run
    # {run_name, start_time, end_time} as MLflow logged the run (absent in older manifests)
    logged: dict = field(default_factory=dict)
    experiment_name: str = ""

    @classmethod
    def from_manifest(cls, manifest_path: str, manifest) -> "PublishedRun":
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise ManifestError(f"'{manifest_path}' is not a trainer manifest (format {found!r}).")
        missing = [key for key in ("run_id", "experiment_id", "created", "model_path", "files")
                   if key not in manifest]
        if missing:
            raise ManifestError(f"Manifest '{manifest_path}' lacks {', '.join(missing)}.")
        run = cls(manifest_path=manifest_path, run_id=str(manifest["run_id"]),
                  experiment_id=str(manifest["experiment_id"]), created=str(manifest["created"]),
                  model_path=str(manifest["model_path"]), metrics=manifest.get("metrics") or {},
                  params=manifest.get("params") or {}, data=manifest.get("data") or {},
                  files=manifest["files"], adf=manifest.get("adf") or {},
                  sweep=manifest["sweep"] if isinstance(manifest.get("sweep"), dict) else {},
                  logged={k: manifest[k] for k in LOGGED_KEYS if manifest.get(k) is not None},
                  experiment_name=str(manifest.get("experiment_name") or ""))
        run.check_paths()
        return run

    def check_paths(self) -> None:
        """Every path stays inside the run's folder, so nothing is written outside the folder
        a reader downloads into (checked before anything is downloaded)."""
        where = f"Manifest '{self.manifest_path}'"
        if not isinstance(self.files, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in self.files.values()):
            raise ManifestError(f"{where}: 'files' is not a map of path to {{sha256, size}}.")
        if not _safe_relative(self.model_path) or not self.model_path.startswith(self.run_prefix + "/"):
            raise ManifestError(f"{where}: model_path '{self.model_path}' is not inside the "
                                f"run's folder '{self.run_prefix}'.")
        for rel in self.files:
            if not _safe_relative(rel):
                raise ManifestError(f"{where}: file key '{rel}' is absolute or leaves the run's "
                                    "folder; the manifest is refused.",
                                    "Re-run the trainer; do not edit manifests by hand.")

    @property
    def run_prefix(self) -> str:
        return self.manifest_path.rsplit("/", 1)[0]

    @property
    def model_files(self) -> dict:
        """Manifest entries of the model folder, keyed by path relative to it."""
        model_rel = self.model_path[len(self.run_prefix) + 1:] + "/"
        return {rel[len(model_rel):]: entry for rel, entry in self.files.items()
                if rel.startswith(model_rel)}


def _safe_relative(path) -> bool:
    """A relative POSIX path of plain names: no '..', '.', empty part, backslash or drive."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        return False
    return all(part not in ("", ".", "..") and ":" not in part for part in path.split("/"))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def list_published_runs(datastore: Datastore, prefix: str, *, wanted: str | None = None,
                        check: ProvenanceCheck | None = None,
                        warn: Callable[[str], None] = _warn) -> list[PublishedRun]:
    """Every complete, usable run under prefix, newest first. Folders without a manifest are
    skipped; so are bad manifests and runs whose pipeline run did not succeed (with a warning
    naming the blob), unless it is the run `wanted`, which is refused instead."""
    runs = []
    start = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for blob in datastore.list(start):
        if not blob.name.endswith("/" + MANIFEST_NAME):
            continue
        asked = wanted is not None and blob.name.split("/")[-2] == wanted
        try:
            run = PublishedRun.from_manifest(blob.name, _read_manifest(datastore, blob.name))
            reason = check(run.adf) if check and run.adf else None
        except ManifestError as exc:
            if asked:
                raise
            warn(f"skipped {datastore.container}/{blob.name}: {exc.message}")
            continue
        if reason:
            if asked:
                raise ModelNotFound(f"Run '{wanted}' is not usable: {reason}.",
                                    "Train again: `python -m adf trigger`.")
            warn(f"skipped {datastore.container}/{blob.name}: {reason}.")
            continue
        runs.append(run)
    return sorted(runs, key=lambda r: (r.created, r.run_id), reverse=True)


def _read_manifest(datastore: Datastore, name: str):
    try:
        return json.loads(datastore.read_bytes(name))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"Manifest '{name}' is not JSON ({exc}).") from None


def find_published_run(datastore: Datastore, prefix: str, run_id: str | None = None, *,
                       check: ProvenanceCheck | None = None) -> PublishedRun:
    """The newest complete run, or the one with run_id."""
    runs = list_published_runs(datastore, prefix, wanted=run_id, check=check)
    if run_id:
        runs = [r for r in runs if r.run_id == run_id]
    if not runs:
        which = f"run '{run_id}'" if run_id else "any complete run"
        raise ModelNotFound(f"No published model for {which} under "
                            f"'{datastore.container}/{prefix}'.",
                            "Train one first: `python -m adf trigger` (a folder without "
                            "manifest.json is an incomplete upload and is ignored).")
    return runs[0]


def download_model(datastore: Datastore, run: PublishedRun, dest: Path) -> Path:
    """Download the run's model folder to dest and verify every file against the manifest."""
    dest = Path(dest)
    run.check_paths()  # also for a PublishedRun built by hand
    files = run.model_files
    if "MLmodel" not in files:
        raise ModelIntegrityError(f"Manifest '{run.manifest_path}' lists no MLmodel under "
                                  f"'{run.model_path}'.")
    for rel, entry in sorted(files.items()):
        download_verified(datastore, f"{run.model_path}/{rel}", entry, dest / rel)
    return dest


def download_verified(datastore: Datastore, blob: str, entry: dict, dest: Path) -> Path:
    """Download one file of a run and check it against its manifest entry."""
    local = datastore.download_file(blob, dest)
    actual = sha256_file(local)
    if actual != entry["sha256"]:
        raise ModelIntegrityError(
            f"'{blob}' does not match its manifest (sha256 {actual[:12]}… "
            f"expected {entry['sha256'][:12]}…).",
            "The model was changed after publishing; re-run the trainer.")
    return local
