"""Building a node from its configuration: the one place where config becomes objects.

config.py reads the TOML into dataclasses and checks it (data only).  This
module makes what a configuration describes: each host from its record (its
kind, name, token, options and flags; sealed with the node's key where it
encrypts), the node's key, the CloudManager (its node id and catalog folder),
and the secret that signs ``cm serve``'s share links and session cookies.  The
``cm`` command (cli.py) and the server (server/settings.py) both build here.
"""

from __future__ import annotations

import logging
import os
import secrets

from .config import SECRET_FILE, Config, ConfigError, HostConfig, ServeConfig, user_config_path
from .crypto import Key, KeyFileError
from .hosts import Host
from .hosts import make_host as host_of_kind
from .hosts.encrypted import encrypting
from .manager import CloudManager

log = logging.getLogger(__name__)


def make_host(record: HostConfig) -> Host:
    """The host one ``[[hosts]]`` record describes (not sealed: see :func:`make_hosts`).
    Raises ValueError for a bad URL or option (config.parse has checked them already)."""
    host = host_of_kind(record.url, name=record.name, token=record.token, config=record.config)
    host.active = record.active
    host.keep_days = record.keep_days
    host.description = record.description
    return host


def make_hosts(conf: Config, key: Key | None = None) -> list[Host]:
    """The configured hosts (names checked for uniqueness by the manager); those that
    encrypt seal with ``key`` (None: the node has no key, their copies are unreadable
    and uploads to them fail, saying so)."""
    return [encrypting(host, key) if record.encrypt or conf.encrypt_all else host
            for record, host in ((record, make_host(record)) for record in conf.hosts)]


def load_key(conf: Config) -> Key | None:
    """The node's key from ``conf.key_file`` (None when there is no such file).

    A key file that cannot be read is an error only when some host encrypts;
    otherwise (the key would only read other nodes' sealed copies) it is
    skipped with a warning, so that it cannot stop every command."""
    if not conf.key_file.exists():
        return None
    try:
        return Key.load(conf.key_file)
    except KeyFileError as exc:
        if conf.encrypts:
            raise
        log.warning("the key file is not used: %s", exc)
        return None


def open_manager(conf: Config) -> CloudManager:
    """The node ``conf`` describes, opened: its catalog (the SQLite file's folder created),
    its cache, its hosts, its key (which also reads other nodes' sealed copies, when they
    share it), its default spread and its node id."""
    if conf.catalog_url is None:
        conf.catalog.parent.mkdir(parents=True, exist_ok=True)
    key = load_key(conf)
    return CloudManager(conf.database, conf.cache, conf.capacity, hosts=make_hosts(conf, key), key=key,
                        spread=conf.spread, node=conf.node)


def serve_secret(serve: ServeConfig) -> str:
    """The secret that signs share links and session cookies.

    ``serve.secret``, else the variable named by ``serve.secret_env`` (unset:
    ConfigError), else a random secret made once and kept in ``serve.secret``
    in the user config directory (mode 0600), so links stay valid across
    restarts.
    """
    if serve.secret:
        return serve.secret
    if serve.secret_env:
        raise ConfigError(f"{serve.where('secret_env')}: the environment variable "
                          f"{serve.secret_env} is not set")
    path = user_config_path().with_name(SECRET_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{SECRET_FILE}.{secrets.token_hex(8)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(partial, path)  # complete, and never replaces one made meanwhile
        except FileExistsError:
            pass
        finally:
            partial.unlink(missing_ok=True)
    try:
        secret = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the node's secret: {exc}") from None
    if len(secret) < 32:
        raise ConfigError(f"{path}: the node's secret is too short (remove the file to make a new one)")
    return secret
