"""`python -m adf stage`: the trainer, its data and the deployer into the Custom activities'
folderPath.

The node downloads every blob under folderPath flattened into its working directory, so the
staged names are the files' base names. The packages `deploy-iris` runs (deployer/,
workspace/, adf/: Python files and the specs and data they read) cannot arrive as a tree,
so they are staged as one archive, `iris-packages.zip`, built from the checkout at staging
time with fixed timestamps (the same sources give the same bytes), which adf/deploy_task.py
unpacks on the node. Each blob carries the sha256 of its content in its metadata; an
unchanged file is not uploaded again.
"""
from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from workspace.datastore import Datastore, sha256_file
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT, Settings

STAGED_FILES = (REPO_ROOT / "trainer" / "main.py",
                REPO_ROOT / "trainer" / "requirements.txt",
                REPO_ROOT / "data" / "iris_csv.csv")
# deploy-iris's program; staged with the archive it unpacks (a sweep stages neither).
DEPLOY_TASK = REPO_ROOT / "adf" / "deploy_task.py"
SHA256_METADATA = "sha256"
ARCHIVE_NAME = "iris-packages.zip"  # adf/deploy_task.py's ARCHIVE
ARCHIVED_PACKAGES = ("deployer", "workspace", "adf")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold: the archive's bytes are its content's


@dataclass(frozen=True)
class StagedFile:
    source: Path
    blob: str
    size: int
    uploaded: bool


def split_folder_path(folder_path: str) -> tuple[str, str]:
    """`container/prefix` of a folderPath (the prefix may be empty)."""
    container, _, prefix = folder_path.strip("/").partition("/")
    if not container:
        raise ConfigError("The Custom activity's folderPath is empty.",
                          "Set typeProperties.folderPath in adf/pipeline.json to <container>/<folder>.")
    return container, prefix.strip("/")


def folder_datastore(settings: Settings, folder_path: str, credential=None) -> tuple[Datastore, str]:
    container, prefix = split_folder_path(folder_path)
    return Datastore.from_settings(replace(settings, container=container), credential), prefix


def build_archive(destination: Path, root: Path = REPO_ROOT) -> Path:
    """The packages of ARCHIVED_PACKAGES as one zip (no caches), reproducibly."""
    path = destination / ARCHIVE_NAME
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in ARCHIVED_PACKAGES:
            for source in sorted((root / package).rglob("*")):
                relative = source.relative_to(root)
                if not source.is_file() or "__pycache__" in relative.parts \
                        or source.suffix == ".pyc":
                    continue
                entry = zipfile.ZipInfo(relative.as_posix(), ZIP_TIME)
                entry.external_attr = 0o644 << 16
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, source.read_bytes())
    return path


def stage(store: Datastore, prefix: str, files=None,
          progress: Callable[[StagedFile, int, int], None] | None = None) -> list[StagedFile]:
    """Upload files (default: STAGED_FILES, DEPLOY_TASK and the packages' archive) flat under
    prefix, skipping those whose sha256 matches the blob's."""
    if files is None:
        with tempfile.TemporaryDirectory(prefix="iris-stage-") as scratch:
            return stage(store, prefix, (*STAGED_FILES, DEPLOY_TASK, build_archive(Path(scratch))),
                         progress)
    store.check()
    names = [p.name for p in files]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"Staged files collide once flattened: {', '.join(sorted(duplicates))}.")
    done = []
    for index, path in enumerate(files, 1):
        if not path.is_file():
            raise ConfigError(f"{path} is missing; it is staged for the Custom activity.",
                              "Restore it from git.")
        blob = f"{prefix}/{path.name}" if prefix else path.name
        digest = sha256_file(path)
        uploaded = (store.metadata(blob) or {}).get(SHA256_METADATA) != digest
        if uploaded:
            store.upload_file(path, blob, metadata={SHA256_METADATA: digest})
        entry = StagedFile(path, blob, path.stat().st_size, uploaded)
        done.append(entry)
        if progress:
            progress(entry, index, len(files))
    return done

