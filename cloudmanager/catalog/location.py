"""Where a catalog is and who uses it: server URLs (and their secrets), node ids, lock files.

Pure functions, no database driver: the configuration, the command line and
the manager use them whichever catalog is in force.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The URL schemes of a PostgreSQL catalog.
POSTGRES_SCHEMES = ("postgresql", "postgres")
#: What stands for a secret in a URL shown to anyone.
HIDDEN = "***"


def is_server_url(database: str | os.PathLike[str]) -> bool:
    """True when ``database`` names a PostgreSQL server ("postgresql://..." or
    "postgres://..."), False for the path of an SQLite file."""
    return isinstance(database, str) and database.lower().startswith(
        tuple(f"{scheme}://" for scheme in POSTGRES_SCHEMES))


def redact(database: str | os.PathLike[str]) -> str:
    """``database`` as it may be shown in a message or a log: a URL's password
    (in its user part or as a ``password=`` parameter) replaced by ``***``."""
    text = os.fspath(database)
    if not is_server_url(text):
        return text
    parts = urlsplit(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, where = netloc.rpartition("@")
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{HIDDEN}@{where}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, HIDDEN if key.lower() == "password" else value) for key, value in pairs],
                          safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def password_of(database: str) -> str | None:
    """The password written in a server URL, if any (to scrub it from error messages)."""
    parts = urlsplit(database)
    if parts.password:
        return parts.password
    found = [value for key, value in parse_qsl(parts.query) if key.lower() == "password"]
    return found[0] if found else None


def node_id(storage_path: str | os.PathLike[str]) -> str:
    """The default id of the node that keeps its cache in ``storage_path``:
    ``HOSTNAME:/absolute/cache/path``, stable as long as the cache stays where it is.

    Nodes sharing a server catalog keep their cache state apart under their ids.
    A cache that moves (``cm relocate``) gets another default id: a node whose
    cache may move should be given a name of its own (``node=``, or
    ``[catalog] node`` in the configuration).
    """
    return f"{socket.gethostname()}:{Path(storage_path).expanduser().resolve()}"


def cache_lock_path(database: str | os.PathLike[str], storage_path: str | os.PathLike[str]) -> Path:
    """The lock file the processes using one cache share: beside an SQLite catalog
    (``<catalog>.lock``), and beside the cache directory (``<cache>.lock``, never
    inside it) for a server catalog, which many caches share."""
    if is_server_url(database):
        cache = Path(storage_path).expanduser().resolve()
        return cache.with_name(f"{cache.name}.lock")
    return Path(f"{os.fspath(database)}.lock")


def quarantine_path(database: str | os.PathLike[str], storage_path: str | os.PathLike[str]) -> Path:
    """Where a cache's suspicious bytes are kept until purged: beside an SQLite catalog
    (``<catalog>.quarantine``), beside the cache directory (``<cache>.quarantine``)
    for a server catalog."""
    if is_server_url(database):
        cache = Path(storage_path).expanduser().resolve()
        return cache.with_name(f"{cache.name}.quarantine")
    return Path(f"{os.fspath(database)}.quarantine")


def catalog_identity(database: str | os.PathLike[str]) -> str:
    """The catalog as a cache folder's owner marker names it: an SQLite file's
    absolute path, a server URL without its secrets."""
    return redact(database) if is_server_url(database) else str(Path(database).expanduser().resolve())
