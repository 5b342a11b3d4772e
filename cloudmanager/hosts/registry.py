"""Turn a host URL (``file:///srv/vault``, ``sftp://user@nas/backup``...) into a host.

Each kind of host is a module with a ``from_spec(spec: HostSpec) -> Host``
function, found by URL scheme: first among the kinds registered in this
process (:func:`register`), then the built-in kinds (imported only when used,
so a kind whose optional dependency is missing fails with a message naming
the extra to install), then the entry point group ``cloudmanager.hosts``
(third-party kinds: ``myscheme = "mypackage.myhost:from_spec"``).

A ``name=`` query parameter names the host (``file:///mnt/a/data?name=nas``);
otherwise each kind picks a name that is the same on every node using the
same host.  Other query parameters are options of the kind, merged with the
``config`` mapping given in the configuration file; a kind declares the options
it understands as data (:class:`Option`) and reads them with :func:`read_options`.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from .base import Host


@dataclass(frozen=True)
class HostSpec:
    """Everything a kind needs to build a host: its URL, name, options and secret."""

    url: str = field(repr=False)  # may hold a password: never shown
    parts: SplitResult = field(repr=False)
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    token: str | None = field(default=None, repr=False)  # a password or key, never shown

    @property
    def path(self) -> str:
        """The URL's path, percent-decoded."""
        return unquote(self.parts.path)

    @property
    def host(self) -> str:
        """The URL's host name (empty when it has none)."""
        return self.parts.hostname or ""

    @property
    def netloc(self) -> str:
        """The URL's network location (user@host:port), percent-decoded."""
        return unquote(self.parts.netloc)


T = TypeVar("T")


class BadOption(ValueError):
    """Raised by an option converter: why a value is bad, as it follows the option's name
    ("must be a number")."""


@dataclass(frozen=True)
class Option:
    """One option of a host kind, declared as data (as rclone backends declare theirs).

    ``convert`` turns the value given (a URL query's text, or a TOML value) into
    what the kind uses, raising :class:`BadOption` (or ValueError, TypeError) for
    a bad one; ``default`` stands for an absent or empty value.  A ``convert`` of
    None passes the value on as it is, and only when it is given (options such as
    ``retries`` that another reader, :meth:`RetryPolicy.from_options`, converts).
    """

    name: str
    convert: Callable[[Any], Any] | None = str
    default: Any = None
    help: str = ""


def option(options: Mapping[str, Any], key: str, convert: Callable[[Any], T], default: T, kind: str) -> T:
    """One option of a host kind, converted (``int``, ``float``...); ``default`` when
    absent or empty; ValueError naming the kind and the option when it is bad."""
    value = options.get(key)
    if value is None or value == "":
        return default
    try:
        return convert(value)
    except BadOption as exc:
        raise ValueError(f"the {kind} option {key} {exc}") from None
    except (TypeError, ValueError):
        raise ValueError(f"the {kind} option {key} has a bad value: {str(value)[:40]!r}") from None


def read_options(options: Mapping[str, Any], declared: Iterable[Option], kind: str) -> dict[str, Any]:
    """Every option ``declared`` by a kind, converted (or its default), from the
    ``options`` given; ValueError naming the first one given that is not declared."""
    table = {item.name: item for item in declared}
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise ValueError(f"unknown {kind} option {unknown[0]!r} (known: {', '.join(sorted(table))})")
    read: dict[str, Any] = {}
    for name, item in table.items():
        if item.convert is not None:
            read[name] = option(options, name, item.convert, item.default, kind)
        elif name in options:
            read[name] = options[name]
    return read


#: The options every network kind has: read by :meth:`~cloudmanager.retry.RetryPolicy.from_options`.
RETRY_OPTIONS = (
    Option("retries", None, help="how many times a transient failure is tried again (default 3)"),
    Option("retry_delay", None, help="seconds of the first backoff, doubled at each retry"),
)


def seconds(value: Any) -> float:
    """An option converter: a positive, finite number of seconds."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadOption("must be a number") from None
    if not math.isfinite(number) or number <= 0:
        raise BadOption("must be positive (a finite number of seconds)")
    return number


def file_path(value: Any) -> str:
    """An option converter: a file path (text, not a number or a table)."""
    if not isinstance(value, str | os.PathLike):
        raise BadOption("must be a file path")
    return os.fspath(value)


def secret_from_env(variable: Any, option_name: str) -> str | None:
    """The secret held by the environment variable ``variable``, as an option
    (``option_name``, e.g. ``password_env``) names it; None when it names none;
    ValueError when that variable is not set."""
    if not variable:
        return None
    secret = os.environ.get(str(variable))
    if secret is None:
        raise ValueError(f"the environment variable {variable} ({option_name}) is not set")
    return secret


Factory = Callable[[HostSpec], Host]
_REGISTERED: dict[str, Factory] = {}
#: Built-in kinds: scheme -> (module, optional extra that provides its libraries).
_BUILTIN: dict[str, tuple[str, str | None]] = {
    "file": ("cloudmanager.hosts.folder", None),
    "memory": ("cloudmanager.hosts.memory", None),
    "plowshare": ("cloudmanager.hosts.plowshare", None),
    "sftp": ("cloudmanager.hosts.sftp", "sftp"),
    "webdav": ("cloudmanager.hosts.webdav", "webdav"),
    "webdavs": ("cloudmanager.hosts.webdav", "webdav"),
    "s3": ("cloudmanager.hosts.s3", "s3"),
    "rclone": ("cloudmanager.hosts.rclone", None),
    "cm": ("cloudmanager.hosts.node", "node"),
    "cms": ("cloudmanager.hosts.node", "node"),
}
ENTRY_POINT_GROUP = "cloudmanager.hosts"


def register(scheme: str, factory: Factory) -> None:
    """Make ``scheme://...`` URLs build hosts with ``factory(spec)``."""
    _REGISTERED[scheme] = factory


def schemes() -> list[str]:
    """The URL schemes known (registered, built in, or installed as plugins), sorted."""
    plugins = {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(set(_REGISTERED) | set(_BUILTIN) | plugins)


def _factory(scheme: str) -> Factory:
    if scheme in _REGISTERED:
        return _REGISTERED[scheme]
    if scheme in _BUILTIN:
        module_name, extra = _BUILTIN[scheme]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'cloudmanager[{extra}]'" if extra else "reinstall cloudmanager"
            raise ValueError(f"the {scheme}:// host kind needs a library that is missing "
                             f"({exc.name}): {hint}") from None
        factory: Factory = module.from_spec
        return factory
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == scheme:
            loaded: Factory = point.load()
            return loaded
    raise ValueError(f"unknown host kind {scheme!r}: known kinds are {', '.join(schemes())}")


def make_host(spec: str | Host, *, name: str | None = None, token: str | None = None,
              config: Mapping[str, Any] | None = None) -> Host:
    """A host from its URL (a Host object is returned as it is).

    ``name``, ``token`` and ``config`` come from a configuration file's host
    record; a ``name=`` in the URL's query is used when ``name`` is not given.
    Raises ValueError naming the problem for an unknown kind or a bad URL.
    """
    if isinstance(spec, Host):
        return spec
    if not isinstance(spec, str) or "://" not in spec:
        raise ValueError(f"not a host URL: {str(spec)[:100]!r} (expected e.g. file:///srv/vault)")
    parts = urlsplit(spec)
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    options.update(config or {})
    url_name = options.pop("name", None)
    return _factory(parts.scheme)(HostSpec(spec, parts, name or url_name, options, token))


def make_hosts(specs: Iterable[str | Host]) -> list[Host]:
    """Hosts from URLs; raises ValueError when two would have the same name."""
    hosts = [make_host(spec) for spec in specs]
    seen: set[str] = set()
    for host in hosts:
        if host.name in seen:
            raise ValueError(f"two hosts are named {host.name!r}: give one another name with ?name=")
        seen.add(host.name)
    return hosts
