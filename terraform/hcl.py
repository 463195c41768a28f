"""The Terraform files of terraform/, parsed with python-hcl2 (no Terraform binary).

python-hcl2 keeps a string literal with its quotes ('"x"'), an expression as '${...}', and
marks each block with `__is_block__`; these helpers read that shape.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM_DIR = ROOT / "terraform"
BLOCK = "__is_block__"


class HclError(Exception):
    """A .tf file that does not parse (message names the file and the position)."""


def tf_files(directory: Path = TERRAFORM_DIR) -> list[Path]:
    return sorted(p for p in directory.rglob("*.tf") if ".terraform" not in p.parts)


def parse(path: Path) -> dict:
    return _parse(path.read_text(), str(path))


@lru_cache(maxsize=128)
def _parse(text: str, name: str) -> dict:
    import hcl2  # lazy: only the checks need it

    try:
        return hcl2.loads(text)
    except Exception as exc:  # lark's errors carry line and column
        raise HclError(f"{name}: does not parse as HCL: {str(exc).splitlines()[0]}") from exc


def unquote(value):
    """'"x"' -> 'x'; anything else unchanged (an expression stays '${...}')."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def is_block(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and v.get(BLOCK) for v in value)


def labelled(document: dict, kind: str) -> Iterator[tuple[list[str], dict]]:
    """(labels, body) of each `kind "a" "b" { ... }` block of a parsed file."""
    for entry in document.get(kind, []):
        yield from _walk_labels(entry, [])


def _walk_labels(node: dict, labels: list[str]):
    keys = [k for k in node if k != BLOCK]
    if node.get(BLOCK) and labels:
        yield labels, node
        return
    for key in keys:
        yield from _walk_labels(node[key], labels + [unquote(key)])


def resources(directory: Path = TERRAFORM_DIR) -> Iterator[tuple[Path, str, str, dict]]:
    """(file, resource type, name, body) of every `resource` block under `directory`."""
    for path in tf_files(directory):
        for (kind, name), body in labelled(parse(path), "resource"):
            yield path, kind, name, body
