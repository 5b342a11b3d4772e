"""The catalog: one interface (base.py), two implementations.

* ``SQLiteCatalog`` (sqlite.py): the embedded default, a file per node.
* ``PostgresCatalog`` (postgres.py): a PostgreSQL server a fleet of nodes
  shares; needs psycopg 3 (``pip install 'cloudmanager[postgres]'``), imported
  only when such a catalog is opened.

``open_catalog(database, node=...)`` picks the one ``database`` names.
``Catalog`` stays the name of the SQLite catalog, for existing imports.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .base import Admission, CatalogBase, CatalogError, HostHealth, Listed, MergeResult
from .location import cache_lock_path, catalog_identity, is_server_url, node_id, quarantine_path, redact
from .sqlite import SCHEMA_VERSION, SQLiteCatalog, _statements, schema_text

if TYPE_CHECKING:
    from .postgres import PostgresCatalog

Catalog = SQLiteCatalog

__all__ = [
    "SCHEMA_VERSION", "Admission", "Catalog", "CatalogBase", "CatalogError", "HostHealth", "Listed",
    "MergeResult", "PostgresCatalog", "SQLiteCatalog", "_statements", "cache_lock_path", "catalog_identity",
    "is_server_url", "node_id", "open_catalog", "quarantine_path", "redact", "schema_text",
]


def open_catalog(database: str | os.PathLike[str], *, node: str | None = None) -> CatalogBase:
    """Open (creating or migrating) the catalog ``database`` names.

    A "postgresql://" or "postgres://" URL opens a PostgreSQL catalog for the
    node ``node`` (see :func:`node_id` for a default; None opens it for
    administration only, as ``cm_setup_db`` does: no cache state); anything else
    is the path of an SQLite catalog, where ``node`` is not needed (one node per
    file).  Raises CatalogError.
    """
    if is_server_url(database):
        from .postgres import PostgresCatalog

        return PostgresCatalog(os.fspath(database), node=node)
    return SQLiteCatalog(database)


def __getattr__(name: str) -> Any:
    """``PostgresCatalog`` on first use (so that psycopg is needed only by its users)."""
    if name == "PostgresCatalog":
        from .postgres import PostgresCatalog

        return PostgresCatalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
