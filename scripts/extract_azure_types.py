#!/usr/bin/env python3
"""Rebuild tests/fixtures/azure_types.json from a local copy of Azure/bicep-types-az.

    python scripts/extract_azure_types.py PATH [--rev REV] [--out FILE]

PATH is a checkout (with `generated/`) or a bare clone (read with `git show REV:...`).
The fixture holds, for every `type@apiVersion` declared in bicep/ (and the Data Factory
types adf/*.json are checked against, and the Azure ML resources the deployer makes), only
the type definitions reachable from those resources, without descriptions, renumbered into
one list. Discriminated unions keep every discriminator value but the body only of the
values this repository uses (any `"type"` value in adf/**/*.json or in bicep/), so an
unknown value is still told from a known one.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bicep import schema_check  # noqa: E402  (the same list of resource types the checker reads)

REQUIRED, READ_ONLY = 1, 2  # property flags of bicep-types
OUT = ROOT / "tests" / "fixtures" / "azure_types.json"
UPSTREAM = "Azure/bicep-types-az"
KEEP_KEYS = ("$type", "name", "value", "discriminator", "minLength", "maxLength", "pattern",
             "minValue", "maxValue", "sensitive", "flags")
# Resource types checked although no .bicep declares them: the Azure ML resources the
# deployer makes through azure-ai-ml (their name patterns are what the service accepts;
# tests/deployer/test_azureml_rules.py checks deployer/azureml_rules.py against them).
EXTRA_RESOURCES: tuple[str, ...] = (
    "Microsoft.MachineLearningServices/workspaces/batchEndpoints@2024-10-01",
    "Microsoft.MachineLearningServices/workspaces/batchEndpoints/deployments@2024-10-01",
    "Microsoft.MachineLearningServices/workspaces/jobs@2024-10-01",
)
# ADF control-flow activities kept although no pipeline uses them yet (a fan-out pipeline
# wraps the Custom activity in a ForEach), so adding one does not need a rebuild.
ALWAYS_KEEP = {"ForEach", "ExecutePipeline", "IfCondition", "Until", "SetVariable", "Wait", "Fail"}


class Source:
    """Files of the upstream repository, from a work tree or a bare clone."""

    def __init__(self, path: Path, rev: str):
        self.path, self.rev = path, rev
        self.bare = not (path / "generated").is_dir()
        self.commit = self._git("rev-parse", rev if self.bare else "HEAD").strip()
        listing = (self._git("ls-tree", "-r", "--name-only", rev, "generated/") if self.bare else
                   "\n".join(p.relative_to(path).as_posix() for p in (path / "generated").rglob("types.json")))
        self.files = [line for line in listing.splitlines() if line.endswith("/types.json")]

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True,
                              capture_output=True, text=True).stdout

    def read(self, relative: str) -> list:
        text = self._git("show", f"{self.rev}:{relative}") if self.bare else (self.path / relative).read_text()
        return json.loads(text)

    def candidates(self, resource: str) -> list[str]:
        """types.json files that may define `Namespace/type@version` (by folder name)."""
        kind, version = resource.split("@")
        namespace = kind.split("/")[0].lower()
        return [f for f in self.files if f.lower().endswith(f"/{namespace}/{version}/types.json")]


def find(source: Source, resource: str) -> tuple[str, list, int]:
    """(file, its types, index of the ResourceType) of one `type@apiVersion`."""
    for relative in source.candidates(resource):
        types = source.read(relative)
        for index, entry in enumerate(types):
            if entry["$type"] == "ResourceType" and entry["name"].lower() == resource.lower():
                return relative, types, index
    raise SystemExit(f"{resource}: not found under generated/ of {source.path} at {source.commit}.")


class Compactor:
    """Copies reachable types into one list, renumbering `$ref`s and dropping prose."""

    def __init__(self, used_discriminators: set[str]):
        self.types: list = []
        self.seen: dict[tuple[str, int], int] = {}
        self.interned: dict[str, int] = {}
        self.used = used_discriminators

    def ref(self, relative: str, types: list, ref: dict) -> dict:
        match = re.fullmatch(r"#/(\d+)", ref["$ref"])
        if not match:
            raise SystemExit(f"{relative}: cross-file reference {ref['$ref']} is not supported.")
        return {"$ref": f"#/{self.copy(relative, types, int(match.group(1)))}"}

    def member(self, relative: str, types: list, spec: dict) -> dict:
        """A property's type; only read-only ones lose theirs (a template never sets them)."""
        flags = spec.get("flags", 0)
        if flags & READ_ONLY and not flags & REQUIRED:
            return {"$ref": f"#/{self.intern({'$type': 'AnyType'})}"}
        return self.ref(relative, types, spec["type"])

    def intern(self, out: dict) -> int:
        text = json.dumps(out, sort_keys=True)
        if text not in self.interned:
            self.interned[text] = len(self.types)
            self.types.append(out)
        return self.interned[text]

    def copy(self, relative: str, types: list, index: int) -> int:
        key = (relative, index)
        if key not in self.seen:
            entry = types[index]
            if entry["$type"] in ("ObjectType", "DiscriminatedObjectType", "ResourceType"):
                self.seen[key] = len(self.types)  # before its members: objects may be cyclic
                self.types.append({})
                self.types[self.seen[key]].update(self.convert(relative, types, entry))
            else:  # scalars, unions, arrays: shared by content (the same enum in many files)
                self.seen[key] = self.intern(self.convert(relative, types, entry))
        return self.seen[key]

    def convert(self, relative: str, types: list, entry: dict) -> dict:
        out = {k: v for k, v in entry.items() if k in KEEP_KEYS}
        for name in ("body", "itemType", "additionalProperties"):
            if name in entry:
                out[name] = self.ref(relative, types, entry[name])
        if "elements" in entry and isinstance(entry["elements"], list):  # UnionType
            out["elements"] = [self.ref(relative, types, e) for e in entry["elements"]]
        elif "elements" in entry:  # DiscriminatedObjectType: keep every value, bodies only of used ones
            out["elements"] = {value: (self.ref(relative, types, e) if value in self.used else None)
                               for value, e in sorted(entry["elements"].items())}
        for name in ("properties", "baseProperties"):
            if name in entry:
                out[name] = {prop: {"type": self.member(relative, types, spec), "flags": spec.get("flags", 0)}
                             for prop, spec in entry[name].items()}
        return out


def used_discriminators() -> set[str]:
    """Every `"type"` value in adf/**/*.json and every quoted literal in bicep/."""
    values: set[str] = set(ALWAYS_KEEP)

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                values.add(node["type"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    for path in sorted((ROOT / "adf").rglob("*.json")):
        walk(json.loads(path.read_text()))
    for path in sorted((ROOT / "bicep").rglob("*.bicep")):
        values.update(re.findall(r"'([A-Za-z][A-Za-z0-9]*)'", path.read_text()))
    return values


def build(source: Source) -> dict:
    resources = sorted(set(schema_check.declared_resource_types()) | set(EXTRA_RESOURCES)
                       | set(schema_check.ADF_KINDS.values()))
    compactor = Compactor(used_discriminators())
    index, files = {}, set()
    for resource in resources:
        relative, types, position = find(source, resource)
        files.add(relative)
        index[resource] = {"$ref": f"#/{compactor.copy(relative, types, position)}"}
    return {
        "about": "Resource type definitions from Azure/bicep-types-az (generated from the "
                 "azure-rest-api-specs swagger), reduced to what bicep/, adf/ and deployer/ use. "
                 "Rebuilt by "
                 "scripts/extract_azure_types.py; do not edit by hand.",
        "source": {"repository": UPSTREAM, "commit": source.commit, "files": sorted(files)},
        "flags": {"Required": 1, "ReadOnly": 2, "WriteOnly": 4, "DeployTimeConstant": 8},
        "resources": index,
        "types": compactor.types,
    }


def render(fixture: dict) -> str:
    """JSON with one type per line: small, and a rebuild shows as a readable diff."""
    head = {k: v for k, v in fixture.items() if k != "types"}
    text = json.dumps(head, indent=1)[:-2]
    lines = ",\n".join(json.dumps(t, separators=(",", ":")) for t in fixture["types"])
    return f'{text},\n "types": [\n{lines}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="local clone of Azure/bicep-types-az (work tree or bare)")
    parser.add_argument("--rev", default="HEAD", help="revision to read from a bare clone (default HEAD)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not args.checkout.is_dir():
        raise SystemExit(f"{args.checkout}: no such directory (a clone of {UPSTREAM}).")
    fixture = build(Source(args.checkout, args.rev))
    args.out.write_text(render(fixture))
    print(f"{args.out}: {len(fixture['resources'])} resource types, {len(fixture['types'])} types, "
          f"{UPSTREAM}@{fixture['source']['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
