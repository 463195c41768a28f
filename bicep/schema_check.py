"""Check bicep/ and the ADF JSON against Azure's published resource types.

    python -m bicep.schema_check [--fixture tests/fixtures/azure_types.json]

The types come from Azure/bicep-types-az (generated from the REST API specs), reduced to
what this repository uses by scripts/extract_azure_types.py. Every resource declaration in
bicep/ (parsed with pycep) and every ADF pipeline, linked service and credential in adf/ is
walked; each *literal* value is checked for an unknown property, a missing required one, a
value outside an enum, a write to a read-only property and a string's pattern and length.
Expressions (parameters, function calls, interpolations, ADF `@...`, `__KEY__` placeholders)
are skipped; a variable is checked through its value, an `@allowed` parameter through each
allowed value, a conditional through both branches.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
BICEP_DIR = ROOT / "bicep"
ADF_DIR = ROOT / "adf"
FIXTURE = ROOT / "tests" / "fixtures" / "azure_types.json"
REQUIRED, READ_ONLY = 1, 2
# Bicep's own keywords in a resource body (not ARM properties).
BICEP_KEYWORDS = {"parent", "scope", "dependsOn"}
ADF_API = "2018-06-01"
ADF_KINDS = {  # folder under adf/ -> resource type its JSON files are bodies of
    "": f"Microsoft.DataFactory/factories/pipelines@{ADF_API}",
    "linkedServices": f"Microsoft.DataFactory/factories/linkedservices@{ADF_API}",
    "credentials": f"Microsoft.DataFactory/factories/credentials@{ADF_API}",
    "triggers": f"Microsoft.DataFactory/factories/triggers@{ADF_API}",
}
SKIP = object()  # an expression: nothing to check


class SchemaError(Exception):
    """The fixture is missing or lacks a type the templates use."""


@dataclass(frozen=True)
class Problem:
    where: str  # file and resource
    path: str  # property path inside the resource
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.path}: {self.message}"


class Schema:
    """The fixture: resource bodies and the types they reference (bicep-types format)."""

    def __init__(self, fixture: dict):
        self.types = fixture["types"]
        self.resources = {name.lower(): ref for name, ref in fixture["resources"].items()}
        self.commit = fixture["source"]["commit"]

    @classmethod
    def load(cls, path: Path = FIXTURE) -> "Schema":
        return load_fixture(cls, path, "resource-type", "scripts/extract_azure_types.py")

    def get(self, ref: dict) -> dict:
        return self.types[int(ref["$ref"][2:])]

    def body(self, resource: str) -> dict:
        ref = self.resources.get(resource.lower())
        if ref is None:
            raise SchemaError(f"{resource} is not in the fixture; add it by running "
                              "scripts/extract_azure_types.py on a clone of Azure/bicep-types-az.")
        return self.get(self.get(ref)["body"])


def load_fixture(cls, path: Path, what: str, script: str):
    """`cls` built from the JSON fixture at `path`; SchemaError naming the script that rebuilds it."""
    try:
        return cls(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise SchemaError(f"{path}: cannot read the {what} fixture ({exc}); rebuild it with {script}.") from exc


class Walker:
    """Checks one value against one type; `resolve` turns a raw value into a literal,
    a list of alternative literals (branches), or SKIP."""

    def __init__(self, schema: Schema, where: str, resolve: Callable):
        self.schema, self.where, self.resolve = schema, where, resolve
        self.problems: list[Problem] = []

    def report(self, path: str, message: str) -> None:
        self.problems.append(Problem(self.where, path or "(body)", message))

    def check(self, value, typ: dict, path: str, nullable: bool = False) -> None:
        for literal in self.resolve(value):
            if literal is None and nullable:
                continue  # Bicep: null leaves an optional property unset
            self.check_literal(literal, typ, path)

    def check_literal(self, value, typ: dict, path: str) -> None:
        kind = typ["$type"]
        if kind == "ObjectType":
            self.check_object(value, typ.get("properties", {}), typ.get("additionalProperties"), path)
        elif kind == "DiscriminatedObjectType":
            self.check_discriminated(value, typ, path)
        elif kind == "ArrayType":
            self.check_array(value, typ, path)
        elif kind != "AnyType":
            message = scalar_problem(self.schema, value, typ)
            if message:
                self.report(path, message)

    def check_array(self, value, typ: dict, path: str) -> None:
        if not isinstance(value, list):
            return self.report(path, f"expects an array, not {describe(value)}")
        for i, item in enumerate(value):
            self.check(item, self.schema.get(typ["itemType"]), f"{path}[{i}]")

    def check_object(self, value, properties: dict, additional, path: str, strict: bool = True) -> None:
        if not isinstance(value, dict):
            return self.report(path, f"expects an object, not {describe(value)}")
        for name, spec in properties.items():
            if spec["flags"] & REQUIRED and name not in value and strict:
                self.report(join(path, name), "required property is missing")
        for name, item in value.items():
            if "${" in name or (not path and name in BICEP_KEYWORDS):
                continue
            spec = properties.get(name)
            if spec is None:
                if additional is not None:
                    self.check(item, self.schema.get(additional), join(path, name))
                elif strict:
                    known = ", ".join(sorted(n for n, p in properties.items() if writable(p))) or "none"
                    self.report(join(path, name), f"unknown property (known: {known})")
                continue
            if not writable(spec):
                self.report(join(path, name), "read-only property: the service sets it, a template cannot")
                continue
            self.check(item, self.schema.get(spec["type"]), join(path, name), nullable=not spec["flags"] & REQUIRED)

    def check_discriminated(self, value, typ: dict, path: str) -> None:
        if not isinstance(value, dict):
            return self.report(path, f"expects an object, not {describe(value)}")
        key, base = typ["discriminator"], typ.get("baseProperties", {})
        choices = self.resolve(value.get(key, SKIP)) if key in value else []
        if key not in value:
            self.report(join(path, key), f"required property is missing (one of {quoted(typ['elements'])})")
        for choice in choices:
            if choice not in typ["elements"]:
                self.report(join(path, key), f"{choice!r} is not one of {quoted(typ['elements'])}")
            elif typ["elements"][choice] is None:
                raise SchemaError(f"{typ['name']} {choice!r} is not in the fixture; rebuild it with "
                                  "scripts/extract_azure_types.py (it keeps the values the repository uses).")
            else:
                element = self.schema.get(typ["elements"][choice])
                self.check_object(value, {**base, **element.get("properties", {})},
                                  element.get("additionalProperties"), path)
        if not choices and key in value:  # the kind is an expression: check what all kinds share
            self.check_object(value, base, None, path, strict=False)


def writable(spec: dict) -> bool:
    return bool(spec["flags"] & REQUIRED or not spec["flags"] & READ_ONLY)


def scalar_problem(schema: Schema, value, typ: dict) -> str | None:
    """Why a literal does not fit a scalar or union type (None: it fits)."""
    kind = typ["$type"]
    if kind == "UnionType":
        elements = [schema.get(e) for e in typ["elements"]]
        if any(scalar_problem(schema, value, e) is None for e in elements if e["$type"] not in
               ("ObjectType", "DiscriminatedObjectType", "ArrayType")):
            return None
        literals = [e["value"] for e in elements if e["$type"] == "StringLiteralType"]
        return f"{value!r} is not one of {quoted(literals)}"
    if kind == "StringLiteralType":
        return None if value == typ["value"] else f"{value!r} is not {typ['value']!r}"
    if kind == "StringType":
        return string_problem(value, typ)
    if kind == "BooleanType":
        return None if isinstance(value, bool) else f"expects true or false, not {describe(value)}"
    if kind == "IntegerType":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expects an integer, not {describe(value)}"
        if value < typ.get("minValue", value) or value > typ.get("maxValue", value):
            return f"{value} is outside {typ.get('minValue', '-inf')}..{typ.get('maxValue', 'inf')}"
        return None
    if kind == "NullType":
        return None if value is None else f"expects null, not {describe(value)}"
    return f"expects {kind}, not {describe(value)}"


def string_problem(value, typ: dict) -> str | None:
    if not isinstance(value, str):
        return f"expects a string, not {describe(value)}"
    if len(value) < typ.get("minLength", 0) or len(value) > typ.get("maxLength", len(value)):
        return f"{value!r} is {len(value)} characters, outside {typ.get('minLength', 0)}..{typ.get('maxLength')}"
    if "pattern" in typ and not re.search(typ["pattern"], value):
        return f"{value!r} does not match the pattern {typ['pattern']}"
    return None


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def quoted(values) -> str:
    return ", ".join(repr(v) for v in values)


def describe(value) -> str:
    return f"{type(value).__name__} {json.dumps(value)[:60]}"


# ------------------------------------------------------------------ Bicep (pycep parse tree)

def parse_bicep(path: Path) -> dict:
    return _parse(path.read_text())


@lru_cache(maxsize=64)
def _parse(text: str) -> dict:
    from pycep import BicepParser  # lazy: only the checks need it

    return BicepParser().parse(text=text)


def bicep_files(directory: Path = BICEP_DIR) -> list[Path]:
    return sorted(directory.rglob("*.bicep"))


def declared_resource_types(directory: Path = BICEP_DIR) -> list[str]:
    """Every `type@apiVersion` declared in the Bicep files (what the fixture must hold)."""
    found = {f"{r['type']}@{r['api_version']}" for path in bicep_files(directory)
             for r in parse_bicep(path).get("resources", {}).values()}
    return sorted(found)


class BicepResolver:
    """pycep gives an identifier as a `BicepElement` (a str subclass) and a quoted literal as
    a plain str: a variable is followed to its value, an `@allowed` parameter stands for each
    allowed value, any other identifier is an expression; a `[for ...]` property value is an
    array of its body."""

    def __init__(self, template: dict):
        from pycep.models import BicepElement

        self.identifier = BicepElement
        self.variables = {k: v["value"] for k, v in template.get("variables", {}).items()}
        self.allowed = {name: next((d["argument"] for d in p.get("decorators", []) if d["type"] == "allowed"), [])
                        for name, p in template.get("parameters", {}).items()}

    def __call__(self, value, depth: int = 0) -> list:
        if isinstance(value, self.identifier):
            if value in self.variables and depth < 5:
                return self(self.variables[value], depth + 1)
            return list(self.allowed.get(value, []))
        if isinstance(value, str):
            return [] if "${" in value else [value]
        if isinstance(value, dict) and set(value) == {"operator"}:
            operator = value["operator"]
            if operator["type"] == "conditional":
                operands = operator["operands"]
                return self(operands["true_value"], depth) + self(operands["false_value"], depth)
            return []
        if isinstance(value, dict) and set(value) == {"function"}:
            return []
        if isinstance(value, dict) and "loop_type" in value and "config" in value:
            return [[value["config"]]]  # a `[for ...]` array: its item is the loop's body
        return [value]


def resource_bodies(template: dict) -> Iterator[tuple[str, dict, dict]]:
    """(symbol, statement, body) of each non-`existing` resource, through `if` and loops."""
    for symbol, statement in template.get("resources", {}).items():
        body = statement["config"]
        while isinstance(body, dict) and ("loop_type" in body or "condition" in body) and "config" in body:
            body = body["config"]
        yield symbol, statement, body


def check_bicep_file(schema: Schema, path: Path) -> list[Problem]:
    template = parse_bicep(path)
    resolve = BicepResolver(template)
    problems: list[Problem] = []
    for symbol, statement, body in resource_bodies(template):
        resource = f"{statement['type']}@{statement['api_version']}"
        walker = Walker(schema, f"{relative(path)} {symbol} ({resource})", resolve)
        typ = schema.body(resource)
        if statement.get("existing"):
            walker.check({"name": body.get("name")}, {"$type": "ObjectType", "properties":
                         {"name": typ["properties"]["name"]}}, "")
        else:
            walker.check(body, typ, "")
        problems += walker.problems
    return problems


# ------------------------------------------------------------------ ADF JSON (adf/)

def adf_files(directory: Path = ADF_DIR) -> list[tuple[Path, str]]:
    """(file, resource type) of every ADF definition: adf/*.json pipelines, and the folders."""
    found = []
    for folder, resource in ADF_KINDS.items():
        found += [(p, resource) for p in sorted((directory / folder).glob("*.json"))]
    return found


def resolve_adf(value) -> list:
    """ADF values: `@...` expressions and deploy-time `__KEY__` placeholders are skipped."""
    if isinstance(value, str) and ((value.startswith("@") and not value.startswith("@@"))
                                   or re.search(r"__[A-Z][A-Z0-9_]*__", value)):
        return []
    return [value]


def check_adf_file(schema: Schema, path: Path, resource: str) -> list[Problem]:
    try:
        document = json.loads(path.read_text())
    except ValueError as exc:
        return [Problem(relative(path), "(file)", f"not valid JSON: {exc}")]
    walker = Walker(schema, f"{relative(path)} ({resource})", resolve_adf)
    walker.check(document, schema.body(resource), "")
    return walker.problems


def relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def check_all(schema: Schema, bicep_dir: Path = BICEP_DIR, adf_dir: Path = ADF_DIR) -> list[Problem]:
    problems = []
    for path in bicep_files(bicep_dir):
        problems += check_bicep_file(schema, path)
    for path, resource in adf_files(adf_dir):
        problems += check_adf_file(schema, path, resource)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args(argv)
    try:
        schema = Schema.load(args.fixture)
        problems = check_all(schema)
    except SchemaError as exc:
        print(f"schema check: {exc}", file=sys.stderr)
        return 2
    return report(problems, f"Azure/bicep-types-az@{schema.commit[:12]}")


def cli_parser(prog: str, doc: str, epilog: str) -> argparse.ArgumentParser:
    """A command's parser: the description is its module docstring's first paragraph, the
    epilog (examples, exit codes) keeps its line breaks."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0], epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def report(problems: list, against: str) -> int:
    """Print each problem and a verdict line; the exit code (1: problems, 0: none)."""
    for problem in problems:
        print(problem)
    verdict = f"{len(problems)} problem(s)" if problems else "no problems"
    print(f"schema check against {against}: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
