"""The TOML configuration: where the catalog and the cache live, how big, which hosts.

    [catalog]
    path = "~/cloud/catalog.sqlite3"  # SQLite (the default), or a PostgreSQL catalog shared by
    # url = "postgresql://cm@db.example.org:5432/cloud"   # a fleet of nodes (or url_env =
    # node = "nas"                 # "CM_CATALOG_URL" when it holds a password); this node's id

    [cache]
    path = "~/cloud/cache"
    capacity = "20 GiB"            # human sizes accepted, or a number of bytes

    [[hosts]]                      # the seven fields of STORE.md's storage backends
    name = "vault"                 # a unique identifier (default: the kind's own)
    url = "file:///srv/vault"      # the kind and where
    token = "..."                  # or token_env = "VAULT_TOKEN"
    config = { retries = 5 }       # kind-specific settings
    keep_days = 30                 # copies older than this are removed by `cm expire`
    description = "the NAS"
    active = true                  # inactive: no new uploads, still used for downloads

    [serve]                        # `cm serve` and `cm link` (see ServeConfig)
    bind = "127.0.0.1:8976"
    token_env = "CM_TOKEN"         # or token = "..."; required to serve
    public_url = "https://files.example.org"   # the base of share links
    session_lifetime = "12h"       # a login on the page; limits: see ServeLimits
    metrics_bind = "127.0.0.1:9108"   # /metrics without the token, for a private scraper

Which file: ``--config PATH``, else ``$CM_CONFIG``, else ``config.toml`` in the
user config directory.  A file named by the first two must exist; with no file in
the user config directory the embedded defaults apply (catalog and cache in the
user data directory, 1 GiB, one folder host ``vault`` there).  Relative paths
are relative to the configuration file.  Errors name the file, the key and the
problem; secrets are never shown.

Data only: building the node a configuration describes (its hosts, key,
manager and serving secret) is build.py's.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from . import links
from .catalog.location import is_server_url, node_id, redact
from .erasure import Spread
from .errors import CloudManagerError
from .hosts import make_host
from .paths import APP_NAME, data_dir, default_host_urls

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CAPACITY = 1 << 30
CONFIG_ENV = "CM_CONFIG"
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_HOST_KEYS = {"name", "url", "token", "token_env", "config", "keep_days", "description", "active", "encrypt"}
_SERVE_KEYS = {"bind", "token", "token_env", "secret", "secret_env", "public_url", "tls_cert", "tls_key",
               "metrics_bind", "session_lifetime"}
DEFAULT_BIND = "127.0.0.1:8976"
#: The secret made once for a node that names none (``serve.secret``), beside config.toml.
SECRET_FILE = "serve.secret"
_BIND = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s/]+)):(\d{1,5})")


class ConfigError(CloudManagerError, ValueError):
    """A configuration file that cannot be used; the message names file, key and problem."""


def parse_size(value: object) -> int:
    """Bytes from ``1073741824``, ``"20 GiB"``, ``"500MB"``, ``"1.5 TiB"``; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("a size must be a number of bytes or a string like '20 GiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"not a size: {value!r} (write e.g. 1073741824, '500 MB' or '20 GiB')")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_size(size: int) -> str:
    """``1536`` -> ``'1.5 KiB'``: the size as people read it."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class HostConfig:
    """One ``[[hosts]]`` record."""

    url: str
    name: str | None = None
    token: str | None = field(default=None, repr=False)
    config: Mapping[str, Any] = field(default_factory=dict)
    keep_days: int | None = None
    description: str = ""
    active: bool = True
    encrypt: bool = False  # seal what this host receives (see crypto.py)


def parse_bind(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8976"`` or ``"[::1]:8976"`` -> (address, port); ValueError otherwise."""
    match = _BIND.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(3)) < 65536:
        raise ValueError(f"not an ADDRESS:PORT to listen on: {str(value)[:60]!r} (e.g. 127.0.0.1:8976)")
    return match.group(1) or match.group(2), int(match.group(3))


#: The shortest token a node serves with (a shorter one is guessed too soon).
MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class ServeLimits:
    """What one client may take of a serving node (keys of the ``[serve]`` table).

    ``max_connections`` (default: half the process's open-file limit, at most
    1024) and ``max_connections_per_client`` (default: a quarter of it) cap open
    connections; past them a connection gets 503 and is closed at once.
    ``header_timeout`` is the time a connection has to send a request's head (from
    when it opened, or when the last answer ended); ``keepalive_timeout`` how long
    an idle connection stays open between requests.  A body must keep pace: no
    wait for its next bytes longer than ``body_timeout``, and, after the first
    ``body_timeout`` seconds, at least ``body_min_rate`` bytes a second on average;
    else 408 and the connection is closed.  ``uploads`` PUTs and ``catalog_pushes``
    POSTs of catalog pages run at once, more get 503.  Wrong tokens are answered
    at most ``auth_failures_per_second`` a second per client address (after a
    burst of ``auth_failures_burst``), more get 429 with Retry-After.
    """

    max_connections: int | None = None
    max_connections_per_client: int | None = None
    header_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    body_timeout: float = 30.0
    body_min_rate: int = 8 * 1024
    uploads: int = 8
    catalog_pushes: int = 2
    auth_failures_per_second: float = 2.0
    auth_failures_burst: int = 10

    def connections(self, open_files: int) -> tuple[int, int]:
        """(max connections, max per client) for a process that may open ``open_files`` files."""
        total = self.max_connections or max(8, min(1024, open_files // 2))
        return total, self.max_connections_per_client or max(2, total // 4)


#: The ``[serve]`` keys of ServeLimits, and whether each is a whole number.
_LIMIT_KEYS = {name: kind is int for name, kind in (
    ("max_connections", int), ("max_connections_per_client", int), ("header_timeout", float),
    ("keepalive_timeout", float), ("body_timeout", float), ("body_min_rate", int), ("uploads", int),
    ("catalog_pushes", int), ("auth_failures_per_second", float), ("auth_failures_burst", int))}
_SERVE_KEYS |= set(_LIMIT_KEYS)
#: How long a login on the page lasts by default (``serve.session_lifetime``).
DEFAULT_SESSION_LIFETIME = 12 * 3600


@dataclass(frozen=True)
class ServeConfig:
    """The ``[serve]`` table: how ``cm serve`` serves this node, and how links are made.

    ``token`` guards every call but share links (required to serve);
    ``secret`` signs share links and the page's session cookie (when none is
    given, one is made once, see ``build.serve_secret``); ``public_url`` is the
    base URL of share links (default: ``http[s]://`` + ``bind``).
    """

    bind: str = DEFAULT_BIND
    token: str | None = field(default=None, repr=False)
    token_env: str | None = None  # named, but the variable was not set (token is None then)
    secret: str | None = field(default=None, repr=False)
    secret_env: str | None = None  # named, but the variable was not set (secret is None then)
    public_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    source: Path | None = None  # the configuration file, for messages
    limits: ServeLimits = field(default_factory=ServeLimits)
    metrics_bind: str | None = None  # a second address serving /metrics alone, without the token
    session_lifetime: int = DEFAULT_SESSION_LIFETIME  # seconds

    @property
    def tls(self) -> bool:
        """True when serving HTTPS."""
        return self.tls_cert is not None

    def base_url(self) -> str:
        """The base URL of share links: ``public_url``, else ``http[s]://BIND``."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{'https' if self.tls else 'http'}://{self.bind}"

    def where(self, key: str) -> str:
        """``FILE: serve.KEY`` for messages."""
        return f"{self.source or 'configuration'}: serve.{key}"


@dataclass(frozen=True)
class Config:
    """A node's configuration: from a file, or the embedded defaults."""

    catalog: Path
    cache: Path
    capacity: int = DEFAULT_CAPACITY
    hosts: tuple[HostConfig, ...] = ()
    path: Path | None = None  # the file it came from (None: embedded defaults)
    serve: ServeConfig = field(default_factory=ServeConfig)
    spread: Spread | None = None  # [upload] spread = "K/N": the default spread of uploads
    encrypt_all: bool = False  # [upload] encrypt = true: every host receives sealed bytes
    key_file: Path = field(default_factory=lambda: user_config_path().with_name("key"))  # [encryption]
    #: [catalog] url: a PostgreSQL catalog instead of the SQLite file ``catalog`` (may hold a password).
    catalog_url: str | None = field(default=None, repr=False)
    node: str | None = None  # [catalog] node: this node's id in a shared catalog (default: see node_id)

    @property
    def database(self) -> str | Path:
        """What the manager opens: the catalog URL, else the SQLite file."""
        return self.catalog_url or self.catalog

    @property
    def catalog_shown(self) -> str:
        """The catalog as it may be shown (a URL's password hidden)."""
        return redact(self.database)

    @property
    def encrypts(self) -> bool:
        """True when some host receives sealed bytes (a key is needed to upload)."""
        return self.encrypt_all or any(record.encrypt for record in self.hosts)


def user_config_path() -> Path:
    """``config.toml`` in the user config directory (e.g. ~/.config/cloudmanager)."""
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def defaults() -> Config:
    """The embedded defaults: everything in the user data directory."""
    base = data_dir()
    return Config(catalog=base / "catalog.sqlite3", cache=base / "cache",
                  hosts=tuple(HostConfig(url) for url in default_host_urls()))


def load(explicit: str | os.PathLike[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """The configuration to use: ``explicit``, else ``$CM_CONFIG``, else the user's file,
    else the embedded defaults.  Raises ConfigError."""
    environ = os.environ if environ is None else environ
    named = explicit if explicit is not None else environ.get(CONFIG_ENV) or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            source = "--config" if explicit is not None else f"${CONFIG_ENV}"
            raise ConfigError(f"{path}: no such configuration file (named by {source})")
        return parse(path, environ)
    path = user_config_path()
    return parse(path, environ) if path.is_file() else defaults()


def parse(path: Path, environ: Mapping[str, str]) -> Config:
    """Read and check one configuration file."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return _Reader(path, environ).config(document)


class _Reader:
    """Checks a parsed document key by key, naming what is wrong."""

    def __init__(self, path: Path, environ: Mapping[str, str]):
        self.path = path
        self.environ = environ

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def table(self, document: Mapping[str, Any], key: str, allowed: set[str]) -> Mapping[str, Any]:
        value = document.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def location(self, value: object, key: str, default: Path) -> Path:
        if value is None:
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a path (a string)")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.path.parent / path).resolve()

    def config(self, document: Mapping[str, Any]) -> Config:
        known = {"catalog", "cache", "hosts", "serve", "upload", "encryption"}
        unknown = sorted(set(document) - known)
        if unknown:
            raise self.fail(unknown[0], f"unknown section (known: {', '.join(sorted(known))})")
        base = defaults()
        catalog = self.catalog(self.table(document, "catalog", {"path", "url", "url_env", "node"}),
                               base.catalog)
        cache = self.table(document, "cache", {"path", "capacity"})
        try:
            capacity = parse_size(cache.get("capacity", DEFAULT_CAPACITY))
        except ValueError as exc:
            raise self.fail("cache.capacity", str(exc)) from None
        records = document.get("hosts", None)
        if records is None:
            hosts = base.hosts
        elif not isinstance(records, list):
            raise self.fail("hosts", "must be an array of tables: [[hosts]]")
        else:
            checked = [self.host(record, f"hosts[{i}]") for i, record in enumerate(records)]
            names = [name for _, name in checked]
            for i, name in enumerate(names):
                if name in names[:i]:
                    raise self.fail(f"hosts[{i}]", f"two hosts are named {name!r} (set name = ...)")
            hosts = tuple(record for record, _ in checked)
        return Config(
            **catalog,
            cache=self.location(cache.get("path"), "cache.path", base.cache),
            capacity=capacity,
            hosts=hosts,
            path=self.path,
            serve=self.serve(self.table(document, "serve", _SERVE_KEYS)),
            **self.upload(self.table(document, "upload", {"spread", "encrypt"}),
                          self.table(document, "encryption", {"key_file"}), base.key_file),
        )

    def catalog(self, table: Mapping[str, Any], default: Path) -> dict[str, Any]:
        """The ``[catalog]`` table, checked: an SQLite path, or a PostgreSQL URL (given, or
        read from the variable ``url_env`` names), and the node's id.  A URL is never shown."""
        given = [key for key in ("path", "url", "url_env") if key in table]
        if len(given) > 1:
            raise self.fail("catalog", f"give one of path, url and url_env, not {' and '.join(given)}")
        for key in ("url", "url_env", "node"):
            if key in table and (not isinstance(table[key], str) or not table[key].strip()):
                raise self.fail(f"catalog.{key}", "must be a non-empty string")
        url = table.get("url")
        if "url_env" in table:
            url = self.environ.get(table["url_env"])
            if not url:
                raise self.fail("catalog.url_env", f"the environment variable {table['url_env']} is not set")
        if url is not None and not is_server_url(url):
            source = "catalog.url" if "url" in table else f"the variable {table['url_env']}"
            raise self.fail("catalog.url" if "url" in table else "catalog.url_env",
                            f"{source} must be a postgresql:// or postgres:// URL")
        return {"catalog": self.location(table.get("path"), "catalog.path", default),
                "catalog_url": url, "node": table.get("node")}

    def upload(self, table: Mapping[str, Any], encryption: Mapping[str, Any],
               key_file: Path) -> dict[str, Any]:
        """The ``[upload]`` and ``[encryption]`` tables, checked: spread, encrypt, key file."""
        spread = None
        if "spread" in table:
            try:
                spread = Spread.parse(table["spread"])
            except ValueError as exc:
                raise self.fail("upload.spread", str(exc)) from None
        encrypt = table.get("encrypt", False)
        if not isinstance(encrypt, bool):
            raise self.fail("upload.encrypt", "must be true or false")
        return {"spread": spread, "encrypt_all": encrypt,
                "key_file": self.location(encryption.get("key_file"), "encryption.key_file", key_file)}

    def serve(self, table: Mapping[str, Any]) -> ServeConfig:
        """The ``[serve]`` table, checked."""
        for key in _SERVE_KEYS - {"tls_cert", "tls_key", "session_lifetime", *_LIMIT_KEYS}:
            if key in table and (not isinstance(table[key], str) or not table[key]):
                raise self.fail(f"serve.{key}", "must be a non-empty string")
        for key in ("bind", "metrics_bind"):
            try:
                if key in table or key == "bind":
                    parse_bind(table.get(key, DEFAULT_BIND))
            except ValueError as exc:
                raise self.fail(f"serve.{key}", str(exc)) from None
        bind = table.get("bind", DEFAULT_BIND)
        lifetime_given = table.get("session_lifetime", DEFAULT_SESSION_LIFETIME)
        try:
            if isinstance(lifetime_given, bool) or not isinstance(lifetime_given, (str, int)):
                raise ValueError("write a duration such as 12h, 30m or 3600")
            lifetime = links.parse_duration(str(lifetime_given))
        except ValueError as exc:
            raise self.fail("serve.session_lifetime", str(exc)) from None
        values: dict[str, str | None] = {}
        for key in ("token", "secret"):
            if key in table and f"{key}_env" in table:
                raise self.fail("serve", f"give {key} or {key}_env, not both")
            env = table.get(f"{key}_env")
            values[key] = (self.environ.get(env) or None) if env else table.get(key)
            values[f"{key}_env"] = env if env and values[key] is None else None
        public_url = table.get("public_url")
        if public_url is not None and not public_url.startswith(("http://", "https://")):
            raise self.fail("serve.public_url", "must start with http:// or https://")
        cert, cert_key = (self.location(table[name], f"serve.{name}", Path()) if name in table else None
                          for name in ("tls_cert", "tls_key"))
        if (cert is None) != (cert_key is None):
            raise self.fail("serve", "give both tls_cert and tls_key, or neither")
        return ServeConfig(bind=bind, token=values["token"], token_env=values["token_env"],
                           secret=values["secret"], secret_env=values["secret_env"], public_url=public_url,
                           tls_cert=cert, tls_key=cert_key, source=self.path, limits=self.limits(table),
                           metrics_bind=table.get("metrics_bind"), session_lifetime=lifetime)

    def limits(self, table: Mapping[str, Any]) -> ServeLimits:
        """The limits of the ``[serve]`` table: positive numbers (whole where counted)."""
        values: dict[str, Any] = {}
        for key, whole in _LIMIT_KEYS.items():
            if key not in table:
                continue
            value = table[key]
            if key == "body_min_rate" and isinstance(value, str):
                try:
                    value = parse_size(value)
                except ValueError as exc:
                    raise self.fail(f"serve.{key}", str(exc)) from None
            kinds = (int,) if whole else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not 0 < value < 1e9:
                what = "a whole number" if whole else "a number (seconds, or per second)"
                raise self.fail(f"serve.{key}", f"must be {what} above 0")
            values[key] = value
        return ServeLimits(**values)

    def host(self, record: object, key: str) -> tuple[HostConfig, str]:
        """One checked host record, and the name its host gets."""
        if not isinstance(record, dict):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(record) - _HOST_KEYS)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_HOST_KEYS))})")
        url = record.get("url")
        if not isinstance(url, str) or "://" not in url:
            raise self.fail(f"{key}.url", "must be a host URL such as file:///srv/vault")
        for text_key in ("name", "token", "token_env", "description"):
            if text_key in record and not isinstance(record[text_key], str):
                raise self.fail(f"{key}.{text_key}", "must be a string")
        if "token" in record and "token_env" in record:
            raise self.fail(key, "give token or token_env, not both")
        token = record.get("token")
        if "token_env" in record:
            token = self.environ.get(record["token_env"])
            if token is None:
                raise self.fail(f"{key}.token_env",
                                f"the environment variable {record['token_env']} is not set")
        config = record.get("config", {})
        if not isinstance(config, dict):
            raise self.fail(f"{key}.config", "must be a table")
        keep_days = record.get("keep_days")
        if keep_days is not None and (isinstance(keep_days, bool) or not isinstance(keep_days, int)
                                      or keep_days < 1):
            raise self.fail(f"{key}.keep_days", "must be a whole number of days, 1 or more")
        active, encrypt = record.get("active", True), record.get("encrypt", False)
        for flag, value in (("active", active), ("encrypt", encrypt)):
            if not isinstance(value, bool):
                raise self.fail(f"{key}.{flag}", "must be true or false")
        host = HostConfig(url=url, name=record.get("name"), token=token, config=config,
                          keep_days=keep_days, description=record.get("description", ""), active=active,
                          encrypt=encrypt)
        return host, self.host_name(host, key)

    def host_name(self, record: HostConfig, key: str) -> str:
        """The name the record's host gets, from its kind, which checks the URL and the
        options now, with the file named: the host is made and closed at once, never
        used (building the node's hosts is build.py's)."""
        try:
            made = make_host(record.url, name=record.name, token=record.token, config=record.config)
        except ValueError as exc:
            raise self.fail(f"{key}.url", str(exc)) from None
        made.close()
        return made.name


def set_cache_path(conf: Config, cache: Path) -> Path:
    """Record a new cache directory in the configuration file (comments kept);
    with the embedded defaults, write the user's configuration file.  Returns it.

    A node on a shared (PostgreSQL) catalog with no ``[catalog] node`` keeps the
    id it had (its default follows the cache directory): it is written too, in
    the same atomic replacement, so the node finds its cache state again.
    """
    import tomlkit

    path = conf.path or user_config_path()
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    section = document.setdefault("cache", tomlkit.table())
    section["path"] = str(cache)
    if conf.catalog_url is not None and conf.node is None:
        document.setdefault("catalog", tomlkit.table())["node"] = node_id(conf.cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.cm-partial")
    partial.write_text(tomlkit.dumps(document), encoding="utf-8")
    os.replace(partial, path)
    return path
