"""The host kit: the pieces every host kind shares, and the imports that keep it apart."""

from __future__ import annotations

import ast
from pathlib import Path

import cloudmanager

PACKAGE = Path(cloudmanager.__file__).parent


def _imports(module: Path) -> set[str]:
    """The cloudmanager modules a source file imports (relative imports resolved)."""
    name = ".".join(module.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name if module.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
            target = ".".join([*base, node.module] if node.module else base) if node.level else node.module
            if target:
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
    return {item for item in found if item.startswith("cloudmanager")}


def test_the_node_client_and_the_cache_import_nothing_of_the_hosts() -> None:
    for module in ("nodeclient.py", "cache.py"):
        hosts = {name for name in _imports(PACKAGE / module) if name.startswith("cloudmanager.hosts")}
        assert not hosts, f"{module} imports {sorted(hosts)}"
