#!/usr/bin/env python3
"""Rebuild tests/fixtures/azurerm_schema.json from the jsii assembly of the azurerm provider.

    python scripts/extract_azurerm_schema.py PATH/.jsii [--out FILE]

PATH/.jsii is `package/.jsii` of the npm package @cdktf/provider-azurerm (14.23.1 is
generated from hashicorp/azurerm 4.55.0: `npm pack @cdktf/provider-azurerm@14.23.1` and
untar it outside the repository). The assembly is generated from the provider's own schema:
each resource is a class whose summary links `docs/resources/<name>`, its arguments are the
properties of the `<Class>Config` struct, each property's docs link ends in
`#<hcl_argument_name>`, `optional` absent means required, and a nested block is a struct
type whose summary reads `<block_name> block.` (a struct without that summary is an
"attribute as block": `name { ... }` or `name = [...]`, flagged `attribute`).

The fixture keeps, for every `azurerm_*` resource terraform/ declares, its arguments
(name -> required) and nested blocks (recursively, same shape), plus the names of all the
provider's resources so a misspelt resource type is told from one missing in the fixture.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terraform import schema_check  # noqa: E402  (the resource types the checker reads)

OUT = ROOT / "tests" / "fixtures" / "azurerm_schema.json"
RESOURCE_LINK = re.compile(r"\{@link (https://registry\.terraform\.io/providers/hashicorp/azurerm/"
                           r"([0-9.]+)/docs/resources/([a-z0-9_]+)) (azurerm_[a-z0-9_]+)\}")
ARGUMENT_LINK = re.compile(r"/docs/resources/[a-z0-9_]+#([a-z0-9_]+) ")
BLOCK_SUMMARY = re.compile(r"^([a-z0-9_]+) block\.$")


class Assembly:
    def __init__(self, path: Path):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: cannot read the jsii assembly ({exc}).")
        if data.get("name") != "@cdktf/provider-azurerm":
            raise SystemExit(f"{path}: not the assembly of @cdktf/provider-azurerm ({data.get('name')}).")
        self.types: dict = data["types"]
        self.package = f"{data['name']}@{data['version']}"
        self.classes: dict[str, str] = {}  # azurerm_x -> class fqn
        self.provider_version = ""
        for fqn, typ in self.types.items():
            match = RESOURCE_LINK.search(typ.get("docs", {}).get("summary", ""))
            if typ.get("kind") == "class" and match and match.group(4) == f"azurerm_{match.group(3)}":
                self.classes[match.group(4)] = fqn
                self.provider_version = match.group(2)

    def resource(self, name: str) -> dict:
        fqn = self.classes.get(name)
        if fqn is None:
            raise SystemExit(f"{name}: no such resource in {self.package}.")
        return self.struct(f"{fqn}Config")

    def struct(self, fqn: str) -> dict:
        """{"arguments": {hcl name: required}, "blocks": {hcl name: {... "required": bool}}}."""
        arguments, blocks = {}, {}
        for prop in self.types[fqn].get("properties", []):
            docs = prop.get("docs", {})
            text = f"{docs.get('summary', '')} {docs.get('remarks', '')}"
            link = ARGUMENT_LINK.search(text + " ")
            if not link:
                raise SystemExit(f"{fqn}.{prop['name']}: no docs link naming the HCL argument.")
            hcl, required = link.group(1), not prop.get("optional", False)
            block = BLOCK_SUMMARY.match(docs.get("summary", ""))
            nested = self.struct_of(prop["type"])
            if nested:  # a block; without the "block." summary also writable as `name = [...]`
                blocks[hcl] = {**self.struct(nested), "required": required}
                if not block:
                    blocks[hcl]["attribute"] = True
            else:
                arguments[hcl] = required
        return {"arguments": dict(sorted(arguments.items())), "blocks": dict(sorted(blocks.items()))}

    def struct_of(self, typ) -> str | None:
        """The struct (datatype interface) a property's type is, or holds a list of."""
        if isinstance(typ, dict):
            fqn = typ.get("fqn")
            if fqn in self.types and self.types[fqn].get("datatype"):
                return fqn
            for value in typ.values():
                found = self.struct_of(value)
                if found:
                    return found
        elif isinstance(typ, list):
            for value in typ:
                found = self.struct_of(value)
                if found:
                    return found
        return None


def build(assembly: Assembly, resources: list[str]) -> dict:
    return {
        "about": "Arguments and nested blocks of the azurerm resources terraform/ declares, from the "
                 "jsii assembly of @cdktf/provider-azurerm (generated from the provider's own schema). "
                 "Rebuilt by scripts/extract_azurerm_schema.py; do not edit by hand. "
                 "true = required.",
        "source": {"package": assembly.package, "provider": f"hashicorp/azurerm {assembly.provider_version}"},
        "resources": {name: assembly.resource(name) for name in sorted(resources)},
        "resource_names": sorted(assembly.classes),
    }


def render(fixture: dict) -> str:
    """One resource per line: small, and a rebuild shows as a readable diff."""
    head = {k: v for k, v in fixture.items() if k not in ("resources", "resource_names")}
    text = json.dumps(head, indent=1)[:-2]
    resources = ",\n".join(f"  {json.dumps(name)}: {json.dumps(body, separators=(',', ':'))}"
                           for name, body in fixture["resources"].items())
    names = json.dumps(fixture["resource_names"], separators=(",", ":"))
    return f'{text},\n "resources": {{\n{resources}\n }},\n "resource_names": {names}\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jsii", type=Path, help="package/.jsii of @cdktf/provider-azurerm")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--show", metavar="RESOURCE", help="print one resource's schema and exit")
    args = parser.parse_args(argv)
    assembly = Assembly(args.jsii)
    if args.show:
        print(json.dumps(assembly.resource(args.show), indent=1))
        return 0
    fixture = build(assembly, schema_check.declared_resource_types())
    args.out.write_text(render(fixture))
    print(f"{args.out}: {len(fixture['resources'])} resources of {fixture['source']['provider']} "
          f"({fixture['source']['package']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
