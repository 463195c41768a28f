"""Every file or folder of this repo that README.md, docs/*.md or a package README names
(in backticks or as a link) exists: a moved or renamed file must take its mentions along."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from workspace.settings import REPO_ROOT


def _tracked() -> set[str]:
    """The repo's files and the folders holding them."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    return set(files) | {str(parent) for f in files for parent in Path(f).parents
                         if str(parent) != "."}


TRACKED = _tracked()
TOP_LEVEL = {Path(p).parts[0] for p in TRACKED}
DOCS = sorted(p for p in TRACKED if p.endswith(".md") and not p.startswith("node_modules/")
              and (p == "README.md" or p.startswith("docs/") or p.endswith("/README.md")))
# `path`, `a command naming path`, `path::test_name`, `path:line`, [text](path#anchor)
MENTION = re.compile(r"`([^`]+)`|\]\(([^)\s]+)\)")
PATH = re.compile(r"^[\w.*-]+(/[\w.*-]+)*/?$")


def _mentions(doc: str) -> list[tuple[str, str]]:
    """(as written, repo path or glob) of each mention in doc that names a path of this repo."""
    found = []
    for match in _spans((REPO_ROOT / doc).read_text()):
        if match.group(2):  # a link: relative to the document
            target = re.split(r"#", match.group(2), maxsplit=1)[0]
            if "://" in target or not target or target.startswith("mailto:"):
                continue
            candidates = [(match.group(2), os.path.normpath(Path(doc).parent / target))]
        else:
            candidates = [(token, re.split(r"::|:\d", token, maxsplit=1)[0])
                          for token in match.group(1).split()]
        for written, candidate in candidates:
            candidate = candidate.rstrip("/")
            if not PATH.match(candidate) or "/" not in candidate:
                continue
            if Path(candidate).parts[0] not in TOP_LEVEL:
                continue  # not a path of the repo (`outputs/<job>/`, `.local/...`)
            found.append((written, candidate))
    return found


def _spans(text: str):
    """MENTION matches line by line; a line of a fenced code block is one `span`."""
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        yield from MENTION.finditer(f"`{line.replace('`', ' ')}`" if fenced else line)


def _exists(path: str) -> bool:
    if "*" in path:
        return any(REPO_ROOT.glob(path))
    return path in TRACKED or (REPO_ROOT / path).exists()


@pytest.mark.parametrize("doc", DOCS)
def test_every_repo_path_a_doc_names_exists(doc):
    missing = sorted({written for written, path in _mentions(doc) if not _exists(path)})
    assert missing == [], f"{doc} names paths that do not exist: {missing}"


def test_the_docs_name_paths_at_all():
    assert len(_mentions("docs/azure.md")) > 5 and len(_mentions("README.md")) > 5
