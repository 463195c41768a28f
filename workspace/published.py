"""Reading what the trainer publishes: MLflow runs in the datastore, each complete only
once its manifest exists.

Layout (MLflow's): <prefix>/<experiment_id>/<run_id>/artifacts/model/MLmodel ...
and <prefix>/<experiment_id>/<run_id>/manifest.json, written last by trainer/main.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workspace.datastore import Datastore, sha256_file
from workspace.errors import ProjectError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "iris-mlflow-run-manifest/v1"


class ModelNotFound(ProjectError):
    exit_code = 4


class ModelIntegrityError(ProjectError):
    exit_code = 4


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

    @classmethod
    def from_manifest(cls, manifest_path: str, manifest: dict) -> "PublishedRun":
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ModelIntegrityError(f"'{manifest_path}' is not a trainer manifest "
                                      f"(format {manifest.get('format')!r}).")
        return cls(manifest_path=manifest_path, run_id=manifest["run_id"],
                   experiment_id=str(manifest["experiment_id"]), created=manifest["created"],
                   model_path=manifest["model_path"], metrics=manifest.get("metrics", {}),
                   params=manifest.get("params", {}), data=manifest.get("data", {}),
                   files=manifest.get("files", {}))

    @property
    def run_prefix(self) -> str:
        return self.manifest_path.rsplit("/", 1)[0]

    @property
    def model_files(self) -> dict:
        """Manifest entries of the model folder, keyed by path relative to it."""
        model_rel = self.model_path[len(self.run_prefix) + 1:] + "/"
        return {rel[len(model_rel):]: entry for rel, entry in self.files.items()
                if rel.startswith(model_rel)}


def list_published_runs(datastore: Datastore, prefix: str) -> list[PublishedRun]:
    """Every complete run under prefix, newest first. Folders without a manifest are skipped."""
    runs = []
    start = prefix.strip("/") + "/" if prefix.strip("/") else ""
    for blob in datastore.list(start):
        if blob.name.endswith("/" + MANIFEST_NAME):
            runs.append(PublishedRun.from_manifest(blob.name, datastore.read_json(blob.name)))
    return sorted(runs, key=lambda r: (r.created, r.run_id), reverse=True)


def find_published_run(datastore: Datastore, prefix: str, run_id: str | None = None) -> PublishedRun:
    """The newest complete run, or the one with run_id."""
    runs = list_published_runs(datastore, prefix)
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
    files = run.model_files
    if "MLmodel" not in files:
        raise ModelIntegrityError(f"Manifest '{run.manifest_path}' lists no MLmodel under "
                                  f"'{run.model_path}'.")
    for rel, entry in sorted(files.items()):
        local = datastore.download_file(f"{run.model_path}/{rel}", dest / rel)
        actual = sha256_file(local)
        if actual != entry["sha256"]:
            raise ModelIntegrityError(
                f"'{run.model_path}/{rel}' does not match its manifest (sha256 {actual[:12]}… "
                f"expected {entry['sha256'][:12]}…).",
                "The model was changed after publishing; re-run the trainer.")
    return dest
