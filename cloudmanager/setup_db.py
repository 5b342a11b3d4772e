"""``cm_setup_db PATH|URL``: create a catalog (harmless when it exists).

A path makes an SQLite catalog from schema.sql; a ``postgresql://`` URL makes
the schema of schema_pg.sql in that (empty) PostgreSQL database.  An existing
catalog is left as it is, or migrated if older.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .catalog import CatalogError, open_catalog, redact


def main(argv: Sequence[str] | None = None) -> int:
    """Create (or bring up to date) the catalog at each path or URL given; 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: cm_setup_db PATH|URL [PATH|URL...]\n"
              "Create a cloudmanager catalog: SQLite at PATH (from schema.sql), or PostgreSQL\n"
              "at a postgresql://user@host:port/db URL (from schema_pg.sql); an existing\n"
              "catalog is left as it is, or migrated if older.")
        return 0 if args else 2
    status = 0
    for database in args:
        shown = redact(database)
        try:
            catalog = open_catalog(database)
            version = catalog.schema_version()
            catalog.close()
        except (CatalogError, ImportError) as exc:
            print(f"cm_setup_db: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"{shown}: catalog ready (schema version {version})")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
