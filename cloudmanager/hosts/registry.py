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
``config`` mapping given in the configuration file.
"""

from __future__ import annotations

import importlib
import math
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


def option(options: Mapping[str, Any], key: str, convert: Callable[[Any], T], default: T, kind: str) -> T:
    """One option of a host kind, converted (``int``, ``float``...); ``default`` when
    absent or empty; ValueError naming the kind and the option when it is bad."""
    value = options.get(key)
    if value is None or value == "":
        return default
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ValueError(f"the {kind} option {key} has a bad value: {str(value)[:40]!r}") from None


def seconds(value: Any) -> float:
    """An option converter: a positive, finite number of seconds."""
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError("not a positive number of seconds")
    return number


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
