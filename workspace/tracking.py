"""The local tracking store (`<LOCAL_DIR>/mlflow.db`, what `make ui` serves): every training
run the trainer published, under the trainer's own run id.

The trainer runs alone (on a Batch node in Azure) and logs into a throw-away MLflow store;
what outlives it is the published run in the datastore: the artifacts in MLflow's layout and
the manifest (run id, run name, times, params, metrics, sha256 of every file). `import_run`
copies such a run into the local store: the artifacts first, each checked against the
manifest, then the run's row with the manifest's run id, then its params, metrics and tags;
the run is marked FINISHED last, so a run that is FINISHED here is complete and is never
imported twice. A sweep's lines become child runs of one run per sweep (MLflow's
`mlflow.parentRunId` tag), whose id is derived from the sweep id.

MLflow's stores make a new run id for every run (`SqlAlchemyStore.create_run`,
mlflow/store/tracking/sqlalchemy_store.py: `run_id = uuid.uuid4().hex`). The row is
therefore added as `create_run` adds it (the store's `SqlRun` model, in the store's own
session); everything else goes through the store's public methods (`log_batch`,
`update_run_info`, `set_experiment_tag`).

The same import serves both targets: the datastore is Azurite locally and the workspace's
storage account in Azure. `sync` imports every complete run not yet in the store; reading
which runs are there needs no MLflow (`known_runs`), so a sync with nothing new is quick.
"""
from __future__ import annotations

import re
import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workspace.datastore import Datastore
from workspace.published import (ManifestError, PublishedRun, download_verified,
                                 list_published_runs)

# MLflow's run ids (uuid4().hex, mlflow/store/tracking/sqlalchemy_store.py create_run): a
# manifest's run id names a folder of the store, so nothing else is taken from one.
RUN_ID = re.compile(r"[0-9a-f]{32}")

TRACKING_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
DEFAULT_EXPERIMENT = "iris"
# MLflow's tag names (mlflow/utils/mlflow_tags.py): MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME,
# MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_EXPERIMENT_KIND; the kind's value from
# mlflow/entities/experiment_kind.py (ExperimentKind.CUSTOM_MODEL_DEVELOPMENT).
PARENT_RUN_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A fixed namespace: the same sweep id gives the same parent run id on every machine.
_SWEEP_NAMESPACE = uuid.UUID("6f1d8a52-3c3e-4f0e-9a1e-2b7c4d5e6f70")


def sweep_run_id(sweep_id: str) -> str:
    """The run id of a sweep's parent run (32 hex characters, as MLflow's run ids)."""
    return uuid.uuid5(_SWEEP_NAMESPACE, sweep_id).hex


def known_runs(db_path: Path) -> set[str]:
    """Ids of the FINISHED runs in the store, read with sqlite3 (no MLflow import); none when
    the store does not exist yet or has no runs table."""
    db_path = Path(db_path)
    if not db_path.is_file():
        return set()
    try:
        db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute("SELECT run_uuid FROM runs WHERE status = 'FINISHED'").fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return set()
    return {row[0] for row in rows}


@dataclass
class SyncResult:
    imported: list[str] = field(default_factory=list)
    present: int = 0


class TrackingStore:
    """The MLflow tracking store under a local folder: `mlflow.db` and `mlartifacts/`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.db_path = self.root / TRACKING_DB
        self.uri = f"sqlite:///{self.db_path}"
        self.artifacts = self.root / ARTIFACTS_DIR
        self._store = None

    @property
    def store(self):
        if self._store is None:
            import logging

            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            for name in ("mlflow", "alembic"):  # no INFO chatter about creating tables
                logging.getLogger(name).setLevel(logging.WARNING)
            self.root.mkdir(parents=True, exist_ok=True)
            self._store = SqlAlchemyStore(self.uri, self.artifacts.as_uri())
        return self._store

    # ------------------------------------------------------------------ runs

    def experiment_id(self, name: str) -> str:
        """The experiment `name`, created if missing; tagged as model development so that
        MLflow's UI shows its runs table (not the GenAI views) for it."""
        from mlflow.entities import ExperimentTag

        store = self.store
        experiment = store.get_experiment_by_name(name)
        if experiment is None:
            return store.create_experiment(
                name, tags=[ExperimentTag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)])
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            store.set_experiment_tag(experiment.experiment_id,
                                     ExperimentTag(EXPERIMENT_KIND_TAG, EXPERIMENT_KIND))
        return experiment.experiment_id

    def run_status(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.store.get_run(run_id).info.status
        except MlflowException:
            return None

    def artifact_uri(self, run_id: str) -> str:
        return self.store.get_run(run_id).info.artifact_uri

    def import_run(self, datastore: Datastore, run: PublishedRun) -> bool:
        """Copy a published run into the store under its run id (its sweep's parent run
        too). False if it was there already."""
        if not RUN_ID.fullmatch(run.run_id):
            raise ManifestError(f"Manifest '{run.manifest_path}': run id {run.run_id!r} is not "
                                "an MLflow run id (32 hexadecimal digits); it is not imported.",
                                "Re-run the trainer; do not edit manifests by hand.")
        if self.run_status(run.run_id) == "FINISHED":
            return False
        experiment_id = self.experiment_id(run.experiment_name or DEFAULT_EXPERIMENT)
        artifact_dir = self.artifacts / experiment_id / run.run_id / "artifacts"
        for rel, entry in sorted(run.files.items()):  # artifacts first, each verified
            if rel.startswith("artifacts/"):
                download_verified(datastore, f"{run.run_prefix}/{rel}", entry,
                                  artifact_dir / rel.removeprefix("artifacts/"))
        end = _millis(run.logged.get("end_time")) or _created_millis(run.created)
        start = _millis(run.logged.get("start_time")) or end
        name = str(run.logged.get("run_name") or f"run-{run.run_id[:8]}")
        tags = {SOURCE_NAME_TAG: "trainer/main.py", SOURCE_TYPE_TAG: "JOB",
                "data_file": run.data.get("file", ""), "data_sha256": run.data.get("sha256", ""),
                "published_manifest": run.manifest_path}
        tags.update({f"adf.{k}": v for k, v in run.adf.items()})
        if run.sweep:
            parent = self._sweep_parent(experiment_id, str(run.sweep.get("id", "")), start, end)
            tags.update({PARENT_RUN_TAG: parent, "sweep_id": str(run.sweep.get("id", "")),
                         "sweep_line": str(run.sweep.get("line", ""))})
        if not self._add_run(run.run_id, experiment_id, name, start, artifact_dir.as_uri()):
            return False
        self._log(run.run_id, params=run.params, metrics=run.metrics, tags=tags, timestamp=end)
        self._finish(run.run_id, name, end)
        return True

    def _sweep_parent(self, experiment_id: str, sweep_id: str, start: int, end: int) -> str:
        """The sweep's run (created at its first line), its times widened to every line's."""
        run_id = sweep_run_id(sweep_id)
        if self.run_status(run_id) is None:
            self._add_run(run_id, experiment_id, sweep_id, start,
                          (self.artifacts / experiment_id / run_id / "artifacts").as_uri())
            self._log(run_id, params={}, metrics={}, tags={"sweep_id": sweep_id,
                      SOURCE_TYPE_TAG: "JOB"}, timestamp=start)
        info = self.store.get_run(run_id).info
        if start < info.start_time:
            self._set_start(run_id, start)
        self._finish(run_id, sweep_id, max(end, info.end_time or end))
        return run_id

    def _add_run(self, run_id: str, experiment_id: str, name: str, start: int,
                 artifact_uri: str) -> bool:
        """The run's row with the given id, as SqlAlchemyStore.create_run adds one; a row
        left RUNNING by an interrupted import is replaced. False if another process added
        it meanwhile (`make ui` and `register-and-deploy` importing the same run): that
        one finishes it."""
        from mlflow.entities import LifecycleStage, RunStatus, SourceType
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.dbmodels.models import SqlRun

        store = self.store
        if self.run_status(run_id) is not None:
            store._hard_delete_run(run_id)  # an interrupted import's row: start again
        try:
            self._insert(SqlRun(
                name=name, artifact_uri=artifact_uri, run_uuid=run_id,
                experiment_id=int(experiment_id),
                source_type=SourceType.to_string(SourceType.JOB), source_name="",
                entry_point_name="", user_id="trainer",
                status=RunStatus.to_string(RunStatus.RUNNING), start_time=start,
                end_time=None, deleted_time=None, source_version="",
                lifecycle_stage=LifecycleStage.ACTIVE))
        except MlflowException:
            if self.run_status(run_id) is None:
                raise
            return False
        return True

    def _insert(self, row) -> None:
        with self.store.ManagedSessionMaker(read_only=False) as session:
            session.add(row)

    def _log(self, run_id: str, *, params: dict, metrics: dict, tags: dict,
             timestamp: int) -> None:
        from mlflow.entities import Metric, Param, RunTag

        self.store.log_batch(
            run_id,
            metrics=[Metric(k, float(v), timestamp, 0) for k, v in sorted(metrics.items())
                     if isinstance(v, (int, float)) and not isinstance(v, bool)],
            params=[Param(k, str(v)) for k, v in sorted(params.items())],
            tags=[RunTag(k, str(v)) for k, v in sorted(tags.items()) if v != ""])

    def _finish(self, run_id: str, name: str, end: int) -> None:
        from mlflow.entities import RunStatus

        self.store.update_run_info(run_id, RunStatus.FINISHED, end, name)

    def _set_start(self, run_id: str, start: int) -> None:
        from mlflow.store.tracking.dbmodels.models import SqlRun

        with self.store.ManagedSessionMaker(read_only=False) as session:
            session.query(SqlRun).filter(SqlRun.run_uuid == run_id).update(
                {SqlRun.start_time: start})

    # ------------------------------------------------------------------ sync

    def sync(self, datastore: Datastore, prefix: str,
             progress: Callable[[str], None] = lambda _: None) -> SyncResult:
        """Import every complete published run under prefix that the store lacks."""
        present = known_runs(self.db_path)
        result = SyncResult()
        for run in sorted(list_published_runs(datastore, prefix), key=lambda r: r.created):
            if run.run_id in present:
                result.present += 1
                continue
            progress(f"importing run {run.run_id} ({run.logged.get('run_name', '')})")
            if self.import_run(datastore, run):
                result.imported.append(run.run_id)
            else:
                result.present += 1
        return result


def _millis(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _created_millis(created: str) -> int:
    import datetime as dt

    try:
        return int(dt.datetime.fromisoformat(created).timestamp() * 1000)
    except ValueError:
        return int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
