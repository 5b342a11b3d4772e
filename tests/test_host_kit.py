"""The host kit: the pieces every host kind shares, and the imports that keep it apart."""

from __future__ import annotations

import ast
from pathlib import Path

import cloudmanager
from cloudmanager import layout

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


DIGEST = "ab" + "cd" + "e" * 60


def test_the_layout_places_and_reads_back_a_digest() -> None:
    assert layout.sharded(DIGEST) == f"ab/cd/{DIGEST}"
    assert layout.digest_at_end(f"/vault/{layout.sharded(DIGEST)}") == DIGEST
    assert layout.digest_at_end(f"remote:{layout.sharded(DIGEST)}", lead=":/") == DIGEST
    assert layout.placed("ab", "cd", DIGEST) and not layout.placed("ab", "ce", DIGEST)


def test_the_layout_refuses_what_is_not_a_digest_in_its_own_place() -> None:
    for bad in (f"/00/00/{DIGEST}", f"/vault/ab/cd/{DIGEST}\n", f"/vault/{DIGEST}",
                f"remote:{layout.sharded(DIGEST)}", f"/ab/cd/{DIGEST.upper()}",
                f"/ab/cd/{DIGEST}/x", "/ab/cd/abcd"):
        assert layout.digest_at_end(bad) is None, bad
