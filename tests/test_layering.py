"""The import graph of the project's packages, read from every module's syntax tree
(imports inside functions count: a lazy import is still a dependency): no module reaches
itself through its imports, and the packages stay in their layers.

    workspace            the shared floor: settings, datastore, queues, processes, names
    adf → workspace      the pipelines and their runners
    deployer → adf, workspace
    trainer              runs alone on a Batch node: none of the project's packages
    terraform → bicep    the Terraform checks reuse the Bicep type fixture and .env writer
"""
from __future__ import annotations

import ast
from pathlib import Path

from workspace.settings import REPO_ROOT

PACKAGES = ("workspace", "adf", "deployer", "trainer", "bicep", "bench", "terraform")
# package → the project's packages it may import (the others have no rule here)
LAYERS = {"workspace": set(), "adf": {"workspace"}, "deployer": {"adf", "workspace"},
          "trainer": set(), "terraform": {"bicep"}}


def modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """module → the project's modules it imports (`from pkg import mod` names the module;
    `from pkg.mod import name` names pkg.mod)."""

    def ours(name: str) -> str | None:
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in found.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, up level - 1
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
        graph[module] = {target for name in names if (target := ours(name)) and target != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle once, as the path that closes it (depth-first search)."""
    found, state = [], {}  # state: 1 on the current path, 2 done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_module_imports_itself_through_others():
    circles = cycles(import_graph(modules()))
    assert not circles, "import circles:\n" + "\n".join(" → ".join(c) for c in circles)


def test_each_package_imports_only_the_layers_below_it():
    wrong = sorted(f"{module} imports {target}"
                   for module, targets in import_graph(modules()).items()
                   for target in targets
                   if (package := module.split(".")[0]) in LAYERS
                   and (other := target.split(".")[0]) != package and other not in LAYERS[package])
    assert not wrong, "\n".join(wrong)


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    """The reader itself: an import inside a function and a relative import are edges,
    and a circle through them is found."""
    (tmp_path / "workspace").mkdir()
    (tmp_path / "workspace" / "__init__.py").write_text("")
    (tmp_path / "workspace" / "a.py").write_text("def f():\n    from workspace import b\n")
    (tmp_path / "workspace" / "b.py").write_text("from .a import f\n")
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir()
    graph = import_graph(modules(tmp_path))
    assert graph["workspace.a"] == {"workspace", "workspace.b"}  # the package is imported too
    assert graph["workspace.b"] == {"workspace.a"}
    assert cycles(graph) == [["workspace.a", "workspace.b", "workspace.a"]]
