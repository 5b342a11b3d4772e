"""The house's structure: no import circles between the package's modules, and the
faces (the command line, the server, peer sync) use the manager, never the catalog."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "cloudmanager"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the module at ``path`` imports (under TYPE_CHECKING too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            submodules = [f"{base}.{alias.name}" for alias in node.names]
            # ``from . import x`` of a submodule x does not use the package's __init__
            targets = submodules + ([base] if any(sub not in modules for sub in submodules) else [])
        else:
            continue
        found |= {target for target in targets if target in modules and target != name}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_imports() -> None:
    edges = graph()
    assert "cloudmanager.transfers" in edges["cloudmanager.manager"]
    assert "cloudmanager.catalog.base" in edges["cloudmanager.catalog.sqlite"]


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert cycles(graph()) == []


def test_a_circle_is_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


#: What the manager uses; none of them may reach back into it.
HELPERS = ("cloudmanager.spreading", "cloudmanager.maintenance", "cloudmanager.transfers",
           "cloudmanager.locators", "cloudmanager.cache", "cloudmanager.fetching", "cloudmanager.payload")


def test_no_helper_of_the_manager_imports_it() -> None:
    edges = graph()
    assert [name for name in HELPERS if "cloudmanager.manager" in edges[name]] == []


#: The faces: argument parsing and printing, HTTP, the peer exchange. They call the manager.
FACES = [PACKAGE / "cli", PACKAGE / "server", PACKAGE / "peersync.py"]


def test_the_faces_never_reach_into_the_catalog() -> None:
    files = [path for face in FACES for path in ([face] if face.is_file() else sorted(face.rglob("*.py")))]
    reaching = [f"{path.relative_to(PACKAGE)}:{number}" for path in files
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if ".catalog." in line.split("#")[0]]
    assert len(files) > 10 and reaching == []
