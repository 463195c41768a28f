"""`python -m adf stage`: the trainer and its data into the Custom activity's folderPath.

The node downloads every blob under folderPath flattened into its working directory, so the
staged names are the files' base names. Each blob carries the sha256 of its content in its
metadata; an unchanged file is not uploaded again.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from workspace.datastore import Datastore, sha256_file
from workspace.errors import ConfigError
from workspace.settings import REPO_ROOT, Settings

STAGED_FILES = (REPO_ROOT / "trainer" / "main.py",
                REPO_ROOT / "trainer" / "requirements.txt",
                REPO_ROOT / "data" / "iris_csv.csv")
SHA256_METADATA = "sha256"


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


def stage(store: Datastore, prefix: str, files=STAGED_FILES,
          progress: Callable[[StagedFile, int, int], None] | None = None) -> list[StagedFile]:
    """Upload files flat under prefix, skipping those whose sha256 matches the blob's."""
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

