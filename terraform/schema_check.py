"""Check terraform/ against the azurerm provider's schema and Azure's resource types.

    python -m terraform.schema_check [--fixture tests/fixtures/azurerm_schema.json]

Every .tf file must parse (python-hcl2). Every `azurerm_*` resource must be a resource of
the provider, and each of its arguments and nested blocks (also inside `dynamic` blocks)
one the provider declares, with every required argument and block present; the schema is
that of hashicorp/azurerm 4.55, extracted from the provider's jsii assembly by
scripts/extract_azurerm_schema.py. Every `azapi_resource` must name a `type@apiVersion` of
the Bicep type fixture (tests/fixtures/azure_types.json, the one bicep/ is checked against)
and its literal body is checked against that type as bicep/schema_check.py checks Bicep.
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

from bicep import schema_check as azure_types
from terraform.hcl import TERRAFORM_DIR, HclError, is_block, resources, tf_files, unquote

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "azurerm_schema.json"
# Terraform's meta-arguments and blocks, valid in any resource.
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}
AZAPI_REQUIRED = ("type", "name", "parent_id")


# The same errors and problems as the Bicep check.
SchemaError = azure_types.SchemaError
Problem = azure_types.Problem


class ProviderSchema:
    def __init__(self, fixture: dict):
        self.resources: dict = fixture["resources"]
        self.names = set(fixture["resource_names"])
        self.source: dict = fixture["source"]

    @classmethod
    def load(cls, path: Path = FIXTURE) -> "ProviderSchema":
        return azure_types.load_fixture(cls, path, "azurerm schema", "scripts/extract_azurerm_schema.py")


def declared_resource_types(directory: Path = TERRAFORM_DIR) -> list[str]:
    """Every `azurerm_*` resource type declared under `directory` (what the fixture must hold)."""
    return sorted({kind for _, kind, _, _ in resources(directory) if kind.startswith("azurerm_")})


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_body(body: dict, spec: dict, where: str, path: str, top: bool = False) -> list[Problem]:
    problems = []
    arguments, blocks = spec["arguments"], spec["blocks"]
    present = set()
    for name, value in body.items():
        if name.startswith("__") or (top and name in META_ARGUMENTS | META_BLOCKS):
            continue  # python-hcl2's markers (__is_block__, __comments__) and meta-arguments
        at = f"{path}.{name}" if path else name
        if name == "dynamic" and isinstance(value, list):
            for entry in value:
                for label, dynamic in entry.items():
                    if label.startswith("__"):
                        continue
                    block = unquote(label)
                    present.add(block)
                    if block not in blocks:
                        problems.append(Problem(where, f"{path}.dynamic {block}".lstrip("."),
                                                f"unknown block{_suggest(block, blocks)}"))
                        continue
                    for content in dynamic.get("content", []):
                        problems += check_body(content, blocks[block], where, f"{path}.{block}" if path else block)
            continue
        present.add(name)
        if is_block(value):
            if name not in blocks:
                hint = " (an argument: write `name = ...`)" if name in arguments else _suggest(name, blocks)
                problems.append(Problem(where, at, f"unknown block{hint}"))
                continue
            for item in value:
                problems += check_body(item, blocks[name], where, at)
        elif name in blocks and blocks[name].get("attribute"):
            continue  # an attribute-as-block written as `name = [...]`: an expression
        elif name not in arguments:
            hint = " (a block: write `name { ... }`)" if name in blocks else _suggest(name, list(arguments) + list(blocks))
            problems.append(Problem(where, at, f"unknown argument{hint}"))
    for name, required in arguments.items():
        if required and name not in present:
            problems.append(Problem(where, f"{path}.{name}" if path else name, "required argument is missing"))
    for name, block in blocks.items():
        if block["required"] and name not in present:
            problems.append(Problem(where, f"{path}.{name}" if path else name, "required block is missing"))
    return problems


def check_azurerm(schema: ProviderSchema, kind: str, body: dict, where: str) -> list[Problem]:
    if kind not in schema.resources:
        if kind in schema.names:
            raise SchemaError(f"{kind} is not in the fixture; rebuild it with scripts/extract_azurerm_schema.py.")
        return [Problem(where, "(resource)", f"{kind} is not a resource of {schema.source['provider']}"
                        f"{_suggest(kind, schema.names)}")]
    return check_body(body, schema.resources[kind], where, "", top=True)


def literal(value):
    """An HCL value as a literal for the Bicep-type walker: expressions become SKIP."""
    if isinstance(value, dict):
        return {unquote(k): literal(v) for k, v in value.items() if not k.startswith("__")}
    if isinstance(value, list):
        return [literal(v) for v in value]
    if isinstance(value, str):
        text = unquote(value)
        return azure_types.SKIP if text is value or "${" in text else text
    return value


def resolve_literal(value) -> list:
    return [] if value is azure_types.SKIP else [value]


def check_azapi(types: azure_types.Schema, body: dict, where: str) -> list[Problem]:
    problems = [Problem(where, name, "required argument is missing") for name in AZAPI_REQUIRED if name not in body]
    resource = unquote(body.get("type", ""))
    if "${" in resource or "@" not in resource:
        return problems + [Problem(where, "type", "must be a literal 'Namespace/type@apiVersion'")]
    try:
        typ = types.body(resource)
    except azure_types.SchemaError as exc:
        return problems + [Problem(where, "type", str(exc))]
    value = literal(body.get("body", {}))
    if isinstance(value, dict):  # a literal object: check what is literal in it
        walker = azure_types.Walker(types, f"{where} ({resource})", resolve_literal)
        walker.check_object(value, typ.get("properties", {}), None, "body", strict=False)
        problems += walker.problems
    return problems


def check_all(schema: ProviderSchema, types: azure_types.Schema,
              directory: Path = TERRAFORM_DIR) -> list[Problem]:
    if not tf_files(directory):  # a wrong --dir would otherwise pass with "no problems"
        raise HclError(f"{directory}: no .tf files (give the folder of the Terraform stack)")
    problems = []
    for path, kind, name, body in resources(directory):
        where = f"{azure_types.relative(path)} {kind}.{name}"
        if kind.startswith("azurerm_"):
            problems += check_azurerm(schema, kind, body, where)
        elif kind == "azapi_resource":
            problems += check_azapi(types, body, where)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = azure_types.cli_parser(
        "python -m terraform.schema_check", __doc__,
        "example:\n  python -m terraform.schema_check            # terraform/, exit 0: no problems\n"
               "  python -m terraform.schema_check --dir copy  # another copy of the stack\n\n"
               "exit codes: 0 no problems, 1 problems (listed), 2 a fixture or a .tf file that cannot be read")
    parser.add_argument("--fixture", type=Path, default=FIXTURE, help="azurerm schema fixture (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=TERRAFORM_DIR, help="the Terraform stack (default: terraform/)")
    args = parser.parse_args(argv)
    try:
        schema = ProviderSchema.load(args.fixture)
        problems = check_all(schema, azure_types.Schema.load(), args.dir)
    except (SchemaError, HclError) as exc:
        print(f"schema check: {exc}", file=sys.stderr)
        return 2
    return azure_types.report(problems, f"{schema.source['provider']} ({schema.source['package']})")


if __name__ == "__main__":
    sys.exit(main())
