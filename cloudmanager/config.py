"""The TOML configuration: where the catalog and the cache live, how big, which hosts.

    [catalog]
    path = "~/cloud/catalog.sqlite3"

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

Which file: ``--config PATH``, else ``$CM_CONFIG``, else ``config.toml`` in the
user config directory.  A file named by the first two must exist; with no file in
the user config directory the embedded defaults apply (catalog and cache in the
user data directory, 1 GiB, one folder host ``vault`` there).  Relative paths
are relative to the configuration file.  Errors name the file, the key and the
problem; secrets are never shown.
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

from .errors import CloudManagerError
from .hosts import Host, make_host
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
_HOST_KEYS = {"name", "url", "token", "token_env", "config", "keep_days", "description", "active"}


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

    def make(self) -> Host:
        """The host this record describes."""
        host = make_host(self.url, name=self.name, token=self.token, config=self.config)
        host.active = self.active
        host.keep_days = self.keep_days
        host.description = self.description
        return host


@dataclass(frozen=True)
class Config:
    """A node's configuration: from a file, or the embedded defaults."""

    catalog: Path
    cache: Path
    capacity: int = DEFAULT_CAPACITY
    hosts: tuple[HostConfig, ...] = ()
    path: Path | None = None  # the file it came from (None: embedded defaults)

    def make_hosts(self) -> list[Host]:
        """The configured hosts (names checked for uniqueness by the manager)."""
        return [record.make() for record in self.hosts]


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
        unknown = sorted(set(document) - {"catalog", "cache", "hosts"})
        if unknown:
            raise self.fail(unknown[0], "unknown section (known: catalog, cache, hosts)")
        base = defaults()
        catalog = self.table(document, "catalog", {"path"})
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
            catalog=self.location(catalog.get("path"), "catalog.path", base.catalog),
            cache=self.location(cache.get("path"), "cache.path", base.cache),
            capacity=capacity,
            hosts=hosts,
            path=self.path,
        )

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
        active = record.get("active", True)
        if not isinstance(active, bool):
            raise self.fail(f"{key}.active", "must be true or false")
        host = HostConfig(url=url, name=record.get("name"), token=token, config=config,
                          keep_days=keep_days, description=record.get("description", ""), active=active)
        try:
            made = host.make()  # the kind checks its URL and options now, with the file named
        except ValueError as exc:
            raise self.fail(f"{key}.url", str(exc)) from None
        made.close()
        return host, made.name


def set_cache_path(conf: Config, cache: Path) -> Path:
    """Record a new cache directory in the configuration file (comments kept);
    with the embedded defaults, write the user's configuration file.  Returns it."""
    import tomlkit

    path = conf.path or user_config_path()
    document = tomlkit.parse(path.read_text(encoding="utf-8")) if path.exists() else tomlkit.document()
    section = document.setdefault("cache", tomlkit.table())
    section["path"] = str(cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.cm-partial")
    partial.write_text(tomlkit.dumps(document), encoding="utf-8")
    os.replace(partial, path)
    return path
