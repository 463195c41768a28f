"""The local target's MLflow registry (`<LOCAL_DIR>/mlflow.db`, SQLite) read without MLflow.

`status`, and a register-and-deploy whose model is registered already, only read the
registry: importing MLflow and opening its store (which checks the schema's migrations)
takes 2-3 s of CPU per command, the queries a few milliseconds. Registering a version
still goes through MLflow (`LocalBackend.client`).

The queries answer as MLflow's SQLAlchemy store does for the calls the backend made
(mlflow/store/model_registry/sqlalchemy_store.py: `search_model_versions`,
`search_registered_models`, `get_model_version_download_uri`), over its tables
(mlflow/store/model_registry/dbmodels/models.py): the default workspace only, soft-deleted
versions and prompts left out. A file this cannot read that way (another schema, locked
too long, corrupt) raises `RegistryUnreadable`, and the backend asks MLflow instead.
"""
from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# MLflow's values (installed mlflow): mlflow/utils/workspace_utils.py DEFAULT_WORKSPACE_NAME,
# mlflow/entities/model_registry/model_version_stages.py STAGE_DELETED_INTERNAL,
# mlflow/prompt/constants.py IS_PROMPT_TAG_KEY.
WORKSPACE = "default"
DELETED_STAGE = "Deleted_Internal"
PROMPT_TAG = "mlflow.prompt.is_prompt"

# A registered name any of whose versions (or the model itself) is a prompt is not a model.
_NOT_A_PROMPT = """NOT EXISTS (SELECT 1 FROM {tags} p WHERE p.workspace = {alias}.workspace
                   AND p.name = {alias}.name AND p.key = ? AND p.value = 'true')"""
_VERSIONS = f"""
    SELECT v.version, v.storage_location, v.source FROM model_versions v
    WHERE v.workspace = ? AND v.name = ? AND v.current_stage != ?
      AND {_NOT_A_PROMPT.format(tags="model_version_tags", alias="v")}"""
_WITH_TAG = """
      AND EXISTS (SELECT 1 FROM model_version_tags t WHERE t.workspace = v.workspace
                  AND t.name = v.name AND t.version = v.version AND t.key = ? AND t.value = ?)"""
_TAGS = "SELECT key, value FROM model_version_tags WHERE workspace = ? AND name = ? AND version = ?"


class RegistryUnreadable(Exception):
    """The registry file cannot be read without MLflow."""


@dataclass(frozen=True)
class RegistryVersion:
    """A registered model version: what the backend uses of MLflow's ModelVersion."""

    name: str
    version: str
    path: str  # MLflow's download URI: the storage location, else the source
    tags: dict = field(default_factory=dict)


class RegistryReader:
    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)

    def versions(self, name: str, tag: tuple[str, str] | None = None) -> list[RegistryVersion]:
        """The versions of registered model `name` (those with tag (key, value) if given),
        oldest first; none when there is no registry yet."""
        if not self.db_path.is_file():
            return []
        query, args = _VERSIONS, [WORKSPACE, name, DELETED_STAGE, PROMPT_TAG]
        if tag is not None:
            query, args = query + _WITH_TAG, args + list(tag)
        with self._connection() as db:
            rows = db.execute(query + " ORDER BY v.version", args).fetchall()
            return [RegistryVersion(name, str(version), storage or source or "",
                                    dict(db.execute(_TAGS, (WORKSPACE, name, version)).fetchall()))
                    for version, storage, source in rows]

    @contextmanager
    def _connection(self):
        """A read-only connection; SQLite's errors as RegistryUnreadable."""
        try:
            db = sqlite3.connect(f"{self.db_path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=10)
        except sqlite3.Error as exc:
            raise RegistryUnreadable(f"{self.db_path}: {exc}") from exc
        try:
            yield db
        except sqlite3.Error as exc:
            raise RegistryUnreadable(f"{self.db_path}: {exc}") from exc
        finally:
            db.close()
