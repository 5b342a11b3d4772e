"""``cm_setup_db PATH``: create a catalog from schema.sql (harmless when it exists)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .catalog import Catalog, CatalogError


def main(argv: Sequence[str] | None = None) -> int:
    """Create (or bring up to date) the catalog at each path given; 0 on success."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print("usage: cm_setup_db PATH [PATH...]\n"
              "Create a cloudmanager catalog (SQLite) at PATH from schema.sql; "
              "an existing catalog is left as it is, or migrated if older.")
        return 0 if args else 2
    status = 0
    for path in args:
        try:
            catalog = Catalog(path)
            version = catalog.schema_version()
            catalog.close()
        except CatalogError as exc:
            print(f"cm_setup_db: {exc}", file=sys.stderr)
            status = 1
        else:
            print(f"{path}: catalog ready (schema version {version})")
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
